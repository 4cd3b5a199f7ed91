//! Push notifications over real sockets (chatmail.md §6.2): device tokens set over IMAP, a
//! delivery (submission, port 25) POSTs each token to a notifier stand-in on loopback, `410`
//! removes a token, a hanging notifier delays no delivery, and a pending notification survives
//! `kill -9` of the relay process.

use std::time::{Duration, Instant};

use relay_testkit::notifier::{Answer, Notifier};
use relay_testkit::tls::TestCa;
use relay_testkit::Kind;

use crate::faults::{imap, spawn_with};
use crate::harness::{backends, message, new_addr, Client, Relay, PASSWORD};
use crate::{imap_login, smtp_login};

/// How long a POST may take to show up (a busy machine; normally milliseconds).
const ARRIVAL: Duration = Duration::from_secs(15);
/// How long we watch for POSTs that must not come.
const QUIET: Duration = Duration::from_millis(500);

fn set_token(c: &mut Client, token: &str) {
    let (_, status) = c.imap(
        "t",
        &format!("SETMETADATA INBOX (/private/devicetoken \"{token}\")"),
    );
    assert!(status.starts_with("t OK"), "{status}");
}

fn tokens_of(c: &mut Client) -> String {
    let (lines, status) = c.imap("g", "GETMETADATA INBOX /private/devicetoken");
    assert!(status.starts_with("g OK"), "{status}");
    lines.join("\n")
}

/// A message from another (address-literal) server on port 25.
fn mx_deliver(relay: &Relay, to: &str) {
    let mut c = Client::plain(relay.addr(Kind::Mx));
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.smtp("EHLO other.example").0, 250);
    assert_eq!(c.smtp("STARTTLS").0, 220);
    let mut c = c.upgrade();
    assert_eq!(c.smtp("EHLO other.example").0, 250);
    let from = "someone@[192.0.2.7]";
    let (code, text) = c.submit(from, &[to], &message("encrypted.eml.tmpl", from, to));
    assert_eq!(code, 250, "{text}");
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn each_token_gets_one_post_per_delivery_local_and_from_other_servers() {
    for backend in backends() {
        let notifier = Notifier::start();
        let relay = Relay::start(
            backend,
            &[&notifier.relay_option(), "metrics_address=127.0.0.1:0"],
        );
        let (a, b) = (new_addr("pa"), new_addr("pb"));
        let mut ai = imap_login(&relay, &a);
        let mut bi = imap_login(&relay, &b);
        set_token(&mut ai, "tok-a");
        set_token(&mut bi, "tok-b1");
        set_token(&mut bi, "tok-b2");
        assert!(tokens_of(&mut bi).contains("\"tok-b1 tok-b2\""));

        // A submission to b and to the sender itself (Delta Chat's copy for its other
        // devices): b's devices are woken, the sender's are not.
        let mut send = smtp_login(&relay, &a);
        let (code, text) = send.submit(&a, &[&b, &a], &message("encrypted.eml.tmpl", &a, &b));
        assert_eq!(code, 250, "{backend:?}: {text}");
        let got = notifier.wait_for(2, ARRIVAL);
        std::thread::sleep(QUIET);
        assert_eq!(sorted(notifier.tokens()), ["tok-b1", "tok-b2"], "{got:?}");
        assert!(notifier
            .requests()
            .iter()
            .all(|r| r.method == "POST" && r.path == "/notify"));

        // Mail from another server wakes them the same way.
        notifier.clear();
        mx_deliver(&relay, &b);
        notifier.wait_for(2, ARRIVAL);
        std::thread::sleep(QUIET);
        assert_eq!(sorted(notifier.tokens()), ["tok-b1", "tok-b2"]);

        // 410 Gone removes that token; the other stays.
        notifier.clear();
        notifier.answer(|t| Answer::Status(if t == "tok-b2" { 410 } else { 200 }));
        mx_deliver(&relay, &b);
        notifier.wait_for(2, ARRIVAL);
        let end = Instant::now() + ARRIVAL;
        while tokens_of(&mut bi).contains("tok-b2") && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = tokens_of(&mut bi);
        assert!(left.contains("\"tok-b1\""), "{left}");
        notifier.clear();
        mx_deliver(&relay, &b);
        notifier.wait_for(1, ARRIVAL);
        std::thread::sleep(QUIET);
        assert_eq!(notifier.tokens(), ["tok-b1"]);
        // Nothing is left pending once the notifier took everything.
        let end = Instant::now() + ARRIVAL;
        while !relay.store().notify_pending(0, usize::MAX).is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(relay.store().notify_pending(0, usize::MAX), vec![]);
        // The metrics saw every answer: 2 + 2 + 1 + 1 sent, one 410.
        let m = super::metrics::scrape(relay.metrics_addr().unwrap());
        let push = |r: &str| m[&format!("chatmail_push_notifications_total{{result=\"{r}\"}}")];
        assert_eq!(
            (push("sent"), push("gone"), push("failed")),
            (6.0, 1.0, 0.0)
        );
        assert_eq!(m["chatmail_messages_accepted_total{path=\"mx\"}"], 3.0);
        drop(ai);
    }
}

