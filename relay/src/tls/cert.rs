//! The certificate the relay serves, held in one place that every TLS configuration asks at each
//! handshake ([`CertStore`], a rustls [`ResolvesServerCert`]). Replacing it ([`CertStore::swap`])
//! takes effect at the next handshake; connections already established keep the keys they
//! negotiated and are not disturbed (an IMAP IDLE session stays up across a renewal).
//!
//! No I/O here: certificates come in as PEM text, validity is read from the certificate itself.

use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// What is wrong with a certificate and key given as PEM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The PEM text does not parse.
    #[error("PEM: {0}")]
    Pem(String),
    /// No `CERTIFICATE` block.
    #[error("no certificate in the PEM text")]
    NoCertificate,
    /// No private key block.
    #[error("no private key in the PEM text")]
    NoKey,
    /// The key is unusable or does not belong to the certificate.
    #[error("certificate and key: {0}")]
    Key(rustls::Error),
    /// The end-entity certificate does not parse as X.509.
    #[error("certificate: {0}")]
    X509(String),
}

/// A parsed certificate chain with its private key, ready to serve.
#[derive(Debug)]
pub struct Certificate {
    key: Arc<CertifiedKey>,
    pem: String,
    not_before: i64,
    not_after: i64,
    names: Vec<String>,
}

impl Certificate {
    /// Parses a PEM chain (end entity first) and a PEM private key (PKCS#8, SEC1 or PKCS#1; the
    /// two may be the same text). The key must match the certificate.
    ///
    /// # Errors
    /// See [`Error`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Certificate, Error> {
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Pem(e.to_string()))?;
        let leaf = certs.first().ok_or(Error::NoCertificate)?;
        let (not_before, not_after, names) = inspect(leaf)?;
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| Error::Pem(e.to_string()))?
            .ok_or(Error::NoKey)?;
        let provider = rustls::crypto::ring::default_provider();
        let key = CertifiedKey::from_der(certs.clone(), key, &provider).map_err(Error::Key)?;
        // The chain as it will be served (without the key, whatever `cert_pem` also held).
        let pem = certs
            .iter()
            .map(|c| pem_block("CERTIFICATE", c.as_ref()))
            .collect();
        Ok(Certificate {
            key: Arc::new(key),
            pem,
            not_before,
            not_after,
            names,
        })
    }

    /// The chain as PEM (end entity first).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Start of validity, unix seconds.
    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    /// End of validity, unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The subject alternative names: DNS names (lower case) and IP addresses as text.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether every one of `names` is among the certificate's names (exact match; the relay
    /// asks for no wildcards).
    pub fn covers(&self, names: &[String]) -> bool {
        names
            .iter()
            .all(|n| self.names.iter().any(|m| m.eq_ignore_ascii_case(n)))
    }

    /// The DER of the end-entity certificate.
    pub fn leaf_der(&self) -> &[u8] {
        self.key.cert[0].as_ref()
    }
}

/// Validity (unix seconds) and subject alternative names of a DER certificate.
fn inspect(der: &[u8]) -> Result<(i64, i64, Vec<String>), Error> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| Error::X509(e.to_string()))?;
    let validity = cert.validity();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => {
                    names.push(d.to_ascii_lowercase());
                }
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
        names,
    ))
}

/// One PEM block (64-column base64).
fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The certificate in use, shared by every TLS configuration of the process.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<Certificate>>,
}

impl CertStore {
    /// A store serving `cert`.
    pub fn new(cert: Certificate) -> Arc<CertStore> {
        Arc::new(CertStore {
            current: RwLock::new(Arc::new(cert)),
        })
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<Certificate> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Serves `cert` from the next handshake on.
    pub fn swap(&self, cert: Certificate) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(cert);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // One certificate covers every name the relay answers to (domain, www., mta-sts.,
        // autoconfig.), so SNI does not choose.
        Some(self.current().key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn parses_names_and_validity_and_refuses_a_foreign_key() {
        let (cert, key) = generated(&["a.example", "www.a.example", "127.0.0.1"]);
        let c = Certificate::from_pem(&cert, &key).unwrap();
        assert_eq!(c.names(), ["a.example", "www.a.example", "127.0.0.1"]);
        assert!(c.covers(&["A.example".into(), "127.0.0.1".into()]));
        assert!(!c.covers(&["mta-sts.a.example".into()]));
        assert!(c.not_after() > c.not_before());
        // One file holding both, as the ACME store writes it.
        let both = format!("{cert}{key}");
        let c2 = Certificate::from_pem(&both, &both).unwrap();
        assert_eq!(c2.pem(), c.pem());
        assert!(!c2.pem().contains("PRIVATE KEY"));
        let (_, other_key) = generated(&["b.example"]);
        assert!(matches!(
            Certificate::from_pem(&cert, &other_key),
            Err(Error::Key(_))
        ));
        assert!(matches!(
            Certificate::from_pem(&key, &key),
            Err(Error::NoCertificate)
        ));
        assert!(matches!(
            Certificate::from_pem(&cert, &cert),
            Err(Error::NoKey)
        ));
    }

    #[test]
    fn swap_changes_what_the_resolver_serves() {
        let (c1, k1) = generated(&["one.example"]);
        let (c2, k2) = generated(&["two.example"]);
        let store = CertStore::new(Certificate::from_pem(&c1, &k1).unwrap());
        let first = store.current();
        store.swap(Certificate::from_pem(&c2, &k2).unwrap());
        assert_eq!(store.current().names(), ["two.example"]);
        // A holder of the old one still has it.
        assert_eq!(first.names(), ["one.example"]);
    }
}
