//! Header privacy: remove or rewrite whole header fields (with their folded continuation lines)
//! in the raw header section, the way Postfix `header_checks` did for the reference relay.
//!
//! Works on bytes, one pass, never parses MIME, never touches the body (copied byte for byte)
//! and never changes line endings of the lines it keeps.

use crate::header::field_end;

/// What to do with one header field.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Keep,
    Drop,
    /// Replace the whole field with this line (without line ending).
    Replace(&'static [u8]),
}

/// Rewrite the header section of `raw` field by field; `decide` gets the field name (bytes before
/// the colon on the field's first line, trailing whitespace trimmed). Continuation lines before the
/// first field and lines without a colon (with their continuations) are kept.
fn rewrite(raw: &[u8], decide: impl Fn(&[u8]) -> Action) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut pos = 0;
    while pos < raw.len() {
        let rest = &raw[pos..];
        if rest.starts_with(b"\r\n") || rest.starts_with(b"\n") {
            // End of the header section: the empty line and the body go out unchanged.
            out.extend_from_slice(rest);
            return out;
        }
        let end = field_end(raw, pos);
        let field = &raw[pos..end];
        let first_line = match memchr::memchr(b'\n', field) {
            Some(i) => &field[..=i],
            None => field,
        };
        let continuation = matches!(first_line.first(), Some(b' ' | b'\t'));
        let action = match first_line.iter().position(|&b| b == b':') {
            Some(colon) if !continuation => decide(first_line[..colon].trim_ascii_end()),
            _ => Action::Keep,
        };
        match action {
            Action::Keep => out.extend_from_slice(field),
            Action::Drop => {}
            Action::Replace(with) => {
                // Keep the field's line ending; a last line without one gets CRLF.
                let eol: &[u8] = if first_line.ends_with(b"\n") && !first_line.ends_with(b"\r\n") {
                    b"\n"
                } else {
                    b"\r\n"
                };
                out.extend_from_slice(with);
                out.extend_from_slice(eol);
            }
        }
        pos = end;
    }
    out
}

fn is_any(name: &[u8], names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// Submission cleanup (Postfix `authclean`): drop `Received`, `X-Originating-IP`, `X-Mailer`,
/// `User-Agent`; every `Subject` becomes `Subject: [...]`.
pub fn clean_submission(raw: &[u8]) -> Vec<u8> {
    rewrite(raw, |name| {
        if is_any(
            name,
            &["Received", "X-Originating-IP", "X-Mailer", "User-Agent"],
        ) {
            Action::Drop
        } else if name.eq_ignore_ascii_case(b"Subject") {
            Action::Replace(b"Subject: [...]")
        } else {
            Action::Keep
        }
    })
}

/// Delivery cleanup (Postfix `lmtp_header_checks`): drop `DKIM-Signature`,
/// `Authentication-Results`, `Received`.
pub fn clean_delivery(raw: &[u8]) -> Vec<u8> {
    rewrite(raw, |name| {
        if is_any(
            name,
            &["DKIM-Signature", "Authentication-Results", "Received"],
        ) {
            Action::Drop
        } else {
            Action::Keep
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    #[test]
    fn submission_cleanup() {
        let raw = b"Received: from x\r\n\tby y\r\nFrom: a@b\r\nSubject: secret\r\n plans\r\n\
X-Mailer: m\r\nUser-Agent: ua\r\n  more\r\nx-originating-ip: [1.2.3.4]\r\nsubject : two\r\n\
To: c@d\r\n\r\nReceived: in body\r\nSubject: body\r\n\r\n";
        let out = clean_submission(raw);
        assert_eq!(
            out,
            b"From: a@b\r\nSubject: [...]\r\nSubject: [...]\r\nTo: c@d\r\n\r\n\
Received: in body\r\nSubject: body\r\n\r\n"
        );
    }

    #[test]
    fn delivery_cleanup() {
        let raw = b"DKIM-Signature: v=1;\r\n b=xyz\r\nAuthentication-Results: a\r\n\
Received: r\r\nSubject: s\r\nX-Received: keep\r\n\r\nDKIM-Signature: body";
        assert_eq!(
            clean_delivery(raw),
            b"Subject: s\r\nX-Received: keep\r\n\r\nDKIM-Signature: body"
        );
    }

    #[test]
    fn no_body_and_lf_and_no_final_newline() {
        assert_eq!(
            clean_submission(b"Subject: x\nA: b\n"),
            b"Subject: [...]\nA: b\n"
        );
        assert_eq!(
            clean_submission(b"A: b\r\nSubject: x"),
            b"A: b\r\nSubject: [...]\r\n"
        );
        assert_eq!(clean_submission(b""), b"");
        assert_eq!(clean_delivery(b"Received: x"), b"");
    }
}
