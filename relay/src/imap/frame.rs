//! IMAP framing: cuts the client's byte stream into whole commands (lines plus their literals)
//! before any parsing, and enforces the caps.
//!
//! Caps live here, in a [`Limits`] the session sets for its current state (before login they are
//! a few KiB; see [`Limits::before_login`]). A line longer than the line cap is skipped to its
//! CRLF and reported; a literal over its cap, or on a command that may not carry one in this state
//! (APPEND before login), is refused before a single byte of it is read: a synchronizing literal
//! gets no continuation, a `LITERAL+` one is read and dropped to its end (so the session stays in
//! sync with the client) or, with [`Limits::refuse_early`], reported at once so the session can
//! close. This module never interprets a command beyond its tag and name, and never allocates
//! more than the caps allow.

/// Longest line (without literals) we accept after login.
pub const LINE_CAP: usize = 64 * 1024;
/// Largest literal outside APPEND after login.
pub const LITERAL_CAP: u64 = 64 * 1024;
/// Largest sum of literal bytes of one command outside APPEND after login (e.g. SETMETADATA with
/// several values); APPEND's sum is capped by its own cap.
pub const COMMAND_LITERALS_CAP: u64 = 4 * LITERAL_CAP;

/// Longest line before login: an ID command at RFC 2971's maximum (30 fields of up to 30
/// octets with values of up to 1,024 octets, about 31.7 KiB quoted), which clients may send
/// before LOGIN; LOGIN and an AUTHENTICATE PLAIN response need far less.
pub const PREAUTH_LINE_CAP: usize = 32 * 1024;
/// Largest literal, and largest sum of the literals of one command, before login (LOGIN's user
/// name and password).
pub const PREAUTH_LITERAL_CAP: u64 = 8 * 1024;

/// What literals a command may carry in the session's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralUse {
    /// None: any literal is refused before it is read (APPEND before login).
    Refused,
    /// Up to [`Limits::literal_cap`] each, [`Limits::command_literals_cap`] in all.
    Small,
    /// A message: up to [`Limits::message_cap`] (APPEND after login).
    Message,
}

/// The caps the framer enforces, set by the session whenever its state may have changed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest line (without literals).
    pub line_cap: usize,
    /// Largest sum of non-literal line bytes of one command.
    pub command_lines_cap: usize,
    /// Largest literal of a [`LiteralUse::Small`] command.
    pub literal_cap: u64,
    /// Largest sum of literal bytes of a [`LiteralUse::Small`] command.
    pub command_literals_cap: u64,
    /// Largest literal (and sum) of a [`LiteralUse::Message`] command.
    pub message_cap: u64,
    /// A refused `LITERAL+` literal is reported as soon as its announcement is seen (the
    /// session is expected to close) instead of after it was read and dropped.
    pub refuse_early: bool,
    /// What literals a command may carry, by its name (the word after the tag, as sent).
    pub literal_use: fn(&[u8]) -> LiteralUse,
}

impl Limits {
    /// After login: APPEND literals up to `message_cap`, others up to [`LITERAL_CAP`].
    pub fn after_login(message_cap: u64) -> Limits {
        Limits {
            line_cap: LINE_CAP,
            command_lines_cap: 4 * LINE_CAP,
            literal_cap: LITERAL_CAP,
            command_literals_cap: COMMAND_LITERALS_CAP,
            message_cap,
            refuse_early: false,
            literal_use: |name| {
                if name.eq_ignore_ascii_case(b"APPEND") {
                    LiteralUse::Message
                } else {
                    LiteralUse::Small
                }
            },
        }
    }

