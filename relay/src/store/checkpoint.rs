//! Checkpoints of the index: `<dir>/index/<segment:020>-<offset:020>.rkyv` holds the whole
//! index as it was after every record before that log position, serialized with rkyv.
//!
//! File layout: `b"RLYCKPT2"`, `u32` LE CRC32C of the rest, `u32` 0, then the rkyv archive of
//! [`CpCheckpoint`] (the index and the outbound queue). A checkpoint is written to `*.tmp`,
//! fsynced, renamed and the directory fsynced, so a crash leaves either the old set or the new
//! file complete. Loading checks the CRC and the archive (bytecheck); a bad file is skipped and
//! an older one (or a full replay) is used.
//!
//! Older layouts still load: `b"RLYCKPT1"` is the archive of [`CpIndex`] alone, from before the
//! queue existed, and loads with an empty queue. The archived types are on disk: a new field
//! means a new magic with the old layouts still loaded, never a changed layout under an old one.
//!
//! The archived types are flat lists, not the index's maps: derived values (quota usage, counts,
//! address lookup, live bodies per segment, free queue slots) are recomputed on load, so they
//! cannot disagree.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::fault;
use super::index::{Account, Index, Mailbox};
use super::log::{io_err, sync_dir, Position};
use super::queue::{Entry, Queue};
use super::{BodyRef, Error, MessageMeta};

/// The index without the queue ([`CpIndex`]).
const MAGIC_V1: &[u8; 8] = b"RLYCKPT1";
/// The index and the queue ([`CpCheckpoint`]).
const MAGIC: &[u8; 8] = b"RLYCKPT2";
const HEADER: usize = 16;

/// Archived form of the index with the outbound queue (`RLYCKPT2`).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CpCheckpoint {
    index: CpIndex,
    queue: CpQueue,
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
    entries: Vec<CpQueueEntry>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct CpQueueEntry {
    seq: u64,
    offset: u64,
    segment: u32,
    remaining: u32,
}

/// A copy of the index at a log position, to be written by another thread: the accounts
/// flattened, the queue a clone sharing its entries with the index (flattened when written).
pub struct Snapshot {
    index: CpIndex,
    queue: Queue,
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
                entries: d
                    .iter()
                    .map(|e| CpQueueEntry {
                        seq: e.seq,
                        offset: e.offset,
                        segment: e.segment,
                        remaining: e.remaining,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The queue of an archived checkpoint, built straight from the archive (no owned copy of the
/// entries in between).
fn queue_from_archive(q: &ArchivedCpQueue) -> Result<Queue, &'static str> {
    Queue::restore(
        q.next_seq.to_native(),
        q.destinations.iter().map(|d| {
            (
                d.slot.to_native(),
                d.name.as_str().to_owned(),
                d.entries.iter().map(|e| Entry {
                    seq: e.seq.to_native(),
                    offset: e.offset.to_native(),
                    segment: e.segment.to_native(),
                    remaining: e.remaining.to_native(),
                }),
            )
        }),
    )
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
                    messages,
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
    let aligned = {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        if bytes.len() < HEADER
            || (&bytes[..8] != MAGIC && &bytes[..8] != MAGIC_V1)
            || bytes[12..HEADER] != [0; 4]
        {
            return Err("bad header".into());
        }
        let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("slice of 4 bytes"));
        let payload = &bytes[HEADER..];
        if crc32c::crc32c(payload) != crc {
            return Err("checksum mismatch".into());
        }
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len() + 8);
        aligned.extend_from_slice(&bytes[..8]);
        aligned.extend_from_slice(payload);
        aligned
    };
    let (magic, archive) = aligned.split_at(8);
    let (index, pos) = if magic == MAGIC_V1 {
        let cp =
            rkyv::from_bytes::<CpIndex, rkyv::rancor::Error>(archive).map_err(|e| e.to_string())?;
        from_cp(cp, Queue::default())
    } else {
        let cp = rkyv::access::<ArchivedCpCheckpoint, rkyv::rancor::Error>(archive)
            .map_err(|e| e.to_string())?;
        let index = rkyv::deserialize::<CpIndex, rkyv::rancor::Error>(&cp.index)
            .map_err(|e| e.to_string())?;
        let queue = queue_from_archive(&cp.queue).map_err(str::to_owned)?;
        from_cp(index, queue)
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
    Snapshot {
        index: to_cp(index, pos),
        queue: index.queue.clone(),
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
    };
    drop(snap.queue);
    let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&cp)
        .map_err(|e| Error::Corrupt(format!("cannot serialize checkpoint: {e}")))?;
    drop(cp);
    let path = dir.join(file_name(pos));
    let tmp = path.with_extension("tmp");
    let mut f = crate::privilege::open_private(
        File::options().write(true).create(true).truncate(true),
        &tmp,
    )
    .map_err(io_err("create checkpoint", &tmp))?;
    let mut header = [0u8; HEADER];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&crc32c::crc32c(&archive).to_le_bytes());
    fault::check(fault::Point::Write, &tmp)
        .and_then(|()| f.write_all(&header))
        .and_then(|()| f.write_all(&archive))
        .and_then(|()| fault::check(fault::Point::Sync, &tmp))
        .and_then(|()| f.sync_all())
        .map_err(io_err("write checkpoint", &tmp))?;
    fault::synced(&tmp);
    drop(f);
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
