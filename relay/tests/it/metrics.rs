//! `GET /metrics` on `metrics_address`: counters move by exactly the traffic sent, the listener
//! is off unless configured, and a scrape flood stays bounded without touching mail.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use relay::server::Kind;
use relay_testkit::create_account;

use super::harness::{backends, message, new_addr, Client, Relay, PASSWORD};
use super::{imap_login, smtp_login};

/// Sends `request` on a new connection and reads until the server closes it: (status, body).
/// `None` when the server closed without an answer.
fn http(addr: SocketAddr, request: &[u8]) -> Option<(u16, String)> {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(request).unwrap();
    let mut raw = Vec::new();
    let _ = tcp.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Every sample of a scrape: `name{labels}` → value.
pub(crate) fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, body) = get(addr, "/metrics").expect("no answer to /metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// What moved between two scrapes (series present in both; new series count from 0).
fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

fn metrics_relay(backend: relay::server::Backend, extra: &[&str]) -> Relay {
    let mut overrides = vec!["metrics_address=127.0.0.1:0"];
    overrides.extend_from_slice(extra);
    Relay::start(backend, &overrides)
}

/// Series that count mail events; each must move by exactly what the test sent.
const EVENT_SERIES: &[&str] = &[
    "chatmail_messages_",
    "chatmail_logins_",
    "chatmail_accounts_",
    "chatmail_deliveries_",
    "chatmail_push_",
    "delivered_mail",
    "quota_exceeded",
    "dkim_signed",
    "created_",
    "rejected_",
];

#[test]
fn counters_move_by_exactly_the_traffic() {
    for backend in backends() {
        let relay = metrics_relay(backend, &[]);
        let addr = relay.metrics_addr().expect("metrics listener");
        // The recipient exists before the first scrape (made in the store, not by a login).
        let (a, b) = (new_addr("ma"), new_addr("mb"));
        create_account(relay.store(), &b, 0);
        let before = scrape(addr);

        // One login of an existing account, in IDLE for a while.
        let mut idle = imap_login(&relay, &b);
        let (_, status) = idle.imap("s", "SELECT INBOX");
        assert!(status.starts_with("s OK"), "{status}");
        idle.send("i IDLE");
        assert!(idle.line().starts_with('+'));
        // One account created by its first login, three messages accepted, one refused as
        // cleartext.
        let mut send = smtp_login(&relay, &a);
        for _ in 0..3 {
            let (code, text) = send.submit(&a, &[&b], &message("encrypted.eml.tmpl", &a, &b));
            assert_eq!(code, 250, "{text}");
        }
        let (code, text) = send.submit(&a, &[&b], &message("cleartext.eml.tmpl", &a, &b));
        assert_eq!(code, 523, "{text}");
        // One failed login.
        let mut wrong = Client::tls(relay.addr(Kind::Imaps));
        wrong.line();
        let (_, status) = wrong.imap("w", &format!("LOGIN \"{b}\" \"not-{PASSWORD}\""));
        assert!(status.starts_with("w NO"), "{status}");
        // The session saw all three (so their IDLE wake-ups are done).
        while idle.line() != "* 3 EXISTS" {}

        let after = scrape(addr);
        let d = moved(&before, &after);
        let prog = "{prog=\"delivered_mail.mtail\"}";
        let mut want: BTreeMap<String, f64> = [
            ("chatmail_messages_accepted_total{path=\"submission\"}", 3.0),
            (
                "chatmail_messages_rejected_total{path=\"submission\",code=\"523\"}",
                1.0,
            ),
            ("chatmail_logins_total{result=\"ok\"}", 2.0),
            ("chatmail_logins_total{result=\"failed\"}", 1.0),
            ("chatmail_accounts_created_total", 1.0),
            (
                "chatmail_deliveries_total{where=\"local\",result=\"delivered\"}",
                3.0,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (name, v) in [
            ("delivered_mail", 3.0),
            ("created_accounts", 1.0),
            ("created_nonci_accounts", 1.0),
            ("rejected_unencrypted_mail_count", 1.0),
        ] {
            want.insert(format!("{name}{prog}"), v);
        }
        let got: BTreeMap<String, f64> = d
            .iter()
            .filter(|(k, _)| EVENT_SERIES.iter().any(|p| k.starts_with(p)))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        assert_eq!(got, want, "{backend:?}");
        // Connections: the submission, the IDLE session and the failed login.
        assert_eq!(
            d.get("chatmail_connections_accepted_total{port=\"submissions\"}"),
            Some(&1.0)
        );
        assert_eq!(
            d.get("chatmail_connections_accepted_total{port=\"imaps\"}"),
            Some(&2.0)
        );
        assert_eq!(after["chatmail_imap_idle_sessions"], 1.0);
        assert!(after["chatmail_connections_open{port=\"imaps\"}"] >= 1.0);
        // Every commit was one fdatasync, timed.
        let commits = d["chatmail_store_commits_total"];
        assert!(commits >= 4.0, "{commits}");
        assert_eq!(d["chatmail_store_fsync_seconds_count"], commits);
        assert_eq!(
            after["chatmail_store_fsync_seconds_bucket{le=\"+Inf\"}"],
            after["chatmail_store_fsync_seconds_count"]
        );
        assert!(d["chatmail_store_written_bytes_total"] > 0.0);
        assert!(after["chatmail_store_segments"] >= 1.0);
        assert_eq!(after["chatmail_queue_entries"], 0.0);
        assert_eq!(
            after["chatmail_ratelimit_connections_total{mode=\"userspace\",verdict=\"dropped\"}"],
            0.0
        );
        assert!(
            d["chatmail_ratelimit_connections_total{mode=\"userspace\",verdict=\"admitted\"}"]
                >= 3.0
        );

        // Leaving IDLE brings the gauge back.
        idle.send("DONE");
        let (_, status) = idle.until_tag("i");
        assert!(status.starts_with("i OK"), "{status}");
        assert_eq!(scrape(addr)["chatmail_imap_idle_sessions"], 0.0);
    }
}

#[test]
fn the_listener_is_off_by_default() {
    let relay = Relay::start(backends()[0], &[]);
    assert_eq!(relay.metrics_addr(), None);
    assert_eq!(relay.shared().config.metrics_address, None);
}

/// Reads what is there without waiting: `true` when the server closed the connection, `false`
/// while it is open and silent.
fn closed_now(mut tcp: &TcpStream) -> bool {
    tcp.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let closed = match tcp.read(&mut buf) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    tcp.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn a_scrape_flood_stays_bounded_and_mail_flows() {
    use relay::metrics::http::{HEAD_TIMEOUT, MAX_CONNECTIONS};
    let relay = metrics_relay(backends()[0], &["max_user_send_burst_size=1000"]);
    let addr = relay.metrics_addr().unwrap();
    let (a, b) = (new_addr("fa"), new_addr("fb"));
    create_account(relay.store(), &b, 0);
    let mut send = smtp_login(&relay, &a);

    // A request head that never ends: closed after HEAD_TIMEOUT (checked at the end).
    let slow_started = Instant::now();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();

    // Concurrent scrapers (fewer than the cap) and mail at the same time: all answered.
    std::thread::scope(|s| {
        let scrapers: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(move || {
                    for _ in 0..15 {
                        let (status, body) = get(addr, "/metrics").expect("scrape refused");
                        assert_eq!(status, 200);
                        assert!(body.contains("chatmail_messages_accepted_total"));
                    }
                })
            })
            .collect();
        for _ in 0..5 {
            let (code, text) = send.submit(&a, &[&b], &message("encrypted.eml.tmpl", &a, &b));
            assert_eq!(code, 250, "{text}");
        }
        for t in scrapers {
            t.join().unwrap();
        }
    });

    // A flood of silent connections: the cap holds, the rest are closed at once.
    let flood: Vec<TcpStream> = (0..3 * MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    let kept = loop {
        std::thread::sleep(Duration::from_millis(50));
        let kept = flood.iter().filter(|t| !closed_now(t)).count();
        // The slow connection holds one slot.
        if kept < MAX_CONNECTIONS || Instant::now() > deadline {
            break kept;
        }
    };
    // The slow connection holds one slot; a few may still have been held by the scrapers.
    assert!(
        (MAX_CONNECTIONS / 2..MAX_CONNECTIONS).contains(&kept),
        "connections held by the flood: {kept}"
    );
    // Mail is not slowed by it.
    let t = Instant::now();
    let (code, text) = send.submit(&a, &[&b], &message("encrypted.eml.tmpl", &a, &b));
    assert_eq!(code, 250, "{text}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The flood ends: scrapes are served again.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some((200, _)) = get(addr, "/metrics") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scrapes not served after the flood"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Bad requests get clean answers.
    assert_eq!(get(addr, "/").map(|r| r.0), Some(404));
    assert_eq!(get(addr, "/metrics/../x").map(|r| r.0), Some(404));
    let post = http(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(post.map(|r| r.0), Some(405));
    let garbage = http(addr, b"\x16\x03\x01\x02\x00garbage\r\n\r\n");
    assert!(garbage.as_ref().is_none_or(|r| r.0 == 400), "{garbage:?}");
    let mut huge = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let huge = http(addr, &huge);
    assert!(
        huge.as_ref().is_none_or(|r| r.0 == 431 || r.0 == 400),
        "{huge:?}"
    );

    // The head that never ended was closed after HEAD_TIMEOUT.
    slow.set_read_timeout(Some(HEAD_TIMEOUT + Duration::from_secs(3)))
        .unwrap();
    let mut buf = Vec::new();
    let r = slow.read_to_end(&mut buf);
    assert!(r.is_ok(), "the slow connection was not closed: {r:?}");
    let took = slow_started.elapsed();
    assert!(
        took >= HEAD_TIMEOUT && took < HEAD_TIMEOUT + Duration::from_secs(3),
        "{took:?}"
    );
    // And the relay still takes mail.
    let (code, text) = send.submit(&a, &[&b], &message("encrypted.eml.tmpl", &a, &b));
    assert_eq!(code, 250, "{text}");
}
