//! The single writer thread: group commit.
//!
//! It takes every queued request, validates each [`Op`] against its private copy of the index
//! (which already includes the earlier ops of the same batch), assigns ids/UIDs/modseqs, places
//! the records in the log, writes the batch and `fdatasync`s once, then applies the same records
//! to the index readers share, wakes watchers and completes the callers.
//!
//! The private index is a second copy of the shared one, kept equal by applying the same records
//! to both; it lets validation see uncommitted ops without readers ever seeing them, and never
//! holds the shared lock during I/O. An I/O error stops the writer: every op of the failed batch
//! gets the error and later commits get [`Error::Closed`] (after a failed `fdatasync` the page
//! cache may not match the disk, so continuing would be unsafe).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::checkpoint;
use super::format::{InsertEntry, Record};
use super::index::{Index, INBOX_ID};
use super::log::{Log, Position};
use super::{
    flag_bits, AccountId, DeliverError, Error, Flag, FlagMode, Op, OpResult, Shared, StoreConfig,
};

/// Largest metadata value accepted (RFC 5464 servers limit it; Dovecot's default is 64 KiB).
pub const MAX_METADATA_VALUE: usize = 64 * 1024;
/// Longest mailbox name accepted.
pub const MAX_MAILBOX_NAME: usize = 512;

/// Replayed records at open above which shutdown writes a checkpoint even without new writes.
const REPLAY_WORTH_CHECKPOINT: u64 = 1024;

/// Most ops in one group commit.
const MAX_BATCH_OPS: usize = 4096;
/// Message bytes after which a batch stops taking more ops (bounds the batch buffer).
const MAX_BATCH_BYTES: usize = 32 << 20;

/// A request to the writer thread.
pub enum Msg {
    /// A write.
    Op(Op, oneshot::Sender<Result<OpResult, Error>>),
    /// Write a checkpoint now.
    Checkpoint(mpsc::SyncSender<Result<(), Error>>),
}

/// What a background checkpoint thread returns: its position, and the previous checkpoint's.
type BackgroundResult = (Position, Result<Option<Position>, Error>);

impl Msg {
    /// Message bytes the request will write.
    fn body_len(&self) -> usize {
        match self {
            Msg::Op(Op::Deliver { body, .. } | Op::Append { body, .. }, _) => body.len(),
            _ => 0,
        }
    }
}

/// The writer thread's state.
pub struct Writer {
    log: Log,
    index: Index,
    config: StoreConfig,
    shared: Arc<Shared>,
    index_dir: PathBuf,
    /// Position of the newest checkpoint written or loaded.
    last_checkpoint: Option<Position>,
    /// `log.appended` at the last checkpoint.
    appended_at_checkpoint: u64,
    /// Records replayed at open (a long replay is worth a checkpoint at shutdown).
    replayed: u64,
    /// A checkpoint being written by another thread: its position and outcome.
    background: Option<std::thread::JoinHandle<BackgroundResult>>,
}

