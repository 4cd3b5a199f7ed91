//! The IMAP server session: a sans-I/O state machine (see `crate::session`).
//!
//! It frames and parses client input, answers reads synchronously from `shared.store`, turns every
//! write into `Action::Effect(Effect::Commit(op))` and answers `OK` only once the commit resolved.
//! While an effect is pending, further input stays buffered in the framer (bounded by
//! [`crate::session::Session::wants_input`]). It must never block, read a clock, or touch a
//! socket.
//!
//! # Organization
//!
//! - this file: the [`State`] enum, framing input into commands, the dispatch of each command to
//!   its handler (`execute`), output helpers and the driver-facing `crate::session::Session` impl;
//! - `super::handler`: one file per command family, each command's execution next to the
//!   completion of its effect;
//! - `super::sync`: the selected mailbox as the client knows it, and the untagged `EXPUNGE`,
//!   `EXISTS` and `FETCH` updates that report changes by others.

use std::collections::VecDeque;
use std::sync::Arc;

use super::command::{self, Command};
use super::frame::{Frame, Framer, Limits, LiteralUse};
use super::handler::{FetchJob, Pending};
use super::sync::Selected;
use crate::session::{Action, Effect, EffectResult};
use crate::shared::Shared;
use crate::store::{AccountId, MailboxId, Op};

/// Stop processing input while this much output waits.
pub(super) const OUTPUT_CAP: usize = 1024 * 1024;
/// Stop asking for input while this much unframed input is buffered.
const INPUT_CAP: usize = 256 * 1024;
/// Before login: stop processing input while this much output waits (the longest answer before
/// login, CAPABILITY, is a few hundred bytes).
pub(super) const PREAUTH_OUTPUT_CAP: usize = 16 * 1024;
/// Before login: stop asking for input while this much unframed input is buffered (a line at
/// the pre-login cap must fit, or it could never complete).
pub(super) const PREAUTH_INPUT_CAP: usize = super::frame::PREAUTH_LINE_CAP + 1024;
/// What an unauthenticated session may hold in its own buffers, in the worst case: unframed input
/// (the cap plus one read of up to `io::READ_SIZE` = 16 KiB), the command being framed (lines and
/// literal, see [`Limits::before_login`]) and queued output (the cap plus one answer). TLS
/// buffers (rustls) come on top; COMPRESS needs a login. About 33 + 16 KiB of input, 64 + 8 KiB
/// of command and 17 KiB of output today.
pub const PREAUTH_BUDGET: usize = 160 * 1024;
/// Unauthenticated connections are closed after this much silence.
const PREAUTH_TIMEOUT_MS: u64 = 60_000;
/// Authenticated connections not in IDLE are closed after this much silence.
const AUTH_TIMEOUT_MS: u64 = 30 * 60_000;
/// A connection must have logged in this long after it was opened, however busy it keeps the
/// line: a client trickling a byte a minute cannot hold a pre-login connection (and its budget)
/// for hours. Generous for slow mobile networks (a login takes a few round trips).
pub const PRELOGIN_DEADLINE_MS: u64 = 3 * 60_000;

/// The logged-in user; every state after login carries it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Auth {
    pub(super) account: AccountId,
    /// CONDSTORE was enabled (RFC 7162 §3.1): by ENABLE, `SELECT (CONDSTORE)` or a command that
    /// uses mod-sequences.
    pub(super) condstore: bool,
}

/// An IDLE in progress (RFC 2177).
#[derive(Debug)]
pub(super) struct Idle {
    /// The IDLE command's tag, answered after `DONE`.
    pub(super) tag: String,
    /// When the next `* OK Still here` is due (unix ms).
    pub(super) ping_at: u64,
    /// Counts the session in the IDLE gauge of the metrics while it idles.
    pub(super) _counted: crate::metrics::Open,
}

