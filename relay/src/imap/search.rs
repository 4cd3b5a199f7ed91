//! SEARCH evaluation over one message: flags, sets, dates, sizes, header and body substrings.
//! The message bytes are read lazily (only keys that need them read them); never writes.

use mail_parser::{Addr, Address, HeaderName, HeaderValue, MessageParser};

use super::bodystructure::{self, header_fields, unfold};
use super::command::SearchKey;
use crate::store::{flag_bits, Body, Flag, MessageMeta};
use relay_civil::days_from_civil;

/// One message being tested.
pub struct Candidate<'a> {
    /// Sequence number.
    pub seq: u32,
    /// Highest sequence number (for `*`).
    pub max_seq: u32,
    /// Highest UID (for `*`).
    pub max_uid: u32,
    /// Metadata.
    pub meta: &'a MessageMeta,
    /// `\Recent` in this session.
    pub recent: bool,
    /// Keyword table of the account.
    pub keywords: &'a [String],
    /// Loads the message bytes (borrowed from the store's mmap) on first use.
    pub load: &'a mut dyn FnMut() -> Option<Body>,
    /// Cached bytes.
    pub raw: Option<Option<Body>>,
}

impl Candidate<'_> {
    fn raw(&mut self) -> Option<&[u8]> {
        if self.raw.is_none() {
            self.raw = Some((self.load)());
        }
        self.raw.as_ref().and_then(|r| r.as_deref())
    }

    fn header(&mut self) -> Option<Vec<u8>> {
        let raw = self.raw()?;
        let p = bodystructure::parse(raw);
        Some(raw[p.header].to_vec())
    }
}

/// Whether `bits` has `flag` set, given the keyword table.
pub fn has_flag(bits: u64, flag: &Flag, keywords: &[String]) -> bool {
    let bit = match flag {
        Flag::Seen => flag_bits::SEEN,
        Flag::Answered => flag_bits::ANSWERED,
        Flag::Flagged => flag_bits::FLAGGED,
        Flag::Deleted => flag_bits::DELETED,
        Flag::Draft => flag_bits::DRAFT,
        Flag::Keyword(k) => match keywords
            .iter()
            .take(flag_bits::MAX_KEYWORDS)
            .position(|x| x.eq_ignore_ascii_case(k))
        {
            Some(i) => 1u64 << (flag_bits::KEYWORD_SHIFT + i as u32),
            None => return false,
        },
    };
    bits & bit != 0
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    let needle: Vec<u8> = needle.to_ascii_lowercase();
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(&needle))
}

/// `HEADER name value` (and FROM, TO, CC, BCC, SUBJECT): `value` is a substring of any field
/// `name`, not only the first (RFC 3501 §6.4.4), either of its unfolded text as sent or of its
/// decoded form: encoded words decoded, and for address fields each address also written as
/// `name <local@domain>` (so comments, quoting and spaces around `@` do not hide it). An empty
/// `value` matches every message that has the field.
fn header_matches(header: &[u8], name: &str, value: &[u8]) -> bool {
    let address_field = ADDRESS_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name));
    let mut present = false;
    for (n, v) in header_fields(header) {
        if n.eq_ignore_ascii_case(name.as_bytes()) {
            present = true;
            let text = unfold(v);
            if contains_ci(&text, value)
                || (address_field && contains_ci(&without_comments(&text), value))
            {
                return true;
            }
        }
    }
    if !present || value.is_empty() {
        return present;
    }
    let Some(m) = MessageParser::new()
        .default_header_text()
        .parse_headers(header)
    else {
        return false;
    };
    let mut texts = Vec::new();
    for v in m.header_values(HeaderName::from(name)) {
        decoded_texts(v, &mut texts);
    }
    texts.iter().any(|t| contains_ci(t.as_bytes(), value))
}

/// Fields whose text is an address list (RFC 5322 §3.6.2, §3.6.3).
const ADDRESS_FIELDS: [&str; 6] = ["from", "sender", "reply-to", "to", "cc", "bcc"];

/// An address list's text without comments and without the spaces around `@` and `.` that
/// RFC 5322 allows in an addr-spec: `user (c) @ (c) example . org` → `user@example.org`.
/// Quoted strings are kept as they are.
fn without_comments(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    for &b in text {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(b);
            }
            continue;
        }
        match b {
            b'\\' if quoted || depth > 0 => {
                escaped = true;
                if depth == 0 {
                    out.push(b);
                }
            }
            b'"' if depth == 0 => {
                quoted = !quoted;
                out.push(b);
            }
            b'(' if !quoted => depth += 1,
            b')' if !quoted && depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            _ => out.push(b),
        }
    }
    // Runs of spaces become one, then a space next to `@` or `.` (outside quotes) goes: linear.
    let mut single = Vec::with_capacity(out.len());
    let mut quoted = false;
    for &b in &out {
        if b == b'"' {
            quoted = !quoted;
        }
        let space = b == b' ' || b == b'\t';
        if !quoted && space && single.last() == Some(&b' ') {
            continue;
        }
        single.push(if !quoted && space { b' ' } else { b });
    }
    let mut tight = Vec::with_capacity(single.len());
    let mut quoted = false;
    for (i, &b) in single.iter().enumerate() {
        if b == b'"' {
            quoted = !quoted;
        }
        if !quoted
            && b == b' '
            && (matches!(tight.last(), Some(b'@' | b'.'))
                || matches!(single.get(i + 1), Some(b'@' | b'.')))
        {
            continue;
        }
        tight.push(b);
    }
    tight
}

