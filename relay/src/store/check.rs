//! `relay check`: verifies a stopped store offline and changes nothing.
//!
//! It takes the store's `flock` (so that no relay opens the store meanwhile; a running relay
//! holding it is [`Error::Locked`]), then reads every file with plain reads (no map, no write):
//!
//! - every frame of every segment: its length and CRC32C, and that its record decodes; a
//!   segment other than the last must end in a Seal, and nothing may follow a Seal. A damaged
//!   frame in the last segment with nothing valid after it is a torn tail (a write that was
//!   never acknowledged, cut by the next start): a note, not a problem;
//! - every checkpoint (header, CRC, archive);
//! - index consistency: the newest readable checkpoint plus the log after it (what `open`
//!   builds) must equal an independent build: the full replay of the log when the log still
//!   starts at segment 0, else the older checkpoint plus the log after it;
//! - every message and queue entry of that index points into a Body frame that is there.
//!
//! The lock file is opened read-only; when it is missing (a store never opened) nothing is
//! locked.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;

use super::checkpoint;
use super::format::{self, Entry, Frame, HEADER_LEN, KIND_SEAL};
use super::index::Index;
use super::log::{io_err, segment_path, Position};
use super::Error;

/// What [`verify`] found.
#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    /// Segment files.
    pub segments: usize,
    /// Of which sealed.
    pub sealed: usize,
    /// Bytes of the segment files.
    pub bytes: u64,
    /// Frames with a valid checksum.
    pub frames: u64,
    /// Index records among them.
    pub records: u64,
    /// Message bodies among them.
    pub bodies: u64,
    /// Checkpoint files, and how many of them load.
    pub checkpoints: usize,
    /// Checkpoints that load.
    pub checkpoints_ok: usize,
    /// The position of the checkpoint the index was built from (none: full replay).
    pub checkpoint: Option<Position>,
    /// What the index was compared with: `"full replay"`, `"older checkpoint"` or `"nothing"`.
    pub compared_with: &'static str,
    /// Accounts in the index.
    pub accounts: u64,
    /// Messages in the index.
    pub messages: u64,
    /// Outbound queue entries in the index.
    pub queued: u64,
    /// Damage: the store would lose or misread data. Each names its file and offset.
    pub problems: Vec<String>,
    /// Things worth knowing that are not damage (a torn tail recovery cuts).
    pub notes: Vec<String>,
}

/// One segment as read.
struct Scanned {
    seq: u32,
    /// Body frames: payload start → payload length.
    bodies: BTreeMap<u64, u64>,
    /// Index records with their positions.
    records: Vec<(Position, format::Record)>,
    /// End of the valid frames.
    end: u64,
}

