//! Every kind of log record in one place each: `record/<kind>.rs` holds the record's data, its
//! payload encoding and decoding, how it changes the `Index`, and the
//! planning step of the [`Op`]s that write it (validation against the writer's index, ids and
//! UIDs decided, records emitted). The writer, the codec and the index reach the kinds only
//! through the `registry!` below and `plan`; the kind modules do no I/O.
//!
//! | kind | module | written by |
//! |------|--------|------------|
//! | 1, 2 | Seal, Body: framing only, see [`format`](super::format) | the log |
//! | 3  | [`account_create`] | `Op::CreateAccount` |
//! | 4  | [`account_delete`] | `Op::DeleteAccount` |
//! | 5  | [`last_login`]     | `Op::SetLastLogin` |
//! | 6  | [`mailbox_create`] | `Op::CreateMailbox` |
//! | 7  | [`mailbox_delete`] | `Op::DeleteMailbox` |
//! | 8  | [`mailbox_rename`] | `Op::RenameMailbox` |
//! | 9  | [`subscribe`]      | `Op::Subscribe` |
//! | 10 | [`keyword`]        | `Op::Append`, `Op::SetFlags` (new keywords first) |
//! | 11 | [`insert`]         | `Op::Deliver`, `Op::Append` |
//! | 12 | [`flags`]          | `Op::SetFlags` |
//! | 13 | [`expunge`]        | `Op::Expunge` |
//! | 14 | [`copy`]           | `Op::Copy` |
//! | 15 | [`metadata`]       | `Op::SetMetadata` |
//! | 16 | [`queue_add`]      | `Op::Enqueue` |
//! | 17 | [`queue_done`]     | `Op::QueueDone` |
//! | 18 | [`notify_add`]     | `Op::Deliver` (recipients with device tokens) |
//! | 19 | [`notify_done`]    | `Op::NotifyDone` |
//! | 20 | [`uid_next`]       | `Op::ImportMailbox` |
//! | 21 | [`body_move`]      | `Op::Compact` (the writer, after a checkpoint) |
//!
//! `Op::SetDeviceToken` and `Op::RemoveDeviceToken` write kind 15 (the token list is a metadata
//! value, see `store/notify.rs`).
//!
//! //! `Op::ImportAccount` writes kinds 3 and 5, `Op::ImportMailbox` kinds 6 and 20,
//! `Op::ImportMessage` kinds 10 and 11 (`relay import`, `src/import/`).
//!
//! `Op::Group` writes the records of its members, planned one after the other.
//!
//! Records carry the values the writer decided (ids, UIDs, modseqs), so replay never has to
//! re-decide anything: `apply` only follows the record, never fails and never panics (a record
//! that refers to something missing is ignored).

use std::collections::BTreeSet;

use super::format::{DecodeError, Reader, Writer};
use super::index::Index;
use super::{AccountId, BodyRef, Error, Op, OpResult};

pub mod account_create;
pub mod account_delete;
pub mod body_move;
pub mod copy;
pub mod expunge;
pub mod flags;
pub mod insert;
pub mod keyword;
pub mod last_login;
pub mod mailbox_create;
pub mod mailbox_delete;
pub mod mailbox_rename;
pub mod metadata;
pub mod notify_add;
pub mod notify_done;
pub mod queue_add;
pub mod queue_done;
pub mod subscribe;
pub mod uid_next;

pub use insert::InsertEntry;

