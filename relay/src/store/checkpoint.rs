//! Checkpoints of the index: `<dir>/index/<segment:020>-<offset:020>.rkyv` holds the whole
//! index as it was after every record before that log position.
//!
//! File layout (integers little-endian):
//!
//! | field | size | content |
//! |---|---|---|
//! | magic | 8 | `b"RLYCKPT3"` |
//! | crc | 4 | CRC32C of everything after the header |
//! | zero | 4 | 0 |
//! | archive length | 8 | `A` |
//! | archive | `A` | rkyv archive of [`CpCheckpoint`]: the index, the queue's destinations and their entry counts, the pending push notifications |
//! | queue entries | 24 each | per destination, in the archive's order, its entries oldest first: `seq u64, offset u64, segment u32, remaining u32` |
//!
//! The queue's entries are a plain table after the archive so that they are written straight
//! from the index (from a snapshot sharing its chunks) and read straight into it, through a
//! 64 KiB buffer: a checkpoint of a million queued messages needs no second copy of them in
//! memory, neither written nor loaded.
//!
//! A checkpoint is written to `*.tmp`, fsynced, renamed and the directory fsynced, so a crash
//! leaves either the old set or the new file complete. Loading checks the CRC and the archive
//! (bytecheck) and every queue entry; a bad file is skipped and an older one (or a full replay)
//! is used.
//!
//! Older layouts still load: `b"RLYCKPT1"` (header as above, then the rkyv archive of
//! [`CpIndex`] alone) is from before the queue existed and loads with an empty queue;
//! `b"RLYCKPT2"` (as above, the archive a [`CpCheckpointV2`] without the notifications) loads
//! with no pending notifications. The
//! layouts are on disk: a new field means a new magic with the old layouts still loaded, never
//! a changed layout under an old one.
//!
//! The archived types are flat lists, not the index's maps: derived values (quota usage, counts,
//! address lookup, live bodies per segment, free queue slots) are recomputed on load, so they
//! cannot disagree.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::fault;
use super::index::{Account, Index, Mailbox};
use super::log::{io_err, sync_dir, Position};
use super::notify::{Notifications, PendingNotify};
use super::queue::{Entry, Queue, QueueBuilder};
use super::{BodyRef, Error, MessageMeta};

/// The index without the queue ([`CpIndex`]).
const MAGIC_V1: &[u8; 8] = b"RLYCKPT1";
/// The index and the queue ([`CpCheckpointV2`] and the entry table).
const MAGIC_V2: &[u8; 8] = b"RLYCKPT2";
/// The index, the queue and the pending notifications ([`CpCheckpoint`] and the entry table).
const MAGIC: &[u8; 8] = b"RLYCKPT3";
const HEADER: usize = 16;
/// Bytes of one queue entry in the table.
const ENTRY: usize = 24;
/// Buffer of the reads and writes of a checkpoint.
const BUFFER: usize = 1 << 16;

/// Archived form of the index with the outbound queue's destinations and the pending push
/// notifications (`RLYCKPT3`); the queue's entries follow the archive in the file.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CpCheckpoint {
    index: CpIndex,
    queue: CpQueue,
    notify: CpNotify,
}

