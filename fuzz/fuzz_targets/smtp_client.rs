//! Fuzz the outbound SMTP client (`outbound::smtp_client::Client`) with arbitrary server bytes,
//! driven as `delivery::smtp` drives it: write what it outputs, read (at most 16 KiB at a time)
//! when it asks, run the "handshake" at `StartTls`, send messages while it is `Ready`, then QUIT;
//! the end of the server bytes is a close.
//!
//! Input: `[flags, body_len, seed_hi, seed_lo, stream..]`. `flags`: bits 0-3 recipients - 1,
//! bit 4 a bounce (`MAIL FROM:<>`), bit 5 a non-ASCII recipient, bits 6-7 messages - 1 on the
//! connection. The body is `body_len * 1031` bytes cycled from the stream's start and a pattern
//! of dots, bare CR and bare LF. In the stream, `0xff hi lo` stands for `hi*256+lo` bytes of
//! `x`, so the reply caps are reachable, and `0xfe` is a pause of the server: no read returns
//! bytes from both sides of it (the server answers STARTTLS, then waits for the handshake). The
//! seed cuts reads and writes at varying points.
//!
//! Checks: no panic; every step makes progress and the run ends `Closed` or `Failed` (never
//! waiting with nothing to do); `Done` comes once per message with one outcome per recipient;
//! commands are the ones the client may send, STARTTLS at most once; the body goes out only
//! after `DATA` and decodes (unstuffed) to the message with CRLF line ends; the heap the client
//! holds stays within a fixed bound plus a little per recipient, whatever the server sends.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use relay::outbound::smtp_client::{Client, Event, MAX_REPLY_LINE, MAX_REPLY_LINES};

#[path = "common/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// What the driver reads at most per call (`delivery::smtp::READ_BUF`).
const READ_BUF: usize = 16 * 1024;
/// Expanded server streams stop growing here.
const MAX_STREAM: usize = 1 << 20;
/// Heap the client may hold besides per-recipient state: its read buffer (a read plus a partial
/// line, doubled by `Vec` growth), a reply of `MAX_REPLY_LINES` lines of `MAX_REPLY_LINE` bytes
/// (3 bytes per invalid byte after lossy UTF-8 decoding, doubled by growth), the body chunk in
/// the output.
const FIXED_BOUND: usize =
    4 * (READ_BUF + MAX_REPLY_LINE) + MAX_REPLY_LINES * MAX_REPLY_LINE * 6 + 512 * 1024;
/// Per recipient: its address, its command and its outcome (a reply to a transaction is kept
/// once per recipient).
const PER_RECIPIENT: usize = 8 * 1024;

/// In the stream: the server waits for the client here (no read returns bytes on both sides),
/// e.g. after its `220` to STARTTLS, whose later bytes the client must drop.
const PAUSE: u8 = 0xfe;

const PATTERN: &[u8] =
    b"Subject: x\r\n\r\n.dot\r\n..two\nbare lf\rbare cr\r\n\xc3\xa4 8bit\r\n.\r\nend";

fn expand(stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stream.len());
    let mut i = 0;
    while i < stream.len() && out.len() < MAX_STREAM {
        if stream[i] == 0xff && i + 2 < stream.len() {
            let n = usize::from(u16::from_be_bytes([stream[i + 1], stream[i + 2]]));
            let n = n.min(MAX_STREAM - out.len());
            out.resize(out.len() + n, b'x');
            i += 3;
        } else {
            out.push(stream[i]);
            i += 1;
        }
    }
    out
}

/// The message as it must arrive: CRLF line ends (bare CR and bare LF become CRLF), ending in
/// CRLF unless empty.
fn normalize(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() * 2 + 2);
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' if body.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// DATA as sent, unstuffed and without the terminator.
fn decode_data(wire: &[u8]) -> Vec<u8> {
    let content = if wire == b".\r\n" {
        &[][..]
    } else {
        assert!(
            wire.ends_with(b"\r\n.\r\n"),
            "DATA does not end in CRLF.CRLF"
        );
        &wire[..wire.len() - 3]
    };
    let mut out = Vec::with_capacity(content.len());
    for line in content.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"), "a DATA line does not end in CRLF");
        let text = &line[..line.len() - 2];
        assert!(
            !text.contains(&b'\r') && !text.contains(&b'\n'),
            "bare CR or LF in DATA"
        );
        if text.first() == Some(&b'.') {
            assert!(text.len() >= 2, "an unstuffed '.' line inside DATA");
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        self.0 >> 8
    }

    /// A read or write size: mostly large, sometimes a few bytes.
    fn size(&mut self, max: usize) -> usize {
        let r = self.next() as usize;
        let n = if r % 4 == 0 {
            1 + r / 4 % 8
        } else {
            1 + r / 4 % max
        };
        n.min(max)
    }
}

/// A transaction under way.
struct Tx {
    recipients: usize,
    /// `DATA` was written.
    data_sent: bool,
    /// The body as written so far.
    wire: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    let [flags, body_len, seed_hi, seed_lo, stream @ ..] = data else {
        return;
    };
    let n_rcpt = usize::from(flags & 0x0f) + 1;
    let bounce = flags & 0x10 != 0;
    let utf8 = flags & 0x20 != 0;
    let mut messages = usize::from(flags >> 6) + 1;
    let recipients: Vec<String> = (0..n_rcpt)
        .map(|i| {
            if utf8 && i == 0 {
                format!("jörg{i}@example.net")
            } else {
                format!("r{i}@example.net")
            }
        })
        .collect();
    let sender = if bounce { "" } else { "alice@relay.test" };
    let pattern: Vec<u8> = stream.iter().take(64).chain(PATTERN).copied().collect();
    let body: Vec<u8> = pattern
        .iter()
        .cycle()
        .take(usize::from(*body_len) * 1031)
        .copied()
        .collect();
    let expected_body = normalize(&body);
    let body = Bytes::from(body);
    let server = expand(stream);
    let mut rng = Rng(u32::from(u16::from_be_bytes([*seed_hi, *seed_lo])) | 1 << 20);

