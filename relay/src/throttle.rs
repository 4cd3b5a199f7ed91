//! Login throttling decisions: how long to hold a failure reply, and when a connection has failed
//! too often. Sans-I/O: time comes in as `now_ms` (a monotonic clock in milliseconds), tables are
//! bounded; the driver (`io`) sleeps and closes.
//!
//! Three limits, after Dovecot's auth penalty and `auth_failure_delay`:
//! - **Per source** (IPv4 address, IPv6 /64): each failed login holds its failure reply for
//!   [`Params::first_delay_ms`] doubled per recent failure of that source (2 s, 4 s, 8 s, then
//!   [`Params::max_delay_ms`] = 15 s), as Dovecot's penalty doubles from 2 s up to 15 s. The count
//!   decays by one per [`Params::decay_ms`] (60 s) since the source's last failure, so a typo is
//!   forgotten within minutes and a guesser stays at the cap while it keeps failing.
//! - **Per account** (the address as typed, so that names that do not exist are covered too): a
//!   GCRA budget of [`Params::account_burst`] failures (10), refilled one per
//!   [`Params::account_interval_ms`] (6 min, 10 an hour). A failure beyond the budget gets the
//!   maximal delay whatever its source: guessing spread over many sources is slowed as much as
//!   guessing from one.
//! - **Per connection**: [`ConnectionFailures`] says when to close ([`MAX_FAILED_LOGINS`] = 3).
//!
//! Only failures are ever delayed, and only their own reply (never a later login): a correct
//! password is answered at once, from any source and for any account, so neither a guesser behind
//! the same carrier-grade NAT nor one aiming at the account slows its owner down. A successful
//! login does not reset a source's count either: behind a shared address that would let a
//! guesser reset its own penalty.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;

use relay_ebpf_common::PrefixKey;

/// Failed logins after which a connection is closed (SMTP and IMAP).
pub const MAX_FAILED_LOGINS: u32 = 3;

/// The throttle's parameters; [`Params::default`] holds the documented values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Delay of a source's first recent failure.
    pub first_delay_ms: u64,
    /// Upper bound of every delay.
    pub max_delay_ms: u64,
    /// A source's failure count drops by one per this much time since its last failure.
    pub decay_ms: u64,
    /// Failures an account may see at once before each further one gets the maximal delay.
    pub account_burst: u32,
    /// One failure of an account's budget comes back per this much time.
    pub account_interval_ms: u64,
    /// Sources tracked at most.
    pub max_sources: usize,
    /// Accounts tracked at most.
    pub max_accounts: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            first_delay_ms: 2_000,
            max_delay_ms: 15_000,
            decay_ms: 60_000,
            account_burst: 10,
            account_interval_ms: 6 * 60_000,
            max_sources: 1 << 16,
            max_accounts: 1 << 16,
        }
    }
}

/// What the throttle decided about one failed login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Hold the failure reply this long.
    pub delay_ms: u64,
    /// Recent failures of the source, this one included.
    pub source_failures: u32,
    /// The account's failure budget was used up before this failure.
    pub account_over_budget: bool,
}

#[derive(Debug, Clone, Copy)]
struct SourceEntry {
    failures: u32,
    last_ms: u64,
}

impl SourceEntry {
    fn decayed(&self, now_ms: u64, decay_ms: u64) -> u32 {
        let steps = now_ms.saturating_sub(self.last_ms) / decay_ms.max(1);
        self.failures
            .saturating_sub(u32::try_from(steps).unwrap_or(u32::MAX))
    }
}

/// Failure counts per source and failure budgets per account. One per process, behind a lock.
#[derive(Debug)]
pub struct LoginThrottle {
    params: Params,
    sources: HashMap<PrefixKey, SourceEntry>,
    /// GCRA theoretical arrival time (ms) per hashed address.
    accounts: HashMap<u64, u64>,
    /// Addresses are kept as keyed hashes: bounded size whatever the client typed.
    hasher: std::collections::hash_map::RandomState,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(Params::default())
    }
}

