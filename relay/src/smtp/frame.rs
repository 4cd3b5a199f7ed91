//! SMTP framing: the line receiver (commands, AUTH responses) and the DATA receiver.
//!
//! Framing runs before any parsing, so the caps and the anti-smuggling rule live here:
//! - a line ends only at CRLF; a bare LF (one not preceded by CR) is reported, never taken as a line
//!   end, in commands and in DATA alike (SMTP smuggling, CVE-2023-51764 and friends);
//! - a command line longer than [`MAX_LINE_LEN`] is discarded up to its end and reported once, so
//!   the session stays in sync;
//! - DATA ends only at CRLF `.` CRLF; leading dots are un-stuffed (RFC 5321 §4.5.2); bytes over the
//!   size limit are counted and dropped, never buffered.
//!
//! Both receivers are incremental: they take whatever bytes arrived, say how many they consumed and
//! keep their state between calls, so a message may arrive split at any byte. They do no I/O.

/// Longest command line accepted, CRLF included. RFC 5321 §4.5.3.1.4 sets 512 octets as the
/// minimum a server must accept; extensions (AUTH initial responses, RFC 4954 §4) need more.
pub const MAX_LINE_LEN: usize = 4096;

/// What the line receiver found.
#[derive(Debug, PartialEq, Eq)]
pub enum LineEvent<'a> {
    /// A complete line, without its CRLF.
    Line(&'a [u8]),
    /// A line longer than [`MAX_LINE_LEN`] ended; its bytes were discarded.
    TooLong,
    /// An LF not preceded by CR.
    BareLf,
}

/// Splits input into CRLF-terminated lines.
#[derive(Debug, Default)]
pub struct LineReceiver {
    /// Inside an over-long line: bytes are dropped until its LF.
    discarding: bool,
    /// While discarding: whether the last dropped byte was CR.
    last_was_cr: bool,
}

impl LineReceiver {
    /// Looks for the next line in `buf`. Returns the number of bytes consumed and the event, if
    /// one completed. `(0, None)` means more input is needed; while discarding an over-long line
    /// the bytes are consumed (`(n, None)`).
    pub fn next<'a>(&mut self, buf: &'a [u8]) -> (usize, Option<LineEvent<'a>>) {
        let lf = memchr::memchr(b'\n', buf);
        if self.discarding {
            return match lf {
                Some(pos) => {
                    let cr = if pos == 0 {
                        self.last_was_cr
                    } else {
                        buf[pos - 1] == b'\r'
                    };
                    self.discarding = false;
                    self.last_was_cr = false;
                    let event = if cr {
                        LineEvent::TooLong
                    } else {
                        LineEvent::BareLf
                    };
                    (pos + 1, Some(event))
                }
                None => {
                    if let Some(&last) = buf.last() {
                        self.last_was_cr = last == b'\r';
                    }
                    (buf.len(), None)
                }
            };
        }
        match lf {
            Some(pos) => {
                if pos == 0 || buf[pos - 1] != b'\r' {
                    (pos + 1, Some(LineEvent::BareLf))
                } else if pos + 1 > MAX_LINE_LEN {
                    (pos + 1, Some(LineEvent::TooLong))
                } else {
                    (pos + 1, Some(LineEvent::Line(&buf[..pos - 1])))
                }
            }
            // Even if the next byte were the LF, the line would be too long: start dropping.
            None if buf.len() >= MAX_LINE_LEN => {
                self.discarding = true;
                self.last_was_cr = buf.last() == Some(&b'\r');
                (buf.len(), None)
            }
            None => (0, None),
        }
    }
}

/// How a DATA section ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataEnd {
    /// CRLF `.` CRLF was received.
    Complete,
    /// A bare LF was received; the message must be refused and the connection closed.
    BareLf,
}

/// Where the DATA receiver is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// At the start of a line.
    LineStart,
    /// A `.` at the start of a line (held back: stuffing dot or terminator).
    Dot,
    /// `.` CR at the start of a line (held back: maybe the terminator).
    DotCr,
    /// Inside a line.
    Mid,
    /// Inside a line after a CR (held back: maybe the line end).
    MidCr,
}

