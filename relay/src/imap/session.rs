//! The IMAP server session: a sans-I/O state machine (see `crate::session`).
//!
//! It frames and parses client input, answers reads synchronously from `shared.store`, turns every
//! write into `Action::Effect(Effect::Commit(op))` and answers `OK` only once the commit resolved.
//! While an effect is pending, further input stays buffered in the framer (bounded by
//! [`crate::session::Session::wants_input`]). It tracks the selected mailbox as the client knows it (UIDs in
//! sequence order with their flags and modseq) and reports changes by others as `EXPUNGE`,
//! `EXISTS` and `FETCH` responses, never `EXPUNGE` while answering FETCH, STORE or SEARCH.
//! It must never block, read a clock, or touch a socket.

use std::collections::VecDeque;
use std::sync::Arc;

use base64::Engine as _;

use super::command::{self, Command, FetchItem, SearchKey, SeqSet, StatusItem};
use super::fetch::{self, FetchCtx};
use super::frame::{Frame, Framer};
use super::response;
use super::search::{self, Candidate};
use crate::session::{Action, Effect, EffectResult, Secret};
use crate::shared::Shared;
use crate::store::{
    flag_bits, AccountId, Flag, FlagMode, MailboxId, MailboxView, MessageMeta, Op, OpResult,
};

/// Stop processing input while this much output waits.
const OUTPUT_CAP: usize = 1024 * 1024;
/// Stop asking for input while this much unframed input is buffered.
const INPUT_CAP: usize = 256 * 1024;
/// Unauthenticated connections are closed after this much silence.
const PREAUTH_TIMEOUT_MS: u64 = 60_000;
/// Authenticated connections not in IDLE are closed after this much silence.
const AUTH_TIMEOUT_MS: u64 = 30 * 60_000;
/// `* OK Still here` interval in IDLE.
const IDLE_PING_MS: u64 = 120_000;
/// The quota root name (Dovecot's).
const QUOTA_ROOT: &str = "User quota";

/// A message as the client currently knows it.
#[derive(Debug, Clone, Copy)]
struct Known {
    uid: u32,
    flags: u64,
    modseq: u64,
}

/// The selected mailbox as the client knows it.
#[derive(Debug)]
struct Selected {
    id: MailboxId,
    read_only: bool,
    /// In sequence order (= UID order).
    msgs: Vec<Known>,
    /// Keywords announced in `* FLAGS`.
    keywords: usize,
}

/// What to do when the pending effect completes.
#[derive(Debug)]
enum Pending {
    Login {
        tag: String,
    },
    Simple {
        tag: String,
        text: &'static str,
    },
    Fetch {
        tag: String,
        cmd: Command,
        seen: Vec<u32>,
    },
    Store {
        tag: String,
        uid: bool,
        silent: bool,
        targets: Vec<(u32, u32)>,
    },
    Copy {
        tag: String,
        is_move: bool,
    },
    Expunge {
        tag: String,
    },
    Close {
        tag: String,
    },
    Append {
        tag: String,
    },
    SetMetadata {
        tag: String,
        rest: VecDeque<Op>,
    },
}

/// A FETCH in progress (see [`Session::run_fetch`]).
#[derive(Debug)]
struct FetchJob {
    account: AccountId,
    tag: String,
    uid: bool,
    items: Vec<FetchItem>,
    changed_since: Option<u64>,
    /// `(seq, uid)` to answer, in order.
    targets: Vec<(u32, u32)>,
    /// Index of the next target.
    next: usize,
    /// UIDs whose `\Seen` this FETCH set (sorted): their FLAGS are reported.
    seen: Vec<u32>,
    /// A body could not be read.
    failed: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Normal,
    /// In IDLE, waiting for `DONE`.
    Idle {
        tag: String,
    },
    /// AUTHENTICATE PLAIN waiting for the client's response line.
    AuthContinue {
        tag: String,
    },
}

/// An IMAP server session.
pub struct Session {
    shared: Arc<Shared>,
    tls: bool,
    compress: bool,
    framer: Framer,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    out_start: usize,
    actions: VecDeque<Action>,
    account: Option<AccountId>,
    selected: Option<Selected>,
    pending: Option<Pending>,
    /// A FETCH paused at the output cap.
    fetch_job: Option<FetchJob>,
    mode: Mode,
    /// CONDSTORE was enabled (RFC 7162 §3.1).
    condstore: bool,
    /// STARTTLS answered; waiting for `tls_established`.
    awaiting_tls: bool,
    closed: bool,
    now: u64,
    last_activity: u64,
    idle_ping_at: u64,
}

impl Session {
    /// A new session. `tls_active` is true on the implicit-TLS port.
    pub fn new(shared: Arc<Shared>, tls_active: bool, now_ms: u64) -> Self {
        let append_cap = shared.config.max_message_size;
        let mut s = Self {
            shared,
            tls: tls_active,
            compress: false,
            framer: Framer::new(append_cap),
            out: Vec::new(),
            out_start: 0,
            actions: VecDeque::new(),
            account: None,
            selected: None,
            pending: None,
            fetch_job: None,
            mode: Mode::Normal,
            condstore: false,
            awaiting_tls: false,
            closed: false,
            now: now_ms,
            last_activity: now_ms,
            idle_ping_at: 0,
        };
        let greeting = format!(
            "* OK [CAPABILITY {}] {} chatmail relay ready\r\n",
            s.capabilities(),
            s.shared.config.mail_domain
        );
        s.out.extend_from_slice(greeting.as_bytes());
        s
    }

    fn capabilities(&self) -> String {
        let mut c = String::from(
            "IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE NAMESPACE UIDPLUS MOVE CONDSTORE \
             UNSELECT SPECIAL-USE QUOTA METADATA XCHATMAIL XDELTAPUSH",
        );
        if self.account.is_none() {
            if self.tls {
                c.push_str(" AUTH=PLAIN");
            } else {
                c.push_str(" STARTTLS LOGINDISABLED");
            }
        }
        if self.shared.config.imap_compress && !self.compress {
            c.push_str(" COMPRESS=DEFLATE");
        }
        c
    }