/// The session's protocol state (RFC 3501 §3 and the waits inside it). Each variant carries the
/// data that state needs, so a mailbox selected without a login cannot be written down.
#[derive(Debug)]
pub(super) enum State {
    /// Not logged in.
    NotAuthenticated,
    /// STARTTLS answered; input is discarded until `tls_established`.
    StartingTls,
    /// AUTHENTICATE PLAIN waits for the client's response line.
    Authenticating {
        /// The AUTHENTICATE command's tag.
        tag: String,
    },
    /// Logged in, no mailbox selected.
    Authenticated(Auth),
    /// Logged in, a mailbox selected.
    Selected(Auth, Selected),
    /// In IDLE from one of the two states above (with its mailbox, if one was selected),
    /// waiting for `DONE`.
    Idle(Auth, Option<Selected>, Idle),
    /// Logged out or closed: nothing more is read or answered.
    Logout,
}

impl State {
    /// The login, in every state after it.
    pub(super) fn auth(&self) -> Option<&Auth> {
        match self {
            State::Authenticated(a) | State::Selected(a, _) | State::Idle(a, _, _) => Some(a),
            State::NotAuthenticated
            | State::StartingTls
            | State::Authenticating { .. }
            | State::Logout => None,
        }
    }

    fn auth_mut(&mut self) -> Option<&mut Auth> {
        match self {
            State::Authenticated(a) | State::Selected(a, _) | State::Idle(a, _, _) => Some(a),
            State::NotAuthenticated
            | State::StartingTls
            | State::Authenticating { .. }
            | State::Logout => None,
        }
    }

    /// The logged-in account.
    pub(super) fn account(&self) -> Option<AccountId> {
        self.auth().map(|a| a.account)
    }

    /// Whether CONDSTORE is enabled.
    pub(super) fn condstore(&self) -> bool {
        self.auth().is_some_and(|a| a.condstore)
    }

    /// Enable CONDSTORE (RFC 7162 §3.1); nothing before login.
    pub(super) fn enable_condstore(&mut self) {
        if let Some(a) = self.auth_mut() {
            a.condstore = true;
        }
    }

    /// The selected mailbox (also while idling in it).
    pub(super) fn selected(&self) -> Option<&Selected> {
        match self {
            State::Selected(_, s) | State::Idle(_, Some(s), _) => Some(s),
            _ => None,
        }
    }

    /// The selected mailbox, mutably.
    pub(super) fn selected_mut(&mut self) -> Option<&mut Selected> {
        match self {
            State::Selected(_, s) | State::Idle(_, Some(s), _) => Some(s),
            _ => None,
        }
    }

    /// Select `sel` (or deselect with `None`), keeping the login and any IDLE.
    pub(super) fn set_selected(&mut self, sel: Option<Selected>) {
        *self = match std::mem::replace(self, State::Logout) {
            State::Authenticated(a) | State::Selected(a, _) => match sel {
                Some(s) => State::Selected(a, s),
                None => State::Authenticated(a),
            },
            State::Idle(a, _, idle) => State::Idle(a, sel, idle),
            other => other,
        };
    }
}

/// What keeps the session from reading the next command.
#[derive(Debug)]
pub(super) enum Blocked {
    /// An effect was asked for; its result goes to the handler that asked (see [`Pending`]).
    Effect(Pending),
    /// A FETCH paused at the output cap, resumed once the driver drained the output.
    Fetch(FetchJob),
}

/// The state a command may run in (RFC 3501 §6.1–§6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Any state.
    Any,
    /// Before login only.
    NotAuthenticated,
    /// After login.
    Authenticated,
    /// With a mailbox selected.
    Selected,
}

