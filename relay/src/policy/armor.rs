//! ASCII armor and OpenPGP packet-sequence check for the body of the `application/octet-stream`
//! part of a `multipart/encrypted` message.
//!
//! One pass over the armor lines (the base64 text gathered, the optional `=XXXX` CRC24 line
//! parsed), one in-place base64 decode (base64-simd), the CRC24 (the `crc` crate's slice-by-16
//! tables), then one pass over the packet headers. It never decrypts, allocates one buffer of
//! the armor's size, and never panics: every index is checked.

/// Why an armored payload was refused (for logs and tests; the SMTP reply is always 523).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArmorError {
    /// The body does not start with `-----BEGIN PGP MESSAGE-----` on its own line.
    NoBegin,
    /// The body does not end with `-----END PGP MESSAGE-----` on its own line.
    NoEnd,
    /// A `Version:` armor header on an outgoing message.
    VersionHeader,
    /// A character outside the base64 alphabet (armor headers other than one tolerated
    /// `Version:` end up here), or padding in the wrong place.
    BadBase64,
    /// The CRC24 line is malformed or not the last line before END.
    BadCrcLine,
    /// The CRC24 line does not match the decoded data.
    CrcMismatch,
    /// The OpenPGP packet sequence is not ESK* SEIPD.
    Packets(PacketError),
}

/// Why the decoded OpenPGP data was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    /// No data, or the ESK packets are not followed by a SEIPD packet.
    NoSeipd,
    /// A header octet without the high bit set.
    BadHeader,
    /// A header or a body that runs past the end of the data.
    Truncated,
    /// A packet tag other than PKESK (1), SKESK (3) or a final SEIPD (18).
    UnexpectedTag(u8),
    /// Partial body lengths on a packet that must have a fixed length, or an old-format
    /// indeterminate length on an ESK packet.
    BadLength,
    /// SEIPD with a version other than 1 or 2 (or an empty body).
    SeipdVersion,
    /// Bytes after the SEIPD packet.
    TrailingData,
}

impl From<PacketError> for ArmorError {
    fn from(e: PacketError) -> Self {
        ArmorError::Packets(e)
    }
}

pub(super) const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
pub(super) const END: &[u8] = b"-----END PGP MESSAGE-----";

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
        let (line, rest) = match memchr::memchr(b'\n', self.rest) {
            Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
            None => (self.rest, &self.rest[self.rest.len()..]),
        };
        self.rest = rest;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

/// Check an armored OpenPGP message: armor well-formed, optional CRC correct, packets ESK*
/// SEIPD. `outgoing` refuses a `Version:` armor header; incoming tolerates one such line.
pub fn check_armored(body: &[u8], outgoing: bool) -> Result<(), ArmorError> {
    let data = decode_armor(body, outgoing)?;
    check_packets(&data)?;
    Ok(())
}

/// Decode the armor to the binary OpenPGP data, verifying the CRC24 line when present.
///
/// The base64 lines are copied, without their line breaks, into one buffer that is then decoded
/// in place: base64 quanta may span lines, and the decoder never cared where a line broke, so
/// the concatenation is checked exactly as the lines were. One allocation (the returned data).
/// When the framing is wrong, a base64 error in the lines before the wrong one is reported
/// first, as a line-by-line decoder would.
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

    let mut text = Vec::with_capacity(body.len());
    let mut crc: Option<u32> = None;
    let mut ended = false;
    for line in lines {
        if ended {
            // Only blank lines may follow END.
            if !line.is_empty() {
                return Err(framing_error(&text, ArmorError::NoEnd));
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
            return Err(framing_error(&text, ArmorError::BadCrcLine));
        }
        if line[0] == b'=' {
            crc = Some(parse_crc_line(line).map_err(|e| framing_error(&text, e))?);
            continue;
        }
        text.extend_from_slice(line);
    }
    if !ended {
        return Err(framing_error(&text, ArmorError::NoEnd));
    }
    decode_base64_in_place(&mut text).map_err(|_| ArmorError::BadBase64)?;
    if let Some(expected) = crc {
        if crc24(&text) != expected {
            return Err(ArmorError::CrcMismatch);
        }
    }
    Ok(text)
}

