//! The thin I/O layer: moves bytes between sockets and sans-I/O sessions, on io_uring
//! (tokio-uring) or epoll (tokio), chosen at start-up. It knows no SMTP or IMAP.
//!
//! # Organization
//! - [`pipeline`]: TLS and DEFLATE transforms (no sockets).
//! - [`epoll`] and [`uring`]: the two socket backends, each a [`Conn`] and a listener loop.
//! - [`drive`]: the connection loop shared by both backends.
//! - [`log`]: the log sink that never blocks or fails the relay.
//! - [`hash_pool`]: the bounded, per-source fair thread pool password hashing runs on.
//!
//! The loop, for every connection: read → pipeline → `session.receive`; then drain
//! `session.poll_action` (run effects, switch on TLS or DEFLATE, close) and write the output; wait
//! for the next read, a change of the watched account (IDLE wake-up: a `watch` channel bumped by
//! the store after commit — no message data is copied), or the session's next timeout.
//!
//! # Logins
//! `Effect::Login` runs `accounts::login` (hashing on [`hash_pool`]). A failed login is logged
//! with the source address and user (never the password), recorded in the
//! [`crate::throttle::LoginThrottle`], and its result is handed to the session only after the
//! throttle's delay: the failure reply is held on this connection's task (a timer, no thread),
//! while a correct login is answered at once. Closing a connection after
//! [`crate::throttle::MAX_FAILED_LOGINS`] failures is the sessions' rule (SMTP `421`, IMAP
//! `* BYE`), so it holds in their sans-I/O tests too. A login refused because the hashing queue is full gets its
//! temporary failure after a second, so a flood cannot spin on instant answers.

pub mod background;
pub mod epoll;
pub mod hash_pool;
pub mod log;
pub mod pipeline;
pub mod uring;

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::accounts::LoginError;
use crate::session::{Action, Effect, EffectResult, Session};
use crate::shared::Shared;
use crate::store::AccountId;
use pipeline::Pipeline;

/// Bytes asked for per read.
pub const READ_SIZE: usize = 16 * 1024;

/// Buffers up to this capacity are kept between uses; larger ones are freed after use.
const KEEP_BUFFER: usize = 4 * 1024;

/// A peer that writes nothing we can send for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(120);

/// A TLS handshake must finish within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The wall clock in unix milliseconds: for what needs a real date (last-login day), never for a
/// deadline.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds on the process's monotonic clock (since its first use): the time of the login
/// throttle, immune to wall-clock steps.
pub fn monotonic_ms() -> u64 {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The clock one connection's session sees: the wall clock read once when the connection starts,
/// then advanced by the monotonic clock ([`std::time::Instant`]).
///
/// Sessions take one `now_ms` for both their deadlines (idle and command timeouts, IDLE pings, the
/// send limiter) and their dates (INTERNALDATE). Advancing it monotonically makes every deadline
/// immune to wall-clock steps (an NTP correction, an operator's `date -s`): a step forward no
/// longer times out every connection at once, a step back no longer keeps dead ones for hours.
/// The price is that a date stamped by a connection is off by the steps made since that
/// connection started; each new connection starts from the current wall time again.
#[derive(Debug, Clone, Copy)]
pub struct SessionClock {
    wall_ms: u64,
    start: std::time::Instant,
}

impl SessionClock {
    /// A clock starting at the current wall time.
    pub fn start() -> SessionClock {
        SessionClock::starting_at(now_ms())
    }

    /// A clock starting at `wall_ms` (unix milliseconds) now.
    pub fn starting_at(wall_ms: u64) -> SessionClock {
        SessionClock {
            wall_ms,
            start: std::time::Instant::now(),
        }
    }

    /// `wall_ms` at start plus the monotonic time since.
    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.wall_ms.saturating_add(elapsed)
    }
}

/// A connected stream of either backend, with owned-buffer reads and writes (io_uring's model;
/// the epoll backend adapts to it).
pub trait Conn {
    /// Reads into `buf` (its contents are discarded; the backend decides whether to reuse its
    /// capacity): the returned buffer holds the bytes read, empty at end of stream.
    fn read(&self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)>;
    /// Writes all of `buf`.
    fn write_all(&self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)>;
}

/// How a connection starts.
#[derive(Debug, Clone)]
pub enum Start {
    /// Plaintext (STARTTLS may follow), using this TLS configuration when it does.
    Plain(Arc<rustls::ServerConfig>),
    /// Implicit TLS from the first byte.
    Tls(Arc<rustls::ServerConfig>),
}

/// Runs one connection to its end; `clock` is the one the session was created with, `peer` the
/// client's address (for the login throttle and its log lines).
pub async fn drive<C: Conn>(
    conn: C,
    mut session: Box<dyn Session>,
    start: Start,
    shared: Arc<Shared>,
    clock: SessionClock,
    peer: IpAddr,
) {
    if let Err(e) = drive_inner(&conn, &mut *session, start, &shared, clock, peer).await {
        tracing::debug!("connection ended: {e}");
    }
}

