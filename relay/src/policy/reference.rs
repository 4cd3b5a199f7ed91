//! The gate's previous implementation, kept as a test oracle: a straightforward line-by-line
//! armor decoder (streaming base64, bytewise CRC24 table). The fast code in [`super::armor`]
//! must give the same result (data or error) on every input; the property tests below compare
//! them.

use super::armor::ArmorError;

const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END: &[u8] = b"-----END PGP MESSAGE-----";

/// Base64 alphabet lookup: value 0..63, 64 for `=`, 255 for anything else.
const B64: [u8; 256] = {
    let mut t = [255u8; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t[b'=' as usize] = 64;
    t
};

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

/// `=XXXX`: exactly four base64 characters (no padding) encoding the 24-bit CRC.
fn parse_crc_line(line: &[u8]) -> Result<u32, ArmorError> {
    let [b'=', a, b, c, d] = *line else {
        return Err(ArmorError::BadCrcLine);
    };
    let mut v: u32 = 0;
    for ch in [a, b, c, d] {
        let x = B64[usize::from(ch)];
        if x >= 64 {
            return Err(ArmorError::BadCrcLine);
        }
        v = (v << 6) | u32::from(x);
    }
    Ok(v)
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
}
