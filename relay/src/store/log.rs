//! The segment files of the log: recovery at open (scan, cut the torn tail, drop segments after
//! it) and appending for the writer thread (preallocated segments, `pwrite`, `fdatasync`).
//!
//! Only the writer thread (and `open`, before it starts) uses [`Log`]. Readers only get the
//! shared maps in [`Segments`].

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use memmap2::Mmap;

use super::format::{self, Entry, Frame, HEADER_LEN, KIND_BODY, KIND_SEAL, SEAL_LEN};
use super::mmap::map_segment;
use super::{BodyRef, Error};

/// Maps of all live segments, shared with readers.
pub type Segments = Arc<RwLock<BTreeMap<u32, Arc<Mmap>>>>;

/// A position in the log: segment sequence number and byte offset in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Segment sequence number.
    pub segment: u32,
    /// Byte offset within the segment.
    pub offset: u64,
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// File name of segment `seq`.
pub fn segment_path(log_dir: &Path, seq: u32) -> PathBuf {
    log_dir.join(format!("{seq:020}.seg"))
}

/// `fsync` a directory so entries created or removed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// The segment being appended to.
struct Active {
    seq: u32,
    file: File,
    path: PathBuf,
    /// Size of the file (preallocated).
    cap: u64,
    /// Offset where the pending buffer starts (= durable written length).
    written: u64,
}

/// The writer's side of the log.
pub struct Log {
    dir: PathBuf,
    segment_size: u64,
    fsync: bool,
    active: Active,
    /// Frames placed but not yet written, starting at `active.written`.
    buf: Vec<u8>,
    scratch: Vec<u8>,
    segments: Segments,
    /// Bytes appended since open (for checkpoint scheduling).
    pub appended: u64,
    /// `fdatasync` calls on segments since open.
    pub syncs: u64,
}

