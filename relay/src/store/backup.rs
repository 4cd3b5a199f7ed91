//! A consistent copy of the open store ([`super::Store::backup`]), for `relay backup`.
//!
//! The writer thread only takes the consistent point (`Writer::backup_point`, between two
//! batches): the log position after the last synced batch, a snapshot of the index at it (the
//! same flattening a background checkpoint does) and a reference to the maps of the segments
//! the copy needs: those before the position that hold a body the index refers to, and the
//! active one. Everything else happens on the caller's thread while the writer goes on
//! committing:
//!
//! 1. each needed sealed segment is copied whole from its map; the active segment only up to
//!    the position (bytes below it were synced and are never written again; the rest is
//!    what later batches write, which the copy must not hold);
//! 2. the snapshot is written as the copy's checkpoint (`checkpoint::write_snapshot`: temp
//!    file, fsync, rename, directory fsync);
//! 3. every file is fsynced and every directory entry synced in its parent; files are `0600`,
//!    directories `0700`.
//!
//! `Store::open` on the copy loads that checkpoint, replays nothing (the log ends at the
//! checkpoint's position) and continues the copied active segment.
//!
//! A segment the writer removes while it is copied stays readable: the copy holds its map (as
//! a reader holding a `Body` does), and an unlinked file that is still mapped keeps its bytes.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use memmap2::Mmap;

use super::checkpoint;
use super::log::{durable_dir, io_err, segment_path, sync_dir, Position};
use super::Error;

/// What the writer hands out for a backup.
pub struct Point {
    pub(crate) snapshot: checkpoint::Snapshot,
    pub(crate) position: Position,
    /// `(segment, map)`, in segment order.
    pub(crate) maps: Vec<(u32, Arc<Mmap>)>,
    pub(crate) accounts: u64,
    pub(crate) messages: u64,
    pub(crate) queued: u64,
    /// How long the writer spent on it.
    pub(crate) held: Duration,
}

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The log position the copy ends at (its checkpoint's).
    pub position: Position,
    /// Segment files written.
    pub segments: usize,
    /// Bytes of segment files written.
    pub bytes: u64,
    /// Accounts in the copy.
    pub accounts: u64,
    /// Messages in the copy.
    pub messages: u64,
    /// Outbound queue entries in the copy.
    pub queued: u64,
    /// How long the store's writer was busy with the backup (the rest ran beside it).
    pub writer_held: Duration,
}

/// Writes the copy of `point` into `dest` (a store directory: `dest/log`, `dest/index`), which
/// must not hold a store.
pub(crate) fn write(point: Point, dest: &Path) -> Result<BackupReport, Error> {
    durable_dir(dest)?;
    let log_dir = dest.join("log");
    durable_dir(&log_dir)?;
    let mut bytes = 0u64;
    for (seq, map) in &point.maps {
        let data: &[u8] = map;
        let data = if *seq == point.position.segment {
            let end = usize::try_from(point.position.offset)
                .ok()
                .filter(|e| *e <= data.len())
                .ok_or_else(|| {
                    Error::Corrupt(format!(
                        "backup position {}:{} past the segment's end",
                        seq, point.position.offset
                    ))
                })?;
            &data[..end]
        } else {
            data
        };
        let path = segment_path(&log_dir, *seq);
        let mut f = crate::privilege::open_private(
            std::fs::File::options().write(true).create_new(true),
            &path,
        )
        .map_err(io_err("create backup segment", &path))?;
        f.write_all(data)
            .and_then(|()| f.sync_all())
            .map_err(io_err("write backup segment", &path))?;
        bytes += data.len() as u64;
    }
    sync_dir(&log_dir)?;
    checkpoint::write_snapshot(&dest.join("index"), point.snapshot)?;
    sync_dir(dest)?;
    Ok(BackupReport {
        position: point.position,
        segments: point.maps.len(),
        bytes,
        accounts: point.accounts,
        messages: point.messages,
        queued: point.queued,
        writer_held: point.held,
    })
}
