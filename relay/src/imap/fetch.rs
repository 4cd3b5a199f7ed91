//! Rendering of FETCH responses for one message: flags, sizes, dates, ENVELOPE, BODYSTRUCTURE and
//! body sections with partial ranges. Reads only the bytes it is given; never writes the store.

use super::bodystructure::{self, header_field_spans, Part};
use super::command::{format_date_time, FetchItem, Section, SectionKind};
use super::response;
use crate::store::MessageMeta;

/// Whether any item needs the message bytes.
pub fn needs_body(items: &[FetchItem]) -> bool {
    items.iter().any(|i| {
        matches!(
            i,
            FetchItem::Envelope
                | FetchItem::BodyStructure
                | FetchItem::Body
                | FetchItem::Section { .. }
                | FetchItem::Rfc822
                | FetchItem::Rfc822Header
                | FetchItem::Rfc822Text
        )
    })
}

/// Whether fetching `items` sets `\Seen` (a non-PEEK body fetch).
pub fn sets_seen(items: &[FetchItem]) -> bool {
    items.iter().any(|i| {
        matches!(
            i,
            FetchItem::Section { peek: false, .. } | FetchItem::Rfc822 | FetchItem::Rfc822Text
        )
    })
}

/// The bytes of a section of `raw`.
pub fn section_bytes(raw: &[u8], root: &Part, section: &Section) -> Vec<u8> {
    let Some(part) = root.resolve(&section.part) else {
        return Vec::new();
    };
    // HEADER/TEXT/HEADER.FIELDS of a part apply to its encapsulated message.
    let msg: Option<&Part> = if section.part.is_empty() {
        Some(root)
    } else {
        part.message.as_deref()
    };
    match &section.kind {
        SectionKind::Full => {
            if section.part.is_empty() {
                raw.to_vec()
            } else {
                raw[part.body.clone()].to_vec()
            }
        }
        SectionKind::Mime => raw[part.header.clone()].to_vec(),
        SectionKind::Header => msg.map_or_else(Vec::new, |m| raw[m.header.clone()].to_vec()),
        SectionKind::Text => msg.map_or_else(Vec::new, |m| raw[m.body.clone()].to_vec()),
        SectionKind::HeaderFields(names) | SectionKind::HeaderFieldsNot(names) => {
            let Some(m) = msg else {
                return Vec::new();
            };
            let not = matches!(section.kind, SectionKind::HeaderFieldsNot(_));
            let header = &raw[m.header.clone()];
            let mut out = Vec::new();
            for (name, span) in header_field_spans(header) {
                let listed = names.iter().any(|n| n.eq_ignore_ascii_case(&name));
                if listed != not {
                    out.extend_from_slice(&header[span]);
                }
            }
            out.extend_from_slice(b"\r\n");
            out
        }
    }
}

/// The section spec as written back in the response: `1.2.HEADER.FIELDS (From)`.
fn section_name(section: &Section) -> String {
    let mut s: Vec<String> = section.part.iter().map(u32::to_string).collect();
    let kind = match &section.kind {
        SectionKind::Full => None,
        SectionKind::Header => Some("HEADER".to_owned()),
        SectionKind::Text => Some("TEXT".to_owned()),
        SectionKind::Mime => Some("MIME".to_owned()),
        SectionKind::HeaderFields(n) => Some(format!("HEADER.FIELDS ({})", quote_names(n))),
        SectionKind::HeaderFieldsNot(n) => Some(format!("HEADER.FIELDS.NOT ({})", quote_names(n))),
    };
    s.extend(kind);
    s.join(".")
}

