//! TLS: the certificate the relay serves, where it comes from, and the rustls server
//! configurations over it (rustls with the `ring` provider).
//!
//! - Submission and IMAP accept TLS 1.3 only (as the reference's Postfix/Dovecot settings).
//! - Port 25 accepts TLS 1.2 and 1.3 (other MTAs).
//! - The HTTPS port picks one of three by the ClientHello's ALPN list
//!   ([`crate::io::pipeline::AlpnConfigs`]): `imap`/`smtp` get TLS 1.3 only (as 993/465), HTTP
//!   TLS 1.2 and 1.3 (browsers).
//!
//! Every configuration asks one [`CertStore`] for the certificate at each handshake, so a new
//! certificate (ACME renewal, a changed external file) serves the next handshake without a
//! restart while established connections carry on.
//!
//! # Where the certificate comes from ([`TlsMode`], chatmail.md §1.9)
//! - **self-signed** (IPv4 `mail_domain`, `_`-prefixed domain, `relay dev`): an EC P-256
//!   certificate made once and kept in `<data>/tls/` so clients that pinned its key keep working
//!   across restarts. Its names are [`names`]; when they change (another `mail_domain`, or a
//!   certificate from an older version without `autoconfig.`), the certificate is made again
//!   over the same key. It is not a CA certificate (Delta Chat refuses a CA certificate used as
//!   an end entity).
//! - **external** (`tls_external_cert_and_key`): PEM files another program renews; read at start
//!   (an unusable file refuses to start) and again whenever they change ([`task`]).
//! - **ACME** (any other domain): issued by the ACME server ([`acme`]) and kept in
//!   `<data>/acme/`; until the first issuance succeeds the self-signed certificate serves.
//!
//! # Organization
//! - [`cert`]: the parsed certificate and the swappable store (no I/O).
//! - [`schedule`]: when to renew and how to back off (no I/O, time passed in).
//! - [`acme`]: the ACME client (account, order, HTTP-01 through [`crate::http::Challenges`],
//!   files).
//! - [`task`]: the thread that keeps the certificate current (external file polling, ACME).

#[deny(clippy::disallowed_methods, clippy::disallowed_types)] // sans-I/O
pub mod cert;
#[deny(clippy::disallowed_methods, clippy::disallowed_types)] // sans-I/O
pub mod schedule;

pub mod acme;
pub mod task;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;

use crate::config::{Config, TlsMode};

pub use cert::{CertStore, Certificate};

/// Errors while setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a certificate or key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file did not hold what was expected.
    #[error("{path}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// Certificate generation or rustls configuration failed.
    #[error("tls setup: {0}")]
    Setup(String),
}

/// The server configurations of the process, all serving the certificate of [`Self::certs`].
#[derive(Clone)]
pub struct TlsConfigs {
    /// TLS 1.3 only: submission (465, 587) and IMAP (993, 143).
    pub strict: Arc<ServerConfig>,
    /// TLS 1.2 and 1.3: SMTP from other relays (25).
    pub mx: Arc<ServerConfig>,
    /// The HTTPS port: chosen by ALPN.
    pub https: crate::io::pipeline::AlpnConfigs,
    /// The certificate in use; [`CertStore::swap`] changes it for every configuration above.
    pub certs: Arc<CertStore>,
}

/// The names the certificate must cover: the IP address of an IP-only relay, else the domain,
/// `www.`, `mta-sts.` and `autoconfig.` (decisions.md).
pub fn names(config: &Config) -> Vec<String> {
    let d = config.mail_domain.to_ascii_lowercase();
    if config.is_ip_domain() {
        return vec![d];
    }
    vec![
        d.clone(),
        format!("www.{d}"),
        format!("mta-sts.{d}"),
        format!("autoconfig.{d}"),
    ]
}

/// Loads or makes the certificate of the configured [`TlsMode`] and builds the configurations.
///
/// # Errors
/// Unreadable or invalid external files, or a failing certificate generation.
pub fn setup(config: &Config) -> Result<TlsConfigs, Error> {
    let cert = match &config.tls_mode {
        TlsMode::External { cert, key } => load_pair(cert, key)?,
        TlsMode::SelfSigned => self_signed(config)?,
        TlsMode::Acme => match acme::saved(config) {
            Some(c) if c.covers(&names(config)) => c,
            _ => {
                tracing::info!(
                    "no ACME certificate for {} yet: serving a self-signed one until it is issued",
                    config.mail_domain
                );
                self_signed(config)?
            }
        },
    };
    configs(CertStore::new(cert))
}

