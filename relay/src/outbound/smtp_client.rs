//! The SMTP client (RFC 5321, 3207 STARTTLS, 2920 PIPELINING, 1870 SIZE, 6152 8BITMIME,
//! 6531 SMTPUTF8), sans-I/O: the driver feeds the server's bytes in with [`Client::receive`],
//! writes [`Client::output`] to the socket, and asks [`Client::poll`] what to do next.
//!
//! ```text
//! connect ─► greeting 220 ─► EHLO ─► STARTTLS (required) ─► handshake ─► EHLO ─► Ready
//! Ready ─► send(): MAIL FROM [+ RCPT TO… pipelined] ─► RCPT replies ─► DATA (if one RCPT
//!          was accepted) ─► body (dot-stuffed, CRLF) ─► final reply ─► Done ─► Ready
//!          (a transaction that ended early sends RSET before Ready: the connection is reused)
//! Ready ─► quit(): QUIT ─► Closed
//! ```
//!
//! Failures are split the way delivery needs them: a reply to MAIL, RCPT, DATA or the final dot
//! is an answer for recipients ([`Outcome`] per recipient, the reply kept); anything that breaks
//! the conversation (greeting or EHLO refused, STARTTLS missing or refused, garbage, an
//! over-long reply) is a [`ConnError`], after which the connection is dead and the next MX host
//! may be tried. Memory is bounded whatever the server sends: a reply line is at most
//! [`MAX_REPLY_LINE`] bytes and a reply at most [`MAX_REPLY_LINES`] lines, and the body is
//! encoded into the output in chunks of [`BODY_CHUNK`] bytes, never copied whole.
//!
//! Bytes the server sends after its `220` to STARTTLS are dropped (they arrived before the
//! handshake, so a man in the middle could have injected them; RFC 3207 §6's rule, client side).

use std::borrow::Cow;

use bytes::Bytes;

use super::Outcome;
use crate::smtp::reply::Reply;

/// Longest reply line accepted, CRLF included. RFC 5321 §4.5.3.1.5 sets 512; servers send
/// longer EHLO lines and texts in practice, so we allow eight times that.
pub const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one (multi-line) reply. EHLO answers have one per extension (a dozen or two).
pub const MAX_REPLY_LINES: usize = 64;
/// Message bytes encoded into the output at a time while sending DATA.
pub const BODY_CHUNK: usize = 64 * 1024;
/// Reply text kept in a recipient's [`Outcome`] at most (bytes, all lines together). A reply to
/// MAIL, DATA or the final dot is every pending recipient's outcome, one copy each, and goes on
/// into logs and notifications (which keep [`super::dsn::MAX_DIAGNOSTIC`] characters): without
/// this cap a server's 64 lines of 4 KiB would be copied for each of up to a thousand
/// recipients.
pub const MAX_OUTCOME_TEXT: usize = 2048;

/// Why a connection failed (as opposed to a recipient being refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnError {
    /// TCP connect failed or timed out, or the host has no address (set by the driver).
    Connect(String),
    /// The server does not offer STARTTLS, refused it, or the handshake or certificate check
    /// failed.
    Tls(String),
    /// The greeting or EHLO was refused (`554` greeting, `5xx` to EHLO, ...).
    Refused(Reply),
    /// The server broke the protocol: garbage, an over-long reply, an unexpected reply.
    Protocol(String),
    /// Reading or writing failed, the server closed the connection, or a step timed out (set by
    /// the driver, except for an early close).
    Io(String),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Connect(e) => write!(f, "connect: {e}"),
            ConnError::Tls(e) => write!(f, "TLS: {e}"),
            ConnError::Refused(r) => write!(f, "refused: {}", super::reply_text(r)),
            ConnError::Protocol(e) => write!(f, "protocol error: {e}"),
            ConnError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Which kind of wait the client is in, so the driver can pick its deadline (RFC 5321
/// §4.5.3.2 gives different minimums per step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Waiting for the greeting.
    Greeting,
    /// Waiting for the reply to a command (EHLO, STARTTLS, MAIL, RCPT, DATA, RSET, QUIT).
    Command,
    /// Sending the message body.
    DataBody,
    /// Waiting for the reply to the final dot.
    DataDone,
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Write any [`Client::output`], then read and [`Client::receive`] (or
    /// [`Client::receive_eof`]) within the deadline of `Step`.
    Read(Step),
    /// Write [`Client::output`] (the body is being sent) within the deadline of `Step`.
    Write(Step),
    /// Write [`Client::output`], then run the TLS handshake and call
    /// [`Client::tls_established`].
    StartTls,
    /// Idle and reusable: [`Client::send`] a message or [`Client::quit`].
    Ready,
    /// A transaction finished: one outcome per recipient, in the order given to
    /// [`Client::send`]. Reported once; the client then goes on (RSET if needed) to
    /// [`Event::Ready`], or to [`Event::Closed`] if the server is closing.
    Done(Vec<Outcome>),
    /// QUIT was answered (or the server closed after a `421`): drop the connection.
    Closed,
    /// The connection failed; drop it.
    Failed(ConnError),
}

/// The extensions the server announced in its (last) EHLO reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extensions {
    /// `STARTTLS` (RFC 3207).
    pub starttls: bool,
    /// `PIPELINING` (RFC 2920).
    pub pipelining: bool,
    /// `SIZE` (RFC 1870): `Some(0)` = offered without a limit.
    pub size: Option<u64>,
    /// `8BITMIME` (RFC 6152).
    pub eight_bit_mime: bool,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
}