fn quote_names(names: &[String]) -> String {
    names
        .iter()
        .map(|n| {
            let mut o = Vec::new();
            response::astring(&mut o, n);
            String::from_utf8_lossy(&o).into_owned()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Everything one FETCH response line needs about a message.
pub struct FetchCtx<'a> {
    /// Sequence number in the session's view.
    pub seq: u32,
    /// The message.
    pub meta: &'a MessageMeta,
    /// The account's keyword table.
    pub keywords: &'a [String],
    /// `\Recent` in this session.
    pub recent: bool,
    /// The message bytes, when [`needs_body`].
    pub raw: Option<&'a [u8]>,
    /// Add `UID` even if not asked (UID FETCH).
    pub force_uid: bool,
    /// Add `MODSEQ` even if not asked (CONDSTORE enabled and CHANGEDSINCE).
    pub force_modseq: bool,
    /// Add `FLAGS` even if not asked (`\Seen` was just set).
    pub force_flags: bool,
}

/// Append `* seq FETCH (...)\r\n`.
pub fn render(out: &mut Vec<u8>, ctx: &FetchCtx<'_>, items: &[FetchItem]) {
    out.extend_from_slice(format!("* {} FETCH (", ctx.seq).as_bytes());
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b' ');
        }
        first = false;
    };
    let raw = ctx.raw.unwrap_or(&[]);
    let mut structure: Option<Part> = None;
    let mut structure = |raw: &[u8]| -> Part {
        structure
            .get_or_insert_with(|| bodystructure::parse(raw))
            .clone()
    };
    let has = |f: &FetchItem| items.contains(f);
    if ctx.force_uid && !has(&FetchItem::Uid) {
        sep(out);
        out.extend_from_slice(format!("UID {}", ctx.meta.uid).as_bytes());
    }
    if ctx.force_flags && !has(&FetchItem::Flags) {
        sep(out);
        out.extend_from_slice(b"FLAGS ");
        response::flags_recent(out, ctx.meta.flags, ctx.recent, ctx.keywords);
    }
    for item in items {
        sep(out);
        match item {
            FetchItem::Flags => {
                out.extend_from_slice(b"FLAGS ");
                response::flags_recent(out, ctx.meta.flags, ctx.recent, ctx.keywords);
            }
            FetchItem::Uid => out.extend_from_slice(format!("UID {}", ctx.meta.uid).as_bytes()),
            FetchItem::Rfc822Size => {
                out.extend_from_slice(format!("RFC822.SIZE {}", ctx.meta.size).as_bytes())
            }
            FetchItem::InternalDate => {
                out.extend_from_slice(b"INTERNALDATE ");
                out.extend_from_slice(format_date_time(ctx.meta.internal_date).as_bytes());
            }
            FetchItem::ModSeq => {
                out.extend_from_slice(format!("MODSEQ ({})", ctx.meta.modseq).as_bytes())
            }
            FetchItem::Envelope => {
                out.extend_from_slice(b"ENVELOPE ");
                let p = structure(raw);
                bodystructure::envelope(raw, &raw[p.header.clone()], out);
            }
            FetchItem::BodyStructure | FetchItem::Body => {
                let ext = *item == FetchItem::BodyStructure;
                out.extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
                structure(raw).encode(raw, out, ext);
            }
            FetchItem::Rfc822 => {
                out.extend_from_slice(b"RFC822 ");
                response::literal(out, raw);
            }
            FetchItem::Rfc822Header | FetchItem::Rfc822Text => {
                let p = structure(raw);
                let (name, range): (&[u8], _) = if *item == FetchItem::Rfc822Header {
                    (b"RFC822.HEADER ", p.header.clone())
                } else {
                    (b"RFC822.TEXT ", p.body.clone())
                };
                out.extend_from_slice(name);
                response::literal(out, &raw[range]);
            }
            FetchItem::Section {
                section, partial, ..
            } => {
                let bytes: std::borrow::Cow<'_, [u8]> =
                    if section.part.is_empty() && section.kind == SectionKind::Full {
                        std::borrow::Cow::Borrowed(raw)
                    } else {
                        std::borrow::Cow::Owned(section_bytes(raw, &structure(raw), section))
                    };
                out.extend_from_slice(format!("BODY[{}]", section_name(section)).as_bytes());
                let data: &[u8] = match partial {
                    Some((o, n)) => {
                        out.extend_from_slice(format!("<{o}>").as_bytes());
                        let start = (*o as usize).min(bytes.len());
                        let end = start.saturating_add(*n as usize).min(bytes.len());
                        &bytes[start..end]
                    }
                    None => &bytes,
                };
                out.push(b' ');
                response::literal(out, data);
            }
        }
    }
    if ctx.force_modseq && !has(&FetchItem::ModSeq) {
        sep(out);
        out.extend_from_slice(format!("MODSEQ ({})", ctx.meta.modseq).as_bytes());
    }
    out.extend_from_slice(b")\r\n");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    const RAW: &[u8] = b"From: a@b\r\nTo: c@d\r\nSubject: s\r\n\r\nbody\r\n";

    fn sec(part: Vec<u32>, kind: SectionKind) -> Section {
        Section { part, kind }
    }

    #[test]
    fn sections() {
        let p = bodystructure::parse(RAW);
        assert_eq!(
            section_bytes(RAW, &p, &sec(vec![], SectionKind::Header)),
            b"From: a@b\r\nTo: c@d\r\nSubject: s\r\n\r\n"
        );
        assert_eq!(
            section_bytes(RAW, &p, &sec(vec![], SectionKind::Text)),
            b"body\r\n"
        );
        assert_eq!(
            section_bytes(
                RAW,
                &p,
                &sec(
                    vec![],
                    SectionKind::HeaderFields(vec!["SUBJECT".into(), "to".into()])
                )
            ),
            b"To: c@d\r\nSubject: s\r\n\r\n"
        );
        assert_eq!(
            section_bytes(
                RAW,
                &p,
                &sec(vec![], SectionKind::HeaderFieldsNot(vec!["from".into()]))
            ),
            b"To: c@d\r\nSubject: s\r\n\r\n"
        );
        assert_eq!(
            section_bytes(RAW, &p, &sec(vec![1], SectionKind::Full)),
            b"body\r\n"
        );
        assert_eq!(
            section_name(&sec(
                vec![1, 2],
                SectionKind::HeaderFields(vec!["From".into()])
            )),
            "1.2.HEADER.FIELDS (From)"
        );
    }
}
