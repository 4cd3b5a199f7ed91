//! IMAP4rev1 with the extensions Delta Chat uses, sans-I/O.
//!
//! Layers, bottom up: [`frame`] cuts bytes into commands and enforces the caps, [`command`] parses
//! them, [`response`] encodes replies, [`bodystructure`] and [`fetch`] render message data,
//! [`search`] evaluates SEARCH keys, and `session` is the state machine the driver talks to.
//! Nothing here does I/O or reads a clock: store reads are synchronous, writes are effects.

pub mod bodystructure;
pub mod command;
pub mod fetch;
pub mod frame;
pub mod response;
pub mod search;
mod session;

pub use session::Session;

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests: disk, clock, real store
mod tests;
