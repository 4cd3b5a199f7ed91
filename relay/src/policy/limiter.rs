//! Per-sender GCRA rate limiter for submissions (the `governor` keyed limiter of filtermail).
//!
//! One cell every `60 s / per_minute`, bursts of `burst` cells. Time comes in as milliseconds
//! from the caller; the limiter never reads a clock. Memory stays bounded: a key whose bucket is
//! full again (no outstanding debt) carries no information and is dropped by an amortized sweep.

use std::collections::HashMap;
use std::sync::Mutex;

/// Internal state behind the mutex.
#[derive(Debug, Default)]
struct State {
    /// Theoretical arrival time (µs) per sender: the bucket is full again at this instant.
    tat: HashMap<String, u64>,
    /// Sweep when the map grows past this size.
    sweep_at: usize,
}

/// Smallest map size that triggers a sweep.
const MIN_SWEEP: usize = 1024;

/// Per-sender GCRA rate limiter (`max_user_send_per_minute`, `max_user_send_burst_size`),
/// one cell per SMTP transaction. Thread-safe; time is passed in.
#[derive(Debug)]
pub struct SendLimiter {
    /// Emission interval in µs.
    interval_us: u64,
    /// Burst tolerance in µs (`interval * burst`).
    tau_us: u64,
    state: Mutex<State>,
}

impl SendLimiter {
    /// A limiter allowing `per_minute` messages per minute with bursts of `burst` (both clamped
    /// to at least 1, as `governor` requires non-zero values).
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let interval_us = 60_000_000 / u64::from(per_minute.max(1));
        SendLimiter {
            interval_us,
            tau_us: interval_us.saturating_mul(u64::from(burst.max(1))),
            state: Mutex::new(State {
                tat: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// Take one cell for `sender` at `now_ms`; `Err(message)` if refused (the message goes after
    /// `450 4.7.1: Too much mail from <addr>, `).
    pub fn check_at(&self, sender: &str, now_ms: u64) -> Result<(), String> {
        let now = now_ms.saturating_mul(1000);
        // A poisoned lock only means another thread panicked mid-update of plain integers.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let tat = state.tat.get(sender).copied().unwrap_or(now).max(now);
        let next = tat.saturating_add(self.interval_us);
        if next - now > self.tau_us {
            let earliest = next - self.tau_us;
            let wait_ms = (earliest - now).div_ceil(1000);
            return Err(format!(
                "rate-limited until {} ms (in {} s)",
                earliest.div_ceil(1000),
                wait_ms.div_ceil(1000)
            ));
        }
        match state.tat.get_mut(sender) {
            Some(v) => *v = next,
            None => {
                state.tat.insert(sender.to_string(), next);
            }
        }
        if state.tat.len() > state.sweep_at {
            state.tat.retain(|_, tat| *tat > now);
            state.sweep_at = (state.tat.len() * 2).max(MIN_SWEEP);
        }
        Ok(())
    }

    /// Number of senders currently tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tat
            .len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests race threads
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_per_interval() {
        let l = SendLimiter::new(60, 3); // one per second, bursts of 3
        for _ in 0..3 {
            assert_eq!(l.check_at("a@x", 10_000), Ok(()));
        }
        let e = l.check_at("a@x", 10_000).unwrap_err();
        assert!(e.starts_with("rate-limited until 11000 ms"), "{e}");
        // Another sender is independent.
        assert_eq!(l.check_at("b@x", 10_000), Ok(()));
        assert!(l.check_at("a@x", 10_999).is_err());
        assert_eq!(l.check_at("a@x", 11_000), Ok(()));
        assert!(l.check_at("a@x", 11_000).is_err());
        // After a long pause the full burst is back, no more.
        for _ in 0..3 {
            assert_eq!(l.check_at("a@x", 100_000), Ok(()));
        }
        assert!(l.check_at("a@x", 100_000).is_err());
    }

    #[test]
    fn refusal_does_not_consume() {
        let l = SendLimiter::new(1, 1); // one per minute
        assert_eq!(l.check_at("a", 0), Ok(()));
        for t in (0..60_000).step_by(5_000) {
            assert!(l.check_at("a", t).is_err());
        }
        assert_eq!(l.check_at("a", 60_000), Ok(()));
    }

    #[test]
    fn memory_bounded_by_active_senders() {
        let l = SendLimiter::new(60, 2);
        for i in 0..10_000u64 {
            // Each sender sends once; a second later its bucket is full again.
            assert_eq!(l.check_at(&format!("u{i}"), i * 2_000), Ok(()));
        }
        assert!(l.tracked() <= 2 * MIN_SWEEP + 1, "tracked {}", l.tracked());
    }

    #[test]
    fn zero_config_clamped() {
        let l = SendLimiter::new(0, 0);
        assert_eq!(l.check_at("a", 0), Ok(()));
        assert!(l.check_at("a", 1).is_err());
    }

    #[test]
    fn thread_safe() {
        let l = std::sync::Arc::new(SendLimiter::new(60, 100));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || (0..50).filter(|_| l.check_at("s", 0).is_ok()).count())
            })
            .collect();
        let ok: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(ok, 100);
    }
}