/// The error for a framing problem found after the base64 `text` so far: a bad character in
/// that text comes first in the input, so it wins.
fn framing_error(text: &[u8], framing: ArmorError) -> ArmorError {
    match decode_base64_in_place(&mut text.to_vec()) {
        Err(Base64Error::Invalid) => ArmorError::BadBase64,
        Ok(()) | Err(Base64Error::Incomplete) => framing,
    }
}

/// `=XXXX`: exactly four base64 characters (no padding) encoding the 24-bit CRC.
pub(super) fn parse_crc_line(line: &[u8]) -> Result<u32, ArmorError> {
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

/// Base64 alphabet lookup: value 0..63, 64 for `=`, 255 for anything else.
pub(super) const B64: [u8; 256] = {
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

/// Why a base64 text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base64Error {
    /// A character outside the alphabet, a character after padding, or padding where a
    /// quantum cannot end: wrong whatever follows.
    Invalid,
    /// The text ends inside a quantum (missing characters or padding).
    Incomplete,
}

/// Decode standard base64 (RFC 4648 §4) in place, leaving the decoded bytes in `buf`. Padding
/// is required and only at the end (`xx==`, `xxx=`); the unused bits of the last quantum are
/// not checked, as before. The whole quanta go to base64-simd (SIMD, runtime-detected); the
/// last partial quantum and its padding are checked here.
fn decode_base64_in_place(buf: &mut Vec<u8>) -> Result<(), Base64Error> {
    let pad = buf.iter().rev().take_while(|&&b| b == b'=').count();
    let chars = buf.len() - pad;
    let whole = chars / 4 * 4;
    let tail = &buf[whole..chars];
    let mut acc: u32 = 0;
    for &ch in tail {
        let v = B64[usize::from(ch)];
        if v >= 64 {
            return Err(Base64Error::Invalid);
        }
        acc = (acc << 6) | u32::from(v);
    }
    let n = tail.len();
    if pad > 0 && (n < 2 || n + pad > 4) {
        return Err(Base64Error::Invalid);
    }
    // NO_PAD: a `=` inside the whole quanta is an invalid character, never padding there.
    let decoded = base64_simd::STANDARD_NO_PAD
        .decode_inplace(&mut buf[..whole])
        .map_err(|_| Base64Error::Invalid)?
        .len();
    buf.truncate(decoded);
    match (n, pad) {
        (0, 0) => {}
        (2, 2) => {
            let [_, _, _, a] = (acc >> 4).to_be_bytes();
            buf.push(a);
        }
        (3, 1) => {
            let [_, _, a, b] = (acc >> 2).to_be_bytes();
            buf.extend_from_slice(&[a, b]);
        }
        _ => return Err(Base64Error::Incomplete),
    }
    Ok(())
}

/// CRC24 of RFC 9580 §6.1 (init 0xB704CE, polynomial 0x1864CFB), slice-by-16 tables.
pub fn crc24(data: &[u8]) -> u32 {
    CRC24.checksum(data)
}

static CRC24: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_24_OPENPGP);

const TAG_PKESK: u8 = 1;
const TAG_SKESK: u8 = 3;
const TAG_SEIPD: u8 = 18;

/// One body length field (RFC 9580 §4.2.1).
enum Len {
    Fixed(usize),
    Partial(usize),
    /// Old-format indeterminate length: the packet runs to the end of the data.
    ToEnd,
}

