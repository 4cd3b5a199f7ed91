//! The on-disk record format of the log: framing, checksums and the encoding of every record
//! kind. Pure functions over byte slices; this module never does I/O and never panics on any
//! input (garbage decodes to [`Frame::Torn`] or a [`DecodeError`]).
//!
//! # Frame
//!
//! All integers are little-endian.
//!
//! | offset | size  | field                                                        |
//! |--------|-------|--------------------------------------------------------------|
//! | 0      | 4     | `len`: bytes of `kind` + `payload` (>= 1; 0 = end of log)    |
//! | 4      | 4     | CRC32C of `kind` + `payload`                                 |
//! | 8      | 1     | `kind` (see the `KIND_*` constants)                          |
//! | 9      | len-1 | `payload`                                                    |
//!
//! Segments are preallocated with zeros, so a zero `len` marks the end of the written part. A
//! frame whose `len` runs past the segment or whose CRC does not match is a torn tail.
//!
//! # Payloads
//!
//! Field types: `u8`, `u32`, `u64`, `i64` fixed width; `str`/`bytes` = `u32 len` + bytes (UTF-8
//! for `str`); `opt<T>` = `u8` 0 (none) or 1 followed by `T`; `vec<T>` = `u32 count` + items.
//!
//! | kind | name          | payload                                                              |
//! |------|---------------|----------------------------------------------------------------------|
//! | 1    | Seal          | empty: the segment ends here, the log continues in the next segment  |
//! | 2    | Body          | the raw message bytes (no length prefix; the frame gives it)        |
//! | 3    | AccountCreate | id u32, addr str, password_hash str, created i64, inbox_uid_validity u32 |
//! | 4    | AccountDelete | id u32                                                               |
//! | 5    | LastLogin     | account u32, day u32                                                 |
//! | 6    | MailboxCreate | account u32, id u32, name str, uid_validity u32                      |
//! | 7    | MailboxDelete | account u32, id u32                                                  |
//! | 8    | MailboxRename | account u32, id u32, name str                                        |
//! | 9    | Subscribe     | account u32, name str, subscribed u8                                 |
//! | 10   | Keyword       | account u32, name str (appended to the account's keyword table)     |
//! | 11   | Insert        | `segment u32, offset u64, len u32 (a Body's bytes), internal_date i64, vec<account u32, mailbox u32, uid u32, modseq u64, flags u64>` |
//! | 12   | Flags         | `account u32, mailbox u32, modseq u64, vec<uid u32, flags u64>` |
//! | 13   | Expunge       | `account u32, mailbox u32, modseq u64, vec<uid u32>` |
//! | 14   | Copy          | `account u32, from u32, to u32, modseq u64, remove_source u8, vec<src uid u32, new uid u32>` |
//! | 15   | Metadata      | `account u32, mailbox opt<u32>, key str, value opt<bytes>` |
//!
//! Records carry the values the writer decided (ids, UIDs, modseqs), so replay never has to
//! re-decide anything.

use super::BodyRef;

/// Bytes before the payload: `len`, `crc`, `kind`.
pub const HEADER_LEN: usize = 9;
/// Total length of a Seal frame; every segment keeps room for one.
pub const SEAL_LEN: u64 = HEADER_LEN as u64;

/// End of a segment; the log continues in the next one.
pub const KIND_SEAL: u8 = 1;
/// A message body.
pub const KIND_BODY: u8 = 2;
const KIND_ACCOUNT_CREATE: u8 = 3;
const KIND_ACCOUNT_DELETE: u8 = 4;
const KIND_LAST_LOGIN: u8 = 5;
const KIND_MAILBOX_CREATE: u8 = 6;
const KIND_MAILBOX_DELETE: u8 = 7;
const KIND_MAILBOX_RENAME: u8 = 8;
const KIND_SUBSCRIBE: u8 = 9;
const KIND_KEYWORD: u8 = 10;
const KIND_INSERT: u8 = 11;
const KIND_FLAGS: u8 = 12;
const KIND_EXPUNGE: u8 = 13;
const KIND_COPY: u8 = 14;
const KIND_METADATA: u8 = 15;

