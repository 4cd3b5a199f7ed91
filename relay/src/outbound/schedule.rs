//! When to try which destination again: per-destination retry backoff, queue lifetime, the
//! bound on destinations in flight, and the per-MX-host "mxdeliv unsupported" memory. Plain
//! state over `now_ms` passed in.
//!
//! The messages live in the store; this keeps memory per *destination* (a recipient domain), not
//! per message, so a thousand messages to one dead domain cost one entry. A destination that
//! fails backs off as a whole and holds up no other. The engine that owns a [`Scheduler`]:
//!
//! 1. calls [`Scheduler::enqueue`] for each destination with queued messages (at start, from the
//!    store; later, for each new message);
//! 2. takes due destinations with [`Scheduler::next_due`] (at most `max_in_flight` at a time)
//!    and attempts all their queued messages;
//! 3. reports with [`Scheduler::finished`] (how the attempt went and the creation time of the
//!    oldest message still queued), bouncing first every message that
//!    [`RetryPolicy::is_expired`] after a temporary failure;
//! 4. sleeps until [`Scheduler::next_wakeup`] or the next enqueue.
//!
//! Backoff (Postfix's `minimal_backoff_time` 300 s doubling up to `maximal_backoff_time`
//! 4000 s): the first retry after [`FIRST_RETRY_MS`] (5 min), then 10, 20, 40 min, then every
//! [`MAX_BACKOFF_MS`] (1 h). Five minutes lets greylisting (typically 1 to 5 min) pass on the
//! first retry; an hour keeps a two-day lifetime to about fifty attempts against a dead domain
//! while mail still arrives within the hour once it is back. A retry is never scheduled after
//! the oldest queued message expires, so expiry bounces happen on time (after one last attempt,
//! as Postfix does).
//!
//! New mail for a destination whose server answered the last attempt (some recipients were
//! deferred, e.g. a full mailbox or greylisting) is attempted at once: the deferral was about
//! those recipients, not the host, and the deferred messages ride along (an early retry is
//! harmless). New mail for an *unreachable* destination waits for its retry time.

use std::collections::{BTreeSet, HashMap};

/// First retry after a failed attempt.
pub const FIRST_RETRY_MS: u64 = 5 * 60 * 1000;
/// Longest wait between attempts.
pub const MAX_BACKOFF_MS: u64 = 60 * 60 * 1000;
/// How long a host stays marked "mxdeliv unsupported" after an SMTP success (chatmail.md §3.6).
pub const MXDELIV_UNSUPPORTED_MS: u64 = 30 * 60 * 1000;
/// Hosts remembered as "mxdeliv unsupported" at most (memory bound; the oldest marks go first).
pub const MAX_REMEMBERED_HOSTS: usize = 10_000;
/// Destinations attempted at once by default (the reference's transport runs up to 500
/// workers).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 500;

/// Retry timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failed attempt.
    pub first_retry_ms: u64,
    /// Longest wait between attempts.
    pub max_backoff_ms: u64,
    /// `maximal_queue_lifetime`: a message older than this bounces after a temporary failure.
    pub queue_lifetime_ms: u64,
}

impl RetryPolicy {
    /// The default backoff with a queue lifetime of `queue_lifetime_secs` (option
    /// `maximal_queue_lifetime`, [`crate::config::Config::maximal_queue_lifetime_secs`]).
    pub fn new(queue_lifetime_secs: u64) -> RetryPolicy {
        RetryPolicy {
            first_retry_ms: FIRST_RETRY_MS,
            max_backoff_ms: MAX_BACKOFF_MS,
            queue_lifetime_ms: queue_lifetime_secs.saturating_mul(1000),
        }
    }

    /// The wait after `failures` consecutive failed attempts (1 = the first failure).
    pub fn backoff_ms(&self, failures: u32) -> u64 {
        let doublings = failures.saturating_sub(1).min(32);
        self.first_retry_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_backoff_ms)
    }

    /// When a message created at `created_ms` expires.
    pub fn expires_at(&self, created_ms: u64) -> u64 {
        created_ms.saturating_add(self.queue_lifetime_ms)
    }

    /// Whether a message created at `created_ms` has outlived the queue lifetime: after a
    /// temporary failure it bounces instead of waiting for another attempt.
    pub fn is_expired(&self, created_ms: u64, now_ms: u64) -> bool {
        now_ms >= self.expires_at(created_ms)
    }
}

