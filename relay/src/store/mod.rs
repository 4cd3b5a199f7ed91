//! The message store: one append-only log of records split into segment files, read back through
//! `memmap2`, with an in-memory index (accounts, mailboxes, UIDs, flags, modseq) rebuilt from the
//! log or loaded from an rkyv checkpoint at start.
//!
//! # Guarantees
//! - A write (`commit`) resolves only after its record is `fdatasync`ed: the caller may then answer
//!   `250`/`OK`. Concurrent commits are grouped: one `fdatasync` serves every record of a batch.
//! - After `kill -9` at any moment, `open` cuts a torn tail and every committed record is present.
//! - This process is the only writer (a `flock` on the directory enforces it). Only the store
//!   touches its files.
//! - Readers never see a record before it is durable and applied to the index.
//! - IDLE wake-ups: `watch(account)` changes after each committed change of that account; no
//!   message data is copied to wake a session.
//! - The outbound queue has the same guarantees: an `Op::Enqueue` resolves once its entries are
//!   durable (the `250` for a remote recipient may then be sent), survives `kill -9` and
//!   restarts, and its body stays on disk until every entry referring to it is done
//!   (`Op::QueueDone`). `queue_watch()` changes after each commit that adds queue entries.
//!
//! # No I/O outside
//! Reads are synchronous and in memory (index) or from the mmap (bodies). Writes go to one writer
//! thread that batches, writes, syncs, applies to the index and then completes the callers.
//!
//! # Files
//! - `<dir>/lock`: `flock`ed while open ([`Error::Locked`] for a second opener).
//! - `<dir>/log/<seq:020>.seg`: segments of the log, preallocated to `segment_size` (a message
//!   larger than that gets a segment of its own size) and ended by a Seal record; record format
//!   in [`format`](mod@format). A body is stored once; index records point at it with a [`BodyRef`].
//!   A queued message's body holds its envelope before the message (`record/queue_add.rs`).
//! - `<dir>/reserve`: preallocated space given up on a full disk for ops that free space.
//! - `<dir>/index/<seq:020>-<offset:020>.rkyv`: checkpoints of the index at a log position
//!   (newest two kept); `open` loads the newest valid one and replays the log after it.
//!
//! # Modules
//! `format` (pure framing and field codec), `record` (one module per record kind: its data,
//! payload codec, index application and the planning of the ops that write it, all reached
//! through the `registry!` there), `log` (segments: recovery, append, removal), `mmap` (the only
//! `unsafe`), `index` (in-memory state and its read views, changed only by applying records),
//! `queue` (the outbound queue's part of the index: compact entries per destination, shared
//! between the index's two copies),
//! `writer` (group commit, watchers), `checkpoint` (rkyv snapshots of the index), `backup` (a
//! consistent copy of the open store), `check` (offline verification of a stopped one), `mailstore`
//! (the [`Mailstore`] trait sessions use), `memory` ([`MemoryStore`], the same planning and
//! index code without a disk, for session tests).
//!
//! Files and directories are created in these places only: `Store::open` (the store directory
//! and `lock`), `log::Log::recover` (the log directory), `log::new_segment` (segments),
//! `log::Log::restore_reserve` (the space reserve) and `checkpoint::write_snapshot` (the index
//! directory and checkpoints), and in a backup's directory `backup::write` (the copy's store
//! and log directories and segments). A new directory's entry is synced in its parent. The record kinds and the
//! in-memory store create none.
//!
//! # How to add a record kind
//! 1. Take the next free kind byte (the table in `record/mod.rs`); never reuse one, old logs
//!    hold them.
//! 2. New file `record/<kind>.rs` (start from a small one such as `last_login.rs`), with a
//!    module doc giving the kind byte, the op(s) that write it and the payload layout:
//!    - the record struct, fields documented;
//!    - `impl Kind`: `encode` and `decode` (the field order *is* the on-disk format), `apply`
//!      (change the `Index`; never fail or panic, ignore references to what is missing; return
//!      the account whose modseq changed, so its IDLE watchers wake), and `also_wakes` if
//!      further accounts must wake;
//!    - `plan` for the op that writes it: validate against `p.index()` (which already holds
//!      the earlier ops of the batch), decide ids, UIDs and modseqs, then `p.emit(rec.into())`;
//!      return every refusal before the first `emit`;
//!    - `#[cfg(test)] mod test_data` with `arbitrary()` (a proptest strategy) and `golden()`
//!      (fixed records with their frame bytes in hex; the hex is written once, from the
//!      failure message of `format::tests::encoding_is_stable`, and never changed afterwards).
//! 3. In `record/mod.rs`: `pub mod <kind>;`, one line `byte => Variant(module),` in
//!    `registry!`, and a row in the table of its module doc. The codec, replay, the writer and
//!    the in-memory store need nothing more.
//! 4. A new op: its variant in [`Op`] (and in [`OpResult`] if it answers more than `Done`),
//!    one arm in `record::plan`, one in `Op::body_len` if it carries a message body, one in
//!    `Op::space_bound` if it writes more than a small record (the bound must cover what it
//!    writes, or on a full disk it fails its batch instead of being refused alone), and one in
//!    `Op::frees_space` if it frees space (it may then use the reserve). Add it to the
//!    generator of `memory::tests` so the double is checked against the disk for it.
//! 5. New state in the index (not just new values of existing fields): the field in
//!    `index.rs` and a read method on `Index` (or on the field's type) used by [`Store`] and
//!    [`MemoryStore`] (and [`Mailstore`] if sessions read it). State that refers to bodies
//!    counts them in `Index::seg_refs` (in `apply` and when a checkpoint is loaded), or segment
//!    removal deletes them. The checkpoint (`checkpoint.rs`) must then carry it
//!    too; its archived types are on disk, so a new field means a new `MAGIC` with the old
//!    layout still loaded (as empty state), never a changed layout under the old `MAGIC`.
//! 6. Tests of the op's behaviour in `tests.rs` (or a sibling such as `queue_tests.rs`: real
//!    files, reopen); the record's frame in `fuzz/seeds.py` (`records`), then
//!    `python3 fuzz/seeds.py`; then `cargo test -p relay --lib store::`.
//!
//! The outbound queue (kinds 16 and 17, `queue.rs`) was the first kind added this way: the
//! steps above were all it needed, plus its own watch channel in the writer's publish step.
//!
//! # Hazards (what could lose or corrupt data, and what prevents it)
//! - *Torn write at a crash*: every frame has a length and a CRC32C; recovery keeps the longest
//!   valid prefix, zeroes the rest of the segment and deletes later segments (a batch that spans
//!   two segments seals and syncs the first before anything is written to the second, which is
//!   created empty beforehand, so a later segment never holds acknowledged data after a torn
//!   one; an empty later segment is a leftover and deleted).
//! - *Acknowledging before durable*: callers are completed only after `fdatasync` of every
//!   segment written in the batch (and the directory, when a segment was created).
//! - *Reader sees uncommitted state*: the writer validates against a private copy of the index
//!   and applies to the shared one only after the sync.
//! - *Mapped file changes under a reader*: see the contract in `store/mmap.rs`; only bytes past the committed
//!   length are ever written, segments are never truncated while mapped, removal unmaps first.
//! - *Checkpoint torn or corrupt*: written to a temp file, fsynced, renamed, directory fsynced;
//!   CRC + rkyv validation on load; fallback to the previous checkpoint or a full replay.
//! - *Segment removed too early*: only segments before the *previous* checkpoint, holding no body
//!   referenced by the index (a message or a queue entry); if every checkpoint is unreadable
//!   after that, `open` says [`Error::Corrupt`] instead of building a partial index.
//! - *I/O error or full disk while writing*: the failed batch gets the error and is undone (the
//!   log cut back to where it began, its bytes zeroed and synced over whatever the page cache
//!   holds, the segments it created deleted); the writer keeps serving and retries (see
//!   `writer.rs`). An op answered with an I/O error may still turn out committed after a
//!   restart, if the cut-back did not reach the disk (never the reverse).
//! - *Full disk*: segments are preallocated with `fallocate` (zeros written where it is not
//!   supported, never a sparse file), so a record never meets `ENOSPC` half-way and the rest of
//!   the active segment stays usable; an op is refused ([`Error::NoSpace`]) before anything of
//!   it is placed when it would need a new segment the disk has no room for. `<dir>/reserve`
//!   is a preallocated file (a segment's size, at most 1 MiB) released on a full disk for ops
//!   that free space (expunge, flag changes, mailbox and account deletion, queue entries done,
//!   a group of only those), whose records then go to a small segment made in its place;
//!   deliveries and enqueues are refused while only the reserve is left, and the reserve is
//!   taken back first when space returns. Space is given back to the file system only when old
//!   segments are removed after checkpoints, and a checkpoint needs room for its file.
//! - *Compaction* (`record/body_move.rs`): after a checkpoint the writer chooses, one after
//!   the other, each old segment whose live bodies fill at most a quarter of it and copies them
//!   into the active segment, a step of at most 1 MiB per batch of its own between the others' batches, each
//!   step pointing its entries at the copies (kind 21); the old segment then has no live body
//!   and goes at a later checkpoint like any other. A crash before a step is durable leaves
//!   copies nothing refers to (gone with their segment); after it, replay applies the move.
//!   A segment holding a queued message's body is never chosen. Readers are unaffected (see
//!   the kind's module).
//! - *Memory*: the index exists twice (shared and the writer's copy). The queue's entries and
//!   the mailboxes' messages are in chunks shared between the two (`queue.rs`,
//!   `messages.rs`): about 24 bytes per queued message and 48 per stored message (plus slack)
//!   in all. Other parts (accounts, names, metadata) are still held twice.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex, RwLock};

