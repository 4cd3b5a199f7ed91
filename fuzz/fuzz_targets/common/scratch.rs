//! Shared by the fuzz targets that need a store on disk.

use std::path::{Path, PathBuf};

/// A scratch directory `<base>/<prefix>-<pid>` on `/dev/shm` when present; directories left by
/// earlier runs whose process is gone are removed.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    };
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
                continue;
            };
            if let Some(pid) = pid.strip_prefix('-').filter(|p| p.parse::<u32>().is_ok()) {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let dir = base.join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