impl Need {
    fn of(cmd: &Command) -> Need {
        match cmd {
            Command::Capability | Command::Noop | Command::Logout | Command::Id => Need::Any,
            Command::StartTls | Command::Login(..) | Command::Authenticate(..) => {
                Need::NotAuthenticated
            }
            Command::Enable(_)
            | Command::Namespace
            | Command::Compress(_)
            | Command::List { .. }
            | Command::Status(..)
            | Command::Create(_)
            | Command::Delete(_)
            | Command::Rename(..)
            | Command::Subscribe(..)
            | Command::Select { .. }
            | Command::Append { .. }
            | Command::Idle
            | Command::GetQuotaRoot(_)
            | Command::GetQuota(_)
            | Command::GetMetadata { .. }
            | Command::SetMetadata { .. } => Need::Authenticated,
            Command::Check
            | Command::Unselect
            | Command::Close
            | Command::Expunge(_)
            | Command::Fetch { .. }
            | Command::Store { .. }
            | Command::Search { .. }
            | Command::Copy { .. } => Need::Selected,
        }
    }
}

/// The selected mailbox a command in the selected state works on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Open {
    pub(super) account: AccountId,
    pub(super) mailbox: MailboxId,
    pub(super) read_only: bool,
}

/// An IMAP server session.
pub struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) tls: bool,
    pub(super) compress: bool,
    pub(super) framer: Framer,
    pub(super) out: Vec<u8>,
    /// Bytes of `out` already written.
    pub(super) out_start: usize,
    pub(super) actions: VecDeque<Action>,
    pub(super) state: State,
    pub(super) blocked: Option<Blocked>,
    pub(super) now: u64,
    pub(super) last_activity: u64,
    /// When the connection opened ([`PRELOGIN_DEADLINE_MS`] counts from here).
    pub(super) opened: u64,
    /// Failed logins on this connection; the connection closes at the limit.
    pub(super) failed_logins: crate::throttle::ConnectionFailures,
}

impl Session {
    /// The session's current time in unix seconds.
    pub(super) fn now_unix(&self) -> i64 {
        i64::try_from(self.now / 1000).unwrap_or(i64::MAX)
    }

    /// A new session. `tls_active` is true on the implicit-TLS port.
    pub fn new(shared: Arc<Shared>, tls_active: bool, now_ms: u64) -> Self {
        let mut s = Self {
            shared,
            tls: tls_active,
            compress: false,
            framer: Framer::with_limits(Limits::before_login(literal_use_before_login)),
            out: Vec::new(),
            out_start: 0,
            actions: VecDeque::new(),
            state: State::NotAuthenticated,
            blocked: None,
            now: now_ms,
            last_activity: now_ms,
            opened: now_ms,
            failed_logins: Default::default(),
        };
        let greeting = format!(
            "* OK [CAPABILITY {}] {} chatmail relay ready\r\n",
            s.capabilities(),
            s.shared.config.mail_domain
        );
        s.out.extend_from_slice(greeting.as_bytes());
        s
    }

