//! DKIM cost per message: signing a 4 KiB message (RSA-2048, relaxed/simple, the reference's
//! header list) and verifying it (parse, body hash, RSA verification; the key record comes from
//! the relay's key cache, so no DNS is involved).
//! Run: `cargo bench -p relay-benches --bench dkim`.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: benchmarks
#![allow(
    clippy::unwrap_used,
    reason = "benchmark set-up: a failed unwrap is a broken benchmark"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::common::verify::DomainKey;
use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
use mail_auth::{MessageAuthenticator, ResolverCache as _, Txt};
use relay::dkim::{DkimKey, KeyCache, Signer, Verdict};

const DOMAIN: &str = "bench.test";
const SIZE: usize = 4096;

/// A Delta Chat-like message (Autocrypt header, PGP/MIME body) of exactly [`SIZE`] bytes.
fn message() -> Vec<u8> {
    let mut m = format!(
        "From: <alice@{DOMAIN}>\r\nTo: <bob@example.org>\r\nSubject: [...]\r\n\
         Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <Mr.1@{DOMAIN}>\r\n\
         Chat-Version: 1.0\r\nAutocrypt: addr=alice@{DOMAIN}; prefer-encrypt=mutual; keydata={}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\
         \r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b\r\n\
         Content-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\n",
        "x".repeat(400)
    )
    .into_bytes();
    let tail = b"-----END PGP MESSAGE-----\r\n\r\n--b--\r\n";
    while m.len() + 66 + tail.len() <= SIZE {
        m.extend_from_slice(&[b'Q'; 64]);
        m.extend_from_slice(b"\r\n");
    }
    let pad = SIZE - m.len() - tail.len();
    if pad >= 2 {
        m.extend(std::iter::repeat_n(b'Q', pad - 2));
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(tail);
    m.resize(SIZE, b'\n');
    m
}

fn bench(c: &mut Criterion) {
    let key = DkimKey::generate(&mut rand::rngs::OsRng).unwrap();
    let signer = Signer::new(&key, DOMAIN, "opendkim").unwrap();
    let msg = message();
    assert_eq!(msg.len(), SIZE);
    let mut group = c.benchmark_group("dkim");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.bench_function("sign_4k", |b| {
        b.iter(|| signer.sign(black_box(&msg), 1_800_000_000).unwrap())
    });

    let mut signed = signer.sign(&msg, 1_800_000_000).unwrap();
    signed.extend_from_slice(&msg);
    let cache = KeyCache::default();
    let record = DomainKey::parse(key.dns_txt_value().as_bytes()).unwrap();
    cache.insert(
        format!("opendkim._domainkey.{DOMAIN}.").into_boxed_str(),
        Txt::from(record),
        Instant::now() + Duration::from_secs(3600),
    );
    // No name servers: a lookup would fail, so a Pass proves the cache answered.
    let resolver = MessageAuthenticator::new(
        ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
        ResolverOpts::default(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let verify = || {
        rt.block_on(relay::dkim::verify_origin_with(
            &resolver,
            &cache,
            Duration::from_secs(5),
            black_box(&signed),
            DOMAIN,
        ))
    };
    assert_eq!(verify(), Verdict::Pass);
    group.bench_function("verify_4k", |b| b.iter(verify));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