impl Log {
    /// Scan all segments of `dir` in order, calling `f` for every index record at or after
    /// `from`; cut the torn tail (zero it, drop later segments) and return the log ready to
    /// append after the last valid entry.
    pub fn recover(
        dir: &Path,
        segment_size: u64,
        fsync: bool,
        from: Position,
        mut f: impl FnMut(format::Record, Position) -> Result<(), Error>,
    ) -> Result<Log, Error> {
        crate::privilege::private_dir(dir).map_err(io_err("create log directory", dir))?;
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err("list log directory", dir))? {
            let entry = entry.map_err(io_err("list log directory", dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(stem) = name.strip_suffix(".seg") {
                if let Ok(seq) = stem.parse::<u32>() {
                    seqs.push(seq);
                }
            }
        }
        seqs.sort_unstable();
        if let Some(&first) = seqs.first() {
            if first > from.segment {
                return Err(Error::Corrupt(format!(
                    "log segments before {first} were removed and no checkpoint covers them"
                )));
            }
        }
        let segments: Segments = Arc::default();
        let mut active = None;
        let mut i = 0;
        while i < seqs.len() {
            let seq = seqs[i];
            let path = segment_path(dir, seq);
            let file =
                crate::privilege::open_private(OpenOptions::new().read(true).write(true), &path)
                    .map_err(io_err("open segment", &path))?;
            let file_len = file
                .metadata()
                .map_err(io_err("stat segment", &path))?
                .len();
            // A segment that was sealed before `from` needs no scan, just its map.
            let skip_scan = seq < from.segment;
            let mut end = 0u64;
            let mut garbage = 0u64;
            let mut sealed = skip_scan;
            if !skip_scan && file_len > 0 {
                let map = map_segment(&file).map_err(io_err("map segment", &path))?;
                let data: &[u8] = &map;
                let mut off = 0usize;
                loop {
                    match format::decode_frame(&data[off..]) {
                        Frame::End | Frame::Torn => break,
                        Frame::Valid {
                            kind,
                            payload,
                            total_len,
                        } => {
                            let pos = Position {
                                segment: seq,
                                offset: off as u64,
                            };
                            let entry = format::decode_entry(kind, payload).map_err(|e| {
                                Error::Corrupt(format!(
                                    "undecodable record at {}:{off}: {e}",
                                    path.display()
                                ))
                            })?;
                            off += total_len;
                            if pos >= from {
                                if let Entry::Record(r) = entry {
                                    f(r, pos)?;
                                }
                            }
                            if kind == KIND_SEAL {
                                sealed = true;
                                break;
                            }
                        }
                    }
                }
                end = off as u64;
                if !sealed {
                    // Torn tail or clean end: whatever follows `end` is a partial write.
                    let last_nonzero = data.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                    garbage = (last_nonzero as u64).saturating_sub(end);
                }
            }
            let is_last = !sealed || i + 1 == seqs.len();
            if is_last && !sealed {
                // This is the active segment. A later segment is only created after this one
                // was sealed and synced, so one holding records means this one was damaged
                // after the fact: refuse rather than drop acknowledged data. Empty ones are
                // leftovers of a crash during creation.
                for &later in &seqs[i + 1..] {
                    let p = segment_path(dir, later);
                    if has_first_record(&p).map_err(io_err("read segment", &p))? {
                        return Err(Error::Corrupt(format!(
                            "segment {} ends in a damaged record at offset {end} but segment {later} holds records",
                            path.display()
                        )));
                    }
                }
                for &later in &seqs[i + 1..] {
                    let p = segment_path(dir, later);
                    std::fs::remove_file(&p)
                        .map_err(io_err("remove segment after torn tail", &p))?;
                }
                if seqs.len() > i + 1 {
                    sync_dir(dir)?;
                }
                if garbage > 0 {
                    zero_range(&file, end, garbage).map_err(io_err("zero torn tail", &path))?;
                    if fsync {
                        file.sync_data().map_err(io_err("fsync segment", &path))?;
                    }
                }
                let cap = file_len.max(segment_size).max(end + SEAL_LEN);
                if file_len < cap {
                    file.set_len(cap)
                        .map_err(io_err("preallocate segment", &path))?;
                }
                let map = map_segment(&file).map_err(io_err("map segment", &path))?;
                segments
                    .write()
                    .expect("segment map lock should not be poisoned")
                    .insert(seq, Arc::new(map));
                active = Some(Active {
                    seq,
                    file,
                    path,
                    cap,
                    written: end,
                });
                break;
            }
            if file_len > 0 {
                let map = map_segment(&file).map_err(io_err("map segment", &path))?;
                segments
                    .write()
                    .expect("segment map lock should not be poisoned")
                    .insert(seq, Arc::new(map));
            }
            i += 1;
        }
        let mut log = Log {
            dir: dir.to_owned(),
            segment_size,
            fsync,
            active: match active {
                Some(a) => a,
                None => {
                    // No segment, or the last one is sealed: start a new one.
                    let seq = seqs.last().map_or(0, |s| s + 1);
                    new_segment(dir, seq, segment_size, fsync, &segments)?
                }
            },
            buf: Vec::new(),
            scratch: Vec::new(),
            segments,
            appended: 0,
            syncs: 0,
        };
        log.buf.reserve(1 << 16);
        Ok(log)
    }

    /// The shared segment maps.
    pub fn segments(&self) -> Segments {
        self.segments.clone()
    }

    /// Unmap and delete the segments before `before` for which `live` is false (no body in them
    /// is referenced and a checkpoint after them exists).
    pub fn remove_unused(
        &mut self,
        before: u32,
        live: impl Fn(u32) -> bool,
    ) -> Result<usize, Error> {
        let dead: Vec<u32> = self
            .segments
            .read()
            .expect("segment map lock should not be poisoned")
            .keys()
            .copied()
            .filter(|&s| s < before && s != self.active.seq && !live(s))
            .collect();
        for &seq in &dead {
            // Unmap first (readers holding a `Body` keep their own reference), then unlink.
            self.segments
                .write()
                .expect("segment map lock should not be poisoned")
                .remove(&seq);
            let path = segment_path(&self.dir, seq);
            std::fs::remove_file(&path).map_err(io_err("remove segment", &path))?;
        }
        if !dead.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(dead.len())
    }

    /// Where the next frame will go.
    pub fn position(&self) -> Position {
        Position {
            segment: self.active.seq,
            offset: self.active.written + self.buf.len() as u64,
        }
    }

    /// Make room for a frame of `len` bytes, sealing the active segment if it does not fit.
    fn reserve(&mut self, len: u64) -> Result<(), Error> {
        let pos = self.active.written + self.buf.len() as u64;
        if pos + len + SEAL_LEN <= self.active.cap {
            return Ok(());
        }
        format::put_frame(KIND_SEAL, &[], &mut self.buf);
        self.flush_buf()?;
        if self.fsync {
            self.active
                .file
                .sync_data()
                .map_err(io_err("fsync segment", &self.active.path))?;
            self.syncs += 1;
        }
        let size = self.segment_size.max(len + SEAL_LEN);
        self.active = new_segment(
            &self.dir,
            self.active.seq + 1,
            size,
            self.fsync,
            &self.segments,
        )?;
        Ok(())
    }

    /// Place a body frame; returns where its bytes will be.
    pub fn append_body(&mut self, body: &[u8]) -> Result<BodyRef, Error> {
        let len = u32::try_from(body.len())
            .ok()
            .filter(|l| *l < u32::MAX)
            .ok_or(Error::Invalid("message too large"))?;
        self.reserve((HEADER_LEN + body.len()) as u64)?;
        let pos = self.position();
        format::put_frame(KIND_BODY, body, &mut self.buf);
        Ok(BodyRef {
            segment: pos.segment,
            offset: pos.offset + HEADER_LEN as u64,
            len,
        })
    }

    /// Place an index record.
    pub fn append_record(&mut self, rec: &format::Record) -> Result<Position, Error> {
        self.scratch.clear();
        rec.encode_payload(&mut self.scratch);
        if self.scratch.len() >= u32::MAX as usize {
            return Err(Error::Invalid("record too large"));
        }
        self.reserve((HEADER_LEN + self.scratch.len()) as u64)?;
        let pos = self.position();
        format::put_frame(rec.kind(), &self.scratch, &mut self.buf);
        Ok(pos)
    }

    fn flush_buf(&mut self) -> Result<(), Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.active
            .file
            .write_all_at(&self.buf, self.active.written)
            .map_err(io_err("write segment", &self.active.path))?;
        self.active.written += self.buf.len() as u64;
        self.appended += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Write everything placed and make it durable (one `fdatasync`).
    pub fn commit(&mut self) -> Result<(), Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.flush_buf()?;
        if self.fsync {
            self.active
                .file
                .sync_data()
                .map_err(io_err("fsync segment", &self.active.path))?;
            self.syncs += 1;
        }
        Ok(())
    }
}

