//! Read-only memory maps of segment files: the only `unsafe` of the store.
//!
//! # The mmap contract
//!
//! memmap2 documents that a file-backed map is undefined behaviour if the file is changed while
//! mapped, in or out of process (ripgrep's `MmapChoice` makes the same caveat). The store keeps the
//! bytes a reader can see stable as follows:
//! - This process is the only writer of the store directory: `Store::open` takes
//!   `flock(LOCK_EX | LOCK_NB)` on `<dir>/lock` before mapping anything, and only the store
//!   touches its files.
//! - A segment is preallocated to its full size before it is mapped, and is never truncated while
//!   mapped. The map covers the whole file, so growing the written part never remaps.
//! - Bytes are only ever written past the committed length of the active segment (by the single
//!   writer thread, with `pwrite`). Readers only follow [`super::BodyRef`]s published in the index
//!   after their write was durable, so they never read a byte that is being written. Recovery
//!   zeroes a torn tail before any reader exists.
//! - Deleting a segment drops the map first (the last `Arc`), then unlinks the file.
//! - Slices borrow the map (`super::Body` holds an `Arc<Mmap>`); no raw pointer leaves this module.

use std::fs::File;

use memmap2::Mmap;

/// Map the whole of `file` read-only.
pub(crate) fn map_segment(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the file is a segment of a store directory locked by this process (flock), which is
    // the only writer; it is never truncated while mapped, and the bytes readers access (below the
    // published length) are never modified after publication. See the module docs.
    unsafe { Mmap::map(file) }
}
