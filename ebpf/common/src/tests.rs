#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

extern crate std;

use std::vec::Vec;

use proptest::prelude::*;

use super::*;

const SECOND: u64 = 1_000_000_000;

fn limits(rate_per_minute: u32, burst: u32) -> Limits {
    Limits {
        rate_per_minute,
        burst,
    }
}

#[test]
fn admits_burst_then_refuses() {
    let l = limits(60, 5);
    let mut b = Bucket::full(0, &l);
    for i in 0..5 {
        assert!(admit(&mut b, 0, &l), "connection {i} within burst");
    }
    assert!(!admit(&mut b, 0, &l));
    assert_eq!((b.admitted, b.dropped), (5, 1));
}

#[test]
fn refills_at_the_configured_rate() {
    // 60 per minute: one token per second.
    let l = limits(60, 3);
    let mut b = Bucket::full(0, &l);
    for _ in 0..3 {
        assert!(admit(&mut b, 0, &l));
    }
    assert!(!admit(&mut b, SECOND - 1, &l), "not yet a full token");
    assert!(admit(&mut b, SECOND, &l), "one token after one second");
    assert!(!admit(&mut b, SECOND, &l));
    // A long pause refills to the burst, not beyond.
    let later = 1000 * SECOND;
    let admitted = (0..10).filter(|_| admit(&mut b, later, &l)).count();
    assert_eq!(admitted, 3);
}

#[test]
fn clock_going_backwards_adds_nothing() {
    let l = limits(60, 1);
    let mut b = Bucket::full(10 * SECOND, &l);
    assert!(admit(&mut b, 10 * SECOND, &l));
    assert!(!admit(&mut b, 0, &l));
    assert!(
        !admit(&mut b, 10 * SECOND, &l),
        "last_ns must not move back"
    );
    assert!(admit(&mut b, 11 * SECOND, &l));
}

#[test]
fn zero_rate_gives_only_the_burst_and_zero_burst_nothing() {
    let l = limits(0, 2);
    let mut b = Bucket::full(0, &l);
    assert!(admit(&mut b, 0, &l));
    assert!(admit(&mut b, u64::MAX / 2, &l));
    assert!(!admit(&mut b, u64::MAX, &l));

    let l = limits(600, 0);
    let mut b = Bucket::full(0, &l);
    assert!(!admit(&mut b, 0, &l));
    assert!(!admit(&mut b, u64::MAX, &l));
}

#[test]
fn extreme_limits_do_not_overflow() {
    let l = limits(u32::MAX, u32::MAX);
    let mut b = Bucket::full(0, &l);
    assert!(admit(&mut b, u64::MAX, &l));
    let mut b = Bucket {
        level_ns: u64::MAX,
        last_ns: 0,
        admitted: 0,
        dropped: 0,
    };
    assert!(admit(&mut b, u64::MAX, &l));
    assert!(b.level_ns <= l.capacity_ns());
}

#[test]
fn keys_group_ipv6_by_64_and_map_v4_mapped_addresses() {
    let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
    let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(PrefixKey::from_ip(a), PrefixKey::from_ip(b));
    assert_ne!(PrefixKey::from_ip(a), PrefixKey::from_ip(c));
    assert_eq!(PrefixKey::from_ip(a).prefix_len(), 64);
    assert_eq!(
        PrefixKey::from_ip(a).ip(),
        "2001:db8:1:2::".parse::<IpAddr>().unwrap()
    );

    let v4: IpAddr = "192.0.2.7".parse().unwrap();
    let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
    assert_eq!(PrefixKey::from_ip(v4), PrefixKey::from_ip(mapped));
    assert_eq!(PrefixKey::from_ip(v4), PrefixKey::v4([192, 0, 2, 7]));
    assert_eq!(PrefixKey::from_ip(v4).ip(), v4);
    assert_ne!(
        PrefixKey::from_ip(v4),
        PrefixKey::from_ip("192.0.2.8".parse().unwrap())
    );
}

#[test]
fn keys_display_as_prefixes() {
    use std::string::ToString;
    let v6 = PrefixKey::from_ip("2001:db8:1:2:aaaa::1".parse().unwrap());
    assert_eq!(v6.to_string(), "2001:db8:1:2::/64");
    assert_eq!(PrefixKey::v4([192, 0, 2, 1]).to_string(), "192.0.2.1/32");
}

#[test]
fn config_matches_only_listed_nonzero_ports() {
    let mut c = Config::default();
    assert!(!c.limits_port(0));
    assert!(!c.limits_port(25));
    c.ports[0] = 25;
    c.ports[7] = 465;
    assert!(c.limits_port(25));
    assert!(c.limits_port(465));
    assert!(!c.limits_port(587));
    assert!(!c.limits_port(0), "empty slots must not match port 0");
}

#[test]
fn map_types_have_no_padding() {
    use core::mem::size_of;
    assert_eq!(size_of::<PrefixKey>(), 4 + 16);
    assert_eq!(size_of::<Bucket>(), 4 * 8);
    assert_eq!(size_of::<Limits>(), 2 * 4);
    assert_eq!(size_of::<Config>(), 8 + 2 * MAX_PORTS);
    for (i, (counter, _)) in COUNTER_NAMES.iter().enumerate() {
        assert_eq!(*counter as usize, i);
    }
}

proptest! {
    /// Over any run of calls, the admitted count never exceeds burst + rate × elapsed.
    #[test]
    fn never_admits_more_than_burst_plus_rate_times_elapsed(
        rate in 0u32..100_000,
        burst in 0u32..2_000,
        start in 0u64..(1u64 << 62),
        steps in proptest::collection::vec(0u64..(2 * SECOND), 1..300),
    ) {
        let l = limits(rate, burst);
        let mut b = Bucket::full(start, &l);
        let mut now = start;
        let mut admitted: u64 = 0;
        for step in steps {
            now += step;
            if admit(&mut b, now, &l) {
                admitted += 1;
            }
            let elapsed = (now - start) as u128;
            let bound = burst as u128 + rate as u128 * elapsed / NS_PER_MINUTE as u128;
            prop_assert!(admitted as u128 <= bound,
                "admitted {admitted} > bound {bound} after {elapsed} ns");
        }
        prop_assert_eq!(b.admitted, admitted);
    }

    /// An emptied bucket admits again once enough time has passed for one token, and a full
    /// bucket admits exactly `burst` back-to-back connections.
    #[test]
    fn refills(rate in 1u32..100_000, burst in 1u32..500, start in 0u64..(1u64 << 62)) {
        let l = limits(rate, burst);
        let mut b = Bucket::full(start, &l);
        let n = (0..burst + 10).filter(|_| admit(&mut b, start, &l)).count();
        prop_assert_eq!(n, burst as usize);
        prop_assert!(!admit(&mut b, start, &l));
        let one_token = NS_PER_MINUTE.div_ceil(rate as u64);
        prop_assert!(admit(&mut b, start + one_token, &l));
        let t = start + one_token + l.capacity_ns();
        let refilled: Vec<bool> = (0..burst + 10).map(|_| admit(&mut b, t, &l)).collect();
        prop_assert_eq!(refilled.iter().filter(|a| **a).count(), burst as usize);
    }

    /// Kernel and userspace state can be mixed freely: the key of an address round-trips.
    #[test]
    fn v4_key_round_trips(o in any::<[u8; 4]>()) {
        let ip = IpAddr::from(o);
        prop_assert_eq!(PrefixKey::from_ip(ip).ip(), ip);
    }
}
