//! The certificate a running relay serves, swapped without a restart. External files
//! (`tls_external_cert_and_key`) reloaded when they change, a bad new file refused. Certificates
//! from an ACME server (Pebble, the test CA of Let's Encrypt): the first issuance, a renewal by the schedule, the swap under an IDLE session that
//! keeps working, and an ACME server that is down or answers garbage (the error names the
//! reason, the schedule backs off, the certificate in use keeps serving).
//!
//! Skipped (with a printed reason) where Pebble is not installed (`apt-get install pebble`).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay::config::{Config, Mode, RawConfig};
use relay::server::Kind;
use relay::tls::acme;
use relay::tls::schedule::Policy;
use relay::tls::task::{run_acme, Renewer};
use relay_testkit::dns::{DnsServer, Record as DnsRecord};
use relay_testkit::pebble::{self, Pebble};

use crate::harness::{backends, free_port, message, new_addr, Relay};
use crate::{imap_login, smtp_login};

/// The certificate chain a new TLS handshake with `addr` presents.
fn presented_chain(addr: SocketAddr) -> Vec<Vec<u8>> {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut conn = rustls::ClientConnection::new(
        relay_testkit::tls::client_config(),
        "acme.test".try_into().unwrap(),
    )
    .unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    conn.peer_certificates()
        .unwrap()
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect()
}

/// A DNS server answering the names of `acme.test`'s certificate with 127.0.0.1 (what Pebble's
/// HTTP-01 validation resolves).
fn acme_names_at_loopback() -> DnsServer {
    let dns = DnsServer::start();
    for name in [
        "acme.test",
        "www.acme.test",
        "mta-sts.acme.test",
        "autoconfig.acme.test",
    ] {
        dns.add(name, DnsRecord::A(std::net::Ipv4Addr::LOCALHOST));
    }
    dns
}

