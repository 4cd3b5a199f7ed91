//! IMAP framing: cuts the client's byte stream into whole commands (lines plus their literals)
//! before any parsing, and enforces the caps.
//!
//! Caps live here: a line longer than [`LINE_CAP`] is skipped to its CRLF and reported; a literal
//! over its cap is refused before a single byte of it is read (a synchronizing literal gets no
//! continuation, a `LITERAL+` one is read and dropped to its end) so the session stays in sync with
//! the client. This module never interprets a command beyond its tag and (for the APPEND literal
//! cap) its name, and never allocates more than the caps allow.

/// Longest line (without literals) we accept.
pub const LINE_CAP: usize = 64 * 1024;
/// Largest literal outside APPEND.
pub const LITERAL_CAP: u64 = 64 * 1024;
/// Largest sum of non-literal line bytes of one command.
const COMMAND_LINES_CAP: usize = 4 * LINE_CAP;
/// Largest sum of literal bytes of one command outside APPEND (e.g. SETMETADATA with several
/// values); APPEND's sum is capped by its own cap.
pub const COMMAND_LITERALS_CAP: u64 = 4 * LITERAL_CAP;

/// What the framer found in its buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete command: its lines with CRLFs and literal bytes inline, as sent.
    Command(Vec<u8>),
    /// A raw line without CRLF (IDLE's `DONE`, an AUTHENTICATE response).
    Line(Vec<u8>),
    /// The client announced a synchronizing literal that fits: send a continuation request.
    Continue,
    /// A literal over its cap. `sync` literals got no continuation and the command is over; a
    /// `LITERAL+` one was discarded with the rest of its command. Refuse the command by `tag`.
    TooBig {
        /// The command's tag (may be empty or garbage).
        tag: Vec<u8>,
        /// The literal was synchronizing.
        sync: bool,
        /// The command was APPEND (the cap was the message size limit).
        append: bool,
    },
    /// A line over [`LINE_CAP`]; it was skipped to its end.
    LineTooLong {
        /// The command's tag, when it could be seen.
        tag: Vec<u8>,
    },
}

#[derive(Debug)]
enum State {
    /// Reading a line of a command (or a raw line).
    Line,
    /// Reading `remaining` literal bytes; dropped when `discard`.
    Literal { remaining: u64, discard: bool },
    /// Skipping an oversize line to its CRLF.
    SkipLine,
}

/// Buffers up to this capacity are kept while empty; larger ones are freed.
const KEEP_BUFFER: usize = 4 * 1024;

/// Incremental framer. Feed with [`Framer::push`], take frames with [`Framer::next`].
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// Where to resume the CRLF search in `buf`.
    scanned: usize,
    /// The command being assembled.
    cmd: Vec<u8>,
    /// Non-literal bytes in `cmd`.
    cmd_lines: usize,
    /// Literal bytes in `cmd`.
    cmd_literals: u64,
    /// The command was refused (LITERAL+ over cap); drop it when it ends.
    rejected: Option<(Vec<u8>, bool)>,
    state: State,
    /// Literal cap for APPEND.
    append_cap: u64,
}

