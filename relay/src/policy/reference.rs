//! The gate's previous implementations, kept as test oracles: a straightforward line-by-line
//! armor decoder (streaming base64, bytewise CRC24 table) and a line-by-line multipart split.
//! The fast code in [`super::armor`] and [`super::mime`] must give the same result (data or
//! error) on every input; the property tests below compare them. What did not change (the
//! armor's markers, the base64 table, the CRC line) is used from `armor`.

use super::armor::{parse_crc_line, ArmorError, B64, BEGIN, END};
use super::mime::{delimiter, Delim};

/// Iterator over lines: each item is the line without its `\n` and without one trailing `\r`.
struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, rest) = match self.rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
            None => (self.rest, &self.rest[self.rest.len()..]),
        };
        self.rest = rest;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

/// Decode the armor to the binary OpenPGP data, verifying the CRC24 line when present.
pub fn decode_armor(body: &[u8], outgoing: bool) -> Result<Vec<u8>, ArmorError> {
    let mut lines = Lines { rest: body }.peekable();
    if lines.next() != Some(BEGIN) {
        return Err(ArmorError::NoBegin);
    }
    if let Some(line) = lines.peek() {
        if line.starts_with(b"Version: ") {
            if outgoing {
                return Err(ArmorError::VersionHeader);
            }
            lines.next();
        }
    }

    let mut decoder = Base64::with_capacity(body.len() / 4 * 3);
    let mut crc: Option<u32> = None;
    let mut ended = false;
    for line in lines {
        if ended {
            // Only blank lines may follow END.
            if !line.is_empty() {
                return Err(ArmorError::NoEnd);
            }
            continue;
        }
        if line == END {
            ended = true;
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if crc.is_some() {
            // Something other than END or a blank line after the CRC line.
            return Err(ArmorError::BadCrcLine);
        }
        if line[0] == b'=' {
            crc = Some(parse_crc_line(line)?);
            continue;
        }
        decoder.push_line(line)?;
    }
    if !ended {
        return Err(ArmorError::NoEnd);
    }
    let data = decoder.finish()?;
    if let Some(expected) = crc {
        if crc24(&data) != expected {
            return Err(ArmorError::CrcMismatch);
        }
    }
    Ok(data)
}

/// Streaming standard-base64 decoder across lines; padding is required and only at the end.
struct Base64 {
    out: Vec<u8>,
    acc: u32,
    n: u8,
    /// Number of `=` seen; after the first, only more `=` may follow.
    pad: u8,
}

impl Base64 {
    fn with_capacity(cap: usize) -> Self {
        Base64 {
            out: Vec::with_capacity(cap),
            acc: 0,
            n: 0,
            pad: 0,
        }
    }

    fn push_line(&mut self, line: &[u8]) -> Result<(), ArmorError> {
        for &ch in line {
            let v = B64[usize::from(ch)];
            if v < 64 {
                if self.pad > 0 {
                    return Err(ArmorError::BadBase64);
                }
                self.acc = (self.acc << 6) | u32::from(v);
                self.n += 1;
                if self.n == 4 {
                    let [_, a, b, c] = self.acc.to_be_bytes();
                    self.out.extend_from_slice(&[a, b, c]);
                    self.acc = 0;
                    self.n = 0;
                }
            } else if v == 64 {
                // `xx==` or `xxx=`: padding only in the last two positions of a quantum.
                self.pad += 1;
                if self.n + self.pad > 4 || self.n < 2 {
                    return Err(ArmorError::BadBase64);
                }
            } else {
                return Err(ArmorError::BadBase64);
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<u8>, ArmorError> {
        match (self.n, self.pad) {
            (0, 0) => {}
            (2, 2) => {
                let [_, _, _, a] = (self.acc >> 4).to_be_bytes();
                self.out.push(a);
            }
            (3, 1) => {
                let [_, _, a, b] = (self.acc >> 2).to_be_bytes();
                self.out.extend_from_slice(&[a, b]);
            }
            _ => return Err(ArmorError::BadBase64),
        }
        Ok(self.out)
    }
}

/// CRC24 of RFC 9580 §6.1 (init 0xB704CE, polynomial 0x1864CFB).
pub fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0x00B7_04CE;
    for &b in data {
        let idx = ((crc >> 16) as u8) ^ b;
        crc = (crc << 8) ^ CRC24_TABLE[usize::from(idx)];
    }
    crc & 0x00FF_FFFF
}

const CRC24_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u32) << 16;
        let mut k = 0;
        while k < 8 {
            crc <<= 1;
            if crc & 0x0100_0000 != 0 {
                crc ^= 0x0186_4CFB;
            }
            k += 1;
        }
        t[i] = crc & 0x00FF_FFFF;
        i += 1;
    }
    t
};

