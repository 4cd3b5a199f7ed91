//! The SMTP server state machine (RFC 5321, 3207 STARTTLS, 4954 AUTH, 2920 PIPELINING, 1870 SIZE).
//!
//! # Implementation notes
//! - Sans-I/O: bytes in through `receive`, reply bytes out through `output`, everything
//!   slow (password check, durable write) as an [`Effect`] the driver runs and reports back. No
//!   clock: time comes in as `now_ms`.
//! - `250` after DATA is sent only once the store reported the delivery durable
//!   (`EffectResult::Commit(Ok(OpResult::Delivered(..)))`). Nothing is ever accepted and dropped:
//!   recipients in other domains are refused at RCPT.
//! - Port 25: a message the encryption gate lets through (cleartext is refused before any DNS
//!   work) is first handed to the driver for origin verification (`Effect::VerifyOrigin`, DKIM
//!   with strict alignment, chatmail.md §3.5 step 6); only a passing verdict leads to the write,
//!   otherwise `554 5.7.1` or, if DNS failed for now, `451`. `From` domain literals skip it.
//! - One receiver owns the next input bytes at any time: command lines, the AUTH response line,
//!   or DATA ([`super::frame`]). A bare LF anywhere closes the connection with `521`.
//! - STARTTLS discards every byte received after the command line (RFC 3207 §6, command
//!   injection) and forgets HELO, AUTH and the transaction (RFC 3207 §4.2).
//! - Input is processed only while no effect is pending and the output is not backed up; then
//!   `wants_input` is false and pipelined input waits (bounded) in a buffer.
//! - No header is added to messages; in particular nothing carrying the peer's IP.
//! - After [`crate::throttle::MAX_FAILED_LOGINS`] failed AUTHs the session says `421` and closes
//!   (the driver holds each failure reply for the login throttle's delay).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;

use super::command::{parse_command, Command, ParseError};
use super::frame::{DataEnd, DataReceiver, LineEvent, LineReceiver};
use super::reply::{self, Reply};
use super::Mode;
use crate::accounts::LoginError;
use crate::policy::{self, Envelope};
use crate::session::{Action, Effect, EffectResult, Secret};
use crate::shared::Shared;
use crate::store::{self, AccountId, Op, OpResult};

/// Silence after which the session says `421` and closes (RFC 5321 §4.5.3.2.7: at least 5
/// minutes for the server).
pub const IDLE_TIMEOUT_MS: u64 = 5 * 60 * 1000;
/// A submission connection must have authenticated this long after it was opened, however busy
/// it keeps the line (a trickle of bytes resets only the idle timeout).
pub const PREAUTH_DEADLINE_MS: u64 = 3 * 60 * 1000;
/// Recipients per transaction (RFC 5321 §4.5.3.1.8 requires at least 100; Postfix default 1000,
/// advertised by the reference as `maxsmtprecipients`).
pub const MAX_RECIPIENTS: usize = 1000;
/// Failed commands after which the session says `421` and closes (Postfix
/// `smtpd_hard_error_limit`).
pub const MAX_ERRORS: u32 = 20;
/// Reply bytes not yet written above which input processing pauses.
pub const MAX_OUTPUT_BACKLOG: usize = 64 * 1024;
/// Buffered unprocessed input above which the session gives up (the driver ignored
/// `wants_input`).
pub const MAX_BUFFERED_INPUT: usize = 1024 * 1024;

/// Whether `domain` (lowercase) can take mail from us: an address literal (`[192.0.2.1]`,
/// `[IPv6:…]`) or a DNS name of at least two labels of letters, digits, `-` and `_` (chatmail's
/// `_`-names), whose last label is not all digits (a bare IP address is not a domain, RFC 5321
/// §4.1.3).
fn is_remote_domain(domain: &str) -> bool {
    use crate::outbound::mx::{destination, Destination};
    if domain.starts_with('[') {
        return matches!(destination(domain), Ok(Destination::Literal(_)));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && labels
            .last()
            .is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()))
}

/// Which receiver owns the next input bytes.
#[derive(Debug)]
enum Receiver {
    /// Command lines.
    Command,
    /// The response line after `334` (RFC 4954 §4).
    AuthResponse,
    /// The message after `354`.
    Data(DataReceiver),
}