impl Extensions {
    fn parse(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        // The first line is the server's name; the others are keywords with parameters.
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "STARTTLS" => ext.starttls = true,
                "PIPELINING" => ext.pipelining = true,
                "8BITMIME" => ext.eight_bit_mime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "SIZE" => {
                    ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0));
                }
                _ => {}
            }
        }
        ext
    }
}

/// One message to send.
#[derive(Debug, Clone)]
struct Transaction {
    recipients: Vec<String>,
    body: Bytes,
    /// Final outcome per recipient; `None` = accepted at RCPT, waiting for the end of DATA.
    outcomes: Vec<Option<Outcome>>,
    /// RCPT TO commands written so far.
    rcpt_sent: usize,
    /// RCPT replies received so far.
    rcpt_done: usize,
    /// MAIL was refused: its reply is every recipient's outcome; the RCPT replies still to
    /// come (pipelined) are read and ignored.
    mail_refused: bool,
}

impl Transaction {
    fn accepted(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_none()).count()
    }

    /// Every recipient not yet answered (accepted at RCPT or never asked) gets `outcome`.
    fn settle_pending(&mut self, outcome: &Outcome) {
        for o in &mut self.outcomes {
            if o.is_none() {
                *o = Some(outcome.clone());
            }
        }
    }

    fn finish(self) -> Vec<Outcome> {
        self.outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Outcome::Temporary(Reply::new(451, "4.3.0 Transaction ended without an answer"))
                })
            })
            .collect()
    }
}

#[derive(Debug)]
enum State {
    Greeting,
    /// EHLO sent; `tls` = after STARTTLS.
    Ehlo {
        tls: bool,
    },
    StartTls,
    /// Waiting for the driver's handshake.
    Handshake,
    Ready,
    /// MAIL sent (and, when pipelining, every RCPT).
    Mail(Transaction),
    /// Waiting for RCPT replies.
    Rcpt(Transaction),
    /// DATA sent.
    Data(Transaction),
    /// Sending the body.
    Body(Transaction, BodyEncoder),
    /// Final dot sent.
    DataDone(Transaction),
    /// RSET sent after an unfinished transaction; its outcomes are reported once RSET is
    /// answered.
    Rset(Vec<Outcome>),
    /// Outcomes to report; then `next`.
    Report(Vec<Outcome>, After),
    Quit,
    Closed,
    Failed(ConnError),
}

#[derive(Debug, Clone, Copy)]
enum After {
    Ready,
    Closed,
}

/// The SMTP client of one connection.
#[derive(Debug)]
pub struct Client {
    state: State,
    /// Our name in EHLO: our mail domain (an address literal for an IP-only relay).
    ehlo_name: String,
    ext: Extensions,
    /// Received bytes not yet parsed (at most one partial line).
    input: Vec<u8>,
    /// The lines of a multi-line reply read so far.
    partial: Vec<Cow<'static, str>>,
    partial_code: Option<u16>,
    output: Vec<u8>,
}

impl Client {
    /// A client for a fresh TCP connection that will greet with `EHLO ehlo_name`.
    pub fn new(ehlo_name: &str) -> Client {
        Client {
            state: State::Greeting,
            ehlo_name: ehlo_name.to_owned(),
            ext: Extensions::default(),
            input: Vec::new(),
            partial: Vec::new(),
            partial_code: None,
            output: Vec::new(),
        }
    }