/// Walk the packets: any number of PKESK/SKESK, then exactly one SEIPD (v1 or v2) ending at the
/// end of the data. Old and new header formats, partial body lengths on the SEIPD only.
pub fn check_packets(data: &[u8]) -> Result<(), PacketError> {
    let mut pos = 0usize;
    loop {
        let Some(&hdr) = data.get(pos) else {
            return Err(PacketError::NoSeipd);
        };
        pos += 1;
        if hdr & 0x80 == 0 {
            return Err(PacketError::BadHeader);
        }
        let new_format = hdr & 0x40 != 0;
        let tag = if new_format {
            hdr & 0x3f
        } else {
            (hdr >> 2) & 0x0f
        };
        let mut len = if new_format {
            new_len(data, &mut pos)?
        } else {
            old_len(data, &mut pos, hdr & 0x03)?
        };
        match tag {
            TAG_PKESK | TAG_SKESK => {
                let Len::Fixed(n) = len else {
                    return Err(PacketError::BadLength);
                };
                pos = skip(data, pos, n)?;
            }
            TAG_SEIPD => {
                let mut version_checked = false;
                loop {
                    let n = match len {
                        Len::Fixed(n) | Len::Partial(n) => n,
                        Len::ToEnd => data.len() - pos.min(data.len()),
                    };
                    if !version_checked && n > 0 {
                        match data.get(pos) {
                            Some(1 | 2) => version_checked = true,
                            Some(_) => return Err(PacketError::SeipdVersion),
                            None => return Err(PacketError::Truncated),
                        }
                    }
                    pos = skip(data, pos, n)?;
                    match len {
                        Len::Partial(_) => len = new_len(data, &mut pos)?,
                        Len::Fixed(_) | Len::ToEnd => break,
                    }
                }
                if !version_checked {
                    return Err(PacketError::SeipdVersion);
                }
                if pos != data.len() {
                    return Err(PacketError::TrailingData);
                }
                return Ok(());
            }
            other => return Err(PacketError::UnexpectedTag(other)),
        }
    }
}

fn skip(data: &[u8], pos: usize, n: usize) -> Result<usize, PacketError> {
    match pos.checked_add(n) {
        Some(end) if end <= data.len() => Ok(end),
        _ => Err(PacketError::Truncated),
    }
}

fn byte(data: &[u8], pos: &mut usize) -> Result<usize, PacketError> {
    let b = *data.get(*pos).ok_or(PacketError::Truncated)?;
    *pos += 1;
    Ok(usize::from(b))
}

fn be(data: &[u8], pos: &mut usize, n: usize) -> Result<usize, PacketError> {
    let mut v = 0usize;
    for _ in 0..n {
        v = (v << 8) | byte(data, pos)?;
    }
    Ok(v)
}

fn new_len(data: &[u8], pos: &mut usize) -> Result<Len, PacketError> {
    let o1 = byte(data, pos)?;
    Ok(match o1 {
        0..=191 => Len::Fixed(o1),
        192..=223 => Len::Fixed(((o1 - 192) << 8) + byte(data, pos)? + 192),
        224..=254 => Len::Partial(1usize << (o1 & 0x1f)),
        _ => Len::Fixed(be(data, pos, 4)?),
    })
}