/// One index entry of an [`Record::Insert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertEntry {
    /// Account.
    pub account: u32,
    /// Mailbox.
    pub mailbox: u32,
    /// Assigned UID.
    pub uid: u32,
    /// Assigned modseq.
    pub modseq: u64,
    /// Initial flags.
    pub flags: u64,
}

/// A record of the index (everything but bodies and seals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A new account with its INBOX (mailbox id 1).
    AccountCreate {
        /// Account id.
        id: u32,
        /// Lowercase address.
        addr: String,
        /// Password hash.
        password_hash: String,
        /// Unix seconds.
        created: i64,
        /// UIDVALIDITY of the INBOX.
        inbox_uid_validity: u32,
    },
    /// Remove an account.
    AccountDelete {
        /// Account id.
        id: u32,
    },
    /// Day of last login.
    LastLogin {
        /// Account.
        account: u32,
        /// Unix day.
        day: u32,
    },
    /// New mailbox.
    MailboxCreate {
        /// Account.
        account: u32,
        /// Mailbox id.
        id: u32,
        /// Name.
        name: String,
        /// UIDVALIDITY.
        uid_validity: u32,
    },
    /// Remove a mailbox with its messages.
    MailboxDelete {
        /// Account.
        account: u32,
        /// Mailbox id.
        id: u32,
    },
    /// Rename a mailbox (and its children).
    MailboxRename {
        /// Account.
        account: u32,
        /// Mailbox id.
        id: u32,
        /// New name.
        name: String,
    },
    /// (Un)subscribe a name.
    Subscribe {
        /// Account.
        account: u32,
        /// Name.
        name: String,
        /// New state.
        subscribed: bool,
    },
    /// Append a keyword to the account's keyword table.
    Keyword {
        /// Account.
        account: u32,
        /// Keyword as first seen.
        name: String,
    },
    /// Index entries for one body.
    Insert {
        /// The body (a Body record written before this one).
        body: BodyRef,
        /// INTERNALDATE.
        internal_date: i64,
        /// Where it goes.
        entries: Vec<InsertEntry>,
    },
    /// New flags of some messages.
    Flags {
        /// Account.
        account: u32,
        /// Mailbox.
        mailbox: u32,
        /// Modseq of the change.
        modseq: u64,
        /// `(uid, new flags)`.
        changes: Vec<(u32, u64)>,
    },
    /// Remove messages.
    Expunge {
        /// Account.
        account: u32,
        /// Mailbox.
        mailbox: u32,
        /// Modseq of the change.
        modseq: u64,
        /// UIDs.
        uids: Vec<u32>,
    },
    /// COPY / MOVE within an account.
    Copy {
        /// Account.
        account: u32,
        /// Source mailbox.
        from: u32,
        /// Target mailbox.
        to: u32,
        /// Modseq of the change.
        modseq: u64,
        /// Remove the sources (MOVE).
        remove_source: bool,
        /// `(source uid, new uid)`.
        pairs: Vec<(u32, u32)>,
    },
    /// Set or delete a metadata entry.
    Metadata {
        /// Account.
        account: u32,
        /// Mailbox, or `None` for server entries.
        mailbox: Option<u32>,
        /// Entry name.
        key: String,
        /// Value, `None` deletes.
        value: Option<Vec<u8>>,
    },
}

/// A decoded log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    /// End of segment.
    Seal,
    /// A body: the raw bytes.
    Body(&'a [u8]),
    /// An index record.
    Record(Record),
}

/// Why a CRC-valid frame could not be decoded (a bug or a newer format, never a torn write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// What [`decode_frame`] found at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Zero length: nothing was written here.
    End,
    /// A partial or corrupt frame: the log ends before it.
    Torn,
    /// A complete frame with a valid checksum.
    Valid {
        /// Kind byte.
        kind: u8,
        /// Payload (after the kind byte).
        payload: &'a [u8],
        /// Total frame length including the header.
        total_len: usize,
    },
}