    let mut tx: Option<Tx> = None;
    let mut wire = Vec::with_capacity(expected_body.len() * 2 + 1024);
    let mut client = Client::new("relay.test");
    let mut read = 0;
    let mut next_pause = 0;
    let mut written_total = 0usize;
    let mut starttls = 0;
    let mut ehlo = 0;
    let mut eof = false;
    let baseline = alloc::live();
    alloc::reset_peak();
    let bound = baseline + FIXED_BOUND + n_rcpt * PER_RECIPIENT;
    let mut steps = 0usize;
    loop {
        steps += 1;
        assert!(
            steps <= 4 * (server.len() + written_total) + 1000,
            "no progress: {steps} steps"
        );
        // Write what the client has, in pieces.
        while !client.output().is_empty() {
            let body_part = client.is_sending_body();
            let out = client.output();
            let n = rng.size(out.len());
            if body_part {
                let t = tx.as_mut().expect("body output outside a transaction");
                assert!(t.data_sent, "body output before DATA");
                if t.wire.is_empty() {
                    t.wire = std::mem::take(&mut wire);
                }
                t.wire.extend_from_slice(&out[..n]);
                client.consume_output(n);
            } else {
                // Whole command lines, each one the client may send.
                let out = out.to_vec();
                client.consume_output(out.len());
                for line in out.split_inclusive(|&b| b == b'\n') {
                    let text = line.strip_suffix(b"\r\n").expect("a command ends in CRLF");
                    assert!(!text.contains(&b'\r') && !text.contains(&b'\n'));
                    let text = std::str::from_utf8(text).expect("a command is UTF-8");
                    match text {
                        "EHLO relay.test" => {
                            ehlo += 1;
                            assert!(ehlo <= 2, "EHLO {ehlo} times");
                        }
                        "STARTTLS" => {
                            starttls += 1;
                            assert_eq!(starttls, 1, "STARTTLS twice");
                        }
                        "QUIT" => assert!(tx.is_none(), "QUIT within a transaction"),
                        "RSET" => {}
                        "DATA" => {
                            let t = tx.as_mut().expect("DATA outside a transaction");
                            assert!(!t.data_sent, "DATA twice");
                            t.data_sent = true;
                        }
                        _ if text.starts_with("MAIL FROM:<") || text.starts_with("RCPT TO:<") => {
                            assert!(tx.is_some(), "{text} outside a transaction");
                            assert!(starttls == 1, "{text} before STARTTLS");
                        }
                        _ => panic!("unexpected command {text:?}"),
                    }
                }
                written_total += out.len();
                drop(out);
                continue;
            }
            written_total += n;
        }
        match client.poll() {
            Event::Read(_) => {
                // A read ends at a pause (0xfe) of the server; the pause itself is no byte.
                while server.get(read) == Some(&PAUSE) {
                    read += 1;
                }
                if read < server.len() {
                    // The next pause, found once: searching from every read made a long
                    // stream quadratic (most of the target's time).
                    // (`next_pause == read` only before the first search: the loop above steps
                    // over pauses.)
                    if next_pause <= read {
                        next_pause = server[read..]
                            .iter()
                            .position(|&b| b == PAUSE)
                            .map_or(server.len(), |p| read + p);
                    }
                    let to_pause = next_pause - read;
                    let n = rng.size(READ_BUF).min(to_pause);
                    client.receive(&server[read..read + n]);
                    read += n;
                } else {
                    assert!(!eof, "asked to read again after the close");
                    eof = true;
                    client.receive_eof();
                }
                assert!(
                    alloc::peak() <= bound,
                    "the client holds {} bytes ({} recipients)",
                    alloc::peak() - baseline,
                    n_rcpt
                );
            }
            Event::Write(_) => {
                assert!(!client.output().is_empty(), "Write with nothing to write");
            }
            Event::StartTls => client.tls_established(),
            Event::Ready => {
                assert!(tx.is_none(), "Ready within a transaction");
                if messages > 0 {
                    messages -= 1;
                    tx = Some(Tx {
                        recipients: recipients.len(),
                        data_sent: false,
                        wire: Vec::new(),
                    });
                    client.send(sender, &recipients, body.clone());
                } else {
                    client.quit();
                }
            }
            Event::Done(outcomes) => {
                let t = tx.take().expect("Done without a transaction");
                assert_eq!(outcomes.len(), t.recipients, "one outcome per recipient");
                if !t.wire.is_empty() {
                    // A transaction whose body went out completely.
                    assert_eq!(
                        decode_data(&t.wire),
                        expected_body,
                        "body changed on the way"
                    );
                    wire = t.wire;
                    wire.clear();
                }
            }
            Event::Closed => {
                assert!(tx.is_none(), "Closed within a transaction");
                break;
            }
            Event::Failed(_) => break,
        }
    }
    // Once finished it stays finished.
    client.receive(b"250 ok\r\n");
    assert!(matches!(client.poll(), Event::Closed | Event::Failed(_)));
});
