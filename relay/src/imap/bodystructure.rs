//! MIME structure of a stored message for FETCH: part offsets (for `BODY[1.2]`, `HEADER`, `TEXT`,
//! `MIME`), `BODYSTRUCTURE`/`BODY` and `ENVELOPE`.
//!
//! Part boundaries are found here (exact byte ranges into the stored message, which IMAP needs and
//! which must match what a client counts); each part's header fields are parsed by mail-parser.
//! Depth and part count are bounded; malformed MIME degrades to a single text part, never panics.

use std::ops::Range;

use mail_parser::{Address, MessageParser, MimeHeaders};

use super::response::{nstring, string};
use crate::header::field_end;

const MAX_DEPTH: usize = 16;
const MAX_PARTS: usize = 500;

/// One MIME entity: its header and body ranges in the message, and its sub-entities.
#[derive(Debug, Clone)]
pub struct Part {
    /// Header bytes including the blank line that ends them.
    pub header: Range<usize>,
    /// Body bytes.
    pub body: Range<usize>,
    /// Lowercase media type.
    pub ctype: String,
    /// Lowercase media subtype.
    pub subtype: String,
    /// Children of a multipart.
    pub children: Vec<Part>,
    /// The encapsulated message of a `message/rfc822` part.
    pub message: Option<Box<Part>>,
}

/// Parse the structure of `raw`.
pub fn parse(raw: &[u8]) -> Part {
    let mut count = 0;
    parse_entity(raw, 0..raw.len(), ("text", "plain"), 0, &mut count)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Split an entity into header and body ranges.
fn split_header(raw: &[u8], r: Range<usize>) -> (Range<usize>, Range<usize>) {
    let s = &raw[r.clone()];
    if s.starts_with(b"\r\n") {
        return (r.start..r.start + 2, r.start + 2..r.end);
    }
    if s.starts_with(b"\n") {
        return (r.start..r.start + 1, r.start + 1..r.end);
    }
    let crlf = find(s, b"\r\n\r\n").map(|p| p + 4);
    let lf = find(s, b"\n\n").map(|p| p + 2);
    let end = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => s.len(),
    };
    (r.start..r.start + end, r.start + end..r.end)
}

fn parse_entity(
    raw: &[u8],
    r: Range<usize>,
    default: (&str, &str),
    depth: usize,
    count: &mut usize,
) -> Part {
    *count += 1;
    let (header, body) = split_header(raw, r);
    let parsed = MessageParser::new().parse_headers(&raw[header.clone()]);
    let ct = parsed.as_ref().and_then(|m| m.content_type());
    let (mut ctype, mut subtype) = match ct {
        Some(ct) => (
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or("").to_ascii_lowercase(),
        ),
        None => (default.0.to_owned(), default.1.to_owned()),
    };
    if subtype.is_empty() {
        // A Content-Type without subtype is invalid: treat as text/plain.
        ctype = "text".into();
        subtype = "plain".into();
    }
    let boundary = ct.and_then(|c| c.attribute("boundary")).map(str::to_owned);
    let mut part = Part {
        header,
        body: body.clone(),
        ctype,
        subtype,
        children: Vec::new(),
        message: None,
    };
    if depth >= MAX_DEPTH || *count >= MAX_PARTS {
        return part;
    }
    if part.ctype == "multipart" {
        if let Some(b) = boundary.filter(|b| !b.is_empty()) {
            let child_default = if part.subtype == "digest" {
                ("message", "rfc822")
            } else {
                ("text", "plain")
            };
            for range in split_multipart(raw, body, b.as_bytes()) {
                if *count >= MAX_PARTS {
                    break;
                }
                part.children
                    .push(parse_entity(raw, range, child_default, depth + 1, count));
            }
        }
        if part.children.is_empty() {
            // A multipart without parts is served as an empty text part.
            part.ctype = "text".into();
            part.subtype = "plain".into();
        }
    } else if part.ctype == "message" && part.subtype == "rfc822" {
        part.message = Some(Box::new(parse_entity(
            raw,
            body,
            ("text", "plain"),
            depth + 1,
            count,
        )));
    }
    part
}