    /// What the server announced in its last EHLO reply.
    pub fn extensions(&self) -> Extensions {
        self.ext
    }

    /// Bytes to write to the server.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// `n` bytes of [`Client::output`] were written. While sending a body, the next chunk of it
    /// is encoded once the output is drained.
    pub fn consume_output(&mut self, n: usize) {
        self.output.drain(..n.min(self.output.len()));
        if self.output.is_empty() {
            self.refill_body();
        }
    }

    fn refill_body(&mut self) {
        let State::Body(_, enc) = &mut self.state else {
            return;
        };
        if enc.encode_chunk(&mut self.output) {
            return;
        }
        // The terminator is in the output: wait for the final reply.
        let State::Body(tx, _) = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        self.state = State::DataDone(tx);
    }

    /// Bytes read from the server.
    pub fn receive(&mut self, bytes: &[u8]) {
        if matches!(self.state, State::Closed | State::Failed(_)) {
            return;
        }
        self.input.extend_from_slice(bytes);
        self.process_input();
    }

    /// Handles the complete replies in the input, one at a time, while the state expects one.
    fn process_input(&mut self) {
        loop {
            match self.state {
                // Outcomes wait to be reported first; a failed or closed connection reads no more.
                State::Report(..) | State::Closed | State::Failed(_) => return,
                State::Handshake => {
                    // Bytes after the 220 to STARTTLS arrived before the handshake: dropped.
                    self.input.clear();
                    self.partial.clear();
                    self.partial_code = None;
                    return;
                }
                _ => {}
            }
            match self.next_reply() {
                Ok(Some(reply)) => {
                    let state = std::mem::replace(&mut self.state, State::Closed);
                    self.state = self.on_reply(state, reply);
                    if matches!(self.state, State::Failed(_)) {
                        self.output.clear();
                    }
                }
                Ok(None) => return,
                Err(e) => return self.fail(e),
            }
        }
    }

    /// The server closed the connection (read returned 0).
    pub fn receive_eof(&mut self) {
        match self.state {
            State::Quit => self.state = State::Closed,
            State::Closed | State::Failed(_) => {}
            _ => self.fail(ConnError::Io("connection closed by the server".into())),
        }
    }

    /// The TLS handshake after [`Event::StartTls`] succeeded: the client greets again.
    pub fn tls_established(&mut self) {
        if matches!(self.state, State::Handshake) {
            // RFC 3207 §4.2: forget everything learnt before TLS.
            self.ext = Extensions::default();
            self.input.clear();
            self.state = self.ehlo(true);
        }
    }

    /// Starts a transaction: `sender` (empty for a bounce: `MAIL FROM:<>`), `recipients`, and
    /// the message as stored (unstuffed; LF or CRLF line ends). Only in [`Event::Ready`];
    /// otherwise every recipient gets a temporary failure and the connection is failed.
    pub fn send(&mut self, sender: &str, recipients: &[String], body: Bytes) {
        if !matches!(self.state, State::Ready) {
            self.fail(ConnError::Protocol("send while not ready".into()));
            return;
        }
        let mut tx = Transaction {
            recipients: recipients.to_vec(),
            body,
            outcomes: vec![None; recipients.len()],
            rcpt_sent: 0,
            rcpt_done: 0,
            mail_refused: false,
        };
        if recipients.is_empty() {
            self.state = State::Report(Vec::new(), After::Ready);
            return;
        }
        // RFC 1870 §6.1: do not send what the server already said it will refuse.
        if let Some(max) = self.ext.size.filter(|m| *m > 0) {
            if tx.body.len() as u64 > max {
                let reply = Reply::new(
                    552,
                    format!("5.3.4 Message size exceeds the remote server's limit of {max} bytes"),
                );
                tx.settle_pending(&Outcome::Permanent(reply));
                self.state = State::Report(tx.finish(), After::Ready);
                return;
            }
        }
        let utf8 = !sender.is_ascii() || recipients.iter().any(|r| !r.is_ascii());
        if utf8 && !self.ext.smtputf8 {
            // RFC 6531 §3.4: without SMTPUTF8 these addresses cannot be sent.
            let reply = Reply::new(
                553,
                "5.6.7 SMTPUTF8 is required but was not offered by the server",
            );
            tx.settle_pending(&Outcome::Permanent(reply));
            self.state = State::Report(tx.finish(), After::Ready);
            return;
        }
        let mut mail = format!("MAIL FROM:<{sender}>");
        if self.ext.size.is_some() {
            mail.push_str(&format!(" SIZE={}", tx.body.len()));
        }
        if self.ext.eight_bit_mime && !tx.body.is_ascii() {
            mail.push_str(" BODY=8BITMIME");
        }
        if utf8 {
            mail.push_str(" SMTPUTF8");
        }
        self.command(&mail);
        if self.ext.pipelining {
            // RFC 2920 §3.1: MAIL and the RCPTs go in one group; DATA waits for their replies
            // so it is sent only when a recipient was accepted.
            while tx.rcpt_sent < tx.recipients.len() {
                self.rcpt(&mut tx);
            }
        }
        self.state = State::Mail(tx);
    }