pub mod backup;
pub mod check;
mod checkpoint;
mod chunks;
mod fault;
#[deny(clippy::disallowed_methods, clippy::disallowed_types)] // sans-I/O record format
pub mod format;
mod index;
mod log;
mod mailstore;
pub mod memory;
mod messages;
// The only unsafe code of the store: `Mmap::map` of segment files, under the contract documented
// in that module (single writer process, no truncation while mapped, readers below the published
// length).
#[allow(unsafe_code)]
mod mmap;
pub mod notify;
#[deny(clippy::disallowed_methods, clippy::disallowed_types)] // sans-I/O index state
mod queue;
#[deny(clippy::disallowed_methods, clippy::disallowed_types)] // sans-I/O record format
pub mod record;
mod writer;

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod queue_tests;
#[cfg(test)]
mod tests;

pub use log::Position;
pub use mailstore::{Commit, Mailstore};
pub use memory::MemoryStore;
pub use notify::PendingNotify;
pub use queue::{QueueDestination, QueueId, MAX_DESTINATIONS, MAX_RECIPIENTS};
pub use record::GROUP_STOPPED;

/// Identifies an account; stable for the account's life, never reused while the store is open.
pub type AccountId = u32;
/// Identifies a mailbox within its account.
pub type MailboxId = u32;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a store file.
    #[error("store i/o error during {op} on {path}: {source}")]
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The file concerned.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file system is full (`ENOSPC`, `EDQUOT`): a temporary failure, the writer retries and
    /// resumes once space is back (SMTP `452 4.3.1`, IMAP `NO [OVERQUOTA]`).
    #[error("store out of disk space during {op} on {path}")]
    NoSpace {
        /// What the store was doing.
        op: &'static str,
        /// The file concerned.
        path: String,
    },
    /// The account, mailbox or message does not exist.
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The thing to create exists already.
    #[error("{0} exists already")]
    Exists(&'static str),
    /// The account's quota (`max_mailbox_size` bytes, `max_mailbox_messages` messages) does not
    /// allow the write (`552 5.2.2`, IMAP `NO [OVERQUOTA]`).
    #[error("quota exceeded")]
    OverQuota,
    /// The request itself is invalid (e.g. a bad mailbox name, too many keywords).
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// The store is shutting down or its writer died.
    #[error("store is closed")]
    Closed,
    /// The store directory is locked by another process.
    #[error("store directory {0} is in use by another process")]
    Locked(String),
    /// Stored data failed verification in a way recovery cannot repair.
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

/// Tuning and limits of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Per-account quota in bytes (`max_mailbox_size`).
    pub max_mailbox_size: u64,
    /// Per-account cap on stored messages, all mailboxes together (`max_mailbox_messages`):
    /// each costs the in-memory index about a hundred bytes whatever its size, so the byte quota
    /// alone would let one account of an open sign-up relay fill memory with tiny messages.
    pub max_mailbox_messages: u64,
    /// Size at which a segment file is sealed and a new one started.
    pub segment_size: u64,
    /// Whether to `fdatasync` before completing commits. Always true outside benchmarks that
    /// explicitly measure its cost.
    pub fsync: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_mailbox_size: 500 * 1024 * 1024,
            max_mailbox_messages: 100_000,
            segment_size: 64 * 1024 * 1024,
            fsync: true,
        }
    }
}