    /// Before login: every cap a few KiB, literals only where `literal_use` allows them, and
    /// refused `LITERAL+` literals reported at once.
    pub fn before_login(literal_use: fn(&[u8]) -> LiteralUse) -> Limits {
        Limits {
            line_cap: PREAUTH_LINE_CAP,
            command_lines_cap: 2 * PREAUTH_LINE_CAP,
            literal_cap: PREAUTH_LITERAL_CAP,
            command_literals_cap: PREAUTH_LITERAL_CAP,
            message_cap: 0,
            refuse_early: true,
            literal_use,
        }
    }
}

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
    /// A literal on a command that may carry none in this state ([`LiteralUse::Refused`]).
    /// `sync` ones got no continuation and the command is over; a `LITERAL+` one is being
    /// discarded (with [`Limits::refuse_early`], only from now on). Refuse the command by `tag`.
    LiteralNotAllowed {
        /// The command's tag (may be empty or garbage).
        tag: Vec<u8>,
        /// The literal was synchronizing.
        sync: bool,
    },
    /// A line over the line cap; it is skipped to its end.
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
///
/// Framed bytes are not removed from the front of the buffer one frame at a time (that would
/// move the rest of the buffer for every frame: quadratic in the bytes buffered). `next` only
/// advances `start`; `push` compacts, at most once, when the framed prefix is at least as long
/// as what is left, so every byte is moved at most about once and framing N bytes is O(N).
#[derive(Debug)]
pub struct Framer {
    /// Received bytes; those before `start` are framed already.
    buf: Vec<u8>,
    /// Start of the unframed bytes in `buf`.
    start: usize,
    /// Where to resume the CRLF search in `buf` (an index into `buf`, at least `start`).
    scanned: usize,
    /// The command being assembled.
    cmd: Vec<u8>,
    /// Non-literal bytes in `cmd`.
    cmd_lines: usize,
    /// Literal bytes in `cmd`.
    cmd_literals: u64,
    /// The command was refused (LITERAL+ over cap, its tag and literal use); drop it when it
    /// ends.
    rejected: Option<(Vec<u8>, LiteralUse)>,
    state: State,
    limits: Limits,
    /// Compactions done and bytes they moved (for tests of the framing cost).
    #[cfg(test)]
    moves: (usize, usize),
}

impl Framer {
    /// A framer with the caps after login, APPEND literals up to `append_cap` bytes.
    pub fn new(append_cap: u64) -> Self {
        Self::with_limits(Limits::after_login(append_cap))
    }

