//! Fuzz the IMAP framer (lines, literals, caps) the way the session drives it: push what
//! arrived, take frames until none.
//!
//! Input: `[append_cap, raw_mask, seed_hi, seed_lo, stream..]`. In the stream, `0xff hi lo`
//! stands for `hi*256+lo` bytes of `x`, so lines and literals can reach the caps with small
//! inputs. The stream is framed once whole and once cut at points derived from the seed; both must
//! give the same frames. Frames stay within the caps and never hold more than was pushed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::imap::frame::{Frame, Framer, Limits};

fn expand(stream: &[u8]) -> Vec<u8> {
    // Expanded streams stop growing here: past the per-command line cap, with room for a
    // literal.
    let limits = Limits::after_login(0);
    let max_expanded = limits.command_lines_cap + limits.line_cap;
    let mut out = Vec::with_capacity(stream.len());
    let mut i = 0;
    while i < stream.len() {
        if stream[i] == 0xff && i + 2 < stream.len() {
            let n = usize::from(u16::from_be_bytes([stream[i + 1], stream[i + 2]]));
            let n = n.min(max_expanded.saturating_sub(out.len()));
            out.resize(out.len() + n, b'x');
            i += 3;
        } else {
            out.push(stream[i]);
            i += 1;
        }
    }
    out
}

struct Model {
    framer: Framer,
    /// Bit `i % 8` set: the `i`th `next` call asks for a raw line.
    raw_mask: u8,
    calls: usize,
    frames: Vec<Frame>,
    pushed: usize,
    framed: usize,
}

impl Model {
    fn new(append_cap: u64, raw_mask: u8) -> Self {
        Model {
            framer: Framer::new(append_cap),
            raw_mask,
            calls: 0,
            frames: Vec::new(),
            pushed: 0,
            framed: 0,
        }
    }

    fn receive(&mut self, chunk: &[u8]) {
        self.framer.push(chunk);
        self.pushed += chunk.len();
        loop {
            let raw = self.raw_mask & (1 << (self.calls % 8)) != 0;
            let Some(frame) = self.framer.next(raw) else {
                break;
            };
            self.calls += 1;
            match &frame {
                Frame::Command(c) => {
                    assert!(c.ends_with(b"\r\n"), "command without CRLF");
                    let limits = self.framer.limits();
                    let cap = limits.command_lines_cap as u64
                        + limits.command_literals_cap.max(limits.message_cap);
                    assert!(c.len() as u64 <= cap, "command of {} bytes", c.len());
                    self.framed += c.len();
                }
                Frame::Line(l) => {
                    let cap = self.framer.limits().line_cap;
                    assert!(l.len() <= cap, "raw line of {} bytes", l.len());
                    self.framed += l.len() + 2;
                }
                Frame::TooBig { tag, .. }
                | Frame::LiteralNotAllowed { tag, .. }
                | Frame::LineTooLong { tag } => {
                    assert!(tag.len() <= 64);
                }
                Frame::Continue => {}
            }
            assert!(self.framed <= self.pushed, "framed more than was pushed");
            self.frames.push(frame);
        }
        assert!(self.framer.buffered() <= self.pushed);
    }
}

/// Cut points: one from the seed, and with the seed's top bit pseudo-random chunks.
fn chunks(stream: &[u8], seed: u16) -> Vec<&[u8]> {
    let split = usize::from(seed & 0x7fff) % (stream.len() + 1);
    let (a, b) = stream.split_at(split);
    let mut out = vec![a];
    if seed & 0x8000 == 0 {
        out.push(b);
        return out;
    }
    let mut rest = b;
    let mut x = u32::from(seed) | 1;
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (x % 512 + 1) as usize;
        let (c, r) = rest.split_at(n.min(rest.len()));
        out.push(c);
        rest = r;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [cap, raw_mask, hi, lo, stream @ ..] = data else {
        return;
    };
    let append_cap = u64::from(*cap) * 1024;
    let stream = expand(stream);
    let mut whole = Model::new(append_cap, *raw_mask);
    whole.receive(&stream);
    let mut split = Model::new(append_cap, *raw_mask);
    for c in chunks(&stream, u16::from_be_bytes([*hi, *lo])) {
        split.receive(c);
    }
    assert_eq!(
        whole.frames, split.frames,
        "framing depends on how the input was cut"
    );
    assert_eq!(whole.framer.in_command(), split.framer.in_command());
});