    fn line(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn tagged(&mut self, tag: &str, rest: &str) {
        self.line(&format!("{tag} {rest}"));
    }

    fn effect(&mut self, effect: Effect, pending: Pending) {
        self.actions.push_back(Action::Effect(effect));
        self.pending = Some(pending);
    }

    fn commit(&mut self, op: Op, pending: Pending) {
        self.effect(Effect::Commit(op), pending);
    }

    fn close(&mut self) {
        self.closed = true;
        self.actions.push_back(Action::Close);
    }

    /// Frame and run buffered commands until blocked.
    fn process(&mut self) {
        loop {
            if self.fetch_job.is_some() {
                if self.out.len() - self.out_start > OUTPUT_CAP || self.closed {
                    return;
                }
                if let Some(job) = self.fetch_job.take() {
                    self.run_fetch(job);
                }
                continue;
            }
            if self.pending.is_some()
                || self.closed
                || self.awaiting_tls
                || self.out.len() - self.out_start > OUTPUT_CAP
            {
                return;
            }
            let raw = self.mode != Mode::Normal;
            let Some(frame) = self.framer.next(raw) else {
                return;
            };
            self.last_activity = self.now;
            match frame {
                Frame::Continue => self.line("+ Ready for literal data"),
                Frame::Line(line) => self.raw_line(&line),
                Frame::TooBig { tag, append, .. } => {
                    let tag = tag_text(&tag);
                    if append {
                        self.tagged(&tag, "NO [TOOBIG] Message too large");
                    } else {
                        self.tagged(&tag, "BAD Literal too large");
                    }
                }
                Frame::LineTooLong { tag } => {
                    let tag = tag_text(&tag);
                    self.tagged(&tag, "BAD Line too long");
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
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Idle { tag } => {
                if line.eq_ignore_ascii_case(b"DONE") {
                    self.refresh(true);
                    self.tagged(&tag, "OK Idle completed");
                } else {
                    self.tagged(&tag, "BAD Expected DONE");
                }
            }
            Mode::AuthContinue { tag } => {
                if line == b"*" {
                    self.tagged(&tag, "BAD Authentication aborted");
                } else {
                    self.auth_plain(tag, line);
                }
            }
            Mode::Normal => {}
        }
    }

    fn auth_plain(&mut self, tag: String, b64: &[u8]) {
        let decoded = if b64 == b"=" {
            Ok(Vec::new())
        } else {
            base64::engine::general_purpose::STANDARD.decode(b64)
        };
        let Ok(decoded) = decoded else {
            self.tagged(&tag, "BAD Invalid base64 data");
            return;
        };
        let mut parts = decoded.split(|&b| b == 0);
        let (Some(authz), Some(user), Some(pass), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            self.tagged(&tag, "BAD Invalid AUTHENTICATE PLAIN response");
            return;
        };
        let (Ok(authz), Ok(user), Ok(pass)) = (
            std::str::from_utf8(authz),
            std::str::from_utf8(user),
            std::str::from_utf8(pass),
        ) else {
            self.tagged(&tag, "BAD Invalid UTF-8");
            return;
        };
        if !authz.is_empty() && authz != user {
            self.tagged(&tag, "NO [AUTHENTICATIONFAILED] Authentication failed.");
            return;
        }
        self.effect(
            Effect::Login {
                user: user.to_owned(),
                password: Secret(pass.to_owned()),
            },
            Pending::Login { tag },
        );
    }

    fn execute(&mut self, tag: String, cmd: Command) {
        // Commands valid in every state.
        match cmd {
            Command::Capability => {
                let caps = self.capabilities();
                self.line(&format!("* CAPABILITY {caps}"));
                return self.finish(&tag, "OK Capability completed", true);
            }
            Command::Noop => return self.finish(&tag, "OK NOOP completed", true),
            Command::Logout => {
                self.line("* BYE Logging out");
                self.tagged(&tag, "OK Logout completed");
                return self.close();
            }
            Command::Id => {
                self.line("* ID (\"name\" \"relay\")");
                return self.finish(&tag, "OK ID completed", true);
            }
            _ => {}
        }
        let Some(account) = self.account else {
            return self.execute_unauth(tag, cmd);
        };
        match cmd {
            Command::StartTls | Command::Login(..) | Command::Authenticate(..) => {
                self.tagged(&tag, "BAD Already logged in");
            }
            Command::Enable(caps) => {
                let mut enabled = Vec::new();
                for c in caps {
                    if c == "CONDSTORE" {
                        self.condstore = true;
                        enabled.push(c);
                    }
                }
                let mut line = String::from("* ENABLED");
                for c in &enabled {
                    line.push(' ');
                    line.push_str(c);
                }
                self.line(&line);
                self.finish(&tag, "OK Enabled", true);
            }
            Command::Namespace => {
                self.line("* NAMESPACE ((\"\" \"/\")) NIL NIL");
                self.finish(&tag, "OK Namespace completed", true);
            }
            Command::Compress(mech) => {
                if self.compress {
                    self.tagged(&tag, "NO [COMPRESSIONACTIVE] Compression already active");
                } else if mech != "DEFLATE" || !self.shared.config.imap_compress {
                    self.tagged(&tag, "NO Unsupported compression mechanism");
                } else {
                    self.compress = true;
                    self.tagged(&tag, "OK DEFLATE active");
                    // The client may not pipeline after COMPRESS (RFC 4978 §3); anything buffered
                    // would be answered uncompressed after the switch, so drop it.
                    self.framer.discard_buffered();
                    self.actions.push_back(Action::StartCompress);
                }
            }
            Command::List {
                lsub,
                reference,
                pattern,
            } => {
                self.list(account, lsub, &reference, &pattern);
                self.finish(
                    &tag,
                    if lsub {
                        "OK Lsub completed"
                    } else {
                        "OK List completed"
                    },
                    true,
                );
            }
            Command::Status(name, items) => self.status(account, &tag, &name, &items),
            Command::Create(name) => {
                let name = name.trim_end_matches('/').to_owned();
                if name.eq_ignore_ascii_case("INBOX") {
                    return self.tagged(&tag, "NO [ALREADYEXISTS] Mailbox already exists");
                }
                if !valid_mailbox_name(&name) {
                    return self.tagged(&tag, "NO [CANNOT] Invalid mailbox name");
                }
                self.commit(
                    Op::CreateMailbox { account, name },
                    Pending::Simple {
                        tag,
                        text: "OK Create completed",
                    },
                );
            }
            Command::Delete(name) => {
                if name == "INBOX" {
                    return self.tagged(&tag, "NO INBOX can't be deleted.");
                }
                let Some(id) = self.mailbox_id(account, &name) else {
                    return self.tagged(
                        &tag,
                        &format!("NO [NONEXISTENT] Mailbox doesn't exist: {name}"),
                    );
                };
                if self.selected.as_ref().is_some_and(|s| s.id == id) {
                    self.selected = None;
                }
                self.commit(
                    Op::DeleteMailbox {
                        account,
                        mailbox: id,
                    },
                    Pending::Simple {
                        tag,
                        text: "OK Delete completed",
                    },
                );
            }
            Command::Rename(from, to) => {
                let to = to.trim_end_matches('/').to_owned();
                if from == "INBOX" {
                    return self.tagged(&tag, "NO [CANNOT] Renaming INBOX is not supported");
                }
                if to.eq_ignore_ascii_case("INBOX") || !valid_mailbox_name(&to) {
                    return self.tagged(&tag, "NO [CANNOT] Invalid mailbox name");
                }
                let Some(id) = self.mailbox_id(account, &from) else {
                    return self.tagged(
                        &tag,
                        &format!("NO [NONEXISTENT] Mailbox doesn't exist: {from}"),
                    );
                };
                if self.mailbox_id(account, &to).is_some() {
                    return self.tagged(&tag, "NO [ALREADYEXISTS] Target mailbox already exists");
                }
                self.commit(
                    Op::RenameMailbox {
                        account,
                        mailbox: id,
                        to,
                    },
                    Pending::Simple {
                        tag,
                        text: "OK Rename completed",
                    },
                );
            }
            Command::Subscribe(name, subscribed) => self.commit(
                Op::Subscribe {
                    account,
                    name,
                    subscribed,
                },
                Pending::Simple {
                    tag,
                    text: if subscribed {
                        "OK Subscribe completed"
                    } else {
                        "OK Unsubscribe completed"
                    },
                },
            ),
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
            } => {
                let Some(id) = self.mailbox_id(account, &mailbox) else {
                    return self.tagged(
                        &tag,
                        &format!("NO [TRYCREATE] Mailbox doesn't exist: {mailbox}"),
                    );
                };
                let internal_date = date.unwrap_or((self.now / 1000) as i64);
                self.commit(
                    Op::Append {
                        account,
                        mailbox: id,
                        flags,
                        internal_date,
                        body: message,
                    },
                    Pending::Append { tag },
                );
            }
            Command::Idle => {
                self.line("+ idling");
                self.mode = Mode::Idle { tag };
                self.idle_ping_at = self.now + IDLE_PING_MS;
                self.refresh(true);
            }
            Command::GetQuotaRoot(mailbox) => {
                let mut o = b"* QUOTAROOT ".to_vec();
                response::astring(&mut o, &mailbox);
                o.extend_from_slice(format!(" \"{QUOTA_ROOT}\"\r\n").as_bytes());
                self.out.extend_from_slice(&o);
                self.quota_line(account);
                self.finish(&tag, "OK Getquotaroot completed", true);
            }
            Command::GetQuota(root) => {
                if root != QUOTA_ROOT {
                    return self.tagged(&tag, "NO Quota root does not exist");
                }
                self.quota_line(account);
                self.finish(&tag, "OK Getquota completed", true);
            }
            Command::GetMetadata {
                mailbox,
                max_size,
                entries,
            } => self.get_metadata(account, &tag, &mailbox, max_size, &entries),
            Command::SetMetadata { mailbox, entries } => {
                let mbox = if mailbox.is_empty() {
                    None
                } else {
                    match self.mailbox_id(account, &mailbox) {
                        Some(id) => Some(id),
                        None => {
                            return self.tagged(
                                &tag,
                                &format!("NO [NONEXISTENT] Mailbox doesn't exist: {mailbox}"),
                            )
                        }
                    }
                };
                let mut ops: VecDeque<Op> = entries
                    .into_iter()
                    .map(|(key, value)| Op::SetMetadata {
                        account,
                        mailbox: mbox,
                        key,
                        value,
                    })
                    .collect();
                match ops.pop_front() {
                    Some(op) => self.commit(op, Pending::SetMetadata { tag, rest: ops }),
                    None => self.tagged(&tag, "OK Setmetadata completed"),
                }
            }
            cmd => self.execute_selected(account, tag, cmd),
        }
    }

    fn execute_unauth(&mut self, tag: String, cmd: Command) {
        match cmd {
            Command::StartTls => {
                if self.tls {
                    return self.tagged(&tag, "BAD TLS is already active");
                }
                self.tagged(&tag, "OK Begin TLS negotiation now");
                // Anything pipelined after STARTTLS was sent in plaintext: drop it.
                self.framer.discard_buffered();
                self.awaiting_tls = true;
                self.actions.push_back(Action::StartTls);
            }
            Command::Login(user, pass) => {
                if !self.tls {
                    return self.tagged(&tag, "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.");
                }
                self.effect(
                    Effect::Login {
                        user,
                        password: Secret(pass),
                    },
                    Pending::Login { tag },
                );
            }
            Command::Authenticate(mech, initial) => {
                if !self.tls {
                    return self.tagged(&tag, "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.");
                }
                if mech != "PLAIN" {
                    return self.tagged(&tag, "NO Unsupported authentication mechanism");
                }
                match initial {
                    Some(ir) => self.auth_plain(tag, ir.as_bytes()),
                    None => {
                        self.line("+ ");
                        self.mode = Mode::AuthContinue { tag };
                    }
                }
            }
            _ => self.tagged(&tag, "BAD Please log in first"),
        }
    }

    fn execute_selected(&mut self, account: AccountId, tag: String, cmd: Command) {
        let Some(sel) = &self.selected else {
            return self.tagged(&tag, "BAD No mailbox selected");
        };
        let read_only = sel.read_only;
        let mailbox = sel.id;
        if let Command::Fetch {
            uid,
            set,
            items,
            changed_since,
        } = &cmd
        {
            let targets = match self.targets(set, *uid) {
                Ok(t) => t,
                Err(e) => return self.tagged(&tag, e),
            };
            if changed_since.is_some() || items.contains(&FetchItem::ModSeq) {
                self.condstore = true;
            }
            let mut seen = Vec::new();
            if !read_only && fetch::sets_seen(items) {
                if let Some(view) = self.view(account) {
                    for (_, u) in &targets {
                        if find(&view, *u).is_some_and(|m| m.flags & flag_bits::SEEN == 0) {
                            seen.push(*u);
                        }
                    }
                }
            }
            if seen.is_empty() {
                self.fetch(account, &tag, &cmd, &[]);
            } else {
                self.commit(
                    Op::SetFlags {
                        account,
                        mailbox,
                        uids: seen.clone(),
                        mode: FlagMode::Add,
                        flags: vec![Flag::Seen],
                        unchanged_since: None,
                    },
                    Pending::Fetch { tag, cmd, seen },
                );
            }
            return;
        }
        match cmd {
            Command::Check => self.finish(&tag, "OK Check completed", true),
            Command::Unselect => {
                self.selected = None;
                self.tagged(&tag, "OK Unselect completed");
            }
            Command::Close => {
                let deleted = if read_only {
                    Vec::new()
                } else {
                    self.deleted_uids(account, None)
                };
                if deleted.is_empty() {
                    self.selected = None;
                    self.tagged(&tag, "OK Close completed");
                } else {
                    self.commit(
                        Op::Expunge {
                            account,
                            mailbox,
                            uids: deleted,
                        },
                        Pending::Close { tag },
                    );
                }
            }
            Command::Expunge(set) => {
                if read_only {
                    return self.tagged(&tag, "NO [READ-ONLY] Mailbox is read-only");
                }
                let deleted = self.deleted_uids(account, set.as_ref());
                if deleted.is_empty() {
                    return self.finish(&tag, "OK Expunge completed", true);
                }
                self.commit(
                    Op::Expunge {
                        account,
                        mailbox,
                        uids: deleted,
                    },
                    Pending::Expunge { tag },
                );
            }
            Command::Store {
                uid,
                set,
                mode,
                silent,
                flags,
                unchanged_since,
            } => {
                if read_only {
                    return self.tagged(&tag, "NO [READ-ONLY] Mailbox is read-only");
                }
                if unchanged_since.is_some() {
                    self.condstore = true;
                }
                let targets = match self.targets(&set, uid) {
                    Ok(t) => t,
                    Err(e) => return self.tagged(&tag, e),
                };
                if targets.is_empty() {
                    return self.finish(&tag, "OK Store completed", uid);
                }
                self.commit(
                    Op::SetFlags {
                        account,
                        mailbox,
                        uids: targets.iter().map(|t| t.1).collect(),
                        mode,
                        flags,
                        unchanged_since,
                    },
                    Pending::Store {
                        tag,
                        uid,
                        silent,
                        targets,
                    },
                );
            }
            Command::Search { uid, key } => self.search(account, &tag, uid, &key),
            Command::Copy {
                uid,
                is_move,
                set,
                mailbox: target,
            } => {
                if is_move && read_only {
                    return self.tagged(&tag, "NO [READ-ONLY] Mailbox is read-only");
                }
                let targets = match self.targets(&set, uid) {
                    Ok(t) => t,
                    Err(e) => return self.tagged(&tag, e),
                };
                let Some(to) = self.mailbox_id(account, &target) else {
                    return self.tagged(
                        &tag,
                        &format!("NO [TRYCREATE] Mailbox doesn't exist: {target}"),
                    );
                };
                if targets.is_empty() {
                    let text = if is_move {
                        "OK No messages found"
                    } else {
                        "OK Copy completed"
                    };
                    return self.finish(&tag, text, uid);
                }
                self.commit(
                    Op::Copy {
                        account,
                        from: mailbox,
                        to,
                        uids: targets.iter().map(|t| t.1).collect(),
                        remove_source: is_move,
                    },
                    Pending::Copy { tag, is_move },
                );
            }
            _ => self.tagged(&tag, "BAD Unexpected command"),
        }
    }

    /// Refresh (EXPUNGE allowed unless `no_expunge`), then the tagged line.
    fn finish(&mut self, tag: &str, text: &str, allow_expunge: bool) {
        self.refresh(allow_expunge);
        self.tagged(tag, text);
    }

    fn view(&self, account: AccountId) -> Option<MailboxView> {
        let sel = self.selected.as_ref()?;
        self.shared.store.mailbox_view_by_id(account, sel.id)
    }

    fn mailbox_id(&self, account: AccountId, name: &str) -> Option<MailboxId> {
        self.shared
            .store
            .mailboxes(account)
            .into_iter()
            .find(|m| same_name(&m.name, name))
            .map(|m| m.id)
    }

    /// Resolve a set against the client's view: `(seq, uid)` pairs.
    fn targets(&self, set: &SeqSet, uid: bool) -> Result<Vec<(u32, u32)>, &'static str> {
        let Some(sel) = &self.selected else {
            return Ok(Vec::new());
        };
        let count = sel.msgs.len() as u32;
        if uid {
            let max = sel.msgs.last().map_or(0, |k| k.uid);
            return Ok(sel
                .msgs
                .iter()
                .enumerate()
                .filter(|(_, k)| max > 0 && set.contains(k.uid, max))
                .map(|(i, k)| (i as u32 + 1, k.uid))
                .collect());
        }
        if set
            .0
            .iter()
            .any(|&(a, b)| (a != u32::MAX && a > count) || (b != u32::MAX && b > count))
        {
            return Err("BAD Error in IMAP command: Invalid messageset");
        }
        Ok(sel
            .msgs
            .iter()
            .enumerate()
            .filter(|(i, _)| set.contains(*i as u32 + 1, count))
            .map(|(i, k)| (i as u32 + 1, k.uid))
            .collect())
    }

    fn deleted_uids(&self, account: AccountId, set: Option<&SeqSet>) -> Vec<u32> {
        let Some(view) = self.view(account) else {
            return Vec::new();
        };
        let max = view.messages.last().map_or(0, |m| m.uid);
        view.messages
            .iter()
            .filter(|m| m.flags & flag_bits::DELETED != 0)
            .filter(|m| set.is_none_or(|s| s.contains(m.uid, max)))
            .map(|m| m.uid)
            .collect()
    }

    /// Report changes by others (and by our own writes) to the client.
    fn refresh(&mut self, allow_expunge: bool) {
        let Some(account) = self.account else { return };
        let Some(view) = self.view(account) else {
            return;
        };
        let condstore = self.condstore;
        let Some(sel) = self.selected.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        if view.keywords.len() != sel.keywords {
            sel.keywords = view.keywords.len();
            flags_lines(&mut out, &view.keywords, sel.read_only);
        }
        if allow_expunge {
            for i in (0..sel.msgs.len()).rev() {
                if find(&view, sel.msgs[i].uid).is_none() {
                    out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
                    sel.msgs.remove(i);
                }
            }
        }
        let last = sel.msgs.last().map_or(0, |k| k.uid);
        let before = sel.msgs.len();
        for m in view.messages.iter().filter(|m| m.uid > last) {
            sel.msgs.push(Known {
                uid: m.uid,
                flags: m.flags,
                modseq: m.modseq,
            });
        }
        if sel.msgs.len() != before {
            out.extend_from_slice(format!("* {} EXISTS\r\n", sel.msgs.len()).as_bytes());
        }
        for (i, k) in sel.msgs[..before].iter_mut().enumerate() {
            let Some(m) = find(&view, k.uid) else {
                continue;
            };
            let flags_changed = m.flags != k.flags;
            if flags_changed || (condstore && m.modseq != k.modseq) {
                out.extend_from_slice(format!("* {} FETCH (FLAGS ", i + 1).as_bytes());
                response::flags(&mut out, m.flags, &view.keywords);
                out.extend_from_slice(format!(" UID {}", m.uid).as_bytes());
                if condstore {
                    out.extend_from_slice(format!(" MODSEQ ({})", m.modseq).as_bytes());
                }
                out.extend_from_slice(b")\r\n");
            }
            k.flags = m.flags;
            k.modseq = m.modseq;
        }
        self.out.extend_from_slice(&out);
    }

    fn select(&mut self, account: AccountId, tag: &str, name: &str, read_only: bool, cs: bool) {
        self.selected = None;
        let Some(view) = self.shared.store.mailbox_view(account, name) else {
            return self.tagged(
                tag,
                &format!("NO [NONEXISTENT] Mailbox doesn't exist: {name}"),
            );
        };
        if cs {
            self.condstore = true;
        }
        let mut o = Vec::new();
        flags_lines(&mut o, &view.keywords, read_only);
        o.extend_from_slice(
            format!("* {} EXISTS\r\n* 0 RECENT\r\n", view.messages.len()).as_bytes(),
        );
        if let Some(pos) = view
            .messages
            .iter()
            .position(|m| m.flags & flag_bits::SEEN == 0)
        {
            o.extend_from_slice(format!("* OK [UNSEEN {}] First unseen.\r\n", pos + 1).as_bytes());
        }
        o.extend_from_slice(
            format!(
                "* OK [UIDVALIDITY {}] UIDs valid\r\n* OK [UIDNEXT {}] Predicted next UID\r\n\
                 * OK [HIGHESTMODSEQ {}] Highest\r\n",
                view.uid_validity, view.uid_next, view.highest_modseq
            )
            .as_bytes(),
        );
        self.out.extend_from_slice(&o);
        self.selected = Some(Selected {
            id: view.id,
            read_only,
            keywords: view.keywords.len(),
            msgs: view
                .messages
                .iter()
                .map(|m| Known {
                    uid: m.uid,
                    flags: m.flags,
                    modseq: m.modseq,
                })
                .collect(),
        });
        let text = if read_only {
            "OK [READ-ONLY] Examine completed"
        } else {
            "OK [READ-WRITE] Select completed"
        };
        self.tagged(tag, text);
    }

    fn list(&mut self, account: AccountId, lsub: bool, reference: &str, pattern: &str) {
        if pattern.is_empty() && !lsub {
            self.line("* LIST (\\Noselect) \"/\" \"\"");
            return;
        }
        let full = format!("{reference}{pattern}");
        let boxes = self.shared.store.mailboxes(account);
        let names: Vec<String> = if lsub {
            self.shared.store.subscriptions(account)
        } else {
            boxes.iter().map(|b| b.name.clone()).collect()
        };
        let mut o = Vec::new();
        for name in &names {
            if !pattern_matches(&full, name) {
                continue;
            }
            let mut attrs: Vec<&str> = Vec::new();
            if !lsub {
                let prefix = format!("{name}/");
                if boxes.iter().any(|b| b.name.starts_with(&prefix)) {
                    attrs.push("\\HasChildren");
                } else {
                    attrs.push("\\HasNoChildren");
                }
                if let Some(su) = special_use(name) {
                    attrs.push(su);
                }
            }
            o.extend_from_slice(if lsub { b"* LSUB (" } else { b"* LIST (" });
            o.extend_from_slice(attrs.join(" ").as_bytes());
            o.extend_from_slice(b") \"/\" ");
            response::astring(&mut o, name);
            o.extend_from_slice(b"\r\n");
        }
        self.out.extend_from_slice(&o);
    }

    fn status(&mut self, account: AccountId, tag: &str, name: &str, items: &[StatusItem]) {
        let Some(info) = self
            .shared
            .store
            .mailboxes(account)
            .into_iter()
            .find(|m| same_name(&m.name, name))
        else {
            return self.tagged(
                tag,
                &format!("NO [NONEXISTENT] Mailbox doesn't exist: {name}"),
            );
        };
        let vals: Vec<String> = items
            .iter()
            .map(|i| match i {
                StatusItem::Messages => format!("MESSAGES {}", info.messages),
                StatusItem::UidNext => format!("UIDNEXT {}", info.uid_next),
                StatusItem::UidValidity => format!("UIDVALIDITY {}", info.uid_validity),
                StatusItem::Unseen => format!("UNSEEN {}", info.unseen),
                StatusItem::Recent => format!("RECENT {}", info.recent),
                StatusItem::HighestModSeq => format!("HIGHESTMODSEQ {}", info.highest_modseq),
                StatusItem::Size => format!("SIZE {}", info.size),
            })
            .collect();
        let mut o = b"* STATUS ".to_vec();
        response::astring(&mut o, &info.name);
        o.extend_from_slice(format!(" ({})\r\n", vals.join(" ")).as_bytes());
        self.out.extend_from_slice(&o);
        self.finish(tag, "OK Status completed", true);
    }

    fn quota_line(&mut self, account: AccountId) {
        let (used, limit) = self.shared.store.quota(account);
        self.line(&format!(
            "* QUOTA \"{QUOTA_ROOT}\" (STORAGE {} {})",
            used / 1024,
            limit / 1024
        ));
    }

    fn get_metadata(
        &mut self,
        account: AccountId,
        tag: &str,
        mailbox: &str,
        max_size: Option<u64>,
        entries: &[String],
    ) {
        let mbox = if mailbox.is_empty() {
            None
        } else {
            match self.mailbox_id(account, mailbox) {
                Some(id) => Some(id),
                None => {
                    return self.tagged(
                        tag,
                        &format!("NO [NONEXISTENT] Mailbox doesn't exist: {mailbox}"),
                    )
                }
            }
        };
        let mut o = b"* METADATA ".to_vec();
        response::string(&mut o, mailbox.as_bytes());
        o.extend_from_slice(b" (");
        let mut longest_skipped = 0u64;
        let mut first = true;
        for e in entries {
            let value = self.shared.store.metadata(account, mbox, e);
            if let (Some(v), Some(max)) = (&value, max_size) {
                if v.len() as u64 > max {
                    longest_skipped = longest_skipped.max(v.len() as u64);
                    continue;
                }
            }
            if !first {
                o.push(b' ');
            }
            first = false;
            response::astring(&mut o, e);
            o.push(b' ');
            response::nstring(&mut o, value.as_deref());
        }
        o.extend_from_slice(b")\r\n");
        if !first {
            self.out.extend_from_slice(&o);
        }
        if longest_skipped > 0 {
            self.refresh(true);
            return self.tagged(
                tag,
                &format!("OK [METADATA LONGENTRIES {longest_skipped}] Getmetadata completed"),
            );
        }
        self.finish(tag, "OK Getmetadata completed", true);
    }

    fn fetch(&mut self, account: AccountId, tag: &str, cmd: &Command, seen: &[u32]) {
        let Command::Fetch {
            uid,
            set,
            items,
            changed_since,
        } = cmd
        else {
            return self.tagged(tag, "BAD Unexpected command");
        };
        let targets = match self.targets(set, *uid) {
            Ok(t) => t,
            Err(e) => return self.tagged(tag, e),
        };
        let mut seen = seen.to_vec();
        seen.sort_unstable();
        self.run_fetch(FetchJob {
            account,
            tag: tag.to_owned(),
            uid: *uid,
            items: items.clone(),
            changed_since: *changed_since,
            targets,
            next: 0,
            seen,
            failed: false,
        });
    }

    /// Render FETCH responses until done or the output cap is reached; then the job waits in
    /// `self.fetch_job` until the driver drained the output (a `FETCH 1:* BODY[]` over a large
    /// mailbox never sits in memory at once).
    fn run_fetch(&mut self, mut job: FetchJob) {
        let Some(view) = self.view(job.account) else {
            return self.tagged(&job.tag, "NO [NONEXISTENT] Mailbox was removed");
        };
        let needs_body = fetch::needs_body(&job.items);
        while job.next < job.targets.len() {
            if self.out.len() - self.out_start > OUTPUT_CAP {
                self.fetch_job = Some(job);
                return;
            }
            let (seq, u) = job.targets[job.next];
            job.next += 1;
            let Some(meta) = find(&view, u) else { continue };
            if job.changed_since.is_some_and(|c| meta.modseq <= c) {
                continue;
            }
            let body = if needs_body {
                match self.shared.store.read(meta.body) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        tracing::warn!(error = %e, uid = u, "cannot read message body");
                        job.failed = true;
                        continue;
                    }
                }
            } else {
                None
            };
            let force_flags = job.seen.binary_search(&u).is_ok();
            let with_flags = force_flags || job.items.contains(&FetchItem::Flags);
            let ctx = FetchCtx {
                seq,
                meta,
                keywords: &view.keywords,
                raw: body.as_deref(),
                force_uid: job.uid,
                force_modseq: job.changed_since.is_some() || (self.condstore && with_flags),
                force_flags,
            };
            fetch::render(&mut self.out, &ctx, &job.items);
            if with_flags {
                if let Some(k) = self
                    .selected
                    .as_mut()
                    .and_then(|sel| sel.msgs.get_mut(seq as usize - 1))
                {
                    k.flags = meta.flags;
                    k.modseq = meta.modseq;
                }
            }
        }
        if job.failed {
            self.refresh(job.uid);
            return self.tagged(&job.tag, "NO [SERVERBUG] Some messages could not be read");
        }
        self.finish(&job.tag, "OK Fetch completed", job.uid);
    }

    fn search(&mut self, account: AccountId, tag: &str, uid: bool, key: &SearchKey) {
        if search::uses_modseq(key) {
            self.condstore = true;
        }
        let Some(view) = self.view(account) else {
            return self.tagged(tag, "NO [NONEXISTENT] Mailbox was removed");
        };
        let Some(sel) = &self.selected else { return };
        let max_seq = sel.msgs.len() as u32;
        let max_uid = sel.msgs.last().map_or(0, |k| k.uid);
        let store = &self.shared.store;
        let mut hits = Vec::new();
        let mut max_modseq = 0;
        for (i, k) in sel.msgs.iter().enumerate() {
            let Some(meta) = find(&view, k.uid) else {
                continue;
            };
            let mut load = || store.read(meta.body).ok();
            let mut c = Candidate {
                seq: i as u32 + 1,
                max_seq,
                max_uid,
                meta,
                keywords: &view.keywords,
                load: &mut load,
                raw: None,
            };
            if search::matches(key, &mut c) {
                hits.push(if uid { meta.uid } else { i as u32 + 1 });
                max_modseq = max_modseq.max(meta.modseq);
            }
        }
        let mut line = String::from("* SEARCH");
        for h in &hits {
            line.push_str(&format!(" {h}"));
        }
        if search::uses_modseq(key) && !hits.is_empty() {
            line.push_str(&format!(" (MODSEQ {max_modseq})"));
        }
        self.line(&line);
        self.finish(tag, "OK Search completed", uid);
    }

    /// The pending effect finished.
    fn completed(&mut self, pending: Pending, result: EffectResult) {
        let commit = match result {
            EffectResult::Login(r) => {
                let Pending::Login { tag } = pending else {
                    tracing::error!("login result for a non-login effect");
                    return self.close();
                };
                match r {
                    Ok(id) => {
                        self.account = Some(id);
                        let caps = self.capabilities();
                        self.tagged(&tag, &format!("OK [CAPABILITY {caps}] Logged in"));
                    }
                    Err(crate::accounts::LoginError::TryLater(_)) => {
                        self.tagged(&tag, "NO [UNAVAILABLE] Temporary failure, try again later")
                    }
                    Err(_) => self.tagged(&tag, "NO [AUTHENTICATIONFAILED] Authentication failed."),
                }
                return;
            }
            EffectResult::Commit(r) => r,
        };
        let account = self.account.unwrap_or_default();
        match pending {
            Pending::Login { tag } => self.tagged(&tag, "NO [SERVERBUG] Internal error"),
            Pending::Simple { tag, text } => match commit {
                Ok(_) => self.finish(&tag, text, true),
                Err(e) => self.store_error(&tag, &e),
            },
            Pending::Fetch { tag, cmd, seen } => {
                // A failed \Seen update does not fail the FETCH.
                let seen = if commit.is_ok() { seen } else { Vec::new() };
                self.fetch(account, &tag, &cmd, &seen);
            }
            Pending::Store {
                tag,
                uid,
                silent,
                targets,
            } => {
                let modified = match commit {
                    Ok(OpResult::FlagsSet { modified, .. }) => modified,
                    Ok(_) => Vec::new(),
                    Err(e) => return self.store_error(&tag, &e),
                };
                if let Some(view) = self.view(account) {
                    let condstore = self.condstore;
                    let mut o = Vec::new();
                    if let Some(sel) = self.selected.as_mut() {
                        if view.keywords.len() != sel.keywords {
                            sel.keywords = view.keywords.len();
                            flags_lines(&mut o, &view.keywords, sel.read_only);
                        }
                        for (seq, u) in &targets {
                            let Some(m) = find(&view, *u) else { continue };
                            let Some(k) = sel.msgs.get_mut(*seq as usize - 1) else {
                                continue;
                            };
                            if modified.contains(u) {
                                continue;
                            }
                            if !silent || (condstore && k.modseq != m.modseq) {
                                o.extend_from_slice(format!("* {seq} FETCH (FLAGS ").as_bytes());
                                response::flags(&mut o, m.flags, &view.keywords);
                                if uid {
                                    o.extend_from_slice(format!(" UID {u}").as_bytes());
                                }
                                if condstore {
                                    o.extend_from_slice(
                                        format!(" MODSEQ ({})", m.modseq).as_bytes(),
                                    );
                                }
                                o.extend_from_slice(b")\r\n");
                                k.flags = m.flags;
                                k.modseq = m.modseq;
                            } else if silent && k.flags != m.flags {
                                // Our own silent change: the client knows the new flags.
                                k.flags = m.flags;
                                k.modseq = m.modseq;
                            }
                        }
                    }
                    self.out.extend_from_slice(&o);
                }
                if modified.is_empty() {
                    self.finish(&tag, "OK Store completed", uid);
                } else {
                    let mut nums: Vec<u32> = if uid {
                        modified
                    } else {
                        targets
                            .iter()
                            .filter(|t| modified.contains(&t.1))
                            .map(|t| t.0)
                            .collect()
                    };
                    nums.sort_unstable();
                    let set = response::seq_set(&nums);
                    self.refresh(uid);
                    self.tagged(
                        &tag,
                        &format!("OK [MODIFIED {set}] Conditional STORE failed"),
                    );
                }
            }
            Pending::Copy { tag, is_move } => match commit {
                Ok(OpResult::Copied {
                    uid_validity,
                    mut pairs,
                }) => {
                    pairs.sort_unstable();
                    let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
                    let dst: Vec<u32> = pairs.iter().map(|p| p.1).collect();
                    let code = if pairs.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "[COPYUID {uid_validity} {} {}] ",
                            response::seq_set(&src),
                            response::seq_set(&dst)
                        )
                    };
                    if is_move {
                        if !code.is_empty() {
                            self.line(&format!("* OK {code}Moved UIDs."));
                        }
                        self.finish(&tag, "OK Move completed", true);
                    } else {
                        self.finish(&tag, &format!("OK {code}Copy completed"), true);
                    }
                }
                Ok(_) => self.finish(&tag, "OK Copy completed", true),
                Err(e) => self.store_error(&tag, &e),
            },
            Pending::Expunge { tag } => match commit {
                Ok(_) => self.finish(&tag, "OK Expunge completed", true),
                Err(e) => self.store_error(&tag, &e),
            },
            Pending::Close { tag } => {
                self.selected = None;
                match commit {
                    Ok(_) => self.tagged(&tag, "OK Close completed"),
                    Err(e) => self.store_error(&tag, &e),
                }
            }
            Pending::Append { tag } => match commit {
                Ok(OpResult::Appended { uid_validity, uid }) => self.finish(
                    &tag,
                    &format!("OK [APPENDUID {uid_validity} {uid}] Append completed"),
                    true,
                ),
                Ok(_) => self.finish(&tag, "OK Append completed", true),
                Err(e) => self.store_error(&tag, &e),
            },
            Pending::SetMetadata { tag, mut rest } => match commit {
                Ok(_) => match rest.pop_front() {
                    Some(op) => self.commit(op, Pending::SetMetadata { tag, rest }),
                    None => self.finish(&tag, "OK Setmetadata completed", true),
                },
                Err(e) => self.store_error(&tag, &e),
            },
        }
    }

    fn store_error(&mut self, tag: &str, e: &crate::store::Error) {
        use crate::store::Error as E;
        let text = match e {
            E::OverQuota => "NO [OVERQUOTA] Quota exceeded (mailbox for user is full)".to_owned(),
            E::NotFound(what) => format!("NO [NONEXISTENT] No such {what}"),
            E::Exists(_) => "NO [ALREADYEXISTS] Mailbox already exists".to_owned(),
            E::Invalid(why) => format!("NO [CANNOT] {why}"),
            other => {
                tracing::warn!(error = %other, "store write failed");
                "NO [UNAVAILABLE] Internal error, try again later".to_owned()
            }
        };
        self.refresh(true);
        self.tagged(tag, &text);
    }
}