    /// A framer enforcing `limits` (until [`Framer::set_limits`]).
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            cmd: Vec::new(),
            cmd_lines: 0,
            cmd_literals: 0,
            rejected: None,
            state: State::Line,
            limits,
            #[cfg(test)]
            moves: (0, 0),
        }
    }

    /// The caps for the next frames (the session's state changed). A command being read keeps
    /// the use it was given, the caps apply from the next literal on.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The caps in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes held by the framer's buffers (capacity, not length): what this connection's input
    /// costs in memory.
    pub fn held(&self) -> usize {
        self.buf.capacity() + self.cmd.capacity()
    }

    /// Append received bytes.
    pub fn push(&mut self, input: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(input);
    }

    /// Drops the framed prefix of the buffer when that is free (nothing unframed) or paid for
    /// (the prefix is at least as long as the unframed rest that has to move).
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        let rest = self.buf.len() - self.start;
        if rest == 0 {
            self.buf.clear();
        } else if rest <= self.start {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(rest);
            #[cfg(test)]
            {
                self.moves.0 += 1;
                self.moves.1 += rest;
            }
        } else {
            return;
        }
        self.scanned = self.scanned.saturating_sub(self.start);
        self.start = 0;
    }

    /// The unframed bytes.
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Marks `n` more bytes as framed.
    fn consume(&mut self, n: usize) {
        self.start += n;
        self.scanned = self.start;
    }

    /// Frees a large input buffer with nothing unframed in it (after an APPEND or a burst of
    /// pipelined commands), so an idle session holds little memory.
    pub fn shrink_idle(&mut self) {
        if self.buffered() == 0 {
            if self.buf.capacity() > KEEP_BUFFER {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
            self.start = 0;
            self.scanned = 0;
        }
    }

    /// Bytes buffered but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Drop everything buffered and any partial command (after STARTTLS / COMPRESS).
    pub fn discard_buffered(&mut self) {
        self.buf.clear();
        self.start = 0;
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
                    if self.buffered() == 0 {
                        return None;
                    }
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(self.buffered());
                    if !discard {
                        let from = self.start;
                        self.cmd.extend_from_slice(&self.buf[from..from + take]);
                    }
                    self.consume(take);
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
                    match self.find_crlf() {
                        Some(pos) => {
                            self.consume(pos + 2);
                            self.state = State::Line;
                        }
                        None => {
                            // Keep a trailing CR: it may start the CRLF.
                            let keep = usize::from(self.pending().last() == Some(&b'\r'));
                            self.consume(self.buffered() - keep);
                            return None;
                        }
                    }
                }
                State::Line => {
                    let Some(pos) = self.find_crlf() else {
                        // A trailing CR may start the CRLF, so it is no part of the line yet:
                        // whether a line fits never depends on where the reads end.
                        let trailing_cr = usize::from(self.pending().last() == Some(&b'\r'));
                        self.scanned = (self.buf.len() - trailing_cr).max(self.start);
                        if self.buffered() - trailing_cr > self.limits.line_cap {
                            let tag = if self.cmd.is_empty() {
                                tag_of(self.pending())
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
                    if pos > self.limits.line_cap {
                        let tag = if self.cmd.is_empty() {
                            tag_of(self.pending())
                        } else {
                            tag_of(&self.cmd)
                        };
                        self.consume(pos + 2);
                        self.cmd.clear();
                        self.cmd_lines = 0;
                        self.cmd_literals = 0;
                        self.rejected = None;
                        return Some(Frame::LineTooLong { tag });
                    }
                    let from = self.start;
                    self.consume(pos + 2);
                    let line = &self.buf[from..from + pos + 2];
                    if raw && !self.in_command() {
                        return Some(Frame::Line(line[..pos].to_vec()));
                    }
                    self.cmd_lines += line.len();
                    let literal = literal_spec(&line[..pos]);
                    if self.rejected.is_none() {
                        self.cmd.extend_from_slice(line);
                    }
                    if self.cmd_lines > self.limits.command_lines_cap && self.rejected.is_none() {
                        let usage = (self.limits.literal_use)(name_of(&self.cmd));
                        self.rejected = Some((tag_of(&self.cmd), usage));
                        self.cmd.clear();
                    }
                    let Some((len, plus)) = literal else {
                        // The command is complete.
                        self.cmd_lines = 0;
                        self.cmd_literals = 0;
                        if let Some((tag, usage)) = self.rejected.take() {
                            return Some(refusal(tag, false, usage));
                        }
                        return Some(Frame::Command(std::mem::take(&mut self.cmd)));
                    };
                    let usage = match &self.rejected {
                        Some((_, u)) => *u,
                        None => (self.limits.literal_use)(name_of(&self.cmd)),
                    };
                    let (cap, total_cap) = match usage {
                        LiteralUse::Refused => (0, 0),
                        LiteralUse::Small => {
                            (self.limits.literal_cap, self.limits.command_literals_cap)
                        }
                        LiteralUse::Message => (self.limits.message_cap, self.limits.message_cap),
                    };
                    let total = self.cmd_literals.saturating_add(len);
                    self.cmd_literals = total;
                    if self.rejected.is_some()
                        || usage == LiteralUse::Refused
                        || len > cap
                        || total > total_cap
                    {
                        if !plus || self.limits.refuse_early {
                            // No continuation: the client gives up this command. (An early
                            // refusal of a `LITERAL+` literal leaves it to be discarded.)
                            let tag = match self.rejected.take() {
                                Some((t, _)) => t,
                                None => tag_of(&self.cmd),
                            };
                            self.cmd.clear();
                            self.cmd_lines = 0;
                            self.cmd_literals = 0;
                            if plus {
                                self.state = State::Literal {
                                    remaining: len,
                                    discard: true,
                                };
                            }
                            return Some(refusal(tag, !plus, usage));
                        }
                        if self.rejected.is_none() {
                            self.rejected = Some((tag_of(&self.cmd), usage));
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

/// The frame refusing a command whose literal did not fit `usage`.
fn refusal(tag: Vec<u8>, sync: bool, usage: LiteralUse) -> Frame {
    match usage {
        LiteralUse::Refused => Frame::LiteralNotAllowed { tag, sync },
        LiteralUse::Small | LiteralUse::Message => Frame::TooBig {
            tag,
            sync,
            append: usage == LiteralUse::Message,
        },
    }
}

impl Framer {
    /// The offset of the first CRLF in the unframed bytes, searching from `scanned`.
    fn find_crlf(&self) -> Option<usize> {
        let from = self.scanned.clamp(self.start, self.buf.len());
        // memchr's searcher: the byte-by-byte window scan this replaces was most of the
        // framer's time on long lines and literals.
        memchr::memmem::find(&self.buf[from..], b"\r\n").map(|p| p + from - self.start)
    }
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

/// The command's name: its second space-separated word (without a line end), as sent.
fn name_of(cmd: &[u8]) -> &[u8] {
    let line = cmd
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map_or(cmd, |end| &cmd[..end]);
    line.split(|&b| b == b' ').nth(1).unwrap_or(b"")
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

    fn login_only(name: &[u8]) -> LiteralUse {
        if name.eq_ignore_ascii_case(b"LOGIN") {
            LiteralUse::Small
        } else {
            LiteralUse::Refused
        }
    }

    #[test]
    fn before_login_literals_are_refused_unread_or_capped_small() {
        let mut f = Framer::with_limits(Limits::before_login(login_only));
        // A refused command's literal: no continuation, whatever its size.
        f.push(b"a APPEND INBOX {30000000}\r\nb APPEND INBOX (\\Seen) {0}\r\n");
        assert_eq!(
            all(&mut f),
            vec![
                Frame::LiteralNotAllowed {
                    tag: b"a".to_vec(),
                    sync: true
                },
                Frame::LiteralNotAllowed {
                    tag: b"b".to_vec(),
                    sync: true
                }
            ]
        );
        // LOGIN's literals fit the small cap or are too big.
        f.push(format!("c LOGIN {{{}}}\r\n", PREAUTH_LITERAL_CAP + 1).as_bytes());
        assert_eq!(
            all(&mut f),
            vec![Frame::TooBig {
                tag: b"c".to_vec(),
                sync: true,
                append: false
            }]
        );
        f.push(b"d LOGIN {3}\r\n");
        assert_eq!(all(&mut f), vec![Frame::Continue]);
        f.push(b"bob pw\r\n");
        assert_eq!(
            all(&mut f),
            vec![Frame::Command(b"d LOGIN {3}\r\nbob pw\r\n".to_vec())]
        );
        // A refused LITERAL+ literal is reported at once, before any of it arrives, and its
        // bytes are then dropped unbuffered.
        f.push(b"e APPEND INBOX {30000000+}\r\n");
        assert_eq!(
            all(&mut f),
            vec![Frame::LiteralNotAllowed {
                tag: b"e".to_vec(),
                sync: false
            }]
        );
        f.push(&[b'x'; 4096]);
        assert_eq!(all(&mut f), vec![]);
        assert_eq!(f.buffered(), 0);
        assert!(f.held() <= 2 * 4096 + 64);
    }

    #[test]
    fn caps_follow_set_limits() {
        let mut f = Framer::with_limits(Limits::before_login(login_only));
        let mut line = b"a LOGIN ".to_vec();
        line.extend(std::iter::repeat_n(b'a', PREAUTH_LINE_CAP + 1));
        f.push(&line);
        assert_eq!(all(&mut f), vec![Frame::LineTooLong { tag: b"a".to_vec() }]);
        f.push(b"\r\n");
        assert_eq!(all(&mut f), vec![]);
        // After login: the long line and APPEND's literal pass.
        f.set_limits(Limits::after_login(1000));
        f.push(&line);
        f.push(b"\r\nb APPEND INBOX {1000}\r\n");
        let frames = all(&mut f);
        assert!(matches!(frames[0], Frame::Command(_)), "{frames:?}");
        assert_eq!(frames[1], Frame::Continue);
    }

    /// `a1 ` and `x`s: a line of `len` bytes without its CRLF.
    fn line_of(len: usize) -> Vec<u8> {
        let mut line = b"a1 ".to_vec();
        line.extend(std::iter::repeat_n(b'x', len - 3));
        line
    }

    /// Frames `input` pushed in pieces cut at `cuts` (ascending), taking frames after each push.
    fn framed_cut(limits: Limits, input: &[u8], cuts: &[usize]) -> Vec<Frame> {
        let mut f = Framer::with_limits(limits);
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([input.len()].iter()) {
            f.push(&input[from..cut]);
            out.extend(all(&mut f));
            from = cut;
        }
        out
    }

    #[test]
    fn line_cap_does_not_depend_on_where_reads_end() {
        for (limits, cap) in [
            (Limits::after_login(1000), LINE_CAP),
            (Limits::before_login(login_only), PREAUTH_LINE_CAP),
        ] {
            for len in [cap - 1, cap, cap + 1] {
                let line = line_of(len);
                let mut input = line.clone();
                input.extend_from_slice(b"\r\nb NOOP\r\n");
                let first = if len <= cap {
                    let mut cmd = line.clone();
                    cmd.extend_from_slice(b"\r\n");
                    Frame::Command(cmd)
                } else {
                    Frame::LineTooLong {
                        tag: b"a1".to_vec(),
                    }
                };
                let expected = vec![first, Frame::Command(b"b NOOP\r\n".to_vec())];
                assert_eq!(framed_cut(limits, &input, &[]), expected, "{len} whole");
                // Every cut near the line's end (before, at and after the CR and the LF), alone
                // and in pairs (the CR then arrives alone), and a few early ones.
                let near: Vec<usize> = (len - 2..=len + 4).collect();
                for &a in near.iter().chain([1, 3, 4].iter()) {
                    assert_eq!(framed_cut(limits, &input, &[a]), expected, "{len} cut {a}");
                    for &b in near.iter().filter(|&&b| b > a) {
                        assert_eq!(
                            framed_cut(limits, &input, &[a, b]),
                            expected,
                            "{len} cuts {a} {b}"
                        );
                    }
                }
                // The reported repro: the read ends between CR and LF.
                assert_eq!(framed_cut(limits, &input, &[len + 1]), expected);
                // Byte by byte over the last stretch.
                let cuts: Vec<usize> = (len - 8..input.len()).collect();
                assert_eq!(
                    framed_cut(limits, &input, &cuts),
                    expected,
                    "{len} bytewise"
                );
            }
        }
    }

    #[test]
    fn framing_moves_each_byte_about_once() {
        let input = b"a\r\n".repeat(256 * 1024 / 3);
        let count = input.len() / 3;
        // One push: nothing is ever moved.
        let mut f = Framer::new(1000);
        f.push(&input);
        let frames = all(&mut f);
        assert_eq!(frames.len(), count);
        assert!(frames
            .iter()
            .all(|x| *x == Frame::Command(b"a\r\n".to_vec())));
        assert_eq!(f.moves, (0, 0));
        assert_eq!(f.buffered(), 0);
        f.shrink_idle();
        assert_eq!(f.held(), f.cmd.capacity());
        assert!(f.held() <= KEEP_BUFFER);

        // Reads of 1000 bytes, framed after each: only a partial line is ever moved, at most
        // once per push.
        let mut f = Framer::new(1000);
        let mut n = 0;
        let mut pushes = 0;
        for chunk in input.chunks(1000) {
            f.push(chunk);
            pushes += 1;
            n += all(&mut f).len();
        }
        assert_eq!(n, count);
        assert!(f.moves.0 <= pushes, "{:?}", f.moves);
        assert!(f.moves.1 <= 2 * pushes, "{:?}", f.moves);

        // Frames taken a few at a time between small reads (a session that stops framing while
        // it waits): the bytes moved stay within the bytes pushed.
        let mut f = Framer::new(1000);
        let mut n = 0;
        for chunk in input.chunks(700) {
            f.push(chunk);
            for _ in 0..100 {
                if f.next(false).is_some() {
                    n += 1;
                }
            }
        }
        n += all(&mut f).len();
        assert_eq!(n, count);
        assert!(f.moves.1 <= input.len(), "{:?}", f.moves);
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
