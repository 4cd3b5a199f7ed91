//! Throughput of the encryption gate on a 4 KiB and a 10 MiB PGP/MIME message, plus submission
//! header cleanup. Run: `cargo bench -p relay-benches --bench policy_check`.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: benchmarks

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay::policy::{check_incoming, check_outgoing, clean_submission_headers, Envelope};

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0xB704CE;
    for &b in data {
        crc ^= u32::from(b) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x100_0000 != 0 {
                crc ^= 0x186_4CFB;
            }
        }
    }
    crc & 0xFF_FFFF
}

/// A structurally valid PGP/MIME message of about `size` bytes: PKESK + SEIPD v1 with a
/// five-octet length and pseudo-random content, armored in 64-character lines with a CRC.
fn encrypted_message(size: usize) -> Vec<u8> {
    let body_len = (size * 3 / 4).saturating_sub(600).max(16);
    let mut packets = vec![0xc1, 12, 3];
    packets.extend_from_slice(&[7; 11]);
    packets.push(0xd2);
    packets.push(0xff);
    packets.extend_from_slice(&(body_len as u32 + 1).to_be_bytes());
    packets.push(1);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..body_len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        packets.push(x as u8);
    }
    let enc = b64(&packets);
    let mut armor = b"-----BEGIN PGP MESSAGE-----\r\n\r\n".to_vec();
    for line in enc.chunks(64) {
        armor.extend_from_slice(line);
        armor.extend_from_slice(b"\r\n");
    }
    let crc = crc24(&packets).to_be_bytes();
    armor.push(b'=');
    armor.extend_from_slice(&b64(&crc[1..]));
    armor.extend_from_slice(b"\r\n-----END PGP MESSAGE-----\r\n");

    let mut m = b"From: <alice@example.org>\r\nTo: <bob@example.org>\r\nSubject: [...]\r\n\
Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@example.org>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
--b\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n"
        .to_vec();
    m.extend_from_slice(&armor);
    m.extend_from_slice(b"\r\n--b--\r\n");
    m
}

fn bench(c: &mut Criterion) {
    let rcpt = ["bob@example.org".to_string()];
    let env = Envelope {
        mail_from: "alice@example.org",
        rcpt_to: &rcpt,
    };
    let mut group = c.benchmark_group("policy_check");
    for (name, size) in [("4KiB", 4 << 10), ("10MiB", 10 << 20)] {
        let msg = encrypted_message(size);
        assert_eq!(
            check_outgoing(&env, &msg),
            Ok(()),
            "bench message must pass"
        );
        group.throughput(Throughput::Bytes(msg.len() as u64));
        if size > 1 << 20 {
            group.sample_size(20);
        }
        group.bench_with_input(BenchmarkId::new("outgoing", name), &msg, |b, m| {
            b.iter(|| check_outgoing(black_box(&env), black_box(m)))
        });
        group.bench_with_input(BenchmarkId::new("incoming", name), &msg, |b, m| {
            b.iter(|| check_incoming(black_box(&env), black_box(m), &|_| true))
        });
        group.bench_with_input(BenchmarkId::new("clean_submission", name), &msg, |b, m| {
            b.iter(|| clean_submission_headers(black_box(m)))
        });
    }
    // Hostile shape: many sibling parts that declare boundaries that never appear (quadratic
    // for a parser that rescans from each part); must stay linear.
    let mut hostile =
        b"From: <alice@example.org>\r\nContent-Type: multipart/encrypted; boundary=\"s\"\r\n\r\n"
            .to_vec();
    let mut i = 0u32;
    while hostile.len() < 10 << 20 {
        hostile.extend_from_slice(
            format!("--s\r\nContent-Type: multipart/mixed; boundary=\"missing{i}\"\r\n\r\nx\r\n")
                .as_bytes(),
        );
        i += 1;
    }
    hostile.extend_from_slice(b"--s--\r\n");
    group.throughput(Throughput::Bytes(hostile.len() as u64));
    group.bench_with_input(
        BenchmarkId::new("outgoing_hostile", "10MiB"),
        &hostile,
        |b, m| b.iter(|| check_outgoing(black_box(&env), black_box(m))),
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
