//! What `relay status` reports that neither the store nor the metrics know: when the relay
//! started, its I/O backend and rate-limit mode, the served certificate, and the last warnings
//! and errors it logged. (Open connections per listener are the metrics' gauges,
//! [`crate::metrics::Metrics::open_connections`].)
//!
//! [`Live`] is held by [`crate::shared::Shared`] and filled in by `server::start`; the admin
//! socket's `status` request reads it. The last events are a bounded ring
//! ([`LAST_EVENTS`] entries, each cut to [`EVENT_CHARS`] characters) fed by [`RecentEvents`],
//! a tracing layer the binary installs beside its log output.

use std::collections::VecDeque;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;

/// Warnings and errors kept for `relay status`.
pub const LAST_EVENTS: usize = 16;
/// Characters kept of each event's text.
pub const EVENT_CHARS: usize = 300;

/// The running relay's state for `relay status`.
#[derive(Debug, Default)]
pub struct Live {
    /// Unix seconds of the start (0 until `server::start` sets it).
    pub started: AtomicI64,
    /// `io_uring` or `epoll`.
    pub backend: OnceLock<String>,
    /// `kernel` (XDP) or `userspace`.
    pub rate_limit: OnceLock<String>,
    /// The served certificate.
    pub certs: OnceLock<Arc<crate::tls::CertStore>>,
}

/// One logged warning or error.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Unix seconds.
    pub at: i64,
    /// `WARN` or `ERROR`.
    pub level: &'static str,
    /// The module that logged it.
    pub target: String,
    /// The message and its fields, cut to [`EVENT_CHARS`] characters.
    pub message: String,
}

static RECENT: Mutex<VecDeque<Event>> = Mutex::new(VecDeque::new());

/// The last warnings and errors, oldest first.
pub fn recent_events() -> Vec<Event> {
    RECENT
        .lock()
        .map(|r| r.iter().cloned().collect())
        .unwrap_or_default()
}

fn remember(event: Event) {
    if let Ok(mut r) = RECENT.lock() {
        if r.len() >= LAST_EVENTS {
            r.pop_front();
        }
        r.push_back(event);
    }
}

/// A tracing layer that keeps the last [`LAST_EVENTS`] WARN and ERROR events for `relay
/// status`.
pub struct RecentEvents;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RecentEvents {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let level = *event.metadata().level();
        let level = if level == tracing::Level::ERROR {
            "ERROR"
        } else if level == tracing::Level::WARN {
            "WARN"
        } else {
            return;
        };
        let mut text = Text(String::new());
        event.record(&mut text);
        let message: String = text.0.chars().take(EVENT_CHARS).collect();
        remember(Event {
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            level,
            target: event.metadata().target().to_owned(),
            message,
        });
    }
}

/// The message first, then `field=value` pairs, as the log line shows them.
struct Text(String);

impl tracing::field::Visit for Text {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if self.0.len() > EVENT_CHARS * 4 {
            return;
        }
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}");
            if !rest.is_empty() {
                self.0.push(' ');
                self.0.push_str(&rest);
            }
        } else {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn the_ring_keeps_the_last_warnings_and_errors_only() {
        let subscriber = tracing_subscriber::registry().with(RecentEvents);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            for i in 0..LAST_EVENTS + 3 {
                tracing::warn!(n = i, "ring test warning");
            }
            tracing::error!(path = "/x", "ring test error {}", "here");
        });
        let events: Vec<Event> = recent_events()
            .into_iter()
            .filter(|e| e.message.contains("ring test"))
            .collect();
        // Only this test feeds the ring (no other test installs the layer): it is full of
        // its events, the newest ones.
        assert_eq!(events.len(), LAST_EVENTS);
        let last = events.last().unwrap();
        assert_eq!(last.level, "ERROR");
        assert_eq!(last.message, "ring test error here path=\"/x\"");
        assert!(events.iter().all(|e| !e.message.contains("not kept")));
        assert!(recent_events().len() <= LAST_EVENTS);
        let warn = &events[events.len() - 2];
        assert_eq!(
            warn.message,
            format!("ring test warning n={}", LAST_EVENTS + 2)
        );
    }
}
