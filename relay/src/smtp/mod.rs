//! SMTP (submission and MX), sans-I/O.
//!
//! - [`frame`]: line and DATA receivers (CRLF only, bare LF refused, caps, dot-unstuffing).
//! - [`command`]: command lines → [`command::Command`].
//! - [`reply`]: named replies with their RFC references, and the encoder.
//! - [`session`]: the state machine implementing [`crate::session::Session`].
//! - [`inbound`]: the checks of mail from other servers, shared with HTTPS `/mxdeliv`.
//!
//! Nothing here does I/O or reads a clock; the driver feeds bytes and time and runs effects.

pub mod command;
pub mod frame;
pub mod inbound;
pub mod reply;
pub mod session;
#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests: disk, clock, real store
mod tests;

pub use session::Session;

/// Which service a session provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Authenticated submission from our users: port 587 (STARTTLS) and 465 (implicit TLS).
    Submission,
    /// Mail from other relays to our users: port 25, no AUTH.
    Mx,
}