/// A system flag or keyword, as IMAP names them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flag {
    /// `\Seen`
    Seen,
    /// `\Answered`
    Answered,
    /// `\Flagged`
    Flagged,
    /// `\Deleted`
    Deleted,
    /// `\Draft`
    Draft,
    /// A keyword such as `$MDNSent` (case preserved as first seen in the account).
    Keyword(String),
}

/// Bits of [`MessageMeta::flags`] for the system flags; keyword `i` of the account's keyword table
/// is bit `KEYWORD_SHIFT + i`.
pub mod flag_bits {
    /// `\Seen`
    pub const SEEN: u64 = 1 << 0;
    /// `\Answered`
    pub const ANSWERED: u64 = 1 << 1;
    /// `\Flagged`
    pub const FLAGGED: u64 = 1 << 2;
    /// `\Deleted`
    pub const DELETED: u64 = 1 << 3;
    /// `\Draft`
    pub const DRAFT: u64 = 1 << 4;
    /// First keyword bit.
    pub const KEYWORD_SHIFT: u32 = 8;
    /// Keywords an account can define (bits 8..64).
    pub const MAX_KEYWORDS: usize = 56;
}

/// How a STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagMode {
    /// `+FLAGS`
    Add,
    /// `-FLAGS`
    Remove,
    /// `FLAGS`
    Replace,
}

/// Where a message body lives in the log. Opaque; read it with [`Store::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BodyRef {
    pub(crate) segment: u32,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// A message body borrowed from the mmap of its segment (no copy), or from the memory of a
/// [`MemoryStore`].
pub struct Body {
    bytes: BodyBytes,
    start: usize,
    len: usize,
}

enum BodyBytes {
    Mapped(Arc<memmap2::Mmap>),
    Memory(Arc<[u8]>),
}

/// Its length only: the bytes may be large.
impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({} bytes)", self.len)
    }
}

impl std::ops::Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let all: &[u8] = match &self.bytes {
            BodyBytes::Mapped(map) => map,
            BodyBytes::Memory(bytes) => bytes,
        };
        &all[self.start..self.start + self.len]
    }
}

/// One message of a mailbox, without its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageMeta {
    /// IMAP UID, strictly increasing within the mailbox.
    pub uid: u32,
    /// System flag bits and keyword bits, see [`flag_bits`].
    pub flags: u64,
    /// RFC 7162 modification sequence of the last change to this message.
    pub modseq: u64,
    /// INTERNALDATE, unix seconds.
    pub internal_date: i64,
    /// RFC822.SIZE in bytes.
    pub size: u32,
    /// Where the body is.
    pub body: BodyRef,
}

/// A snapshot of one mailbox (SELECT, refresh after a change).
#[derive(Debug, Clone)]
pub struct MailboxView {
    /// Mailbox id.
    pub id: MailboxId,
    /// Full name, `/`-separated hierarchy, `INBOX` for the inbox.
    pub name: String,
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// UIDNEXT.
    pub uid_next: u32,
    /// HIGHESTMODSEQ (RFC 7162).
    pub highest_modseq: u64,
    /// Messages in UID order.
    pub messages: Vec<MessageMeta>,
    /// The account's keyword table: keyword `i` is flag bit `KEYWORD_SHIFT + i`.
    pub keywords: Vec<String>,
}

/// One recipient of a queue entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRecipient {
    /// The address, as enqueued.
    pub address: String,
    /// Not finished yet (no [`Op::QueueDone`] for it).
    pub pending: bool,
}

/// One entry of the outbound queue with its message: what the delivery engine sends and the
/// admin socket lists. The envelope is read from the stored body, the message is borrowed from
/// the mmap (no copy).
#[derive(Debug)]
pub struct QueueEntry {
    /// The entry.
    pub id: QueueId,
    /// Lowercase domain or address literal.
    pub destination: String,
    /// `MAIL FROM`, empty for a bounce.
    pub sender: String,
    /// Every recipient of the entry, in enqueued order (at most [`MAX_RECIPIENTS`]); the index
    /// of one is what [`Op::QueueDone`] takes.
    pub recipients: Vec<QueueRecipient>,
    /// Unix seconds: the start of the retry window.
    pub created: i64,
    /// The message.
    pub body: Body,
}

impl QueueEntry {
    /// `(index, address)` of the recipients still pending.
    pub fn pending(&self) -> impl Iterator<Item = (u32, &str)> + '_ {
        (0u32..)
            .zip(&self.recipients)
            .filter(|(_, r)| r.pending)
            .map(|(i, r)| (i, r.address.as_str()))
    }

    /// Size of the message in bytes.
    pub fn size(&self) -> usize {
        self.body.len()
    }

    /// Build the entry `id` of `destination` from its index entry and its stored body (envelope
    /// and message).
    fn read(id: QueueId, destination: &str, e: queue::Entry, stored: Body) -> Result<Self, Error> {
        let env = record::queue_add::read_envelope(&stored, id.seq)
            .map_err(|err| Error::Corrupt(format!("queued message {id}: {err}")))?;
        if env.destination != destination {
            return Err(Error::Corrupt(format!(
                "queued message {id} is for {} instead of {destination}",
                env.destination
            )));
        }
        let recipients = (0u32..)
            .zip(env.recipients)
            .map(|(i, address)| QueueRecipient {
                address,
                pending: i < 32 && e.remaining & (1 << i) != 0,
            })
            .collect();
        let body = Body {
            bytes: stored.bytes,
            start: stored.start + env.message_start,
            len: stored.len - env.message_start,
        };
        Ok(QueueEntry {
            id,
            destination: destination.to_owned(),
            sender: env.sender,
            recipients,
            created: env.created,
            body,
        })
    }
}