/// How an attempt on a destination went, for its backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// Every message got a final answer (delivered or permanently refused).
    Done,
    /// A server answered, but some recipients were deferred (4xx).
    Deferred,
    /// No server could be reached: temporary DNS failure, or every MX host failed to connect,
    /// to do TLS or to speak SMTP.
    Unreachable,
}

#[derive(Debug, Clone)]
struct Dest {
    /// Consecutive failed attempts.
    failures: u32,
    /// When it is due (in the `due` index unless in flight).
    retry_at: u64,
    in_flight: bool,
    /// Mail was enqueued while in flight: due again as soon as the attempt finishes.
    enqueued_in_flight: bool,
    /// Whether the last attempt reached a server.
    reachable: bool,
}

/// Per-destination retry state.
#[derive(Debug)]
pub struct Scheduler {
    policy: RetryPolicy,
    max_in_flight: usize,
    in_flight: usize,
    dests: HashMap<String, Dest>,
    /// `(retry_at, destination)` of every destination waiting (not in flight).
    due: BTreeSet<(u64, String)>,
}

impl Scheduler {
    /// An empty scheduler attempting at most `max_in_flight` destinations at once.
    pub fn new(policy: RetryPolicy, max_in_flight: usize) -> Scheduler {
        Scheduler {
            policy,
            max_in_flight: max_in_flight.max(1),
            in_flight: 0,
            dests: HashMap::new(),
            due: BTreeSet::new(),
        }
    }

    /// The retry timing in use.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Messages are queued for `dest`. A new destination, or one whose server answered its last
    /// attempt, is due now; one that was unreachable keeps its retry time.
    pub fn enqueue(&mut self, dest: &str, now_ms: u64) {
        let Some(d) = self.dests.get_mut(dest) else {
            self.dests.insert(
                dest.to_owned(),
                Dest {
                    failures: 0,
                    retry_at: now_ms,
                    in_flight: false,
                    enqueued_in_flight: false,
                    reachable: true,
                },
            );
            self.due.insert((now_ms, dest.to_owned()));
            return;
        };
        if d.in_flight {
            d.enqueued_in_flight = true;
            return;
        }
        if d.reachable && d.retry_at > now_ms {
            self.due.remove(&(d.retry_at, dest.to_owned()));
            d.retry_at = now_ms;
            self.due.insert((now_ms, dest.to_owned()));
        }
    }

    /// The next destination due at `now_ms`, marked in flight; `None` when none is due or
    /// `max_in_flight` destinations are in flight already.
    pub fn next_due(&mut self, now_ms: u64) -> Option<String> {
        if self.in_flight >= self.max_in_flight {
            return None;
        }
        let first = self.due.first()?;
        if first.0 > now_ms {
            return None;
        }
        let (_, dest) = self.due.pop_first()?;
        if let Some(d) = self.dests.get_mut(&dest) {
            d.in_flight = true;
            d.enqueued_in_flight = false;
        }
        self.in_flight += 1;
        Some(dest)
    }

    /// The attempt on `dest` (from [`Scheduler::next_due`]) finished. `oldest_queued_ms` is the
    /// creation time of the oldest message still queued for it (after bounces and deliveries),
    /// `None` if none is left: the destination is then forgotten.
    pub fn finished(
        &mut self,
        dest: &str,
        result: AttemptResult,
        oldest_queued_ms: Option<u64>,
        now_ms: u64,
    ) {
        let Some(d) = self.dests.get_mut(dest) else {
            return;
        };
        if d.in_flight {
            d.in_flight = false;
            self.in_flight -= 1;
        }
        let Some(oldest) = oldest_queued_ms else {
            self.dests.remove(dest);
            return;
        };
        d.reachable = result != AttemptResult::Unreachable;
        d.retry_at = if result == AttemptResult::Done {
            d.failures = 0;
            now_ms
        } else {
            d.failures = d.failures.saturating_add(1);
            let retry = now_ms.saturating_add(self.policy.backoff_ms(d.failures));
            // Never wait past the oldest message's expiry (but never loop on an expired one).
            let expiry = self.policy.expires_at(oldest).max(now_ms.saturating_add(1));
            if d.enqueued_in_flight && d.reachable {
                now_ms
            } else {
                retry.min(expiry)
            }
        };
        d.enqueued_in_flight = false;
        self.due.insert((d.retry_at, dest.to_owned()));
    }