#[test]
fn a_hanging_notifier_delays_no_delivery_and_no_idle_wake_up() {
    for backend in backends() {
        let notifier = Notifier::start();
        notifier.answer(|_| Answer::Hang);
        let relay = Relay::start(
            backend,
            &[&notifier.relay_option(), "max_user_send_burst_size=1000"],
        );
        let (a, b) = (new_addr("ha"), new_addr("hb"));
        let mut bi = imap_login(&relay, &b);
        set_token(&mut bi, "tok-hang");
        let (_, status) = bi.imap("s", "SELECT INBOX");
        assert!(status.starts_with("s OK"), "{status}");
        bi.send("i IDLE");
        assert!(bi.line().starts_with('+'));
        let mut send = smtp_login(&relay, &a);
        for n in 1..=40 {
            let (code, text) = send.submit(&a, &[&b], &message("encrypted.eml.tmpl", &a, &b));
            assert_eq!(code, 250, "{backend:?} message {n}: {text}");
            // The IDLE session hears of each message although every POST hangs.
            loop {
                let l = bi.line();
                if l == format!("* {n} EXISTS") {
                    break;
                }
                assert!(l.starts_with('*'), "{l}");
            }
        }
        // The notifier got the first POST and holds it; later deliveries replaced the pending
        // entry instead of piling up requests.
        assert!(!notifier.tokens().is_empty());
        assert!(notifier.tokens().len() <= 2, "{:?}", notifier.tokens());
        assert_eq!(relay.store().notify_pending(0, usize::MAX).len(), 1);
        drop(notifier);
    }
}

#[test]
fn a_pending_notification_survives_kill_9() {
    let notifier = Notifier::start();
    notifier.answer(|_| Answer::Status(503));
    let dir = tempfile::tempdir().unwrap();
    let sets = [notifier.relay_option()];
    let (a, b) = (new_addr("ka"), new_addr("kb"));
    let mut p = spawn_with(dir.path(), "epoll", None, &sets);
    let mut bi = imap(&p, &b);
    set_token(&mut bi, "tok-k");
    drop(bi);
    let mut send = Client::tls(p.submissions);
    send.reply();
    send.smtp_login(&a, PASSWORD);
    let (code, text) = send.submit(&a, &[&b], &message("encrypted.eml.tmpl", &a, &b));
    assert_eq!(code, 250, "{text}");
    // The first attempt failed (503): the next would be 8 s later. Kill the relay now.
    assert_eq!(notifier.wait_for(1, ARRIVAL), ["tok-k"]);
    p.child.kill().unwrap();
    let _ = p.child.wait();
    notifier.clear();
    notifier.answer(|_| Answer::Status(200));
    // After the restart the pending notification is sent at once, exactly once.
    let p = spawn_with(dir.path(), "epoll", None, &sets);
    assert_eq!(notifier.wait_for(1, ARRIVAL), ["tok-k"]);
    std::thread::sleep(QUIET);
    assert_eq!(notifier.tokens(), ["tok-k"]);
    // Once sent it is done for good: another restart sends nothing.
    std::thread::sleep(Duration::from_millis(300));
    drop(p);
    notifier.clear();
    let _p = spawn_with(dir.path(), "epoll", None, &sets);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(notifier.tokens(), Vec::<String>::new());
}

#[test]
fn thousands_of_pending_notifications_are_read_in_batches_and_all_sent() {
    use relay::store::Op;
    let notifier = Notifier::start();
    let relay = Relay::start(relay_testkit::Backend::Epoll, &[&notifier.relay_option()]);
    let store = relay.store();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let accounts: Vec<_> = (0..2100)
        .map(|i| {
            let id = relay_testkit::create_account(store, &new_addr(&format!("bulk{i}x")), now);
            store
                .commit_blocking(Op::SetDeviceToken {
                    account: id,
                    token: format!("bulk-{i}"),
                    now,
                })
                .unwrap();
            id
        })
        .collect();
    // Three deliveries of 700 recipients each: their pending entries are read 1,024 at a
    // time, so a batch ends in the middle of a delivery's recipients.
    for chunk in accounts.chunks(700) {
        store
            .commit_blocking(Op::Deliver {
                recipients: chunk.to_vec(),
                sender: None,
                internal_date: now,
                body: b"Subject: x\r\n\r\ny\r\n".to_vec(),
            })
            .unwrap();
    }
    let got = notifier.wait_for(2100, Duration::from_secs(60));
    std::thread::sleep(QUIET);
    let mut tokens = notifier.tokens();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 2100, "{} POSTs", got.len());
    assert_eq!(notifier.tokens().len(), 2100, "each token once");
    let end = Instant::now() + ARRIVAL;
    while !store.notify_pending(0, usize::MAX).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(store.notify_pending(0, usize::MAX).is_empty());
}

