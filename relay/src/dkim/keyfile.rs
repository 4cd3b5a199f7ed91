//! The DKIM key file: `<data_dir>/dkim/<selector>.private` (decisions.md: one path, created by
//! whichever runs first, `relay init` or the first `serve`; imported keys land there too).
//!
//! The folder is `0700` and the file `0600` whatever the umask ([`crate::privilege`]). A new key
//! is written to a temporary file, `fsync`ed, then linked to its name: a crash leaves either no
//! key or a whole one, and two processes creating it at once agree on the one that was linked
//! first.

use std::path::{Path, PathBuf};

use super::key::{DkimKey, Error};
use super::sign::Signer;
use crate::config::Config;

/// The folder of the key files under the data directory.
pub const DIR: &str = "dkim";

/// `<data_dir>/dkim/<selector>.private`.
pub fn key_path(data_dir: &Path, selector: &str) -> PathBuf {
    data_dir.join(DIR).join(format!("{selector}.private"))
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The key of `selector`: read from [`key_path`], or generated (RSA-2048) and written there when
/// the file does not exist. Creates `<data_dir>/dkim` (`0700`) and narrows an existing key file
/// to `0600`. Works without a running relay (`relay init`, `relay dns`).
///
/// # Errors
/// The file cannot be read or written, or does not hold an RSA key in PEM.
pub fn load_or_create(data_dir: &Path, selector: &str) -> Result<DkimKey, Error> {
    let dir = data_dir.join(DIR);
    crate::privilege::private_dir(&dir).map_err(io("creating", &dir))?;
    let path = key_path(data_dir, selector);
    match read(&path) {
        Ok(key) => return Ok(key),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let key = DkimKey::generate(&mut rand::rngs::OsRng)?;
    let pem = key.to_pkcs1_pem()?;
    // If another process was quicker, its key wins.
    if crate::privilege::create_private_once(&path, pem.as_bytes())
        .map_err(io("creating", &path))?
    {
        tracing::info!(path = %path.display(), "created a new DKIM key");
        Ok(key)
    } else {
        read(&path)
    }
}

/// Reads the key at `path` (narrowing it to `0600`).
fn read(path: &Path) -> Result<DkimKey, Error> {
    let mut f = crate::privilege::open_private(std::fs::OpenOptions::new().read(true), path)
        .map_err(io("reading", path))?;
    let mut pem = String::new();
    std::io::Read::read_to_string(&mut f, &mut pem).map_err(io("reading", path))?;
    DkimKey::from_pem(&pem)
}

/// The signer of a relay with a domain name: its key (created if absent) for `d=<mail_domain>`,
/// `s=<dkim_selector>`. `None` for an IP-literal relay, which neither has a key nor signs
/// (chatmail.md §1.9: a `d=` must be a domain name).
///
/// # Errors
/// As [`load_or_create`], or the key cannot sign (fewer than 2048 bits).
pub fn load_signer(config: &Config) -> Result<Option<Signer>, Error> {
    if config.is_ip_domain() {
        return Ok(None);
    }
    let key = load_or_create(&config.data_dir, &config.dkim_selector)?;
    Signer::new(&key, &config.mail_domain, &config.dkim_selector).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create(dir.path(), "opendkim").unwrap();
        let path = key_path(dir.path(), "opendkim");
        assert_eq!(path, dir.path().join("dkim/opendkim.private"));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("dkim")), 0o700);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"),
            "{text}"
        );
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("dkim"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["opendkim.private"]);
        // The second call reads the same key, and narrows a widened file.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let again = load_or_create(dir.path(), "opendkim").unwrap();
        assert_eq!(again.public_key_der(), key.public_key_der());
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn imported_pkcs8_key_is_used() {
        use rsa::pkcs8::EncodePrivateKey as _;
        let dir = tempfile::tempdir().unwrap();
        let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let pem = private.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        std::fs::create_dir(dir.path().join("dkim")).unwrap();
        std::fs::write(key_path(dir.path(), "sel"), pem.as_bytes()).unwrap();
        let key = load_or_create(dir.path(), "sel").unwrap();
        use rsa::pkcs8::EncodePublicKey as _;
        let spki = private.to_public_key().to_public_key_der().unwrap();
        assert_eq!(key.public_key_der(), spki.as_bytes());
    }

    #[test]
    fn a_broken_key_file_is_an_error_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("dkim")).unwrap();
        let path = key_path(dir.path(), "opendkim");
        std::fs::write(&path, "not a key").unwrap();
        let err = load_or_create(dir.path(), "opendkim").unwrap_err();
        assert!(matches!(err, Error::Pem(_)), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");
    }

    #[test]
    fn ip_literal_relay_has_no_key_and_no_signer() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::dev(dir.path().to_owned());
        assert!(config.is_ip_domain());
        assert!(load_signer(&config).unwrap().is_none());
        assert!(!dir.path().join("dkim").exists());
    }
}