    pub(super) fn line(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    pub(super) fn tagged(&mut self, tag: &str, rest: &str) {
        self.line(&format!("{tag} {rest}"));
    }

    /// Report changes (EXPUNGE allowed if `allow_expunge`), then the tagged line.
    pub(super) fn finish(&mut self, tag: &str, text: &str, allow_expunge: bool) {
        self.sync(allow_expunge);
        self.tagged(tag, text);
    }

    pub(super) fn effect(&mut self, effect: Effect, pending: Pending) {
        self.actions.push_back(Action::Effect(effect));
        self.blocked = Some(Blocked::Effect(pending));
    }

    pub(super) fn commit(&mut self, op: Op, pending: Pending) {
        self.effect(Effect::Commit(op), pending);
    }

    pub(super) fn close(&mut self) {
        self.state = State::Logout;
        self.actions.push_back(Action::Close);
    }

    fn is_closed(&self) -> bool {
        matches!(self.state, State::Logout)
    }

    pub(super) fn output_backed_up(&self) -> bool {
        let cap = if self.state.auth().is_some() {
            OUTPUT_CAP
        } else {
            PREAUTH_OUTPUT_CAP
        };
        self.out.len() - self.out_start > cap
    }

    /// The framing caps of the current state: a few KiB and no APPEND before login.
    fn frame_limits(&self) -> Limits {
        if self.state.auth().is_some() {
            Limits::after_login(self.shared.config.max_message_size)
        } else {
            Limits::before_login(literal_use_before_login)
        }
    }

    /// Before login, input that had to be dropped unread (a `LITERAL+` literal over its cap or
    /// on a command not allowed yet, an overlong line) ends the connection instead: reading
    /// megabytes for an unauthenticated client is what the caps are there to prevent.
    fn refuse_unread(&mut self) {
        self.line("* BYE Too much data before login");
        self.framer.discard_buffered();
        self.close();
    }

    /// Bytes this session holds in its buffers (capacities): input being framed and output not
    /// yet written. Before login this stays under [`PREAUTH_BUDGET`].
    pub fn held_bytes(&self) -> usize {
        self.framer.held() + self.out.capacity()
    }

    /// Frame and run buffered commands until blocked.
    fn process(&mut self) {
        loop {
            if matches!(self.blocked, Some(Blocked::Fetch(_))) {
                if self.output_backed_up() || self.is_closed() {
                    return;
                }
                if let Some(Blocked::Fetch(job)) = self.blocked.take() {
                    self.run_fetch(job);
                }
                continue;
            }
            if self.blocked.is_some()
                || self.is_closed()
                || matches!(self.state, State::StartingTls)
                || self.output_backed_up()
            {
                return;
            }
            let raw = matches!(self.state, State::Idle(..) | State::Authenticating { .. });
            let limits = self.frame_limits();
            self.framer.set_limits(limits);
            let Some(frame) = self.framer.next(raw) else {
                return;
            };
            self.last_activity = self.now;
            match frame {
                Frame::Continue => self.line("+ Ready for literal data"),
                Frame::Line(line) => self.raw_line(&line),
                Frame::TooBig { tag, append, sync } => {
                    let tag = tag_text(&tag);
                    if append {
                        self.tagged(&tag, "NO [TOOBIG] Message too large");
                    } else {
                        self.tagged(&tag, "BAD Literal too large");
                    }
                    if !sync && limits.refuse_early {
                        self.refuse_unread();
                    }
                }
                Frame::LiteralNotAllowed { tag, sync } => {
                    // Only before login does a command have no literals: it needs a login.
                    let tag = tag_text(&tag);
                    self.tagged(&tag, "BAD Please log in first");
                    if !sync && limits.refuse_early {
                        self.refuse_unread();
                    }
                }
                Frame::LineTooLong { tag } => {
                    // An AUTHENTICATE response line is answered with the command's tag.
                    let tag = match std::mem::replace(&mut self.state, State::NotAuthenticated) {
                        State::Authenticating { tag } => tag,
                        other => {
                            self.state = other;
                            tag_text(&tag)
                        }
                    };
                    self.tagged(&tag, "BAD Line too long");
                    if limits.refuse_early {
                        self.refuse_unread();
                    }
                }
                Frame::Command(bytes) => match command::parse(&bytes) {
                    Ok((tag, cmd)) => self.execute(tag, cmd),
                    Err(e) => {
                        let tag = e.tag.unwrap_or_else(|| "*".into());
                        self.tagged(
                            &tag,
                            &format!("BAD Error in IMAP command: expected {}", e.expected),
                        );
                    }
                },
            }
        }
    }

    /// A line read in IDLE or during AUTHENTICATE.
    fn raw_line(&mut self, line: &[u8]) {
        match self.state {
            State::Idle(..) => self.idle_line(line),
            State::Authenticating { .. } => self.authenticate_line(line),
            _ => {}
        }
    }

    /// Run one command: refuse it if the state does not allow it, else hand it to its handler.
    fn execute(&mut self, tag: String, cmd: Command) {
        let account = match (Need::of(&cmd), self.state.account()) {
            (Need::Any, _) | (Need::NotAuthenticated, None) => {
                return self.execute_any(tag, cmd);
            }
            (Need::NotAuthenticated, Some(_)) => {
                return self.tagged(&tag, "BAD Already logged in");
            }
            (Need::Authenticated | Need::Selected, None) => {
                return self.tagged(&tag, "BAD Please log in first");
            }
            (Need::Selected, Some(account)) => {
                let Some(sel) = self.state.selected() else {
                    return self.tagged(&tag, "BAD No mailbox selected");
                };
                let open = Open {
                    account,
                    mailbox: sel.id,
                    read_only: sel.read_only,
                };
                return self.execute_selected(open, tag, cmd);
            }
            (Need::Authenticated, Some(account)) => account,
        };
        match cmd {
            Command::Enable(caps) => self.enable(&tag, caps),
            Command::Namespace => self.namespace(&tag),
            Command::Compress(mech) => self.compress(&tag, &mech),
            Command::List {
                lsub,
                reference,
                pattern,
            } => self.list(account, &tag, lsub, &reference, &pattern),
            Command::Status(name, items) => self.status(account, &tag, &name, &items),
            Command::Create(name) => self.create(account, tag, &name),
            Command::Delete(name) => self.delete(account, tag, &name),
            Command::Rename(from, to) => self.rename(account, tag, &from, &to),
            Command::Subscribe(name, subscribed) => self.subscribe(account, tag, name, subscribed),
            Command::Select {
                mailbox,
                read_only,
                condstore,
            } => self.select(account, &tag, &mailbox, read_only, condstore),
            Command::Append {
                mailbox,
                flags,
                date,
                message,
            } => self.append(account, tag, &mailbox, flags, date, message),
            Command::Idle => self.idle(tag),
            Command::GetQuotaRoot(mailbox) => self.get_quota_root(account, &tag, &mailbox),
            Command::GetQuota(root) => self.get_quota(account, &tag, &root),
            Command::GetMetadata {
                mailbox,
                max_size,
                entries,
            } => self.get_metadata(account, &tag, &mailbox, max_size, &entries),
            Command::SetMetadata { mailbox, entries } => {
                self.set_metadata(account, tag, &mailbox, entries)
            }
            _ => self.tagged(&tag, "BAD Unexpected command"),
        }
    }

    /// Commands valid in any state, and those valid before login.
    fn execute_any(&mut self, tag: String, cmd: Command) {
        match cmd {
            Command::Capability => self.capability(&tag),
            Command::Noop => self.finish(&tag, "OK NOOP completed", true),
            Command::Logout => self.logout(&tag),
            Command::Id => self.id(&tag),
            Command::StartTls => self.starttls(&tag),
            Command::Login(user, pass) => self.login(tag, user, pass),
            Command::Authenticate(mech, initial) => self.authenticate(tag, &mech, initial),
            _ => self.tagged(&tag, "BAD Unexpected command"),
        }
    }

    /// Commands of the selected state.
    fn execute_selected(&mut self, open: Open, tag: String, cmd: Command) {
        match cmd {
            Command::Fetch { .. } => self.fetch(open, tag, cmd),
            Command::Check => self.finish(&tag, "OK Check completed", true),
            Command::Unselect => self.unselect(&tag),
            Command::Close => self.close_mailbox(open, tag),
            Command::Expunge(set) => self.expunge(open, tag, set.as_ref()),
            Command::Store { .. } => self.store(open, tag, cmd),
            Command::Search { uid, key } => self.search(open.account, &tag, uid, &key),
            Command::Copy {
                uid,
                is_move,
                set,
                mailbox,
            } => self.copy(open, tag, uid, is_move, &set, &mailbox),
            _ => self.tagged(&tag, "BAD Unexpected command"),
        }
    }
}

impl crate::session::Session for Session {
    fn receive(&mut self, input: &[u8], now_ms: u64) {
        self.now = now_ms;
        if self.is_closed() || matches!(self.state, State::StartingTls) {
            // Plaintext after STARTTLS (or after close) is discarded.
            return;
        }
        if !input.is_empty() {
            self.last_activity = now_ms;
        }
        self.framer.push(input);
        self.process();
        self.framer.shrink_idle();
    }

