//! IMAP response encoding: strings, flag lists, sequence sets. Everything the server writes goes
//! through these helpers so quoting is done in one place; they never fail and never panic.

use crate::store::flag_bits;

/// Append `s` as an IMAP string: quoted when safe, a literal otherwise.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    let quotable = s.len() < 1024
        && s.iter()
            .all(|&b| b != b'\r' && b != b'\n' && b != 0 && b < 0x80);
    if quotable {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, s);
    }
}

/// Append `s` as a literal `{n}\r\n...`.
pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
}

/// Append `s` as nstring (`NIL` when `None`).
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// Append a mailbox name: an atom when possible, else quoted.
pub fn astring(out: &mut Vec<u8>, s: &str) {
    let atom = !s.is_empty()
        && s.bytes()
            .all(|b| b > 0x20 && b < 0x7f && !b"(){ %*\"\\]".contains(&b));
    if atom {
        out.extend_from_slice(s.as_bytes());
    } else {
        string(out, s.as_bytes());
    }
}

/// The flags of a message as an IMAP list `(\Seen $kw)`.
pub fn flags(out: &mut Vec<u8>, bits: u64, keywords: &[String]) {
    flags_recent(out, bits, false, keywords);
}

/// The flags of a message as an IMAP list, with `\Recent` if `recent` (`(\Seen \Recent $kw)`).
pub fn flags_recent(out: &mut Vec<u8>, bits: u64, recent: bool, keywords: &[String]) {
    out.push(b'(');
    let mut first = true;
    let mut put = |out: &mut Vec<u8>, s: &str| {
        if !first {
            out.push(b' ');
        }
        first = false;
        out.extend_from_slice(s.as_bytes());
    };
    for (bit, name) in [
        (flag_bits::SEEN, "\\Seen"),
        (flag_bits::ANSWERED, "\\Answered"),
        (flag_bits::FLAGGED, "\\Flagged"),
        (flag_bits::DELETED, "\\Deleted"),
        (flag_bits::DRAFT, "\\Draft"),
    ] {
        if bits & bit != 0 {
            put(out, name);
        }
    }
    if recent {
        put(out, "\\Recent");
    }
    for (i, k) in keywords.iter().enumerate().take(flag_bits::MAX_KEYWORDS) {
        if bits & (1u64 << (flag_bits::KEYWORD_SHIFT + i as u32)) != 0 {
            put(out, k);
        }
    }
    out.push(b')');
}

/// Compress sorted numbers into a sequence set `1:3,7`.
pub fn seq_set(nums: &[u32]) -> String {
    let mut s = String::new();
    let mut i = 0;
    while i < nums.len() {
        let start = nums[i];
        let mut end = start;
        while i + 1 < nums.len() && nums[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = nums[i];
        }
        if !s.is_empty() {
            s.push(',');
        }
        if start == end {
            s.push_str(&start.to_string());
        } else {
            s.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    #[test]
    fn strings() {
        let mut o = Vec::new();
        string(&mut o, b"a\"b\\c");
        assert_eq!(o, b"\"a\\\"b\\\\c\"");
        o.clear();
        string(&mut o, b"a\r\nb");
        assert_eq!(o, b"{4}\r\na\r\nb");
        o.clear();
        astring(&mut o, "Sent Messages");
        assert_eq!(o, b"\"Sent Messages\"");
        o.clear();
        astring(&mut o, "INBOX");
        assert_eq!(o, b"INBOX");
    }

    #[test]
    fn flag_lists() {
        let mut o = Vec::new();
        flags(
            &mut o,
            flag_bits::SEEN | flag_bits::DELETED | (1 << (flag_bits::KEYWORD_SHIFT + 1)),
            &["$a".into(), "$b".into()],
        );
        assert_eq!(o, b"(\\Seen \\Deleted $b)");
    }

    #[test]
    fn seq_sets() {
        assert_eq!(seq_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(seq_set(&[]), "");
    }
}