/// A mail transaction between MAIL and the end of DATA (RFC 5321 §3.3).
#[derive(Debug)]
struct Transaction {
    /// Reverse path, lowercase, empty for `<>`.
    mail_from: String,
    /// Accepted recipients' account addresses, lowercase, one per distinct account.
    rcpt_to: Vec<String>,
    /// Their accounts, parallel to `rcpt_to`.
    accounts: Vec<AccountId>,
    /// Recipients on other domains (submission only), grouped by destination domain (lowercase),
    /// each address once.
    remote: Vec<(String, Vec<String>)>,
    /// RCPT commands answered `250` (duplicates included).
    accepted: usize,
    /// Whether any RCPT was attempted.
    rcpt_seen: bool,
}

/// The effect the session waits for.
#[derive(Debug)]
enum Pending {
    Login {
        user: String,
    },
    Deliver {
        recipients: Vec<AccountId>,
    },
    /// A submission with recipients on other domains: queued (and delivered to the local ones)
    /// in one `Op::Group`.
    Submit {
        recipients: Vec<AccountId>,
    },
    /// Origin verification (DKIM) of an incoming message, before its delivery.
    Origin {
        recipients: Vec<AccountId>,
    },
}

/// An SMTP server session on one connection. See the module docs.
pub struct Session {
    shared: Arc<Shared>,
    mode: Mode,
    tls_active: bool,
    /// The client's address: for logs only, never written into a message.
    peer: IpAddr,
    out: Vec<u8>,
    /// Input not processed yet (pipelined while blocked, or an incomplete line).
    inbuf: Vec<u8>,
    lines: LineReceiver,
    receiver: Receiver,
    /// HELO or EHLO was accepted since the start or the last STARTTLS.
    greeted: bool,
    /// The authenticated address, lowercase.
    login: Option<String>,
    tx: Option<Transaction>,
    pending: Option<Pending>,
    actions: VecDeque<Action>,
    errors: u32,
    auth_failures: crate::throttle::ConnectionFailures,
    last_activity_ms: u64,
    /// When the connection opened ([`PREAUTH_DEADLINE_MS`] counts from here).
    opened_ms: u64,
    now_ms: u64,
    /// `Action::StartTls` was issued and the handshake has not finished: plaintext is discarded.
    awaiting_tls: bool,
    closed: bool,
}

impl Session {
    /// A new session; the greeting is already in the output.
    pub fn new(
        shared: Arc<Shared>,
        mode: Mode,
        tls_active: bool,
        peer: IpAddr,
        now_ms: u64,
    ) -> Session {
        let mut session = Session {
            shared,
            mode,
            tls_active,
            peer,
            out: Vec::new(),
            inbuf: Vec::new(),
            lines: LineReceiver::default(),
            receiver: Receiver::Command,
            greeted: false,
            login: None,
            tx: None,
            pending: None,
            actions: VecDeque::new(),
            errors: 0,
            auth_failures: Default::default(),
            last_activity_ms: now_ms,
            opened_ms: now_ms,
            now_ms,
            awaiting_tls: false,
            closed: false,
        };
        let greeting = reply::greeting(&session.shared.config.mail_domain);
        session.reply(greeting);
        session
    }

    fn domain(&self) -> &str {
        &self.shared.config.mail_domain
    }

    fn reply(&mut self, reply: Reply) {
        reply.encode(&mut self.out);
    }

    /// The reply that settles a message (end of DATA, or a refusal that ends its transaction),
    /// counted by its code in the relay's metrics.
    fn message_reply(&mut self, reply: Reply) {
        let path = match self.mode {
            Mode::Submission => crate::metrics::Path::Submission,
            Mode::Mx => crate::metrics::Path::Mx,
        };
        self.shared.metrics.message(path, reply.code);
        self.reply(reply);
    }

    /// A failed command: reply and count it; too many close the session.
    fn fail(&mut self, reply: Reply) {
        self.reply(reply);
        self.errors += 1;
        if self.errors >= MAX_ERRORS && !self.closed {
            tracing::info!(peer = %crate::redact::ip(self.peer), "smtp: too many errors, closing");
            let bye = reply::too_many_errors(self.domain());
            self.close_with(bye);
        }
    }

    /// A failed authentication: `535`, and `421` and close after too many on this connection.
    fn auth_failed(&mut self) {
        self.fail(reply::auth_failed());
        if self.auth_failures.record() && !self.closed {
            tracing::info!(peer = %crate::redact::ip(self.peer), "smtp: too many failed authentication attempts");
            let bye = Reply::new(
                421,
                format!(
                    "4.7.0 {} Error: too many failed authentication attempts",
                    self.domain()
                ),
            );
            self.close_with(bye);
        }
    }