/// The configurations over `certs`.
///
/// # Errors
/// If rustls refuses the protocol versions (it does not with the ring provider).
pub fn configs(certs: Arc<CertStore>) -> Result<TlsConfigs, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let build_alpn = |versions: &[&'static rustls::SupportedProtocolVersion], alpn: &[&[u8]]| {
        let mut cfg = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| Error::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        cfg.ignore_client_order = true;
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok::<_, Error>(Arc::new(cfg))
    };
    let build = |versions: &[&'static rustls::SupportedProtocolVersion]| build_alpn(versions, &[]);
    let both = [&rustls::version::TLS13, &rustls::version::TLS12];
    Ok(TlsConfigs {
        strict: build(&[&rustls::version::TLS13])?,
        mx: build(&both)?,
        https: crate::io::pipeline::AlpnConfigs {
            mail: build_alpn(&[&rustls::version::TLS13], &[b"imap", b"smtp"])?,
            http: build_alpn(&both, &[b"http/1.1"])?,
            none: build(&both)?,
        },
        certs,
    })
}

/// Reads a certificate chain and its key from two PEM files (they may be the same file).
///
/// # Errors
/// Unreadable files, or what [`Certificate::from_pem`] refuses (named with the file).
pub fn load_pair(cert: &Path, key: &Path) -> Result<Certificate, Error> {
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    Certificate::from_pem(&cert_pem, &key_pem).map_err(|e| Error::Invalid {
        path: match e {
            cert::Error::NoKey | cert::Error::Key(_) => key.to_owned(),
            _ => cert.to_owned(),
        },
        what: e.to_string(),
    })
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// The self-signed certificate of `<data>/tls/`: reused when it covers [`names`], made again
/// over the same key when it does not, generated with a new key when there is none.
fn self_signed(config: &Config) -> Result<Certificate, Error> {
    let dir = config.data_dir.join("tls");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let io = |p: &Path| {
        let path = p.to_owned();
        move |source| Error::Io { path, source }
    };
    crate::privilege::private_dir(&dir).map_err(io(&dir))?;
    let wanted = names(config);
    let existing_key = match std::fs::read_to_string(&key_path) {
        Ok(pem) => {
            // Narrow what an older version (or a copy) left readable to others.
            for p in [&key_path, &cert_path] {
                if p.exists() {
                    crate::privilege::open_private(std::fs::OpenOptions::new().read(true), p)
                        .map_err(io(p))?;
                }
            }
            if let Ok(c) = load_pair(&cert_path, &key_path) {
                if c.covers(&wanted) {
                    return Ok(c);
                }
                tracing::info!(
                    names = ?wanted,
                    "the self-signed certificate lacks names: making it again over the same key"
                );
            }
            rcgen::KeyPair::from_pem(&pem).ok()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(Error::Io {
                path: key_path,
                source,
            })
        }
    };
    let key = match existing_key {
        Some(k) => k,
        None => rcgen::KeyPair::generate().map_err(|e| Error::Setup(e.to_string()))?,
    };
    let cert_pem = generate_self_signed(&wanted, &key)?;
    let key_pem = key.serialize_pem();
    write_private(&key_path, key_pem.as_bytes())?;
    write_private(&cert_path, cert_pem.as_bytes())?;
    tracing::info!(path = %cert_path.display(), "made a self-signed certificate");
    Certificate::from_pem(&cert_pem, &key_pem).map_err(|e| Error::Setup(e.to_string()))
}

/// A self-signed certificate for `names` (the first is also the common name) over `key`, valid
/// from 2020 for 100 years, not a CA: its PEM.
///
/// # Errors
/// If rcgen fails.
pub fn generate_self_signed(names: &[String], key: &rcgen::KeyPair) -> Result<String, Error> {
    let mut params =
        rcgen::CertificateParams::new(names.to_vec()).map_err(|e| Error::Setup(e.to_string()))?;
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2120, 1, 1);
    if let Some(first) = names.first() {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, first.as_str());
    }
    let cert = params
        .self_signed(key)
        .map_err(|e| Error::Setup(e.to_string()))?;
    Ok(cert.pem())
}

