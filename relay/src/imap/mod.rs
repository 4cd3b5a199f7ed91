//! IMAP4rev1 with the extensions Delta Chat uses, sans-I/O.
//!
//! Layers, bottom up: [`frame`] cuts bytes into commands and enforces the caps (smaller before
//! login), [`command`] parses them, [`response`] encodes replies, [`bodystructure`] and [`fetch`]
//! render message data, [`search`] evaluates SEARCH keys, [`limits`] holds the per-account caps,
//! [`recent`] keeps which session saw a message first (`\Recent`, in memory, shared by the
//! process). `session` is the state machine the driver talks to: it holds the protocol state,
//! tells the framer the caps of that state and dispatches each command to its family in
//! `handler`; `sync` reports changes to the selected mailbox. Nothing here does I/O or reads a
//! clock: store reads are synchronous, writes are effects.
//!
//! Adding a command: a variant in `command/types.rs`, its grammar in `command/parser.rs`, the
//! state it needs and its dispatch arm in `session.rs`, and the handler (with the completion of
//! its effect, if it writes) in `handler/<family>.rs`.

pub mod bodystructure;
pub mod command;
pub mod fetch;
pub mod frame;
mod handler;
pub mod limits;
pub mod recent;
pub mod response;
pub mod search;
mod session;
mod sync;

pub use session::{Session, PREAUTH_BUDGET};

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests: disk, clock, real store
mod tests;
#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests: disk, clock, real store
mod tests_conformance;
