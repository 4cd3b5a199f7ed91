//! The relay's DKIM key: an RSA key pair, its PEM form on disk and its DNS record (no I/O here;
//! [`super::keyfile`] reads and writes the file).
//!
//! The private key is written as PEM PKCS#1 (`-----BEGIN RSA PRIVATE KEY-----`), as
//! `opendkim-genkey` writes it, so a key moves between the reference relay and this one as a
//! plain file copy. PKCS#8 (`-----BEGIN PRIVATE KEY-----`) is read too. The public key goes into
//! DNS as `<selector>._domainkey.<domain> TXT "v=DKIM1;k=rsa;p=<base64 SubjectPublicKeyInfo>;
//! s=email;t=s"` (chatmail.md §1.7).

use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _};
use rsa::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _};
use rsa::traits::PublicKeyParts as _;
use rsa::RsaPrivateKey;

/// Loading (or creating) the key file is I/O and lives in [`super::keyfile`]; re-exported here so
/// that operator commands find it next to the key type.
pub use super::keyfile::{key_path, load_or_create};

/// Size of a generated key. RFC 8301 §3.2: signers MUST use at least 1024 bits and SHOULD use
/// 2048; ring (which signs) refuses keys below 2048 bits.
pub const KEY_BITS: usize = 2048;

/// Longest character-string of a TXT record (RFC 1035 §3.3.14): longer values are split.
pub const TXT_STRING_MAX: usize = 255;

/// Why a key could not be read, made or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not an RSA private key in PEM (PKCS#1 or PKCS#8).
    #[error("not an RSA private key in PEM (PKCS#1 or PKCS#8): {0}")]
    Pem(String),
    /// The key could not be encoded, or RSA key generation failed.
    #[error("RSA key: {0}")]
    Rsa(String),
    /// The signing library refused the key (e.g. fewer than 2048 bits).
    #[error("the DKIM key cannot sign: {0}")]
    Unusable(String),
    /// Reading or writing the key file (or its directory) failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`reading`, `creating`, ...).
        op: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// An RSA DKIM key pair.
pub struct DkimKey {
    private: RsaPrivateKey,
    /// DER SubjectPublicKeyInfo of the public key (what `p=` carries).
    public_spki: Vec<u8>,
}

impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKey")
            .field("bits", &self.bits())
            .finish_non_exhaustive()
    }
}

impl DkimKey {
    fn from_private(private: RsaPrivateKey) -> Result<DkimKey, Error> {
        let public_spki = private
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| Error::Rsa(e.to_string()))?
            .into_vec();
        Ok(DkimKey {
            private,
            public_spki,
        })
    }

    /// A new [`KEY_BITS`]-bit key from `rng` (a cryptographic generator such as `OsRng`).
    ///
    /// # Errors
    /// Key generation failed (practically never).
    pub fn generate(rng: &mut impl rsa::rand_core::CryptoRngCore) -> Result<DkimKey, Error> {
        let private = RsaPrivateKey::new(rng, KEY_BITS).map_err(|e| Error::Rsa(e.to_string()))?;
        DkimKey::from_private(private)
    }

    /// Reads a PEM private key: PKCS#1 (`RSA PRIVATE KEY`, opendkim-genkey's form) or PKCS#8
    /// (`PRIVATE KEY`).
    ///
    /// # Errors
    /// [`Error::Pem`] if it is neither, or not an RSA key.
    pub fn from_pem(pem: &str) -> Result<DkimKey, Error> {
        let private = match RsaPrivateKey::from_pkcs1_pem(pem) {
            Ok(key) => key,
            Err(pkcs1) => RsaPrivateKey::from_pkcs8_pem(pem)
                .map_err(|pkcs8| Error::Pem(format!("PKCS#1: {pkcs1}; PKCS#8: {pkcs8}")))?,
        };
        DkimKey::from_private(private)
    }

    /// The private key as PEM PKCS#1 with LF line ends (what the key file holds).
    ///
    /// # Errors
    /// Encoding failed (practically never).
    pub fn to_pkcs1_pem(&self) -> Result<String, Error> {
        self.private
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| Error::Rsa(e.to_string()))
    }

    /// The private key as DER PKCS#1 (what the signer loads).
    ///
    /// # Errors
    /// Encoding failed (practically never).
    pub fn to_pkcs1_der(&self) -> Result<Vec<u8>, Error> {
        self.private
            .to_pkcs1_der()
            .map(|der| der.as_bytes().to_vec())
            .map_err(|e| Error::Rsa(e.to_string()))
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.private.size() * 8
    }

    /// The public key as DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_spki
    }

    /// The value of the DKIM TXT record, exactly
    /// `v=DKIM1;k=rsa;p=<base64 SubjectPublicKeyInfo>;s=email;t=s` (the reference's form, t=s:
    /// no subdomain may sign with it, RFC 6376 §3.6.1).
    pub fn dns_txt_value(&self) -> String {
        let p = base64::engine::general_purpose::STANDARD.encode(&self.public_spki);
        format!("v=DKIM1;k=rsa;p={p};s=email;t=s")
    }

    /// [`DkimKey::dns_txt_value`] split into character-strings of at most [`TXT_STRING_MAX`]
    /// bytes, the form of a zone file (`"…" "…"`); resolvers join them again.
    pub fn dns_txt_strings(&self) -> Vec<String> {
        split_txt(&self.dns_txt_value())
    }
}