/// An ACME-mode configuration for `acme.test` against `directory`, data in `data`.
fn acme_config(data: &std::path::Path, directory: &str, ca_file: &std::path::Path) -> Config {
    let mut raw = RawConfig::default();
    for kv in [
        "mail_domain=acme.test".to_owned(),
        format!("data_dir={}", data.display()),
        format!("acme_directory={directory}"),
        format!("acme_ca_file={}", ca_file.display()),
        "acme_email=postmaster@acme.test".to_owned(),
    ] {
        raw.set(&kv).unwrap();
    }
    let c = Config::build(&raw, Mode::Serve).unwrap();
    assert_eq!(c.tls_mode, relay::config::TlsMode::Acme);
    c
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const FAST: Policy = Policy {
    first_retry_secs: 1,
    max_retry_secs: 2,
};

#[test]
fn acme_certificate_is_issued_renewed_and_swapped_under_an_idle_session() {
    let dns = acme_names_at_loopback();
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        // Pebble validates each name over HTTP-01: it resolves it through the test DNS server
        // and asks the relay's HTTP port, which answers from `Shared::acme_challenges`. Short
        // certificates: the schedule renews when a third of the lifetime remains.
        let Some(pebble) = Pebble::start(&pebble::Options {
            http_port: relay.port(Kind::Http),
            dns_server: Some(dns.addr()),
            validity_secs: Some(15),
            ..Default::default()
        }) else {
            return;
        };
        let self_signed = presented_chain(relay.addr(Kind::Imaps));
        assert_eq!(self_signed.len(), 1);
        // An IDLE session on the self-signed certificate.
        let (a, b) = (new_addr("aa"), new_addr("ab"));
        let mut idle = imap_login(&relay, &b);
        let (_, status) = idle.imap("s1", "SELECT INBOX");
        assert!(status.starts_with("s1 OK"), "{status}");
        idle.send("i1 IDLE");
        assert!(idle.line().starts_with('+'));

        let data = tempfile::tempdir().unwrap();
        let config = acme_config(data.path(), &pebble.directory, &pebble.ca_file);
        let client = acme::Client::new(&config, relay.shared().acme_challenges.clone());
        let mut renewer = Renewer::new(client, relay.certs().clone(), FAST);
        let rt = runtime();
        if let Err(e) = rt.block_on(renewer.attempt()) {
            panic!("issuance failed: {e}\n{}", pebble.log());
        }
        let issued = relay.certs().current();
        assert!(issued.covers(&[
            "acme.test".into(),
            "www.acme.test".into(),
            "mta-sts.acme.test".into(),
            "autoconfig.acme.test".into()
        ]));
        // A new handshake sees it, with Pebble's intermediate; the files are private.
        let chain = presented_chain(relay.addr(Kind::Imaps));
        assert_eq!(chain[0], issued.leaf_der());
        assert!(chain.len() >= 2, "the chain includes the intermediate");
        for f in ["account.json", "certificate.pem"] {
            let mode = std::fs::metadata(data.path().join("acme").join(f))
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
                .unwrap();
            assert_eq!(mode, 0o600, "{f}");
        }
        assert!(acme::account_url(&config)
            .unwrap()
            .starts_with("https://127.0.0.1:"));
        assert_eq!(
            acme::saved(&config).unwrap().leaf_der(),
            issued.leaf_der(),
            "the saved certificate is the served one"
        );

        // The IDLE session carries on over its old TLS session.
        let mut send = smtp_login(&relay, &a);
        let (code, text) = send.submit(&a, &[&b], &message("encrypted.eml.tmpl", &a, &b));
        assert_eq!(code, 250, "{text}");
        assert_eq!(idle.line(), "* 1 EXISTS", "{backend:?}");

        // Renewal by the schedule: due when a third of the 15 s remain.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let due = renewer.next_attempt_at(now);
        assert!(
            due > now - 2 && due <= issued.not_after(),
            "due {due}, now {now}"
        );
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = std::thread::spawn(move || rt.block_on(run_acme(renewer, stop_rx)));
        let deadline = Instant::now() + Duration::from_secs(40);
        while relay.certs().current().leaf_der() == issued.leaf_der() {
            assert!(Instant::now() < deadline, "no renewal\n{}", pebble.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.send(true).unwrap();
        task.join().unwrap();
        let renewed = relay.certs().current();
        assert!(renewed.not_after() > issued.not_after());
        assert_eq!(
            presented_chain(relay.addr(Kind::Imaps))[0],
            renewed.leaf_der()
        );
        // Still the same IDLE session, still working.
        let (code, text) = send.submit(&a, &[&b], &message("encrypted.eml.tmpl", &a, &b));
        assert_eq!(code, 250, "{text}");
        let pushed: Vec<String> = (0..2).map(|_| idle.line()).collect();
        assert_eq!(pushed, ["* 1 RECENT", "* 2 EXISTS"], "{backend:?}");
        idle.send("DONE");
        let (_, status) = idle.until_tag("i1");
        assert!(status.starts_with("i1 OK"), "{status}");
    }
}

/// A loopback server answering every connection with `answer` (after reading the request when
/// `tls` is set, over TLS with the test CA's certificate); stops after `n` connections.
fn stand_in(
    answer: &'static [u8],
    tls: Option<(String, String)>,
    n: usize,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = tls.map(|(cert, key)| {
        let certs = rustls_pemfile::certs(&mut cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut key.as_bytes())
            .unwrap()
            .unwrap();
        Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
        )
    });
    let t = std::thread::spawn(move || {
        for _ in 0..n {
            let Ok((mut tcp, _)) = listener.accept() else {
                return;
            };
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            match &config {
                None => {
                    let _ = tcp.write_all(answer);
                }
                Some(c) => {
                    let conn = rustls::ServerConnection::new(c.clone()).unwrap();
                    let mut s = rustls::StreamOwned::new(conn, tcp);
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = s.write_all(answer);
                    let _ = s.flush();
                    s.conn.send_close_notify();
                    let _ = s.conn.complete_io(&mut s.sock);
                }
            }
        }
    });
    (addr, t)
}

#[test]
fn acme_server_down_or_answering_garbage_is_reported_retried_and_changes_nothing() {
    let relay = Relay::start(relay::server::Backend::Epoll, &[]);
    let before = presented_chain(relay.addr(Kind::Imaps));
    let (ca, cert, key) = pebble::test_ca_and_leaf();
    let data = tempfile::tempdir().unwrap();
    let ca_file = data.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let rt = runtime();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };

    // Nobody listens.
    let closed = format!("https://127.0.0.1:{}/dir", free_port());
    // Not TLS at all.
    let (raw, raw_thread) = stand_in(b"220 garbage, not TLS\r\n", None, 1);
    // TLS and HTTP, but the directory is not JSON.
    let (junk, junk_thread) = stand_in(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\nnot json!",
        Some((cert, key)),
        1,
    );
    let cases = [
        (closed, "refused"),
        (format!("https://{raw}/dir"), "corrupt message"),
        (format!("https://{junk}/dir"), "JSON"),
    ];
    for (directory, reason) in cases {
        let config = acme_config(data.path(), &directory, &ca_file);
        let client = acme::Client::new(&config, relay.shared().acme_challenges.clone());
        let mut renewer = Renewer::new(client, relay.certs().clone(), FAST);
        assert!(renewer.next_attempt_at(now()) <= now(), "due at once");
        let e = rt.block_on(renewer.attempt()).unwrap_err().to_string();
        assert!(
            e.to_lowercase().contains(&reason.to_lowercase()),
            "{directory}: {e}"
        );
        let t = now();
        let next = renewer.next_attempt_at(t);
        assert!(
            (t..=t + 1).contains(&next),
            "first retry after 1 s: {next} vs {t}"
        );
        assert_eq!(
            presented_chain(relay.addr(Kind::Imaps)),
            before,
            "the certificate in use keeps serving"
        );
    }
    raw_thread.join().unwrap();
    junk_thread.join().unwrap();

    // Repeated failures back off: 1 s, then 2 s (the cap).
    let config = acme_config(
        data.path(),
        &format!("https://127.0.0.1:{}/dir", free_port()),
        &ca_file,
    );
    let mut renewer = Renewer::new(
        acme::Client::new(&config, relay.shared().acme_challenges.clone()),
        relay.certs().clone(),
        FAST,
    );
    for wait in [1, 2, 2] {
        assert!(rt.block_on(renewer.attempt()).is_err());
        let t = now();
        let next = renewer.next_attempt_at(t);
        assert!(
            (t + wait - 1..=t + wait).contains(&next),
            "{next} vs {t} + {wait}"
        );
    }
    // An acme_ca_file that is not a certificate is a named failure too.
    std::fs::write(&ca_file, "no pem here").unwrap();
    let config = acme_config(data.path(), "https://127.0.0.1:1/dir", &ca_file);
    let mut renewer = Renewer::new(
        acme::Client::new(&config, relay.shared().acme_challenges.clone()),
        relay.certs().clone(),
        FAST,
    );
    let e = rt.block_on(renewer.attempt()).unwrap_err().to_string();
    assert!(e.contains("acme_ca_file"), "{e}");
}

