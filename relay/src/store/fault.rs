//! Hooks around the store's file writes and syncs, for tests: a `Layer` installed for a store
//! directory can fail a write, a sync or a file creation (`EIO`, `ENOSPC`), and observes every
//! completed `fdatasync`, directory `fsync` and rename (the power-loss model of `fault_tests`
//! keeps only what those made durable).
//!
//! Outside `cfg(test)` every hook is an empty `#[inline(always)]` function: release builds pay
//! nothing.

use std::path::Path;

/// Where a file operation is about to happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Point {
    /// `pwrite` of log frames or zeros, or a checkpoint write.
    Write,
    /// `fdatasync`/`fsync` of a file.
    Sync,
    /// Creating and preallocating a file (segment, reserve).
    Create,
    /// `fsync` of a directory.
    DirSync,
}

pub(crate) use imp::*;

#[cfg(not(test))]
mod imp {
    use super::{Path, Point};

    #[inline(always)]
    pub(crate) fn check(_: Point, _: &Path) -> std::io::Result<()> {
        Ok(())
    }
    #[inline(always)]
    pub(crate) fn synced(_: &Path) {}
    #[inline(always)]
    pub(crate) fn dir_synced(_: &Path) {}
    #[inline(always)]
    pub(crate) fn renamed(_: &Path, _: &Path) {}
}

#[cfg(test)]
pub(crate) mod imp {
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use super::{Path, Point};

    /// A test's view of the file operations under one directory.
    pub(crate) trait Layer: Send + Sync {
        /// Called before the operation; an error is returned to the store instead of doing it.
        fn check(&self, _point: Point, _path: &Path) -> std::io::Result<()> {
            Ok(())
        }
        /// A file's data was synced: its current bytes are durable.
        fn synced(&self, _path: &Path) {}
        /// A directory was synced: its current entries are durable.
        fn dir_synced(&self, _dir: &Path) {}
        /// `from` was renamed to `to` (durable with the next sync of the directory).
        fn renamed(&self, _from: &Path, _to: &Path) {}
    }

    type Layers = Vec<(PathBuf, Arc<dyn Layer>)>;
    static LAYERS: Mutex<Layers> = Mutex::new(Vec::new());

    /// Removes its layer when dropped.
    pub(crate) struct Installed(PathBuf);

    impl Drop for Installed {
        fn drop(&mut self) {
            layers().retain(|(d, _)| d != &self.0);
        }
    }

    fn layers() -> std::sync::MutexGuard<'static, Layers> {
        LAYERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Route the file operations under `dir` through `layer` until the guard is dropped.
    pub(crate) fn install(dir: &Path, layer: Arc<dyn Layer>) -> Installed {
        layers().push((dir.to_owned(), layer));
        Installed(dir.to_owned())
    }

    fn find(path: &Path) -> Option<Arc<dyn Layer>> {
        layers()
            .iter()
            .find(|(d, _)| path.starts_with(d))
            .map(|(_, l)| l.clone())
    }

    pub(crate) fn check(point: Point, path: &Path) -> std::io::Result<()> {
        find(path).map_or(Ok(()), |l| l.check(point, path))
    }
    pub(crate) fn synced(path: &Path) {
        if let Some(l) = find(path) {
            l.synced(path);
        }
    }
    pub(crate) fn dir_synced(dir: &Path) {
        if let Some(l) = find(dir) {
            l.dir_synced(dir);
        }
    }
    pub(crate) fn renamed(from: &Path, to: &Path) {
        if let Some(l) = find(to) {
            l.renamed(from, to);
        }
    }
}