/// Summary of a mailbox for LIST/STATUS.
#[derive(Debug, Clone)]
pub struct MailboxInfo {
    /// Mailbox id.
    pub id: MailboxId,
    /// Full name.
    pub name: String,
    /// LSUB state.
    pub subscribed: bool,
    /// Number of messages.
    pub messages: u32,
    /// Messages without `\Seen`.
    pub unseen: u32,
    /// Messages with `\Recent` semantics are not tracked; always 0.
    pub recent: u32,
    /// UIDNEXT.
    pub uid_next: u32,
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// HIGHESTMODSEQ.
    pub highest_modseq: u64,
    /// Sum of message sizes.
    pub size: u64,
}

/// An account as the index knows it.
#[derive(Debug, Clone)]
pub struct AccountInfo {
    /// Account id.
    pub id: AccountId,
    /// Full address, lowercase, e.g. `abc123456@[127.0.0.1]`.
    pub addr: String,
    /// `{SHA512-CRYPT}$6$...`.
    pub password_hash: String,
    /// Creation time, unix seconds.
    pub created: i64,
    /// Day (unix seconds / 86400) of the last successful login.
    pub last_login_day: u32,
    /// Bytes used by all messages of the account (quota).
    pub bytes_used: u64,
    /// Number of messages in all mailboxes.
    pub messages: u64,
    /// Incoming cleartext is refused for this account (reference's `enforceE2EEincoming`).
    pub enforce_e2ee_incoming: bool,
}

/// A write to the store. Each resolves only once durable.
#[derive(Debug, Clone)]
pub enum Op {
    /// Create an account with INBOX (and the `enforce_e2ee_incoming` marker set).
    /// `Error::Exists` if it exists.
    CreateAccount {
        /// Lowercase address.
        addr: String,
        /// `{SHA512-CRYPT}...` hash.
        password_hash: String,
        /// Unix seconds.
        now: i64,
    },
    /// Record the day of a successful login (no-op if unchanged).
    SetLastLogin {
        /// Account.
        account: AccountId,
        /// Unix day.
        day: u32,
    },
    /// Remove an account and all its messages.
    DeleteAccount {
        /// Account.
        account: AccountId,
    },
    /// Store one body once and add it to the INBOX of every recipient. Per-recipient result in
    /// [`OpResult::Delivered`]; recipients over quota get `Err(OverQuota)` and no copy.
    Deliver {
        /// Recipient accounts (distinct).
        recipients: Vec<AccountId>,
        /// The local account that sent the message, if any: it gets no push notification for
        /// it (every other recipient with a device token does, see `store/notify.rs`).
        sender: Option<AccountId>,
        /// INTERNALDATE, unix seconds.
        internal_date: i64,
        /// The complete message as it will be served by IMAP.
        body: Vec<u8>,
    },
    /// IMAP APPEND.
    Append {
        /// Account.
        account: AccountId,
        /// Target mailbox.
        mailbox: MailboxId,
        /// Initial flags.
        flags: Vec<Flag>,
        /// INTERNALDATE, unix seconds.
        internal_date: i64,
        /// Message bytes.
        body: Vec<u8>,
    },
    /// IMAP STORE.
    SetFlags {
        /// Account.
        account: AccountId,
        /// Mailbox.
        mailbox: MailboxId,
        /// UIDs to change (missing ones are ignored).
        uids: Vec<u32>,
        /// How.
        mode: FlagMode,
        /// Flags.
        flags: Vec<Flag>,
        /// RFC 7162 UNCHANGEDSINCE.
        unchanged_since: Option<u64>,
    },
    /// IMAP EXPUNGE / UID EXPUNGE / MOVE source removal: remove these UIDs.
    Expunge {
        /// Account.
        account: AccountId,
        /// Mailbox.
        mailbox: MailboxId,
        /// UIDs to remove (missing ones are ignored).
        uids: Vec<u32>,
    },
    /// IMAP COPY or MOVE (bodies are shared, not copied).
    Copy {
        /// Account.
        account: AccountId,
        /// Source mailbox.
        from: MailboxId,
        /// Target mailbox.
        to: MailboxId,
        /// Source UIDs.
        uids: Vec<u32>,
        /// Remove the sources in the same record (MOVE).
        remove_source: bool,
    },
    /// CREATE.
    CreateMailbox {
        /// Account.
        account: AccountId,
        /// Name.
        name: String,
    },
    /// DELETE (not INBOX).
    DeleteMailbox {
        /// Account.
        account: AccountId,
        /// Mailbox.
        mailbox: MailboxId,
    },
    /// RENAME.
    RenameMailbox {
        /// Account.
        account: AccountId,
        /// Mailbox.
        mailbox: MailboxId,
        /// New name.
        to: String,
    },
    /// SUBSCRIBE / UNSUBSCRIBE.
    Subscribe {
        /// Account.
        account: AccountId,
        /// Name (may not exist, RFC 3501 allows it).
        name: String,
        /// New state.
        subscribed: bool,
    },
    /// SETMETADATA: `None` deletes the entry.
    SetMetadata {
        /// Account.
        account: AccountId,
        /// `None` for server entries (`""`), else the mailbox.
        mailbox: Option<MailboxId>,
        /// Entry name, e.g. `/private/devicetoken`.
        key: String,
        /// Value.
        value: Option<Vec<u8>>,
    },
    /// Queue a message for other domains: one stored body for all, one queue entry per
    /// destination and group of at most [`MAX_RECIPIENTS`] of its recipients (a destination
    /// with more gets several entries, its recipients in order). The envelope is stored with
    /// the body. Answers [`OpResult::Enqueued`]; `destinations` empty writes nothing.
    /// `Error::Invalid` for a destination that is not a lowercase domain or address literal, a
    /// destination without recipients, an address with control characters or longer than 256
    /// bytes.
    Enqueue {
        /// `MAIL FROM` address; empty for a bounce (`MAIL FROM:<>`).
        sender: String,
        /// Unix seconds: the start of the retry window.
        created: i64,
        /// `(destination, recipients)`: a lowercase domain or an address literal such as
        /// `[1.2.3.4]`, and the recipient addresses on it.
        destinations: Vec<(String, Vec<String>)>,
        /// The message as it will be sent.
        body: Vec<u8>,
    },
    /// Recipients of a queue entry are finished (delivered, bounced or dropped). The entry
    /// disappears when none is left; its body is freed (for segment removal) when no entry
    /// refers to it. Indexes that are not pending (finished before, or beyond the entry's
    /// recipients) are ignored; `Error::NotFound` if the entry is gone, `Error::Invalid` for an
    /// index of [`MAX_RECIPIENTS`] or more. May use the space reserve on a full disk.
    QueueDone {
        /// The entry.
        id: QueueId,
        /// Indexes into the entry's recipients ([`QueueEntry::recipients`]).
        recipients: Vec<u32>,
    },
    /// Set a push device token of the account at `now` (unix seconds): added, or refreshed if
    /// it was there; expired tokens and the least recently set beyond
    /// [`notify::MAX_TOKENS`] are dropped. `Error::Invalid` for a token
    /// [`notify::check_token`] refuses.
    SetDeviceToken {
        /// Account.
        account: AccountId,
        /// The token.
        token: String,
        /// Unix seconds.
        now: i64,
    },
    /// Remove a push device token (the notifier answered `410 Gone`); nothing if absent.
    RemoveDeviceToken {
        /// Account.
        account: AccountId,
        /// The token.
        token: String,
    },
    /// The account's pending notification `seq` was sent (or given up): removed unless a newer
    /// delivery replaced it.
    NotifyDone {
        /// Account.
        account: AccountId,
        /// [`PendingNotify::seq`].
        seq: u64,
    },
    /// `relay import`: an account as another server had it, with its password hash as stored
    /// there (no `enforce_e2ee_incoming` choice: this relay enforces it for every account).
    /// Writes its creation with the INBOX's UIDVALIDITY and, when `last_login_day` differs
    /// from the creation day, its last login. Answers [`OpResult::AccountCreated`];
    /// `Error::Exists` if the address exists.
    ImportAccount {
        /// Lowercase address.
        addr: String,
        /// The stored hash (`{SHA512-CRYPT}$6$...`, or one that never verifies).
        password_hash: String,
        /// Unix seconds.
        created: i64,
        /// UIDVALIDITY of the INBOX; 0 lets the store choose.
        inbox_uid_validity: u32,
        /// Unix day of the last login.
        last_login_day: u32,
    },
    /// `relay import`: a mailbox as another server had it: created with `uid_validity` (0 lets
    /// the store choose) unless it exists, then its UIDNEXT raised to `uid_next` (kind 20,
    /// `record/uid_next.rs`). Answers [`OpResult::MailboxCreated`] with the id, also of a
    /// mailbox that existed; `Error::Exists` if it exists with another (non-zero) UIDVALIDITY.
    ImportMailbox {
        /// Account.
        account: AccountId,
        /// Name (`INBOX` for the inbox, which exists with its account).
        name: String,
        /// UIDVALIDITY; 0: any.
        uid_validity: u32,
        /// UIDNEXT the mailbox had.
        uid_next: u32,
    },
    /// `relay import`: one message with the UID it had (0: the mailbox's next). Answers
    /// [`OpResult::Appended`]; `Error::Exists` if the mailbox holds that UID already (so an
    /// import run again adds nothing twice), `Error::OverQuota` as `Append`.
    ImportMessage {
        /// Account.
        account: AccountId,
        /// Mailbox.
        mailbox: MailboxId,
        /// UID; 0: the mailbox's UIDNEXT.
        uid: u32,
        /// Flags.
        flags: Vec<Flag>,
        /// INTERNALDATE, unix seconds.
        internal_date: i64,
        /// Message bytes.
        body: Vec<u8>,
    },
    /// Copy the given message bodies of an old segment into the active one and point the
    /// entries referring to them at the copies (record kind 21, `record/body_move.rs`): one
    /// step of a compaction, which the writer runs itself, a few at a time, for a segment whose
    /// live bodies fill a small part of it (`writer.rs`); once all are moved the segment goes
    /// at a later checkpoint.
    Compact {
        /// The segment.
        segment: u32,
        /// The bodies to move: offset in the segment and length.
        bodies: Vec<(u64, u32)>,
    },
    /// Several ops in one commit (one `fdatasync` covers them all), planned in order, each
    /// seeing the ones before it; answers [`OpResult::Group`] with one result per member. The
    /// first member refused stops the rest: they are not applied and get
    /// `Error::Invalid(`[`GROUP_STOPPED`]`)`. **The members before it stay committed**: a group
    /// is not a transaction. On a full disk the group is refused as a whole unless every
    /// member frees space; an I/O error fails the whole group (and its batch).
    Group(Vec<Op>),
}

