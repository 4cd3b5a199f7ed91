//! IMAP parsing without I/O: the commands of a Delta Chat receive cycle (IDLE, DONE, UID FETCH,
//! UID STORE, EXPUNGE) and an APPEND with a literal, through `relay::imap::frame::Framer` and
//! `relay::imap::command::parse`.
//!
//! `cargo bench -p relay-benches --bench imap_parse`
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: benchmarks

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use relay::imap::command::parse;
use relay::imap::frame::{Frame, Framer};

const CYCLE: &[u8] =
    b"a1 IDLE\r\nDONE\r\na2 UID FETCH 17:* (UID FLAGS RFC822.SIZE BODY.PEEK[])\r\n\
a3 UID STORE 17:19 +FLAGS.SILENT (\\Deleted)\r\na4 EXPUNGE\r\n\
a5 GETMETADATA \"\" (/private/devicetoken)\r\na6 SELECT INBOX (CONDSTORE)\r\n\
a7 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 42)\r\na8 NOOP\r\n";

fn bench_commands(c: &mut Criterion) {
    let mut g = c.benchmark_group("imap_command");
    let commands: Vec<&[u8]> = CYCLE
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| !l.starts_with(b"DONE"))
        .collect();
    for cmd in &commands {
        assert!(
            parse(cmd).is_ok(),
            "{:?} should parse",
            String::from_utf8_lossy(cmd)
        );
    }
    g.throughput(Throughput::Elements(commands.len() as u64));
    g.bench_function("parse_cycle", |b| {
        b.iter(|| {
            for cmd in &commands {
                let _ = black_box(parse(black_box(cmd)));
            }
        })
    });
    g.throughput(Throughput::Bytes(CYCLE.len() as u64));
    let frame_and_parse = || {
        let mut framer = Framer::new(31_457_280);
        framer.push(CYCLE);
        let mut n = 0;
        // After IDLE, the next line is raw (DONE).
        let mut raw = false;
        while let Some(frame) = framer.next(raw) {
            raw = false;
            match frame {
                Frame::Command(bytes) => {
                    if let Ok((_, cmd)) = parse(&bytes) {
                        raw = cmd.name() == "Idle";
                    }
                    n += 1;
                }
                other => {
                    black_box(other);
                }
            }
        }
        n
    };
    assert_eq!(
        frame_and_parse(),
        commands.len(),
        "every command of the cycle should frame"
    );
    g.bench_function("frame_and_parse_cycle", |b| b.iter(frame_and_parse));
    let mut append = b"a9 APPEND INBOX (\\Seen) {16384+}\r\n".to_vec();
    append.extend(std::iter::repeat_n(b'z', 16384));
    append.extend_from_slice(b"\r\n");
    g.throughput(Throughput::Bytes(append.len() as u64));
    let append_once = || {
        let mut framer = Framer::new(31_457_280);
        for chunk in append.chunks(16 * 1024) {
            framer.push(chunk);
        }
        match framer.next(false) {
            Some(Frame::Command(bytes)) => parse(&bytes).is_ok(),
            _ => false,
        }
    };
    assert!(append_once(), "the APPEND should frame and parse");
    g.bench_function("frame_and_parse_append_16k", |b| b.iter(append_once));
    g.finish();
}

criterion_group!(benches, bench_commands);
criterion_main!(benches);
