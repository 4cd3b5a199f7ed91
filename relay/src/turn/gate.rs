//! The TURN limits the crate lacks: allocations per credential and in all ([`Gate`]), bytes a
//! second per allocation ([`Bucket`]). No I/O, no clock: time enters as nanoseconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Why an Allocate is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Quota {
    /// The credential holds `turn_max_allocations_per_username` (answered `486 Allocation Quota
    /// Reached`, RFC 5766 §6.2).
    #[error("allocation quota of the username reached")]
    Username,
    /// The relay holds `turn_max_allocations` (answered `508 Insufficient Capacity`).
    #[error("no capacity for another allocation")]
    Total,
}

/// Counts live allocations per username and in all.
#[derive(Debug)]
pub struct Gate {
    per_username: u32,
    total: u32,
    state: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    by_username: HashMap<String, u32>,
    total: u32,
}

impl Gate {
    /// At most `per_username` allocations of one username and `total` in all.
    pub fn new(per_username: u32, total: u32) -> Gate {
        Gate {
            per_username,
            total,
            state: Mutex::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `username` may allocate one more now.
    ///
    /// # Errors
    /// The cap it would exceed.
    pub fn admits(&self, username: &str) -> Result<(), Quota> {
        Self::check(&self.counts(), self.per_username, self.total, username)
    }

    fn check(c: &Counts, per_username: u32, total: u32, username: &str) -> Result<(), Quota> {
        if c.by_username.get(username).copied().unwrap_or(0) >= per_username {
            Err(Quota::Username)
        } else if c.total >= total {
            Err(Quota::Total)
        } else {
            Ok(())
        }
    }

    /// Counts an allocation of `username` until the returned reservation is dropped.
    ///
    /// # Errors
    /// The cap it would exceed.
    pub fn reserve(self: &Arc<Self>, username: &str) -> Result<Reservation, Quota> {
        let mut c = self.counts();
        Self::check(&c, self.per_username, self.total, username)?;
        *c.by_username.entry(username.to_owned()).or_insert(0) += 1;
        c.total += 1;
        Ok(Reservation {
            gate: self.clone(),
            username: username.to_owned(),
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
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut c = self.gate.counts();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_username.get_mut(&self.username) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_username.remove(&self.username);
            }
        }
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

    #[test]
    fn caps_per_username_and_in_all_and_slots_come_back() {
        let gate = Arc::new(Gate::new(2, 3));
        let a1 = gate.reserve("a").unwrap();
        let _a2 = gate.reserve("a").unwrap();
        assert_eq!(gate.admits("a"), Err(Quota::Username));
        assert_eq!(gate.reserve("a").unwrap_err(), Quota::Username);
        let _b1 = gate.reserve("b").unwrap();
        // "b" is under its own cap, but the relay is full.
        assert_eq!(gate.admits("b"), Err(Quota::Total));
        assert_eq!(gate.reserve("c").unwrap_err(), Quota::Total);
        assert_eq!(gate.total(), 3);
        drop(a1);
        assert_eq!(gate.total(), 2);
        assert_eq!(gate.admits("a"), Ok(()));
        let _c1 = gate.reserve("c").unwrap();
        assert_eq!(gate.admits("a"), Err(Quota::Total));
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
