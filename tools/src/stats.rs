//! Figures of a load run: latency histograms (hdrhistogram, microseconds), error counts by kind,
//! and their JSON form. Shared between tasks behind plain mutexes: every update is a few
//! nanoseconds, far below the per-message network cost.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Locks a mutex, ignoring poisoning (a panicked task does not make the figures unreadable).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A latency histogram from 1 µs to 10 min, 3 significant digits.
pub struct Latency(Mutex<Histogram<u64>>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Latency {
        let h = Histogram::new_with_bounds(1, 600_000_000, 3)
            .expect("1 µs .. 10 min with 3 digits should be valid hdrhistogram bounds");
        Latency(Mutex::new(h))
    }

    /// Records one latency (clamped to the histogram's range).
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, 600_000_000);
        lock(&self.0).saturating_record(us);
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        lock(&self.0).len()
    }

    /// The value at quantile `q` (0..=1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        lock(&self.0).value_at_quantile(q) as f64 / 1000.0
    }

    /// `{count, min, p50, p90, p99, p999, max, mean}` in milliseconds.
    pub fn summary(&self) -> Value {
        let h = lock(&self.0);
        if h.is_empty() {
            return json!({ "count": 0 });
        }
        let ms = |us: u64| us as f64 / 1000.0;
        json!({
            "count": h.len(),
            "min_ms": ms(h.min()),
            "p50_ms": ms(h.value_at_quantile(0.5)),
            "p90_ms": ms(h.value_at_quantile(0.9)),
            "p99_ms": ms(h.value_at_quantile(0.99)),
            "p999_ms": ms(h.value_at_quantile(0.999)),
            "max_ms": ms(h.max()),
            "mean_ms": h.mean() / 1000.0,
        })
    }

    /// One line: `p50 1.23 ms, p99 4.56 ms, max 7.89 ms (n=…)`.
    pub fn line(&self) -> String {
        let h = lock(&self.0);
        if h.is_empty() {
            return "no samples".into();
        }
        format!(
            "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms (n={})",
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.9) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
            h.len()
        )
    }
}

/// Error counts by [`crate::Error::key`], plus the first full message of each kind.
#[derive(Default)]
pub struct Errors(Mutex<BTreeMap<String, (u64, String)>>);

impl Errors {
    /// Counts one error.
    pub fn add(&self, e: &crate::Error) {
        let mut m = lock(&self.0);
        let entry = m.entry(e.key()).or_insert_with(|| (0, e.to_string()));
        entry.0 += 1;
    }

    /// Total count.
    pub fn total(&self) -> u64 {
        lock(&self.0).values().map(|(n, _)| n).sum()
    }

    /// `{key: {count, example}}`.
    pub fn summary(&self) -> Value {
        let m = lock(&self.0);
        let obj: serde_json::Map<String, Value> = m
            .iter()
            .map(|(k, (n, ex))| (k.clone(), json!({ "count": n, "example": ex })))
            .collect();
        Value::Object(obj)
    }

    /// Human-readable lines `count  key  (example)`.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.0)
            .iter()
            .map(|(k, (n, ex))| format!("{n:>8}  {k}  ({ex})"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_known_values() {
        let l = Latency::new();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.count(), 100);
        let p50 = l.quantile_ms(0.5);
        assert!((49.9..=50.1).contains(&p50), "{p50}");
        let s = l.summary();
        assert!((s["max_ms"].as_f64().unwrap() - 100.0).abs() < 0.1);
        assert!(s["p99_ms"].as_f64().unwrap() >= 98.9);
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let e = Errors::default();
        e.add(&crate::Error::Timeout { what: "smtp DATA" });
        e.add(&crate::Error::Timeout { what: "smtp DATA" });
        e.add(&crate::Error::Reply {
            what: "smtp MAIL",
            code: 450,
            text: "4.7.1 too much mail".into(),
        });
        assert_eq!(e.total(), 3);
        let s = e.summary();
        assert_eq!(s["smtp DATA: timeout"]["count"], 2);
        assert_eq!(s["smtp MAIL: reply 450"]["count"], 1);
    }
}
