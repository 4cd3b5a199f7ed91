//! TLS client configurations for talking to a test relay, whose certificate is self-signed: any
//! certificate is accepted, handshake signatures are still checked. Only for loopback test relays.

use std::sync::Arc;

/// A rustls client configuration (ring provider, TLS 1.2 and 1.3) that accepts the relay's
/// self-signed certificate.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(relay::delivery::tls::Unchecked::accept_any(Arc::new(
            rustls::crypto::ring::default_provider(),
        )))
        .with_no_client_auth(),
    )
}