/// Ranges of the body parts between `--boundary` delimiter lines.
fn split_multipart(raw: &[u8], body: Range<usize>, boundary: &[u8]) -> Vec<Range<usize>> {
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary);
    let mut parts = Vec::new();
    // Start of the current part's content, once the first delimiter was seen.
    let mut current: Option<usize> = None;
    let mut line_start = body.start;
    while line_start < body.end {
        let rest = &raw[line_start..body.end];
        let line_len = memchr::memchr(b'\n', rest).map_or(rest.len(), |p| p + 1);
        let line = &rest[..line_len];
        if line.starts_with(&delim) {
            let after = &line[delim.len()..];
            let closing = after.starts_with(b"--");
            let tail = if closing { &after[2..] } else { after };
            if tail.iter().all(|b| b.is_ascii_whitespace()) {
                if let Some(start) = current {
                    // The CRLF before the delimiter belongs to the delimiter.
                    let mut end = line_start;
                    if end > start && raw[end - 1] == b'\n' {
                        end -= 1;
                        if end > start && raw[end - 1] == b'\r' {
                            end -= 1;
                        }
                    }
                    parts.push(start..end.max(start));
                }
                if closing {
                    return parts;
                }
                current = Some(line_start + line_len);
            }
        }
        line_start += line_len;
    }
    if let Some(start) = current {
        // Missing closing delimiter: the last part runs to the end.
        parts.push(start..body.end.max(start));
    }
    parts
}

impl Part {
    /// The entity addressed by a part path (`1.2` = `[1, 2]`); `[]` is the message itself.
    pub fn resolve(&self, path: &[u32]) -> Option<&Part> {
        let mut cur = self;
        let mut is_root = true;
        for &n in path {
            let container: &Part = match (&cur.message, is_root) {
                (Some(m), false) => m,
                _ => cur,
            };
            let idx = (n as usize).checked_sub(1)?;
            cur = if !container.children.is_empty() {
                container.children.get(idx)?
            } else if idx == 0 && (is_root || cur.message.is_some()) {
                container
            } else {
                return None;
            };
            is_root = false;
        }
        Some(cur)
    }

    /// Append `BODYSTRUCTURE` (`extended`) or `BODY`.
    pub fn encode(&self, raw: &[u8], out: &mut Vec<u8>, extended: bool) {
        let parsed = MessageParser::new().parse_headers(&raw[self.header.clone()]);
        out.push(b'(');
        if !self.children.is_empty() {
            for c in &self.children {
                c.encode(raw, out, extended);
            }
            out.push(b' ');
            string(out, self.subtype.as_bytes());
            if extended {
                out.push(b' ');
                params(out, parsed.as_ref().and_then(|m| m.content_type()));
                out.push(b' ');
                disposition(out, parsed.as_ref());
                out.extend_from_slice(b" NIL NIL");
            }
            out.push(b')');
            return;
        }
        let m = parsed.as_ref();
        string(out, self.ctype.as_bytes());
        out.push(b' ');
        string(out, self.subtype.as_bytes());
        out.push(b' ');
        params(out, m.and_then(|m| m.content_type()));
        out.push(b' ');
        nstring(out, m.and_then(|m| m.content_id()).map(str::as_bytes));
        out.push(b' ');
        nstring(
            out,
            m.and_then(|m| m.content_description()).map(str::as_bytes),
        );
        out.push(b' ');
        let enc = m
            .and_then(|m| m.content_transfer_encoding())
            .map(str::to_ascii_uppercase)
            .unwrap_or_else(|| "7BIT".into());
        string(out, enc.as_bytes());
        let body = &raw[self.body.clone()];
        out.extend_from_slice(format!(" {}", body.len()).as_bytes());
        if let Some(inner) = &self.message {
            out.push(b' ');
            envelope(raw, &raw[inner.header.clone()], out);
            out.push(b' ');
            inner.encode(raw, out, extended);
            out.extend_from_slice(format!(" {}", count_lines(body)).as_bytes());
        } else if self.ctype == "text" {
            out.extend_from_slice(format!(" {}", count_lines(body)).as_bytes());
        }
        if extended {
            out.extend_from_slice(b" NIL ");
            disposition(out, m);
            out.extend_from_slice(b" NIL NIL");
        }
        out.push(b')');
    }
}

fn count_lines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

