//! Fuzz the DKIM signer (`dkim::Signer::sign`) with a fixed test key over arbitrary messages,
//! and check what it signs with mail-auth's own verification against the same key, offline: the
//! key record is put in the TXT cache that verification reads first, and the resolver behind it
//! points at a closed loopback port (it is never asked).
//!
//! Checks: `sign` never panics and fails only with `NoFrom`, exactly when mail-auth finds no
//! `From` field; the header it returns is one `DKIM-Signature` field ending in CRLF. For the
//! message as the relay stores and sends it (CRLF line ends: the input with bare CR and LF made
//! CRLF, as the SMTP client's DATA encoding does) starting with a header field (a leading blank
//! would continue the prepended signature field), the signature put in front verifies: `pass`.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::common::verify::DomainKey;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache,
};
use relay::dkim::{DkimKey, KeyCache, SignError, Signer};

const DOMAIN: &str = "example.org";
const SELECTOR: &str = "opendkim";
/// `t=`: a fixed time in the past (verification compares `x=` with the clock; we set none).
const SIGNED_AT: u64 = 1_700_000_000;
/// A 2048-bit RSA key made for these tests (`openssl genrsa -traditional 2048`).
const KEY_PEM: &str = include_str!("common/dkim-test-key.pem");

struct Setup {
    signer: Signer,
    cache: KeyCache,
    resolver: MessageAuthenticator,
    runtime: tokio::runtime::Runtime,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let key = DkimKey::from_pem(KEY_PEM).expect("test key");
        let signer = Signer::new(&key, DOMAIN, SELECTOR).expect("signer");
        let record = DomainKey::parse(key.dns_txt_value().as_bytes()).expect("key record");
        let cache = KeyCache::new(8);
        cache.insert(
            format!("{SELECTOR}._domainkey.{DOMAIN}.").into_boxed_str(),
            record.into(),
            Instant::now() + Duration::from_secs(365 * 86_400),
        );
        let mut config = relay::config::Config::dev("/nonexistent".into());
        // Nothing listens there: a lookup that missed the cache would fail at once.
        config.dns_server = Some("127.0.0.1:9".parse().expect("address"));
        config.dns_timeout_secs = 1;
        let resolver = relay::dns::resolver(&config);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Setup {
            signer,
            cache,
            resolver,
            runtime,
        }
    })
}

/// CRLF line ends: bare CR and bare LF become CRLF.
fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 8 + 2);
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' if raw.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn sign(s: &Setup, message: &[u8]) -> Option<Vec<u8>> {
    let has_from = AuthenticatedMessage::parse(message).is_some_and(|m| {
        m.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(b"From"))
    });
    match s.signer.sign(message, SIGNED_AT) {
        Ok(header) => {
            assert!(has_from, "signed a message without From");
            assert!(header.starts_with(b"DKIM-Signature: "));
            assert!(header.ends_with(b"\r\n"));
            // One field: every line after the first is a continuation.
            for line in header[..header.len() - 2].split(|&b| b == b'\n').skip(1) {
                assert!(
                    line.starts_with(b" ") || line.starts_with(b"\t"),
                    "{header:?}"
                );
            }
            Some(header)
        }
        Err(SignError::NoFrom) => {
            assert!(!has_from, "not signed though it has a From field");
            None
        }
        Err(e) => panic!("signing failed: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let s = setup();
    sign(s, data);

    let message = crlf(data);
    if matches!(message.first(), Some(b' ' | b'\t')) {
        return;
    }
    let Some(header) = sign(s, &message) else {
        return;
    };
    let mut signed = header;
    signed.extend_from_slice(&message);
    let mut parsed = AuthenticatedMessage::parse(&signed).expect("a signed message parses");
    // Ours is the first signature; others in the input are not ours to check.
    assert!(
        !parsed.dkim_headers.is_empty(),
        "our signature is not found"
    );
    parsed.dkim_headers.truncate(1);
    let params = Parameters::new(&parsed).with_txt_cache(&s.cache);
    let outputs = s.runtime.block_on(s.resolver.verify_dkim(params));
    let ours = outputs
        .iter()
        .find(|o| o.signature().is_some())
        .expect("our signature was checked");
    let sig = ours.signature().expect("signature");
    assert_eq!(
        (sig.d.as_str(), sig.s.as_str(), sig.t),
        (DOMAIN, SELECTOR, SIGNED_AT)
    );
    assert_eq!(*ours.result(), DkimResult::Pass, "{outputs:?}");
});