    fn output(&self) -> &[u8] {
        &self.out[self.out_start..]
    }

    fn consume_output(&mut self, n: usize) {
        self.out_start = (self.out_start + n).min(self.out.len());
        if self.out_start == self.out.len() {
            self.out.clear();
            self.out_start = 0;
            // A large FETCH grew the buffer; an idle session should not keep that.
            if self.out.capacity() > 4 * 1024 {
                self.out = Vec::new();
            }
        } else if self.out_start > 64 * 1024 && self.out_start * 2 > self.out.len() {
            // Compact now and then instead of on every partial write.
            self.out.drain(..self.out_start);
            self.out_start = 0;
        }
        self.process();
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn complete(&mut self, result: EffectResult, now_ms: u64) {
        self.now = now_ms;
        let pending = match self.blocked.take() {
            Some(Blocked::Effect(pending)) => pending,
            other => {
                self.blocked = other;
                tracing::error!("effect result without a pending effect");
                return;
            }
        };
        self.completed(pending, result);
        self.process();
    }

    fn tls_established(&mut self) {
        self.tls = true;
        if matches!(self.state, State::StartingTls) {
            self.state = State::NotAuthenticated;
        }
        self.process();
    }

    fn watched_account(&self) -> Option<AccountId> {
        self.state.account()
    }

    fn account_changed(&mut self, now_ms: u64) {
        self.now = now_ms;
        if matches!(self.state, State::Idle(..)) && self.blocked.is_none() {
            self.sync(true);
        }
    }

    fn next_timeout(&self) -> Option<u64> {
        if self.is_closed() || matches!(self.blocked, Some(Blocked::Effect(_))) {
            return None;
        }
        if let State::Idle(_, _, idle) = &self.state {
            return Some(idle.ping_at);
        }
        if self.state.auth().is_some() {
            Some(self.last_activity + AUTH_TIMEOUT_MS)
        } else {
            Some((self.last_activity + PREAUTH_TIMEOUT_MS).min(self.opened + PRELOGIN_DEADLINE_MS))
        }
    }

    fn handle_timeout(&mut self, now_ms: u64) {
        self.now = now_ms;
        let Some(at) = self.next_timeout() else {
            return;
        };
        if now_ms < at {
            return;
        }
        if matches!(self.state, State::Idle(..)) {
            self.idle_ping(now_ms);
        } else if self.state.auth().is_none() && now_ms >= self.opened + PRELOGIN_DEADLINE_MS {
            self.line("* BYE Login timed out.");
            self.close();
        } else {
            self.line("* BYE Disconnected for inactivity.");
            self.close();
        }
    }

    fn wants_input(&self) -> bool {
        !self.is_closed()
            && !matches!(self.state, State::StartingTls)
            && !matches!(self.blocked, Some(Blocked::Effect(_)))
            && !self.output_backed_up()
            && self.framer.buffered()
                <= if self.state.auth().is_some() {
                    INPUT_CAP
                } else {
                    PREAUTH_INPUT_CAP
                }
    }
}

/// Which commands may carry literals before login: LOGIN's arguments, ID's parameters and
/// AUTHENTICATE (whose response is a line, but a literal must not slip through there either),
/// each within the small pre-login caps. Every other command needs a login
/// (see [`Need::of`]), so its literal is refused before it is read.
fn literal_use_before_login(name: &[u8]) -> LiteralUse {
    const ALLOWED: [&[u8]; 3] = [b"LOGIN", b"AUTHENTICATE", b"ID"];
    if ALLOWED.iter().any(|c| name.eq_ignore_ascii_case(c)) {
        LiteralUse::Small
    } else {
        LiteralUse::Refused
    }
}

/// The tag of a command that could not be framed, or `*`.
fn tag_text(tag: &[u8]) -> String {
    match std::str::from_utf8(tag) {
        Ok(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()) => t.to_owned(),
        _ => "*".to_owned(),
    }
}