impl crate::session::Session for Session {
    fn receive(&mut self, input: &[u8], now_ms: u64) {
        self.now = now_ms;
        if self.closed || self.awaiting_tls {
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
        let Some(pending) = self.pending.take() else {
            tracing::error!("effect result without a pending effect");
            return;
        };
        self.completed(pending, result);
        self.process();
    }

    fn tls_established(&mut self) {
        self.tls = true;
        self.awaiting_tls = false;
        self.process();
    }

    fn watched_account(&self) -> Option<AccountId> {
        self.account
    }

    fn account_changed(&mut self, now_ms: u64) {
        self.now = now_ms;
        if matches!(self.mode, Mode::Idle { .. })
            && self.pending.is_none()
            && self.fetch_job.is_none()
        {
            self.refresh(true);
        }
    }

    fn next_timeout(&self) -> Option<u64> {
        if self.closed || self.pending.is_some() {
            return None;
        }
        if matches!(self.mode, Mode::Idle { .. }) {
            return Some(self.idle_ping_at);
        }
        let limit = if self.account.is_some() {
            AUTH_TIMEOUT_MS
        } else {
            PREAUTH_TIMEOUT_MS
        };
        Some(self.last_activity + limit)
    }

    fn handle_timeout(&mut self, now_ms: u64) {
        self.now = now_ms;
        let Some(at) = self.next_timeout() else {
            return;
        };
        if now_ms < at {
            return;
        }
        if matches!(self.mode, Mode::Idle { .. }) {
            self.line("* OK Still here");
            self.idle_ping_at = now_ms + IDLE_PING_MS;
        } else {
            self.line("* BYE Disconnected for inactivity.");
            self.close();
        }
    }

    fn wants_input(&self) -> bool {
        !self.closed
            && !self.awaiting_tls
            && self.pending.is_none()
            && self.out.len() - self.out_start <= OUTPUT_CAP
            && self.framer.buffered() <= INPUT_CAP
    }
}

/// `* FLAGS` and `* OK [PERMANENTFLAGS]` for the account's keywords.
fn flags_lines(o: &mut Vec<u8>, keywords: &[String], read_only: bool) {
    o.extend_from_slice(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft");
    for k in keywords.iter().take(flag_bits::MAX_KEYWORDS) {
        o.push(b' ');
        o.extend_from_slice(k.as_bytes());
    }
    if read_only {
        o.extend_from_slice(b")\r\n* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n");
    } else {
        o.extend_from_slice(
            b")\r\n* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft",
        );
        for k in keywords.iter().take(flag_bits::MAX_KEYWORDS) {
            o.push(b' ');
            o.extend_from_slice(k.as_bytes());
        }
        o.extend_from_slice(b" \\*)] Flags permitted.\r\n");
    }
}

/// The message with `uid` in a view (messages are in UID order).
fn find(view: &MailboxView, uid: u32) -> Option<&MessageMeta> {
    view.messages
        .binary_search_by_key(&uid, |m| m.uid)
        .ok()
        .map(|i| &view.messages[i])
}

/// A name we let clients create: `/`-separated non-empty components, no wildcards or controls.
fn valid_mailbox_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|c| !c.is_empty())
        && !name.chars().any(|c| c.is_control() || c == '*' || c == '%')
}