/// Split a multipart body at lines `--boundary` (RFC 2046 §5.1.1; trailing whitespace after the
/// delimiter allowed). The preamble and the epilogue are ignored. The line break before a
/// delimiter belongs to the delimiter. `None` without a close delimiter `--boundary--` or with
/// more than `max` children.
pub fn split_multipart<'a>(body: &'a [u8], boundary: &[u8], max: usize) -> Option<Vec<&'a [u8]>> {
    let mut parts = Vec::new();
    // Start of the current part's content, once the first delimiter was seen.
    let mut start: Option<usize> = None;
    let mut pos = 0;
    // End of the content before the current line (without the line break before it).
    let mut prev_content_end = 0;
    while pos <= body.len() {
        let line_end = match body[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => pos + i + 1,
            None => body.len(),
        };
        let line = &body[pos..line_end];
        if let Some(kind) = delimiter(line, boundary) {
            if let Some(s) = start {
                parts.push(body.get(s..prev_content_end.max(s))?);
                if parts.len() > max {
                    return None;
                }
            }
            if kind == Delim::Close {
                return Some(parts);
            }
            start = Some(line_end);
        }
        if line_end == body.len() {
            break;
        }
        // Content before the next line ends before this line's break.
        prev_content_end = if line.ends_with(b"\r\n") {
            line_end - 2
        } else {
            line_end - 1
        };
        pos = line_end;
    }
    None
}

/// Armor-like text: a valid armor of random data (line width, line endings, CRC line, blank
/// lines and `Version:` header chosen at random), then up to four edits with characters that
/// matter to the decoder (alphabet, `=`, line breaks, space, `-`, junk), or a cut.
fn armor_like() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let edit = (
        any::<prop::sample::Index>(),
        0u8..3,
        prop::sample::select(&b"Az09+/==\r\n \t-!\x80"[..]),
    );
    (
        prop::collection::vec(any::<u8>(), 0..200),
        prop::sample::select(&[1usize, 3, 4, 5, 63, 64, 76][..]),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(edit, 0..5),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(
            |(data, width, crlf, with_crc, blank, version, edits, cut)| {
                use base64::Engine as _;
                let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
                let enc = base64::engine::general_purpose::STANDARD.encode(&data);
                let mut a = BEGIN.to_vec();
                a.extend_from_slice(eol);
                if version {
                    a.extend_from_slice(b"Version: x");
                    a.extend_from_slice(eol);
                }
                if blank {
                    a.extend_from_slice(eol);
                }
                for chunk in enc.as_bytes().chunks(width) {
                    a.extend_from_slice(chunk);
                    a.extend_from_slice(eol);
                }
                if with_crc {
                    let c = crc24(&data).to_be_bytes();
                    let crc = base64::engine::general_purpose::STANDARD.encode(&c[1..]);
                    a.push(b'=');
                    a.extend_from_slice(crc.as_bytes());
                    a.extend_from_slice(eol);
                }
                a.extend_from_slice(END);
                a.extend_from_slice(eol);
                for (at, op, ch) in edits {
                    let i = at.index(a.len() + 1);
                    match op {
                        0 => a.insert(i, ch),
                        1 if i < a.len() => a[i] = ch,
                        _ if i < a.len() => {
                            a.remove(i);
                        }
                        _ => {}
                    }
                }
                if let Some(cut) = cut {
                    a.truncate(cut.index(a.len() + 1));
                }
                a
            },
        )
}

/// Multipart-like bodies for boundary `b`: random sequences of delimiter-ish tokens.
fn multipart_like() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let tokens: &[&[u8]] = &[
        b"--b", b"--b--", b"--bx", b"\r\n", b"\n", b"\r", b"x", b" ", b"\t", b"-", b"b", b"--",
    ];
    prop::collection::vec(prop::sample::select(tokens), 0..40).prop_map(|t| t.concat())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

    /// The fast armor decoder gives the reference's data or error on every input.
    #[test]
    fn armor_decode_matches_reference(text in armor_like()) {
        for outgoing in [true, false] {
            proptest::prop_assert_eq!(
                super::armor::decode_armor(&text, outgoing),
                decode_armor(&text, outgoing),
                "outgoing {}: {:?}", outgoing, String::from_utf8_lossy(&text)
            );
        }
    }

    /// The same on arbitrary bytes after a BEGIN line (mostly refused early).
    #[test]
    fn armor_decode_matches_reference_on_bytes(
        rest in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
    ) {
        let mut text = BEGIN.to_vec();
        text.extend_from_slice(b"\r\n");
        text.extend_from_slice(&rest);
        proptest::prop_assert_eq!(
            super::armor::decode_armor(&text, true),
            decode_armor(&text, true)
        );
    }

    /// The slice-by-16 CRC24 equals the bytewise one.
    #[test]
    fn crc24_matches_reference(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
        proptest::prop_assert_eq!(super::armor::crc24(&data), crc24(&data));
    }

    /// The memmem multipart split gives the reference's parts on every body.
    #[test]
    fn multipart_split_matches_reference(body in multipart_like(), max in 0usize..4) {
        proptest::prop_assert_eq!(
            super::mime::split_multipart(&body, b"b", max),
            split_multipart(&body, b"b", max),
            "{:?}", String::from_utf8_lossy(&body)
        );
    }
}