/// Whether the segment at `path` starts with a valid frame.
fn has_first_record(path: &Path) -> std::io::Result<bool> {
    let file = File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(false);
    }
    let map = map_segment(&file)?;
    Ok(matches!(format::decode_frame(&map), Frame::Valid { .. }))
}

fn zero_range(file: &File, start: u64, len: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; 1 << 16];
    let mut off = start;
    let end = start + len;
    while off < end {
        let n = (end - off).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

fn new_segment(
    dir: &Path,
    seq: u32,
    size: u64,
    fsync: bool,
    segments: &Segments,
) -> Result<Active, Error> {
    let path = segment_path(dir, seq);
    let file = crate::privilege::open_private(
        OpenOptions::new().read(true).write(true).create_new(true),
        &path,
    )
    .map_err(io_err("create segment", &path))?;
    file.set_len(size)
        .map_err(io_err("preallocate segment", &path))?;
    if fsync {
        file.sync_all().map_err(io_err("fsync segment", &path))?;
        sync_dir(dir)?;
    }
    let map = map_segment(&file).map_err(io_err("map segment", &path))?;
    segments
        .write()
        .expect("segment map lock should not be poisoned")
        .insert(seq, Arc::new(map));
    Ok(Active {
        seq,
        file,
        path,
        cap: size,
        written: 0,
    })
}
