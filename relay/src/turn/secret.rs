//! The TURN secret: 32 random bytes in `<data_dir>/turn/secret`, made at the first start. The
//! folder is `0700`, the file `0600` (as the DKIM key, [`crate::dkim::keyfile`]): written to a
//! temporary file, `fsync`ed, then linked to its name, so a crash leaves none or a whole one and
//! two processes agree on the first.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Length of the secret in bytes.
pub const LEN: usize = 32;

/// `<data_dir>/turn/secret`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("turn").join("secret")
}

/// The secret: read from [`path`], or made and written there when the file does not exist.
///
/// # Errors
/// The file cannot be read or written, or holds fewer than 32 bytes.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Arc<[u8]>> {
    use anyhow::Context as _;
    let dir = data_dir.join("turn");
    crate::privilege::private_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = path(data_dir);
    match read(&path) {
        Ok(secret) => return Ok(secret),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let secret: [u8; LEN] = rand::random();
    // If another process was quicker, its secret wins.
    if crate::privilege::create_private_once(&path, &secret)? {
        tracing::info!(path = %path.display(), "created the TURN secret");
        Ok(Arc::from(secret.as_slice()))
    } else {
        read(&path).with_context(|| format!("reading {}", path.display()))
    }
}

/// Reads the secret at `path` (narrowing it to `0600`).
fn read(path: &Path) -> std::io::Result<Arc<[u8]>> {
    let mut f = crate::privilege::open_private(std::fs::OpenOptions::new().read(true), path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    if bytes.len() < LEN {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} bytes, expected {LEN} (delete it to make a new one)",
                bytes.len()
            ),
        ));
    }
    Ok(Arc::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let secret = load_or_create(dir.path()).unwrap();
        assert_eq!(secret.len(), LEN);
        let p = path(dir.path());
        assert_eq!(p, dir.path().join("turn/secret"));
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(&dir.path().join("turn")), 0o700);
        assert_eq!(std::fs::read(&p).unwrap(), &secret[..]);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("turn"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret"], "no temporary file is left");
        // The next start reads the same secret, and narrows a widened file.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create(dir.path()).unwrap(), secret);
        assert_eq!(mode(&p), 0o600);
        // Another data directory, another secret.
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), secret);
    }

    #[test]
    fn a_short_secret_file_is_an_error_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("turn")).unwrap();
        std::fs::write(path(dir.path()), b"short").unwrap();
        let e = load_or_create(dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("expected 32"), "{e:#}");
        assert_eq!(std::fs::read(path(dir.path())).unwrap(), b"short");
    }
}