fn params(out: &mut Vec<u8>, ct: Option<&mail_parser::ContentType<'_>>) {
    match ct.and_then(|c| c.attributes()).filter(|a| !a.is_empty()) {
        Some(attrs) => {
            out.push(b'(');
            for (i, a) in attrs.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                string(out, a.name.as_bytes());
                out.push(b' ');
                string(out, a.value.as_bytes());
            }
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
}

fn disposition(out: &mut Vec<u8>, m: Option<&mail_parser::Message<'_>>) {
    match m.and_then(|m| m.content_disposition()) {
        Some(d) => {
            out.push(b'(');
            string(out, d.ctype().as_bytes());
            out.push(b' ');
            params(out, Some(d));
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
}

/// The raw (unfolded, not decoded) value of the first header field `name` in `header`.
pub fn raw_header(header: &[u8], name: &str) -> Option<Vec<u8>> {
    header_fields(header)
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| unfold(v))
}

/// `(name, raw value incl. continuation lines)` of every header field.
pub fn header_fields(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        while pos < header.len() {
            let start = pos;
            let end = field_end(header, start);
            pos = end;
            let field = &header[start..end];
            if let Some(colon) = field.iter().position(|&b| b == b':') {
                let name = trim(&field[..colon]);
                return Some((name, &field[colon + 1..]));
            }
        }
        None
    })
}

/// The raw bytes of every whole field (with its line break) of `header`, with its name.
pub fn header_field_spans(header: &[u8]) -> Vec<(String, Range<usize>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < header.len() {
        let start = pos;
        let end = field_end(header, start);
        pos = end;
        let field = &header[start..end];
        if let Some(colon) = field.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(trim(&field[..colon])).to_ascii_lowercase();
            out.push((name, start..end));
        }
    }
    out
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |p| p + 1);
    &b[s..e.max(s)]
}

/// A raw field value without its line breaks, trimmed.
pub fn unfold(v: &[u8]) -> Vec<u8> {
    let v: Vec<u8> = v
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    trim(&v).to_vec()
}

/// Append the `ENVELOPE` of the message whose header bytes are `header`.
pub fn envelope(_raw: &[u8], header: &[u8], out: &mut Vec<u8>) {
    let parsed = MessageParser::new().parse_headers(header);
    let m = parsed.as_ref();
    out.push(b'(');
    nstring(out, raw_header(header, "date").as_deref());
    out.push(b' ');
    nstring(out, raw_header(header, "subject").as_deref());
    let from = m.and_then(|m| m.from());
    for (i, a) in [
        from,
        m.and_then(|m| m.sender()).or(from),
        m.and_then(|m| m.reply_to()).or(from),
        m.and_then(|m| m.to()),
        m.and_then(|m| m.cc()),
        m.and_then(|m| m.bcc()),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = i;
        out.push(b' ');
        addresses(out, a);
    }
    out.push(b' ');
    nstring(out, raw_header(header, "in-reply-to").as_deref());
    out.push(b' ');
    nstring(out, raw_header(header, "message-id").as_deref());
    out.push(b')');
}

/// An address list of ENVELOPE (RFC 3501 §7.4.2): `NIL` if empty. A group is written as its
/// start marker `(NIL NIL "name" NIL)`, its members and the end marker `(NIL NIL NIL NIL)`; a
/// group that never closes is closed at the end of the field, groups are never nested, and an
/// address without a domain gets the host `""` so it cannot be taken for a group marker.
fn addresses(out: &mut Vec<u8>, a: Option<&Address<'_>>) {
    let start = out.len();
    out.push(b'(');
    match a {
        Some(Address::List(list)) => {
            for x in list {
                address(out, x);
            }
        }
        Some(Address::Group(groups)) => {
            for g in groups {
                let Some(name) = &g.name else {
                    for x in &g.addresses {
                        address(out, x);
                    }
                    continue;
                };
                out.extend_from_slice(b"(NIL NIL ");
                string(out, name.as_bytes());
                out.extend_from_slice(b" NIL)");
                for x in &g.addresses {
                    address(out, x);
                }
                out.extend_from_slice(b"(NIL NIL NIL NIL)");
            }
        }
        None => {}
    }
    if out.len() == start + 1 {
        out.truncate(start);
        out.extend_from_slice(b"NIL");
    } else {
        out.push(b')');
    }
}