/// Receives a DATA section: un-stuffs dots, finds the terminator, refuses bare LF, enforces the
/// size limit (RFC 5321 §4.5.2, §4.5.3.1.10).
#[derive(Debug)]
pub struct DataReceiver {
    state: DataState,
    body: Vec<u8>,
    /// Message bytes seen (after un-stuffing), including dropped ones.
    size: u64,
    limit: u64,
}

impl DataReceiver {
    /// A receiver for a message of at most `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            state: DataState::LineStart,
            body: Vec::new(),
            size: 0,
            limit,
        }
    }

    /// Whether the message exceeded the limit (its excess bytes were dropped).
    pub fn is_too_large(&self) -> bool {
        self.size > self.limit
    }

    /// The received message (meaningful after `DataEnd::Complete` and when not too large).
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len() as u64);
        if self.size <= self.limit {
            self.body.extend_from_slice(bytes);
        } else if !self.body.is_empty() {
            // Over the limit: nothing of this message will be kept.
            self.body = Vec::new();
        }
    }

    /// Consumes bytes from `buf`. Returns how many were consumed and whether DATA ended; bytes
    /// after the end are not consumed.
    pub fn feed(&mut self, buf: &[u8]) -> (usize, Option<DataEnd>) {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                DataState::Mid => {
                    // Fast path: copy up to the next CR or LF in one go.
                    let rest = &buf[i..];
                    let n = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                    if n > 0 {
                        self.emit(&rest[..n]);
                        i += n;
                        continue;
                    }
                    if b == b'\n' {
                        return (i + 1, Some(DataEnd::BareLf));
                    }
                    self.state = DataState::MidCr;
                }
                DataState::LineStart => match b {
                    b'.' => self.state = DataState::Dot,
                    b'\r' => self.state = DataState::MidCr,
                    b'\n' => return (i + 1, Some(DataEnd::BareLf)),
                    _ => {
                        self.emit(&[b]);
                        self.state = DataState::Mid;
                    }
                },
                DataState::Dot => match b {
                    b'\r' => self.state = DataState::DotCr,
                    b'\n' => return (i + 1, Some(DataEnd::BareLf)),
                    // The leading dot was a stuffing dot: drop it.
                    _ => {
                        self.emit(&[b]);
                        self.state = DataState::Mid;
                    }
                },
                DataState::DotCr => {
                    if b == b'\n' {
                        self.state = DataState::LineStart;
                        return (i + 1, Some(DataEnd::Complete));
                    }
                    // `.` CR x: the dot was stuffing, the CR is content; look at x again as in
                    // the middle of a line after a CR.
                    self.state = DataState::MidCr;
                    continue;
                }
                DataState::MidCr => match b {
                    b'\n' => {
                        self.emit(b"\r\n");
                        self.state = DataState::LineStart;
                    }
                    b'\r' => self.emit(b"\r"),
                    _ => {
                        self.emit(&[b'\r', b]);
                        self.state = DataState::Mid;
                    }
                },
            }
            i += 1;
        }
        (buf.len(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<String> {
        let mut rx = LineReceiver::default();
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let (n, ev) = rx.next(&input[pos..]);
            pos += n;
            match ev {
                Some(LineEvent::Line(l)) => out.push(String::from_utf8_lossy(l).into_owned()),
                Some(other) => out.push(format!("{other:?}")),
                None if n == 0 || pos == input.len() => return out,
                None => {}
            }
        }
    }

    #[test]
    fn splits_crlf_lines_and_refuses_bare_lf() {
        assert_eq!(lines(b"A\r\nB\r\n"), ["A", "B"]);
        assert_eq!(lines(b"A\nB\r\n"), ["BareLf", "B"]);
        assert_eq!(lines(b"\n"), ["BareLf"]);
        assert_eq!(lines(b"A\r\nB"), ["A"]);
        // A CR elsewhere is not a line end.
        assert_eq!(lines(b"A\rB\r\n"), ["A\rB"]);
    }

    #[test]
    fn line_cap_discards_to_line_end() {
        let mut long = vec![b'x'; MAX_LINE_LEN - 2];
        long.extend_from_slice(b"\r\n");
        assert_eq!(
            lines(&long).len(),
            1,
            "a line of exactly the cap is accepted"
        );
        let mut too_long = vec![b'x'; MAX_LINE_LEN - 1];
        too_long.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(lines(&too_long), ["TooLong", "NOOP"]);
        let mut huge = vec![b'x'; 3 * MAX_LINE_LEN];
        huge.extend_from_slice(b"\nNOOP\r\n");
        assert_eq!(lines(&huge), ["BareLf", "NOOP"]);
    }

    #[test]
    fn line_cap_discards_across_chunks() {
        let mut rx = LineReceiver::default();
        let chunk = vec![b'y'; MAX_LINE_LEN];
        assert_eq!(rx.next(&chunk), (MAX_LINE_LEN, None));
        assert_eq!(rx.next(b"yyy\r"), (4, None));
        assert_eq!(rx.next(b"\nQUIT\r\n"), (1, Some(LineEvent::TooLong)));
        assert_eq!(rx.next(b"QUIT\r\n"), (6, Some(LineEvent::Line(b"QUIT"))));
    }

    fn data(input: &[u8], limit: u64) -> (usize, Option<DataEnd>, Vec<u8>, bool) {
        let mut rx = DataReceiver::new(limit);
        let (n, end) = rx.feed(input);
        let big = rx.is_too_large();
        (n, end, rx.into_body(), big)
    }

    #[test]
    fn data_unstuffs_and_stops_at_terminator() {
        let input = b"a\r\n..b\r\n.c\r\n\r\n.\r\nMAIL";
        let (n, end, body, big) = data(input, 1000);
        assert_eq!(end, Some(DataEnd::Complete));
        assert_eq!(&input[n..], b"MAIL");
        assert_eq!(body, b"a\r\n.b\r\nc\r\n\r\n");
        assert!(!big);
    }

    #[test]
    fn data_empty_message_and_lone_dot_variants() {
        assert_eq!(data(b".\r\n", 10).2, b"");
        // `.` CR x is content, not an end.
        let (_, end, body, _) = data(b".\rx\r\n.\r\n", 10);
        assert_eq!(end, Some(DataEnd::Complete));
        assert_eq!(body, b"\rx\r\n");
        // A bare CR before the line end is kept.
        assert_eq!(data(b"a\r\r\n.\r\n", 10).2, b"a\r\r\n");
    }

    #[test]
    fn data_refuses_bare_lf_everywhere() {
        for input in [
            &b"a\nb\r\n.\r\n"[..],
            b"\n.\r\n",
            b".\n",
            b"a\r\n.\n",
            b"a\r\n\n.\r\n",
        ] {
            assert_eq!(data(input, 100).1, Some(DataEnd::BareLf), "{input:?}");
        }
    }

    #[test]
    fn data_over_limit_is_read_to_end_and_dropped() {
        let mut input = vec![b'z'; 5000];
        input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        let (n, end, body, big) = data(&input, 100);
        assert_eq!(end, Some(DataEnd::Complete));
        assert_eq!(&input[n..], b"QUIT\r\n");
        assert!(big);
        assert!(body.is_empty());
    }

    #[test]
    fn data_split_at_every_byte_gives_same_result() {
        let input = b"x\r\n..y\r\n.\rz\r\n.\r\n";
        let (_, _, whole, _) = data(input, 1000);
        for split in 0..input.len() {
            let mut rx = DataReceiver::new(1000);
            let (n1, e1) = rx.feed(&input[..split]);
            assert_eq!((n1, e1), (split, None));
            let (_, e2) = rx.feed(&input[split..]);
            assert_eq!(e2, Some(DataEnd::Complete));
            assert_eq!(rx.into_body(), whole, "split at {split}");
        }
    }
}
