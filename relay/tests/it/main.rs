//! Integration tests: the real relay on loopback (real TLS, real store with fsync), driven over
//! sockets, on every I/O backend this machine offers.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: integration tests
#![allow(
    clippy::unwrap_used,
    reason = "test harness helpers: a failed unwrap is a failed test"
)]

mod certs;
mod cli;
mod container;
mod crash;
mod delivery;
mod dkim;
mod dns_server;
mod faults;
mod federation;
mod hardening;
mod harness;
mod imap_limits;
mod import;
mod logs;
mod metrics;
mod mxdeliv;
mod ops;
mod push;
mod throttle;
mod turn;
mod web;

use harness::{backends, message, new_addr, Client, Relay, PASSWORD};
use relay::server::Kind;

fn imap_login(relay: &Relay, addr: &str) -> Client {
    let mut c = Client::tls(relay.addr(Kind::Imaps));
    let greeting = c.line();
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let (_, status) = c.imap("l1", &format!("LOGIN \"{addr}\" \"{PASSWORD}\""));
    assert!(status.starts_with("l1 OK"), "{status}");
    c
}

fn smtp_login(relay: &Relay, addr: &str) -> Client {
    let mut c = Client::tls(relay.addr(Kind::Submissions));
    let (code, _) = c.reply();
    assert_eq!(code, 220);
    c.smtp_login(addr, PASSWORD);
    c
}

fn fetch_body(c: &mut Client, seq: u32) -> String {
    let (lines, status) = c.imap("f1", &format!("FETCH {seq} BODY.PEEK[]"));
    assert!(status.starts_with("f1 OK"), "{status}");
    lines.join("\n")
}

#[test]
fn encrypted_submission_is_delivered_with_privacy_headers() {
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        let (a, b) = (new_addr("sa"), new_addr("sb"));
        let mut recv = imap_login(&relay, &b);
        let mut send = smtp_login(&relay, &a);
        let mut msg = b"Received: from evil (127.0.0.9)\r\nX-Mailer: secret client\r\n".to_vec();
        msg.extend(message("encrypted.eml.tmpl", &a, &b));
        let (code, text) = send.submit(&a, &[&b], &msg);
        assert_eq!(code, 250, "{backend:?}: {text}");
        let (lines, status) = recv.imap("s1", "SELECT INBOX");
        assert!(status.starts_with("s1 OK"), "{status}");
        assert!(lines.iter().any(|l| l == "* 1 EXISTS"), "{lines:?}");
        let body = fetch_body(&mut recv, 1);
        assert!(body.contains("Subject: [...]"), "{body}");
        assert!(!body.contains("Received:"), "{body}");
        assert!(!body.contains("X-Mailer"), "{body}");
        assert!(!body.contains("127.0.0.9"), "{body}");
        assert!(body.contains("-----BEGIN PGP MESSAGE-----"), "{body}");
    }
}

#[test]
fn idle_reports_new_mail_at_once() {
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        let (a, b) = (new_addr("ia"), new_addr("ib"));
        let mut recv = imap_login(&relay, &b);
        let (_, status) = recv.imap("s1", "SELECT INBOX");
        assert!(status.starts_with("s1 OK"), "{status}");
        recv.send("i1 IDLE");
        assert!(recv.line().starts_with('+'));
        let mut send = smtp_login(&relay, &a);
        let (code, text) = send.submit(&a, &[&b], &message("encrypted.eml.tmpl", &a, &b));
        assert_eq!(code, 250, "{text}");
        // Within the read deadline, not "eventually on the next poll".
        assert_eq!(recv.line(), "* 1 EXISTS", "{backend:?}");
        recv.send("DONE");
        let (_, status) = recv.until_tag("i1");
        assert!(status.starts_with("i1 OK"), "{status}");
    }
}

#[test]
fn starttls_is_required_before_authentication() {
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        let addr = new_addr("st");
        // Submission on the STARTTLS port.
        let mut c = Client::plain(relay.addr(Kind::Submission));
        assert_eq!(c.reply().0, 220);
        let (code, ehlo) = c.smtp("EHLO client.test");
        assert_eq!(code, 250);
        assert!(ehlo.contains("STARTTLS"), "{ehlo}");
        assert!(!ehlo.contains("AUTH"), "{ehlo}");
        let (code, _) = c.smtp(&format!(
            "AUTH PLAIN {}",
            harness::plain_auth(&addr, PASSWORD)
        ));
        assert_eq!(code, 530);
        assert_eq!(c.smtp("STARTTLS").0, 220);
        let mut c = c.upgrade();
        c.smtp_login(&addr, PASSWORD);
        // IMAP on the STARTTLS port.
        let mut c = Client::plain(relay.addr(Kind::Imap));
        let greeting = c.line();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        let (_, status) = c.imap("a1", &format!("LOGIN \"{addr}\" \"{PASSWORD}\""));
        assert!(!status.starts_with("a1 OK"), "{status}");
        let (_, status) = c.imap("a2", "STARTTLS");
        assert!(status.starts_with("a2 OK"), "{status}");
        let mut c = c.upgrade();
        let (_, status) = c.imap("a3", &format!("LOGIN \"{addr}\" \"{PASSWORD}\""));
        assert!(status.starts_with("a3 OK"), "{backend:?}: {status}");
    }
}