    /// Makes `dest` (every waiting destination if `None`) due at `now_ms`, whatever its backoff
    /// (an operator's `relay admin queue retry`). Its failure count stays: if it fails again
    /// it waits as long as it would have.
    pub fn retry_now(&mut self, dest: Option<&str>, now_ms: u64) {
        let waiting: Vec<(u64, String)> = self
            .due
            .iter()
            .filter(|(at, d)| *at > now_ms && dest.is_none_or(|x| x == d))
            .cloned()
            .collect();
        for (at, d) in waiting {
            self.due.remove(&(at, d.clone()));
            if let Some(state) = self.dests.get_mut(&d) {
                state.retry_at = now_ms;
            }
            self.due.insert((now_ms, d));
        }
    }

    /// Drops `dest` (its queue emptied outside an attempt, e.g. messages deleted).
    pub fn forget(&mut self, dest: &str) {
        if let Some(d) = self.dests.remove(dest) {
            if d.in_flight {
                self.in_flight -= 1;
            } else {
                self.due.remove(&(d.retry_at, dest.to_owned()));
            }
        }
    }

    /// When the next waiting destination is due, if any (it may be in the past). The engine
    /// sleeps until then (or until new mail is enqueued or an attempt finishes).
    pub fn next_wakeup(&self) -> Option<u64> {
        self.due.first().map(|(t, _)| *t)
    }

    /// Destinations being attempted now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Destinations known (waiting or in flight).
    pub fn len(&self) -> usize {
        self.dests.len()
    }

    /// Whether no destination is known.
    pub fn is_empty(&self) -> bool {
        self.dests.is_empty()
    }

    /// When `dest` is due next (`None` if unknown or in flight), for status output and tests.
    pub fn retry_at(&self, dest: &str) -> Option<u64> {
        self.dests
            .get(dest)
            .filter(|d| !d.in_flight)
            .map(|d| d.retry_at)
    }
}

/// The MX hosts that recently took mail by SMTP and so are not offered `/mxdeliv` first
/// (chatmail.md §3.6): marked for [`MXDELIV_UNSUPPORTED_MS`] after an SMTP success, unmarked
/// after an SMTP connection, TLS or I/O error (the host may have changed). At most
/// [`MAX_REMEMBERED_HOSTS`] entries.
#[derive(Debug, Default)]
pub struct MxdelivUnsupported {
    until: HashMap<String, u64>,
}

impl MxdelivUnsupported {
    /// An empty memory.
    pub fn new() -> MxdelivUnsupported {
        MxdelivUnsupported::default()
    }