/// Verifies the store in `dir` (the `store` directory of a data directory).
///
/// # Errors
/// [`Error::Locked`] while a relay holds the store; [`Error::Io`] when a file cannot be read
/// (a missing directory included). Damage is not an error: it is in the report.
pub fn verify(dir: &Path) -> Result<CheckReport, Error> {
    if !dir.is_dir() {
        return Err(io_err("open store directory", dir)(std::io::Error::from(
            std::io::ErrorKind::NotFound,
        )));
    }
    let lock_path = dir.join("lock");
    // Held until the check ends: no relay opens the store meanwhile.
    let _lock = match File::open(&lock_path) {
        Ok(f) => match f.try_lock() {
            Ok(()) => Some(f),
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked(dir.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_err("lock store directory", &lock_path)(e))
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("open lock file", &lock_path)(e)),
    };
    let mut report = CheckReport::default();
    let log_dir = dir.join("log");
    let mut seqs = Vec::new();
    match std::fs::read_dir(&log_dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(io_err("list log directory", &log_dir))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if let Some(seq) = name.strip_suffix(".seg").and_then(|s| s.parse().ok()) {
                    seqs.push(seq);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("list log directory", &log_dir)(e)),
    }
    seqs.sort_unstable();
    let mut scanned = Vec::with_capacity(seqs.len());
    for (i, &seq) in seqs.iter().enumerate() {
        let last = i + 1 == seqs.len();
        scanned.push(scan_segment(&log_dir, seq, last, &mut report)?);
    }
    let log_end = scanned.last().map_or(Position::default(), |s| Position {
        segment: s.seq,
        offset: s.end,
    });

    // Checkpoints, newest first.
    let index_dir = dir.join("index");
    let listed = checkpoint::list(&index_dir)?;
    report.checkpoints = listed.len();
    let mut loaded = Vec::new();
    for (pos, path) in &listed {
        match checkpoint::load(path) {
            Ok((idx, at)) => {
                report.checkpoints_ok += 1;
                if at > log_end {
                    report.problems.push(format!(
                        "checkpoint {} is at {}:{}, after the end of the log {}:{}",
                        path.display(),
                        at.segment,
                        at.offset,
                        log_end.segment,
                        log_end.offset
                    ));
                } else {
                    loaded.push((idx, at));
                }
            }
            Err(e) => report.problems.push(format!(
                "checkpoint {} ({}:{}) does not load: {e}",
                path.display(),
                pos.segment,
                pos.offset
            )),
        }
    }
    let first_seq = seqs.first().copied();
    // Whether the log holds every segment from `start` to its end: a replay from there sees
    // every record. (Segments before a checkpoint that hold no live body are removed, and a
    // backup copies only those with live bodies, so earlier gaps are normal.)
    let missing_from = |start: u32| -> Option<u32> {
        let last = *seqs.last()?;
        (start..=last).find(|s| seqs.binary_search(s).is_err())
    };
    let whole_from = |start: u32| missing_from(start).is_none();
    let replay = |mut idx: Index, from: Position| -> Index {
        for s in &scanned {
            for (pos, rec) in &s.records {
                if *pos >= from {
                    idx.apply(rec);
                }
            }
        }
        idx
    };
    // What `open` builds: the newest readable checkpoint and the log after it.
    let mut loaded = loaded.into_iter();
    let (index, other) = match loaded.next() {
        Some((idx, at)) => {
            report.checkpoint = Some(at);
            if let Some(m) = missing_from(at.segment) {
                report.problems.push(format!(
                    "segment {} is missing: the index needs the log from the checkpoint at {}:{}",
                    segment_path(&log_dir, m).display(),
                    at.segment,
                    at.offset
                ));
            }
            let built = replay(idx, at);
            let other = if first_seq == Some(0) && whole_from(0) {
                report.compared_with = "full replay";
                Some(replay(Index::default(), Position::default()))
            } else if let Some((older, older_at)) =
                loaded.next().filter(|(_, a)| whole_from(a.segment))
            {
                report.compared_with = "older checkpoint";
                Some(replay(older, older_at))
            } else {
                report.compared_with = "nothing";
                None
            };
            (built, other)
        }
        None => {
            if let Some(m) = missing_from(0) {
                report.problems.push(format!(
                    "no readable checkpoint and segment {} is missing: the index cannot be \
                     rebuilt",
                    segment_path(&log_dir, m).display()
                ));
            }
            report.compared_with = "nothing";
            (replay(Index::default(), Position::default()), None)
        }
    };
    if let Some(other) = other {
        compare(&index, &other, report.compared_with, &mut report.problems);
    }
    check_bodies(&index, &scanned, &log_dir, &mut report);
    report.accounts = index.accounts.len() as u64;
    report.messages = index.accounts.values().map(|a| a.messages).sum();
    report.queued = index.queue.len();
    Ok(report)
}