/// Decode the frame at the start of `buf` (the rest of the segment).
pub fn decode_frame(buf: &[u8]) -> Frame<'_> {
    let Some(len_bytes) = buf.get(0..4) else {
        return if buf.iter().all(|&b| b == 0) {
            Frame::End
        } else {
            Frame::Torn
        };
    };
    let len = u32::from_le_bytes(len_bytes.try_into().expect("slice of 4 bytes")) as usize;
    if len == 0 {
        return Frame::End;
    }
    let Some(total_len) = len.checked_add(8) else {
        return Frame::Torn;
    };
    let Some(frame) = buf.get(..total_len) else {
        return Frame::Torn;
    };
    let crc = u32::from_le_bytes(frame[4..8].try_into().expect("slice of 4 bytes"));
    let body = &frame[8..];
    if crc32c::crc32c(body) != crc {
        return Frame::Torn;
    }
    Frame::Valid {
        kind: body[0],
        payload: &body[1..],
        total_len,
    }
}

/// Append one frame of `kind` with `payload` to `out`.
///
/// The caller guarantees `payload.len() < u32::MAX` (bodies are limited before they get here).
pub fn put_frame(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len() + 1).expect("payload length should be checked by caller");
    let mut crc = crc32c::crc32c(&[kind]);
    crc = crc32c::crc32c_append(crc, payload);
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// Decode the entry of a valid frame.
pub fn decode_entry(kind: u8, payload: &[u8]) -> Result<Entry<'_>, DecodeError> {
    match kind {
        KIND_SEAL => {
            if payload.is_empty() {
                Ok(Entry::Seal)
            } else {
                Err(DecodeError("seal with payload"))
            }
        }
        KIND_BODY => Ok(Entry::Body(payload)),
        _ => Record::decode(kind, payload).map(Entry::Record),
    }
}

impl Record {
    /// The kind byte of this record.
    pub fn kind(&self) -> u8 {
        match self {
            Record::AccountCreate { .. } => KIND_ACCOUNT_CREATE,
            Record::AccountDelete { .. } => KIND_ACCOUNT_DELETE,
            Record::LastLogin { .. } => KIND_LAST_LOGIN,
            Record::MailboxCreate { .. } => KIND_MAILBOX_CREATE,
            Record::MailboxDelete { .. } => KIND_MAILBOX_DELETE,
            Record::MailboxRename { .. } => KIND_MAILBOX_RENAME,
            Record::Subscribe { .. } => KIND_SUBSCRIBE,
            Record::Keyword { .. } => KIND_KEYWORD,
            Record::Insert { .. } => KIND_INSERT,
            Record::Flags { .. } => KIND_FLAGS,
            Record::Expunge { .. } => KIND_EXPUNGE,
            Record::Copy { .. } => KIND_COPY,
            Record::Metadata { .. } => KIND_METADATA,
        }
    }