/// What every record kind implements; [`Record`] dispatches to it.
pub(crate) trait Kind: Sized {
    /// Append the payload (without frame).
    fn encode(&self, w: &mut Writer<'_>);
    /// Read the payload. The caller refuses trailing bytes.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
    /// Change the index. Returns the account whose modseq changed, if any (its watchers wake).
    fn apply(&self, index: &mut Index) -> Option<AccountId>;
    /// Further accounts whose watchers must wake after this record (default: none).
    fn also_wakes(&self, _out: &mut BTreeSet<AccountId>) {}
}

/// What planning an op may do: read the writer's index (which already holds the earlier ops of
/// the batch), place a body, emit a record. The writer implements it over the log; the
/// in-memory store over a `Vec` of bodies. `emit` applies the record to that index at once.
pub(crate) trait Planner {
    /// The index including every record emitted so far.
    fn index(&self) -> &Index;
    /// Per-account quota in bytes.
    fn max_mailbox_size(&self) -> u64;
    /// Per-account cap on stored messages.
    fn max_mailbox_messages(&self) -> u64;
    /// Store a message body; index records refer to it by the returned reference.
    fn append_body(&mut self, body: &[u8]) -> Result<BodyRef, Error>;
    /// Store a copy of a stored body (compaction); the copy's reference.
    fn copy_body(&mut self, body: BodyRef) -> Result<BodyRef, Error>;
    /// Write `rec` and apply it to [`Planner::index`].
    fn emit(&mut self, rec: Record) -> Result<(), Error>;
}

/// The one list of record kinds: `kind byte => Variant(module)`, the struct `module::Variant`
/// implementing [`Kind`]. Generates [`Record`], its kind byte, codec and index dispatch.
macro_rules! registry {
    ($($kind:literal => $variant:ident($module:ident),)*) => {
        /// A record of the index (everything but bodies and seals): one variant per kind module.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Record {
            $(
                #[doc = concat!("Kind ", stringify!($kind), ", see [`", stringify!($module), "`].")]
                $variant($module::$variant),
            )*
        }

        /// `(kind byte, name)` of every record kind.
        pub const KINDS: &[(u8, &str)] = &[$(($kind, stringify!($variant)),)*];

        impl Record {
            /// The kind byte of this record.
            pub fn kind(&self) -> u8 {
                match self {
                    $(Record::$variant(_) => $kind,)*
                }
            }

            /// Append the payload (without frame) to `out`.
            pub fn encode_payload(&self, out: &mut Vec<u8>) {
                let mut w = Writer(out);
                match self {
                    $(Record::$variant(r) => r.encode(&mut w),)*
                }
            }

            /// Decode a record payload of `kind`.
            pub fn decode(kind: u8, payload: &[u8]) -> Result<Record, DecodeError> {
                let mut r = Reader(payload);
                let rec = match kind {
                    $($kind => Record::$variant(<$module::$variant as Kind>::decode(&mut r)?),)*
                    _ => return Err(DecodeError("unknown record kind")),
                };
                r.finish()?;
                Ok(rec)
            }

            /// Apply to the index; the account whose modseq changed, if any.
            pub(crate) fn apply(&self, index: &mut Index) -> Option<AccountId> {
                match self {
                    $(Record::$variant(r) => r.apply(index),)*
                }
            }

            /// Add the accounts to wake besides the one `apply` returned.
            pub(crate) fn also_wakes(&self, out: &mut BTreeSet<AccountId>) {
                match self {
                    $(Record::$variant(r) => r.also_wakes(out),)*
                }
            }
        }

        /// Any record of any kind (codec proptests).
        #[cfg(test)]
        pub(crate) fn arbitrary() -> proptest::strategy::BoxedStrategy<Record> {
            use proptest::strategy::Strategy;
            proptest::strategy::Union::new(vec![$($module::test_data::arbitrary().boxed(),)*]).boxed()
        }

        /// Golden records of every kind with their frames in hex.
        #[cfg(test)]
        pub(crate) fn golden() -> Vec<(Record, &'static str)> {
            let mut v = Vec::new();
            $(v.extend($module::test_data::golden());)*
            v
        }

        $(
            impl From<$module::$variant> for Record {
                fn from(r: $module::$variant) -> Record {
                    Record::$variant(r)
                }
            }
        )*
    };
}

registry! {
    3 => AccountCreate(account_create),
    4 => AccountDelete(account_delete),
    5 => LastLogin(last_login),
    6 => MailboxCreate(mailbox_create),
    7 => MailboxDelete(mailbox_delete),
    8 => MailboxRename(mailbox_rename),
    9 => Subscribe(subscribe),
    10 => Keyword(keyword),
    11 => Insert(insert),
    12 => Flags(flags),
    13 => Expunge(expunge),
    14 => Copy(copy),
    15 => Metadata(metadata),
    16 => QueueAdd(queue_add),
    17 => QueueDone(queue_done),
    18 => NotifyAdd(notify_add),
    19 => NotifyDone(notify_done),
    20 => UidNext(uid_next),
    21 => BodyMove(body_move),
}