impl Op {
    /// `QueueDone` of every recipient of entry `id`: drops the entry (the admin's "drop").
    pub fn queue_drop(id: QueueId) -> Op {
        Op::QueueDone {
            id,
            recipients: (0..MAX_RECIPIENTS as u32).collect(),
        }
    }
}

/// The result of a committed [`Op`].
#[derive(Debug)]
pub enum OpResult {
    /// Nothing to report.
    Done,
    /// `CreateAccount`.
    AccountCreated(AccountId),
    /// `Deliver`: one entry per recipient, in order: the UID in INBOX or why not.
    Delivered(Vec<Result<u32, DeliverError>>),
    /// `Append`: UIDPLUS APPENDUID.
    Appended {
        /// UIDVALIDITY of the target.
        uid_validity: u32,
        /// New UID.
        uid: u32,
    },
    /// `SetFlags`: changed messages with their new flags and modseq; and the UIDs that failed
    /// UNCHANGEDSINCE (`[MODIFIED ...]`).
    FlagsSet {
        /// `(uid, flags, modseq)` of every message whose flags changed.
        changed: Vec<(u32, u64, u64)>,
        /// UIDs refused by UNCHANGEDSINCE.
        modified: Vec<u32>,
    },
    /// `Expunge`: UIDs actually removed.
    Expunged(Vec<u32>),
    /// `Copy`: UIDPLUS COPYUID.
    Copied {
        /// UIDVALIDITY of the target.
        uid_validity: u32,
        /// `(source uid, new uid)`.
        pairs: Vec<(u32, u32)>,
    },
    /// `CreateMailbox`.
    MailboxCreated(MailboxId),
    /// `Enqueue`: the ids of the new queue entries, in the order of the destinations (a
    /// destination split into several entries gives consecutive ids).
    Enqueued(Vec<QueueId>),
    /// `Group`: one result per member, in order.
    Group(Vec<Result<OpResult, Error>>),
}