fn copy_io(e: &Error) -> Error {
    match e {
        Error::Io { op, path, source } => Error::Io {
            op,
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        _ => Error::Closed,
    }
}

impl Writer {
    /// A writer continuing `log` with the replayed `index`.
    pub fn new(
        log: Log,
        index: Index,
        config: StoreConfig,
        shared: Arc<Shared>,
        index_dir: PathBuf,
        last_checkpoint: Option<Position>,
        replayed: u64,
    ) -> Self {
        Writer {
            log,
            index,
            config,
            shared,
            index_dir,
            last_checkpoint,
            appended_at_checkpoint: 0,
            replayed,
            background: None,
        }
    }

    /// Bytes of log after which the writer takes a checkpoint on its own.
    fn checkpoint_every(&self) -> u64 {
        self.config.segment_size.saturating_mul(4).max(1 << 20)
    }

    /// Run until every `Store` handle is gone (the channel closes) or an I/O error.
    pub fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut pending = Vec::new();
        let mut completions = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut bytes = first.body_len();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_OPS && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(m) => {
                        bytes += m.body_len();
                        batch.push(m);
                    }
                    Err(_) => break,
                }
            }
            let mut fatal: Option<Error> = None;
            let mut checkpoints = Vec::new();
            for msg in batch {
                match msg {
                    Msg::Op(op, done) => {
                        if fatal.is_some() {
                            completions.push((done, Err(Error::Closed)));
                            continue;
                        }
                        let res = self.plan(op, &mut pending);
                        if let Err(e @ Error::Io { .. }) = &res {
                            fatal = Some(copy_io(e));
                        }
                        completions.push((done, res));
                    }
                    Msg::Checkpoint(done) => checkpoints.push(done),
                }
            }
            if fatal.is_none() {
                if let Err(e) = self.log.commit() {
                    fatal = Some(e);
                }
            }
            if let Some(e) = fatal {
                tracing::error!(error = %e, "store writer failed, closing the store");
                for (done, _) in completions.drain(..) {
                    let _ = done.send(Err(copy_io(&e)));
                }
                for done in checkpoints {
                    let _ = done.send(Err(copy_io(&e)));
                }
                // Wait for a checkpoint in flight (its snapshot was committed state), but
                // remove no segment: the private index may hold uncommitted changes.
                if let Some(h) = self.background.take() {
                    let _ = h.join();
                }
                return;
            }
            self.publish(&mut pending);
            {
                let st = &self.shared.stats;
                st.batches.fetch_add(1, Relaxed);
                st.ops.fetch_add(completions.len() as u64, Relaxed);
                st.fsyncs.store(self.log.syncs, Relaxed);
                st.bytes_written.store(self.log.appended, Relaxed);
            }
            for (done, res) in completions.drain(..) {
                let _ = done.send(res);
            }
            if checkpoints.is_empty()
                && self.log.appended - self.appended_at_checkpoint >= self.checkpoint_every()
            {
                self.checkpoint_in_background();
            }
            self.finish_background(false);
            for done in checkpoints {
                let _ = done.send(self.checkpoint());
            }
        }
        self.finish_background(true);
        // At shutdown: checkpoint if anything was written since the last one, or if this open
        // had to replay much.
        if self.log.appended > self.appended_at_checkpoint
            || self.replayed >= REPLAY_WORTH_CHECKPOINT
        {
            if let Err(e) = self.checkpoint() {
                tracing::warn!(error = %e, "store checkpoint at shutdown failed");
            }
        }
    }

    /// Apply committed records to the shared index and wake watchers.
    fn publish(&mut self, pending: &mut Vec<Record>) {
        if pending.is_empty() {
            return;
        }
        let mut touched = BTreeSet::new();
        {
            let mut index = self
                .shared
                .index
                .write()
                .expect("index lock should not be poisoned");
            for rec in pending.iter() {
                if let Some(a) = index.apply(rec) {
                    touched.insert(a);
                }
                // One body delivered to several accounts touches all of them, not only the one
                // `apply` reports: every recipient's IDLE must wake.
                if let Record::Insert { entries, .. } = rec {
                    touched.extend(entries.iter().map(|e| e.account));
                }
            }
        }
        pending.clear();
        if touched.is_empty() {
            return;
        }
        let mut watchers = self
            .shared
            .watchers
            .lock()
            .expect("watchers lock should not be poisoned");
        for a in touched {
            if let Some(tx) = watchers.get(&a) {
                if tx.receiver_count() == 0 {
                    watchers.remove(&a);
                } else {
                    let modseq = self.index.account(a).map_or(0, |acc| acc.modseq);
                    tx.send_replace(modseq);
                }
            }
        }
    }

    /// Write a checkpoint of the committed index (called between batches, when the private
    /// index equals the shared one), then delete segments no longer needed.
    pub fn checkpoint(&mut self) -> Result<(), Error> {
        self.finish_background(true);
        let pos = self.log.position();
        self.appended_at_checkpoint = self.log.appended;
        if self.last_checkpoint == Some(pos) {
            return Ok(());
        }
        let previous = checkpoint::write(&self.index_dir, &self.index, pos)?;
        self.last_checkpoint = Some(pos);
        self.remove_segments(previous)
    }

    /// Start writing a checkpoint on another thread (the periodic one): the snapshot is taken
    /// here, at a batch boundary; serializing and syncing it does not delay commits.
    fn checkpoint_in_background(&mut self) {
        if self.background.is_some() {
            return;
        }
        let pos = self.log.position();
        self.appended_at_checkpoint = self.log.appended;
        if self.last_checkpoint == Some(pos) {
            return;
        }
        let cp = checkpoint::snapshot(&self.index, pos);
        let dir = self.index_dir.clone();
        let spawned = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || (pos, checkpoint::write_snapshot(&dir, &cp)));
        match spawned {
            Ok(h) => self.background = Some(h),
            Err(e) => tracing::warn!(error = %e, "cannot start checkpoint thread"),
        }
    }

    /// Collect a finished background checkpoint (or wait for it) and remove the segments it
    /// made unnecessary.
    fn finish_background(&mut self, wait: bool) {
        if !wait && !self.background.as_ref().is_some_and(|h| h.is_finished()) {
            return;
        }
        let Some(h) = self.background.take() else {
            return;
        };
        match h.join() {
            Ok((pos, Ok(previous))) => {
                self.last_checkpoint = Some(pos);
                if let Err(e) = self.remove_segments(previous) {
                    tracing::warn!(error = %e, "removing old segments failed");
                }
            }
            Ok((_, Err(e))) => tracing::warn!(error = %e, "store checkpoint failed"),
            Err(_) => tracing::error!("store checkpoint thread panicked"),
        }
    }

    /// Delete segments before the previous checkpoint that hold no live body.
    fn remove_segments(&mut self, previous: Option<Position>) -> Result<(), Error> {
        let Some(previous) = previous else {
            return Ok(());
        };
        let refs = &self.index.seg_refs;
        let removed = self
            .log
            .remove_unused(previous.segment, |s| refs.contains_key(&s))?;
        tracing::debug!(?previous, removed, "old segments removed");
        Ok(())
    }

    fn emit(&mut self, rec: Record, pending: &mut Vec<Record>) -> Result<(), Error> {
        self.log.append_record(&rec)?;
        self.index.apply(&rec);
        pending.push(rec);
        Ok(())
    }

    /// Validate `op`, place its records and apply them to the private index.
    fn plan(&mut self, op: Op, pending: &mut Vec<Record>) -> Result<OpResult, Error> {
        let max = self.config.max_mailbox_size;
        match op {
            Op::CreateAccount {
                addr,
                password_hash,
                now,
            } => {
                let addr = addr.to_lowercase();
                if addr.is_empty() || addr.len() > 320 || addr.chars().any(char::is_control) {
                    return Err(Error::Invalid("bad address"));
                }
                if self.index.by_addr.contains_key(&addr) {
                    return Err(Error::Exists("account"));
                }
                let id = self.index.next_account_id.max(1);
                let now32 = u32::try_from(now.max(0)).unwrap_or(u32::MAX);
                let inbox_uid_validity = self.index.last_uid_validity.saturating_add(1).max(now32);
                self.emit(
                    Record::AccountCreate {
                        id,
                        addr,
                        password_hash,
                        created: now,
                        inbox_uid_validity,
                    },
                    pending,
                )?;
                Ok(OpResult::AccountCreated(id))
            }
            Op::SetLastLogin { account, day } => {
                let acc = self
                    .index
                    .account(account)
                    .ok_or(Error::NotFound("account"))?;
                if acc.last_login_day != day {
                    self.emit(Record::LastLogin { account, day }, pending)?;
                }
                Ok(OpResult::Done)
            }
            Op::DeleteAccount { account } => {
                self.index
                    .account(account)
                    .ok_or(Error::NotFound("account"))?;
                self.emit(Record::AccountDelete { id: account }, pending)?;
                Ok(OpResult::Done)
            }
            Op::Deliver {
                recipients,
                internal_date,
                body,
            } => {
                let size = body_len(&body)?;
                let mut results = Vec::with_capacity(recipients.len());
                let mut entries = Vec::new();
                // Earlier recipients of the same op (duplicates): (bytes, uids).
                let mut extra: HashMap<AccountId, (u64, u32)> = HashMap::new();
                for r in recipients {
                    let Some(acc) = self.index.account(r) else {
                        results.push(Err(DeliverError::NoSuchAccount));
                        continue;
                    };
                    let Some(inbox) = acc.mailboxes.get(&INBOX_ID) else {
                        results.push(Err(DeliverError::NoSuchAccount));
                        continue;
                    };
                    let ex = extra.entry(r).or_default();
                    if acc.bytes_used + ex.0 + u64::from(size) > max {
                        results.push(Err(DeliverError::OverQuota));
                        continue;
                    }
                    // UID u32::MAX is never handed out, so `uid_next` cannot wrap.
                    let Some(uid) = inbox.uid_next.checked_add(ex.1).filter(|u| *u < u32::MAX)
                    else {
                        results.push(Err(DeliverError::OverQuota));
                        continue;
                    };
                    let modseq = acc.modseq + 1 + u64::from(ex.1);
                    ex.0 += u64::from(size);
                    ex.1 += 1;
                    entries.push(InsertEntry {
                        account: r,
                        mailbox: INBOX_ID,
                        uid,
                        modseq,
                        flags: 0,
                    });
                    results.push(Ok(uid));
                }
                if !entries.is_empty() {
                    let body = self.log.append_body(&body)?;
                    self.emit(
                        Record::Insert {
                            body,
                            internal_date,
                            entries,
                        },
                        pending,
                    )?;
                }
                Ok(OpResult::Delivered(results))
            }
            Op::Append {
                account,
                mailbox,
                flags,
                internal_date,
                body,
            } => {
                let size = body_len(&body)?;
                let acc = self
                    .index
                    .account(account)
                    .ok_or(Error::NotFound("account"))?;
                let mb = acc
                    .mailboxes
                    .get(&mailbox)
                    .ok_or(Error::NotFound("mailbox"))?;
                if acc.bytes_used + u64::from(size) > max {
                    return Err(Error::OverQuota);
                }
                let (bits, new_keywords) = resolve_flags(&self.index, account, &flags, true)?;
                let (uid, modseq, uid_validity) = (mb.uid_next, acc.modseq + 1, mb.uid_validity);
                if uid == u32::MAX {
                    return Err(Error::Invalid("UIDs exhausted"));
                }
                for name in new_keywords {
                    self.emit(Record::Keyword { account, name }, pending)?;
                }
                let body = self.log.append_body(&body)?;
                self.emit(
                    Record::Insert {
                        body,
                        internal_date,
                        entries: vec![InsertEntry {
                            account,
                            mailbox,
                            uid,
                            modseq,
                            flags: bits,
                        }],
                    },
                    pending,
                )?;
                Ok(OpResult::Appended { uid_validity, uid })
            }
            Op::SetFlags {
                account,
                mailbox,
                uids,
                mode,
                flags,
                unchanged_since,
            } => {
                let acc = self
                    .index
                    .account(account)
                    .ok_or(Error::NotFound("account"))?;
                acc.mailboxes
                    .get(&mailbox)
                    .ok_or(Error::NotFound("mailbox"))?;
                let (bits, new_keywords) =
                    resolve_flags(&self.index, account, &flags, mode != FlagMode::Remove)?;
                for name in new_keywords {
                    self.emit(Record::Keyword { account, name }, pending)?;
                }
                let acc = self
                    .index
                    .account(account)
                    .ok_or(Error::NotFound("account"))?;
                let mb = acc
                    .mailboxes
                    .get(&mailbox)
                    .ok_or(Error::NotFound("mailbox"))?;
                let modseq = acc.modseq + 1;
                let mut uids = uids;
                uids.sort_unstable();
                uids.dedup();
                let mut changes = Vec::new();
                let mut modified = Vec::new();
                for uid in uids {
                    let Some(i) = mb.find(uid) else { continue };
                    let m = &mb.messages[i];
                    if unchanged_since.is_some_and(|us| m.modseq > us) {
                        modified.push(uid);
                        continue;
                    }
                    let new = match mode {
                        FlagMode::Add => m.flags | bits,
                        FlagMode::Remove => m.flags & !bits,
                        FlagMode::Replace => bits,
                    };
                    if new != m.flags {
                        changes.push((uid, new));
                    }
                }
                let changed = changes.iter().map(|&(u, f)| (u, f, modseq)).collect();
                if !changes.is_empty() {
                    self.emit(
                        Record::Flags {
                            account,
                            mailbox,
                            modseq,
                            changes,
                        },
                        pending,
                    )?;
                }
                Ok(OpResult::FlagsSet { changed, modified })
            }
            Op::Expunge {
                account,
                mailbox,
                uids,
            } => {
                let acc = self
                    .index
                    .account(account)
                    .ok_or(Error::NotFound("account"))?;
                let mb = acc
                    .mailboxes
                    .get(&mailbox)
                    .ok_or(Error::NotFound("mailbox"))?;
                let mut uids = uids;
                uids.sort_unstable();
                uids.dedup();
                uids.retain(|u| mb.find(*u).is_some());
                if !uids.is_empty() {
                    let modseq = acc.modseq + 1;
                    self.emit(
                        Record::Expunge {
                            account,
                            mailbox,
                            modseq,
                            uids: uids.clone(),
                        },
                        pending,
                    )?;
                }
                Ok(OpResult::Expunged(uids))
            }
            Op::Copy {
                account,
                from,
                to,
                uids,
                remove_source,
            } => {
                let acc = self
                    .index
                    .account(account)
                    .ok_or(Error::NotFound("account"))?;
                let src = acc.mailboxes.get(&from).ok_or(Error::NotFound("mailbox"))?;
                let dst = acc.mailboxes.get(&to).ok_or(Error::NotFound("mailbox"))?;
                let mut uids = uids;
                uids.sort_unstable();
                uids.dedup();
                let mut bytes = 0u64;
                let mut pairs = Vec::new();
                for uid in uids {
                    if let Some(i) = src.find(uid) {
                        bytes += u64::from(src.messages[i].size);
                        let new = dst
                            .uid_next
                            .checked_add(u32::try_from(pairs.len()).unwrap_or(u32::MAX))
                            .filter(|u| *u < u32::MAX)
                            .ok_or(Error::Invalid("UIDs exhausted"))?;
                        pairs.push((uid, new));
                    }
                }
                let uid_validity = dst.uid_validity;
                if !remove_source && acc.bytes_used + bytes > max {
                    return Err(Error::OverQuota);
                }
                if !pairs.is_empty() {
                    let modseq = acc.modseq + 1;
                    self.emit(
                        Record::Copy {
                            account,
                            from,
                            to,
                            modseq,
                            remove_source,
                            pairs: pairs.clone(),
                        },
                        pending,
                    )?;
                }
                Ok(OpResult::Copied {
                    uid_validity,
                    pairs,
                })
            }
            Op::CreateMailbox { account, name } => {
                let acc = self
                    .index
                    .account(account)
                    .ok_or(Error::NotFound("account"))?;
                check_mailbox_name(&name)?;
                if acc.mailbox_by_name(&name).is_some() {
                    return Err(Error::Exists("mailbox"));
                }
                let id = acc.next_mailbox_id;
                let uid_validity = self.index.last_uid_validity.saturating_add(1);
                self.emit(
                    Record::MailboxCreate {
                        account,
                        id,
                        name,
                        uid_validity,
                    },
                    pending,
                )?;
                Ok(OpResult::MailboxCreated(id))
            }
            Op::DeleteMailbox { account, mailbox } => {
                let acc = self
                    .index
                    .account(account)
                    .ok_or(Error::NotFound("account"))?;
                if mailbox == INBOX_ID {
                    return Err(Error::Invalid("INBOX cannot be deleted"));
                }
                acc.mailboxes
                    .get(&mailbox)
                    .ok_or(Error::NotFound("mailbox"))?;
                self.emit(
                    Record::MailboxDelete {
                        account,
                        id: mailbox,
                    },
                    pending,
                )?;
                Ok(OpResult::Done)
            }
            Op::RenameMailbox {
                account,
                mailbox,
                to,
            } => {
                let acc = self
                    .index
                    .account(account)
                    .ok_or(Error::NotFound("account"))?;
                if mailbox == INBOX_ID {
                    return Err(Error::Invalid("INBOX cannot be renamed"));
                }
                let old = &acc
                    .mailboxes
                    .get(&mailbox)
                    .ok_or(Error::NotFound("mailbox"))?
                    .name;
                check_mailbox_name(&to)?;
                if acc.mailbox_by_name(&to).is_some() {
                    return Err(Error::Exists("mailbox"));
                }
                let prefix = format!("{old}/");
                if to.starts_with(&prefix) {
                    return Err(Error::Invalid("cannot rename a mailbox into itself"));
                }
                for mb in acc.mailboxes.values() {
                    if let Some(rest) = mb.name.strip_prefix(&prefix) {
                        if acc.mailbox_by_name(&format!("{to}/{rest}")).is_some() {
                            return Err(Error::Exists("mailbox"));
                        }
                    }
                }
                self.emit(
                    Record::MailboxRename {
                        account,
                        id: mailbox,
                        name: to,
                    },
                    pending,
                )?;
                Ok(OpResult::Done)
            }
            Op::Subscribe {
                account,
                name,
                subscribed,
            } => {
                let acc = self
                    .index
                    .account(account)
                    .ok_or(Error::NotFound("account"))?;
                if name.is_empty() || name.len() > MAX_MAILBOX_NAME {
                    return Err(Error::Invalid("bad mailbox name"));
                }
                let name = if name.eq_ignore_ascii_case("INBOX") {
                    "INBOX".to_owned()
                } else {
                    name
                };
                if acc.subscriptions.contains(&name) != subscribed {
                    self.emit(
                        Record::Subscribe {
                            account,
                            name,
                            subscribed,
                        },
                        pending,
                    )?;
                }
                Ok(OpResult::Done)
            }
            Op::SetMetadata {
                account,
                mailbox,
                key,
                value,
            } => {
                let acc = self
                    .index
                    .account(account)
                    .ok_or(Error::NotFound("account"))?;
                if let Some(m) = mailbox {
                    acc.mailboxes.get(&m).ok_or(Error::NotFound("mailbox"))?;
                }
                if key.is_empty() || key.len() > 1024 || key.chars().any(char::is_control) {
                    return Err(Error::Invalid("bad metadata entry name"));
                }
                if value.as_ref().is_some_and(|v| v.len() > MAX_METADATA_VALUE) {
                    return Err(Error::Invalid("metadata value too large"));
                }
                let current = acc.metadata.get(&(mailbox, key.clone()));
                if current != value.as_ref() {
                    self.emit(
                        Record::Metadata {
                            account,
                            mailbox,
                            key,
                            value,
                        },
                        pending,
                    )?;
                }
                Ok(OpResult::Done)
            }
        }
    }
}

