//! `POST /mxdeliv` on the HTTPS port (mail from other relays, chatmail.md §3.7) over real
//! sockets: the envelope in headers, the port-25 checks, DKIM for named senders, the status
//! mapping and the limits on what one request may bring.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use relay::dkim::{DkimKey, Signer};
use relay_testkit::dns::DnsServer;
use relay_testkit::{backends, create_account, new_addr, Client, HttpResponse, Kind, Relay};

use crate::harness::message;

fn https(relay: &Relay) -> Client {
    Client::tls_alpn(relay.addr(Kind::Https), &[b"http/1.1"])
}

fn post(relay: &Relay, headers: &[String], body: &[u8]) -> HttpResponse {
    let h: Vec<&str> = headers.iter().map(String::as_str).collect();
    https(relay).http("POST", "/mxdeliv", "127.0.0.1", &h, body)
}

fn inbox_len(relay: &Relay, addr: &str) -> usize {
    let id = relay.store().account(addr).unwrap().id;
    relay
        .store()
        .mailbox_view(id, "INBOX")
        .unwrap()
        .messages
        .len()
}

#[test]
fn mxdeliv_delivers_and_answers_with_smtp_texts() {
    for backend in backends() {
        let relay = Relay::start(backend, &["max_message_size=200000"]);
        let bob = new_addr("mxb");
        create_account(relay.store(), &bob, 0);
        // A sender on another literal relay: no DKIM check for address literals.
        let from = "alice1234@[192.0.2.7]";
        let msg = message("encrypted.eml.tmpl", from, &bob);
        let env = |to: &str| vec![format!("X-Mail-From: {from}"), format!("X-Mail-To: {to}")];

        let r = post(&relay, &env(&bob), &msg);
        assert_eq!(r.status, 200, "{backend:?}: {}", r.text());
        assert!(r.text().starts_with("250 2.0.0"), "{}", r.text());
        assert_eq!(inbox_len(&relay, &bob), 1);

        // An unknown recipient: the RCPT reply, as 400.
        let r = post(&relay, &env(&new_addr("nobody")), &msg);
        assert_eq!(r.status, 400);
        assert!(r.text().starts_with("550 5.1.1"), "{}", r.text());
        // Another domain: not ours to relay.
        let r = post(&relay, &env("someone@example.org"), &msg);
        assert_eq!(r.status, 400);
        assert!(r.text().starts_with("554 5.7.1"), "{}", r.text());
        // Cleartext: the encryption gate.
        let r = post(
            &relay,
            &env(&bob),
            &message("cleartext.eml.tmpl", from, &bob),
        );
        assert_eq!(r.status, 400);
        assert!(r.text().starts_with("523"), "{}", r.text());
        // No recipient at all.
        let r = post(&relay, &[format!("X-Mail-From: {from}")], &msg);
        assert_eq!(r.status, 400);
        assert!(r.text().starts_with("503 5.5.1"), "{}", r.text());
        // Only POST.
        let r = https(&relay).http("GET", "/mxdeliv", "127.0.0.1", &[], b"");
        assert_eq!(r.status, 405);
        // Over max_message_size: 413 before the body is sent.
        let mut c = https(&relay);
        c.send_raw(
            format!(
                "POST /mxdeliv HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Mail-To: {bob}\r\n\
                 Content-Length: 300000\r\n\r\n"
            )
            .as_bytes(),
        );
        let r = c.http_response(false);
        assert_eq!(r.status, 413);
        assert_eq!(r.text(), "552 Message exceeds maximum size\n");
        assert_eq!(inbox_len(&relay, &bob), 1, "nothing refused was stored");
    }
}

