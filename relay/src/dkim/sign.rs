//! DKIM signing (RFC 6376) of outgoing mail and bounces, as the reference's OpenDKIM does it
//! (chatmail.md §5.2): `d=<mail_domain>`, `s=<dkim_selector>`, `a=rsa-sha256`,
//! `c=relaxed/simple`, the header fields of [`SIGNED_HEADERS`], and one extra empty instance of
//! each of [`OVERSIGNED_HEADERS`] ("oversigning": a verifier then fails the signature if such a
//! field is added after signing, e.g. a second `From` or `Autocrypt`).
//!
//! No I/O and no clock: the signing time (`t=`) is passed in. mail-auth's `DkimSigner::sign`
//! reads the system clock itself, so the signature is put together here from mail-auth's public
//! parts (canonicalization, body hash, the RSA key, the header encoder), which is what its
//! `sign` does.
//!
//! `h=` as OpenDKIM writes it: every instance of a signed field present in the message, bottom
//! up (RFC 6376 §5.4.2), then the name of each oversigned field once more. A signed field that is
//! absent and not oversigned is not listed.

use mail_auth::common::crypto::{Algorithm, RsaKey, Sha256, SigningKey as _};
use mail_auth::common::headers::{HeaderStream, HeaderWriter as _, Writable, Writer};
use mail_auth::dkim::canonicalize::CanonicalHeaders;
use mail_auth::dkim::{Canonicalization, Signature};
use mail_auth::AuthenticatedMessage;

use super::key::{DkimKey, Error};

/// The header fields signed when present: OpenDKIM's default set (RFC 6376 §5.4.1, libopendkim's
/// `dkim_should_signhdrs`) plus `Autocrypt` and `Content-Type` (the reference's
/// `SignHeaders *,+autocrypt,+content-type`).
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Resent-Date",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
    "Autocrypt",
    "Content-Type",
];

/// The header fields signed once more than they occur (the reference's `OversignHeaders`): every
/// signed field except `Content-Type`.
pub const OVERSIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Resent-Date",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
    "Autocrypt",
];

/// Why a message was not signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// No header section, or no `From` field (RFC 6376 §5.4: From MUST be signed).
    #[error("the message has no From header field")]
    NoFrom,
    /// The RSA operation failed.
    #[error("signing failed: {0}")]
    Crypto(String),
}

/// Signs messages for one domain with one key. Cheap to share (`Arc`); signing takes `&self`.
pub struct Signer {
    key: RsaKey<Sha256>,
    domain: String,
    selector: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

/// A message's header fields and body, in the form mail-auth's canonicalization reads.
struct Fields<'x> {
    headers: std::slice::Iter<'x, (&'x [u8], &'x [u8])>,
    body: &'x [u8],
}

impl<'x> HeaderStream<'x> for Fields<'x> {
    fn next_header(&mut self) -> Option<(&'x [u8], &'x [u8])> {
        self.headers.next().copied()
    }

    fn body(&mut self) -> &'x [u8] {
        self.body
    }
}

/// What the signature covers (RFC 6376 §3.7): the canonical signed header fields, then the
/// `DKIM-Signature` field itself with an empty `b=`.
struct Signed<'a> {
    headers: CanonicalHeaders<'a>,
    signature: &'a Signature,
}

impl Writable for Signed<'_> {
    fn write(self, writer: &mut impl Writer) {
        self.headers.write(writer);
        self.signature.write(writer, false);
    }
}

impl Signer {
    /// A signer for `d=domain`, `s=selector` with `key`.
    ///
    /// # Errors
    /// [`Error::Unusable`] if ring refuses the key (fewer than 2048 bits, inconsistent).
    pub fn new(key: &DkimKey, domain: &str, selector: &str) -> Result<Signer, Error> {
        let der = key.to_pkcs1_der()?;
        let key = RsaKey::<Sha256>::from_key_der(rustls::pki_types::PrivateKeyDer::Pkcs1(
            rustls::pki_types::PrivatePkcs1KeyDer::from(der.as_slice()),
        ))
        .map_err(|e| Error::Unusable(e.to_string()))?;
        Ok(Signer {
            key,
            domain: domain.to_owned(),
            selector: selector.to_owned(),
        })
    }