/// Whether `e` is a failure of the file system (the writer then fails the whole batch) rather
/// than a refusal of the op.
pub(crate) fn is_io(e: &Error) -> bool {
    matches!(e, Error::Io { .. } | Error::NoSpace { .. })
}

/// Validate `op` against `p`'s index and emit its records: the dispatch from ops to the kind
/// modules. An error means nothing was emitted for this op, except after an I/O error (and
/// for the members of an `Op::Group` planned before the one that failed).
pub(crate) fn plan(p: &mut impl Planner, op: Op) -> Result<OpResult, Error> {
    match op {
        Op::CreateAccount {
            addr,
            password_hash,
            now,
        } => account_create::plan(p, addr, password_hash, now),
        Op::SetLastLogin { account, day } => last_login::plan(p, account, day),
        Op::DeleteAccount { account } => account_delete::plan(p, account),
        Op::Deliver {
            recipients,
            sender,
            internal_date,
            body,
        } => insert::plan_deliver(p, recipients, sender, internal_date, &body),
        Op::Append {
            account,
            mailbox,
            flags,
            internal_date,
            body,
        } => insert::plan_append(p, account, mailbox, &flags, internal_date, &body),
        Op::SetFlags {
            account,
            mailbox,
            uids,
            mode,
            flags,
            unchanged_since,
        } => flags::plan(p, account, mailbox, uids, mode, &flags, unchanged_since),
        Op::Expunge {
            account,
            mailbox,
            uids,
        } => expunge::plan(p, account, mailbox, uids),
        Op::Copy {
            account,
            from,
            to,
            uids,
            remove_source,
        } => copy::plan(p, account, from, to, uids, remove_source),
        Op::CreateMailbox { account, name } => mailbox_create::plan(p, account, name),
        Op::DeleteMailbox { account, mailbox } => mailbox_delete::plan(p, account, mailbox),
        Op::RenameMailbox {
            account,
            mailbox,
            to,
        } => mailbox_rename::plan(p, account, mailbox, to),
        Op::Subscribe {
            account,
            name,
            subscribed,
        } => subscribe::plan(p, account, name, subscribed),
        Op::SetMetadata {
            account,
            mailbox,
            key,
            value,
        } => metadata::plan(p, account, mailbox, key, value),
        Op::Enqueue {
            sender,
            created,
            destinations,
            body,
        } => queue_add::plan(p, &sender, created, &destinations, &body),
        Op::QueueDone { id, recipients } => queue_done::plan(p, id, &recipients),
        Op::SetDeviceToken {
            account,
            token,
            now,
        } => metadata::plan_set_token(p, account, &token, now),
        Op::RemoveDeviceToken { account, token } => metadata::plan_remove_token(p, account, &token),
        Op::NotifyDone { account, seq } => notify_done::plan(p, account, seq),
        Op::ImportAccount {
            addr,
            password_hash,
            created,
            inbox_uid_validity,
            last_login_day,
        } => account_create::plan_import(
            p,
            addr,
            password_hash,
            created,
            inbox_uid_validity,
            last_login_day,
        ),
        Op::ImportMailbox {
            account,
            name,
            uid_validity,
            uid_next,
        } => mailbox_create::plan_import(p, account, name, uid_validity, uid_next),
        Op::ImportMessage {
            account,
            mailbox,
            uid,
            flags,
            internal_date,
            body,
        } => insert::plan_import(p, account, mailbox, uid, &flags, internal_date, &body),
        Op::Compact { segment, bodies } => body_move::plan(p, segment, &bodies),
        Op::Group(ops) => plan_group(p, ops),
    }
}

/// `Op::Group`: the members in order; the first refused one stops the rest (each gets
/// [`GROUP_STOPPED`]), the records of those before it stay. An I/O error is the group's error,
/// so that the writer fails the whole batch.
fn plan_group(p: &mut impl Planner, ops: Vec<Op>) -> Result<OpResult, Error> {
    let mut results = Vec::with_capacity(ops.len());
    let mut stopped = false;
    for op in ops {
        if stopped {
            results.push(Err(Error::Invalid(GROUP_STOPPED)));
            continue;
        }
        let r = plan(p, op);
        match &r {
            Err(e) if is_io(e) => return r,
            Err(_) => stopped = true,
            Ok(_) => {}
        }
        results.push(r);
    }
    Ok(OpResult::Group(results))
}