async fn write(conn: &impl Conn, wire: &mut Vec<u8>) -> io::Result<()> {
    if wire.is_empty() {
        return Ok(());
    }
    let buf = std::mem::take(wire);
    let (res, mut buf) = tokio::time::timeout(WRITE_TIMEOUT, conn.write_all(buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))?;
    // Keep a small buffer for the next reply; give back what a large FETCH grew, so an idle
    // connection holds little memory.
    if buf.capacity() <= KEEP_BUFFER {
        buf.clear();
        *wire = buf;
    }
    res
}

/// How long a login refused because the hashing queue is full waits for its temporary failure.
const BUSY_DELAY: Duration = Duration::from_secs(1);

/// Longest user name written to the log.
const LOG_USER_MAX: usize = 64;

async fn run_effect(shared: &Shared, effect: Effect, peer: IpAddr) -> EffectResult {
    match effect {
        Effect::Login { user, password } => {
            let result = crate::accounts::login(shared, peer, &user, &password.0, now_ms()).await;
            match &result {
                Ok(_) => shared.metrics.login_ok(),
                Err(LoginError::Failed) => shared.metrics.login_failed(),
                Err(LoginError::TryLater(_) | LoginError::Internal) => shared.metrics.login_later(),
            }
            if result == Err(LoginError::Failed) {
                let verdict = shared
                    .login_throttle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .failed(peer, &user, monotonic_ms());
                let shown: String = user.chars().take(LOG_USER_MAX).collect();
                tracing::info!(
                    source = %crate::redact::ip(peer),
                    user = ?shown,
                    source_failures = verdict.source_failures,
                    account_over_budget = verdict.account_over_budget,
                    delay_ms = verdict.delay_ms,
                    "login failed"
                );
                tokio::time::sleep(Duration::from_millis(verdict.delay_ms)).await;
            } else if result == Err(LoginError::TryLater(crate::accounts::HASH_QUEUE_FULL)) {
                // Nothing was checked; holding the temporary failure keeps a flood that fills
                // the queue from spinning on instant answers.
                tracing::info!(source = %crate::redact::ip(peer), "login refused: hashing queue full");
                tokio::time::sleep(BUSY_DELAY).await;
            }
            EffectResult::Login(result)
        }
        Effect::Commit(op) => {
            let result = shared.store.commit(op).await;
            shared.metrics.store_result(&result);
            EffectResult::Commit(result)
        }
        Effect::VerifyOrigin {
            message,
            from_domain,
        } => {
            let verdict = crate::dkim::verify_origin(shared, &message, &from_domain).await;
            EffectResult::Origin { message, verdict }
        }
    }
}

async fn drive_inner(
    conn: &impl Conn,
    session: &mut dyn Session,
    start: Start,
    shared: &Shared,
    clock: SessionClock,
    peer: IpAddr,
) -> io::Result<()> {
    let mut pipe = Pipeline::default();
    let starttls_config = match start {
        Start::Plain(c) => c,
        Start::Tls(c) => {
            pipe.start_tls(c.clone())?;
            c
        }
    };
    run(
        conn,
        session,
        pipe,
        starttls_config,
        Vec::new(),
        shared,
        clock,
        peer,
    )
    .await
}

/// A connection whose TLS handshake is done (the HTTPS port), before its protocol is chosen.
pub struct Established {
    /// The TLS state ([`Pipeline::alpn`] says what the client chose).
    pub pipe: Pipeline,
    /// Plaintext that arrived with the end of the handshake.
    pub plain: Vec<u8>,
}

