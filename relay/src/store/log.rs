//! The segment files of the log: recovery at open (scan, cut the torn tail, drop segments after
//! it) and appending for the writer thread (segments preallocated with `fallocate`, `pwrite`,
//! `fdatasync`), cutting a failed batch back (`begin`/`rollback`), and the space reserve.
//!
//! Only the writer thread (and `open`, before it starts) uses [`Log`]. Readers only get the
//! shared maps in [`Segments`].

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use memmap2::Mmap;

use super::fault;
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
    move |source| {
        let path = path.display().to_string();
        match source.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => Error::NoSpace { op, path },
            _ => Error::Io { op, path, source },
        }
    }
}

/// `e` as an error that fails the whole batch: [`Error::NoSpace`] becomes [`Error::Io`]
/// (`NoSpace` from [`Log::ensure_room`] means nothing of the op was placed).
fn batch_failure(e: Error) -> Error {
    match e {
        Error::NoSpace { op, path } => Error::Io {
            op,
            path,
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        },
        e => e,
    }
}

/// File name of segment `seq`.
pub fn segment_path(log_dir: &Path, seq: u32) -> PathBuf {
    log_dir.join(format!("{seq:020}.seg"))
}

/// `fsync` a directory so entries created or removed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    fault::check(fault::Point::DirSync, dir)
        .and_then(|()| File::open(dir))
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))?;
    fault::dir_synced(dir);
    Ok(())
}

