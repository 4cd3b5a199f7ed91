//! SMTP parsing without I/O: command lines through `relay::smtp::command::parse_command`, a
//! pipelined MAIL/RCPT/DATA burst through the line receiver, and PGP/MIME messages of 1 KiB to
//! 64 KiB payload through the DATA receiver (dot-unstuffing, terminator search, bare-LF check),
//! fed in 16 KiB chunks as TLS records deliver them.
//!
//! `cargo bench -p relay-benches --bench smtp_parse`
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: benchmarks

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay::smtp::command::parse_command;
use relay::smtp::frame::{DataEnd, DataReceiver, LineEvent, LineReceiver};
use relay_tools::mail::{dot_stuff, Template, FIXTURES};

const COMMANDS: [&[u8]; 6] = [
    b"EHLO client.example.org",
    b"AUTH PLAIN AGFiYzEyMzQ1NkBbMTI3LjAuMC4xXQBwYXNzd29yZDEyMw==",
    b"MAIL FROM:<abc123456@[127.0.0.1]> SIZE=2400",
    b"RCPT TO:<xyz987654@[127.0.0.1]>",
    b"DATA",
    b"QUIT",
];

fn bench_commands(c: &mut Criterion) {
    let mut g = c.benchmark_group("smtp_command");
    g.throughput(Throughput::Elements(COMMANDS.len() as u64));
    g.bench_function("parse_6_commands", |b| {
        b.iter(|| {
            for line in COMMANDS {
                let _ = black_box(parse_command(black_box(line)));
            }
        })
    });
    for line in COMMANDS {
        assert!(
            parse_command(line).is_ok(),
            "{:?} should parse",
            String::from_utf8_lossy(line)
        );
    }
    let burst: Vec<u8> =
        b"MAIL FROM:<abc123456@[127.0.0.1]>\r\nRCPT TO:<xyz987654@[127.0.0.1]>\r\nDATA\r\n"
            .repeat(10);
    g.throughput(Throughput::Bytes(burst.len() as u64));
    g.bench_function("lines_pipelined_x10", |b| {
        b.iter(|| {
            let mut rx = LineReceiver::default();
            let mut at = 0;
            let mut lines = 0;
            while at < burst.len() {
                let (n, ev) = rx.next(&burst[at..]);
                if n == 0 {
                    break;
                }
                at += n;
                if let Some(LineEvent::Line(l)) = ev {
                    let _ = black_box(parse_command(l));
                    lines += 1;
                }
            }
            lines
        })
    });
    g.finish();
}

fn bench_data(c: &mut Criterion) {
    let mut g = c.benchmark_group("smtp_data");
    for (size, armor) in FIXTURES {
        let msg =
            Template::new(armor).render("abc123456@[127.0.0.1]", "xyz987654@[127.0.0.1]", "lg.0.1");
        let wire = dot_stuff(&msg);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        let receive = |wire: &[u8]| {
            let mut rx = DataReceiver::new(31_457_280);
            let mut end = None;
            for chunk in wire.chunks(16 * 1024) {
                end = rx.feed(chunk).1;
                if end.is_some() {
                    break;
                }
            }
            (end, rx.into_body().len())
        };
        assert_eq!(receive(&wire), (Some(DataEnd::Complete), msg.len()));
        g.bench_with_input(BenchmarkId::new("receive", size), &wire, |b, wire| {
            b.iter(|| receive(wire))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_commands, bench_data);
criterion_main!(benches);