fn old_len(data: &[u8], pos: &mut usize, ltype: u8) -> Result<Len, PacketError> {
    Ok(match ltype {
        0 => Len::Fixed(be(data, pos, 1)?),
        1 => Len::Fixed(be(data, pos, 2)?),
        2 => Len::Fixed(be(data, pos, 4)?),
        _ => Len::ToEnd,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn b64(data: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    fn crc_line(data: &[u8]) -> String {
        let c = crc24(data).to_be_bytes();
        format!("={}", b64(&c[1..]))
    }

    fn armor(data: &[u8], crc: bool, header: &str) -> Vec<u8> {
        let enc = b64(data);
        let mut s = String::from("-----BEGIN PGP MESSAGE-----\r\n");
        s.push_str(header);
        s.push_str("\r\n");
        for chunk in enc.as_bytes().chunks(64) {
            s.push_str(std::str::from_utf8(chunk).unwrap());
            s.push_str("\r\n");
        }
        if crc {
            s.push_str(&crc_line(data));
            s.push_str("\r\n");
        }
        s.push_str("-----END PGP MESSAGE-----\r\n");
        s.into_bytes()
    }

    /// PKESK (new format, 3 bytes) + SEIPD v1 (new format, 4 bytes).
    const GOOD: &[u8] = &[0xc1, 3, 3, 0, 0, 0xd2, 4, 1, 9, 9, 9];

    #[test]
    fn crc24_known_value() {
        // CRC24 of the empty input is the init value; of "123456789" the check value.
        assert_eq!(crc24(b""), 0xB704CE);
        assert_eq!(crc24(b"123456789"), 0x21CF02);
        // Across the 16-byte blocks of the sliced tables (values from a bitwise CRC24).
        assert_eq!(crc24(b"a"), 0xF25713);
        assert_eq!(crc24(&(0..=255).collect::<Vec<u8>>()), 0x5BBD34);
        assert_eq!(crc24(&[0xff; 1000]), 0x14CD91);
    }

    fn decode(text: &[u8]) -> Result<Vec<u8>, Base64Error> {
        let mut buf = text.to_vec();
        decode_base64_in_place(&mut buf).map(|()| buf)
    }

    #[test]
    fn base64_padding_rules() {
        assert_eq!(decode(b""), Ok(vec![]));
        assert_eq!(decode(b"QQ=="), Ok(b"A".to_vec()));
        assert_eq!(decode(b"QUI="), Ok(b"AB".to_vec()));
        assert_eq!(decode(b"QUJD"), Ok(b"ABC".to_vec()));
        // Unused bits of the last quantum are not checked (`R` leaves 0001 over).
        assert_eq!(decode(b"QR=="), Ok(b"A".to_vec()));
        // Missing padding or characters: the text ends inside a quantum.
        for t in [&b"Q"[..], b"QQ", b"QUI", b"QQ=", b"QUJDQ"] {
            assert_eq!(decode(t), Err(Base64Error::Incomplete), "{t:?}");
        }
        // Padding where no quantum can end, too much of it, or data after it.
        for t in [
            &b"="[..],
            b"Q===",
            b"QQ===",
            b"QUI==",
            b"QQ==QUJD",
            b"QUI=QQ==",
            b"QUJD=QUJD",
        ] {
            assert_eq!(decode(t), Err(Base64Error::Invalid), "{t:?}");
        }
    }

    #[test]
    fn base64_invalid_characters_anywhere() {
        // Long enough for the SIMD loop (32 characters a step) and the scalar rest.
        let data: Vec<u8> = (0..=255).collect();
        let enc = b64(&data).into_bytes();
        assert_eq!(decode(&enc), Ok(data));
        for i in 0..enc.len() {
            for bad in [b' ', b'\r', b'\n', b'-', b'.', 0x80, 0] {
                let mut t = enc.clone();
                t[i] = bad;
                assert_eq!(decode(&t), Err(Base64Error::Invalid), "{bad} at {i}");
            }
        }
    }

    /// Armor text with these base64 lines between BEGIN and END.
    fn armor_lines(lines: &[&str]) -> Vec<u8> {
        let mut s = String::from("-----BEGIN PGP MESSAGE-----\r\n\r\n");
        for l in lines {
            s.push_str(l);
            s.push_str("\r\n");
        }
        s.push_str("-----END PGP MESSAGE-----\r\n");
        s.into_bytes()
    }

    #[test]
    fn quanta_and_padding_may_span_lines() {
        assert_eq!(
            decode_armor(&armor_lines(&["QU", "I="]), true),
            Ok(b"AB".to_vec())
        );
        // A line starting with `=` is the CRC line, so padding cannot start a line.
        assert_eq!(
            decode_armor(&armor_lines(&["QQ=", "="]), true),
            Err(ArmorError::BadCrcLine)
        );
        assert_eq!(
            decode_armor(&armor_lines(&["Q", "", "UJD"]), true),
            Ok(b"ABC".to_vec())
        );
        // Whitespace inside a line is not a line break.
        assert_eq!(
            decode_armor(&armor_lines(&["QU JD"]), true),
            Err(ArmorError::BadBase64)
        );
        assert_eq!(
            decode_armor(&armor_lines(&["QU\rJD"]), true),
            Err(ArmorError::BadBase64)
        );
        // Padding in the middle of the text.
        assert_eq!(
            decode_armor(&armor_lines(&["QQ==", "QUJD"]), true),
            Err(ArmorError::BadBase64)
        );
    }

    #[test]
    fn earlier_base64_error_wins_over_later_framing() {
        // A bad character before a bad CRC line: the character is reported.
        let bad_char = armor_lines(&["QU!D", "=abc"]);
        assert_eq!(decode_armor(&bad_char, true), Err(ArmorError::BadBase64));
        // Valid (even if incomplete) text before it: the CRC line is.
        let bad_crc = armor_lines(&["QUJ", "=abc"]);
        assert_eq!(decode_armor(&bad_crc, true), Err(ArmorError::BadCrcLine));
        // Text after the CRC line.
        let after_crc = armor_lines(&["QUJD", "=AAAA", "QUJD"]);
        assert_eq!(decode_armor(&after_crc, true), Err(ArmorError::BadCrcLine));
        // Missing END after incomplete text: NoEnd; after a bad character: BadBase64.
        assert_eq!(
            decode_armor(b"-----BEGIN PGP MESSAGE-----\r\nQUJ\r\n", true),
            Err(ArmorError::NoEnd)
        );
        assert_eq!(
            decode_armor(b"-----BEGIN PGP MESSAGE-----\r\nQU*D\r\n", true),
            Err(ArmorError::BadBase64)
        );
        // Text after END.
        let mut after_end = armor_lines(&["QUJD"]);
        after_end.extend_from_slice(b"\r\nQUJD\r\n");
        assert_eq!(decode_armor(&after_end, true), Err(ArmorError::NoEnd));
    }

    #[test]
    fn large_armor_round_trips() {
        let mut x: u32 = 0x1234_5678;
        let data: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for crc in [true, false] {
            let a = armor(&data, crc, "");
            assert_eq!(decode_armor(&a, true).as_deref(), Ok(&data[..]));
        }
        // One flipped data bit is caught by the CRC.
        let mut a = armor(&data, true, "");
        let i = a.len() / 2;
        a[i] = if a[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(decode_armor(&a, true), Err(ArmorError::CrcMismatch));
    }

    #[test]
    fn armor_with_and_without_crc_passes() {
        // 11 bytes: base64 needs one `=` of padding, so cutting padding would break this.
        assert!(b64(GOOD).ends_with('='));
        assert_eq!(check_armored(&armor(GOOD, true, ""), true), Ok(()));
        assert_eq!(check_armored(&armor(GOOD, false, ""), true), Ok(()));
    }

    #[test]
    fn bad_crc_refused() {
        let mut a = armor(GOOD, false, "");
        let bad = format!("={}\r\n", b64(&[0x12, 0x34, 0x56]));
        let at = a.len() - b"-----END PGP MESSAGE-----\r\n".len();
        a.splice(at..at, bad.bytes());
        assert_eq!(check_armored(&a, true), Err(ArmorError::CrcMismatch));
    }

    #[test]
    fn version_header_by_direction() {
        let a = armor(GOOD, true, "Version: GnuPG v2\r\n");
        assert_eq!(check_armored(&a, true), Err(ArmorError::VersionHeader));
        assert_eq!(check_armored(&a, false), Ok(()));
        let c = armor(GOOD, true, "Comment: hi\r\n");
        assert_eq!(check_armored(&c, false), Err(ArmorError::BadBase64));
    }

    #[test]
    fn missing_padding_refused() {
        let enc = b64(GOOD);
        let text = format!(
            "-----BEGIN PGP MESSAGE-----\r\n\r\n{}\r\n-----END PGP MESSAGE-----\r\n",
            enc.trim_end_matches('=')
        );
        assert_eq!(
            check_armored(text.as_bytes(), true),
            Err(ArmorError::BadBase64)
        );
    }

    #[test]
    fn packet_sequences() {
        // Old-format PKESK (tag 1, two-octet length) then SEIPD v2.
        assert_eq!(check_packets(&[0x85, 0, 2, 7, 7, 0xd2, 2, 2, 0]), Ok(()));
        // SKESK old format one-octet length.
        assert_eq!(check_packets(&[0x8c, 1, 4, 0xd2, 1, 1]), Ok(()));
        // SEIPD alone.
        assert_eq!(check_packets(&[0xd2, 1, 1]), Ok(()));
        // Partial lengths: 2 bytes, 1 byte, then final 1.
        assert_eq!(check_packets(&[0xd2, 0xe1, 1, 0, 0xe0, 0, 1, 0]), Ok(()));
        // Five-octet length.
        assert_eq!(check_packets(&[0xd2, 0xff, 0, 0, 0, 2, 1, 0]), Ok(()));
        // Two-octet new-format length 192.
        let mut two = vec![0xd2, 0xc0, 0x00, 1];
        two.extend(std::iter::repeat_n(0u8, 191));
        assert_eq!(check_packets(&two), Ok(()));

        assert_eq!(check_packets(&[]), Err(PacketError::NoSeipd));
        assert_eq!(check_packets(&[0xc1, 1, 0]), Err(PacketError::NoSeipd));
        assert_eq!(check_packets(&[0x12]), Err(PacketError::BadHeader));
        assert_eq!(
            check_packets(&[0xcb, 1, 0]),
            Err(PacketError::UnexpectedTag(11))
        );
        assert_eq!(
            check_packets(&[0xd4, 1, 1]),
            Err(PacketError::UnexpectedTag(20))
        );
        assert_eq!(
            check_packets(&[0xd2, 1, 1, 0]),
            Err(PacketError::TrailingData)
        );
        assert_eq!(check_packets(&[0xd2, 5, 1]), Err(PacketError::Truncated));
        assert_eq!(check_packets(&[0xd2, 1, 3]), Err(PacketError::SeipdVersion));
        assert_eq!(check_packets(&[0xd2, 0]), Err(PacketError::SeipdVersion));
        assert_eq!(
            check_packets(&[0xc1, 0xe0, 0, 0xd2, 1, 1]),
            Err(PacketError::BadLength)
        );
        assert_eq!(
            check_packets(&[0xd2, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(PacketError::Truncated)
        );
        // Old-format indeterminate PKESK swallows everything: refused.
        assert_eq!(
            check_packets(&[0x87, 0xd2, 1, 1]),
            Err(PacketError::BadLength)
        );
    }

    #[test]
    fn armor_framing() {
        assert_eq!(check_armored(b"", true), Err(ArmorError::NoBegin));
        assert_eq!(
            check_armored(b"-----BEGIN PGP MESSAGE-----", true),
            Err(ArmorError::NoEnd)
        );
        let mut a = armor(GOOD, true, "");
        a.extend_from_slice(b"trailing\r\n");
        assert_eq!(check_armored(&a, true), Err(ArmorError::NoEnd));
        let a = armor(GOOD, true, "");
        // Every cut refuses, except dropping only the final line break.
        assert_eq!(check_armored(&a[..a.len() - 2], true), Ok(()));
        for cut in 1..a.len() - 2 {
            assert!(check_armored(&a[..cut], true).is_err(), "cut at {cut}");
        }
        assert_eq!(
            check_armored(&a[..a.len() - 27], true),
            Err(ArmorError::NoEnd)
        );
        // LF-only line endings are accepted.
        let lf: Vec<u8> = a.iter().copied().filter(|&b| b != b'\r').collect();
        assert_eq!(check_armored(&lf, true), Ok(()));
    }
}