    fn close_with(&mut self, reply: Reply) {
        self.reply(reply);
        self.close();
    }

    fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.receiver = Receiver::Command;
            self.inbuf = Vec::new();
            self.actions.push_back(Action::Close);
        }
    }

    fn is_blocked(&self) -> bool {
        self.pending.is_some() || self.out.len() >= MAX_OUTPUT_BACKLOG
    }

    /// Processes buffered input as far as the state allows.
    fn process_buffered(&mut self) {
        if self.inbuf.is_empty() || self.closed || self.is_blocked() {
            return;
        }
        let buf = std::mem::take(&mut self.inbuf);
        let n = self.consume(&buf);
        if !self.closed && !self.awaiting_tls {
            self.inbuf = buf;
            self.inbuf.drain(..n);
        }
    }

    /// Processes as much of `buf` as the state allows and returns the bytes consumed. Once the
    /// session is closed or has started STARTTLS, the rest counts as consumed (discarded).
    fn consume(&mut self, buf: &[u8]) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            if self.closed || self.awaiting_tls {
                return buf.len();
            }
            if self.is_blocked() {
                break;
            }
            let rest = &buf[pos..];
            if let Receiver::Data(rx) = &mut self.receiver {
                let (n, end) = rx.feed(rest);
                pos += n;
                match end {
                    Some(DataEnd::Complete) => self.data_complete(),
                    Some(DataEnd::BareLf) => self.bare_lf(),
                    None => {}
                }
                continue;
            }
            let (n, event) = self.lines.next(rest);
            pos += n;
            match event {
                Some(LineEvent::Line(line)) => {
                    if matches!(self.receiver, Receiver::AuthResponse) {
                        self.receiver = Receiver::Command;
                        self.auth_response(line);
                    } else {
                        self.command(line);
                    }
                }
                Some(LineEvent::TooLong) => {
                    self.receiver = Receiver::Command;
                    self.fail(reply::line_too_long());
                }
                Some(LineEvent::BareLf) => self.bare_lf(),
                None if n == 0 => break,
                None => {}
            }
        }
        if self.closed || self.awaiting_tls {
            buf.len()
        } else {
            pos
        }
    }

    fn bare_lf(&mut self) {
        tracing::info!(peer = %crate::redact::ip(self.peer), "smtp: bare LF received, closing");
        self.tx = None;
        let reply = reply::bare_lf(self.domain());
        self.close_with(reply);
    }

    fn command(&mut self, line: &[u8]) {
        let command = match parse_command(line) {
            Ok(command) => command,
            Err(error) => {
                let reply = match error {
                    ParseError::Unknown => reply::unknown_command(),
                    ParseError::Syntax(grammar) => reply::syntax(grammar),
                    ParseError::UnsupportedParameter => reply::unsupported_parameter(),
                    ParseError::BadSender => reply::bad_sender_syntax(),
                    ParseError::BadRecipient => reply::bad_recipient_syntax(),
                };
                return self.fail(reply);
            }
        };
        match command {
            Command::Ehlo(_) => self.ehlo(true),
            Command::Helo(_) => self.ehlo(false),
            Command::Mail { from, size } => self.mail(&from, size),
            Command::Rcpt { to } => self.rcpt(&to),
            Command::Data => self.data(),
            Command::Rset => {
                self.tx = None;
                self.reply(reply::ok());
            }
            Command::Noop => self.reply(reply::ok()),
            Command::Quit => self.close_with(reply::bye()),
            Command::Vrfy => self.reply(reply::cannot_vrfy()),
            Command::Help => self.reply(reply::help()),
            Command::StartTls => self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(&mechanism, initial),
            Command::NotImplemented(_) => self.fail(reply::not_implemented()),
        }
    }

    /// RFC 5321 §4.1.1.1; EHLO also resets the transaction (§4.1.4).
    fn ehlo(&mut self, extended: bool) {
        self.tx = None;
        self.greeted = true;
        if !extended {
            let reply = reply::helo(self.domain());
            return self.reply(reply);
        }
        let mut keywords: Vec<std::borrow::Cow<'static, str>> = vec!["PIPELINING".into()];
        keywords.push(format!("SIZE {}", self.shared.config.max_message_size).into());
        if !self.tls_active {
            keywords.push("STARTTLS".into());
        }
        if self.mode == Mode::Submission && self.tls_active {
            // RFC 4954 §4, Postfix `smtpd_tls_auth_only`: never offered in plaintext.
            keywords.push("AUTH PLAIN".into());
        }
        keywords.push("ENHANCEDSTATUSCODES".into());
        keywords.push("8BITMIME".into());
        let reply = reply::ehlo(self.domain(), keywords);
        self.reply(reply);
    }

    fn starttls(&mut self) {
        if self.tls_active {
            return self.fail(reply::tls_already_active());
        }
        self.reply(reply::ready_to_start_tls());
        self.actions.push_back(Action::StartTls);
        self.awaiting_tls = true;
        // RFC 3207 §4.2: forget everything learnt before TLS.
        self.greeted = false;
        self.login = None;
        self.tx = None;
    }

    fn auth(&mut self, mechanism: &str, initial: Option<&str>) {
        if self.mode == Mode::Mx {
            return self.fail(reply::auth_not_enabled());
        }
        if !self.tls_active {
            return self.fail(reply::must_starttls());
        }
        if !self.greeted {
            return self.fail(reply::need_helo());
        }
        if self.login.is_some() {
            return self.fail(reply::already_authenticated());
        }
        if self.tx.is_some() {
            return self.fail(reply::auth_in_transaction());
        }
        if mechanism != "PLAIN" {
            return self.fail(reply::unsupported_mechanism());
        }
        match initial {
            Some(response) => self.auth_response(response.as_bytes()),
            None => {
                self.reply(reply::auth_continue());
                self.receiver = Receiver::AuthResponse;
            }
        }
    }

    /// RFC 4616 §2: `[authzid] NUL authcid NUL passwd`, base64 (RFC 4954 §4).
    fn auth_response(&mut self, response: &[u8]) {
        if response == b"*" {
            return self.fail(reply::auth_aborted());
        }
        let decoded = if response == b"=" {
            Vec::new()
        } else {
            match base64::engine::general_purpose::STANDARD.decode(response) {
                Ok(decoded) => decoded,
                Err(_) => return self.fail(reply::auth_malformed()),
            }
        };
        let mut parts = decoded.split(|&b| b == 0).map(std::str::from_utf8);
        let (Some(Ok(authzid)), Some(Ok(user)), Some(Ok(password)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return self.fail(reply::auth_malformed());
        };
        if user.is_empty()
            || password.is_empty()
            || (!authzid.is_empty() && !authzid.eq_ignore_ascii_case(user))
        {
            return self.auth_failed();
        }
        self.pending = Some(Pending::Login {
            user: user.to_owned(),
        });
        self.actions.push_back(Action::Effect(Effect::Login {
            user: user.to_owned(),
            password: Secret(password.to_owned()),
        }));
    }

    fn login_done(&mut self, user: &str, result: Result<AccountId, LoginError>) {
        match result {
            Ok(account) => {
                let addr = self
                    .shared
                    .store
                    .account_by_id(account)
                    .map(|info| info.addr)
                    .unwrap_or_else(|| user.to_ascii_lowercase());
                self.login = Some(addr);
                self.reply(reply::auth_ok());
            }
            Err(LoginError::Failed) => self.auth_failed(),
            Err(LoginError::TryLater(why)) => {
                tracing::info!(why, "smtp: login refused for now");
                self.reply(reply::auth_temporary());
            }
            Err(LoginError::Internal) => self.reply(reply::auth_temporary()),
        }
    }

    fn mail(&mut self, from: &str, size: Option<u64>) {
        if !self.tls_active {
            return self.fail(reply::must_starttls());
        }
        if !self.greeted {
            return self.fail(reply::need_helo());
        }
        if self.tx.is_some() {
            return self.fail(reply::nested_mail());
        }
        if size.is_some_and(|size| size > self.shared.config.max_message_size) {
            return self.fail(reply::size_declared_too_large());
        }
        let mail_from = from.to_ascii_lowercase();
        if self.mode == Mode::Submission {
            let Some(login) = &self.login else {
                return self.fail(reply::auth_required());
            };
            if *login != mail_from {
                let reply = reply::sender_not_owned(from, login);
                return self.fail(reply);
            }
            if let Err(message) = self.shared.send_limiter.check_at(&mail_from, self.now_ms) {
                // chatmail.md §3.4: refuse and close the connection.
                let reply = reply::rate_limited(from, &message);
                self.shared
                    .metrics
                    .message(crate::metrics::Path::Submission, reply.code);
                return self.close_with(reply);
            }
        }
        self.tx = Some(Transaction {
            mail_from,
            rcpt_to: Vec::new(),
            accounts: Vec::new(),
            remote: Vec::new(),
            accepted: 0,
            rcpt_seen: false,
        });
        self.reply(reply::sender_ok());
    }

    fn rcpt(&mut self, to: &str) {
        if !self.tls_active {
            return self.fail(reply::must_starttls());
        }
        let Some(tx) = &mut self.tx else {
            return self.fail(reply::need_mail());
        };
        tx.rcpt_seen = true;
        if tx.accepted >= MAX_RECIPIENTS {
            // Not counted as an error: the client is expected to send the rest later.
            return self.reply(reply::too_many_recipients());
        }
        let addr = to.to_ascii_lowercase();
        let Some((_, domain)) = addr.rsplit_once('@') else {
            return self.fail(reply::bad_recipient_syntax());
        };
        if !domain.eq_ignore_ascii_case(&self.shared.config.address_domain()) {
            // Other domains: only for our own users (submission), through the queue.
            if self.mode != Mode::Submission {
                return self.fail(reply::relay_denied(to));
            }
            if !is_remote_domain(domain) || addr.starts_with('@') {
                return self.fail(reply::bad_recipient_syntax());
            }
            let domain = domain.to_owned();
            let Some(tx) = &mut self.tx else {
                return self.fail(reply::need_mail());
            };
            tx.accepted += 1;
            match tx.remote.iter_mut().find(|(d, _)| *d == domain) {
                Some((_, rcpts)) if rcpts.contains(&addr) => {}
                Some((_, rcpts)) => rcpts.push(addr),
                None => tx.remote.push((domain, vec![addr])),
            }
            return self.reply(reply::recipient_ok());
        }
        let account = match super::inbound::check_recipient(&self.shared, to) {
            Ok(account) => account,
            Err(reply) => return self.fail(reply),
        };
        let Some(tx) = &mut self.tx else {
            return self.fail(reply::need_mail());
        };
        tx.accepted += 1;
        if !tx.accounts.contains(&account.id) {
            tx.accounts.push(account.id);
            tx.rcpt_to.push(account.addr);
        }
        self.reply(reply::recipient_ok());
    }

    fn data(&mut self) {
        if !self.tls_active {
            return self.fail(reply::must_starttls());
        }
        let Some(tx) = &self.tx else {
            return self.fail(reply::need_mail());
        };
        if tx.accounts.is_empty() && tx.remote.is_empty() {
            let reply = if tx.rcpt_seen {
                reply::no_valid_recipients()
            } else {
                reply::need_rcpt()
            };
            return self.fail(reply);
        }
        self.reply(reply::start_data());
        self.receiver = Receiver::Data(DataReceiver::new(self.shared.config.max_message_size));
    }

    /// The end of DATA: size, policy, header cleanup, then the durable write.
    fn data_complete(&mut self) {
        let Receiver::Data(rx) = std::mem::replace(&mut self.receiver, Receiver::Command) else {
            return;
        };
        let Some(tx) = self.tx.take() else {
            return self.reply(reply::need_mail());
        };
        if rx.is_too_large() {
            return self.message_reply(reply::message_too_large());
        }
        let raw = rx.into_body();
        // Every recipient, local and remote (the Autocrypt Setup Message rule counts them all).
        let all_rcpts: Vec<String> = tx
            .rcpt_to
            .iter()
            .cloned()
            .chain(tx.remote.iter().flat_map(|(_, r)| r.iter().cloned()))
            .collect();
        let envelope = Envelope {
            mail_from: &tx.mail_from,
            rcpt_to: &all_rcpts,
        };
        if self.mode == Mode::Submission && !tx.remote.is_empty() {
            return match policy::check_outgoing(&envelope, &raw) {
                Ok(()) => self.submit(tx, &raw),
                Err(reject) => self.message_reply(Reply::new(reject.code, reject.text)),
            };
        }
        let verdict = match self.mode {
            Mode::Submission => policy::check_outgoing(&envelope, &raw)
                .map(|()| policy::clean_delivery_headers(&policy::clean_submission_headers(&raw))),
            Mode::Mx => {
                // The envelope sender reset does not matter for local delivery.
                match super::inbound::check_message(&self.shared, &envelope, &raw) {
                    Ok(incoming) if super::inbound::needs_origin_check(&incoming) => {
                        // chatmail.md §3.5 step 6: the driver verifies DKIM, then `complete`
                        // delivers (`origin_done`).
                        self.pending = Some(Pending::Origin {
                            recipients: tx.accounts,
                        });
                        let from_domain = incoming.from_domain().to_owned();
                        self.actions.push_back(Action::Effect(Effect::VerifyOrigin {
                            message: raw,
                            from_domain,
                        }));
                        return;
                    }
                    Ok(_) => Ok(policy::clean_delivery_headers(&raw)),
                    Err(reply) => return self.message_reply(reply),
                }
            }
        };
        let body = match verdict {
            Ok(body) => body,
            Err(reject) => return self.message_reply(Reply::new(reject.code, reject.text)),
        };
        self.deliver(tx.accounts, body);
    }

    /// The account a submission comes from (it gets no push notification for its own message,
    /// e.g. the copy Delta Chat sends to itself for its other devices); `None` on port 25.
    fn sender_account(&self) -> Option<AccountId> {
        if self.mode != Mode::Submission {
            return None;
        }
        let login = self.login.as_deref()?;
        self.shared.store.account(login).map(|a| a.id)
    }

    /// Asks the driver for the durable write of `body` to `recipients`' INBOX.
    fn deliver(&mut self, recipients: Vec<AccountId>, body: Vec<u8>) {
        self.pending = Some(Pending::Deliver {
            recipients: recipients.clone(),
        });
        let sender = self.sender_account();
        self.actions
            .push_back(Action::Effect(Effect::Commit(Op::Deliver {
                recipients,
                sender,
                internal_date: i64::try_from(self.now_ms / 1000).unwrap_or(i64::MAX),
                body,
            })));
    }

    /// A submission with recipients on other domains: the message as it leaves (after the
    /// submission cleanup: Subject rewritten, client headers removed; DKIM-signed by the delivery
    /// engine when it is sent) goes into the queue, one entry per destination domain, and the
    /// local recipients get their copy, in one group commit. The queue comes first: if it cannot
    /// take the message nothing is written and the client retries the whole transaction.
    fn submit(&mut self, tx: Transaction, raw: &[u8]) {
        let outgoing = policy::clean_submission_headers(raw);
        let now = i64::try_from(self.now_ms / 1000).unwrap_or(i64::MAX);
        let enqueue = Op::Enqueue {
            sender: tx.mail_from.clone(),
            created: now,
            destinations: tx.remote,
            body: outgoing.clone(),
        };
        let op = if tx.accounts.is_empty() {
            enqueue
        } else {
            Op::Group(vec![
                enqueue,
                Op::Deliver {
                    recipients: tx.accounts.clone(),
                    sender: self.sender_account(),
                    internal_date: now,
                    body: policy::clean_delivery_headers(&outgoing),
                },
            ])
        };
        self.pending = Some(Pending::Submit {
            recipients: tx.accounts,
        });
        self.actions.push_back(Action::Effect(Effect::Commit(op)));
    }

    fn submit_done(&mut self, recipients: &[AccountId], result: Result<OpResult, store::Error>) {
        let (queued, delivered) = match result {
            Ok(OpResult::Enqueued(ids)) => (Ok(ids), None),
            Ok(OpResult::Group(mut results)) if results.len() == 2 => {
                let delivered = results.pop();
                let queued = match results.pop() {
                    Some(Ok(OpResult::Enqueued(ids))) => Ok(ids),
                    Some(Err(e)) => Err(e),
                    other => {
                        tracing::error!(?other, "smtp: unexpected store result for Enqueue");
                        return self.message_reply(reply::store_failed());
                    }
                };
                (queued, delivered)
            }
            Ok(other) => {
                tracing::error!(?other, "smtp: unexpected store result for a submission");
                return self.message_reply(reply::store_failed());
            }
            Err(e) => (Err(e), None),
        };
        let ids = match queued {
            Ok(ids) => ids,
            Err(store::Error::NoSpace { .. }) => {
                return self.message_reply(reply::insufficient_storage())
            }
            Err(error) => {
                tracing::error!(%error, "smtp: queueing failed");
                return self.message_reply(reply::store_failed());
            }
        };
        // The queue has the message: the transaction is accepted. A local copy that could not
        // be written (a mailbox filled up since RCPT) is logged; the sender's other recipients
        // are not held back by it.
        match delivered {
            Some(Ok(OpResult::Delivered(results))) => {
                for (account, r) in recipients.iter().zip(&results) {
                    if let Err(e) = r {
                        tracing::warn!(account, ?e, "smtp: local copy of a submission not stored");
                    }
                }
            }
            Some(other) => {
                tracing::warn!(?other, "smtp: local copies of a submission not stored");
            }
            None => {}
        }
        let id = ids.first().map_or_else(String::new, ToString::to_string);
        self.message_reply(reply::queued(&id));
    }

    /// The origin of an incoming message was verified: deliver it, or refuse (`554`/`451`).
    fn origin_done(
        &mut self,
        recipients: Vec<AccountId>,
        message: &[u8],
        verdict: crate::dkim::Verdict,
    ) {
        match verdict.reply() {
            None => self.deliver(recipients, policy::clean_delivery_headers(message)),
            Some((code, text)) => self.message_reply(Reply::new(code, text)),
        }
    }

    fn deliver_done(&mut self, recipients: &[AccountId], result: Result<OpResult, store::Error>) {
        let reply = super::inbound::delivery_reply(recipients, result);
        self.message_reply(reply);
    }
}