#[test]
fn a_notifier_that_answers_garbage_or_is_unreachable_costs_deliveries_nothing() {
    use std::io::{Read, Write};
    // A server that answers every request with bytes that are not HTTP, then closes.
    let garbage = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage_addr = garbage.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in garbage.incoming() {
            let Ok(mut s) = s else { return };
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"\x00\xffSMTP 220 not http at all\r\n\r\n\r\n");
        }
    });
    // And a port nobody listens on.
    let closed = relay_testkit::free_port();
    for url in [
        format!("notification_url=http://{garbage_addr}"),
        format!("notification_url=http://127.0.0.1:{closed}"),
    ] {
        let relay = Relay::start(relay_testkit::Backend::Epoll, &[&url]);
        let (a, b) = (new_addr("ga"), new_addr("gb"));
        let mut bi = imap_login(&relay, &b);
        set_token(&mut bi, "tok-g");
        let mut send = smtp_login(&relay, &a);
        for n in 0..5 {
            let (code, text) = send.submit(&a, &[&b], &message("encrypted.eml.tmpl", &a, &b));
            assert_eq!(code, 250, "{url} message {n}: {text}");
        }
        let (lines, status) = bi.imap("s", "SELECT INBOX");
        assert!(status.starts_with("s OK"), "{status}");
        assert!(lines.iter().any(|l| l == "* 5 EXISTS"), "{lines:?}");
        // The notification stays pending for its retries (8 s later): nothing was lost.
        let pending = relay.store().notify_pending(0, usize::MAX);
        assert_eq!(pending.len(), 1, "{url}: {pending:?}");
    }
    let end = Instant::now() + ARRIVAL;
    while hits.load(std::sync::atomic::Ordering::SeqCst) == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        hits.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the notifier was tried"
    );
}

#[test]
fn an_https_notifier_is_verified_with_the_system_and_delivery_ca_file_certificates() {
    // The real notifier is HTTPS: the relay verifies its certificate against the system's CA
    // certificates plus `delivery_ca_file` (here the test's CA).
    let ca = TestCa::new();
    let trusted = Notifier::start_tls(ca.server(&["127.0.0.1"], &[]));
    let ca_option = format!("delivery_ca_file={}", ca.file().display());
    let relay = Relay::start(
        relay_testkit::Backend::Epoll,
        &[&trusted.relay_option(), &ca_option],
    );
    let (a, b) = (new_addr("sa"), new_addr("sb"));
    let mut bi = imap_login(&relay, &b);
    set_token(&mut bi, "tok-tls");
    let mut send = smtp_login(&relay, &a);
    let (code, text) = send.submit(&a, &[&b], &message("encrypted.eml.tmpl", &a, &b));
    assert_eq!(code, 250, "{text}");
    trusted.wait_for(1, ARRIVAL);
    std::thread::sleep(QUIET);
    assert_eq!(trusted.tokens(), ["tok-tls"]);
    drop(relay);

    // A notifier whose certificate no trusted CA issued gets a handshake but no token; the
    // notification stays pending for its retry.
    let other = TestCa::new();
    let untrusted = Notifier::start_tls(other.server(&["127.0.0.1"], &[]));
    let relay = Relay::start(
        relay_testkit::Backend::Epoll,
        &[&untrusted.relay_option(), &ca_option],
    );
    let mut bi = imap_login(&relay, &b);
    set_token(&mut bi, "tok-tls");
    let mut send = smtp_login(&relay, &a);
    let (code, text) = send.submit(&a, &[&b], &message("encrypted.eml.tmpl", &a, &b));
    assert_eq!(code, 250, "{text}");
    let end = Instant::now() + ARRIVAL;
    while untrusted.connections() == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(QUIET);
    assert!(untrusted.connections() >= 1, "the notifier was tried");
    assert_eq!(untrusted.tokens(), Vec::<String>::new());
    assert_eq!(relay.store().notify_pending(0, usize::MAX).len(), 1);
}
