//! Relays exchanging mail: two (or three) relays in this process, each on a loopback address of
//! its own with every listener on its standard port (other relays deliver to ports 25 and 443),
//! both kinds of domain: address literals (`[127.77.x.y]`, no DKIM) and `_`-names served by a
//! real DNS server on loopback (MX, A, DKIM keys). Root is needed for ports below 1024.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use relay::store::AccountId;
use relay_testkit::dns::{DnsServer, Record};
use relay_testkit::{
    backends, create_account, loopback_ip, Backend, Client, Kind, Relay, PASSWORD,
};

use crate::harness::message;

/// How long a delivery between two relays on this machine may take in a test.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A relay for `domain` (an IPv4 address for a literal relay) on its own loopback address.
fn relay_on(backend: Backend, ip: IpAddr, domain: &str, extra: &[&str]) -> Relay {
    extra
        .iter()
        .fold(
            Relay::builder(backend).standard_ports(ip, domain),
            |b, o| b.set(o),
        )
        .start()
}

fn account(relay: &Relay, local: &str) -> (String, AccountId) {
    let addr = format!("{local}@{}", relay.shared().config.address_domain());
    let id = create_account(relay.store(), &addr, 0);
    (addr, id)
}

fn submit(relay: &Relay, from: &str, to: &[&str], body: &[u8]) -> (u16, String) {
    let mut c = Client::tls(relay.addr(Kind::Submissions));
    assert_eq!(c.reply().0, 220);
    c.smtp_login(from, PASSWORD);
    c.submit(from, to, body)
}

