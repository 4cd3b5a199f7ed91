//! ASCII armor and OpenPGP packet-sequence check for the body of the `application/octet-stream`
//! part of a `multipart/encrypted` message.
//!
//! One pass over the armor text (base64 decoded by hand, line by line, with the optional `=XXXX`
//! CRC24 line parsed and verified), then one pass over the packet headers. It never decrypts,
//! never allocates more than the decoded size and never panics: every index is checked.

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

const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END: &[u8] = b"-----END PGP MESSAGE-----";

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

/// Check an armored OpenPGP message: armor well-formed, optional CRC correct, packets ESK*
/// SEIPD. `outgoing` refuses a `Version:` armor header; incoming tolerates one such line.
pub fn check_armored(body: &[u8], outgoing: bool) -> Result<(), ArmorError> {
    let data = decode_armor(body, outgoing)?;
    check_packets(&data)?;
    Ok(())
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
