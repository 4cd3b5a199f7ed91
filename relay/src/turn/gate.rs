//! The TURN limits the crate lacks: allocations per credential, per source and in all
//! ([`Gate`]), bytes a second per allocation ([`Bucket`]). No I/O, no clock: time enters as
//! nanoseconds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use relay_ebpf_common::PrefixKey;

/// Why an Allocate is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Quota {
    /// The credential holds `turn_max_allocations_per_username` (answered `486 Allocation Quota
    /// Reached`, RFC 5766 §6.2).
    #[error("allocation quota of the username reached")]
    Username,
    /// The client's source (IPv4 address, IPv6 /64) holds `turn_max_allocations_per_source`
    /// (answered `486` too): anyone can fetch fresh credentials every second, so the per-username
    /// cap alone would let one host take every allocation.
    #[error("allocation quota of the source address reached")]
    Source,
    /// The relay holds `turn_max_allocations` (answered `508 Insufficient Capacity`).
    #[error("no capacity for another allocation")]
    Total,
}

/// Counts live allocations per username, per source and in all.
#[derive(Debug)]
pub struct Gate {
    limits: Limits,
    state: Mutex<Counts>,
}

/// The caps of a [`Gate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Allocations of one username at once.
    pub per_username: u32,
    /// Allocations of one source (IPv4 address, IPv6 /64) at once.
    pub per_source: u32,
    /// Allocations in all.
    pub total: u32,
}

#[derive(Debug, Default)]
struct Counts {
    by_username: HashMap<String, u32>,
    by_source: HashMap<PrefixKey, u32>,
    total: u32,
}

/// Takes one from `map[key]`, removing the entry at zero (so that the maps hold only live
/// allocations' keys).
fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Gate {
    /// A gate with these caps.
    pub fn new(limits: Limits) -> Gate {
        Gate {
            limits,
            state: Mutex::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `username` may allocate one more from `source` now.
    ///
    /// # Errors
    /// The cap it would exceed.
    pub fn admits(&self, username: &str, source: IpAddr) -> Result<(), Quota> {
        self.check(&self.counts(), username, PrefixKey::from_ip(source))
    }

    fn check(&self, c: &Counts, username: &str, source: PrefixKey) -> Result<(), Quota> {
        if c.by_username.get(username).copied().unwrap_or(0) >= self.limits.per_username {
            Err(Quota::Username)
        } else if c.by_source.get(&source).copied().unwrap_or(0) >= self.limits.per_source {
            Err(Quota::Source)
        } else if c.total >= self.limits.total {
            Err(Quota::Total)
        } else {
            Ok(())
        }
    }

    /// Counts an allocation of `username` from `source` until the returned reservation is
    /// dropped.
    ///
    /// # Errors
    /// The cap it would exceed.
    pub fn reserve(self: &Arc<Self>, username: &str, source: IpAddr) -> Result<Reservation, Quota> {
        let source = PrefixKey::from_ip(source);
        let mut c = self.counts();
        self.check(&c, username, source)?;
        *c.by_username.entry(username.to_owned()).or_insert(0) += 1;
        *c.by_source.entry(source).or_insert(0) += 1;
        c.total += 1;
        Ok(Reservation {
            gate: self.clone(),
            username: username.to_owned(),
            source,
        })
    }

    /// Live allocations in all.
    pub fn total(&self) -> u32 {
        self.counts().total
    }
}

/// One counted allocation; dropping it gives the slot back.
#[derive(Debug)]
pub struct Reservation {
    gate: Arc<Gate>,
    username: String,
    source: PrefixKey,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut c = self.gate.counts();
        c.total = c.total.saturating_sub(1);
        release(&mut c.by_username, &self.username);
        release(&mut c.by_source, &self.source);
    }
}

/// A token bucket over bytes: `rate` bytes a second, bursts of up to one second's worth.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: u64,
    /// Bytes that may pass now, in units of 1/10^9 byte (so that nanoseconds add exactly).
    tokens: u128,
    last_ns: u64,
}

const NANOS: u128 = 1_000_000_000;