    /// Append the payload (without frame) to `out`.
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        match self {
            Record::AccountCreate {
                id,
                addr,
                password_hash,
                created,
                inbox_uid_validity,
            } => {
                w.u32(*id);
                w.str(addr);
                w.str(password_hash);
                w.i64(*created);
                w.u32(*inbox_uid_validity);
            }
            Record::AccountDelete { id } => w.u32(*id),
            Record::LastLogin { account, day } => {
                w.u32(*account);
                w.u32(*day);
            }
            Record::MailboxCreate {
                account,
                id,
                name,
                uid_validity,
            } => {
                w.u32(*account);
                w.u32(*id);
                w.str(name);
                w.u32(*uid_validity);
            }
            Record::MailboxDelete { account, id } => {
                w.u32(*account);
                w.u32(*id);
            }
            Record::MailboxRename { account, id, name } => {
                w.u32(*account);
                w.u32(*id);
                w.str(name);
            }
            Record::Subscribe {
                account,
                name,
                subscribed,
            } => {
                w.u32(*account);
                w.str(name);
                w.u8(u8::from(*subscribed));
            }
            Record::Keyword { account, name } => {
                w.u32(*account);
                w.str(name);
            }
            Record::Insert {
                body,
                internal_date,
                entries,
            } => {
                w.u32(body.segment);
                w.u64(body.offset);
                w.u32(body.len);
                w.i64(*internal_date);
                w.len(entries.len());
                for e in entries {
                    w.u32(e.account);
                    w.u32(e.mailbox);
                    w.u32(e.uid);
                    w.u64(e.modseq);
                    w.u64(e.flags);
                }
            }
            Record::Flags {
                account,
                mailbox,
                modseq,
                changes,
            } => {
                w.u32(*account);
                w.u32(*mailbox);
                w.u64(*modseq);
                w.len(changes.len());
                for (uid, flags) in changes {
                    w.u32(*uid);
                    w.u64(*flags);
                }
            }
            Record::Expunge {
                account,
                mailbox,
                modseq,
                uids,
            } => {
                w.u32(*account);
                w.u32(*mailbox);
                w.u64(*modseq);
                w.len(uids.len());
                for uid in uids {
                    w.u32(*uid);
                }
            }
            Record::Copy {
                account,
                from,
                to,
                modseq,
                remove_source,
                pairs,
            } => {
                w.u32(*account);
                w.u32(*from);
                w.u32(*to);
                w.u64(*modseq);
                w.u8(u8::from(*remove_source));
                w.len(pairs.len());
                for (a, b) in pairs {
                    w.u32(*a);
                    w.u32(*b);
                }
            }
            Record::Metadata {
                account,
                mailbox,
                key,
                value,
            } => {
                w.u32(*account);
                match mailbox {
                    None => w.u8(0),
                    Some(m) => {
                        w.u8(1);
                        w.u32(*m);
                    }
                }
                w.str(key);
                match value {
                    None => w.u8(0),
                    Some(v) => {
                        w.u8(1);
                        w.bytes(v);
                    }
                }
            }
        }
    }

    /// Append the whole frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut payload = Vec::new();
        self.encode_payload(&mut payload);
        put_frame(self.kind(), &payload, out);
    }

    /// Decode a record payload of `kind`.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Record, DecodeError> {
        let mut r = Reader(payload);
        let rec = match kind {
            KIND_ACCOUNT_CREATE => Record::AccountCreate {
                id: r.u32()?,
                addr: r.str()?,
                password_hash: r.str()?,
                created: r.i64()?,
                inbox_uid_validity: r.u32()?,
            },
            KIND_ACCOUNT_DELETE => Record::AccountDelete { id: r.u32()? },
            KIND_LAST_LOGIN => Record::LastLogin {
                account: r.u32()?,
                day: r.u32()?,
            },
            KIND_MAILBOX_CREATE => Record::MailboxCreate {
                account: r.u32()?,
                id: r.u32()?,
                name: r.str()?,
                uid_validity: r.u32()?,
            },
            KIND_MAILBOX_DELETE => Record::MailboxDelete {
                account: r.u32()?,
                id: r.u32()?,
            },
            KIND_MAILBOX_RENAME => Record::MailboxRename {
                account: r.u32()?,
                id: r.u32()?,
                name: r.str()?,
            },
            KIND_SUBSCRIBE => Record::Subscribe {
                account: r.u32()?,
                name: r.str()?,
                subscribed: r.bool()?,
            },
            KIND_KEYWORD => Record::Keyword {
                account: r.u32()?,
                name: r.str()?,
            },
            KIND_INSERT => {
                let body = BodyRef {
                    segment: r.u32()?,
                    offset: r.u64()?,
                    len: r.u32()?,
                };
                let internal_date = r.i64()?;
                let n = r.count(28)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(InsertEntry {
                        account: r.u32()?,
                        mailbox: r.u32()?,
                        uid: r.u32()?,
                        modseq: r.u64()?,
                        flags: r.u64()?,
                    });
                }
                Record::Insert {
                    body,
                    internal_date,
                    entries,
                }
            }
            KIND_FLAGS => {
                let account = r.u32()?;
                let mailbox = r.u32()?;
                let modseq = r.u64()?;
                let n = r.count(12)?;
                let mut changes = Vec::with_capacity(n);
                for _ in 0..n {
                    changes.push((r.u32()?, r.u64()?));
                }
                Record::Flags {
                    account,
                    mailbox,
                    modseq,
                    changes,
                }
            }
            KIND_EXPUNGE => {
                let account = r.u32()?;
                let mailbox = r.u32()?;
                let modseq = r.u64()?;
                let n = r.count(4)?;
                let mut uids = Vec::with_capacity(n);
                for _ in 0..n {
                    uids.push(r.u32()?);
                }
                Record::Expunge {
                    account,
                    mailbox,
                    modseq,
                    uids,
                }
            }
            KIND_COPY => {
                let account = r.u32()?;
                let from = r.u32()?;
                let to = r.u32()?;
                let modseq = r.u64()?;
                let remove_source = r.bool()?;
                let n = r.count(8)?;
                let mut pairs = Vec::with_capacity(n);
                for _ in 0..n {
                    pairs.push((r.u32()?, r.u32()?));
                }
                Record::Copy {
                    account,
                    from,
                    to,
                    modseq,
                    remove_source,
                    pairs,
                }
            }
            KIND_METADATA => {
                let account = r.u32()?;
                let mailbox = if r.bool()? { Some(r.u32()?) } else { None };
                let key = r.str()?;
                let value = if r.bool()? {
                    Some(r.bytes()?.to_vec())
                } else {
                    None
                };
                Record::Metadata {
                    account,
                    mailbox,
                    key,
                    value,
                }
            }
            _ => return Err(DecodeError("unknown record kind")),
        };
        if !r.0.is_empty() {
            return Err(DecodeError("trailing bytes in record"));
        }
        Ok(rec)
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("collections in records should be < 4 GiB"));
    }
    fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.0.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("record too short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let b = self.take(N)?;
        Ok(b.try_into().expect("take returns exactly N bytes"))
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError("bad boolean")),
        }
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// An item count, checked against the bytes left so garbage cannot make us allocate much.
    fn count(&mut self, item_size: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(item_size) > self.0.len() {
            return Err(DecodeError("count larger than record"));
        }
        Ok(n)
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError("string not UTF-8"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body_ref() -> impl Strategy<Value = BodyRef> {
        (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(segment, offset, len)| BodyRef {
            segment,
            offset,
            len,
        })
    }

    fn record() -> impl Strategy<Value = Record> {
        let s = ".{0,20}";
        prop_oneof![
            (any::<u32>(), s, s, any::<i64>(), any::<u32>()).prop_map(|(id, a, p, c, v)| {
                Record::AccountCreate {
                    id,
                    addr: a,
                    password_hash: p,
                    created: c,
                    inbox_uid_validity: v,
                }
            }),
            any::<u32>().prop_map(|id| Record::AccountDelete { id }),
            (any::<u32>(), any::<u32>())
                .prop_map(|(account, day)| Record::LastLogin { account, day }),
            (any::<u32>(), any::<u32>(), s, any::<u32>()).prop_map(|(account, id, name, v)| {
                Record::MailboxCreate {
                    account,
                    id,
                    name,
                    uid_validity: v,
                }
            }),
            (any::<u32>(), any::<u32>())
                .prop_map(|(account, id)| Record::MailboxDelete { account, id }),
            (any::<u32>(), any::<u32>(), s).prop_map(|(account, id, name)| Record::MailboxRename {
                account,
                id,
                name
            }),
            (any::<u32>(), s, any::<bool>()).prop_map(|(account, name, subscribed)| {
                Record::Subscribe {
                    account,
                    name,
                    subscribed,
                }
            }),
            (any::<u32>(), s).prop_map(|(account, name)| Record::Keyword { account, name }),
            (
                body_ref(),
                any::<i64>(),
                proptest::collection::vec(
                    (
                        any::<u32>(),
                        any::<u32>(),
                        any::<u32>(),
                        any::<u64>(),
                        any::<u64>()
                    ),
                    0..5
                )
            )
                .prop_map(|(body, internal_date, es)| Record::Insert {
                    body,
                    internal_date,
                    entries: es
                        .into_iter()
                        .map(|(account, mailbox, uid, modseq, flags)| InsertEntry {
                            account,
                            mailbox,
                            uid,
                            modseq,
                            flags
                        })
                        .collect(),
                }),
            (
                any::<u32>(),
                any::<u32>(),
                any::<u64>(),
                proptest::collection::vec((any::<u32>(), any::<u64>()), 0..5)
            )
                .prop_map(|(account, mailbox, modseq, changes)| Record::Flags {
                    account,
                    mailbox,
                    modseq,
                    changes
                }),
            (
                any::<u32>(),
                any::<u32>(),
                any::<u64>(),
                proptest::collection::vec(any::<u32>(), 0..5)
            )
                .prop_map(|(account, mailbox, modseq, uids)| Record::Expunge {
                    account,
                    mailbox,
                    modseq,
                    uids
                }),
            (
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                any::<u64>(),
                any::<bool>(),
                proptest::collection::vec((any::<u32>(), any::<u32>()), 0..5)
            )
                .prop_map(|(account, from, to, modseq, remove_source, pairs)| {
                    Record::Copy {
                        account,
                        from,
                        to,
                        modseq,
                        remove_source,
                        pairs,
                    }
                }),
            (
                any::<u32>(),
                proptest::option::of(any::<u32>()),
                s,
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20))
            )
                .prop_map(|(account, mailbox, key, value)| Record::Metadata {
                    account,
                    mailbox,
                    key,
                    value
                }),
        ]
    }

    proptest! {
        #[test]
        fn record_round_trip(rec in record()) {
            let mut buf = Vec::new();
            rec.encode(&mut buf);
            let Frame::Valid { kind, payload, total_len } = decode_frame(&buf) else {
                panic!("frame of an encoded record should be valid");
            };
            prop_assert_eq!(total_len, buf.len());
            prop_assert_eq!(decode_entry(kind, payload).unwrap(), Entry::Record(rec));
        }

        #[test]
        fn body_round_trip(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = Vec::new();
            put_frame(KIND_BODY, &body, &mut buf);
            let Frame::Valid { kind, payload, total_len } = decode_frame(&buf) else {
                panic!("frame of a body should be valid");
            };
            prop_assert_eq!(total_len, HEADER_LEN + body.len());
            prop_assert_eq!(decode_entry(kind, payload).unwrap(), Entry::Body(&body));
        }

        #[test]
        fn garbage_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200), kind in any::<u8>()) {
            let _ = decode_frame(&buf);
            let _ = decode_entry(kind, &buf);
        }

        /// Flipping any one bit of a frame makes it torn (or, in the length field, torn or end).
        #[test]
        fn bit_flip_is_detected(rec in record(), bit in any::<proptest::sample::Index>()) {
            let mut buf = Vec::new();
            rec.encode(&mut buf);
            let bit = bit.index(buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            buf.resize(buf.len() + 64, 0);
            let frame = decode_frame(&buf);
            prop_assert!(matches!(frame, Frame::Torn | Frame::End), "got {:?}", frame);
        }
    }

    /// One record of every kind with fixed values.
    fn samples() -> Vec<Record> {
        vec![
            Record::AccountCreate {
                id: 7,
                addr: "a@x".into(),
                password_hash: "h".into(),
                created: -3,
                inbox_uid_validity: 9,
            },
            Record::AccountDelete { id: 7 },
            Record::LastLogin {
                account: 7,
                day: 20_000,
            },
            Record::MailboxCreate {
                account: 7,
                id: 2,
                name: "Ä/b".into(),
                uid_validity: 10,
            },
            Record::MailboxDelete { account: 7, id: 2 },
            Record::MailboxRename {
                account: 7,
                id: 2,
                name: "c".into(),
            },
            Record::Subscribe {
                account: 7,
                name: "c".into(),
                subscribed: true,
            },
            Record::Keyword {
                account: 7,
                name: "$k".into(),
            },
            Record::Insert {
                body: BodyRef {
                    segment: 3,
                    offset: 1 << 40,
                    len: 5,
                },
                internal_date: 1_700_000_000,
                entries: vec![
                    InsertEntry {
                        account: 7,
                        mailbox: 1,
                        uid: 4,
                        modseq: 5,
                        flags: 1 << 8 | 1,
                    },
                    InsertEntry {
                        account: 8,
                        mailbox: 1,
                        uid: 1,
                        modseq: 2,
                        flags: 0,
                    },
                ],
            },
            Record::Flags {
                account: 7,
                mailbox: 1,
                modseq: 6,
                changes: vec![(4, 2), (5, u64::MAX)],
            },
            Record::Expunge {
                account: 7,
                mailbox: 1,
                modseq: 7,
                uids: vec![4, 9],
            },
            Record::Copy {
                account: 7,
                from: 1,
                to: 2,
                modseq: 8,
                remove_source: true,
                pairs: vec![(5, 1)],
            },
            Record::Metadata {
                account: 7,
                mailbox: Some(2),
                key: "/private/k".into(),
                value: Some(b"v".to_vec()),
            },
            Record::Metadata {
                account: 7,
                mailbox: None,
                key: "/private/k".into(),
                value: None,
            },
        ]
    }

    /// The bytes of every record kind are fixed: existing logs must keep decoding the same.
    #[test]
    fn encoding_is_stable() {
        let hex: Vec<String> = samples()
            .iter()
            .map(|rec| {
                let mut buf = Vec::new();
                rec.encode(&mut buf);
                assert_eq!(
                    decode_entry(buf[8], &buf[9..]).unwrap(),
                    Entry::Record(rec.clone())
                );
                buf.iter().map(|b| format!("{b:02x}")).collect()
            })
            .collect();
        assert_eq!(hex, GOLDEN);
    }

    const GOLDEN: &[&str] = &[
        "1d0000009d16ff9a0307000000030000006140780100000068fdffffffffffffff09000000",
        "050000004f7037bc0407000000",
        "090000005c25ed920507000000204e0000",
        "15000000e234179306070000000200000004000000c3842f620a000000",
        "090000003c80bb39070700000002000000",
        "0e000000430ca1e80807000000020000000100000063",
        "0b000000e9cec5430907000000010000006301",
        "0b0000009adf59440a0700000002000000246b",
        "5500000048a2de300b0300000000000000000100000500000000f1536500000000020000000700000001000000040000000500000000000000010100000000000008000000010000000100000002000000000000000000000000000000",
        "2d000000aa2404270c070000000100000006000000000000000200000004000000020000000000000005000000ffffffffffffffff",
        "1d000000147a02fc0d07000000010000000700000000000000020000000400000009000000",
        "22000000d79f18d70e070000000100000002000000080000000000000001010000000500000001000000",
        "1e0000009e921f200f0700000001020000000a0000002f707269766174652f6b010100000076",
        "15000000fb30c1c70f07000000000a0000002f707269766174652f6b00",
    ];

    #[test]
    fn zero_prefix_is_end_and_short_garbage_is_torn() {
        assert_eq!(decode_frame(&[]), Frame::End);
        assert_eq!(decode_frame(&[0, 0, 0]), Frame::End);
        assert_eq!(decode_frame(&[0, 1, 0]), Frame::Torn);
        assert_eq!(decode_frame(&[0; 32]), Frame::End);
        assert_eq!(decode_frame(&[5, 0, 0, 0, 0, 0]), Frame::Torn);
    }
}