#[test]
fn mxdeliv_recipient_floods_are_refused_and_others_served() {
    let relay = Relay::start(relay_testkit::Backend::Epoll, &[]);
    let bob = new_addr("mxf");
    create_account(relay.store(), &bob, 0);
    let from = "alice1234@[192.0.2.7]";
    let msg = message("encrypted.eml.tmpl", from, &bob);
    // More recipients than a transaction may have (1,000): the RCPT limit's reply.
    let mut headers = vec![format!("X-Mail-From: {from}")];
    headers.extend((0..1001).map(|i| format!("X-Mail-To: r{i:04}@[127.0.0.1]")));
    let r = post(&relay, &headers, &msg);
    assert_eq!(r.status, 503, "a 4xx reply is a temporary refusal");
    assert!(r.text().starts_with("452 4.5.3"), "{}", r.text());
    // 10,000 X-Mail-To headers: more than a request head may hold. 431, or the connection is
    // cut while the rest still arrives; never processed.
    let mut c = https(&relay);
    let many: String = (0..10_000)
        .map(|i| format!("X-Mail-To: r{i:05}@[127.0.0.1]\r\n"))
        .collect();
    let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.send_raw(
            format!("POST /mxdeliv HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}Content-Length: 0\r\n\r\n")
                .as_bytes(),
        );
        c.http_response(false).status
    }));
    if let Ok(status) = answered {
        assert_eq!(status, 431);
    }
    // The relay still serves a good request.
    let r = post(
        &relay,
        &[format!("X-Mail-From: {from}"), format!("X-Mail-To: {bob}")],
        &msg,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn mxdeliv_slow_body_times_out() {
    use std::io::{Read, Write};
    // The relay waits `http_body_timeout` for a body (default 60 s, the reference's; the
    // default is checked in config's tests): 3 s here.
    let relay = Relay::start(relay_testkit::Backend::Epoll, &["http_body_timeout=3"]);
    let bob = new_addr("mxs");
    create_account(relay.store(), &bob, 0);
    let tcp = std::net::TcpStream::connect(relay.addr(Kind::Https)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut config = (*relay_testkit::tls::client_config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "127.0.0.1".try_into().unwrap())
            .unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(
        format!(
            "POST /mxdeliv HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Mail-To: {bob}\r\n\
             Content-Length: 5000\r\n\r\npartial"
        )
        .as_bytes(),
    )
    .unwrap();
    let start = Instant::now();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 408", "{}", String::from_utf8_lossy(&head));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
    assert_eq!(inbox_len(&relay, &bob), 0);
}

#[test]
fn mxdeliv_checks_dkim_for_named_senders() {
    let dns = DnsServer::start();
    let key = DkimKey::generate(&mut rand::rngs::OsRng).unwrap();
    dns.txt("opendkim._domainkey._mxs.test", &key.dns_txt_value());
    let relay = Relay::start(
        relay_testkit::Backend::Epoll,
        &[&dns.relay_option(), "dns_timeout=1"],
    );
    let bob = new_addr("mxd");
    create_account(relay.store(), &bob, 0);
    let from = "alice1234@_mxs.test";
    let msg = message("encrypted.eml.tmpl", from, &bob);
    let env = [format!("X-Mail-From: {from}"), format!("X-Mail-To: {bob}")];

    let r = post(&relay, &env, &msg);
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), "554 5.7.1 No DKIM signature found\n");

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut signed = Signer::new(&key, "_mxs.test", "opendkim")
        .unwrap()
        .sign(&msg, now)
        .unwrap();
    signed.extend_from_slice(&msg);
    let r = post(&relay, &env, &signed);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(inbox_len(&relay, &bob), 1);

    // A signature of another domain's key over this domain's name does not verify.
    let other = DkimKey::generate(&mut rand::rngs::OsRng).unwrap();
    let mut forged = Signer::new(&other, "_mxs.test", "opendkim")
        .unwrap()
        .sign(&msg, now)
        .unwrap();
    forged.extend_from_slice(&msg);
    let r = post(&relay, &env, &forged);
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), "554 5.7.1 No valid DKIM signature found\n");
    assert_eq!(inbox_len(&relay, &bob), 1);
}
