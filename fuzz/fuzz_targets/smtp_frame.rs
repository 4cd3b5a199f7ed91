//! Fuzz the SMTP framer (command lines and DATA) the way the session drives it: bytes arrive in
//! chunks, unconsumed bytes stay buffered, a `DATA` line switches to the DATA receiver.
//!
//! Input: `[limit, seed_hi, seed_lo, stream..]`. The stream is framed once whole and once cut at
//! points derived from the seed; both must give the same events. Every consumed count stays
//! within what was given, lines respect the cap, and a received body re-stuffed and fed again
//! comes back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::smtp::frame::{DataEnd, DataReceiver, LineEvent, LineReceiver, MAX_LINE_LEN};

#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Line(Vec<u8>),
    TooLong,
    BareLf,
    Data { body: Vec<u8>, too_large: bool },
    DataBareLf,
}

struct Model {
    limit: u64,
    lines: LineReceiver,
    data: Option<DataReceiver>,
    buf: Vec<u8>,
    events: Vec<Ev>,
}

impl Model {
    fn new(limit: u64) -> Self {
        Model {
            limit,
            lines: LineReceiver::default(),
            data: None,
            buf: Vec::new(),
            events: Vec::new(),
        }
    }

    fn receive(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        let mut pos = 0;
        while pos < self.buf.len() {
            let rest = &self.buf[pos..];
            if let Some(rx) = &mut self.data {
                let (n, end) = rx.feed(rest);
                assert!(
                    n >= 1 && n <= rest.len(),
                    "DATA consumed {n} of {}",
                    rest.len()
                );
                pos += n;
                match end {
                    Some(DataEnd::Complete) => {
                        let rx = self.data.take().expect("in DATA");
                        let too_large = rx.is_too_large();
                        let body = rx.into_body();
                        check_body(&body, too_large, self.limit);
                        self.events.push(Ev::Data { body, too_large });
                    }
                    Some(DataEnd::BareLf) => {
                        self.data = None;
                        self.events.push(Ev::DataBareLf);
                    }
                    None => assert_eq!(n, rest.len(), "DATA stopped early without an end"),
                }
                continue;
            }
            let (n, ev) = self.lines.next(rest);
            assert!(
                n <= rest.len(),
                "line receiver consumed {n} of {}",
                rest.len()
            );
            match ev {
                Some(LineEvent::Line(l)) => {
                    assert!(
                        l.len() + 2 <= MAX_LINE_LEN,
                        "line of {} bytes passed",
                        l.len()
                    );
                    assert_eq!(n, l.len() + 2);
                    assert_eq!(&rest[l.len()..n], b"\r\n");
                    assert!(!l.contains(&b'\n'));
                    if l.eq_ignore_ascii_case(b"DATA") {
                        self.data = Some(DataReceiver::new(self.limit));
                    }
                    self.events.push(Ev::Line(l.to_vec()));
                }
                Some(LineEvent::TooLong) => self.events.push(Ev::TooLong),
                Some(LineEvent::BareLf) => self.events.push(Ev::BareLf),
                None if n == 0 => break,
                None => {}
            }
            pos += n;
        }
        self.buf.drain(..pos);
    }
}

/// A received body: within the limit, no bare LF, ends with CRLF, and survives re-stuffing.
fn check_body(body: &[u8], too_large: bool, limit: u64) {
    if too_large {
        assert!(body.is_empty(), "an over-limit body was kept");
        return;
    }
    assert!(body.len() as u64 <= limit);
    assert!(body.is_empty() || body.ends_with(b"\r\n"));
    for (i, &b) in body.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && body[i - 1] == b'\r', "bare LF in body at {i}");
        }
    }
    let mut wire = Vec::with_capacity(body.len() + 8);
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
    }
    wire.extend_from_slice(b".\r\n");
    let mut rx = DataReceiver::new(limit);
    assert_eq!(rx.feed(&wire), (wire.len(), Some(DataEnd::Complete)));
    assert!(!rx.is_too_large());
    assert_eq!(rx.into_body(), body, "re-stuffed body changed");
}

/// Cut points: one from the seed, and with the seed's top bit small pseudo-random chunks.
fn chunks(stream: &[u8], seed: u16) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let split = usize::from(seed & 0x7fff) % (stream.len() + 1);
    let (a, b) = stream.split_at(split);
    out.push(a);
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
        let n = (x % 64 + 1) as usize;
        let (c, r) = rest.split_at(n.min(rest.len()));
        out.push(c);
        rest = r;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [sel, hi, lo, stream @ ..] = data else {
        return;
    };
    let limit = if *sel == 0xff {
        u64::MAX
    } else {
        u64::from(*sel) * 37
    };
    let mut whole = Model::new(limit);
    whole.receive(stream);
    let mut split = Model::new(limit);
    for c in chunks(stream, u16::from_be_bytes([*hi, *lo])) {
        split.receive(c);
    }
    assert_eq!(
        whole.events, split.events,
        "framing depends on how the input was cut"
    );
    assert_eq!(whole.buf, split.buf);
});