/// One `(name adl mailbox host)`; nothing for an entry without an address. A source route
/// (`<@route,@other:user@domain>`, RFC 5322 obs-route) becomes the `adl` (`"@route,@other"`).
fn address(out: &mut Vec<u8>, x: &mail_parser::Addr<'_>) {
    let Some(addr) = &x.address else { return };
    let (local, host) = addr.rsplit_once('@').unwrap_or((addr, ""));
    // A route holds no ':', so the first one ends it.
    let (adl, local) = match local.split_once(':') {
        Some((route, rest)) if route.starts_with('@') => (Some(route), rest),
        _ => (None, local),
    };
    out.push(b'(');
    nstring(out, x.name.as_deref().map(str::as_bytes));
    out.push(b' ');
    nstring(out, adl.map(str::as_bytes));
    out.push(b' ');
    string(out, local.as_bytes());
    out.push(b' ');
    string(out, host.as_bytes());
    out.push(b')');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    const MULTI: &[u8] = b"From: Alice <alice@example.org>\r\n\
To: bob@example.org\r\n\
Subject: hi\r\n\
Content-Type: multipart/mixed; boundary=\"XX\"\r\n\
\r\n\
preamble\r\n\
--XX\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
hello\r\n\
world\r\n\
--XX\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
Subject: inner\r\n\
\r\n\
inner body\r\n\
--XX--\r\n\
epilogue\r\n";

    #[test]
    fn multipart_offsets() {
        let p = parse(MULTI);
        assert_eq!(p.ctype, "multipart");
        assert_eq!(p.children.len(), 2);
        let t = p.resolve(&[1]).unwrap();
        assert_eq!(&MULTI[t.body.clone()], b"hello\r\nworld");
        assert_eq!(
            &MULTI[t.header.clone()],
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        );
        let m = p.resolve(&[2]).unwrap();
        assert_eq!(&MULTI[m.body.clone()], b"Subject: inner\r\n\r\ninner body");
        let inner = m.message.as_ref().unwrap();
        assert_eq!(&MULTI[inner.body.clone()], b"inner body");
        let inner1 = p.resolve(&[2, 1]).unwrap();
        assert_eq!(&MULTI[inner1.body.clone()], b"inner body");
        assert!(p.resolve(&[3]).is_none());
        assert!(p.resolve(&[1, 1]).is_none());
    }

    #[test]
    fn single_part_is_part_one() {
        let raw = b"Subject: x\r\n\r\nbody\r\n";
        let p = parse(raw);
        assert_eq!(&raw[p.resolve(&[1]).unwrap().body.clone()], b"body\r\n");
        assert!(p.resolve(&[2]).is_none());
        let mut out = Vec::new();
        p.encode(raw, &mut out, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "(\"text\" \"plain\" NIL NIL NIL \"7BIT\" 6 1)"
        );
    }

    #[test]
    fn bodystructure_and_envelope() {
        let p = parse(MULTI);
        let mut out = Vec::new();
        p.encode(MULTI, &mut out, true);
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.starts_with("((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7BIT\" 12 1 NIL NIL NIL NIL)(\"message\" \"rfc822\" NIL NIL NIL \"7BIT\" 28 (NIL \"inner\" NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" NIL NIL NIL \"7BIT\" 10 0 NIL NIL NIL NIL) 2 NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"XX\") NIL NIL NIL)"),
            "{s}"
        );
        let mut env = Vec::new();
        envelope(MULTI, &MULTI[p.header.clone()], &mut env);
        assert_eq!(
            String::from_utf8(env).unwrap(),
            "(NIL \"hi\" ((\"Alice\" NIL \"alice\" \"example.org\")) ((\"Alice\" NIL \"alice\" \"example.org\")) ((\"Alice\" NIL \"alice\" \"example.org\")) ((NIL NIL \"bob\" \"example.org\")) NIL NIL NIL NIL)"
        );
    }

    /// The ENVELOPE of a message with only this header field.
    fn env(field: &str) -> String {
        let raw = format!("{field}\r\n\r\n");
        let mut out = Vec::new();
        envelope(raw.as_bytes(), raw.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    /// The To: list of an ENVELOPE written by [`env`] (only To: is set).
    fn to_list(field: &str) -> String {
        let e = env(field);
        let inner = e
            .strip_prefix("(NIL NIL NIL NIL NIL ")
            .and_then(|r| r.strip_suffix(" NIL NIL NIL NIL)"))
            .unwrap_or_else(|| panic!("unexpected envelope {e}"));
        inner.to_owned()
    }

    /// Group markers are flat and balanced, and the list is a valid address list.
    fn assert_well_formed(list: &str) {
        if list == "NIL" {
            return;
        }
        assert!(list.starts_with("((") && list.ends_with("))"), "{list}");
        let mut open = false;
        for entry in list[1..list.len() - 1].split(")(") {
            let entry = entry.trim_start_matches('(').trim_end_matches(')');
            // A group name is quoted, or a literal when it is not ASCII.
            let start = (entry.starts_with("NIL NIL \"") || entry.starts_with("NIL NIL {"))
                && entry.ends_with(" NIL");
            let end = entry == "NIL NIL NIL NIL";
            if start {
                assert!(!open, "nested group in {list}");
                open = true;
            } else if end {
                assert!(open, "group end without start in {list}");
                open = false;
            } else {
                assert!(
                    !entry.ends_with(" NIL"),
                    "host NIL outside a marker in {list}"
                );
            }
        }
        assert!(!open, "unclosed group in {list}");
    }

    #[test]
    fn envelope_groups() {
        let cases = [
            (
                "To: group: a@b, c@d;",
                "((NIL NIL \"group\" NIL)(NIL NIL \"a\" \"b\")(NIL NIL \"c\" \"d\")(NIL NIL NIL NIL))",
            ),
            (
                "To: undisclosed-recipients:;",
                "((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL))",
            ),
            // Never closed: closed at the end of the field.
            (
                "To: group: a@b, c@d",
                "((NIL NIL \"group\" NIL)(NIL NIL \"a\" \"b\")(NIL NIL \"c\" \"d\")(NIL NIL NIL NIL))",
            ),
            (
                "To: \"Name\" <a@b>, c@d",
                "((\"Name\" NIL \"a\" \"b\")(NIL NIL \"c\" \"d\"))",
            ),
            // A source route is the adl, not part of the mailbox name.
            (
                "To: <@route:user@domain>",
                "((NIL \"@route\" \"user\" \"domain\"))",
            ),
            (
                "To: <@r1,@r2:user@domain>",
                "((NIL \"@r1,@r2\" \"user\" \"domain\"))",
            ),
        ];
        for (field, want) in cases {
            let got = to_list(field);
            assert_eq!(got, want, "{field}");
            assert_well_formed(&got);
        }
        // Addresses around a group stay outside it.
        let mixed = to_list("To: x@y, group: a@b;, z@w");
        assert_well_formed(&mixed);
        for part in [
            "(NIL NIL \"x\" \"y\")",
            "(NIL NIL \"group\" NIL)(NIL NIL \"a\" \"b\")(NIL NIL NIL NIL)",
            "(NIL NIL \"z\" \"w\")",
        ] {
            assert!(mixed.contains(part), "{part} not in {mixed}");
        }
        // Nested, empty-named, stray and unbalanced groups: whatever is read, the markers stay
        // flat and balanced and no address is mistaken for one.
        for field in [
            "To: outer: inner: a@b;;",
            "To: outer: inner: a@b;, c@d;",
            "To: : a@b;",
            "To: ;;;",
            "To: g: ;",
            "To: g1: a@b; g2: c@d",
            "To: g:: a@b;",
            "To: a@b;",
            "To: g: a@b;;;, c@d",
            "To: \"quoted: name\" <a@b>",
            "To: =?utf-8?q?Gr=C3=BCppe?=: a@b;",
            "To: :;",
            "To: g: (comment) ;",
            "To: a",
            "To: <a>",
            "To: g: <a>, b;",
        ] {
            let got = to_list(field);
            assert_well_formed(&got);
            if field.contains("a@b") {
                assert!(got.contains("\"a\" \"b\")"), "{field}: {got}");
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        for raw in [
            &b""[..],
            b"\r\n",
            b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n",
            b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a--",
            b"Content-Type: message/rfc822\r\n\r\n",
            b"\xff\xfe: \x00\n\n\n",
        ] {
            let p = parse(raw);
            let mut out = Vec::new();
            p.encode(raw, &mut out, true);
            envelope(raw, &raw[p.header.clone()], &mut out);
            for path in [&[][..], &[1], &[1, 1], &[2]] {
                let _ = p.resolve(path);
            }
        }
    }
}
