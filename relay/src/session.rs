//! What every protocol session (SMTP, IMAP) offers its driver: the sans-I/O contract.
//!
//! A session is plain data: no socket, no clock, no thread. The driver (the `io` module, or a test)
//! feeds it plaintext with [`Session::receive`], drains reply bytes with [`Session::output`] /
//! [`Session::consume_output`], and asks [`Session::poll_action`] for what else must happen:
//! switch on TLS, run a slow effect (password hashing, a durable store write) and feed the result
//! back with [`Session::complete`], or close. While an effect is pending the session buffers
//! (bounded) input and produces nothing. Time comes in as `now_ms` (unix milliseconds).

use crate::store::{AccountId, Op, OpResult};

/// A password or other secret; its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Slow work the driver must run and report back with [`Session::complete`].
#[derive(Debug)]
pub enum Effect {
    /// Authenticate (and create on first login) an account: `accounts::login`.
    Login {
        /// Address as the client sent it.
        user: String,
        /// Password.
        password: Secret,
    },
    /// A durable store write.
    Commit(Op),
    /// Verify where an incoming message comes from (DKIM, `crate::dkim::verify_origin`). The
    /// message moves to the driver and back in [`EffectResult::Origin`].
    VerifyOrigin {
        /// The message as received (its `DKIM-Signature` fields included).
        message: Vec<u8>,
        /// The domain of its `From` address.
        from_domain: String,
    },
}

/// The outcome of an [`Effect`].
#[derive(Debug)]
pub enum EffectResult {
    /// Result of `Effect::Login`.
    Login(Result<AccountId, crate::accounts::LoginError>),
    /// Result of `Effect::Commit`.
    Commit(Result<OpResult, crate::store::Error>),
    /// Result of `Effect::VerifyOrigin`: the message handed back, and the verdict.
    Origin {
        /// The message of the effect.
        message: Vec<u8>,
        /// Whether it may be delivered.
        verdict: crate::dkim::Verdict,
    },
}

/// What the driver must do next, besides writing output.
#[derive(Debug)]
pub enum Action {
    /// Write all pending output in plaintext, then start the TLS handshake (STARTTLS). Input
    /// received after the command was already discarded by the session.
    StartTls,
    /// Write all pending output, then switch the stream to DEFLATE (RFC 4978 COMPRESS).
    StartCompress,
    /// Run this effect and call [`Session::complete`] with its result.
    Effect(Effect),
    /// Write all pending output, then close the connection.
    Close,
}

/// The driver-facing side of a protocol session.
pub trait Session {
    /// Feed plaintext received from the peer.
    fn receive(&mut self, input: &[u8], now_ms: u64);
    /// Reply bytes not yet written.
    fn output(&self) -> &[u8];
    /// `n` bytes of [`Session::output`] were written.
    fn consume_output(&mut self, n: usize);
    /// The next action, if any. Call until `None` after every input, completion or timeout.
    fn poll_action(&mut self) -> Option<Action>;
    /// The result of the last `Action::Effect`.
    fn complete(&mut self, result: EffectResult, now_ms: u64);
    /// The TLS handshake requested by `Action::StartTls` (or an implicit-TLS port's) finished.
    fn tls_established(&mut self);
    /// The account whose store changes this session wants to hear about (IMAP IDLE / selected).
    fn watched_account(&self) -> Option<AccountId> {
        None
    }
    /// The watched account changed in the store.
    fn account_changed(&mut self, _now_ms: u64) {}
    /// When [`Session::handle_timeout`] must be called next (unix ms), if ever.
    fn next_timeout(&self) -> Option<u64>;
    /// Time passed; the session may emit output (e.g. `* OK Still here`) or close.
    fn handle_timeout(&mut self, now_ms: u64);
    /// Whether the session can take more input now (false while an effect is pending or output is
    /// backed up); the driver stops reading while false.
    fn wants_input(&self) -> bool;
}
