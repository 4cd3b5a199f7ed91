//! A chatmail relay in one binary.
//!
//! ```text
//!  socket ──► io (tokio-uring | tokio/epoll) ──► tls (rustls) ──► session (smtp | imap, sans-I/O)
//!                                                                    │          │
//!                                                              policy (gate)  effects
//!                                                                    │          ▼
//!                                                                    └──► store (append-only log,
//!                                                                          mmap reads, group commit)
//! ```
//!
//! Protocol logic (`smtp`, `imap`, `policy`, `store` record format) does no I/O and reads no
//! clock: drivers feed bytes and time in and take bytes and actions out. Clippy keeps it so
//! (`disallowed-methods` and `disallowed-types` in clippy.toml: clocks, file system, sockets,
//! threads, processes); the modules whose job is I/O allow those lints on their `mod` line below.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "login effect: hashes on a thread, reads /proc and the nocreate file"
)]
pub mod accounts;
#[allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "the local admin socket"
)]
pub mod admin;
pub mod auth_cache;
pub mod config;
pub mod expire;
pub mod imap;
#[allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "the drivers: sockets, timers, threads"
)]
pub mod io;
pub mod policy;
#[allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "admission at accept; the XDP loader reads the kernel and the file system"
)]
pub mod ratelimit;
#[allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "listeners and worker threads"
)]
pub mod server;
pub mod session;
pub mod shared;
pub mod smtp;
#[allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "the log, mmap, fsync and the writer thread (store/format.rs denies it again)"
)]
pub mod store;
#[allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "reads certificate files, writes the self-signed one"
)]
pub mod tls;