    /// `host` delivered by SMTP at `now_ms`: skip `/mxdeliv` for it for a while.
    pub fn mark(&mut self, host: &str, now_ms: u64) {
        if self.until.len() >= MAX_REMEMBERED_HOSTS && !self.until.contains_key(host) {
            self.until.retain(|_, until| *until > now_ms);
            if self.until.len() >= MAX_REMEMBERED_HOSTS {
                // Still full of live marks: forget the one that would expire first.
                if let Some(oldest) = self
                    .until
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(h, _)| h.clone())
                {
                    self.until.remove(&oldest);
                }
            }
        }
        self.until.insert(
            host.to_owned(),
            now_ms.saturating_add(MXDELIV_UNSUPPORTED_MS),
        );
    }

    /// `host` failed at the connection level over SMTP: try `/mxdeliv` again next time.
    pub fn unmark(&mut self, host: &str) {
        self.until.remove(host);
    }

    /// Whether `/mxdeliv` is skipped for `host` at `now_ms`.
    pub fn is_marked(&self, host: &str, now_ms: u64) -> bool {
        self.until.get(host).is_some_and(|until| *until > now_ms)
    }

    /// Entries held (expired ones included until pruned).
    pub fn len(&self) -> usize {
        self.until.len()
    }

    /// Whether no host is remembered.
    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60 * 1000;
    const DAY: u64 = 24 * 60 * MIN;

    fn sched(max: usize) -> Scheduler {
        Scheduler::new(RetryPolicy::new(2 * 86_400), max)
    }

    #[test]
    fn backoff_doubles_from_five_minutes_up_to_an_hour() {
        let p = RetryPolicy::new(2 * 86_400);
        let waits: Vec<u64> = (1..=7).map(|f| p.backoff_ms(f) / MIN).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60, 60]);
        assert_eq!(p.backoff_ms(u32::MAX), MAX_BACKOFF_MS);
    }

    #[test]
    fn messages_expire_after_the_queue_lifetime() {
        let p = RetryPolicy::new(2 * 86_400);
        assert_eq!(p.expires_at(1000), 1000 + 2 * DAY);
        assert!(!p.is_expired(1000, 1000 + 2 * DAY - 1));
        assert!(p.is_expired(1000, 1000 + 2 * DAY));
    }

    #[test]
    fn a_dead_destination_backs_off_without_holding_up_others() {
        let mut s = sched(10);
        let t0 = 1_000_000;
        s.enqueue("dead.example", t0);
        s.enqueue("live.example", t0);
        let mut got = vec![s.next_due(t0).unwrap(), s.next_due(t0).unwrap()];
        got.sort();
        assert_eq!(got, ["dead.example", "live.example"]);
        assert_eq!(s.next_due(t0), None);
        assert_eq!(s.in_flight(), 2);
        s.finished(
            "dead.example",
            AttemptResult::Unreachable,
            Some(t0),
            t0 + 10,
        );
        s.finished("live.example", AttemptResult::Done, None, t0 + 10);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.len(), 1, "a destination with nothing queued is forgotten");
        assert_eq!(s.next_wakeup(), Some(t0 + 10 + 5 * MIN));
        // New mail for the live destination goes at once; the dead one waits.
        s.enqueue("live.example", t0 + 20);
        s.enqueue("dead.example", t0 + 20);
        assert_eq!(s.next_due(t0 + 20).as_deref(), Some("live.example"));
        assert_eq!(s.next_due(t0 + 20), None);
        assert_eq!(s.retry_at("dead.example"), Some(t0 + 10 + 5 * MIN));
        // Its retries back off.
        let mut now = t0 + 10;
        let mut waits = Vec::new();
        for _ in 0..6 {
            let at = s.retry_at("dead.example").unwrap();
            waits.push((at - now) / MIN);
            assert_eq!(s.next_due(at - 1), None);
            assert_eq!(s.next_due(at).as_deref(), Some("dead.example"));
            now = at;
            s.finished("dead.example", AttemptResult::Unreachable, Some(t0), now);
        }
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        // It answers again: the backoff resets.
        let at = s.retry_at("dead.example").unwrap();
        s.next_due(at).unwrap();
        s.finished("dead.example", AttemptResult::Deferred, Some(t0), at);
        assert_eq!(
            s.retry_at("dead.example"),
            Some(at + 60 * MIN),
            "failures keep counting"
        );
        s.enqueue("dead.example", at + 1);
        assert_eq!(
            s.retry_at("dead.example"),
            Some(at + 1),
            "reachable again: new mail goes"
        );
        s.next_due(at + 1).unwrap();
        s.finished("dead.example", AttemptResult::Done, Some(at), at + 2);
        s.next_due(at + 2).unwrap();
        s.finished("dead.example", AttemptResult::Deferred, Some(at), at + 3);
        assert_eq!(s.retry_at("dead.example"), Some(at + 3 + 5 * MIN));
    }

    #[test]
    fn in_flight_destinations_are_bounded() {
        let mut s = sched(2);
        for d in ["a", "b", "c"] {
            s.enqueue(d, 0);
        }
        assert!(s.next_due(0).is_some());
        assert!(s.next_due(0).is_some());
        assert_eq!(s.next_due(0), None, "bound reached");
        assert_eq!(s.next_wakeup(), Some(0), "the third is waiting");
        s.finished("a", AttemptResult::Done, None, 1);
        s.finished("b", AttemptResult::Done, None, 1);
        assert_eq!(s.next_due(1).as_deref(), Some("c"));
    }

    #[test]
    fn mail_enqueued_during_an_attempt_is_due_right_after() {
        let mut s = sched(10);
        s.enqueue("d", 0);
        assert_eq!(s.next_due(0).as_deref(), Some("d"));
        s.enqueue("d", 5);
        assert_eq!(s.next_due(5), None, "one attempt per destination at a time");
        s.finished("d", AttemptResult::Deferred, Some(0), 10);
        assert_eq!(s.retry_at("d"), Some(10));
        // But not for an unreachable destination.
        s.next_due(10).unwrap();
        s.enqueue("d", 11);
        s.finished("d", AttemptResult::Unreachable, Some(0), 12);
        assert_eq!(s.retry_at("d"), Some(12 + 10 * MIN));
    }

    #[test]
    fn retries_are_never_later_than_the_oldest_expiry() {
        let mut s = sched(10);
        let created = 0;
        let near_end = 2 * DAY - 2 * MIN;
        s.enqueue("d", near_end);
        s.next_due(near_end).unwrap();
        s.finished("d", AttemptResult::Unreachable, Some(created), near_end);
        assert_eq!(s.retry_at("d"), Some(2 * DAY));
        // Already expired (the engine bounced it; a later message remains): no busy loop.
        s.next_due(2 * DAY).unwrap();
        s.finished("d", AttemptResult::Unreachable, Some(created), 2 * DAY + 5);
        assert!(s.retry_at("d").unwrap() > 2 * DAY + 5);
    }

    #[test]
    fn forget_releases_the_slot() {
        let mut s = sched(1);
        s.enqueue("a", 0);
        s.enqueue("b", 0);
        s.next_due(0).unwrap();
        s.forget("a");
        s.forget("b");
        assert_eq!(s.in_flight(), 0);
        assert!(s.is_empty());
        assert_eq!(s.next_wakeup(), None);
        // A late `finished` for a forgotten destination changes nothing.
        s.finished("a", AttemptResult::Done, Some(0), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn mxdeliv_memory_expires_and_is_cleared() {
        let mut m = MxdelivUnsupported::new();
        m.mark("mx.example.org", 1000);
        assert!(m.is_marked("mx.example.org", 1000 + MXDELIV_UNSUPPORTED_MS - 1));
        assert!(!m.is_marked("mx.example.org", 1000 + MXDELIV_UNSUPPORTED_MS));
        assert!(!m.is_marked("other.example.org", 1000));
        m.unmark("mx.example.org");
        assert!(!m.is_marked("mx.example.org", 1001));
    }

    #[test]
    fn mxdeliv_memory_is_bounded() {
        let mut m = MxdelivUnsupported::new();
        for i in 0..MAX_REMEMBERED_HOSTS + 100 {
            m.mark(&format!("mx{i}"), i as u64);
        }
        assert_eq!(m.len(), MAX_REMEMBERED_HOSTS);
        // The newest marks survive, the oldest went first.
        assert!(m.is_marked(&format!("mx{}", MAX_REMEMBERED_HOSTS + 99), 0));
        assert!(!m.is_marked("mx0", 0));
        // Expired marks are pruned before live ones are dropped.
        let later = MXDELIV_UNSUPPORTED_MS * 10;
        m.mark("fresh", later);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn retry_now_makes_waiting_destinations_due_and_keeps_their_failures() {
        let mut s = Scheduler::new(RetryPolicy::new(2 * 86_400), 10);
        for d in ["a.test", "b.test"] {
            s.enqueue(d, 0);
            assert_eq!(s.next_due(0).as_deref(), Some(d));
            s.finished(d, AttemptResult::Unreachable, Some(0), 0);
        }
        assert_eq!(s.next_due(1_000), None, "both back off");
        s.retry_now(Some("b.test"), 1_000);
        assert_eq!(s.next_due(1_000).as_deref(), Some("b.test"));
        assert_eq!(s.next_due(1_000), None, "a.test still waits");
        s.finished("b.test", AttemptResult::Unreachable, Some(0), 1_000);
        // The second failure in a row: twice the first wait.
        assert_eq!(s.retry_at("b.test"), Some(1_000 + 2 * FIRST_RETRY_MS));
        s.retry_now(None, 2_000);
        let mut due = vec![s.next_due(2_000), s.next_due(2_000)];
        due.sort();
        assert_eq!(due, [Some("a.test".into()), Some("b.test".into())]);
    }
}
