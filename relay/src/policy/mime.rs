//! Just enough MIME structure for the policy checks, in linear time.
//!
//! The header section is found by hand (up to the first empty line) and parsed with mail-parser's
//! `parse_headers`; the top-level multipart body is split into its direct children by a line scan
//! for the boundary. Children are only handed to mail-parser's full parser when they are leaf
//! parts, so no input can make mail-parser rescan the message once per part (its boundary search
//! restarts from the part start when a boundary is missing, which is quadratic on hostile input).
//! Never panics; never descends below the first level.

use std::borrow::Cow;
use std::sync::LazyLock;

use mail_parser::{
    ContentType, HeaderName, HeaderValue, Message, MessageParser, MimeHeaders as _, PartType,
};

/// Parses only the fields the policy reads; every other field stays raw (cheap).
static PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
    MessageParser::new()
        .header_content_type(HeaderName::ContentType)
        .header_text(HeaderName::ContentTransferEncoding)
        .header_address(HeaderName::From)
        .header_text(HeaderName::Subject)
});

/// Split `raw` into the header section (including the line break that ends the last header
/// line, excluding the empty line) and the body (after the empty line). Without an empty line
/// the whole input is the header section and the body is empty.
pub fn split_header(raw: &[u8]) -> (&[u8], &[u8]) {
    let mut pos = 0;
    while pos < raw.len() {
        let line_end = match memchr::memchr(b'\n', &raw[pos..]) {
            Some(i) => pos + i + 1,
            None => raw.len(),
        };
        let line = &raw[pos..line_end];
        if line == b"\r\n" || line == b"\n" {
            return (&raw[..pos], &raw[line_end..]);
        }
        pos = line_end;
    }
    (raw, &raw[raw.len()..])
}

/// A message or part with its parsed header section and its raw (undecoded) body.
pub struct Entity<'a> {
    /// Headers only (mail-parser `parse_headers` over the header section).
    pub headers: Message<'a>,
    /// The raw header section bytes.
    pub header_raw: &'a [u8],
    /// The raw body after the empty line.
    pub body: &'a [u8],
}

impl<'a> Entity<'a> {
    /// Parse the header section of `raw`; `None` if there is no header field at all.
    pub fn parse(raw: &'a [u8]) -> Option<Entity<'a>> {
        let (header_raw, body) = split_header(raw);
        let headers = PARSER.parse_headers(header_raw)?;
        Some(Entity {
            headers,
            header_raw,
            body,
        })
    }

    /// The Content-Type, if present and parseable.
    pub fn content_type(&self) -> Option<&ContentType<'_>> {
        self.headers.root_part().content_type()
    }

    /// `type/subtype` matches (ASCII case-insensitive). A missing Content-Type counts as
    /// `text/plain` (RFC 2045 §5.2).
    pub fn is_type(&self, ctype: &str, subtype: &str) -> bool {
        match self.content_type() {
            Some(ct) => {
                ct.ctype().eq_ignore_ascii_case(ctype)
                    && ct
                        .subtype()
                        .is_some_and(|s| s.eq_ignore_ascii_case(subtype))
            }
            None => {
                self.first_raw("Content-Type").is_none()
                    && ctype.eq_ignore_ascii_case("text")
                    && subtype.eq_ignore_ascii_case("plain")
            }
        }
    }

