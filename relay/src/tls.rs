//! TLS configuration (rustls with the `ring` provider): certificate loading or generation and the
//! two server configurations the relay uses.
//!
//! - Submission and IMAP accept TLS 1.3 only (as the reference's Postfix/Dovecot settings).
//! - Port 25 accepts TLS 1.2 and 1.3 (other MTAs).
//! - The HTTPS port picks one of three by the ClientHello's ALPN list
//!   ([`crate::io::pipeline::AlpnConfigs`]): `imap`/`smtp` get TLS 1.3 only (as 993/465), HTTP
//!   TLS 1.2 and 1.3 (browsers).
//!
//! Certificates: `tls_external_cert_and_key` names PEM files; otherwise (IP-only relays and
//! `_`-prefixed domains, and `relay dev`) a self-signed EC P-256 certificate is generated once and
//! kept in `<data>/tls/` so clients that pinned its key keep working across restarts. Its SANs are
//! the domain (or IP), `www.` and `mta-sts.` names, and it is not a CA certificate (Delta Chat
//! refuses a CA certificate used as an end entity).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::Config;

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

/// The server configurations of the process.
#[derive(Clone)]
pub struct TlsConfigs {
    /// TLS 1.3 only: submission (465, 587) and IMAP (993, 143).
    pub strict: Arc<ServerConfig>,
    /// TLS 1.2 and 1.3: SMTP from other relays (25).
    pub mx: Arc<ServerConfig>,
    /// The HTTPS port: chosen by ALPN.
    pub https: crate::io::pipeline::AlpnConfigs,
    /// PEM of the certificate in use (for logs and tests).
    pub cert_pem: String,
}

/// Loads the configured certificate or generates/reuses the self-signed one.
///
/// # Errors
/// Unreadable or invalid files, or a failing certificate generation.
pub fn setup(config: &Config) -> Result<TlsConfigs, Error> {
    let (cert_path, key_path) = match &config.tls_external_cert_and_key {
        Some((c, k)) => (c.clone(), k.clone()),
        None => self_signed_paths(config)?,
    };
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Invalid {
            path: cert_path.clone(),
            what: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Invalid {
            path: cert_path,
            what: "no certificate in file".into(),
        });
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| Error::Invalid {
            path: key_path.clone(),
            what: e.to_string(),
        })?
        .ok_or_else(|| Error::Invalid {
            path: key_path.clone(),
            what: "no private key in file".into(),
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let build_alpn = |versions: &[&'static rustls::SupportedProtocolVersion], alpn: &[&[u8]]| {
        let mut cfg = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| Error::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| Error::Setup(e.to_string()))?;
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
        cert_pem,
    })
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// Paths of the self-signed certificate, generating it on first use.
fn self_signed_paths(config: &Config) -> Result<(PathBuf, PathBuf), Error> {
    let dir = config.data_dir.join("tls");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        // Narrow what an older version (or a copy) left readable to others.
        let io = |p: &Path| {
            let path = p.to_owned();
            move |source| Error::Io { path, source }
        };
        crate::privilege::private_dir(&dir).map_err(io(&dir))?;
        for p in [&key, &cert] {
            crate::privilege::open_private(std::fs::OpenOptions::new().read(true), p)
                .map_err(io(p))?;
        }
        return Ok((cert, key));
    }
    crate::privilege::private_dir(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    let (cert_pem, key_pem) = generate_self_signed(&config.mail_domain)?;
    write_private(&key, key_pem.as_bytes())?;
    write_private(&cert, cert_pem.as_bytes())?;
    tracing::info!(path = %cert.display(), "generated a self-signed certificate");
    Ok((cert, key))
}

/// A self-signed EC P-256 certificate valid for 100 years: `(cert_pem, key_pem)`.
///
/// # Errors
/// If rcgen fails.
pub fn generate_self_signed(domain: &str) -> Result<(String, String), Error> {
    let names = if domain.parse::<std::net::IpAddr>().is_ok() {
        vec![domain.to_owned()]
    } else {
        vec![
            domain.to_owned(),
            format!("www.{domain}"),
            format!("mta-sts.{domain}"),
        ]
    };
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| Error::Setup(e.to_string()))?;
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2120, 1, 1);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, domain);
    let key = rcgen::KeyPair::generate().map_err(|e| Error::Setup(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| Error::Setup(e.to_string()))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), Error> {
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
            a.cert_pem, b.cert_pem,
            "second start must reuse the certificate"
        );
        assert!(a.cert_pem.contains("BEGIN CERTIFICATE"));
        let key_mode = std::fs::metadata(dir.path().join("tls/key.pem"))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap();
        assert_eq!(key_mode, 0o600);
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
            .with_custom_certificate_verifier(Arc::new(NoVerify))
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
            .with_custom_certificate_verifier(Arc::new(NoVerify))
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

    /// Test client verifier accepting anything (the server side is under test).
    #[derive(Debug)]
    struct NoVerify;

    impl rustls::client::danger::ServerCertVerifier for NoVerify {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
}