/// Why one recipient of a `Deliver` did not get the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverError {
    /// The account's quota is full.
    OverQuota,
    /// The account does not exist (any more).
    NoSuchAccount,
}

/// State shared by the handles and the writer thread.
pub(crate) struct Shared {
    /// The committed index readers see.
    index: RwLock<index::Index>,
    /// Maps of the live segments.
    segments: log::Segments,
    /// IDLE watchers, created lazily per account.
    watchers: Watchers,
    /// The queue's watch channel: the next queue sequence number, bumped after every commit
    /// that adds queue entries.
    queue_watch: tokio::sync::watch::Sender<u64>,
    /// The notifier's watch channel: the next notification sequence number, bumped after every
    /// commit that adds pending notifications.
    notify_watch: tokio::sync::watch::Sender<u64>,
    config: StoreConfig,
    stats: Stats,
    /// The writer is failing (I/O error or full disk) and retrying.
    failing: std::sync::atomic::AtomicBool,
}

/// IDLE watchers: one `watch` channel per account with a live receiver, holding its modseq.
#[derive(Default)]
pub(crate) struct Watchers(Mutex<HashMap<AccountId, tokio::sync::watch::Sender<u64>>>);

impl Watchers {
    /// A receiver for `account`; a new channel starts at `modseq()`.
    fn watch(
        &self,
        account: AccountId,
        modseq: impl FnOnce() -> u64,
    ) -> tokio::sync::watch::Receiver<u64> {
        let mut watchers = self.0.lock().expect("watchers lock should not be poisoned");
        if let Some(tx) = watchers.get(&account) {
            return tx.subscribe();
        }
        let (tx, rx) = tokio::sync::watch::channel(modseq());
        watchers.insert(account, tx);
        rx
    }

    /// Send each touched account's new modseq; drop channels nobody listens to any more.
    fn wake(&self, touched: BTreeSet<AccountId>, modseq: impl Fn(AccountId) -> u64) {
        if touched.is_empty() {
            return;
        }
        let mut watchers = self.0.lock().expect("watchers lock should not be poisoned");
        for a in touched {
            if let Some(tx) = watchers.get(&a) {
                if tx.receiver_count() == 0 {
                    watchers.remove(&a);
                } else {
                    tx.send_replace(modseq(a));
                }
            }
        }
    }
}

/// `body` as a slice of its segment's map in `segments` (readers' [`Store::read`], and the
/// writer copying a body when it compacts). Fails only if the segment is gone or the reference
/// points outside it.
fn mapped_body(segments: &log::Segments, body: BodyRef) -> Result<Body, Error> {
    let map = segments
        .read()
        .expect("segment map lock should not be poisoned")
        .get(&body.segment)
        .cloned()
        .ok_or(Error::NotFound("segment"))?;
    let start = usize::try_from(body.offset).map_err(|_| Error::NotFound("body"))?;
    let len = body.len as usize;
    if start.checked_add(len).is_none_or(|end| end > map.len()) {
        return Err(Error::NotFound("body"));
    }
    Ok(Body {
        bytes: BodyBytes::Mapped(map),
        start,
        len,
    })
}

/// Counters of the writer since open.
#[derive(Default)]
struct Stats {
    batches: AtomicU64,
    ops: AtomicU64,
    fsyncs: AtomicU64,
    bytes_written: AtomicU64,
    failed_batches: AtomicU64,
    compactions: AtomicU64,
    /// How long each group commit's `fdatasync` took.
    fsync: crate::metrics::Histogram,
}

/// Writer counters since the store was opened (metrics, benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Group commits (batches) completed.
    pub batches: u64,
    /// Ops completed (successful or not).
    pub ops: u64,
    /// `fdatasync` calls on log segments.
    pub fsyncs: u64,
    /// Log bytes written.
    pub bytes_written: u64,
    /// Batches undone after an I/O error or a full disk.
    pub failed_batches: u64,
    /// Segments whose live message bodies were moved out (compaction, `Op::Compact`).
    pub compactions: u64,
}

/// The size of an open store ([`Store::size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSize {
    /// Segment files mapped (sealed ones and the active one).
    pub segments: usize,
    /// Their bytes on disk (segments are preallocated: the active one counts in full).
    pub bytes: u64,
    /// Accounts.
    pub accounts: u64,
    /// Messages in all accounts.
    pub messages: u64,
}

/// The object behind every `Store` clone; dropping the last one stops the writer.
struct Inner {
    shared: Arc<Shared>,
    /// `None` once closed.
    tx: Mutex<Option<mpsc::Sender<writer::Msg>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Holds the `flock` on `<dir>/lock` until the store is closed.
    _lock: File,
    dir: PathBuf,
}

impl Inner {
    /// Stop the writer: it finishes the queued ops, writes a checkpoint and exits.
    fn close(&self) {
        // Closing the channel is the stop signal.
        self.tx
            .lock()
            .expect("sender lock should not be poisoned")
            .take();
        let thread = self
            .thread
            .lock()
            .expect("thread lock should not be poisoned")
            .take();
        if let Some(t) = thread {
            if t.join().is_err() {
                tracing::error!(dir = %self.dir.display(), "store writer thread panicked");
            }
        }
    }

