//! SEARCH evaluation over one message: flags, sets, dates, sizes, header and body substrings.
//! The message bytes are read lazily (only keys that need them read them); never writes.

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
/// `name`, not only the first (RFC 3501 §6.4.4). An empty `value` matches every message that
/// has the field.
fn header_matches(header: &[u8], name: &str, value: &[u8]) -> bool {
    header_fields(header)
        .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .any(|(_, v)| contains_ci(&unfold(v), value))
}

fn sent_day(c: &mut Candidate<'_>) -> Option<i64> {
    let header = c.header()?;
    let m = mail_parser::MessageParser::new().parse_headers(&header)?;
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
        SearchKey::Recent(r) => !*r,
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