impl crate::session::Session for Session {
    fn receive(&mut self, input: &[u8], now_ms: u64) {
        self.now_ms = now_ms;
        if self.closed || self.awaiting_tls || input.is_empty() {
            // Closed, or plaintext between STARTTLS and the handshake: discarded (RFC 3207 §6).
            return;
        }
        self.last_activity_ms = now_ms;
        if self.inbuf.is_empty() {
            let n = self.consume(input);
            if !self.closed && !self.awaiting_tls {
                self.inbuf.extend_from_slice(&input[n..]);
            }
        } else {
            self.inbuf.extend_from_slice(input);
            self.process_buffered();
        }
        if self.inbuf.len() > MAX_BUFFERED_INPUT {
            let reply = reply::input_overflow(self.domain());
            self.close_with(reply);
        }
    }

    fn output(&self) -> &[u8] {
        &self.out
    }

    fn consume_output(&mut self, n: usize) {
        let n = n.min(self.out.len());
        self.out.drain(..n);
        self.process_buffered();
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn complete(&mut self, result: EffectResult, now_ms: u64) {
        self.now_ms = now_ms;
        self.last_activity_ms = now_ms;
        let Some(pending) = self.pending.take() else {
            tracing::error!("smtp: effect result without a pending effect");
            return;
        };
        match (pending, result) {
            (Pending::Login { user }, EffectResult::Login(result)) => {
                self.login_done(&user, result);
            }
            (Pending::Submit { recipients }, EffectResult::Commit(result)) => {
                self.submit_done(&recipients, result);
            }
            (Pending::Deliver { recipients }, EffectResult::Commit(result)) => {
                self.deliver_done(&recipients, result);
            }
            (Pending::Origin { recipients }, EffectResult::Origin { message, verdict }) => {
                self.origin_done(recipients, &message, verdict);
            }
            (Pending::Login { .. }, _) => {
                tracing::error!("smtp: wrong result for a Login effect");
                self.reply(reply::auth_temporary());
            }
            (Pending::Deliver { .. } | Pending::Origin { .. } | Pending::Submit { .. }, _) => {
                tracing::error!("smtp: wrong result for a delivery effect");
                self.reply(reply::store_failed());
            }
        }
        self.process_buffered();
    }

    fn tls_established(&mut self) {
        self.tls_active = true;
        self.awaiting_tls = false;
    }

    fn next_timeout(&self) -> Option<u64> {
        if self.closed || self.pending.is_some() {
            None
        } else {
            let idle = self.last_activity_ms.saturating_add(IDLE_TIMEOUT_MS);
            if self.mode == Mode::Submission && self.login.is_none() {
                Some(idle.min(self.opened_ms.saturating_add(PREAUTH_DEADLINE_MS)))
            } else {
                Some(idle)
            }
        }
    }

    fn handle_timeout(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        if self
            .next_timeout()
            .is_some_and(|deadline| now_ms >= deadline)
        {
            if self.awaiting_tls {
                // The handshake stalled: a plaintext reply would only garble it.
                self.close();
            } else {
                let reply = reply::timeout(self.domain());
                self.close_with(reply);
            }
        }
    }

    fn wants_input(&self) -> bool {
        !self.closed && !self.is_blocked()
    }
}
