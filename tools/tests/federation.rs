//! `loadgen` across two relays (what `tools/fed-bench.sh` measures, as accounting, not speed):
//! users of relay A submit at A, users of relay B receive at B in IDLE, and every message A
//! accepted is fetched at B with both latencies recorded and A's queue drains. Once with
//! IP-literal relays (no DKIM) and once with `_`-named relays whose A, MX and DKIM records a DNS
//! server on loopback serves (A signs, B verifies). Each relay has a loopback address of its own
//! with its listeners on the standard ports (A delivers to B's 443 and 25), hence root.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: integration tests
#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use relay_testkit::dns::{DnsServer, Record};
use relay_testkit::{run_ok, Backend, Relay};

/// Loopback addresses of these relays: outside testkit's `127.77.x.y` (the relay's own
/// federation tests) and `tools/fed-bench.sh`'s `127.79.0.x`.
fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 78, 0, n))
}

fn relay(ip: IpAddr, domain: &str, dns: Option<&DnsServer>) -> Relay {
    let mut b = Relay::builder(Backend::Epoll)
        .standard_ports(ip, domain)
        .set("max_user_send_per_minute=100000000")
        .set("max_user_send_burst_size=100000000");
    if let Some(dns) = dns {
        b = b.set(&dns.relay_option());
    }
    b.start()
}

/// Runs loadgen from A's users (`sender`, an address pattern) at `a` to B's users
/// (`receiver`) at `b`: 200 messages a second for one second.
fn loadgen(a: IpAddr, b: IpAddr, sender: &str, receiver: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["--host", &a.to_string(), "--smtp-port", "465"])
            .args(["--imap-host", &b.to_string(), "--imap-port", "993"])
            .args([
                "--accounts-pattern",
                sender,
                "--receivers-pattern",
                receiver,
            ])
            .args(["--senders", "2", "--receivers", "2", "--rate", "200"])
            .args(["--duration", "1", "--drain", "30"])
            .arg("--json")
            .arg(&json),
    );
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

/// Every accepted message was fetched at B, with its latencies, and A's queue is empty.
fn check(what: &str, v: &serde_json::Value, a: &Relay) {
    let accepted = v["accepted"].as_u64().unwrap();
    // Accounting, not throughput: on a busy machine far fewer than the 200 scheduled may go out
    // in the second. Some must, or the rest proves nothing.
    assert!(accepted >= 20, "{what}: only {accepted} accepted: {v}");
    assert_eq!(v["delivered"], accepted, "{what}: {v}");
    assert_eq!(v["undelivered"], 0, "{what}: {v}");
    assert_eq!(v["delivery_latency"]["count"], accepted, "{what}: {v}");
    assert_eq!(v["notify_latency"]["count"], accepted, "{what}: {v}");
    assert_eq!(v["errors_total"], 0, "{what}: {v}");
    assert_eq!(v["stale_fetched"], 0, "{what}: {v}");
    // A commits each delivered entry's end after B answered: soon after the last fetch.
    let start = Instant::now();
    while a.store().queue_len() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: A's queue did not drain"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn every_message_a_accepted_is_fetched_at_b() {
    if !is_root() {
        eprintln!("SKIPPED: the relays bind ports 25 and 443 (need root)");
        return;
    }
    // IP-literal relays: no DNS, no DKIM.
    {
        let (ip_a, ip_b) = (ip(1), ip(2));
        let a = relay(ip_a, &ip_a.to_string(), None);
        let _b = relay(ip_b, &ip_b.to_string(), None);
        let v = loadgen(
            ip_a,
            ip_b,
            &format!("fa{{n:07}}@[{ip_a}]"),
            &format!("fb{{n:07}}@[{ip_b}]"),
        );
        check("literal relays", &v, &a);
    }
    // Named relays: A signs, B looks A's key up and verifies.
    {
        let (ip_a, ip_b) = (ip(3), ip(4));
        let (da, db) = ("_fta.test", "_ftb.test");
        let dns = DnsServer::start();
        for (d, ip) in [(da, ip_a), (db, ip_b)] {
            let IpAddr::V4(v4) = ip else { unreachable!() };
            dns.add(d, Record::A(v4));
            dns.add(d, Record::Mx(10, d.to_owned()));
        }
        let a = relay(ip_a, da, Some(&dns));
        let b = relay(ip_b, db, Some(&dns));
        for (r, d) in [(&a, da), (&b, db)] {
            let key = relay::dkim::load_or_create(&r.shared().config.data_dir, "opendkim").unwrap();
            dns.txt(
                &relay::dkim::record_name("opendkim", d),
                &key.dns_txt_value(),
            );
        }
        let v = loadgen(
            ip_a,
            ip_b,
            &format!("fa{{n:07}}@{da}"),
            &format!("fb{{n:07}}@{db}"),
        );
        check("named relays", &v, &a);
        assert!(
            dns.queries_for(&relay::dkim::record_name("opendkim", da)) > 0,
            "B looked A's DKIM key up: {:?}",
            dns.queries()
        );
        drop(b);
    }
}
