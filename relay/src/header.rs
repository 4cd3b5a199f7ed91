//! RFC 5322 header sections as bytes: where one header field ends. A field is its first line
//! plus the folded continuation lines after it (lines starting with SP or HTAB, RFC 5322 §2.2.3).
//!
//! Shared by the two walkers over raw header fields: `policy::headers` (header privacy rewrites)
//! and `imap::bodystructure` (`HEADER.FIELDS`, ENVELOPE, SEARCH HEADER). Works on bytes, accepts
//! CRLF and bare LF, never panics.

/// End of the header field starting at `start`: just after the first line break not followed by
/// SP or HTAB, or `header.len()` if there is none.
///
/// # Panics
/// If `start > header.len()`.
pub fn field_end(header: &[u8], start: usize) -> usize {
    let mut end = start;
    while let Some(p) = memchr::memchr(b'\n', &header[end..]) {
        end += p + 1;
        if !(end < header.len() && (header[end] == b' ' || header[end] == b'\t')) {
            return end;
        }
    }
    header.len()
}

#[cfg(test)]
mod tests {
    use super::field_end;

    #[test]
    fn folded_fields_end_at_the_next_unfolded_line() {
        let h = b"Subject: a\r\n b\r\n\tc\r\nFrom: x\nTo: y";
        let first = field_end(h, 0);
        assert_eq!(&h[..first], b"Subject: a\r\n b\r\n\tc\r\n");
        let second = field_end(h, first);
        assert_eq!(&h[first..second], b"From: x\n");
        assert_eq!(field_end(h, second), h.len());
        assert_eq!(field_end(h, h.len()), h.len());
        // The empty line ending the section is a field of its own here; callers stop at it.
        assert_eq!(field_end(b"A: b\r\n\r\n body", 0), 6);
    }
}