impl Framer {
    /// A framer whose APPEND literals may be up to `append_cap` bytes.
    pub fn new(append_cap: u64) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            cmd: Vec::new(),
            cmd_lines: 0,
            cmd_literals: 0,
            rejected: None,
            state: State::Line,
            append_cap,
        }
    }

    /// Append received bytes.
    pub fn push(&mut self, input: &[u8]) {
        self.buf.extend_from_slice(input);
    }

    /// Frees a large, empty input buffer (after an APPEND or a burst of pipelined commands), so
    /// an idle session holds little memory.
    pub fn shrink_idle(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
            self.scanned = 0;
        }
    }

    /// Bytes buffered but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Drop everything buffered and any partial command (after STARTTLS / COMPRESS).
    pub fn discard_buffered(&mut self) {
        self.buf.clear();
        self.scanned = 0;
        self.cmd.clear();
        self.cmd_lines = 0;
        self.cmd_literals = 0;
        self.rejected = None;
        self.state = State::Line;
    }

    /// Whether a command is partly read (a literal or continuation line is awaited).
    pub fn in_command(&self) -> bool {
        !self.cmd.is_empty() || self.rejected.is_some()
    }

    /// The next frame, if the buffer holds one. With `raw`, the next line is returned as
    /// [`Frame::Line`] without literal interpretation (only valid between commands).
    pub fn next(&mut self, raw: bool) -> Option<Frame> {
        loop {
            match self.state {
                State::Literal { remaining, discard } => {
                    if self.buf.is_empty() {
                        return None;
                    }
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(self.buf.len());
                    if !discard {
                        self.cmd.extend_from_slice(&self.buf[..take]);
                    }
                    self.buf.drain(..take);
                    self.scanned = 0;
                    let left = remaining - take as u64;
                    if left > 0 {
                        self.state = State::Literal {
                            remaining: left,
                            discard,
                        };
                        return None;
                    }
                    self.state = State::Line;
                }
                State::SkipLine => {
                    match find_crlf(&self.buf, self.scanned) {
                        Some(pos) => {
                            self.buf.drain(..pos + 2);
                            self.scanned = 0;
                            self.state = State::Line;
                        }
                        None => {
                            // Keep a trailing CR: it may start the CRLF.
                            let keep = usize::from(self.buf.last() == Some(&b'\r'));
                            let cut = self.buf.len() - keep;
                            self.buf.drain(..cut);
                            self.scanned = 0;
                            return None;
                        }
                    }
                }
                State::Line => {
                    let Some(pos) = find_crlf(&self.buf, self.scanned) else {
                        self.scanned = self.buf.len().saturating_sub(1);
                        if self.buf.len() > LINE_CAP {
                            let tag = if self.cmd.is_empty() {
                                tag_of(&self.buf)
                            } else {
                                tag_of(&self.cmd)
                            };
                            self.state = State::SkipLine;
                            self.cmd.clear();
                            self.cmd_lines = 0;
                            self.cmd_literals = 0;
                            self.rejected = None;
                            return Some(Frame::LineTooLong { tag });
                        }
                        return None;
                    };
                    self.scanned = 0;
                    if pos > LINE_CAP {
                        let tag = if self.cmd.is_empty() {
                            tag_of(&self.buf)
                        } else {
                            tag_of(&self.cmd)
                        };
                        self.buf.drain(..pos + 2);
                        self.cmd.clear();
                        self.cmd_lines = 0;
                        self.cmd_literals = 0;
                        self.rejected = None;
                        return Some(Frame::LineTooLong { tag });
                    }
                    let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                    if raw && !self.in_command() {
                        return Some(Frame::Line(line[..pos].to_vec()));
                    }
                    self.cmd_lines += line.len();
                    let literal = literal_spec(&line[..pos]);
                    if self.rejected.is_none() {
                        self.cmd.extend_from_slice(&line);
                    }
                    if self.cmd_lines > COMMAND_LINES_CAP && self.rejected.is_none() {
                        let append = is_append(&self.cmd);
                        self.rejected = Some((tag_of(&self.cmd), append));
                        self.cmd.clear();
                    }
                    let Some((len, plus)) = literal else {
                        // The command is complete.
                        self.cmd_lines = 0;
                        self.cmd_literals = 0;
                        if let Some((tag, append)) = self.rejected.take() {
                            return Some(Frame::TooBig {
                                tag,
                                sync: false,
                                append,
                            });
                        }
                        return Some(Frame::Command(std::mem::take(&mut self.cmd)));
                    };
                    let append = match &self.rejected {
                        Some((_, a)) => *a,
                        None => is_append(&self.cmd),
                    };
                    let (cap, total_cap) = if append {
                        (self.append_cap, self.append_cap)
                    } else {
                        (LITERAL_CAP, COMMAND_LITERALS_CAP)
                    };
                    let total = self.cmd_literals.saturating_add(len);
                    self.cmd_literals = total;
                    if self.rejected.is_some() || len > cap || total > total_cap {
                        if !plus {
                            // No continuation: the client gives up this command.
                            let tag = match self.rejected.take() {
                                Some((t, _)) => t,
                                None => tag_of(&self.cmd),
                            };
                            self.cmd.clear();
                            self.cmd_lines = 0;
                            self.cmd_literals = 0;
                            return Some(Frame::TooBig {
                                tag,
                                sync: true,
                                append,
                            });
                        }
                        if self.rejected.is_none() {
                            self.rejected = Some((tag_of(&self.cmd), append));
                            self.cmd.clear();
                        }
                        self.state = State::Literal {
                            remaining: len,
                            discard: true,
                        };
                        continue;
                    }
                    self.state = State::Literal {
                        remaining: len,
                        discard: false,
                    };
                    if !plus {
                        return Some(Frame::Continue);
                    }
                }
            }
        }
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let from = from.min(buf.len());
    buf[from..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| p + from)
}

/// The first space-separated word of a command, at most 64 bytes.
fn tag_of(cmd: &[u8]) -> Vec<u8> {
    let end = cmd
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .unwrap_or(cmd.len())
        .min(64);
    cmd[..end].to_vec()
}

/// Whether the command's name (second word, or third after `UID`) is APPEND.
fn is_append(cmd: &[u8]) -> bool {
    let mut words = cmd.split(|&b| b == b' ');
    let _tag = words.next();
    words
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case(b"APPEND"))
}