/// `RLYCKPT2`: [`CpCheckpoint`] from before push notifications.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CpCheckpointV2 {
    index: CpIndex,
    queue: CpQueue,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct CpNotify {
    next_seq: u64,
    pending: Vec<CpPending>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct CpPending {
    account: u32,
    seq: u64,
    at: i64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct CpQueue {
    next_seq: u64,
    destinations: Vec<CpDestination>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct CpDestination {
    slot: u32,
    name: String,
    /// Its entries in the table after the archive.
    entries: u64,
}

fn encode_entry(e: &Entry) -> [u8; ENTRY] {
    let mut b = [0u8; ENTRY];
    b[..8].copy_from_slice(&e.seq.to_le_bytes());
    b[8..16].copy_from_slice(&e.offset.to_le_bytes());
    b[16..20].copy_from_slice(&e.segment.to_le_bytes());
    b[20..].copy_from_slice(&e.remaining.to_le_bytes());
    b
}

fn decode_entry(b: &[u8; ENTRY]) -> Entry {
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    Entry {
        seq: u64_at(0),
        offset: u64_at(8),
        segment: u32_at(16),
        remaining: u32_at(20),
    }
}

/// Computes the CRC32C of what passes through it.
struct Crc<T> {
    inner: T,
    crc: u32,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
}

/// A copy of the index at a log position, to be written by another thread: the accounts
/// flattened, the queue a clone sharing its entries with the index.
pub struct Snapshot {
    index: CpIndex,
    queue: Queue,
    notify: CpNotify,
}

/// Archived form of the index without the queue (`RLYCKPT1`, and a part of `RLYCKPT2`).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CpIndex {
    segment: u32,
    offset: u64,
    next_account_id: u32,
    last_uid_validity: u32,
    accounts: Vec<CpAccount>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct CpAccount {
    id: u32,
    addr: String,
    password_hash: String,
    created: i64,
    last_login_day: u32,
    modseq: u64,
    next_mailbox_id: u32,
    keywords: Vec<String>,
    subscriptions: Vec<String>,
    metadata: Vec<CpMeta>,
    mailboxes: Vec<CpMailbox>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct CpMeta {
    mailbox: Option<u32>,
    key: String,
    value: Vec<u8>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct CpMailbox {
    id: u32,
    name: String,
    uid_validity: u32,
    uid_next: u32,
    highest_modseq: u64,
    messages: Vec<CpMessage>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct CpMessage {
    uid: u32,
    flags: u64,
    modseq: u64,
    internal_date: i64,
    segment: u32,
    offset: u64,
    len: u32,
}

fn to_cp(index: &Index, pos: Position) -> CpIndex {
    let mut accounts: Vec<CpAccount> = index
        .accounts
        .values()
        .map(|a| CpAccount {
            id: a.id,
            addr: a.addr.clone(),
            password_hash: a.password_hash.clone(),
            created: a.created,
            last_login_day: a.last_login_day,
            modseq: a.modseq,
            next_mailbox_id: a.next_mailbox_id,
            keywords: a.keywords.clone(),
            subscriptions: a.subscriptions.iter().cloned().collect(),
            metadata: a
                .metadata
                .iter()
                .map(|((m, k), v)| CpMeta {
                    mailbox: *m,
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            mailboxes: a
                .mailboxes
                .values()
                .map(|mb| CpMailbox {
                    id: mb.id,
                    name: mb.name.clone(),
                    uid_validity: mb.uid_validity,
                    uid_next: mb.uid_next,
                    highest_modseq: mb.highest_modseq,
                    messages: mb
                        .messages
                        .iter()
                        .map(|m| CpMessage {
                            uid: m.uid,
                            flags: m.flags,
                            modseq: m.modseq,
                            internal_date: m.internal_date,
                            segment: m.body.segment,
                            offset: m.body.offset,
                            len: m.body.len,
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    accounts.sort_by_key(|a| a.id);
    CpIndex {
        segment: pos.segment,
        offset: pos.offset,
        next_account_id: index.next_account_id,
        last_uid_validity: index.last_uid_validity,
        accounts,
    }
}

fn queue_to_cp(queue: &Queue) -> CpQueue {
    CpQueue {
        next_seq: queue.next_seq(),
        destinations: queue
            .slots()
            .map(|(slot, d)| CpDestination {
                slot,
                name: d.name.clone(),
                entries: d.len() as u64,
            })
            .collect(),
    }
}

fn from_cp(cp: CpIndex, queue: Queue) -> Result<(Index, Position), &'static str> {
    let mut index = Index {
        next_account_id: cp.next_account_id,
        last_uid_validity: cp.last_uid_validity,
        ..Index::default()
    };
    for (_, d) in queue.slots() {
        for e in d.iter() {
            *index.seg_refs.entry(e.segment).or_default() += 1;
        }
    }
    index.queue = queue;
    for a in cp.accounts {
        let mut acc = Account {
            id: a.id,
            addr: a.addr,
            password_hash: a.password_hash,
            created: a.created,
            last_login_day: a.last_login_day,
            modseq: a.modseq,
            bytes_used: 0,
            messages: 0,
            mailboxes: BTreeMap::new(),
            next_mailbox_id: a.next_mailbox_id,
            keywords: a.keywords,
            subscriptions: a.subscriptions.into_iter().collect::<BTreeSet<_>>(),
            metadata: a
                .metadata
                .into_iter()
                .map(|m| ((m.mailbox, m.key), m.value))
                .collect(),
        };
        for mb in a.mailboxes {
            let mut size = 0u64;
            let mut messages = Vec::with_capacity(mb.messages.len());
            for m in mb.messages {
                if messages
                    .last()
                    .is_some_and(|p: &MessageMeta| p.uid >= m.uid)
                {
                    return Err("messages not in UID order");
                }
                size += u64::from(m.len);
                *index.seg_refs.entry(m.segment).or_default() += 1;
                messages.push(MessageMeta {
                    uid: m.uid,
                    flags: m.flags,
                    modseq: m.modseq,
                    internal_date: m.internal_date,
                    size: m.len,
                    body: BodyRef {
                        segment: m.segment,
                        offset: m.offset,
                        len: m.len,
                    },
                });
            }
            acc.bytes_used += size;
            acc.messages += messages.len() as u64;
            acc.mailboxes.insert(
                mb.id,
                Mailbox {
                    id: mb.id,
                    name: mb.name,
                    uid_validity: mb.uid_validity,
                    uid_next: mb.uid_next,
                    highest_modseq: mb.highest_modseq,
                    messages: super::messages::Messages::from_sorted(messages),
                    size,
                },
            );
        }
        if index.by_addr.insert(acc.addr.clone(), acc.id).is_some() {
            return Err("duplicate address");
        }
        if index.accounts.insert(acc.id, acc).is_some() {
            return Err("duplicate account id");
        }
    }
    Ok((
        index,
        Position {
            segment: cp.segment,
            offset: cp.offset,
        },
    ))
}

/// File name of the checkpoint at `pos`.
fn file_name(pos: Position) -> String {
    format!("{:020}-{:020}.rkyv", pos.segment, pos.offset)
}

fn parse_name(name: &str) -> Option<Position> {
    let stem = name.strip_suffix(".rkyv")?;
    let (s, o) = stem.split_once('-')?;
    Some(Position {
        segment: s.parse().ok()?,
        offset: o.parse().ok()?,
    })
}

/// Checkpoints present in `dir`, newest first.
pub fn list(dir: &Path) -> Result<Vec<(Position, PathBuf)>, Error> {
    let mut v = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(io_err("list checkpoints", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("list checkpoints", dir))?;
        let name = entry.file_name();
        if let Some(pos) = name.to_str().and_then(parse_name) {
            v.push((pos, entry.path()));
        }
    }
    v.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(v)
}

/// Load and verify one checkpoint file (either layout).
pub fn load(path: &Path) -> Result<(Index, Position), String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut r = BufReader::with_capacity(BUFFER, file);
    let mut header = [0u8; HEADER];
    r.read_exact(&mut header).map_err(|_| "bad header")?;
    let magic = &header[..8];
    if (magic != MAGIC && magic != MAGIC_V2 && magic != MAGIC_V1) || header[12..] != [0; 4] {
        return Err("bad header".into());
    }
    let crc = u32::from_le_bytes(header[8..12].try_into().expect("slice of 4 bytes"));
    let mut r = Crc { inner: r, crc: 0 };
    let rest = usize::try_from(len - HEADER as u64).map_err(|e| e.to_string())?;
    let (index, pos) = if magic == MAGIC_V1 {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(rest);
        aligned.resize(rest, 0);
        r.read_exact(&mut aligned).map_err(|e| e.to_string())?;
        if r.crc != crc {
            return Err("checksum mismatch".into());
        }
        let cp = rkyv::from_bytes::<CpIndex, rkyv::rancor::Error>(&aligned)
            .map_err(|e| e.to_string())?;
        from_cp(cp, Queue::default())
    } else {
        let mut n = [0u8; 8];
        r.read_exact(&mut n).map_err(|e| e.to_string())?;
        let archive_len = usize::try_from(u64::from_le_bytes(n))
            .ok()
            .filter(|n| *n <= rest)
            .ok_or("archive longer than the file")?;
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(archive_len);
        aligned.resize(archive_len, 0);
        r.read_exact(&mut aligned).map_err(|e| e.to_string())?;
        let (cp_index, cp_queue, notify) = if magic == MAGIC_V2 {
            let cp = rkyv::access::<ArchivedCpCheckpointV2, rkyv::rancor::Error>(&aligned)
                .map_err(|e| e.to_string())?;
            (&cp.index, &cp.queue, Notifications::default())
        } else {
            let cp = rkyv::access::<ArchivedCpCheckpoint, rkyv::rancor::Error>(&aligned)
                .map_err(|e| e.to_string())?;
            let pending = cp.notify.pending.iter().map(|p| PendingNotify {
                account: p.account.to_native(),
                seq: p.seq.to_native(),
                at: p.at.to_native(),
            });
            let notify = Notifications::from_parts(cp.notify.next_seq.to_native(), pending);
            (&cp.index, &cp.queue, notify)
        };
        let index = rkyv::deserialize::<CpIndex, rkyv::rancor::Error>(cp_index)
            .map_err(|e| e.to_string())?;
        let mut queue = QueueBuilder::new(cp_queue.next_seq.to_native());
        let mut entry = [0u8; ENTRY];
        for d in cp_queue.destinations.iter() {
            queue.destination(d.slot.to_native(), d.name.as_str().to_owned())?;
            for _ in 0..d.entries.to_native() {
                r.read_exact(&mut entry).map_err(|e| e.to_string())?;
                queue.entry(decode_entry(&entry))?;
            }
        }
        if r.read(&mut [0u8; 1]).map_err(|e| e.to_string())? != 0 {
            return Err("bytes after the queue entries".into());
        }
        if r.crc != crc {
            return Err("checksum mismatch".into());
        }
        from_cp(index, queue.finish()?).map(|(mut index, pos)| {
            index.notify = notify;
            (index, pos)
        })
    }
    .map_err(str::to_owned)?;
    if parse_name(&path.file_name().unwrap_or_default().to_string_lossy()) != Some(pos) {
        return Err("position does not match file name".into());
    }
    Ok((index, pos))
}

/// Write a checkpoint of `index` at `pos` durably; keep only this one and the previous one.
/// Returns the position of the previous one if there is one: log segments before it are needed
/// by no recovery path (even if the new checkpoint turns out unreadable), except for the bodies
/// they hold.
pub fn write(dir: &Path, index: &Index, pos: Position) -> Result<Option<Position>, Error> {
    write_snapshot(dir, snapshot(index, pos))
}

/// A copy of `index` at `pos` that can be written by another thread.
pub fn snapshot(index: &Index, pos: Position) -> Snapshot {
    let (next_seq, pending) = index.notify.parts();
    Snapshot {
        index: to_cp(index, pos),
        queue: index.queue.clone(),
        notify: CpNotify {
            next_seq,
            pending: pending
                .into_iter()
                .map(|p| CpPending {
                    account: p.account,
                    seq: p.seq,
                    at: p.at,
                })
                .collect(),
        },
    }
}

/// The position a snapshot was taken at.
pub fn snapshot_position(cp: &Snapshot) -> Position {
    Position {
        segment: cp.index.segment,
        offset: cp.index.offset,
    }
}

/// [`write()`] of a snapshot.
pub fn write_snapshot(dir: &Path, snap: Snapshot) -> Result<Option<Position>, Error> {
    super::log::durable_dir(dir)?;
    let pos = snapshot_position(&snap);
    let cp = CpCheckpoint {
        queue: queue_to_cp(&snap.queue),
        index: snap.index,
        notify: snap.notify,
    };
    let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&cp)
        .map_err(|e| Error::Corrupt(format!("cannot serialize checkpoint: {e}")))?;
    drop(cp);
    let path = dir.join(file_name(pos));
    let tmp = path.with_extension("tmp");
    let f = crate::privilege::open_private(
        File::options().write(true).create(true).truncate(true),
        &tmp,
    )
    .map_err(io_err("create checkpoint", &tmp))?;
    let write = || -> std::io::Result<()> {
        fault::check(fault::Point::Write, &tmp)?;
        // The header last: its CRC is known once everything after it is written.
        let mut w = Crc {
            inner: BufWriter::with_capacity(BUFFER, &f),
            crc: 0,
        };
        w.inner.write_all(&[0; HEADER])?;
        w.write_all(&(archive.len() as u64).to_le_bytes())?;
        w.write_all(&archive)?;
        for (_, d) in snap.queue.slots() {
            for e in d.iter() {
                w.write_all(&encode_entry(e))?;
            }
        }
        w.flush()?;
        let crc = w.crc;
        drop(w);
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&header, 0)?;
        fault::check(fault::Point::Sync, &tmp)?;
        f.sync_all()
    };
    write().map_err(io_err("write checkpoint", &tmp))?;
    fault::synced(&tmp);
    drop(f);
    drop(snap.queue);
    std::fs::rename(&tmp, &path).map_err(io_err("rename checkpoint", &path))?;
    fault::renamed(&tmp, &path);
    sync_dir(dir)?;
    let all = list(dir)?;
    let mut previous = None;
    for (i, (p, file)) in all.iter().enumerate() {
        if i == 1 && *p < pos {
            previous = Some(*p);
        } else if i >= 2 {
            std::fs::remove_file(file).map_err(io_err("remove old checkpoint", file))?;
        }
    }
    Ok(previous)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::format::{InsertEntry, Record};
    use crate::store::record;

    #[test]
    fn round_trip_and_corruption_detected() {
        let mut index = Index::default();
        index.apply(&Record::AccountCreate(
            record::account_create::AccountCreate {
                id: 1,
                addr: "a@x".into(),
                password_hash: "h".into(),
                created: 86_400 * 3,
                inbox_uid_validity: 9,
            },
        ));
        index.apply(&Record::Keyword(record::keyword::Keyword {
            account: 1,
            name: "$x".into(),
        }));
        index.apply(&Record::Insert(record::insert::Insert {
            body: BodyRef {
                segment: 2,
                offset: 9,
                len: 5,
            },
            internal_date: 7,
            entries: vec![InsertEntry {
                account: 1,
                mailbox: 1,
                uid: 1,
                modseq: 2,
                flags: 1 << 8,
            }],
        }));
        index.apply(&Record::Metadata(record::metadata::Metadata {
            account: 1,
            mailbox: None,
            key: "/private/k".into(),
            value: Some(b"v".to_vec()),
        }));
        let without_queue = index.clone();
        for (first_seq, slot, destination, segment) in [
            (1, 0, "a.example", 2),
            (3, 1, "[10.0.0.1]", 4),
            (4, 0, "a.example", 4),
        ] {
            index.apply(&Record::QueueAdd(record::queue_add::QueueAdd {
                body: BodyRef {
                    segment,
                    offset: 100 + first_seq,
                    len: 50,
                },
                first_seq,
                groups: vec![record::queue_add::QueueGroup {
                    slot,
                    destination: destination.into(),
                    recipients: 3,
                }],
            }));
        }
        index.apply(&Record::QueueDone(record::queue_done::QueueDone {
            seq: 1,
            slot: 0,
            done: 0b010,
        }));
        assert_eq!(index.queue.len(), 3);
        assert_eq!(index.seg_refs.get(&4), Some(&2));
        index.apply(&Record::NotifyAdd(record::notify_add::NotifyAdd {
            seq: 41,
            at: 1_800_000_000,
            accounts: vec![1],
        }));
        assert_eq!(index.notify.len(), 1);
        let dir = tempfile::tempdir().unwrap();
        let pos = Position {
            segment: 3,
            offset: 77,
        };
        write(dir.path(), &index, pos).unwrap();
        let (path_pos, path) = list(dir.path()).unwrap().remove(0);
        assert_eq!(path_pos, pos);
        let (loaded, p) = load(&path).unwrap();
        assert_eq!(p, pos);
        assert_eq!(loaded, index);
        assert_eq!(
            loaded
                .queue
                .get(crate::store::QueueId { seq: 1, slot: 0 })
                .unwrap()
                .1
                .remaining,
            0b101
        );
        // The layout from before the queue still loads, with an empty queue.
        let v1 = dir.path().join(file_name(Position {
            segment: 2,
            offset: 5,
        }));
        let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&to_cp(
            &without_queue,
            Position {
                segment: 2,
                offset: 5,
            },
        ))
        .unwrap();
        let mut bytes = MAGIC_V1.to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&archive).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&archive);
        std::fs::write(&v1, &bytes).unwrap();
        let (old, p) = load(&v1).unwrap();
        assert_eq!(
            p,
            Position {
                segment: 2,
                offset: 5
            }
        );
        assert_eq!(old, without_queue);
        assert_eq!(old.queue, Queue::default());
        std::fs::remove_file(&v1).unwrap();
        // The layout from before push notifications still loads, without pending ones.
        let v2 = dir.path().join(file_name(Position {
            segment: 2,
            offset: 6,
        }));
        let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&CpCheckpointV2 {
            index: to_cp(
                &without_queue,
                Position {
                    segment: 2,
                    offset: 6,
                },
            ),
            queue: queue_to_cp(&Queue::default()),
        })
        .unwrap();
        let mut rest = (archive.len() as u64).to_le_bytes().to_vec();
        rest.extend_from_slice(&archive);
        let mut bytes = MAGIC_V2.to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&rest).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&rest);
        std::fs::write(&v2, &bytes).unwrap();
        let (old, _) = load(&v2).unwrap();
        assert_eq!(old, without_queue);
        assert!(old.notify.is_empty());
        std::fs::remove_file(&v2).unwrap();
        // Any flipped byte is detected.
        let bytes = std::fs::read(&path).unwrap();
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            std::fs::write(&path, &b).unwrap();
            assert!(load(&path).is_err(), "flip at {i} not detected");
        }
    }
}
