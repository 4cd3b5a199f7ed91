//! The per-source limit on `/new` (the reference's nginx `limit_req`: 2 requests a second, a burst
//! of 5, per client address). A token bucket per source (IPv4 address, IPv6 /64), time passed in;
//! the table is bounded: when it is full, buckets that have refilled are forgotten first, then the
//! oldest.

use std::collections::HashMap;
use std::net::IpAddr;

use relay_ebpf_common::PrefixKey;

/// Requests a second one source may make to `/new` on average.
pub const NEW_PER_SECOND: u64 = 2;
/// Requests one source may make at once.
pub const NEW_BURST: u64 = 5;
/// Sources tracked at most.
pub const MAX_SOURCES: usize = 16 * 1024;

/// A bucket: the time (ms) at which it would be full again ("theoretical arrival time", GCRA).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tat_ms: u64,
}

/// Per-source GCRA limiter.
#[derive(Debug)]
pub struct Limiter {
    interval_ms: u64,
    burst: u64,
    max_sources: usize,
    buckets: HashMap<PrefixKey, Bucket>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(NEW_PER_SECOND, NEW_BURST, MAX_SOURCES)
    }
}

impl Limiter {
    /// `per_second` on average, `burst` at once, at most `max_sources` tracked.
    pub fn new(per_second: u64, burst: u64, max_sources: usize) -> Limiter {
        Limiter {
            interval_ms: 1000 / per_second.max(1),
            burst: burst.max(1),
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Whether a request from `peer` at `now_ms` is allowed (and counts it if so).
    pub fn allow(&mut self, peer: IpAddr, now_ms: u64) -> bool {
        let key = PrefixKey::from_ip(peer);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_sources {
            self.evict(now_ms);
        }
        let tolerance = self.interval_ms * (self.burst - 1);
        let bucket = self.buckets.entry(key).or_insert(Bucket { tat_ms: now_ms });
        let tat = bucket.tat_ms.max(now_ms);
        if tat - now_ms > tolerance {
            return false;
        }
        bucket.tat_ms = tat + self.interval_ms;
        true
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    fn evict(&mut self, now_ms: u64) {
        self.buckets.retain(|_, b| b.tat_ms > now_ms);
        if self.buckets.len() >= self.max_sources {
            // All busy: forget the one that refills first.
            if let Some(k) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.tat_ms)
                .map(|(k, _)| *k)
            {
                self.buckets.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_the_average_rate() {
        let mut l = Limiter::default();
        let a = ip("192.0.2.1");
        let allowed = (0..20).filter(|_| l.allow(a, 1_000)).count();
        assert_eq!(allowed, 5);
        // One more every 500 ms.
        assert!(!l.allow(a, 1_400));
        assert!(l.allow(a, 1_500));
        assert!(!l.allow(a, 1_600));
        // Over ten seconds at 20 requests a second: 2 a second pass.
        let passed = (0..200).filter(|i| l.allow(a, 2_000 + i * 50)).count();
        assert!((19..=21).contains(&passed), "{passed}");
        // Others are not affected.
        assert!(l.allow(ip("192.0.2.2"), 2_000));
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let mut l = Limiter::default();
        for i in 0..5 {
            assert!(l.allow(ip(&format!("2001:db8:1:2::{i}")), 0));
        }
        assert!(!l.allow(ip("2001:db8:1:2:ffff::1"), 0));
        assert!(l.allow(ip("2001:db8:1:3::1"), 0));
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut l = Limiter::new(2, 5, 100);
        for i in 0..10_000u32 {
            let a = IpAddr::from(i.to_be_bytes());
            assert!(l.allow(a, u64::from(i)));
            assert!(l.tracked() <= 100);
        }
    }
}