impl LoginThrottle {
    /// An empty throttle.
    pub fn new(params: Params) -> Self {
        Self {
            params,
            sources: HashMap::new(),
            accounts: HashMap::new(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The parameters in use.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// A login of `user` from `source` failed at `now_ms`: records it and returns how long to
    /// hold the failure reply.
    pub fn failed(&mut self, source: IpAddr, user: &str, now_ms: u64) -> Verdict {
        let p = self.params;
        let key = PrefixKey::from_ip(source);
        if !self.sources.contains_key(&key) && self.sources.len() >= p.max_sources {
            self.evict_sources(now_ms);
        }
        let entry = self.sources.entry(key).or_insert(SourceEntry {
            failures: 0,
            last_ms: now_ms,
        });
        let failures = entry.decayed(now_ms, p.decay_ms).saturating_add(1);
        *entry = SourceEntry {
            failures,
            last_ms: now_ms,
        };
        let shift = (failures - 1).min(16);
        let source_delay = p
            .first_delay_ms
            .saturating_mul(1 << shift)
            .min(p.max_delay_ms);

        let account = self.hasher.hash_one(user.trim().to_ascii_lowercase());
        if !self.accounts.contains_key(&account) && self.accounts.len() >= p.max_accounts {
            self.evict_accounts(now_ms);
        }
        let tat = self.accounts.entry(account).or_insert(now_ms);
        let tolerance = p
            .account_interval_ms
            .saturating_mul(u64::from(p.account_burst.saturating_sub(1)));
        let start = (*tat).max(now_ms);
        let over_budget = start - now_ms > tolerance;
        if !over_budget {
            *tat = start + p.account_interval_ms;
        }
        let delay_ms = if over_budget {
            p.max_delay_ms
        } else {
            source_delay
        };
        Verdict {
            delay_ms,
            source_failures: failures,
            account_over_budget: over_budget,
        }
    }

    /// Recent failures of `source` at `now_ms`.
    pub fn source_failures(&self, source: IpAddr, now_ms: u64) -> u32 {
        self.sources
            .get(&PrefixKey::from_ip(source))
            .map_or(0, |e| e.decayed(now_ms, self.params.decay_ms))
    }

    /// Sources and accounts tracked.
    pub fn tracked(&self) -> (usize, usize) {
        (self.sources.len(), self.accounts.len())
    }

    /// Forgets sources whose count decayed to zero (what a new source gets); if that frees less
    /// than a quarter, also the least recently failed down to three quarters. Forgetting only
    /// ever lowers a delay.
    fn evict_sources(&mut self, now_ms: u64) {
        let decay = self.params.decay_ms;
        self.sources.retain(|_, e| e.decayed(now_ms, decay) > 0);
        let target = self.params.max_sources - self.params.max_sources / 4;
        if self.sources.len() > target.min(self.params.max_sources - 1) {
            let target = target.min(self.params.max_sources - 1);
            let mut entries: Vec<(PrefixKey, u64)> =
                self.sources.iter().map(|(k, e)| (*k, e.last_ms)).collect();
            entries.sort_unstable_by_key(|&(_, t)| std::cmp::Reverse(t));
            for (k, _) in &entries[target..] {
                self.sources.remove(k);
            }
        }
    }

    /// Forgets accounts with their full budget back; if that frees less than a quarter, also the
    /// ones whose budget comes back soonest.
    fn evict_accounts(&mut self, now_ms: u64) {
        self.accounts.retain(|_, tat| *tat > now_ms);
        let target = self.params.max_accounts - self.params.max_accounts / 4;
        if self.accounts.len() > target.min(self.params.max_accounts - 1) {
            let target = target.min(self.params.max_accounts - 1);
            let mut entries: Vec<(u64, u64)> =
                self.accounts.iter().map(|(k, t)| (*k, *t)).collect();
            entries.sort_unstable_by_key(|&(_, t)| std::cmp::Reverse(t));
            for (k, _) in &entries[target..] {
                self.accounts.remove(k);
            }
        }
    }
}

/// Failed logins on one connection.
///
/// Sessions close after [`MAX_FAILED_LOGINS`]: SMTP with `421`, and the IMAP session by calling
/// [`ConnectionFailures::record`] where it answers a failed login. The driver keeps a count of its
/// own as a backstop and closes a connection whose session did not (after writing its reply).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionFailures(u32);

impl ConnectionFailures {
    /// Counts a failed login; `true` when the connection must now be closed.
    #[must_use = "close the connection when this returns true"]
    pub fn record(&mut self) -> bool {
        self.0 = self.0.saturating_add(1);
        self.0 >= MAX_FAILED_LOGINS
    }

    /// Failures so far.
    pub fn count(&self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn source_delay_doubles_to_the_cap_and_decays() {
        let mut t = LoginThrottle::default();
        let mut now = 1_000_000;
        let mut delays = Vec::new();
        for i in 0..6 {
            // Different accounts, so only the source's count matters.
            delays.push(t.failed(A, &format!("user{i}@x"), now).delay_ms);
            now += 100;
        }
        assert_eq!(delays, [2_000, 4_000, 8_000, 15_000, 15_000, 15_000]);
        assert_eq!(t.source_failures(A, now), 6);
        // Another source is not affected.
        assert_eq!(t.failed(B, "other@x", now).delay_ms, 2_000);
        // One failure forgotten per minute of quiet.
        assert_eq!(t.source_failures(A, now + 60_000), 5);
        assert_eq!(t.source_failures(A, now + 5 * 60_000), 1);
        assert_eq!(t.source_failures(A, now + 6 * 60_000), 0);
        assert_eq!(t.failed(A, "u@x", now + 10 * 60_000).delay_ms, 2_000);
    }

    #[test]
    fn ipv6_sources_count_per_64() {
        let mut t = LoginThrottle::default();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(t.failed(a, "u1@x", 0).delay_ms, 2_000);
        assert_eq!(t.failed(b, "u2@x", 0).delay_ms, 4_000);
        assert_eq!(t.failed(c, "u3@x", 0).delay_ms, 2_000);
    }

    #[test]
    fn account_budget_slows_guessing_from_many_sources() {
        let mut t = LoginThrottle::default();
        let now = 5_000_000;
        let source = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        // Ten failures from ten fresh sources: each a first failure, budget not exhausted.
        for i in 0..10 {
            let v = t.failed(source(i), "Victim@X ", now + u64::from(i));
            assert_eq!(v.delay_ms, 2_000, "failure {i}");
            assert!(!v.account_over_budget);
        }
        // The eleventh, from yet another fresh source and written differently: maximal delay.
        let v = t.failed(source(10), "victim@x", now + 10);
        assert!(v.account_over_budget);
        assert_eq!(v.delay_ms, 15_000);
        assert_eq!(v.source_failures, 1);
        // Another account is not affected.
        assert_eq!(t.failed(source(11), "owner@x", now + 11).delay_ms, 2_000);
        // One failure of budget returns per 6 minutes.
        let later = now + 10 + 6 * 60_000;
        assert!(!t.failed(source(12), "victim@x", later).account_over_budget);
        assert!(t.failed(source(13), "victim@x", later).account_over_budget);
    }

    #[test]
    fn tables_stay_bounded_and_keep_recent_offenders() {
        let mut t = LoginThrottle::new(Params {
            max_sources: 64,
            max_accounts: 64,
            ..Params::default()
        });
        // The offender fails often, recently.
        for i in 0..4 {
            t.failed(A, "a@x", i);
        }
        for i in 0..1_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            t.failed(ip, &format!("n{i}@x"), 10 + u64::from(i));
            let (s, a) = t.tracked();
            assert!(s <= 64 && a <= 64, "{s} {a}");
            if i % 20 == 0 {
                t.failed(A, "a@x", 10 + u64::from(i));
            }
        }
        // Still counted (its count decays by time only: 1 s passed).
        assert!(
            t.source_failures(A, 1_010) >= 4,
            "{}",
            t.source_failures(A, 1_010)
        );
    }

    #[test]
    fn connection_closes_at_the_third_failure() {
        let mut c = ConnectionFailures::default();
        assert!(!c.record());
        assert!(!c.record());
        assert!(c.record());
        assert_eq!(c.count(), 3);
    }
}
