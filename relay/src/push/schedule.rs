//! The notifier's schedule (sans-I/O): which POST is due when, and what a result means
//! (chatmail.md §6.2).
//!
//! One job per (account, token) of a pending notification. The first attempt is due at once;
//! after the n-th failure (n = 1..4) the next waits 8^n seconds (8, 64, 512, 4096 s), so there
//! are at most [`MAX_ATTEMPTS`]; a job is dropped after the last one or when its next attempt
//! would fall more than [`DEADLINE`] after the delivery. `200` finishes a job, `410 Gone`
//! finishes it and removes the token. When an account has no job left, its pending entry is
//! done ([`Action::Done`], the store's `NotifyDone`).
//!
//! A newer delivery for an account (a higher `seq`) while its jobs wait or are in flight resets
//! them to a first attempt: a device told before the new message arrived is told again. A
//! restart loses only the attempt counts (the store keeps the pending entries and their
//! delivery time, so the deadline holds across restarts).

use std::collections::{BTreeSet, HashMap};

use crate::store::{AccountId, PendingNotify};

/// Attempts per job at most.
pub const MAX_ATTEMPTS: u32 = 5;
/// No attempt later than this after the delivery (ms): the reference's 5 hours.
pub const DEADLINE: u64 = 5 * 3600 * 1000;

/// Delay before attempt `n` (the n-th retry, n ≥ 1), in ms.
pub fn retry_delay(n: u32) -> u64 {
    8u64.saturating_pow(n).saturating_mul(1000)
}

/// What became of one POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `200` (any 2xx): the notifier took it.
    Sent,
    /// `410 Gone`: the token is dead.
    Gone,
    /// Anything else (other status, timeout, connection failure): try again later.
    Failed,
}

/// What the I/O side must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The account's pending notification `seq` is finished: commit `NotifyDone`.
    Done {
        /// Account.
        account: AccountId,
        /// Its pending notification.
        seq: u64,
    },
    /// Remove the token from the account (`410 Gone`).
    RemoveToken {
        /// Account.
        account: AccountId,
        /// The token.
        token: String,
    },
}

/// A POST to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// Account.
    pub account: AccountId,
    /// The token, the request's body.
    pub token: String,
    /// The notification it is for (passed back with the result).
    pub seq: u64,
}

#[derive(Debug)]
struct Job {
    /// The newest notification this job is for.
    seq: u64,
    /// Last moment for an attempt (ms).
    deadline: u64,
    /// Failed attempts since `seq` was set.
    failures: u32,
    /// When the next attempt is due (ms).
    due: u64,
    /// In flight: the `seq` sent.
    in_flight: Option<u64>,
}

/// The schedule of every pending notification.
#[derive(Debug, Default)]
pub struct Schedule {
    jobs: HashMap<(AccountId, String), Job>,
    /// Jobs per account, and the newest `seq` offered for it.
    accounts: HashMap<AccountId, (usize, u64)>,
    /// `(due, account, token)` of the jobs not in flight.
    queue: BTreeSet<(u64, AccountId, String)>,
    given_up: u64,
}

impl Schedule {
    /// A pending notification with the account's live tokens, at `now` (ms). Known
    /// notifications (same or older `seq`) are ignored. Without tokens it is done at once.
    pub fn offer(&mut self, p: PendingNotify, tokens: Vec<String>, now: u64) -> Option<Action> {
        if self.accounts.get(&p.account).is_some_and(|a| a.1 >= p.seq) {
            return None;
        }
        let deadline = u64::try_from(p.at)
            .unwrap_or(0)
            .saturating_mul(1000)
            .saturating_add(DEADLINE);
        if now > deadline && !self.accounts.contains_key(&p.account) {
            // Pending since before a long outage or downtime: too late to wake anyone.
            self.given_up += tokens.len() as u64;
            return Some(Action::Done {
                account: p.account,
                seq: p.seq,
            });
        }
        let mut added = 0;
        for token in tokens {
            let key = (p.account, token);
            match self.jobs.get_mut(&key) {
                Some(job) => {
                    if job.in_flight.is_none() {
                        self.queue.remove(&(job.due, key.0, key.1.clone()));
                        self.queue.insert((now, key.0, key.1.clone()));
                    }
                    *job = Job {
                        seq: p.seq,
                        deadline,
                        failures: 0,
                        due: now,
                        in_flight: job.in_flight,
                    };
                }
                None => {
                    self.queue.insert((now, key.0, key.1.clone()));
                    self.jobs.insert(
                        key,
                        Job {
                            seq: p.seq,
                            deadline,
                            failures: 0,
                            due: now,
                            in_flight: None,
                        },
                    );
                    added += 1;
                }
            }
        }
        let entry = self.accounts.entry(p.account).or_insert((0, 0));
        entry.0 += added;
        entry.1 = p.seq;
        if entry.0 == 0 {
            self.accounts.remove(&p.account);
            return Some(Action::Done {
                account: p.account,
                seq: p.seq,
            });
        }
        None
    }

