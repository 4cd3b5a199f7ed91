//! TLS client configurations for outbound delivery (rustls, `ring` provider, TLS 1.2 and 1.3):
//! one pair for SMTP STARTTLS and one for HTTPS (ALPN `http/1.1`, which our own HTTPS port
//! needs to pick its HTTP configuration), each in two policies ([`TlsPolicy`]):
//!
//! - `Verify`: the certificate chain must lead to a CA of the system store (loaded once at start
//!   with rustls-native-certs: `/etc/ssl/certs` and friends, or `SSL_CERT_FILE`/`SSL_CERT_DIR`)
//!   or of the optional extra CA file (option `delivery_ca_file`), and name the host;
//! - `AcceptAny`: any certificate (domain literals, `_`-prefixed domains), handshake signatures
//!   still checked.
//!
//! The configurations are shared by every connection, so TLS sessions are resumed (rustls's
//! in-memory session cache, [`SESSION_CACHE`] entries).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::outbound::mx::{MxHost, TlsPolicy};

/// TLS sessions kept for resumption, per configuration.
pub const SESSION_CACHE: usize = 4096;

/// Errors while setting up the client configurations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The extra CA file could not be read or holds no certificate.
    #[error("{path}: {what}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rustls refused the configuration.
    #[error("TLS client setup: {0}")]
    Setup(String),
}

/// The client configurations of the process.
#[derive(Clone)]
pub struct ClientTls {
    smtp_verify: Arc<ClientConfig>,
    smtp_any: Arc<ClientConfig>,
    https_verify: Arc<ClientConfig>,
    https_any: Arc<ClientConfig>,
    /// CA certificates trusted by `Verify` (system and extra).
    pub roots: usize,
}

impl ClientTls {
    /// Loads the system CA store plus the certificates of `extra_ca_file` (PEM) if given.
    ///
    /// # Errors
    /// An unreadable or empty extra CA file, or a rustls setup failure. An empty system store is
    /// not an error (logged): only verified destinations are then unreachable.
    pub fn new(extra_ca_file: Option<&Path>) -> Result<ClientTls, Error> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!("loading system CA certificates: {e}");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        if ignored > 0 {
            tracing::warn!("{ignored} system CA certificates could not be used");
        }
        if let Some(path) = extra_ca_file {
            let ca_err = |what: String| Error::CaFile {
                path: path.to_owned(),
                what,
            };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &pem[..])
                .collect::<Result<_, _>>()
                .map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificate in the file".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            }
        }
        if roots.is_empty() {
            tracing::warn!(
                "no CA certificates: delivery to servers whose certificate is verified will fail"
            );
        } else {
            tracing::debug!("{added} system CA certificates loaded");
        }
        let count = roots.len();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = if roots.is_empty() {
            // WebPkiServerVerifier refuses an empty store; refuse every certificate instead.
            Unchecked::refuse_all(provider.clone())
        } else {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| Error::Setup(e.to_string()))?
        };
        let any: Arc<dyn ServerCertVerifier> = Unchecked::accept_any(provider.clone());
        let build = |verifier: Arc<dyn ServerCertVerifier>, alpn: &[&[u8]]| {
            let mut c = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Setup(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            c.resumption = Resumption::in_memory_sessions(SESSION_CACHE);
            Ok::<_, Error>(Arc::new(c))
        };
        Ok(ClientTls {
            smtp_verify: build(verifier.clone(), &[])?,
            smtp_any: build(any.clone(), &[])?,
            https_verify: build(verifier, &[b"http/1.1"])?,
            https_any: build(any, &[b"http/1.1"])?,
            roots: count,
        })
    }

    /// The configuration for SMTP STARTTLS with `policy`.
    pub fn smtp(&self, policy: TlsPolicy) -> Arc<ClientConfig> {
        match policy {
            TlsPolicy::Verify => self.smtp_verify.clone(),
            TlsPolicy::AcceptAny => self.smtp_any.clone(),
        }
    }

    /// The configuration for HTTPS with `policy`.
    pub fn https(&self, policy: TlsPolicy) -> Arc<ClientConfig> {
        match policy {
            TlsPolicy::Verify => self.https_verify.clone(),
            TlsPolicy::AcceptAny => self.https_any.clone(),
        }
    }
}

/// The name sent as SNI and verified: the host name, or its address for a literal (no SNI).
///
/// # Errors
/// A host name rustls cannot use.
pub fn server_name(host: &MxHost) -> Result<ServerName<'static>, String> {
    match host.literal {
        Some(ip) => Ok(ServerName::IpAddress(ip.into())),
        None => ServerName::try_from(host.name.clone())
            .map_err(|e| format!("invalid host name {:?}: {e}", host.name)),
    }
}

/// A verifier that decides about the certificate without looking at it — accepts any (domain
/// literals, `_` names, and tests talking to a self-signed relay) or refuses all (`Verify` with
/// no trusted CA) — and still checks the handshake signatures, so the TLS cost and the peer's
/// key possession are real.
#[derive(Debug)]
pub struct Unchecked {
    provider: Arc<rustls::crypto::CryptoProvider>,
    accept: bool,
}

impl Unchecked {
    /// Accepts every certificate.
    pub fn accept_any(provider: Arc<rustls::crypto::CryptoProvider>) -> Arc<Unchecked> {
        Arc::new(Unchecked {
            provider,
            accept: true,
        })
    }

    /// Refuses every certificate (as an unknown issuer).
    pub fn refuse_all(provider: Arc<rustls::crypto::CryptoProvider>) -> Arc<Unchecked> {
        Arc::new(Unchecked {
            provider,
            accept: false,
        })
    }
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.accept {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