/// Writes `data` to `path` as a private file (`0600`), atomically (temporary file, fsync,
/// rename).
///
/// # Errors
/// The I/O error, with the path.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = crate::privilege::open_private(
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true),
        &tmp,
    )
    .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::dev(dir.path().to_owned());
        let a = setup(&config).unwrap();
        let b = setup(&config).unwrap();
        assert_eq!(
            a.certs.current().pem(),
            b.certs.current().pem(),
            "second start must reuse the certificate"
        );
        assert!(a.certs.current().pem().contains("BEGIN CERTIFICATE"));
        let key_mode = std::fs::metadata(dir.path().join("tls/key.pem"))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap();
        assert_eq!(key_mode, 0o600);
    }

    /// The public key of a PEM certificate (what clients pin).
    fn spki(pem: &str) -> Vec<u8> {
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        c.public_key().raw.to_vec()
    }

    #[test]
    fn self_signed_names_cover_the_domain_and_a_new_domain_keeps_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = crate::config::RawConfig::default();
        raw.set("mail_domain=_chat.example").unwrap();
        let mode = crate::config::Mode::Dev {
            data_dir: dir.path().to_owned(),
        };
        let config = Config::build(&raw, mode.clone()).unwrap();
        let a = setup(&config).unwrap().certs.current();
        assert_eq!(
            a.names(),
            [
                "_chat.example",
                "www._chat.example",
                "mta-sts._chat.example",
                "autoconfig._chat.example"
            ]
        );
        raw.set("mail_domain=_other.example").unwrap();
        let b = setup(&Config::build(&raw, mode).unwrap())
            .unwrap()
            .certs
            .current();
        assert!(b.covers(&["autoconfig._other.example".to_owned()]));
        assert_ne!(a.pem(), b.pem());
        assert_eq!(spki(a.pem()), spki(b.pem()), "same key, new names");
        // An IP-only relay: the address alone.
        let ip = setup(&Config::dev(dir.path().join("ip")))
            .unwrap()
            .certs
            .current();
        assert_eq!(ip.names(), ["127.0.0.1"]);
    }

    #[test]
    fn strict_config_refuses_tls12_clients() {
        let dir = tempfile::tempdir().unwrap();
        let configs = setup(&Config::dev(dir.path().to_owned())).unwrap();
        let client = |versions: &[&'static rustls::SupportedProtocolVersion]| {
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(crate::delivery::tls::Unchecked::accept_any(
                Arc::new(rustls::crypto::ring::default_provider()),
            ))
            .with_no_client_auth()
        };
        let handshake = |server: Arc<ServerConfig>, cc: rustls::ClientConfig| {
            let mut c =
                rustls::ClientConnection::new(Arc::new(cc), "127.0.0.1".try_into().unwrap())
                    .unwrap();
            let mut s = rustls::ServerConnection::new(server).unwrap();
            for _ in 0..10 {
                let mut buf = Vec::new();
                c.write_tls(&mut buf).unwrap();
                s.read_tls(&mut &buf[..]).unwrap();
                if s.process_new_packets().is_err() {
                    return false;
                }
                let mut buf = Vec::new();
                s.write_tls(&mut buf).unwrap();
                c.read_tls(&mut &buf[..]).unwrap();
                if c.process_new_packets().is_err() {
                    return false;
                }
                if !c.is_handshaking() && !s.is_handshaking() {
                    return true;
                }
            }
            false
        };
        let tls12 = &[&rustls::version::TLS12][..];
        let tls13 = &[&rustls::version::TLS13][..];
        assert!(!handshake(configs.strict.clone(), client(tls12)));
        assert!(handshake(configs.strict.clone(), client(tls13)));
        assert!(handshake(configs.mx.clone(), client(tls12)));
    }

    #[test]
    fn https_port_chooses_by_alpn_and_unknown_or_no_alpn_still_connects() {
        use crate::io::pipeline::Pipeline;
        let dir = tempfile::tempdir().unwrap();
        let configs = setup(&Config::dev(dir.path().to_owned())).unwrap();
        // (offered ALPN, TLS 1.2 only?) → negotiated ALPN, or None for a failed handshake.
        let run = |alpn: &[&[u8]], tls12: bool| -> Option<Option<Vec<u8>>> {
            let versions: &[&'static rustls::SupportedProtocolVersion] = if tls12 {
                &[&rustls::version::TLS12]
            } else {
                &[&rustls::version::TLS13, &rustls::version::TLS12]
            };
            let mut cc = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(crate::delivery::tls::Unchecked::accept_any(
                Arc::new(rustls::crypto::ring::default_provider()),
            ))
            .with_no_client_auth();
            cc.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            let mut c =
                rustls::ClientConnection::new(Arc::new(cc), "127.0.0.1".try_into().unwrap())
                    .unwrap();
            let mut server = Pipeline::default();
            server.start_tls_by_alpn(configs.https.clone());
            for _ in 0..10 {
                let mut buf = Vec::new();
                while c.wants_write() {
                    c.write_tls(&mut buf).unwrap();
                }
                let (mut plain, mut back) = (Vec::new(), Vec::new());
                // The ClientHello (and the rest) one byte per read.
                for b in buf.chunks(1) {
                    if server.input(b, &mut plain, &mut back).is_err() {
                        return None;
                    }
                }
                c.read_tls(&mut &back[..]).unwrap();
                if c.process_new_packets().is_err() {
                    return None;
                }
                if !c.is_handshaking() && !server.is_handshaking() {
                    assert_eq!(c.alpn_protocol(), server.alpn());
                    return Some(server.alpn().map(<[u8]>::to_vec));
                }
            }
            None
        };
        let got = |p: &[u8]| Some(Some(p.to_vec()));
        assert_eq!(run(&[b"imap"], false), got(b"imap"));
        assert_eq!(run(&[b"smtp"], false), got(b"smtp"));
        assert_eq!(run(&[b"h2", b"http/1.1"], false), got(b"http/1.1"));
        assert_eq!(
            run(&[b"h2"], false),
            Some(None),
            "unknown ALPN: HTTP without ALPN"
        );
        assert_eq!(run(&[], false), Some(None), "no ALPN: HTTP");
        assert_eq!(
            run(&[b"http/1.1"], true),
            got(b"http/1.1"),
            "browsers may use TLS 1.2"
        );
        assert_eq!(run(&[b"imap"], true), None, "IMAP stays TLS 1.3 only");
    }
}
