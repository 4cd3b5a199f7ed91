//! When to ask the ACME server for a certificate: a plain decision over the certificate's
//! validity and the failures so far, with time passed in (unix seconds). No I/O, no clock.
//!
//! - No ACME certificate yet (first start, or the configured names changed): now.
//! - Otherwise when a third of its lifetime remains (Let's Encrypt's 90 days: after 60, the
//!   time certbot and acmetool pick; a 6-day certificate: after 4).
//! - After a failure: again after [`Policy::first_retry_secs`], doubling per further failure up
//!   to [`Policy::max_retry_secs`]. The old
//!   certificate (or the self-signed fallback) keeps serving meanwhile. The slow start keeps a
//!   broken setup under Let's Encrypt's limit of 5 failed validations per name and hour.

/// Retry timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Wait after the first failure.
    pub first_retry_secs: i64,
    /// Longest wait between attempts.
    pub max_retry_secs: i64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            first_retry_secs: 5 * 60,
            max_retry_secs: 6 * 3600,
        }
    }
}

/// Validity of a certificate, unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Start.
    pub not_before: i64,
    /// End.
    pub not_after: i64,
}

impl Validity {
    /// When a certificate with this validity should be renewed: a third of its lifetime before
    /// it ends.
    pub fn renew_at(self) -> i64 {
        let lifetime = (self.not_after - self.not_before).max(0);
        self.not_after - lifetime / 3
    }
}

/// The renewal state of one certificate.
#[derive(Debug, Clone)]
pub struct Schedule {
    policy: Policy,
    failures: u32,
    retry_at: Option<i64>,
}

impl Schedule {
    /// A schedule with no failures.
    pub fn new(policy: Policy) -> Schedule {
        Schedule {
            policy,
            failures: 0,
            retry_at: None,
        }
    }

    /// When to attempt issuance next, given the ACME certificate in use (`None`: none yet, or
    /// it no longer covers the configured names). May be in the past: attempt now.
    pub fn next_attempt_at(&self, current: Option<Validity>, now: i64) -> i64 {
        // After a failure the backoff decides: the renewal time has passed already (that is
        // why there was an attempt), or the names changed, which a retry covers as well.
        self.retry_at
            .unwrap_or_else(|| current.map_or(now, Validity::renew_at))
    }

    /// An attempt at `now` failed; returns when the next one is due.
    pub fn failed(&mut self, now: i64) -> i64 {
        self.failures = self.failures.saturating_add(1);
        let wait = self
            .policy
            .first_retry_secs
            .saturating_mul(1i64 << (self.failures - 1).min(30))
            .min(self.policy.max_retry_secs);
        let at = now.saturating_add(wait);
        self.retry_at = Some(at);
        at
    }

    /// An attempt succeeded: the backoff starts over.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn first_certificate_is_asked_for_at_once() {
        let s = Schedule::new(Policy::default());
        assert_eq!(s.next_attempt_at(None, 1000), 1000);
    }

    #[test]
    fn renewal_when_a_third_of_the_lifetime_remains() {
        let s = Schedule::new(Policy::default());
        let le = Validity {
            not_before: 0,
            not_after: 90 * DAY,
        };
        assert_eq!(s.next_attempt_at(Some(le), 5), 60 * DAY);
        let short = Validity {
            not_before: 100,
            not_after: 100 + 6 * DAY,
        };
        assert_eq!(s.next_attempt_at(Some(short), 100), 100 + 4 * DAY);
        // An expired (or inverted) certificate: due in the past, i.e. now.
        let expired = Validity {
            not_before: 10,
            not_after: 5,
        };
        assert!(s.next_attempt_at(Some(expired), 1000) <= 1000);
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_cap_and_success_resets() {
        let mut s = Schedule::new(Policy {
            first_retry_secs: 60,
            max_retry_secs: 600,
        });
        let now = 1_000;
        let waits: Vec<i64> = (0..7).map(|_| s.failed(now) - now).collect();
        assert_eq!(waits, [60, 120, 240, 480, 600, 600, 600]);
        assert_eq!(s.failures(), 7);
        assert_eq!(s.next_attempt_at(None, now), now + 600);
        s.succeeded();
        assert_eq!(s.failures(), 0);
        assert_eq!(s.next_attempt_at(None, now), now);
        // Thousands of failures do not overflow.
        for _ in 0..5000 {
            s.failed(i64::MAX - 10);
        }
        assert_eq!(s.next_attempt_at(None, 0), i64::MAX);
    }

    #[test]
    fn a_failed_renewal_retries_by_the_backoff_not_by_the_renewal_time() {
        let mut s = Schedule::new(Policy::default());
        let v = Validity {
            not_before: 0,
            not_after: 90 * DAY,
        };
        let now = 60 * DAY + 1;
        let next = s.failed(now);
        assert_eq!(next, now + 300);
        assert_eq!(s.next_attempt_at(Some(v), now), now + 300);
    }
}