    /// `d=`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `s=`.
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// Signs the complete message `message` (header section, blank line, body; CRLF line ends,
    /// exactly the bytes that will be sent) at `now_unix` (seconds, `t=`), and returns the
    /// `DKIM-Signature: …\r\n` header field to put in front of it.
    ///
    /// # Errors
    /// [`SignError::NoFrom`] without a `From` field, [`SignError::Crypto`] if RSA fails.
    pub fn sign(&self, message: &[u8], now_unix: u64) -> Result<Vec<u8>, SignError> {
        let parsed = AuthenticatedMessage::parse(message).ok_or(SignError::NoFrom)?;
        let present = |name: &str| {
            parsed
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        };
        if !present("From") {
            return Err(SignError::NoFrom);
        }
        // mail-auth signs every instance of a listed field and then appends each listed name it
        // did not find (once per listing): a present oversigned field is listed twice (the
        // second listing finds nothing and becomes the empty instance), an absent one once.
        let mut h = Vec::with_capacity(SIGNED_HEADERS.len() + OVERSIGNED_HEADERS.len());
        for &name in SIGNED_HEADERS {
            let oversigned = OVERSIGNED_HEADERS.contains(&name);
            match (present(name), oversigned) {
                (true, true) => h.extend([name.to_owned(), name.to_owned()]),
                (true, false) | (false, true) => h.push(name.to_owned()),
                (false, false) => {}
            }
        }
        let template = Signature {
            v: 1,
            a: Algorithm::RsaSha256,
            d: self.domain.clone(),
            s: self.selector.clone(),
            h,
            ch: Canonicalization::Relaxed,
            cb: Canonicalization::Simple,
            ..Signature::default()
        };
        let body = message
            .get(parsed.body_offset as usize..)
            .unwrap_or_default();
        let fields = Fields {
            headers: parsed.headers.iter(),
            body,
        };
        let (_, headers, signed_names, canonical_body) = template.canonicalize(fields);
        let mut signature = template;
        signature.bh = self.key.hash(canonical_body).as_ref().to_vec();
        signature.t = now_unix;
        signature.h = signed_names;
        signature.b = self
            .key
            .sign(Signed {
                headers,
                signature: &signature,
            })
            .map_err(|e| SignError::Crypto(e.to_string()))?;
        let mut out = Vec::with_capacity(512);
        signature.write_header(&mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> &'static Signer {
        static SIGNER: std::sync::OnceLock<Signer> = std::sync::OnceLock::new();
        SIGNER.get_or_init(|| {
            let key = DkimKey::generate(&mut rand::rngs::OsRng).unwrap();
            Signer::new(&key, "example.org", "opendkim").unwrap()
        })
    }

    /// The tag `name` of a `DKIM-Signature` field, unfolded.
    fn tag(header: &str, name: &str) -> String {
        let value = header.split_once(':').unwrap().1;
        let unfolded: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        unfolded
            .split(';')
            .find_map(|t| t.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {header}"))
            .to_owned()
    }

    const MESSAGE: &str = "From: <alice@example.org>\r\n\
        To: <bob@example.net>\r\n\
        Subject: [...]\r\n\
        Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n\
        Message-ID: <1@example.org>\r\n\
        Autocrypt: addr=alice@example.org; keydata=AAAA\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: text/plain\r\n\
        Received: from somewhere\r\n\
        \r\n\
        body\r\n";

    #[test]
    fn header_list_signs_present_fields_and_oversigns() {
        let header = signer().sign(MESSAGE.as_bytes(), 1_800_000_000).unwrap();
        let header = String::from_utf8(header).unwrap();
        assert!(
            header.starts_with(
                "DKIM-Signature: v=1; a=rsa-sha256; s=opendkim; d=example.org; c=relaxed/simple;"
            ),
            "{header}"
        );
        assert!(header.ends_with(";\r\n"));
        assert_eq!(tag(&header, "t"), "1800000000");
        let h: Vec<String> = tag(&header, "h")
            .split(':')
            .map(str::to_ascii_lowercase)
            .collect();
        let count = |name: &str| h.iter().filter(|n| *n == name).count();
        // Present and oversigned: twice. Present, not oversigned: once.
        for name in ["from", "to", "subject", "date", "autocrypt"] {
            assert_eq!(count(name), 2, "{name} in {h:?}");
        }
        assert_eq!(count("content-type"), 1, "{h:?}");
        // Absent and oversigned: once (the empty instance).
        for name in [
            "reply-to",
            "cc",
            "in-reply-to",
            "references",
            "list-id",
            "resent-from",
        ] {
            assert_eq!(count(name), 1, "{name} in {h:?}");
        }
        // Not in the signed set.
        for name in ["message-id", "mime-version", "received"] {
            assert_eq!(count(name), 0, "{name} in {h:?}");
        }
        let oversigned = OVERSIGNED_HEADERS.len();
        // Five present oversigned fields, plus Content-Type, plus one empty instance each.
        assert_eq!(h.len(), 5 + 1 + oversigned, "{h:?}");
    }

    #[test]
    fn two_from_fields_are_both_signed_and_oversigned() {
        let message = format!("From: <mallory@example.org>\r\n{MESSAGE}");
        let header = signer().sign(message.as_bytes(), 1).unwrap();
        let h = tag(&String::from_utf8(header).unwrap(), "h").to_ascii_lowercase();
        assert_eq!(h.split(':').filter(|n| *n == "from").count(), 3, "{h}");
    }

    #[test]
    fn without_from_nothing_is_signed() {
        assert_eq!(
            signer().sign(b"To: <bob@example.net>\r\n\r\nbody\r\n", 1),
            Err(SignError::NoFrom)
        );
        assert_eq!(signer().sign(b"", 1), Err(SignError::NoFrom));
    }

    #[test]
    fn time_is_the_one_passed_in() {
        let a = signer().sign(MESSAGE.as_bytes(), 1_000).unwrap();
        let a = String::from_utf8(a).unwrap();
        assert_eq!(tag(&a, "t"), "1000");
        // The body hash depends on the body only (simple canonicalization keeps it exact).
        let b = signer()
            .sign(MESSAGE.replace("body", "Body").as_bytes(), 1_000)
            .unwrap();
        assert_ne!(tag(&a, "bh"), tag(&String::from_utf8(b).unwrap(), "bh"));
    }
}
