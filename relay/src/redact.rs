//! What log lines say about clients: their IP addresses only with option `log_client_ips`
//! (a debugging switch, off by default), otherwise the fixed word [`HIDDEN`]. Passwords, tokens
//! and message contents are never given to a log call at all.
//!
//! The switch is process-wide, as the log itself is: `server::start` sets it from the
//! configuration.

use std::sync::atomic::{AtomicBool, Ordering};

static LOG_CLIENT_IPS: AtomicBool = AtomicBool::new(false);

/// What a log line says instead of a client's address.
pub const HIDDEN: &str = "hidden";

/// Turns the writing of client addresses into log lines on or off (option `log_client_ips`).
pub fn set_log_client_ips(on: bool) {
    LOG_CLIENT_IPS.store(on, Ordering::Relaxed);
}

/// A client address as a log line may show it: `tracing::info!(source = %redact::ip(peer), ..)`.
pub fn ip<T: std::fmt::Display>(addr: T) -> Client<T> {
    Client(addr)
}

/// See [`ip`].
#[derive(Debug, Clone, Copy)]
pub struct Client<T>(T);

impl<T: std::fmt::Display> std::fmt::Display for Client<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if LOG_CLIENT_IPS.load(Ordering::Relaxed) {
            self.0.fmt(f)
        } else {
            f.write_str(HIDDEN)
        }
    }
}