fn same_name(a: &str, b: &str) -> bool {
    a == b || (a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"))
}

fn tag_text(tag: &[u8]) -> String {
    match std::str::from_utf8(tag) {
        Ok(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()) => t.to_owned(),
        _ => "*".to_owned(),
    }
}

/// RFC 6154 attribute for the conventional names.
fn special_use(name: &str) -> Option<&'static str> {
    match name.to_ascii_lowercase().as_str() {
        "sent" | "sent messages" => Some("\\Sent"),
        "drafts" => Some("\\Drafts"),
        "trash" => Some("\\Trash"),
        "junk" | "spam" => Some("\\Junk"),
        _ => None,
    }
}

/// LIST pattern match: `*` matches anything, `%` anything but the delimiter. `INBOX` is
/// case-insensitive. Dynamic programming: O(pattern × name), no recursion.
fn pattern_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = if pattern.len() >= 5
        && pattern.is_char_boundary(5)
        && pattern[..5].eq_ignore_ascii_case("INBOX")
        && name.len() >= 5
        && name.is_char_boundary(5)
        && name[..5].eq_ignore_ascii_case("INBOX")
    {
        (&pattern.as_bytes()[5..], &name.as_bytes()[5..])
    } else {
        (pattern.as_bytes(), name.as_bytes())
    };
    // m[j]: pattern prefix so far matches name prefix of length j.
    let mut m = vec![false; n.len() + 1];
    m[0] = true;
    for &pc in p {
        let mut next = vec![false; n.len() + 1];
        match pc {
            b'*' | b'%' => {
                for j in 0..=n.len() {
                    next[j] = m[j] || (j > 0 && next[j - 1] && (pc == b'*' || n[j - 1] != b'/'));
                }
            }
            c => {
                for j in 1..=n.len() {
                    next[j] = m[j - 1] && n[j - 1] == c;
                }
            }
        }
        m = next;
    }
    m[n.len()]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod unit {
    use super::*;

    #[test]
    fn list_patterns() {
        assert!(pattern_matches("*", "a/b"));
        assert!(pattern_matches("%", "a"));
        assert!(!pattern_matches("%", "a/b"));
        assert!(pattern_matches("a/%", "a/b"));
        assert!(pattern_matches("inbox", "INBOX"));
        assert!(!pattern_matches("x*", "INBOX"));
        assert!(pattern_matches(&"*".repeat(60), &"ab".repeat(60)));
        assert!(!pattern_matches(&"*a".repeat(60), &"b".repeat(60)));
        assert!(pattern_matches("%/%", "a/b"));
        assert!(!pattern_matches("%b", "a/b"));
    }
}
