//! The byte cursor the command parser reads with: peek, eat a literal, take_while, expect CRLF,
//! case-insensitive keywords, and the IMAP lexical items (atom, quoted, literal, astring, flag,
//! sequence set). Errors are the expected grammar as `&'static str`.

use super::types::{SeqSet, STAR};
use crate::store::Flag;

/// A parse step's result: the error is what was expected.
pub(super) type R<T> = Result<T, &'static str>;

/// Byte cursor over one command.
pub(super) struct Cursor<'a> {
    buf: &'a [u8],
    /// Read position; the parser saves and restores it to backtrack.
    pub(super) pos: usize,
}

fn is_atom_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !b"(){ %*\"\\]".contains(&b)
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    pub(super) fn eat(&mut self, s: &[u8]) -> bool {
        if self.buf[self.pos..].starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    pub(super) fn eat_ci(&mut self, s: &[u8]) -> bool {
        let rest = &self.buf[self.pos..];
        if rest.len() >= s.len() && rest[..s.len()].eq_ignore_ascii_case(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    pub(super) fn expect(&mut self, s: &[u8], what: &'static str) -> R<()> {
        if self.eat(s) {
            Ok(())
        } else {
            Err(what)
        }
    }

    pub(super) fn expect_ci(&mut self, s: &[u8], what: &'static str) -> R<()> {
        if self.eat_ci(s) {
            Ok(())
        } else {
            Err(what)
        }
    }

    pub(super) fn sp(&mut self) -> R<()> {
        self.expect(b" ", "SP")
    }

    pub(super) fn crlf(&mut self) -> R<()> {
        if self.pos + 2 == self.buf.len() && self.eat(b"\r\n") {
            Ok(())
        } else {
            Err("end of command")
        }
    }

    pub(super) fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        // Only ASCII predicates are used, so this is valid UTF-8.
        std::str::from_utf8(&self.buf[start..self.pos]).unwrap_or("")
    }

    pub(super) fn tag(&mut self) -> R<String> {
        let t = self.take_while(|b| is_atom_char(b) && b != b'+');
        if t.is_empty() {
            return Err("tag");
        }
        Ok(t.to_owned())
    }

    pub(super) fn atom(&mut self) -> R<String> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            return Err("atom");
        }
        Ok(a.to_owned())
    }

    pub(super) fn number(&mut self) -> R<u32> {
        let d = self.take_while(|b| b.is_ascii_digit());
        d.parse().map_err(|_| "number")
    }

    pub(super) fn number64(&mut self) -> R<u64> {
        let d = self.take_while(|b| b.is_ascii_digit());
        d.parse().map_err(|_| "number")
    }

    pub(super) fn quoted(&mut self) -> R<String> {
        self.expect(b"\"", "quoted string")?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\r') | Some(b'\n') => return Err("closing '\"'"),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b @ (b'"' | b'\\')) => {
                            out.push(b);
                            self.pos += 1;
                        }
                        _ => return Err("quoted-special after '\\'"),
                    }
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| "UTF-8")
    }

    pub(super) fn literal(&mut self) -> R<&'a [u8]> {
        self.expect(b"{", "literal")?;
        let n = self.number()? as usize;
        self.eat(b"+");
        self.expect(b"}\r\n", "literal")?;
        if self.buf.len() - self.pos < n {
            return Err("literal data");
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// astring as raw bytes (atom chars incl. `]`, quoted or literal).
    pub(super) fn astring(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') => Ok(self.quoted()?.into_bytes()),
            Some(b'{') => Ok(self.literal()?.to_vec()),
            _ => {
                let a = self.take_while(|b| is_atom_char(b) || b == b']');
                if a.is_empty() {
                    return Err("astring");
                }
                Ok(a.as_bytes().to_vec())
            }
        }
    }

    pub(super) fn astring_utf8(&mut self) -> R<String> {
        String::from_utf8(self.astring()?).map_err(|_| "UTF-8")
    }

    pub(super) fn nstring(&mut self) -> R<Option<Vec<u8>>> {
        match self.peek() {
            Some(b'"') => Ok(Some(self.quoted()?.into_bytes())),
            Some(b'{') => Ok(Some(self.literal()?.to_vec())),
            _ => {
                if self.eat_ci(b"NIL") {
                    Ok(None)
                } else {
                    Err("string or NIL")
                }
            }
        }
    }

    pub(super) fn mailbox(&mut self) -> R<String> {
        let m = self.astring_utf8()?;
        if m.eq_ignore_ascii_case("INBOX") {
            Ok("INBOX".into())
        } else {
            Ok(m)
        }
    }

    pub(super) fn list_mailbox(&mut self) -> R<String> {
        match self.peek() {
            Some(b'"') | Some(b'{') => self.astring_utf8(),
            _ => {
                let a = self.take_while(|b| {
                    (is_atom_char(b) || b == b'%' || b == b'*' || b == b']') && b != b'('
                });
                if a.is_empty() {
                    return Err("list-mailbox");
                }
                Ok(a.to_owned())
            }
        }
    }

    pub(super) fn entry_name(&mut self) -> R<String> {
        let e = self.astring_utf8()?.to_ascii_lowercase();
        if !(e.starts_with("/private/") || e.starts_with("/shared/"))
            || e.ends_with('/')
            || e.contains("//")
            || e.contains('*')
            || e.contains('%')
        {
            return Err("entry name /private/.. or /shared/..");
        }
        Ok(e)
    }

    pub(super) fn flag(&mut self) -> R<Flag> {
        if self.eat(b"\\") {
            let a = self.atom()?.to_ascii_uppercase();
            return match a.as_str() {
                "SEEN" => Ok(Flag::Seen),
                "ANSWERED" => Ok(Flag::Answered),
                "FLAGGED" => Ok(Flag::Flagged),
                "DELETED" => Ok(Flag::Deleted),
                "DRAFT" => Ok(Flag::Draft),
                _ => Err("system flag"),
            };
        }
        Ok(Flag::Keyword(self.atom()?))
    }

    pub(super) fn flag_list(&mut self) -> R<Vec<Flag>> {
        self.expect(b"(", "flag list")?;
        let mut v = Vec::new();
        if self.eat(b")") {
            return Ok(v);
        }
        loop {
            v.push(self.flag()?);
            if !self.eat(b" ") {
                break;
            }
        }
        self.expect(b")", "')'")?;
        Ok(v)
    }

    pub(super) fn seq_number(&mut self) -> R<u32> {
        if self.eat(b"*") {
            return Ok(STAR);
        }
        let n = self.number()?;
        if n == 0 {
            return Err("nonzero sequence number");
        }
        Ok(n)
    }

    pub(super) fn seq_set(&mut self) -> R<SeqSet> {
        let mut v = Vec::new();
        loop {
            let a = self.seq_number()?;
            let b = if self.eat(b":") {
                self.seq_number()?
            } else {
                a
            };
            v.push((a, b));
            if !self.eat(b",") {
                break;
            }
        }
        Ok(SeqSet(v))
    }

    /// Skip a parenthesized list with nested lists, quoted strings and literals.
    pub(super) fn skip_parenthesized(&mut self) -> R<()> {
        self.expect(b"(", "'('")?;
        let mut depth = 1u32;
        while depth > 0 {
            match self.peek() {
                None => return Err("')'"),
                Some(b'(') => {
                    depth += 1;
                    self.pos += 1;
                }
                Some(b')') => {
                    depth -= 1;
                    self.pos += 1;
                }
                Some(b'"') => {
                    self.quoted()?;
                }
                Some(b'{') => {
                    self.literal()?;
                }
                Some(b'\r') | Some(b'\n') => return Err("')'"),
                Some(_) => self.pos += 1,
            }
        }
        Ok(())
    }
}