#[test]
fn cleartext_forged_and_foreign_senders_are_refused() {
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        let (a, b, c) = (new_addr("ca"), new_addr("cb"), new_addr("cc"));
        drop(imap_login(&relay, &b));
        drop(imap_login(&relay, &c));
        let mut send = smtp_login(&relay, &a);
        // Cleartext to a local recipient.
        let (code, text) = send.submit(&a, &[&b], &message("cleartext.eml.tmpl", &a, &b));
        assert_eq!(code, 523, "{text}");
        assert!(text.contains("Encryption Needed"), "{text}");
        // From header that is not the envelope sender.
        let (code, text) = send.submit(&a, &[&b], &message("encrypted.eml.tmpl", &c, &b));
        assert_eq!(code, 500, "{text}");
        // Envelope sender that is not the login.
        let (code, text) = send.smtp(&format!("MAIL FROM:<{c}>"));
        assert_eq!(code, 553, "{text}");
        let (code, _) = send.smtp("RSET");
        assert_eq!(code, 250);
        // Cleartext to another domain: refused by the same gate, never queued.
        let remote = "someone@example.org";
        let (code, text) = send.submit(&a, &[remote], &message("cleartext.eml.tmpl", &a, remote));
        assert_eq!(code, 523, "{text}");
        assert_eq!(relay.store().queue_len(), 0);
    }
}

#[test]
fn acknowledged_messages_survive_a_restart() {
    for backend in backends() {
        let mut relay = Relay::start(backend, &["max_user_send_burst_size=100"]);
        let (a, b) = (new_addr("ra"), new_addr("rb"));
        drop(imap_login(&relay, &b));
        let mut send = smtp_login(&relay, &a);
        for _ in 0..20 {
            let (code, text) = send.submit(&a, &[&b], &message("encrypted.eml.tmpl", &a, &b));
            assert_eq!(code, 250, "{text}");
        }
        drop(send);
        relay.restart();
        let mut recv = imap_login(&relay, &b);
        let (lines, _) = recv.imap("s1", "SELECT INBOX");
        assert!(
            lines.iter().any(|l| l == "* 20 EXISTS"),
            "{backend:?}: {lines:?}"
        );
        // A wrong password after the restart still fails and changes nothing.
        let mut c = Client::tls(relay.addr(Kind::Imaps));
        c.line();
        let (_, status) = c.imap("x", &format!("LOGIN \"{b}\" \"wrong-password\""));
        assert!(status.starts_with("x NO"), "{status}");
        drop(imap_login(&relay, &b));
    }
}

#[test]
fn concurrent_first_logins_of_one_account_all_succeed() {
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        let addr = new_addr("cl");
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..10)
                .map(|_| s.spawn(|| drop(imap_login(&relay, &addr))))
                .collect();
            for h in handles {
                h.join().expect("a concurrent login failed");
            }
        });
        assert!(relay.shared().store.account(&addr).is_some());
    }
}

#[test]
fn burst_beyond_the_send_limit_gets_450_and_close() {
    for backend in backends() {
        let relay = Relay::start(
            backend,
            &["max_user_send_burst_size=3", "max_user_send_per_minute=1"],
        );
        let (a, b) = (new_addr("la"), new_addr("lb"));
        drop(imap_login(&relay, &b));
        let mut send = smtp_login(&relay, &a);
        for i in 0..3 {
            let (code, text) = send.submit(&a, &[&b], &message("encrypted.eml.tmpl", &a, &b));
            assert_eq!(code, 250, "message {i}: {text}");
        }
        let (code, text) = send.smtp(&format!("MAIL FROM:<{a}>"));
        assert_eq!(code, 450, "{text}");
        assert!(text.contains("4.7.1: Too much mail from"), "{text}");
        assert!(send.closed(), "connection must close after 450");
    }
}

#[test]
fn silent_connections_do_not_starve_others() {
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        let mut idle = Vec::new();
        for _ in 0..400 {
            idle.push(std::net::TcpStream::connect(relay.addr(Kind::Imaps)).unwrap());
        }
        // Stay below the per-source SMTP cap (max_smtp_connections / 5 = 200).
        for _ in 0..190 {
            idle.push(std::net::TcpStream::connect(relay.addr(Kind::Submissions)).unwrap());
        }
        let addr = new_addr("sc");
        let mut c = imap_login(&relay, &addr);
        let (_, status) = c.imap("n", "NOOP");
        assert!(status.starts_with("n OK"), "{backend:?}: {status}");
        drop(smtp_login(&relay, &addr));
    }
}

/// Connects from a chosen loopback source address; `true` if the relay kept the connection
/// (its greeting arrives) and `false` if it closed it at once.
fn greeted_from(source: [u8; 4], to: std::net::SocketAddr) -> bool {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&std::net::SocketAddr::from((source, 0)).into())
        .unwrap();
    s.connect(&to.into()).unwrap();
    let mut tcp: std::net::TcpStream = s.into();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 3];
    std::io::Read::read_exact(&mut tcp, &mut buf).is_ok() && &buf == b"220"
}

#[test]
fn userspace_twin_refuses_a_connection_flood_from_one_source_only() {
    for backend in backends() {
        let relay = Relay::start(
            backend,
            &[
                "new_connections_burst=5",
                "max_new_connections_per_minute=1",
            ],
        );
        let to = relay.addr(Kind::Mx);
        let admitted = (0..12).filter(|_| greeted_from([127, 0, 0, 1], to)).count();
        assert_eq!(admitted, 5, "{backend:?}: burst of 5 from one source");
        assert!(
            greeted_from([127, 0, 0, 2], to),
            "another source is still served"
        );
    }
}