/// Runs the TLS handshake of a port that picks its protocol by ALPN, within the handshake
/// timeout; the ClientHello may come in any number of pieces.
///
/// # Errors
/// TLS errors (the alert is sent), the peer closing, the timeout.
pub async fn handshake<C: Conn>(
    conn: &C,
    configs: pipeline::AlpnConfigs,
) -> io::Result<Established> {
    let mut pipe = Pipeline::default();
    pipe.start_tls_by_alpn(configs);
    let mut plain = Vec::new();
    let mut wire_out = Vec::new();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    while pipe.is_handshaking() {
        let (res, b) = tokio::time::timeout_at(deadline, conn.read(buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out"))?;
        res?;
        if b.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let result = pipe.input(&b, &mut plain, &mut wire_out);
        let _ = write(conn, &mut wire_out).await;
        result?;
        buf = b;
    }
    Ok(Established { pipe, plain })
}

/// Runs `session` on a connection whose TLS handshake [`handshake`] did (IMAP or submission on
/// the HTTPS port): as on an implicit-TLS port from the moment the handshake ends.
pub async fn drive_established<C: Conn>(
    conn: &C,
    mut session: Box<dyn Session>,
    established: Established,
    config: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
    clock: SessionClock,
    peer: IpAddr,
) {
    session.tls_established();
    let Established { pipe, plain } = established;
    if let Err(e) = run(
        conn,
        &mut *session,
        pipe,
        config,
        plain,
        &shared,
        clock,
        peer,
    )
    .await
    {
        tracing::debug!("connection ended: {e}");
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    conn: &impl Conn,
    session: &mut dyn Session,
    mut pipe: Pipeline,
    starttls_config: Arc<rustls::ServerConfig>,
    mut plain: Vec<u8>,
    shared: &Shared,
    clock: SessionClock,
    peer: IpAddr,
) -> io::Result<()> {
    let now_ms = || clock.now_ms();
    deliver(session, &mut plain, now_ms());
    let mut wire_out = Vec::new();
    let mut watched: Option<(AccountId, tokio::sync::watch::Receiver<u64>)> = None;
    let mut read = Box::pin(conn.read(Vec::new()));
    let mut handshake_deadline = pipe
        .is_handshaking()
        .then(|| tokio::time::Instant::now() + HANDSHAKE_TIMEOUT);
    loop {
        // Drain actions and output.
        loop {
            let out = session.output();
            if !out.is_empty() {
                let n = out.len();
                pipe.output(out, &mut wire_out)?;
                session.consume_output(n);
            }
            match session.poll_action() {
                None => break,
                Some(Action::Effect(effect)) => {
                    // Answers produced so far go out before the (possibly slow) effect runs.
                    write(conn, &mut wire_out).await?;
                    let result = run_effect(shared, effect, peer).await;
                    session.complete(result, now_ms());
                }
                Some(Action::StartTls) => {
                    write(conn, &mut wire_out).await?;
                    pipe.start_tls(starttls_config.clone())?;
                    handshake_deadline = Some(tokio::time::Instant::now() + HANDSHAKE_TIMEOUT);
                }
                Some(Action::StartCompress) => {
                    pipe.flush(&mut wire_out)?;
                    write(conn, &mut wire_out).await?;
                    pipe.start_compress();
                }
                Some(Action::Close) => {
                    pipe.close(&mut wire_out);
                    write(conn, &mut wire_out).await?;
                    return Ok(());
                }
            }
        }
        pipe.flush(&mut wire_out)?;
        write(conn, &mut wire_out).await?;
        // Compressed input already received is inflated (a bounded step at a time) before the
        // socket is read again, and only while the session wants input.
        if pipe.has_buffered_input() && session.wants_input() {
            pipe.inflate_buffered(&mut plain)?;
            deliver(session, &mut plain, now_ms());
            continue;
        }

        // Follow the account the session watches (IDLE / selected mailbox).
        let want = session.watched_account();
        if watched.as_ref().map(|w| w.0) != want {
            watched = want.map(|a| {
                let mut rx = shared.store.watch(a);
                rx.mark_unchanged();
                (a, rx)
            });
        }
        let timeout = session.next_timeout().map(|t| {
            let wait = t.saturating_sub(now_ms());
            tokio::time::Instant::now() + Duration::from_millis(wait)
        });
        let deadline = match (timeout, handshake_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // During a handshake the bytes are TLS's, not the session's: always read then.
        let wants_input =
            (session.wants_input() && !pipe.has_buffered_input()) || pipe.is_handshaking();
        let has_watch = watched.is_some();
        tokio::select! {
            (res, buf) = &mut read, if wants_input => {
                res?;
                if buf.is_empty() {
                    return Ok(()); // peer closed
                }
                let was_handshaking = pipe.is_handshaking();
                let result = pipe.input(&buf, &mut plain, &mut wire_out);
                if result.is_err() {
                    // Send the alert, if any, then give up.
                    let _ = write(conn, &mut wire_out).await;
                    return result;
                }
                if was_handshaking && !pipe.is_handshaking() {
                    handshake_deadline = None;
                    session.tls_established();
                }
                deliver(session, &mut plain, now_ms());
                read.set(conn.read(buf));
            }
            changed = async {
                match watched.as_mut() {
                    Some((_, rx)) => rx.changed().await,
                    None => std::future::pending().await,
                }
            }, if has_watch => {
                if changed.is_err() {
                    watched = None;
                } else {
                    session.account_changed(now_ms());
                }
            }
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            }, if deadline.is_some() => {
                if handshake_deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out"));
                }
                session.handle_timeout(now_ms());
            }
            else => {
                return Err(io::Error::other("session neither reads, watches nor waits"));
            }
        }
    }
}

/// Hands plaintext to the session and empties `plain` (freeing a large buffer).
fn deliver(session: &mut dyn Session, plain: &mut Vec<u8>, now_ms: u64) {
    if !plain.is_empty() {
        session.receive(plain, now_ms);
        plain.clear();
        if plain.capacity() > KEEP_BUFFER {
            *plain = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_clock_starts_at_wall_time_and_advances_monotonically() {
        // Started at an arbitrary wall time (as if the wall clock were stepped afterwards): the
        // session's time follows the monotonic clock from there, never the wall clock.
        let clock = SessionClock::starting_at(1_000_000);
        let a = clock.now_ms();
        std::thread::sleep(Duration::from_millis(30));
        let b = clock.now_ms();
        assert!((1_000_000..1_001_000).contains(&a), "{a}");
        assert!(b >= a + 30, "{a} {b}");
        assert!(b < 1_000_000 + 10_000, "{b}");
        let fresh = SessionClock::start().now_ms();
        assert!(fresh.abs_diff(now_ms()) < 1_000, "{fresh}");
    }
}