    /// Whether the Content-Type says `multipart/*`.
    pub fn is_multipart(&self) -> bool {
        self.content_type()
            .is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("multipart"))
    }

    /// The `boundary` parameter (parameter name case-insensitive), if non-empty.
    pub fn boundary(&self) -> Option<&str> {
        let ct = self.content_type()?;
        let b = ct
            .attributes()?
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case("boundary"))?
            .value
            .as_ref();
        (!b.is_empty()).then_some(b)
    }

    /// The raw value (after the colon, unfolded lines kept, trimmed) of the first header field
    /// with this name (ASCII case-insensitive).
    pub fn first_raw(&self, name: &str) -> Option<&'a [u8]> {
        let h = self
            .headers
            .root_part()
            .headers
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(name))?;
        let start = usize::try_from(h.offset_start).ok()?;
        let end = usize::try_from(h.offset_end).ok()?;
        Some(self.header_raw.get(start..end)?.trim_ascii())
    }

    /// How many header fields have this name (ASCII case-insensitive).
    pub fn count(&self, name: &str) -> usize {
        let headers = &self.headers.root_part().headers;
        headers
            .iter()
            .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
            .count()
    }

    /// The decoded text value of the first header field with this name.
    pub fn first_text(&self, name: &str) -> Option<&str> {
        let h = self
            .headers
            .root_part()
            .headers
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(name))?;
        match &h.value {
            HeaderValue::Text(t) => Some(t.as_ref()),
            _ => None,
        }
    }

    /// The first address of the first `From` header field, if any.
    pub fn from_address(&self) -> Option<String> {
        let h = self
            .headers
            .root_part()
            .headers
            .iter()
            .find(|h| h.name == HeaderName::From)?;
        let addr = h.value.as_address()?.first()?.address()?.trim();
        (!addr.is_empty()).then(|| addr.to_string())
    }

    /// The direct children of a multipart body, raw (headers and body), or `None` when the body
    /// has no close delimiter or there are more than `max` children.
    pub fn children(&self, max: usize) -> Option<Vec<&'a [u8]>> {
        let boundary = self.boundary()?;
        split_multipart(self.body, boundary.as_bytes(), max)
    }

    /// The body of this leaf part (`raw` is the part's headers and body, the bytes `self` was
    /// parsed from) decoded from its Content-Transfer-Encoding. The caller has checked that the Content-Type is neither
    /// multipart nor a message. `None` on an encoding problem.
    pub fn decoded_leaf_body(&self, raw: &'a [u8]) -> Option<Cow<'a, [u8]>> {
        // Identity encodings: the body is the raw bytes after the empty line (saves a pass).
        let identity = match self.first_raw("Content-Transfer-Encoding") {
            None => true,
            Some(cte) => [&b"7bit"[..], b"8bit", b"binary"]
                .iter()
                .any(|e| cte.eq_ignore_ascii_case(e)),
        };
        if identity && self.count("Content-Transfer-Encoding") <= 1 {
            return Some(Cow::Borrowed(self.body));
        }
        let msg = PARSER.parse(raw)?;
        let part = msg.parts.into_iter().next()?;
        if part.is_encoding_problem {
            return None;
        }
        match part.body {
            PartType::Binary(b) | PartType::InlineBinary(b) => Some(b),
            PartType::Text(Cow::Borrowed(t)) | PartType::Html(Cow::Borrowed(t)) => {
                Some(Cow::Borrowed(t.as_bytes()))
            }
            PartType::Text(Cow::Owned(t)) | PartType::Html(Cow::Owned(t)) => {
                Some(Cow::Owned(t.into_bytes()))
            }
            PartType::Message(_) | PartType::Multipart(_) => None,
        }
    }
}

