#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::net::IpAddr;

use super::*;

const SECOND: u64 = 1_000_000_000;

fn cfg(rate: u32, burst: u32, max_smtp: u32) -> RateLimitConfig {
    RateLimitConfig {
        max_new_connections_per_minute: rate,
        new_connections_burst: burst,
        max_smtp_connections: max_smtp,
        ..RateLimitConfig::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn burst_from_one_address_is_refused_past_the_limit_another_is_admitted() {
    let a = Admission::new(&cfg(60, 10, 100));
    let t = 5 * SECOND;
    let flood: Vec<bool> = (0..25).map(|_| a.admit(ip("192.0.2.1"), t)).collect();
    assert_eq!(flood.iter().filter(|x| **x).count(), 10);
    assert!(
        flood[..10].iter().all(|x| *x),
        "the first burst is admitted"
    );
    assert!(a.admit(ip("192.0.2.2"), t), "another address is unaffected");
    // IPv4-mapped form of the flooding address shares its bucket.
    assert!(!a.admit(ip("::ffff:192.0.2.1"), t));
    // One token per second comes back.
    assert!(a.admit(ip("192.0.2.1"), t + SECOND));
    assert!(!a.admit(ip("192.0.2.1"), t + SECOND));
    let c = a.counters();
    assert_eq!((c.admitted, c.dropped), (12, 17));
    assert_eq!(a.top_dropped(5), vec![(PrefixKey::v4([192, 0, 2, 1]), 17)]);
}

#[test]
fn ipv6_sources_share_a_bucket_per_64() {
    let a = Admission::new(&cfg(60, 2, 100));
    assert!(a.admit(ip("2001:db8:0:1::1"), 0));
    assert!(a.admit(ip("2001:db8:0:1::2"), 0));
    assert!(!a.admit(ip("2001:db8:0:1:ffff::3"), 0), "same /64");
    assert!(a.admit(ip("2001:db8:0:2::1"), 0), "next /64");
}

#[test]
fn kernel_enforcement_keeps_the_userspace_twin_judging() {
    let mut a = Admission::new(&cfg(60, 5, 100));
    a.set_kernel_enforcement();
    assert_eq!(a.enforcement(), Enforcement::Kernel);
    // An IPv6 source with extension headers (or any other traffic XDP passes unjudged) is still
    // limited after accept: the twin's burst, twice the kernel's, then one per second.
    let p = ip("2001:db8::1");
    let admitted = (0..50).filter(|_| a.admit(p, 0)).count();
    assert_eq!(admitted, 10);
    assert!(a.admit(p, SECOND));
    assert!(!a.admit(p, SECOND));
    assert_eq!(a.counters().dropped, 41);
}

#[test]
fn kernel_admitted_connections_are_not_limited_twice_when_accepts_lag() {
    // The kernel admits a full burst spread over time at exactly its rate; the accept loop
    // lags and accepts all of it at once, later. The twin admits every one.
    let (rate, burst) = (60, 20);
    let mut a = Admission::new(&cfg(rate, burst, 100));
    a.set_kernel_enforcement();
    let p = ip("192.0.2.9");
    // Kernel view: 20 at t=0, then one per second for 20 s = 40 admitted SYNs.
    let kernel_admitted = burst + 20;
    // Userspace view: all 40 accepted together at t=20 s.
    let t = 20 * SECOND;
    let admitted = (0..kernel_admitted).filter(|_| a.admit(p, t)).count();
    assert_eq!(admitted, kernel_admitted as usize);
}

#[test]
fn concurrent_smtp_cap_is_a_fifth_and_guards_release() {
    let a = Admission::new(&cfg(600, 200, 15)); // 3 per source
    let p = ip("198.51.100.7");
    let s1 = a.enter_smtp(p).unwrap();
    let s2 = a.enter_smtp(p).unwrap();
    let s3 = a.enter_smtp(p).unwrap();
    assert!(
        a.enter_smtp(p).is_none(),
        "fourth concurrent connection refused"
    );
    let other = a.enter_smtp(ip("198.51.100.8"));
    assert!(other.is_some(), "another source has its own slots");
    drop(s2);
    let s4 = a.enter_smtp(p).expect("a released slot can be taken again");
    assert!(a.enter_smtp(p).is_none());
    drop((s1, s3, s4));
    let again: Vec<SmtpSlot> = (0..3).map(|_| a.enter_smtp(p).unwrap()).collect();
    assert_eq!(again.len(), 3);
    assert!(a.enter_smtp(p).is_none());
}

#[test]
fn smtp_cap_holds_across_threads() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let a = Arc::new(Admission::new(&cfg(600, 200, 50))); // 10 per source
    let p = ip("203.0.113.9");
    let held = Arc::new(AtomicUsize::new(0));
    let max_held = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (a, held, max_held) = (Arc::clone(&a), Arc::clone(&held), Arc::clone(&max_held));
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..500 {
                    if let Some(slot) = a.enter_smtp(p) {
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        max_held.fetch_max(now, Ordering::SeqCst);
                        mine.push(slot);
                    }
                    if mine.len() > 2 || (i % 3 == 0 && !mine.is_empty()) {
                        held.fetch_sub(1, Ordering::SeqCst);
                        drop(mine.remove(0));
                    }
                }
                held.fetch_sub(mine.len(), Ordering::SeqCst);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let max = max_held.load(Ordering::SeqCst);
    assert!(
        (1..=10).contains(&max),
        "at most 10 held at once, saw {max}"
    );
    // Everything was released: the full share is available again.
    let slots: Vec<SmtpSlot> = (0..10).filter_map(|_| a.enter_smtp(p)).collect();
    assert_eq!(slots.len(), 10);
    assert!(a.enter_smtp(p).is_none());
}

#[test]
fn imap_connections_per_source_are_capped_apart_from_smtp() {
    let a = Admission::new(&RateLimitConfig {
        max_imap_connections_per_source: 2,
        max_smtp_connections: 5,
        ..RateLimitConfig::default()
    });
    let p = ip("192.0.2.7");
    let i1 = a.enter_imap(p).unwrap();
    let _i2 = a.enter_imap(p).unwrap();
    assert!(
        a.enter_imap(p).is_none(),
        "third IMAP connection of the source"
    );
    // SMTP's share and other sources are separate.
    let _s = a.enter_smtp(p).expect("the SMTP share is separate");
    let _o = a.enter_imap(ip("192.0.2.8")).expect("another source");
    drop(i1);
    assert!(
        a.enter_imap(p).is_some(),
        "a released slot can be taken again"
    );
}

#[test]
fn tiny_smtp_limit_still_allows_one_connection() {
    let a = Admission::new(&cfg(600, 200, 3));
    let s = a.enter_smtp(ip("192.0.2.1"));
    assert!(s.is_some());
    assert!(a.enter_smtp(ip("192.0.2.1")).is_none());
}

#[test]
fn table_stays_bounded_under_many_sources() {
    // No refill: a source that is not evicted never gets a token back.
    let a = Admission::with_capacity(&cfg(0, 2, 100), 64);
    // A flooder at t=0 exhausts its bucket.
    assert!(a.admit(ip("192.0.2.1"), 0));
    assert!(a.admit(ip("192.0.2.1"), 0));
    assert!(!a.admit(ip("192.0.2.1"), 0));
    // Many distinct sources, each once, at increasing times.
    for i in 0..1000u32 {
        let [_, _, x, y] = (i + 256).to_be_bytes();
        assert!(a.admit(IpAddr::from([10, 0, x, y]), SECOND * u64::from(i) / 1000));
        assert!(a.tracked_sources() <= 64);
    }
    // The flooder's bucket is gone (it was the least recently updated), so it starts afresh:
    // eviction is only ever generous.
    assert!(a.admit(ip("192.0.2.1"), SECOND));
}

#[test]
fn eviction_keeps_recently_active_sources() {
    let a = Admission::with_capacity(&cfg(60, 2, 100), 16);
    // Fill with 15 old sources, each of which used one token at t=0.
    for i in 1..=15u8 {
        assert!(a.admit(IpAddr::from([10, 0, 0, i]), 0));
    }
    // A recent flooder empties its bucket at t=0.5s.
    let hot = ip("192.0.2.77");
    assert!(a.admit(hot, SECOND / 2));
    assert!(a.admit(hot, SECOND / 2));
    assert!(!a.admit(hot, SECOND / 2));
    // The table is full: new sources at t=0.6s force eviction of the oldest, not of `hot`.
    for i in 1..=4u8 {
        assert!(a.admit(IpAddr::from([10, 0, 1, i]), SECOND * 6 / 10));
    }
    assert!(a.tracked_sources() <= 16);
    assert!(
        !a.admit(hot, SECOND * 6 / 10),
        "the active flooder keeps its empty bucket"
    );
}

#[test]
fn start_without_interfaces_uses_userspace() {
    let (a, e) = start(&RateLimitConfig::default());
    assert_eq!(e, Enforcement::Userspace);
    assert_eq!(a.enforcement(), Enforcement::Userspace);
    let burst = DEFAULT_NEW_CONNECTIONS_BURST as usize;
    let n = (0..burst + 50)
        .filter(|_| a.admit(ip("192.0.2.1"), 0))
        .count();
    assert_eq!(n, burst);
}

#[cfg(not(feature = "ebpf"))]
#[test]
fn start_with_interfaces_but_without_the_feature_falls_back() {
    let c = RateLimitConfig {
        ebpf_interfaces: vec!["lo".into()],
        ..RateLimitConfig::default()
    };
    assert_eq!(start(&c).1, Enforcement::Userspace);
}

#[test]
fn admission_can_be_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Admission>();
    shared::<SmtpSlot>();
}