    /// Ends the session politely: `QUIT`. Only in [`Event::Ready`] (otherwise the connection is
    /// simply closed).
    pub fn quit(&mut self) {
        if matches!(self.state, State::Ready) {
            self.command("QUIT");
            self.state = State::Quit;
        } else if !matches!(self.state, State::Failed(_)) {
            self.state = State::Closed;
        }
    }

    /// Whether the output is (part of) the message body, for the driver's write deadline.
    pub fn is_sending_body(&self) -> bool {
        matches!(self.state, State::Body(..))
            || matches!(self.state, State::DataDone(_)) && !self.output.is_empty()
    }

    /// Whether the connection can take another message (it is idle and healthy).
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready)
    }

    /// What to do next. [`Event::Done`] is returned once per transaction.
    pub fn poll(&mut self) -> Event {
        match &mut self.state {
            State::Greeting => Event::Read(Step::Greeting),
            State::Ehlo { .. }
            | State::StartTls
            | State::Mail(_)
            | State::Rcpt(_)
            | State::Data(_)
            | State::Rset(_)
            | State::Quit => Event::Read(Step::Command),
            State::Handshake => Event::StartTls,
            State::Ready => Event::Ready,
            State::Body(..) => Event::Write(Step::DataBody),
            State::DataDone(_) if !self.output.is_empty() => Event::Write(Step::DataBody),
            State::DataDone(_) => Event::Read(Step::DataDone),
            State::Report(outcomes, after) => {
                let outcomes = std::mem::take(outcomes);
                self.state = match after {
                    After::Ready => State::Ready,
                    After::Closed => State::Closed,
                };
                // Anything the server sent after the final reply is looked at now (an
                // unsolicited reply fails the connection for the next message).
                self.process_input();
                Event::Done(outcomes)
            }
            State::Closed => Event::Closed,
            State::Failed(e) => Event::Failed(e.clone()),
        }
    }

    fn fail(&mut self, e: ConnError) {
        self.output.clear();
        self.state = State::Failed(e);
    }

    fn command(&mut self, line: &str) {
        self.output.extend_from_slice(line.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    fn ehlo(&mut self, tls: bool) -> State {
        let line = format!("EHLO {}", self.ehlo_name);
        self.command(&line);
        State::Ehlo { tls }
    }

    fn rcpt(&mut self, tx: &mut Transaction) {
        let line = format!("RCPT TO:<{}>", tx.recipients[tx.rcpt_sent]);
        self.command(&line);
        tx.rcpt_sent += 1;
    }

    /// Takes the next complete reply off the input, if there is one.
    ///
    /// # Errors
    /// Garbage, an over-long line or reply, a code that changes within a reply.
    fn next_reply(&mut self) -> Result<Option<Reply>, ConnError> {
        let mut start = 0;
        let mut reply = None;
        while let Some(lf) = memchr::memchr(b'\n', &self.input[start..]) {
            let end = start + lf;
            if end + 1 - start > MAX_REPLY_LINE {
                return Err(ConnError::Protocol("reply line too long".into()));
            }
            let mut line = &self.input[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let parsed = parse_line(line)?;
            start = end + 1;
            if let Some(code) = self.partial_code {
                if code != parsed.code {
                    return Err(ConnError::Protocol(format!(
                        "reply code changed from {code} to {} within a reply",
                        parsed.code
                    )));
                }
            }
            self.partial_code = Some(parsed.code);
            self.partial.push(Cow::Owned(parsed.text));
            if self.partial.len() > MAX_REPLY_LINES {
                return Err(ConnError::Protocol("reply has too many lines".into()));
            }
            if parsed.last {
                self.partial_code = None;
                reply = Some(Reply {
                    code: parsed.code,
                    lines: std::mem::take(&mut self.partial),
                });
                break;
            }
        }
        self.input.drain(..start);
        if reply.is_none() && self.input.len() > MAX_REPLY_LINE {
            return Err(ConnError::Protocol("reply line too long".into()));
        }
        Ok(reply)
    }

    fn on_reply(&mut self, state: State, reply: Reply) -> State {
        let class = reply.code / 100;
        match state {
            State::Greeting if reply.code == 220 => self.ehlo(false),
            State::Greeting => State::Failed(ConnError::Refused(reply)),
            State::Ehlo { tls } if class == 2 => {
                self.ext = Extensions::parse(&reply);
                if tls {
                    State::Ready
                } else if self.ext.starttls {
                    self.command("STARTTLS");
                    State::StartTls
                } else {
                    State::Failed(ConnError::Tls("STARTTLS not offered".into()))
                }
            }
            State::Ehlo { .. } => State::Failed(ConnError::Refused(reply)),
            State::StartTls if reply.code == 220 => State::Handshake,
            State::StartTls => State::Failed(ConnError::Tls(format!(
                "STARTTLS refused: {}",
                super::reply_text(&reply)
            ))),
            State::Mail(mut tx) => {
                if class != 2 {
                    tx.mail_refused = true;
                    tx.settle_pending(&outcome(&reply));
                    if reply.code == 421 {
                        return State::Report(tx.finish(), After::Closed);
                    }
                    if tx.rcpt_sent == 0 {
                        return self.rset(tx.finish());
                    }
                    // Pipelined RCPTs are answered (refused) next.
                    return State::Rcpt(tx);
                }
                if tx.rcpt_sent == 0 {
                    self.rcpt(&mut tx);
                }
                State::Rcpt(tx)
            }
            State::Rcpt(mut tx) => {
                let i = tx.rcpt_done;
                tx.rcpt_done += 1;
                if !tx.mail_refused && class != 2 {
                    tx.outcomes[i] = Some(outcome(&reply));
                }
                if reply.code == 421 {
                    tx.settle_pending(&outcome(&reply));
                    return State::Report(tx.finish(), After::Closed);
                }
                if tx.rcpt_done < tx.recipients.len() {
                    if tx.rcpt_sent == tx.rcpt_done {
                        self.rcpt(&mut tx);
                    }
                    return State::Rcpt(tx);
                }
                if tx.mail_refused || tx.accepted() == 0 {
                    return self.rset(tx.finish());
                }
                self.command("DATA");
                State::Data(tx)
            }
            State::Data(mut tx) => {
                if reply.code == 354 {
                    let mut enc = BodyEncoder::new(tx.body.clone());
                    return if enc.encode_chunk(&mut self.output) {
                        State::Body(tx, enc)
                    } else {
                        State::DataDone(tx)
                    };
                }
                if !matches!(class, 4 | 5) {
                    // Only 354 lets the body go; a 2xx here would claim a delivery of nothing.
                    return State::Failed(ConnError::Protocol(format!(
                        "unexpected reply to DATA: {}",
                        super::reply_text(&reply)
                    )));
                }
                tx.settle_pending(&outcome(&reply));
                if reply.code == 421 {
                    return State::Report(tx.finish(), After::Closed);
                }
                self.rset(tx.finish())
            }
            // The end of the body is still to be written: a reply now answers nothing we sent
            // (a server replying early would read the rest of the body as commands).
            State::DataDone(_) if !self.output.is_empty() => {
                State::Failed(ConnError::Protocol(format!(
                    "reply before the end of the message was sent: {}",
                    super::reply_text(&reply)
                )))
            }
            State::DataDone(mut tx) => {
                let closing = reply.code == 421;
                tx.settle_pending(&outcome(&reply));
                let after = if closing { After::Closed } else { After::Ready };
                State::Report(tx.finish(), after)
            }
            State::Rset(outcomes) => {
                // A server that cannot reset is not reused.
                let after = if class == 2 {
                    After::Ready
                } else {
                    After::Closed
                };
                State::Report(outcomes, after)
            }
            State::Quit => State::Closed,
            State::Body(..) => State::Failed(ConnError::Protocol(format!(
                "reply while the message was being sent: {}",
                super::reply_text(&reply)
            ))),
            State::Handshake
            | State::Ready
            | State::Report(..)
            | State::Closed
            | State::Failed(_) => State::Failed(ConnError::Protocol(format!(
                "unexpected reply: {}",
                super::reply_text(&reply)
            ))),
        }
    }

    fn rset(&mut self, outcomes: Vec<Outcome>) -> State {
        self.command("RSET");
        State::Rset(outcomes)
    }
}

/// The outcome `reply` means, its text cut to [`MAX_OUTCOME_TEXT`] bytes (at a character
/// boundary; lines past the cap are dropped).
fn outcome(reply: &Reply) -> Outcome {
    let mut left = MAX_OUTCOME_TEXT;
    let mut lines = Vec::with_capacity(reply.lines.len().min(8));
    for line in &reply.lines {
        let mut end = line.len().min(left);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        if end == 0 && !line.is_empty() {
            break;
        }
        lines.push(Cow::Owned(line[..end].to_owned()));
        left -= end;
    }
    if lines.is_empty() {
        lines.push(Cow::Borrowed(""));
    }
    Outcome::from_reply(Reply {
        code: reply.code,
        lines,
    })
}

struct Line {
    code: u16,
    last: bool,
    text: String,
}

/// One reply line: three digits (first 2-5), then `-` (more lines follow), a space or nothing
/// (last line), then text (RFC 5321 §4.2).
fn parse_line(line: &[u8]) -> Result<Line, ConnError> {
    let garbage = || {
        let shown: String = String::from_utf8_lossy(&line[..line.len().min(60)])
            .chars()
            .map(|c| if c.is_control() { '.' } else { c })
            .collect();
        ConnError::Protocol(format!("not an SMTP reply: {shown:?}"))
    };
    let [a, b, c, rest @ ..] = line else {
        return Err(garbage());
    };
    if !(b'2'..=b'5').contains(a) || !b.is_ascii_digit() || !c.is_ascii_digit() {
        return Err(garbage());
    }
    let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    let (last, text) = match rest {
        [] => (true, &[][..]),
        [b' ', text @ ..] => (true, text),
        [b'-', text @ ..] => (false, text),
        _ => return Err(garbage()),
    };
    let text = String::from_utf8_lossy(text)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Ok(Line { code, last, text })
}

/// Encodes a message for DATA (RFC 5321 §4.5.2, §2.3.8): CRLF line ends (a bare LF or bare CR
/// becomes CRLF), a `.` at the start of a line doubled, CRLF `.` CRLF at the end.
#[derive(Debug)]
pub struct BodyEncoder {
    body: Bytes,
    pos: usize,
    at_line_start: bool,
    /// The previous byte was a CR whose LF has not been seen yet.
    pending_cr: bool,
    done: bool,
}

impl BodyEncoder {
    /// An encoder over the whole message.
    pub fn new(body: Bytes) -> BodyEncoder {
        BodyEncoder {
            body,
            pos: 0,
            at_line_start: true,
            pending_cr: false,
            done: false,
        }
    }

    /// Appends up to [`BODY_CHUNK`] message bytes, encoded, to `out`; after the last byte the
    /// terminator. Returns `false` once the terminator has been appended.
    pub fn encode_chunk(&mut self, out: &mut Vec<u8>) -> bool {
        if self.done {
            return false;
        }
        let end = (self.pos + BODY_CHUNK).min(self.body.len());
        out.reserve(end - self.pos + 16);
        let body = self.body.clone();
        for &b in &body[self.pos..end] {
            match b {
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.pending_cr = false;
                    self.at_line_start = true;
                }
                _ if self.pending_cr => {
                    // A bare CR ends a line of its own.
                    out.extend_from_slice(b"\r\n");
                    self.pending_cr = false;
                    self.at_line_start = true;
                    self.byte(b, out);
                }
                _ => self.byte(b, out),
            }
        }
        self.pos = end;
        if self.pos < self.body.len() {
            return true;
        }
        if self.pending_cr || !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.done = true;
        false
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if b == b'\r' {
            self.pending_cr = true;
            return;
        }
        if self.at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        self.at_line_start = false;
    }
}

#[cfg(test)]
mod tests;