impl Bucket {
    /// A full bucket at `now_ns`.
    pub fn new(rate: u64, now_ns: u64) -> Bucket {
        Bucket {
            rate,
            tokens: u128::from(rate) * NANOS,
            last_ns: now_ns,
        }
    }

    /// Whether `len` bytes may pass at `now_ns` (and takes them if so).
    pub fn take(&mut self, len: usize, now_ns: u64) -> bool {
        let cap = u128::from(self.rate) * NANOS;
        let elapsed = u128::from(now_ns.saturating_sub(self.last_ns));
        self.last_ns = self.last_ns.max(now_ns);
        self.tokens = (self.tokens + elapsed * u128::from(self.rate)).min(cap);
        let need = len as u128 * NANOS;
        if need <= self.tokens {
            self.tokens -= need;
            true
        } else {
            false
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
    fn caps_per_username_and_in_all_and_slots_come_back() {
        let gate = Arc::new(Gate::new(Limits {
            per_username: 2,
            per_source: 10,
            total: 3,
        }));
        let x = ip("192.0.2.1");
        let a1 = gate.reserve("a", x).unwrap();
        let _a2 = gate.reserve("a", x).unwrap();
        assert_eq!(gate.admits("a", x), Err(Quota::Username));
        assert_eq!(gate.reserve("a", x).unwrap_err(), Quota::Username);
        let _b1 = gate.reserve("b", x).unwrap();
        // "b" is under its own cap, but the relay is full.
        assert_eq!(gate.admits("b", x), Err(Quota::Total));
        assert_eq!(gate.reserve("c", x).unwrap_err(), Quota::Total);
        assert_eq!(gate.total(), 3);
        drop(a1);
        assert_eq!(gate.total(), 2);
        assert_eq!(gate.admits("a", x), Ok(()));
        let _c1 = gate.reserve("c", x).unwrap();
        assert_eq!(gate.admits("a", x), Err(Quota::Total));
    }

    #[test]
    fn caps_per_source_with_fresh_usernames_ipv6_by_64() {
        let gate = Arc::new(Gate::new(Limits {
            per_username: 10,
            per_source: 2,
            total: 100,
        }));
        // Fresh credentials (one a second, as anyone can fetch) do not lift the source's cap.
        let held: Vec<_> = ["1", "2"]
            .iter()
            .map(|u| gate.reserve(u, ip("192.0.2.1")).unwrap())
            .collect();
        assert_eq!(
            gate.reserve("3", ip("192.0.2.1")).unwrap_err(),
            Quota::Source
        );
        assert_eq!(gate.admits("3", ip("::ffff:192.0.2.1")), Err(Quota::Source));
        let _other = gate.reserve("3", ip("192.0.2.2")).unwrap();
        // IPv6: one /64 is one source.
        let _v6 = gate.reserve("4", ip("2001:db8:0:1::1")).unwrap();
        let _v6b = gate.reserve("5", ip("2001:db8:0:1:ffff::9")).unwrap();
        assert_eq!(gate.admits("6", ip("2001:db8:0:1::77")), Err(Quota::Source));
        assert_eq!(gate.admits("6", ip("2001:db8:0:2::1")), Ok(()));
        // A released allocation gives the source its slot back; the map forgets empty sources.
        drop(held);
        assert_eq!(gate.admits("3", ip("192.0.2.1")), Ok(()));
        assert_eq!(gate.counts().by_source.len(), 2);
    }

    #[test]
    fn bucket_passes_its_rate_and_drops_the_rest() {
        const S: u64 = 1_000_000_000;
        let mut b = Bucket::new(10_000, 0);
        // A full second's burst, then nothing.
        assert!((0..10).all(|_| b.take(1000, 0)));
        assert!(!b.take(1, 0));
        // Half a second later, half the rate.
        assert!(b.take(5000, S / 2));
        assert!(!b.take(1, S / 2));
        // A long pause refills to one second's worth, not more.
        assert!(b.take(10_000, 100 * S));
        assert!(!b.take(1, 100 * S));
        // A datagram larger than a second's worth never passes; time going back adds nothing.
        let mut b = Bucket::new(1500, 5 * S);
        assert!(!b.take(1501, 10 * S));
        assert!(b.take(1500, 10 * S));
        assert!(!b.take(1, S));
    }
}
