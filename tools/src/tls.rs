//! TLS for the load clients: rustls with the ring provider, TLS 1.2 and 1.3, and **no certificate
//! verification** (the relays under test run on loopback with self-signed certificates; handshake
//! signatures are still checked, so the cryptographic cost matches a real client's).
//! Never use this configuration against a server you do not run.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{within, Error};

/// A TLS stream over TCP, as every client here uses.
pub type Stream = tokio_rustls::client::TlsStream<TcpStream>;

/// Accepts any certificate, checks handshake signatures.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connector for loopback test servers (see the module docs).
pub fn connector() -> TlsConnector {
    connector_with_alpn(&[])
}

/// The same, offering the ALPN protocols `alpn` (e.g. `http/1.1`).
pub fn connector_with_alpn(alpn: &[&[u8]]) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider should support the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// Parses the name sent as SNI (a DNS name or an IP address).
///
/// # Errors
/// A message if `name` is neither.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned())
        .map_err(|e| format!("invalid TLS server name {name:?}: {e}"))
}

/// Runs the TLS handshake over `tcp`.
///
/// # Errors
/// Handshake failure or timeout.
pub async fn handshake(
    what: &'static str,
    connector: &TlsConnector,
    name: &ServerName<'static>,
    tcp: TcpStream,
    limit: std::time::Duration,
) -> Result<Stream, Error> {
    within(what, limit, connector.connect(name.clone(), tcp)).await
}