/// The messages in `account`'s INBOX once there are at least `n`, within the deadline.
fn wait_inbox(relay: &Relay, account: AccountId, n: usize) -> Vec<Vec<u8>> {
    let store = relay.store();
    let start = Instant::now();
    loop {
        let view = store.mailbox_view(account, "INBOX").unwrap();
        if view.messages.len() >= n {
            return view
                .messages
                .iter()
                .map(|m| store.read(m.body).unwrap().to_vec())
                .collect();
        }
        assert!(
            start.elapsed() < DELIVERY_DEADLINE,
            "{} of {n} messages arrived within {DELIVERY_DEADLINE:?}; queue of the sender may tell",
            view.messages.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_queue_empty(relay: &Relay) {
    let start = Instant::now();
    while relay.store().queue_len() > 0 {
        assert!(
            start.elapsed() < DELIVERY_DEADLINE,
            "the queue did not drain"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(m: &[u8]) -> String {
    String::from_utf8_lossy(m).into_owned()
}

#[test]
fn literal_relays_exchange_mail_both_ways() {
    if !is_root() {
        eprintln!("SKIPPED: federation tests bind ports 25 and 443 (need root)");
        return;
    }
    for backend in backends() {
        let (ip_a, ip_b) = (loopback_ip(), loopback_ip());
        let a = relay_on(backend, ip_a, &ip_a.to_string(), &[]);
        let b = relay_on(backend, ip_b, &ip_b.to_string(), &[]);
        let (alice, alice_id) = account(&a, "alice0001");
        let (bob, bob_id) = account(&b, "bob000001");

        let (code, reply) = submit(
            &a,
            &alice,
            &[&bob],
            &message("encrypted.eml.tmpl", &alice, &bob),
        );
        assert_eq!(code, 250, "{backend:?}: {reply}");
        let got = wait_inbox(&b, bob_id, 1);
        assert!(text(&got[0]).contains("-----BEGIN PGP MESSAGE-----"));
        assert!(
            text(&got[0]).contains("Subject: [...]"),
            "submission cleanup ran at A"
        );
        assert!(
            !text(&got[0]).contains("DKIM-Signature"),
            "literal relays do not sign"
        );
        wait_queue_empty(&a);

        let (code, reply) = submit(
            &b,
            &bob,
            &[&alice],
            &message("encrypted.eml.tmpl", &bob, &alice),
        );
        assert_eq!(code, 250, "{backend:?}: {reply}");
        wait_inbox(&a, alice_id, 1);
        wait_queue_empty(&b);
    }
}

#[test]
fn delivery_over_https_only_and_over_smtp_only() {
    if !is_root() {
        eprintln!("SKIPPED: federation tests bind ports 25 and 443 (need root)");
        return;
    }
    let backend = Backend::Epoll;
    // B without port 25: only HTTPS /mxdeliv can reach it; C without 443: only SMTP.
    let (ip_a, ip_b, ip_c) = (loopback_ip(), loopback_ip(), loopback_ip());
    let a = relay_on(backend, ip_a, &ip_a.to_string(), &[]);
    let b = relay_on(backend, ip_b, &ip_b.to_string(), &["mx_port=0"]);
    let c = relay_on(backend, ip_c, &ip_c.to_string(), &["https_port=0"]);
    let (alice, _) = account(&a, "alice0002");
    let (bob, bob_id) = account(&b, "bob000002");
    let (carol, carol_id) = account(&c, "carol0002");
    for (to, relay, id) in [(&bob, &b, bob_id), (&carol, &c, carol_id)] {
        let (code, reply) = submit(
            &a,
            &alice,
            &[to],
            &message("encrypted.eml.tmpl", &alice, to),
        );
        assert_eq!(code, 250, "{reply}");
        wait_inbox(relay, id, 1);
    }
    // One message to both: two destinations, one queue entry each, one stored body.
    let both = message("encrypted.eml.tmpl", &alice, &bob);
    let (code, reply) = submit(&a, &alice, &[&bob, &carol], &both);
    assert_eq!(code, 250, "{reply}");
    wait_inbox(&b, bob_id, 2);
    wait_inbox(&c, carol_id, 2);
    wait_queue_empty(&a);
}

#[test]
fn unreachable_destination_waits_through_a_restart_then_arrives() {
    if !is_root() {
        eprintln!("SKIPPED: federation tests bind ports 25 and 443 (need root)");
        return;
    }
    let backend = Backend::Epoll;
    let (ip_a, ip_b) = (loopback_ip(), loopback_ip());
    let dir = tempfile::tempdir().unwrap();
    let mut a = Relay::builder(backend)
        .standard_ports(ip_a, &ip_a.to_string())
        .data_dir(dir.path())
        .start();
    let (alice, _) = account(&a, "alice0003");
    let bob = format!("bob000003@[{ip_b}]");
    // Nothing listens at B yet: accepted into the queue, then deferred.
    let (code, reply) = submit(
        &a,
        &alice,
        &[&bob],
        &message("encrypted.eml.tmpl", &alice, &bob),
    );
    assert_eq!(code, 250, "{reply}");
    assert_eq!(a.store().queue_len(), 1);
    a.restart();
    assert_eq!(a.store().queue_len(), 1, "the queue survives a restart");
    let b = relay_on(backend, ip_b, &ip_b.to_string(), &[]);
    let bob_id = create_account(b.store(), &bob, 0);
    // The first attempt after the restart may have failed before B was up; the operator's
    // retry skips the backoff.
    a.shared().delivery_retry.send_replace(String::new());
    let got = wait_inbox(&b, bob_id, 1);
    assert_eq!(got.len(), 1);
    wait_queue_empty(&a);
}

#[test]
fn unknown_recipient_bounces_exactly_once() {
    if !is_root() {
        eprintln!("SKIPPED: federation tests bind ports 25 and 443 (need root)");
        return;
    }
    let backend = Backend::Epoll;
    let (ip_a, ip_b) = (loopback_ip(), loopback_ip());
    let a = relay_on(backend, ip_a, &ip_a.to_string(), &[]);
    let _b = relay_on(backend, ip_b, &ip_b.to_string(), &[]);
    let (alice, alice_id) = account(&a, "alice0004");
    let nobody = format!("nobody999@[{ip_b}]");
    let (code, reply) = submit(
        &a,
        &alice,
        &[&nobody],
        &message("encrypted.eml.tmpl", &alice, &nobody),
    );
    assert_eq!(code, 250, "{reply}");
    let got = wait_inbox(&a, alice_id, 1);
    let dsn = text(&got[0]);
    assert!(dsn.contains("multipart/report"), "{dsn}");
    assert!(dsn.contains("Action: failed"), "{dsn}");
    assert!(dsn.contains(&nobody), "{dsn}");
    assert!(
        dsn.contains("550 5.1.1"),
        "the remote's reply is quoted: {dsn}"
    );
    wait_queue_empty(&a);
    // Exactly one.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        a.store()
            .mailbox_view(alice_id, "INBOX")
            .unwrap()
            .messages
            .len(),
        1
    );
}

/// Two `_`-domain relays whose names, MX and DKIM keys a DNS server on loopback serves.
struct NamedPair {
    dns: DnsServer,
    a: Relay,
    b: Relay,
}

fn named_pair(backend: Backend, tag: &str) -> NamedPair {
    let dns = DnsServer::start();
    let (ip_a, ip_b) = (loopback_ip(), loopback_ip());
    let (da, db) = (format!("_{tag}a.test"), format!("_{tag}b.test"));
    for (d, ip) in [(&da, ip_a), (&db, ip_b)] {
        let IpAddr::V4(v4) = ip else { unreachable!() };
        dns.add(d, Record::A(v4));
        dns.add(d, Record::Mx(10, d.clone()));
    }
    let opt = dns.relay_option();
    let a = relay_on(backend, ip_a, &da, &[&opt]);
    let b = relay_on(backend, ip_b, &db, &[&opt]);
    for (r, d) in [(&a, &da), (&b, &db)] {
        let key = relay::dkim::load_or_create(&r.shared().config.data_dir, "opendkim").unwrap();
        dns.txt(
            &relay::dkim::record_name("opendkim", d),
            &key.dns_txt_value(),
        );
    }
    NamedPair { dns, a, b }
}

#[test]
fn named_relays_sign_and_verify_dkim_through_dns() {
    if !is_root() {
        eprintln!("SKIPPED: federation tests bind ports 25 and 443 (need root)");
        return;
    }
    for backend in backends() {
        let p = named_pair(backend, "s");
        let (alice, _) = account(&p.a, "alice0005");
        let (bob, bob_id) = account(&p.b, "bob000005");
        let (code, reply) = submit(
            &p.a,
            &alice,
            &[&bob],
            &message("encrypted.eml.tmpl", &alice, &bob),
        );
        assert_eq!(code, 250, "{backend:?}: {reply}");
        let got = wait_inbox(&p.b, bob_id, 1);
        assert!(
            !text(&got[0]).contains("DKIM-Signature"),
            "stripped before the mailbox"
        );
        let key_name = relay::dkim::record_name("opendkim", &p.a.shared().config.mail_domain);
        assert!(p.dns.queries_for(&key_name) > 0, "B looked up A's DKIM key");
        assert!(
            p.dns.queries_for(&p.b.shared().config.mail_domain) > 0,
            "A resolved B's MX"
        );
        wait_queue_empty(&p.a);
    }
}

#[test]
fn unverifiable_origin_is_refused_554_and_bounced() {
    if !is_root() {
        eprintln!("SKIPPED: federation tests bind ports 25 and 443 (need root)");
        return;
    }
    let p = named_pair(Backend::Epoll, "u");
    // A's key is no longer published: B cannot verify A's signature.
    let key_name = relay::dkim::record_name("opendkim", &p.a.shared().config.mail_domain);
    p.dns.remove(&key_name);
    let (alice, alice_id) = account(&p.a, "alice0006");
    let (bob, bob_id) = account(&p.b, "bob000006");
    let (code, reply) = submit(
        &p.a,
        &alice,
        &[&bob],
        &message("encrypted.eml.tmpl", &alice, &bob),
    );
    assert_eq!(code, 250, "{reply}");
    let got = wait_inbox(&p.a, alice_id, 1);
    let dsn = text(&got[0]);
    assert!(dsn.contains("554 5.7.1"), "{dsn}");
    assert!(dsn.contains("DKIM"), "{dsn}");
    assert_eq!(
        p.b.store()
            .mailbox_view(bob_id, "INBOX")
            .unwrap()
            .messages
            .len(),
        0
    );
    wait_queue_empty(&p.a);
}