/// The decoded forms of a header value that SEARCH looks into.
fn decoded_texts(v: &HeaderValue<'_>, out: &mut Vec<String>) {
    match v {
        HeaderValue::Text(t) => out.push(t.to_string()),
        HeaderValue::TextList(l) => out.push(l.join(" ")),
        HeaderValue::Address(Address::List(list)) => {
            let mut all = Vec::new();
            for a in list {
                address_texts(a, &mut all);
            }
            out.push(all.join(", "));
            out.extend(all);
        }
        HeaderValue::Address(Address::Group(groups)) => {
            let mut all = Vec::new();
            for g in groups {
                if let Some(n) = &g.name {
                    all.push(format!("{n}:"));
                }
                for a in &g.addresses {
                    address_texts(a, &mut all);
                }
            }
            out.push(all.join(" "));
            out.extend(all);
        }
        _ => {}
    }
}

fn address_texts(a: &Addr<'_>, out: &mut Vec<String>) {
    match (&a.name, &a.address) {
        (Some(n), Some(addr)) => out.push(format!("{n} <{addr}>")),
        (None, Some(addr)) => out.push(addr.to_string()),
        (Some(n), None) => out.push(n.to_string()),
        (None, None) => {}
    }
}

fn sent_day(c: &mut Candidate<'_>) -> Option<i64> {
    let header = c.header()?;
    let m = MessageParser::new().parse_headers(&header)?;
    let d = m.date()?;
    Some(days_from_civil(
        i64::from(d.year),
        u32::from(d.month),
        u32::from(d.day),
    ))
}

/// Whether the message matches `key`.
pub fn matches(key: &SearchKey, c: &mut Candidate<'_>) -> bool {
    let day = c.meta.internal_date.div_euclid(86400);
    match key {
        SearchKey::All => true,
        SearchKey::Seq(set) => set.contains(c.seq, c.max_seq),
        SearchKey::Uid(set) => set.contains(c.meta.uid, c.max_uid),
        SearchKey::Flag(f) => has_flag(c.meta.flags, f, c.keywords),
        SearchKey::NotFlag(f) => !has_flag(c.meta.flags, f, c.keywords),
        SearchKey::Recent(r) => c.recent == *r,
        SearchKey::Before(d) => day < *d,
        SearchKey::On(d) => day == *d,
        SearchKey::Since(d) => day >= *d,
        SearchKey::SentBefore(d) => sent_day(c).is_some_and(|s| s < *d),
        SearchKey::SentOn(d) => sent_day(c).is_some_and(|s| s == *d),
        SearchKey::SentSince(d) => sent_day(c).is_some_and(|s| s >= *d),
        SearchKey::Header(name, value) => c
            .header()
            .is_some_and(|h| header_matches(&h, name, value.as_bytes())),
        SearchKey::Body(s) => {
            let Some(raw) = c.raw() else { return false };
            let p = bodystructure::parse(raw);
            contains_ci(&raw[p.body], s.as_bytes())
        }
        SearchKey::Text(s) => c.raw().is_some_and(|r| contains_ci(r, s.as_bytes())),
        SearchKey::Larger(n) => c.meta.size > *n,
        SearchKey::Smaller(n) => c.meta.size < *n,
        SearchKey::ModSeq(m) => c.meta.modseq >= *m,
        SearchKey::Not(k) => !matches(k, c),
        SearchKey::Or(a, b) => matches(a, c) || matches(b, c),
        SearchKey::And(keys) => keys.iter().all(|k| matches(k, c)),
    }
}

/// Whether the key mentions MODSEQ (the response then carries `(MODSEQ n)`).
pub fn uses_modseq(key: &SearchKey) -> bool {
    match key {
        SearchKey::ModSeq(_) => true,
        SearchKey::Not(k) => uses_modseq(k),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::And(keys) => keys.iter().any(uses_modseq),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_text_without_comments() {
        for (raw, want) in [
            (
                &b"user-from (comment) @ (more) domain.org"[..],
                &b"user-from@domain.org"[..],
            ),
            (
                b"\"a (not a comment)\" <x @ y . org>",
                b"\"a (not a comment)\" <x@y.org>",
            ),
            (b"a(b(c)d)e@f", b"ae@f"),
            (b"(unclosed x@y", b""),
            (b"x) @ y", b"x)@y"),
            (b"\"q\\\" (x)\" u@v", b"\"q\\\" (x)\" u@v"),
        ] {
            assert_eq!(
                String::from_utf8_lossy(&without_comments(raw)),
                String::from_utf8_lossy(want)
            );
        }
    }

    #[test]
    fn header_search_reads_every_field_and_decoded_text() {
        let h = b"X-A: one\r\nX-A: two\r\n three\r\nFrom: =?utf-8?q?J=C3=B6rg?= <j (c) @ x.org>\r\n\r\n";
        assert!(header_matches(h, "x-a", b"one"));
        assert!(header_matches(h, "x-a", b"TWO THREE"));
        assert!(header_matches(h, "x-a", b""));
        assert!(!header_matches(h, "x-b", b""));
        assert!(!header_matches(h, "x-a", b"four"));
        assert!(header_matches(h, "from", b"j@x.org"));
        assert!(header_matches(h, "from", "J\u{f6}rg".as_bytes()));
        assert!(!header_matches(h, "to", b"j@x.org"));
    }
}