    /// Up to `limit` POSTs due at `now`, marked in flight.
    pub fn due(&mut self, now: u64, limit: usize) -> Vec<Send> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(first) = self.queue.first() else {
                break;
            };
            if first.0 > now {
                break;
            }
            let Some((_, account, token)) = self.queue.pop_first() else {
                break;
            };
            if let Some(job) = self.jobs.get_mut(&(account, token.clone())) {
                job.in_flight = Some(job.seq);
                out.push(Send {
                    account,
                    token,
                    seq: job.seq,
                });
            }
        }
        out
    }

    /// When the next job not in flight is due (ms).
    pub fn next_due(&self) -> Option<u64> {
        self.queue.first().map(|q| q.0)
    }

    /// Jobs waiting or in flight.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether no job is left.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Jobs dropped after their last attempt or past their deadline, since the start.
    pub fn given_up(&self) -> u64 {
        self.given_up
    }

    /// The result of a POST from [`Schedule::due`], at `now` (ms).
    pub fn result(&mut self, sent: &Send, outcome: Outcome, now: u64) -> Vec<Action> {
        let key = (sent.account, sent.token.clone());
        let Some(job) = self.jobs.get_mut(&key) else {
            return Vec::new();
        };
        job.in_flight = None;
        let newer = job.seq > sent.seq;
        let mut actions = Vec::new();
        let finished = match outcome {
            Outcome::Gone => {
                actions.push(Action::RemoveToken {
                    account: sent.account,
                    token: sent.token.clone(),
                });
                true
            }
            Outcome::Sent if newer => {
                // A newer message arrived while this POST was under way: tell the device again.
                job.due = now;
                false
            }
            Outcome::Sent => true,
            Outcome::Failed => {
                job.failures += 1;
                let next = now.saturating_add(retry_delay(job.failures));
                if job.failures >= MAX_ATTEMPTS || next > job.deadline {
                    self.given_up += 1;
                    tracing::info!(
                        account = sent.account,
                        attempts = job.failures,
                        "push: notification given up (exceeded deadline)"
                    );
                    true
                } else {
                    job.due = next;
                    false
                }
            }
        };
        if finished {
            self.jobs.remove(&key);
            if let Some(a) = self.accounts.get_mut(&sent.account) {
                a.0 = a.0.saturating_sub(1);
                if a.0 == 0 {
                    let seq = a.1;
                    self.accounts.remove(&sent.account);
                    actions.push(Action::Done {
                        account: sent.account,
                        seq,
                    });
                }
            }
        } else {
            self.queue.insert((job.due, key.0, key.1));
        }
        actions
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    fn pending(account: AccountId, seq: u64, at_ms: u64) -> PendingNotify {
        PendingNotify {
            account,
            seq,
            at: (at_ms / 1000) as i64,
        }
    }

    fn toks(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn one_post_per_token_then_done() {
        let mut s = Schedule::default();
        let t0 = 1_000_000 * S;
        assert_eq!(s.offer(pending(1, 0, t0), toks(&["a", "b"]), t0), None);
        // Offered again (the next wake-up reads it again): nothing new.
        assert_eq!(s.offer(pending(1, 0, t0), toks(&["a", "b"]), t0), None);
        let sends = s.due(t0, 10);
        assert_eq!(sends.len(), 2);
        assert!(s.due(t0, 10).is_empty(), "in flight, not sent twice");
        assert_eq!(s.result(&sends[0], Outcome::Sent, t0), vec![]);
        assert_eq!(
            s.result(&sends[1], Outcome::Gone, t0),
            vec![
                Action::RemoveToken {
                    account: 1,
                    token: "b".into()
                },
                Action::Done { account: 1, seq: 0 }
            ]
        );
        assert!(s.is_empty());
        // No token: done at once.
        assert_eq!(
            s.offer(pending(2, 1, t0), vec![], t0),
            Some(Action::Done { account: 2, seq: 1 })
        );
    }

    #[test]
    fn retries_on_schedule_then_give_up() {
        let mut s = Schedule::default();
        let t0 = 1_000_000 * S;
        s.offer(pending(1, 0, t0), toks(&["a"]), t0);
        let mut now = t0;
        let mut attempts = vec![];
        loop {
            let sends = s.due(now, 10);
            if sends.is_empty() {
                match s.next_due() {
                    Some(d) => {
                        assert!(d > now);
                        now = d;
                        continue;
                    }
                    None => break,
                }
            }
            attempts.push((now - t0) / S);
            let actions = s.result(&sends[0], Outcome::Failed, now);
            if !actions.is_empty() {
                assert_eq!(actions, vec![Action::Done { account: 1, seq: 0 }]);
            }
        }
        assert_eq!(attempts, vec![0, 8, 72, 584, 4680]);
        assert_eq!(s.given_up(), 1);
        assert!(s.is_empty());
        // The 5-hour deadline counts from the delivery: one that waited 4.5 hours (a restart)
        // gets no attempt after 5 hours.
        let late = t0 + 4 * 3600 * S + 1800 * S;
        s.offer(pending(3, 1, t0), toks(&["c"]), late);
        let mut tries = 0;
        let mut now = late;
        while let Some(send) = s.due(now, 1).pop() {
            tries += 1;
            s.result(&send, Outcome::Failed, now);
            now = s.next_due().unwrap_or(now);
        }
        assert_eq!(tries, 4, "0, 8, 64 and 512 s later fit, 4096 s does not");
        // Past the deadline already: done without a POST.
        assert_eq!(
            s.offer(pending(4, 2, t0), toks(&["d"]), t0 + DEADLINE + S),
            Some(Action::Done { account: 4, seq: 2 })
        );
        assert!(s.due(t0 + DEADLINE + S, 10).is_empty());
    }

    #[test]
    fn a_newer_delivery_during_the_post_sends_again() {
        let mut s = Schedule::default();
        let t0 = 1_000_000 * S;
        s.offer(pending(1, 0, t0), toks(&["a"]), t0);
        let first = s.due(t0, 10).pop().unwrap();
        s.offer(pending(1, 1, t0 + S), toks(&["a"]), t0 + S);
        assert!(s.due(t0 + S, 10).is_empty(), "still in flight");
        assert_eq!(s.result(&first, Outcome::Sent, t0 + 2 * S), vec![]);
        let second = s.due(t0 + 2 * S, 10).pop().unwrap();
        assert_eq!(second.seq, 1);
        assert_eq!(
            s.result(&second, Outcome::Sent, t0 + 3 * S),
            vec![Action::Done { account: 1, seq: 1 }]
        );
        // A newer delivery resets the retries of a failing job.
        s.offer(pending(2, 2, t0), toks(&["b"]), t0);
        let f = s.due(t0, 1).pop().unwrap();
        s.result(&f, Outcome::Failed, t0);
        assert_eq!(s.next_due(), Some(t0 + 8 * S));
        s.offer(pending(2, 3, t0 + S), toks(&["b"]), t0 + S);
        assert_eq!(s.next_due(), Some(t0 + S));
    }

    #[test]
    fn limit_bounds_what_is_in_flight() {
        let mut s = Schedule::default();
        let t0 = 1_000_000 * S;
        for a in 0..100 {
            s.offer(pending(a, u64::from(a), t0), toks(&["x", "y"]), t0);
        }
        assert_eq!(s.len(), 200);
        assert_eq!(s.due(t0, 32).len(), 32);
        assert_eq!(s.due(t0, 500).len(), 168);
        assert_eq!(s.next_due(), None);
    }
}

/// Memory of a million pending notifications (the store's part, once per index copy) and of a
/// full schedule ([`super::MAX_JOBS`] jobs with 600-byte tokens, the size of Delta Chat's
/// encrypted tokens). Figures for benches/README.md:
/// `cargo test --release -p relay --lib push::schedule::bench_memory -- --ignored --nocapture`
#[cfg(test)]
#[test]
#[ignore = "benchmark"]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
fn bench_memory() {
    fn rss_anon_kib() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    }
    use crate::store::notify::Notifications;
    const N: u32 = 1_000_000;
    let before = rss_anon_kib();
    let mut n = Notifications::default();
    for a in 0..N {
        n.add(a, u64::from(a), 1_800_000_000);
    }
    let store_kib = rss_anon_kib() - before;
    assert_eq!(n.len(), N as usize);
    let before = rss_anon_kib();
    let mut s = Schedule::default();
    let t0 = 1_800_000_000_000;
    for a in 0..super::MAX_JOBS as u32 {
        let token = format!("openpgp:{a:08}{}", "x".repeat(583));
        let p = PendingNotify {
            account: a,
            seq: u64::from(a),
            at: 1_800_000_000,
        };
        s.offer(p, vec![token], t0);
    }
    let schedule_kib = rss_anon_kib() - before;
    assert_eq!(s.len(), super::MAX_JOBS);
    println!(
        "pending notifications: {N} in {:.1} MiB ({:.0} bytes each, per index copy); \
         schedule: {} jobs with 600-byte tokens in {:.1} MiB",
        store_kib as f64 / 1024.0,
        store_kib as f64 * 1024.0 / f64::from(N),
        super::MAX_JOBS,
        schedule_kib as f64 / 1024.0
    );
    drop((n, s));
}