/// `relay serve` for a domain without a certificate: the self-signed fallback serves at once,
/// the ACME certificate follows without a restart, and the next start serves the saved one.
#[test]
fn serve_in_acme_mode_issues_at_start_and_reuses_the_saved_certificate() {
    let dns = acme_names_at_loopback();
    let http = free_port();
    let Some(pebble) = Pebble::start(&pebble::Options {
        http_port: http,
        dns_server: Some(dns.addr()),
        ..Default::default()
    }) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let imaps = free_port();
    let ini = data.path().join("chatmail.ini");
    std::fs::write(
        &ini,
        format!(
            "[params]\nmail_domain = acme.test\ndata_dir = {}\nuser = root\nlisten = 127.0.0.1\n\
             mx_port = 0\nsmtp_port = 0\nsmtps_port = 0\nimap_port = 0\n\
             imaps_port = {imaps}\nhttps_port = 0\nhttp_port = {http}\nacme_directory = {}\n\
             acme_ca_file = {}\nturn_port = 0\n",
            data.path().join("data").display(),
            pebble.directory,
            pebble.ca_file.display()
        ),
    )
    .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], imaps).into();
    let start = || {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(["serve", "--io", "epoll", "--config"])
            .arg(&ini)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "relay serve did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Killed(child)
    };
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let relay = start();
    let deadline = Instant::now() + Duration::from_secs(60);
    let issued = loop {
        let chain = presented_chain(addr);
        if chain.len() >= 2 {
            break chain;
        }
        assert!(
            Instant::now() < deadline,
            "no ACME certificate\n{}",
            pebble.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(relay);
    let _relay = start();
    assert_eq!(
        presented_chain(addr),
        issued,
        "the saved certificate serves from the start"
    );
}

/// A self-signed pair for `name`: (cert PEM, key PEM).
fn pair(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    (
        relay::tls::generate_self_signed(&[name.to_owned()], &key).unwrap(),
        key.serialize_pem(),
    )
}

fn wait_for_leaf(relay: &Relay, changed_from: &[u8]) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + relay::tls::task::POLL_INTERVAL * 3;
    loop {
        let chain = presented_chain(relay.addr(Kind::Imaps));
        if chain[0] != changed_from {
            return chain;
        }
        assert!(
            Instant::now() < deadline,
            "the certificate was not reloaded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn external_certificate_files_are_reloaded_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (
        dir.path().join("fullchain.pem"),
        dir.path().join("privkey.pem"),
    );
    let (c1, k1) = pair("one.example");
    std::fs::write(&cert, &c1).unwrap();
    std::fs::write(&key, &k1).unwrap();
    let relay = Relay::start(
        relay::server::Backend::Epoll,
        &[&format!(
            "tls_external_cert_and_key={} {}",
            cert.display(),
            key.display()
        )],
    );
    let first = presented_chain(relay.addr(Kind::Imaps));
    assert_eq!(relay.certs().current().names(), ["one.example"]);
    // A connection made now outlives the change.
    let mut c = imap_login(&relay, &new_addr("ex"));
    let (c2, k2) = pair("two.example");
    std::fs::write(&key, &k2).unwrap();
    std::fs::write(&cert, &c2).unwrap();
    let second = wait_for_leaf(&relay, &first[0]);
    assert_eq!(relay.certs().current().names(), ["two.example"]);
    assert_eq!(second[0], relay.certs().current().leaf_der());
    let (_, status) = c.imap("n1", "NOOP");
    assert!(status.starts_with("n1 OK"), "{status}");
    // A certificate whose key is elsewhere: refused, the good one keeps serving.
    let (c3, _) = pair("three.example");
    std::fs::write(&cert, &c3).unwrap();
    std::thread::sleep(relay::tls::task::POLL_INTERVAL * 2);
    assert_eq!(presented_chain(relay.addr(Kind::Imaps)), second);
    assert_eq!(relay.certs().current().names(), ["two.example"]);
}