/// `value` in pieces of at most [`TXT_STRING_MAX`] bytes (it is ASCII).
pub fn split_txt(value: &str) -> Vec<String> {
    value
        .as_bytes()
        .chunks(TXT_STRING_MAX)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

/// The owner name of the key record: `<selector>._domainkey.<domain>` (RFC 6376 §3.6.2.1).
pub fn record_name(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> &'static DkimKey {
        static KEY: std::sync::OnceLock<DkimKey> = std::sync::OnceLock::new();
        KEY.get_or_init(|| DkimKey::generate(&mut rand::rngs::OsRng).unwrap())
    }

    #[test]
    fn generated_key_is_2048_bits_and_pem_round_trips() {
        let k = key();
        assert_eq!(k.bits(), 2048);
        let pem = k.to_pkcs1_pem().unwrap();
        assert!(
            pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"),
            "{pem}"
        );
        assert!(pem.ends_with("-----END RSA PRIVATE KEY-----\n"));
        let again = DkimKey::from_pem(&pem).unwrap();
        assert_eq!(again.public_key_der(), k.public_key_der());
    }

    #[test]
    fn pkcs8_pem_is_read_too() {
        use rsa::pkcs8::EncodePrivateKey as _;
        let pem = key()
            .private
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let again = DkimKey::from_pem(&pem).unwrap();
        assert_eq!(again.public_key_der(), key().public_key_der());
    }

    #[test]
    fn garbage_pem_is_refused() {
        let err = DkimKey::from_pem(
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(matches!(err, Error::Pem(_)), "{err}");
        assert!(DkimKey::from_pem("").is_err());
    }

    #[test]
    fn dns_record_has_the_reference_form() {
        let k = key();
        let v = k.dns_txt_value();
        let p = base64::engine::general_purpose::STANDARD.encode(k.public_key_der());
        assert_eq!(v, format!("v=DKIM1;k=rsa;p={p};s=email;t=s"));
        // A SubjectPublicKeyInfo (SEQUENCE { AlgorithmIdentifier rsaEncryption, BIT STRING }),
        // as opendkim-genkey publishes, not a bare PKCS#1 RSAPublicKey.
        assert!(
            p.starts_with("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"),
            "{p}"
        );
        let parts = k.dns_txt_strings();
        assert!(parts.len() >= 2, "a 2048-bit key needs two strings");
        assert!(parts.iter().all(|s| s.len() <= TXT_STRING_MAX));
        assert_eq!(parts.concat(), v);
        assert_eq!(
            record_name("opendkim", "chat.example.org"),
            "opendkim._domainkey.chat.example.org"
        );
    }
}