    fn send(&self, msg: writer::Msg) -> Result<(), Error> {
        self.tx
            .lock()
            .expect("sender lock should not be poisoned")
            .as_ref()
            .ok_or(Error::Closed)?
            .send(msg)
            .map_err(|_| Error::Closed)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

/// Handle to the store; cheap to clone, shareable across threads.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Open (or create) the store in `dir`: take the lock, load the newest checkpoint, replay the
    /// log after it, cut a torn tail, start the writer thread.
    ///
    /// # Errors
    /// `Locked` if another process holds the directory, `Io` or `Corrupt` otherwise.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Store, Error> {
        crate::privilege::private_dir(dir).map_err(log::io_err("create store directory", dir))?;
        let lock_path = dir.join("lock");
        let lock = crate::privilege::open_private(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            &lock_path,
        )
        .map_err(log::io_err("open lock file", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked(dir.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(log::io_err("lock store directory", &lock_path)(e))
            }
        }
        let index_dir = dir.join("index");
        let mut base = None;
        for (_, path) in checkpoint::list(&index_dir)? {
            match checkpoint::load(&path) {
                Ok(loaded) => {
                    base = Some(loaded);
                    break;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable checkpoint");
                }
            }
        }
        let loaded_from = base.as_ref().map(|b| b.1);
        let (mut idx, from) = base.unwrap_or_default();
        let mut replayed = 0u64;
        let log_dir = dir.join("log");
        let log = log::Log::recover(
            &log_dir,
            config.segment_size,
            config.fsync,
            from,
            |rec, _pos| {
                idx.apply(&rec);
                replayed += 1;
                Ok(())
            },
        )?;
        if log.position() < from {
            return Err(Error::Corrupt(format!(
                "checkpoint at {from:?} is ahead of the log end {:?}",
                log.position()
            )));
        }
        {
            let segs = log.segments();
            let segs = segs
                .read()
                .expect("segment map lock should not be poisoned");
            if let Some(missing) = idx.seg_refs.keys().find(|s| !segs.contains_key(s)) {
                return Err(Error::Corrupt(format!(
                    "segment {missing} holds live messages but is missing"
                )));
            }
        }
        let shared = Arc::new(Shared {
            // Shares the queue's entries with `idx` (see `queue.rs`).
            index: RwLock::new(idx.clone()),
            segments: log.segments(),
            watchers: Watchers::default(),
            queue_watch: tokio::sync::watch::Sender::new(idx.queue.next_seq()),
            notify_watch: tokio::sync::watch::Sender::new(idx.notify.next_seq()),
            config: config.clone(),
            stats: Stats::default(),
            failing: std::sync::atomic::AtomicBool::new(false),
        });
        let w = writer::Writer::new(
            log,
            idx,
            config,
            shared.clone(),
            index_dir,
            loaded_from,
            replayed,
        );
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || w.run(rx))
            .map_err(log::io_err("spawn writer thread", dir))?;
        Ok(Store {
            inner: Arc::new(Inner {
                shared,
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                _lock: lock,
                dir: dir.to_owned(),
            }),
        })
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, index::Index> {
        self.inner
            .shared
            .index
            .read()
            .expect("index lock should not be poisoned")
    }

    /// Look up an account by lowercase address (other case is folded, as at creation).
    pub fn account(&self, addr: &str) -> Option<AccountInfo> {
        self.index().account_by_addr(addr)
    }

    /// Look up an account by id.
    pub fn account_by_id(&self, id: AccountId) -> Option<AccountInfo> {
        self.index().account(id).map(index::Account::info)
    }

    /// All accounts, by id (admin tools, expiry).
    pub fn accounts(&self) -> Vec<AccountInfo> {
        self.index().account_infos()
    }

    /// Every message of an account with its mailbox, in mailbox id then UID order (expiry:
    /// `internal_date` and `size` are in the meta).
    pub fn messages(&self, account: AccountId) -> Vec<(MailboxId, MessageMeta)> {
        self.index().messages(account)
    }

    /// All mailboxes of an account, in name order.
    pub fn mailboxes(&self, account: AccountId) -> Vec<MailboxInfo> {
        self.index().mailbox_infos(account)
    }

    /// A snapshot of a mailbox by name (`INBOX` is case-insensitive).
    pub fn mailbox_view(&self, account: AccountId, name: &str) -> Option<MailboxView> {
        self.index().view_by_name(account, name)
    }

    /// A snapshot of a mailbox by id.
    pub fn mailbox_view_by_id(&self, account: AccountId, id: MailboxId) -> Option<MailboxView> {
        self.index().view_by_id(account, id)
    }

    /// Subscribed mailbox names (LSUB), including ones that do not exist.
    pub fn subscriptions(&self, account: AccountId) -> Vec<String> {
        self.index().subscription_list(account)
    }

    /// The body of a message. Fails only if the message's segment was removed.
    pub fn read(&self, body: BodyRef) -> Result<Body, Error> {
        mapped_body(&self.inner.shared.segments, body)
    }

    /// A metadata entry.
    pub fn metadata(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        key: &str,
    ) -> Option<Vec<u8>> {
        self.index().metadata_value(account, mailbox, key)
    }

    /// Entries in the outbound queue.
    pub fn queue_len(&self) -> u64 {
        self.index().queue.len()
    }

    /// Destinations with queued entries, by name, with their entry counts and oldest entries.
    pub fn queue_destinations(&self) -> Vec<QueueDestination> {
        self.index().queue.destinations()
    }

    /// Up to `limit` entry ids of `destination`, oldest first, after `after` if given (paging:
    /// pass the last id of the previous page). Empty for a destination without entries.
    pub fn queue_ids(
        &self,
        destination: &str,
        after: Option<QueueId>,
        limit: usize,
    ) -> Vec<QueueId> {
        self.index().queue.ids(destination, after, limit)
    }

    /// One queue entry with its envelope and message. `NotFound` once it is done.
    pub fn queue_entry(&self, id: QueueId) -> Result<QueueEntry, Error> {
        let (destination, e) = {
            let index = self.index();
            let (d, e) = index.queue.get(id).ok_or(Error::NotFound("queue entry"))?;
            (d.to_owned(), e)
        };
        let stored = self.read_stored(e.segment, e.offset)?;
        QueueEntry::read(id, &destination, e, stored)
    }

    /// A receiver that changes (to the next queue sequence number) after every commit that adds
    /// queue entries: the delivery engine waits on it.
    pub fn queue_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.shared.queue_watch.subscribe()
    }

    /// Up to `limit` pending push notifications with `seq >= from`, in `seq` order.
    pub fn notify_pending(&self, from: u64, limit: usize) -> Vec<PendingNotify> {
        self.index().notify.since(from, limit)
    }

    /// The pending push notification of `account`.
    pub fn notify_get(&self, account: AccountId) -> Option<PendingNotify> {
        self.index().notify.get(account)
    }

