//! Black-box clients of a running relay: the Delta Chat echo bot (`echo`) and the daily
//! retention job (`expire`).
//!
//! Bots reach the relay only through its public interfaces: IMAP/SMTP (through a real Delta Chat
//! core, `deltachat-rpc-server`) and the local admin socket (JSON lines, documented in the relay's
//! `admin` module). They never open the relay's store: only the relay deletes data.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: clients of the relay

pub mod admin;
pub mod rpc;
pub mod time;