/// Reads one segment and checks its frames.
fn scan_segment(
    log_dir: &Path,
    seq: u32,
    last: bool,
    report: &mut CheckReport,
) -> Result<Scanned, Error> {
    let path = segment_path(log_dir, seq);
    let data = std::fs::read(&path).map_err(io_err("read segment", &path))?;
    report.segments += 1;
    report.bytes += data.len() as u64;
    let mut s = Scanned {
        seq,
        bodies: BTreeMap::new(),
        records: Vec::new(),
        end: 0,
    };
    let mut off = 0usize;
    let mut sealed = false;
    let mut damaged = false;
    while off < data.len() {
        match format::decode_frame(&data[off..]) {
            Frame::End => break,
            Frame::Torn => {
                damaged = true;
                // A frame whose length is sane and after which valid frames follow was damaged
                // in place (not a torn write).
                let len = data
                    .get(off..off + 4)
                    .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
                let next = off.saturating_add(8).saturating_add(len);
                let valid_after = len > 0
                    && next < data.len()
                    && matches!(format::decode_frame(&data[next..]), Frame::Valid { .. });
                let what = if len == 0 || next > data.len() {
                    "bad length"
                } else {
                    "checksum mismatch"
                };
                if last && !valid_after {
                    report.notes.push(format!(
                        "{}: torn tail at offset {off} ({what}): a write that was never \
                         acknowledged; the next start cuts it",
                        path.display()
                    ));
                } else {
                    report.problems.push(format!(
                        "{}: damaged record at offset {off} ({what}){}",
                        path.display(),
                        if valid_after {
                            "; valid records follow it"
                        } else {
                            ""
                        }
                    ));
                }
                break;
            }
            Frame::Valid {
                kind,
                payload,
                total_len,
            } => {
                report.frames += 1;
                let pos = Position {
                    segment: seq,
                    offset: off as u64,
                };
                match format::decode_entry(kind, payload) {
                    Ok(Entry::Record(r)) => {
                        report.records += 1;
                        s.records.push((pos, r));
                    }
                    Ok(Entry::Body(b)) => {
                        report.bodies += 1;
                        s.bodies.insert((off + HEADER_LEN) as u64, b.len() as u64);
                    }
                    Ok(Entry::Seal) => {}
                    Err(e) => report.problems.push(format!(
                        "{}: record at offset {off} (kind {kind}) does not decode: {e}",
                        path.display()
                    )),
                }
                off += total_len;
                if kind == KIND_SEAL {
                    sealed = true;
                    break;
                }
            }
        }
    }
    s.end = off as u64;
    if sealed {
        report.sealed += 1;
        if let Some(p) = data[off..].iter().position(|&b| b != 0) {
            report.problems.push(format!(
                "{}: bytes after the seal at offset {}",
                path.display(),
                off + p
            ));
        }
    } else if !last && !damaged {
        report.problems.push(format!(
            "{}: not sealed, but a later segment exists (records after offset {off} may be lost)",
            path.display()
        ));
    }
    Ok(s)
}

/// Names the first difference between the index `open` builds and the independent one.
fn compare(index: &Index, other: &Index, with: &str, problems: &mut Vec<String>) {
    if index == other {
        return;
    }
    let mut ids: Vec<_> = index.accounts.keys().chain(other.accounts.keys()).collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        match (index.accounts.get(id), other.accounts.get(id)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(_)) => {
                problems.push(format!(
                    "index mismatch: account {} differs between the checkpoint and the {with}",
                    a.addr
                ));
                return;
            }
            (Some(a), None) | (None, Some(a)) => {
                problems.push(format!(
                    "index mismatch: account {} is in only one of the checkpoint and the {with}",
                    a.addr
                ));
                return;
            }
            (None, None) => {}
        }
    }
    let part = if index.queue != other.queue {
        "the outbound queue"
    } else if index.notify != other.notify {
        "the pending notifications"
    } else {
        "the index counters"
    };
    problems.push(format!(
        "index mismatch: {part} differs between the checkpoint and the {with}"
    ));
}

/// Every message and queue entry of `index` must point into a Body frame that was read.
fn check_bodies(index: &Index, scanned: &[Scanned], log_dir: &Path, report: &mut CheckReport) {
    let by_seq: HashMap<u32, &Scanned> = scanned.iter().map(|s| (s.seq, s)).collect();
    let mut missing = 0u64;
    let mut first = None;
    let mut note = |what: String| {
        missing += 1;
        if first.is_none() {
            first = Some(what);
        }
    };
    let mut accounts: Vec<_> = index.accounts.values().collect();
    accounts.sort_by_key(|a| a.id);
    for a in accounts {
        for mb in a.mailboxes.values() {
            for m in &mb.messages {
                let b = m.body;
                let inside = by_seq.get(&b.segment).is_some_and(|s| {
                    s.bodies
                        .range(..=b.offset)
                        .next_back()
                        .is_some_and(|(start, len)| b.offset + u64::from(b.len) <= start + len)
                });
                if !inside {
                    note(format!(
                        "message UID {} of {} in {} has no body at {}:{}",
                        m.uid,
                        a.addr,
                        mb.name,
                        segment_path(log_dir, b.segment).display(),
                        b.offset
                    ));
                }
            }
        }
    }
    for (_, d) in index.queue.slots() {
        for e in d.iter() {
            let there = by_seq
                .get(&e.segment)
                .is_some_and(|s| s.bodies.contains_key(&e.offset));
            if !there {
                note(format!(
                    "queue entry to {} has no body at {}:{}",
                    d.name,
                    segment_path(log_dir, e.segment).display(),
                    e.offset
                ));
            }
        }
    }
    if let Some(first) = first {
        report.problems.push(if missing > 1 {
            format!("{first} (and {} more without a body)", missing - 1)
        } else {
            first
        });
    }
}