/// `private_dir` that also makes a newly created directory's entry durable in its parent.
pub fn durable_dir(dir: &Path) -> Result<(), Error> {
    let existed = dir.is_dir();
    crate::privilege::private_dir(dir).map_err(io_err("create directory", dir))?;
    if !existed {
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Give `file` (now `len` bytes long) real blocks up to `size` bytes: `fallocate`, so that a
/// write into the segment never meets `ENOSPC` half-way and a mapped range is never a hole.
/// File systems without `fallocate` get zeros written instead; never a sparse `set_len`.
fn preallocate(file: &File, path: &Path, len: u64, size: u64) -> std::io::Result<()> {
    fault::check(fault::Point::Create, path)?;
    if size == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
            if size > len {
                zero_range(file, len, size - len)?;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
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
    /// Made from the released reserve: only ops that free space may append to it.
    from_reserve: bool,
}

/// Where the current batch started, to cut the log back if it fails.
#[derive(Debug, Clone, Copy)]
struct Mark {
    seq: u32,
    offset: u64,
    from_reserve: bool,
    /// End of everything this batch wrote (or tried to write) into segment `seq`.
    dirty_end: u64,
}

/// Name of the reserve file, next to the log directory.
const RESERVE_FILE: &str = "reserve";
/// Largest reserve: enough for thousands of expunge and delete records.
const MAX_RESERVE: u64 = 1 << 20;

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
    /// How long the last commit's `fdatasync` took (taken by the writer for its histogram).
    pub last_sync: Option<std::time::Duration>,
    /// Start of the current batch.
    mark: Mark,
    /// A failed batch is not cut back yet: nothing may be appended before [`Log::ready`].
    rollback_needed: bool,
    /// The next segment, created ahead (by [`Log::prepare_spare`]) and still empty.
    spare: Option<Active>,
    /// A preallocated file of `reserve_size` bytes, released when an op that frees space
    /// finds the disk full, so that such ops still commit.
    reserve_path: PathBuf,
    reserve_size: u64,
    reserve_held: bool,
    /// Set by the writer for each op: whether it frees space (and may use the reserve).
    pub freeing: bool,
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
        durable_dir(dir)?;
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
                        fault::synced(&path);
                    }
                }
                let cap = file_len.max(segment_size).max(end + SEAL_LEN);
                match preallocate(&file, &path, file_len, cap) {
                    Ok(()) => {}
                    // Already full size (maybe sparse, from an older version): appends still
                    // work while the file system has room.
                    Err(e) if file_len >= cap => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot preallocate the active segment");
                    }
                    Err(e) => return Err(io_err("preallocate segment", &path)(e)),
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
                    from_reserve: false,
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
        let active = match active {
            Some(a) => a,
            None => {
                // No segment, or the last one is sealed: start a new one.
                let seq = seqs.last().map_or(0, |s| s + 1);
                new_segment(dir, seq, segment_size, fsync, &segments)?
            }
        };
        let mut log = Log {
            dir: dir.to_owned(),
            segment_size,
            fsync,
            mark: Mark {
                seq: active.seq,
                offset: active.written,
                from_reserve: false,
                dirty_end: active.written,
            },
            active,
            buf: Vec::new(),
            scratch: Vec::new(),
            segments,
            appended: 0,
            syncs: 0,
            last_sync: None,
            rollback_needed: false,
            spare: None,
            reserve_path: dir.parent().unwrap_or(dir).join(RESERVE_FILE),
            reserve_size: segment_size.clamp(4096, MAX_RESERVE),
            reserve_held: false,
            freeing: false,
        };
        if let Err(e) = log.restore_reserve() {
            tracing::warn!(error = %e, "cannot create the store's space reserve");
        }
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

    /// Whether a frame of `len` bytes may go into the active segment.
    fn fits(&self, len: u64) -> bool {
        let pos = self.active.written + self.buf.len() as u64;
        pos + len + SEAL_LEN <= self.active.cap && (self.freeing || !self.active.from_reserve)
    }

    /// Make room for a frame of `len` bytes, sealing the active segment if it does not fit.
    /// Called before an op is planned with a bound of what it writes, so that an op the disk
    /// has no room for is refused ([`Error::NoSpace`]) before anything of it is placed.
    pub fn ensure_room(&mut self, len: u64) -> Result<(), Error> {
        if self.fits(len) {
            return Ok(());
        }
        self.next_segment(len)
    }

    /// Switch to a new segment with room for `len` bytes: create it first (so that a full
    /// disk changes nothing), then seal and sync the active one, then make the new one
    /// active. Until the seal is synced the new segment holds nothing, so recovery never finds
    /// data after a torn segment.
    fn next_segment(&mut self, len: u64) -> Result<(), Error> {
        let need = len + SEAL_LEN;
        let seq = self.active.seq + 1;
        let new = match self.spare.take() {
            Some(spare) if spare.cap >= need => spare,
            Some(spare) => {
                self.drop_segment(spare.seq)?;
                self.create_segment(seq, need)?
            }
            None => self.create_segment(seq, need)?,
        };
        format::put_frame(KIND_SEAL, &[], &mut self.buf);
        // From here the active segment is changed: a full disk now fails the batch (an
        // `Error::Io`), it is no longer a refusal of one op with nothing placed.
        self.flush_buf()
            .and_then(|()| self.sync_active())
            .map_err(batch_failure)?;
        self.active = new;
        Ok(())
    }

    /// A new segment `seq` of at least `need` bytes; on a full disk, an op that frees space
    /// gets one made from the reserve.
    fn create_segment(&mut self, seq: u32, need: u64) -> Result<Active, Error> {
        let size = self.segment_size.max(need);
        match new_segment(&self.dir, seq, size, self.fsync, &self.segments) {
            Ok(a) => {
                if !self.reserve_held {
                    // Space is there again: take the reserve back before it is used up.
                    let _ = self.restore_reserve();
                }
                Ok(a)
            }
            Err(Error::NoSpace { .. }) if self.freeing && self.reserve_held => {
                self.release_reserve()?;
                let mut a = new_segment(
                    &self.dir,
                    seq,
                    self.reserve_size.max(need),
                    self.fsync,
                    &self.segments,
                )?;
                a.from_reserve = true;
                tracing::warn!(
                    segment = seq,
                    "disk full: space reserve released for an op that frees space"
                );
                Ok(a)
            }
            Err(e) => Err(e),
        }
    }

    /// Unmap and delete segment `seq` (one that holds nothing committed).
    fn drop_segment(&mut self, seq: u32) -> Result<(), Error> {
        self.segments
            .write()
            .expect("segment map lock should not be poisoned")
            .remove(&seq);
        let path = segment_path(&self.dir, seq);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove segment", &path)(e)),
        }
        sync_dir(&self.dir)
    }

    fn sync_active(&mut self) -> Result<(), Error> {
        if self.fsync {
            let start = std::time::Instant::now();
            fault::check(fault::Point::Sync, &self.active.path)
                .and_then(|()| self.active.file.sync_data())
                .map_err(io_err("fsync segment", &self.active.path))?;
            self.last_sync = Some(start.elapsed());
            fault::synced(&self.active.path);
            self.syncs += 1;
        }
        Ok(())
    }

    /// Create the reserve file if it is missing.
    pub fn restore_reserve(&mut self) -> Result<(), Error> {
        if self.reserve_held {
            return Ok(());
        }
        let path = &self.reserve_path;
        let file = crate::privilege::open_private(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            path,
        )
        .map_err(io_err("create space reserve", path))?;
        let len = file
            .metadata()
            .map_err(io_err("stat space reserve", path))?
            .len();
        if let Err(e) =
            preallocate(&file, path, len, self.reserve_size).and_then(|()| file.sync_all())
        {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(io_err("preallocate space reserve", path)(e));
        }
        self.reserve_held = true;
        Ok(())
    }

    fn release_reserve(&mut self) -> Result<(), Error> {
        std::fs::remove_file(&self.reserve_path)
            .map_err(io_err("release space reserve", &self.reserve_path))?;
        self.reserve_held = false;
        Ok(())
    }

    /// Create the next segment ahead of need, if there is none: the writer's probe of whether
    /// the file system takes writes again.
    pub fn prepare_spare(&mut self) -> Result<(), Error> {
        if self.spare.is_some() {
            return Ok(());
        }
        let spare = new_segment(
            &self.dir,
            self.active.seq + 1,
            self.segment_size,
            self.fsync,
            &self.segments,
        )?;
        self.spare = Some(spare);
        Ok(())
    }

    /// Start a batch: remember where the log ends so a failure can cut it back.
    pub fn begin(&mut self) {
        debug_assert!(self.buf.is_empty() && !self.rollback_needed);
        self.mark = Mark {
            seq: self.active.seq,
            offset: self.active.written,
            from_reserve: self.active.from_reserve,
            dirty_end: self.active.written,
        };
    }

    /// Undo the batch begun last: drop what is placed, delete the segments it created, zero
    /// what it wrote after the mark and sync that. If this fails it is tried again by
    /// [`Log::ready`] before anything else is appended.
    pub fn rollback(&mut self) -> Result<(), Error> {
        self.buf.clear();
        self.rollback_needed = true;
        let mark = self.mark;
        // The spare survives if the batch never left the mark's segment (it is still empty).
        let spare = if self.active.seq == mark.seq {
            self.spare.as_ref().map(|s| s.seq)
        } else {
            self.spare = None;
            None
        };
        let later: Vec<u32> = self
            .segments
            .read()
            .expect("segment map lock should not be poisoned")
            .range(mark.seq + 1..)
            .map(|(s, _)| *s)
            .filter(|s| Some(*s) != spare)
            .collect();
        if self.active.seq != mark.seq {
            let path = segment_path(&self.dir, mark.seq);
            let file =
                crate::privilege::open_private(OpenOptions::new().read(true).write(true), &path)
                    .map_err(io_err("open segment", &path))?;
            let cap = file
                .metadata()
                .map_err(io_err("stat segment", &path))?
                .len();
            self.active = Active {
                seq: mark.seq,
                file,
                path,
                cap,
                written: mark.offset,
                from_reserve: mark.from_reserve,
            };
        }
        for seq in later {
            self.drop_segment(seq)?;
        }
        self.active.written = mark.offset;
        if mark.dirty_end > mark.offset {
            fault::check(fault::Point::Write, &self.active.path)
                .and_then(|()| {
                    zero_range(&self.active.file, mark.offset, mark.dirty_end - mark.offset)
                })
                .map_err(io_err("zero failed batch", &self.active.path))?;
            self.sync_active()?;
        }
        self.mark.dirty_end = mark.offset;
        self.rollback_needed = false;
        Ok(())
    }

    /// Finish a pending rollback; `Ok` when the log may be appended to.
    pub fn ready(&mut self) -> Result<(), Error> {
        if self.rollback_needed {
            self.rollback()?;
        }
        Ok(())
    }

    /// Place a body frame; returns where its bytes will be.
    pub fn append_body(&mut self, body: &[u8]) -> Result<BodyRef, Error> {
        let len = u32::try_from(body.len())
            .ok()
            .filter(|l| *l < u32::MAX)
            .ok_or(Error::Invalid("message too large"))?;
        self.ensure_room((HEADER_LEN + body.len()) as u64)?;
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
        self.ensure_room((HEADER_LEN + self.scratch.len()) as u64)?;
        let pos = self.position();
        format::put_frame(rec.kind(), &self.scratch, &mut self.buf);
        Ok(pos)
    }

    fn flush_buf(&mut self) -> Result<(), Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let end = self.active.written + self.buf.len() as u64;
        if self.active.seq == self.mark.seq {
            self.mark.dirty_end = self.mark.dirty_end.max(end);
        }
        fault::check(fault::Point::Write, &self.active.path)
            .and_then(|()| {
                self.active
                    .file
                    .write_all_at(&self.buf, self.active.written)
            })
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
        self.sync_active()
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
    let file = fault::check(fault::Point::Create, &path)
        .and_then(|()| {
            crate::privilege::open_private(
                OpenOptions::new().read(true).write(true).create_new(true),
                &path,
            )
        })
        .map_err(io_err("create segment", &path))?;
    let prepared = preallocate(&file, &path, 0, size)
        .map_err(io_err("preallocate segment", &path))
        .and_then(|()| {
            if fsync {
                fault::check(fault::Point::Sync, &path)
                    .and_then(|()| file.sync_all())
                    .map_err(io_err("fsync segment", &path))?;
                fault::synced(&path);
                sync_dir(dir)?;
            }
            Ok(())
        });
    if let Err(e) = prepared {
        // Nothing refers to it yet; a leftover would be removed by recovery anyway.
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(e);
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
        from_reserve: false,
    })
}
