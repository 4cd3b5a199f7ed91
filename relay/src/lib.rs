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

#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: hashing thread, /proc
pub mod accounts;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: the admin socket
pub mod admin;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: reads the operator's file
pub mod appversions;
pub mod auth_cache;
pub mod config;
// I/O: outbound connections (SMTP, HTTPS), their timers, the system CA store, the clock for
// the "mxdeliv unsupported" memory.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod delivery;
pub mod dkim;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: resolv.conf, DNS sockets
pub mod dns;
pub mod expire;
pub mod header;
pub mod http;
pub mod imap;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: reads the old relay's files
pub mod import;
pub mod ini;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: sockets, timers, threads
pub mod io;
pub mod metrics;
pub mod outbound;
pub mod policy;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: users, ids, file modes
pub mod privilege;
// I/O: HTTP(S) client, its timers and the clock of the retry schedule (`push::schedule` is
// sans-I/O and takes the time passed in).
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod push;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: kernel maps, XDP loader
pub mod ratelimit;
pub mod redact;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: listeners, worker threads
pub mod server;
pub mod session;
pub mod shared;
pub mod smtp;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: files, mmap, writer thread
pub mod store;
pub mod throttle;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: certificate files
pub mod tls;
pub mod turn;
pub mod zone;
