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
//! clock: drivers feed bytes and time in and take bytes and actions out.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod accounts;
pub mod admin;
pub mod config;
pub mod expire;
pub mod imap;
pub mod io;
pub mod policy;
pub mod privilege;
pub mod ratelimit;
pub mod server;
pub mod session;
pub mod shared;
pub mod smtp;
pub mod store;
pub mod throttle;
pub mod tls;