/// Split a multipart body at lines `--boundary` (RFC 2046 §5.1.1; trailing whitespace after the
/// delimiter allowed). The preamble and the epilogue are ignored. The line break before a
/// delimiter belongs to the delimiter. `None` without a close delimiter `--boundary--` or with
/// more than `max` children.
///
/// `--boundary` is searched for (memchr's SIMD `memmem`) rather than every line being compared:
/// only a match at a line start can be a delimiter, and the search goes on from the next line.
pub fn split_multipart<'a>(body: &'a [u8], boundary: &[u8], max: usize) -> Option<Vec<&'a [u8]>> {
    let mut needle = Vec::with_capacity(boundary.len() + 2);
    needle.extend_from_slice(b"--");
    needle.extend_from_slice(boundary);
    let finder = memchr::memmem::Finder::new(&needle);
    let mut parts = Vec::new();
    // Start of the current part's content, once the first delimiter was seen.
    let mut start: Option<usize> = None;
    let mut from = 0;
    while let Some(found) = finder.find(&body[from..]) {
        let pos = from + found;
        let line_end = match memchr::memchr(b'\n', &body[pos..]) {
            Some(i) => pos + i + 1,
            None => body.len(),
        };
        let at_line_start = pos == 0 || body[pos - 1] == b'\n';
        let kind = if at_line_start {
            delimiter(&body[pos..line_end], boundary)
        } else {
            None
        };
        if let Some(kind) = kind {
            if let Some(s) = start {
                // The part ends before the line break that ends the previous line.
                let content_end = if body[..pos].ends_with(b"\r\n") {
                    pos - 2
                } else {
                    pos.saturating_sub(1)
                };
                parts.push(body.get(s..content_end.max(s))?);
                if parts.len() > max {
                    return None;
                }
            }
            if kind == Delim::Close {
                return Some(parts);
            }
            start = Some(line_end);
        }
        // The next delimiter can only start on a later line.
        from = line_end;
    }
    None
}

#[derive(PartialEq)]
pub(super) enum Delim {
    Part,
    Close,
}

pub(super) fn delimiter(line: &[u8], boundary: &[u8]) -> Option<Delim> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    let (kind, rest) = match rest.strip_prefix(b"--") {
        Some(r) => (Delim::Close, r),
        None => (Delim::Part, rest),
    };
    rest.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .then_some(kind)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    #[test]
    fn header_split() {
        assert_eq!(
            split_header(b"A: b\r\n\r\nbody"),
            (&b"A: b\r\n"[..], &b"body"[..])
        );
        assert_eq!(
            split_header(b"A: b\n\nbody\n\nx"),
            (&b"A: b\n"[..], &b"body\n\nx"[..])
        );
        assert_eq!(split_header(b"A: b\r\n"), (&b"A: b\r\n"[..], &b""[..]));
        assert_eq!(split_header(b"\r\nbody"), (&b""[..], &b"body"[..]));
    }

    #[test]
    fn multipart_split() {
        let body = b"preamble\r\n--b\r\nA: 1\r\n\r\none\r\n--b  \r\n\r\ntwo\r\n--b--\r\nepilogue";
        let parts = split_multipart(body, b"b", 5).unwrap();
        assert_eq!(parts, vec![&b"A: 1\r\n\r\none"[..], &b"\r\ntwo"[..]]);
        // `--bx` is not a delimiter for boundary `b`.
        let body = b"--b\r\n\r\n--bx\r\n--b--";
        assert_eq!(
            split_multipart(body, b"b", 5).unwrap(),
            vec![&b"\r\n--bx"[..]]
        );
        // No close delimiter.
        assert_eq!(split_multipart(b"--b\r\n\r\none\r\n", b"b", 5), None);
        // Too many parts.
        assert_eq!(
            split_multipart(b"--b\r\n--b\r\n--b\r\n--b--", b"b", 2),
            None
        );
        // Empty part list.
        assert_eq!(split_multipart(b"--b--\r\n", b"b", 2), Some(vec![]));
        // `--b` inside a line is content; so is a line `--b--x`.
        let body = b"--b\r\nx--b\r\n x --b--\r\n--b--x\r\n--b--";
        assert_eq!(
            split_multipart(body, b"b", 5).unwrap(),
            vec![&b"x--b\r\n x --b--\r\n--b--x"[..]]
        );
        // The line break before a delimiter is LF, CRLF, or an empty line's LF.
        let body = b"--b\none\n--b\r\ntwo\r\n--b\n\n--b--";
        assert_eq!(
            split_multipart(body, b"b", 5).unwrap(),
            vec![&b"one"[..], b"two", b""]
        );
        // A lone CR is no line break: neither `--b` on the first line is a delimiter, and the
        // close delimiter ends a multipart without parts.
        assert_eq!(
            split_multipart(b"--b\rx\r--b\n--b--", b"b", 5),
            Some(vec![])
        );
    }
}
