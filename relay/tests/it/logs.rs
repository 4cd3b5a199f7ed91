//! What `relay dev` writes to stderr (the journal in production): no ANSI colours when stderr is
//! not a terminal, no client IP address unless `log_client_ips` is on, never a password, a
//! device token or message contents.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::harness::{free_port, message, new_addr, Client, PASSWORD};

/// The client's source address: not the relay's own (127.0.0.1 is in its addresses and URLs).
const CLIENT_IP: [u8; 4] = [127, 0, 0, 2];
const WRONG_PASSWORD: &str = "wrong-Pa55word-never-logged";
const TOKEN: &str = "devicetoken-4f7c9e2a-never-logged";

fn connect_from_client_ip(to: SocketAddr) -> Client {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((CLIENT_IP, 0)).into()).unwrap();
    s.connect(&to.into()).unwrap();
    let tcp: TcpStream = s.into();
    Client::tls_over(tcp)
}

/// Runs a dev relay (stderr a pipe, as under systemd), sends it traffic from [`CLIENT_IP`],
/// stops it with SIGTERM and returns its stderr.
fn stderr_after_traffic(log_client_ips: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (imaps, submissions) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["dev", "--io", "epoll", "--data"])
        .arg(dir.path())
        .args(["--set", "smtp_port=0", "--set", "submission_port=0"])
        .args(["--set", "imap_port=0", "--set", "https_port=0"])
        .args(["--set", "http_port=0", "--set", "turn_port=0"])
        .args(["--set", &format!("imaps_port={imaps}")])
        .args(["--set", &format!("submissions_port={submissions}")])
        .args(["--set", &format!("log_client_ips={log_client_ips}")])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stderr.read_to_string(&mut out);
        out
    });
    let imaps: SocketAddr = ([127, 0, 0, 1], imaps).into();
    let submissions: SocketAddr = ([127, 0, 0, 1], submissions).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(submissions).is_err() {
        assert!(Instant::now() < deadline, "the relay did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (a, b) = (new_addr("la"), new_addr("lb"));
    // Accounts created at their first login; a device token set.
    let mut c = connect_from_client_ip(imaps);
    c.line();
    let (_, status) = c.imap("l", &format!("LOGIN \"{b}\" \"{PASSWORD}\""));
    assert!(status.starts_with("l OK"), "{status}");
    let (_, status) = c.imap(
        "m",
        &format!("SETMETADATA INBOX (/private/devicetoken \"{TOKEN}\")"),
    );
    assert!(status.starts_with("m OK"), "{status}");
    drop(c);
    // A failed login.
    let mut c = connect_from_client_ip(imaps);
    c.line();
    let (_, status) = c.imap("w", &format!("LOGIN \"{b}\" \"{WRONG_PASSWORD}\""));
    assert!(status.starts_with("w NO"), "{status}");
    drop(c);
    // A message delivered and one refused as cleartext.
    let mut c = connect_from_client_ip(submissions);
    assert_eq!(c.reply().0, 220);
    c.smtp_login(&a, PASSWORD);
    let (code, text) = c.submit(&a, &[&b], &message("encrypted.eml.tmpl", &a, &b));
    assert_eq!(code, 250, "{text}");
    let (code, text) = c.submit(&a, &[&b], &message("cleartext.eml.tmpl", &a, &b));
    assert_eq!(code, 523, "{text}");
    drop(c);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    reader.join().unwrap()
}

#[test]
fn stderr_has_no_colours_client_addresses_passwords_tokens_or_contents() {
    let (plain, with_ips) = std::thread::scope(|s| {
        let plain = s.spawn(|| stderr_after_traffic(false));
        let with_ips = s.spawn(|| stderr_after_traffic(true));
        (plain.join().unwrap(), with_ips.join().unwrap())
    });
    let client_ip = std::net::Ipv4Addr::from(CLIENT_IP).to_string();
    for (log, ips) in [(&plain, false), (&with_ips, true)] {
        // The traffic was logged.
        assert!(log.contains("Created address: "), "{log}");
        assert!(log.contains("login failed"), "{log}");
        assert!(!log.contains('\u{1b}'), "ANSI escape codes: {log}");
        for secret in [
            PASSWORD,
            WRONG_PASSWORD,
            TOKEN,
            "This is cleartext",
            "BEGIN PGP",
        ] {
            assert!(!log.contains(secret), "{secret:?} logged:\n{log}");
        }
        // One line per event.
        assert!(log.lines().all(|l| l.starts_with("20")), "{log}");
        assert_eq!(
            log.contains(&client_ip),
            ips,
            "log_client_ips={ips}:\n{log}"
        );
    }
    assert!(plain.contains("source=hidden"), "{plain}");
    assert!(
        with_ips.contains(&format!("source={client_ip}")),
        "{with_ips}"
    );
}