/// The error of the members of an `Op::Group` after the first refused one.
pub const GROUP_STOPPED: &str = "not applied: an earlier op of the group was refused";

impl Op {
    /// Message bytes the op will write (bounds the size of a group commit).
    pub(crate) fn body_len(&self) -> usize {
        match self {
            Op::Deliver { body, .. }
            | Op::Append { body, .. }
            | Op::ImportMessage { body, .. }
            | Op::Enqueue { body, .. } => body.len(),
            Op::Compact { bodies, .. } => bodies.iter().map(|(_, len)| *len as usize).sum(),
            Op::Group(ops) => ops.iter().map(Op::body_len).sum(),
            _ => 0,
        }
    }

    /// Whether the op frees space (or prepares freeing it: `\Deleted` before EXPUNGE), so that
    /// it may use the space reserve on a full disk.
    /// A queue entry finished frees its body's space once no entry refers to it; a group frees
    /// space if all its members do.
    pub(crate) fn frees_space(&self) -> bool {
        match self {
            Op::Expunge { .. }
            | Op::DeleteAccount { .. }
            | Op::DeleteMailbox { .. }
            | Op::SetFlags { .. }
            | Op::QueueDone { .. }
            | Op::NotifyDone { .. }
            | Op::RemoveDeviceToken { .. } => true,
            Op::Group(ops) => !ops.is_empty() && ops.iter().all(Op::frees_space),
            _ => false,
        }
    }

    /// A bound of the log bytes the op writes (its body and records), made room for before it
    /// is planned (an op writing more still works; on a full disk it then fails the batch
    /// instead of being refused alone).
    pub(crate) fn space_bound(&self) -> u64 {
        let header = super::format::HEADER_LEN as u64;
        let (items, flags) = match self {
            Op::Group(ops) => return ops.iter().map(Op::space_bound).sum(),
            // The copies (each in a frame) and the move records.
            Op::Compact { bodies, .. } => {
                let bytes: u64 = bodies.iter().map(|(_, len)| u64::from(*len)).sum();
                return bytes + (header + 24) * bodies.len() as u64 + 128 + 2 * header;
            }
            Op::Enqueue {
                sender,
                destinations,
                body,
                ..
            } => {
                // The stored body (envelope and message) and the record: every string once in
                // each, with its length and some fixed fields per recipient.
                let strings: usize = destinations
                    .iter()
                    .map(|(d, rs)| 2 * d.len() + rs.iter().map(|r| r.len() + 16).sum::<usize>())
                    .sum();
                return (body.len() + sender.len() + strings) as u64 + 128 + 2 * header;
            }
            // An Insert entry and a NotifyAdd account per recipient.
            Op::Deliver { recipients, .. } => (2 * recipients.len(), 0),
            Op::SetDeviceToken { .. } | Op::RemoveDeviceToken { .. } => {
                let tokens = super::notify::MAX_TOKENS * (super::notify::MAX_TOKEN_LEN + 24);
                return tokens as u64 + 128 + 2 * header;
            }
            Op::Append { flags, .. } | Op::ImportMessage { flags, .. } => (0, flags.len()),
            Op::SetFlags { uids, flags, .. } => (uids.len(), flags.len()),
            Op::Expunge { uids, .. } | Op::Copy { uids, .. } => (uids.len(), 0),
            _ => (0, 0),
        };
        self.body_len() as u64 + 128 + 32 * items as u64 + 64 * flags as u64 + 2 * header
    }
}

#[cfg(test)]
mod tests {
    use super::KINDS;
    use crate::store::format::{KIND_BODY, KIND_SEAL};

    #[test]
    fn kind_bytes_are_distinct_and_not_framing() {
        let mut seen = std::collections::BTreeSet::new();
        for (kind, name) in KINDS {
            assert!(*kind != KIND_SEAL && *kind != KIND_BODY, "{name}");
            assert!(seen.insert(*kind), "kind {kind} ({name}) used twice");
        }
    }
}
