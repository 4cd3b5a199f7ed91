//! Test support for every crate of the workspace (a dev-dependency only): boots a real relay in
//! this process on free loopback ports (real TLS, real store with fsync, either I/O backend),
//! creates accounts, and talks to it with a small blocking client whose reads all have a
//! deadline, so that a broken server fails a test instead of hanging it. [`dns::DnsServer`] is
//! a real DNS server on loopback (UDP and TCP) whose zone, faults (SERVFAIL, no answer) and
//! query log the test controls; a relay uses it with option `dns_server`.
//!
//! ```no_run
//! use relay_testkit::{backends, new_addr, Client, Kind, Relay, PASSWORD};
//!
//! for backend in backends() {
//!     let relay = Relay::start(backend, &["max_user_send_burst_size=100"]);
//!     let mut c = Client::tls(relay.addr(Kind::Submissions));
//!     assert_eq!(c.reply().0, 220);
//!     c.smtp_login(&new_addr("doc"), PASSWORD);
//! }
//! ```
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: test support
#![allow(
    clippy::unwrap_used,
    reason = "test support: a failed unwrap is a failed test"
)]

mod boot;
mod client;
pub mod dns;
pub mod notifier;
pub mod pebble;
pub mod tls;

pub use crate::boot::{backends, Builder, Relay};
pub use crate::client::{plain_auth, Client, HttpResponse, READ_TIMEOUT};
pub use relay::server::{Backend, Kind};

use relay::store::{AccountId, Op, OpResult, Store};

/// The password of every account the helpers create.
pub const PASSWORD: &str = "correct-horse-battery";

/// A loopback address of its own for a relay on the standard ports (see
/// [`Builder::standard_ports`]): `127.77.x.y`, a new one per call in this process (tests run in
/// parallel threads; test binaries run one after another).
pub fn loopback_ip() -> std::net::IpAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(
        127,
        77,
        u8::try_from(n / 250).expect("fewer than 64,000 relays per test run"),
        u8::try_from(n % 250 + 1).unwrap(),
    ))
}

/// A free loopback port (the relay treats port 0 as "listener disabled").
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// A loopback UDP port that was free a moment ago (TURN's `turn_port`: test relays in parallel
/// must not all take `relay dev`'s 13478).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` distinct loopback ports that were free a moment ago (all held at once while choosing, so
/// no two are the same).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// A fresh address on the dev relay's domain that satisfies the creation rules (nine characters
/// of `[a-z0-9]`, unique within this process).
pub fn new_addr(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let local = format!("{tag}{n:06}{}", std::process::id() % 1000);
    format!("{}@[127.0.0.1]", &local[..9])
}

/// Creates `addr` directly in `store` (no login), as created at `created` (unix seconds), with
/// the hash of [`PASSWORD`], and returns its id.
pub fn create_account(store: &Store, addr: &str, created: i64) -> AccountId {
    let op = Op::CreateAccount {
        addr: addr.to_owned(),
        password_hash: relay::accounts::hash_password(PASSWORD).unwrap(),
        now: created,
    };
    match store.commit_blocking(op).unwrap() {
        OpResult::AccountCreated(id) => id,
        other => panic!("creating {addr}: {other:?}"),
    }
}

/// Runs `cmd` to its end and returns its output; panics with its stderr unless it succeeded.
pub fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