fn body_len(body: &[u8]) -> Result<u32, Error> {
    u32::try_from(body.len())
        .ok()
        .filter(|l| *l < u32::MAX - 16)
        .ok_or(Error::Invalid("message too large"))
}

/// A mailbox name the store accepts: `/`-separated non-empty parts, no control characters, no
/// LIST wildcards.
pub fn check_mailbox_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_MAILBOX_NAME
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && !name.chars().any(|c| c.is_control() || c == '*' || c == '%');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid("bad mailbox name"))
    }
}

/// Flag bits for `flags`, and the keywords that must be defined first (if `define`; otherwise
/// unknown keywords are ignored).
fn resolve_flags(
    index: &Index,
    account: AccountId,
    flags: &[Flag],
    define: bool,
) -> Result<(u64, Vec<String>), Error> {
    let acc = index.account(account).ok_or(Error::NotFound("account"))?;
    let mut bits = 0u64;
    let mut new: Vec<String> = Vec::new();
    for f in flags {
        bits |= match f {
            Flag::Seen => flag_bits::SEEN,
            Flag::Answered => flag_bits::ANSWERED,
            Flag::Flagged => flag_bits::FLAGGED,
            Flag::Deleted => flag_bits::DELETED,
            Flag::Draft => flag_bits::DRAFT,
            Flag::Keyword(k) => {
                if k.is_empty()
                    || k.len() > 128
                    || k.starts_with('\\')
                    || k.chars()
                        .any(|c| c.is_control() || c.is_whitespace() || "(){%*\"\\]".contains(c))
                {
                    return Err(Error::Invalid("bad keyword"));
                }
                let i = match acc.keyword(k) {
                    Some(i) => i,
                    None => match new.iter().position(|n| n.eq_ignore_ascii_case(k)) {
                        Some(j) => acc.keywords.len() + j,
                        None if define => {
                            new.push(k.clone());
                            acc.keywords.len() + new.len() - 1
                        }
                        None => continue,
                    },
                };
                if i >= flag_bits::MAX_KEYWORDS {
                    return Err(Error::Invalid("too many keywords"));
                }
                1u64 << (flag_bits::KEYWORD_SHIFT + i as u32)
            }
        };
    }
    Ok((bits, new))
}