/// `{123}` or `{123+}` at the end of a line.
pub fn literal_spec(line: &[u8]) -> Option<(u64, bool)> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let mut digits = &inner[open + 1..];
    let plus = if let Some(d) = digits.strip_suffix(b"+") {
        digits = d;
        true
    } else {
        false
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((n, plus))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn all(f: &mut Framer) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(x) = f.next(false) {
            out.push(x);
        }
        out
    }

    #[test]
    fn simple_lines_and_partial_input() {
        let mut f = Framer::new(1000);
        f.push(b"a1 NOOP\r\na2 CAPA");
        assert_eq!(all(&mut f), vec![Frame::Command(b"a1 NOOP\r\n".to_vec())]);
        f.push(b"BILITY\r");
        assert_eq!(all(&mut f), vec![]);
        f.push(b"\n");
        assert_eq!(
            all(&mut f),
            vec![Frame::Command(b"a2 CAPABILITY\r\n".to_vec())]
        );
    }

    #[test]
    fn sync_literal_asks_for_continuation() {
        let mut f = Framer::new(1000);
        f.push(b"a LOGIN {3}\r\n");
        assert_eq!(all(&mut f), vec![Frame::Continue]);
        f.push(b"bob {2+}\r\npw\r\n");
        assert_eq!(
            all(&mut f),
            vec![Frame::Command(
                b"a LOGIN {3}\r\nbob {2+}\r\npw\r\n".to_vec()
            )]
        );
    }

    #[test]
    fn sync_literal_over_cap_is_refused_without_reading() {
        let mut f = Framer::new(10);
        f.push(b"a APPEND INBOX {11}\r\nb NOOP\r\n");
        assert_eq!(
            all(&mut f),
            vec![
                Frame::TooBig {
                    tag: b"a".to_vec(),
                    sync: true,
                    append: true
                },
                Frame::Command(b"b NOOP\r\n".to_vec())
            ]
        );
        // Outside APPEND the cap is LITERAL_CAP.
        f.push(format!("c LOGIN {{{}}}\r\n", LITERAL_CAP + 1).as_bytes());
        assert_eq!(
            all(&mut f),
            vec![Frame::TooBig {
                tag: b"c".to_vec(),
                sync: true,
                append: false
            }]
        );
    }

    #[test]
    fn literal_plus_over_cap_is_discarded_to_its_end() {
        let mut f = Framer::new(4);
        f.push(b"a APPEND INBOX {6+}\r\nabc");
        assert_eq!(all(&mut f), vec![]);
        f.push(b"def\r\nb NOOP\r\n");
        assert_eq!(
            all(&mut f),
            vec![
                Frame::TooBig {
                    tag: b"a".to_vec(),
                    sync: false,
                    append: true
                },
                Frame::Command(b"b NOOP\r\n".to_vec())
            ]
        );
    }

    #[test]
    fn literal_sum_of_one_command_is_capped() {
        let mut f = Framer::new(1000);
        let chunk = LITERAL_CAP as usize;
        let mut input = b"a SETMETADATA INBOX (".to_vec();
        for i in 0..5 {
            input.extend_from_slice(format!("/private/k{i} {{{chunk}+}}\r\n").as_bytes());
            input.extend(std::iter::repeat_n(b'v', chunk));
            input.push(b' ');
        }
        input.extend_from_slice(b"/private/z NIL)\r\nb NOOP\r\n");
        f.push(&input);
        assert_eq!(
            all(&mut f),
            vec![
                Frame::TooBig {
                    tag: b"a".to_vec(),
                    sync: false,
                    append: false
                },
                Frame::Command(b"b NOOP\r\n".to_vec())
            ]
        );
    }

    #[test]
    fn long_line_is_skipped() {
        let mut f = Framer::new(4);
        let mut long = b"x1 ".to_vec();
        long.extend(std::iter::repeat_n(b'a', LINE_CAP + 10));
        f.push(&long);
        assert_eq!(
            all(&mut f),
            vec![Frame::LineTooLong {
                tag: b"x1".to_vec()
            }]
        );
        f.push(b"aaaa\r\nb NOOP\r\n");
        assert_eq!(all(&mut f), vec![Frame::Command(b"b NOOP\r\n".to_vec())]);
    }

    #[test]
    fn raw_lines() {
        let mut f = Framer::new(4);
        f.push(b"DONE {5}\r\n");
        assert_eq!(f.next(true), Some(Frame::Line(b"DONE {5}".to_vec())));
    }

    #[test]
    fn literal_spec_parses() {
        assert_eq!(literal_spec(b"a {12}"), Some((12, false)));
        assert_eq!(literal_spec(b"a {12+}"), Some((12, true)));
        assert_eq!(literal_spec(b"a {}"), None);
        assert_eq!(literal_spec(b"a {1a}"), None);
        assert_eq!(literal_spec(b"a {99999999999999999999}"), None);
    }
}