    /// A receiver that changes after every commit that adds pending notifications.
    pub fn notify_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.shared.notify_watch.subscribe()
    }

    /// The account's live device tokens at `now` (unix seconds), least recently set first.
    pub fn device_tokens(&self, account: AccountId, now: i64) -> Vec<String> {
        let value = self.metadata(account, Some(index::INBOX_ID), notify::TOKENS_KEY);
        notify::live(value.as_deref(), now)
    }

    /// The Body frame whose payload starts at `offset` of `segment` (its length from the frame
    /// header): a queued message's stored body.
    fn read_stored(&self, segment: u32, offset: u64) -> Result<Body, Error> {
        let map = self
            .inner
            .shared
            .segments
            .read()
            .expect("segment map lock should not be poisoned")
            .get(&segment)
            .cloned()
            .ok_or(Error::NotFound("segment"))?;
        let start = usize::try_from(offset).map_err(|_| Error::NotFound("body"))?;
        let len = format::body_len_at(&map, start).ok_or(Error::NotFound("body"))?;
        Ok(Body {
            bytes: BodyBytes::Mapped(map),
            start,
            len,
        })
    }

    /// `(entries, value bytes)` of all metadata of an account, for the per-account caps.
    pub fn metadata_usage(&self, account: AccountId) -> (usize, u64) {
        self.index().metadata_usage(account)
    }

    /// `(used, limit)` in bytes for GETQUOTAROOT and the SMTP quota check.
    pub fn quota(&self, account: AccountId) -> (u64, u64) {
        let used = self.index().bytes_used(account);
        (used, self.inner.shared.config.max_mailbox_size)
    }

    /// A receiver that changes (to the account's newest modseq) after every committed change to
    /// the account's mailboxes. Sessions in IDLE wait on it.
    pub fn watch(&self, account: AccountId) -> tokio::sync::watch::Receiver<u64> {
        self.inner
            .shared
            .watchers
            .watch(account, || self.index().modseq(account))
    }

    fn submit(&self, op: Op) -> Option<tokio::sync::oneshot::Receiver<Result<OpResult, Error>>> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.inner.send(writer::Msg::Op(op, done)).ok()?;
        Some(rx)
    }

    /// Submit a write; the returned future resolves once it is durable and visible to readers.
    /// The future is `Send + 'static` and needs no particular runtime. The op is queued when
    /// `commit` is called: dropping the future does not cancel it.
    pub fn commit(
        &self,
        op: Op,
    ) -> impl std::future::Future<Output = Result<OpResult, Error>> + Send + 'static {
        let rx = self.submit(op);
        async move {
            match rx {
                Some(rx) => rx.await.unwrap_or(Err(Error::Closed)),
                None => Err(Error::Closed),
            }
        }
    }

    /// `commit` for callers outside async code (tests, admin tools): blocks the thread.
    /// Must not be called from within an async runtime context (tokio's `blocking_recv` panics).
    pub fn commit_blocking(&self, op: Op) -> Result<OpResult, Error> {
        match self.submit(op) {
            Some(rx) => rx.blocking_recv().unwrap_or(Err(Error::Closed)),
            None => Err(Error::Closed),
        }
    }

    /// Writer counters since open.
    pub fn stats(&self) -> StoreStats {
        let s = &self.inner.shared.stats;
        StoreStats {
            batches: s.batches.load(Relaxed),
            ops: s.ops.load(Relaxed),
            fsyncs: s.fsyncs.load(Relaxed),
            bytes_written: s.bytes_written.load(Relaxed),
            failed_batches: s.failed_batches.load(Relaxed),
            compactions: s.compactions.load(Relaxed),
        }
    }

    /// The latency of the `fdatasync` of each group commit since open.
    pub fn fsync_latency(&self) -> &crate::metrics::Histogram {
        &self.inner.shared.stats.fsync
    }

    /// Log segments mapped now, and their bytes (preallocated size).
    pub fn segment_usage(&self) -> (usize, u64) {
        let segs = self
            .inner
            .shared
            .segments
            .read()
            .expect("segment map lock should not be poisoned");
        (segs.len(), segs.values().map(|m| m.len() as u64).sum())
    }

    /// Whether writes are currently failing (I/O error or full disk); the writer retries by
    /// itself and this turns false when a probe succeeds.
    pub fn writes_failing(&self) -> bool {
        self.inner.shared.failing.load(Relaxed)
    }

    /// Write a checkpoint of the index so the next `open` replays less. Blocks the thread until
    /// it is durable (usable from any context, but from async code prefer `spawn_blocking`).
    pub fn checkpoint(&self) -> Result<(), Error> {
        let (done, rx) = mpsc::sync_channel(1);
        self.inner.send(writer::Msg::Checkpoint(done))?;
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    /// Writes a consistent copy of the store into `dest` (a directory that must not hold a
    /// store; created `0700`) that [`Store::open`] opens as it is: the segments holding live
    /// bodies, the active segment up to the last synced batch, and a checkpoint at that point
    /// (see `backup.rs`). The writer only takes the snapshot; the copying runs on this thread
    /// while commits go on. Blocks the thread.
    ///
    /// # Errors
    /// The store is closed, or a file of the copy cannot be written.
    pub fn backup(&self, dest: &Path) -> Result<backup::BackupReport, Error> {
        let (done, rx) = mpsc::sync_channel(1);
        self.inner.send(writer::Msg::Backup(done))?;
        let point = rx.recv().unwrap_or(Err(Error::Closed))?;
        backup::write(point, dest)
    }

    /// The size of the store: segment files and their bytes, accounts and messages.
    pub fn size(&self) -> StoreSize {
        let (segments, bytes) = {
            let segs = self
                .inner
                .shared
                .segments
                .read()
                .expect("segment map lock should not be poisoned");
            (segs.len(), segs.values().map(|m| m.len() as u64).sum())
        };
        let index = self.index();
        StoreSize {
            segments,
            bytes,
            accounts: index.accounts.len() as u64,
            messages: index.accounts.values().map(|a| a.messages).sum(),
        }
    }

    /// Stop the store for every handle: queued writes complete, a checkpoint is written, the
    /// writer exits; later commits on any clone get [`Error::Closed`] (reads keep working).
    /// The directory lock is released when the last handle is dropped. Blocks the thread.
    pub fn close(&self) {
        self.inner.close();
    }
}
