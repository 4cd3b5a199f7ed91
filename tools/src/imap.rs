//! A minimal IMAP client for load tests: implicit TLS, `LOGIN`, `SELECT INBOX`, `IDLE`,
//! `UID FETCH n:* BODY.PEEK[]`, `UID STORE +FLAGS.SILENT (\Deleted)` and `EXPUNGE`.
//! Responses are read with their literals; every wait has a deadline. The client remembers when
//! each message was first announced (`* n EXISTS`), so a fetched message can be given the
//! moment the server told about it ([`Fetched::announced`]).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_rustls::TlsConnector;

use crate::tls::{self, Stream};
use crate::{connect_tcp, within, Error};

/// Where an IMAP server is.
#[derive(Debug, Clone)]
pub struct Target {
    /// Server address (implicit TLS port).
    pub addr: SocketAddr,
    /// SNI name.
    pub server_name: ServerName<'static>,
    /// Deadline of every single step.
    pub timeout: Duration,
}

/// One server response: its text with each literal replaced by `{n}`, and the literals.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Response {
    /// The response text (no CRLF).
    pub text: String,
    /// The literals, in order.
    pub literals: Vec<Vec<u8>>,
}

impl Response {
    /// `Some(n)` for `* n EXISTS`.
    pub fn exists(&self) -> Option<u32> {
        let mut w = self.text.split_ascii_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("*"), Some(n), Some(kw)) if kw.eq_ignore_ascii_case("EXISTS") => n.parse().ok(),
            _ => None,
        }
    }

    /// `Some(n)` for `* n EXPUNGE`.
    pub fn expunge(&self) -> Option<u32> {
        let mut w = self.text.split_ascii_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("*"), Some(n), Some(kw)) if kw.eq_ignore_ascii_case("EXPUNGE") => n.parse().ok(),
            _ => None,
        }
    }

    /// For `* n FETCH (…)`: the sequence number `n`.
    pub fn fetch_seq(&self) -> Option<u32> {
        let mut w = self.text.split_ascii_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("*"), Some(n), Some(kw)) if kw.eq_ignore_ascii_case("FETCH") => n.parse().ok(),
            _ => None,
        }
    }

    /// For `* n FETCH (… UID u …)`: `u`.
    pub fn fetch_uid(&self) -> Option<u32> {
        let mut w = self.text.split_ascii_whitespace();
        if w.next() != Some("*") || w.next().is_none() {
            return None;
        }
        if !w.next()?.eq_ignore_ascii_case("FETCH") {
            return None;
        }
        let rest: Vec<&str> = w.collect();
        let i = rest
            .iter()
            .position(|t| t.trim_start_matches('(').eq_ignore_ascii_case("UID"))?;
        rest.get(i + 1)?.trim_end_matches(')').parse().ok()
    }

    /// The number after `key` in a response code, e.g. `[UIDNEXT 7]` → 7.
    pub fn code_number(&self, key: &str) -> Option<u32> {
        let at = self.text.find(&format!("[{key} "))?;
        let rest = &self.text[at + key.len() + 2..];
        rest[..rest.find(']')?].trim().parse().ok()
    }
}

/// Parses the `{n}` (or `{n+}`) literal announcement at the end of a line, if any.
fn literal_len(line: &[u8]) -> Option<usize> {
    let line = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))?;
    let line = line.strip_suffix(b"}")?;
    let open = line.iter().rposition(|&b| b == b'{')?;
    let digits = &line[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Quotes a string for IMAP (RFC 3501 quoted string).
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// When the messages of the selected mailbox were announced: `(n, t)` means that messages
/// 1..=n were known to exist at `t` (the first `* n EXISTS` that covered them). Kept with
/// strictly increasing `n` and `t`, and renumbered on `* n EXPUNGE` as the server renumbers the
/// mailbox, so entries stay correct across deletions.
#[derive(Debug, Default, Clone)]
pub struct Announcements(Vec<(u32, Instant)>);

impl Announcements {
    /// Entries kept at most (a load receiver holds a handful; the oldest go first).
    const MAX: usize = 4096;

    /// `* n EXISTS` read at `t`.
    pub fn exists(&mut self, n: u32, t: Instant) {
        if self.0.last().is_none_or(|&(last, _)| n > last) {
            if self.0.len() == Self::MAX {
                self.0.remove(0);
            }
            self.0.push((n, t));
        }
    }

    /// `* seq EXPUNGE`: the messages after `seq` move down by one.
    pub fn expunge(&mut self, seq: u32) {
        for (n, _) in &mut self.0 {
            if *n >= seq {
                *n -= 1;
            }
        }
        // Two entries may now cover the same messages: the earlier one counts.
        self.0.dedup_by(|later, earlier| later.0 <= earlier.0);
        self.0.retain(|&(n, _)| n > 0);
    }

    /// When message `seq` was first announced.
    pub fn of(&self, seq: u32) -> Option<Instant> {
        self.0.iter().find(|&&(n, _)| n >= seq).map(|&(_, t)| t)
    }

    /// The mailbox changed wholesale (a new `SELECT`): forget everything.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// One message from [`Client::fetch_new`].
#[derive(Debug, Clone, Copy)]
pub struct Fetched<'a> {
    /// Its UID.
    pub uid: u32,
    /// The message.
    pub body: &'a [u8],
    /// When its body had been read.
    pub at: Instant,
    /// When the server first announced it (`* n EXISTS`), if this session saw that.
    pub announced: Option<Instant>,
}

/// An authenticated IMAP session.
pub struct Client {
    io: BufReader<Stream>,
    tag: u32,
    timeout: Duration,
    idling: bool,
    saw_exists: bool,
    announced: Announcements,
}

/// `SELECT INBOX` results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected {
    /// Messages in the mailbox.
    pub exists: u32,
    /// UIDNEXT.
    pub uid_next: u32,
}

impl Client {
    /// Connects with implicit TLS and reads the greeting. `buffer` is the read buffer size
    /// (small for idle-capacity runs).
    ///
    /// # Errors
    /// Connection or TLS failure, a bad greeting, or a timeout.
    pub async fn connect(
        target: &Target,
        connector: &TlsConnector,
        src: Option<IpAddr>,
        buffer: usize,
    ) -> Result<Client, Error> {
        let limit = target.timeout;
        let tcp = connect_tcp("imap connect", target.addr, src, limit).await?;
        let stream = tls::handshake(
            "imap TLS handshake",
            connector,
            &target.server_name,
            tcp,
            limit,
        )
        .await?;
        let mut c = Client {
            io: BufReader::with_capacity(buffer, stream),
            tag: 0,
            timeout: limit,
            idling: false,
            saw_exists: false,
            announced: Announcements::default(),
        };
        let greet = c.read_response("imap greeting", limit).await?;
        if !greet.text.starts_with("* OK") {
            return Err(Error::Reply {
                what: "imap greeting",
                code: 0,
                text: greet.text,
            });
        }
        Ok(c)
    }

    /// Reads one complete response (line plus literals).
    async fn read_response(
        &mut self,
        what: &'static str,
        limit: Duration,
    ) -> Result<Response, Error> {
        let mut resp = Response::default();
        let mut line = Vec::with_capacity(128);
        loop {
            line.clear();
            let n = within(what, limit, self.io.read_until(b'\n', &mut line)).await?;
            if n == 0 {
                return Err(Error::Closed { what });
            }
            match literal_len(&line) {
                Some(len) => {
                    let text = String::from_utf8_lossy(&line);
                    resp.text.push_str(text.trim_end());
                    let mut lit = vec![0; len];
                    within(what, limit, self.io.read_exact(&mut lit)).await?;
                    resp.literals.push(lit);
                }
                None => {
                    let text = String::from_utf8_lossy(&line);
                    resp.text.push_str(text.trim_end());
                    if let Some(n) = resp.exists() {
                        self.announced.exists(n, Instant::now());
                    } else if let Some(seq) = resp.expunge() {
                        self.announced.expunge(seq);
                    }
                    return Ok(resp);
                }
            }
        }
    }

    async fn write(&mut self, what: &'static str, bytes: &[u8]) -> Result<(), Error> {
        let io = self.io.get_mut();
        within(what, self.timeout, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await
    }

    /// Sends `cmd` with a fresh tag and reads until the tagged reply; untagged responses go to
    /// `untagged` as they arrive.
    ///
    /// # Errors
    /// `NO`/`BAD` as [`Error::Reply`], connection failure or timeout.
    pub async fn command(
        &mut self,
        what: &'static str,
        cmd: &str,
        mut untagged: impl FnMut(Response),
    ) -> Result<Response, Error> {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        self.write(what, format!("{tag} {cmd}\r\n").as_bytes())
            .await?;
        self.finish(what, &tag, &mut untagged).await
    }

    async fn finish(
        &mut self,
        what: &'static str,
        tag: &str,
        untagged: &mut impl FnMut(Response),
    ) -> Result<Response, Error> {
        self.finish_seen(what, tag, &mut |_, r| untagged(r)).await
    }

    /// [`Client::finish`], handing each untagged response over with the announcement times as
    /// they stand once it was read.
    async fn finish_seen(
        &mut self,
        what: &'static str,
        tag: &str,
        untagged: &mut impl FnMut(&Announcements, Response),
    ) -> Result<Response, Error> {
        loop {
            let r = self.read_response(what, self.timeout).await?;
            let mut words = r.text.splitn(3, ' ');
            if words.next() == Some(tag) {
                return match words.next() {
                    Some(s) if s.eq_ignore_ascii_case("OK") => Ok(r),
                    _ => Err(Error::Reply {
                        what,
                        code: 0,
                        text: r.text,
                    }),
                };
            }
            if r.exists().is_some() {
                self.saw_exists = true;
            }
            untagged(&self.announced, r);
        }
    }

    /// `LOGIN`.
    ///
    /// # Errors
    /// Refusal, connection failure or timeout.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<(), Error> {
        let cmd = format!("LOGIN {} {}", quote(user), quote(password));
        self.command("imap LOGIN", &cmd, |_| {}).await.map(|_| ())
    }

    /// `SELECT INBOX`.
    ///
    /// # Errors
    /// Refusal, connection failure or timeout.
    pub async fn select_inbox(&mut self) -> Result<Selected, Error> {
        let mut sel = Selected {
            exists: 0,
            uid_next: 1,
        };
        self.announced.clear();
        self.command("imap SELECT", "SELECT INBOX", |r| {
            if let Some(n) = r.exists() {
                sel.exists = n;
            }
            if let Some(n) = r.code_number("UIDNEXT") {
                sel.uid_next = n;
            }
        })
        .await?;
        Ok(sel)
    }

    /// Starts `IDLE` and waits for the continuation.
    ///
    /// # Errors
    /// Refusal, connection failure or timeout.
    pub async fn idle(&mut self) -> Result<(), Error> {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        self.write("imap IDLE", format!("{tag} IDLE\r\n").as_bytes())
            .await?;
        loop {
            let r = self.read_response("imap IDLE", self.timeout).await?;
            if r.text.starts_with('+') {
                self.idling = true;
                return Ok(());
            }
            if r.text.starts_with(&tag) {
                return Err(Error::Reply {
                    what: "imap IDLE",
                    code: 0,
                    text: r.text,
                });
            }
        }
    }

    /// Whether an `* n EXISTS` arrived during a command since the last call (so new mail may
    /// have arrived after a FETCH was answered); clears the flag.
    pub fn take_saw_exists(&mut self) -> bool {
        std::mem::take(&mut self.saw_exists)
    }

    /// In IDLE: waits until the server sends `* n EXISTS` (returns `Some(n)`) or `stop` becomes
    /// true (returns `None`). Other untagged responses are skipped.
    ///
    /// # Errors
    /// Connection failure, or a response that starts but does not finish in time.
    pub async fn wait_exists(
        &mut self,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<u32>, Error> {
        loop {
            // fill_buf consumes nothing, so dropping it when stopping loses no data.
            tokio::select! {
                r = self.io.fill_buf() => match r {
                    Ok([]) => return Err(Error::Closed { what: "imap IDLE wait" }),
                    Ok(_) => {}
                    Err(source) => return Err(Error::Io { what: "imap IDLE wait", source }),
                },
                _ = stop.wait_for(|s| *s) => return Ok(None),
            }
            let r = self.read_response("imap IDLE wait", self.timeout).await?;
            if let Some(n) = r.exists() {
                return Ok(Some(n));
            }
        }
    }

    /// Ends IDLE (`DONE`) and reads the tagged reply.
    ///
    /// # Errors
    /// Refusal, connection failure or timeout.
    pub async fn done(&mut self) -> Result<(), Error> {
        self.write("imap DONE", b"DONE\r\n").await?;
        self.idling = false;
        let tag = format!("a{}", self.tag);
        self.finish("imap DONE", &tag, &mut |_| {})
            .await
            .map(|_| ())
    }

    /// `UID FETCH from:* (UID BODY.PEEK[])`: calls `each` for every message with UID ≥ `from`
    /// as soon as its body has been read. Returns the UIDs.
    ///
    /// # Errors
    /// Refusal, connection failure or timeout.
    pub async fn fetch_new(
        &mut self,
        from: u32,
        mut each: impl FnMut(Fetched<'_>),
    ) -> Result<Vec<u32>, Error> {
        let mut uids = Vec::new();
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        let cmd = format!("{tag} UID FETCH {from}:* (UID BODY.PEEK[])\r\n");
        self.write("imap FETCH", cmd.as_bytes()).await?;
        // An `* n EXISTS` may come before the FETCH responses it announces: the times are
        // looked up as they stand when each response has been read.
        self.finish_seen("imap FETCH", &tag, &mut |announced, r| {
            if let (Some(uid), Some(body)) = (r.fetch_uid(), r.literals.first()) {
                // `n:*` includes the highest UID even when it is below n (RFC 3501 §6.4.8).
                if uid >= from {
                    each(Fetched {
                        uid,
                        body,
                        at: Instant::now(),
                        announced: r.fetch_seq().and_then(|seq| announced.of(seq)),
                    });
                    uids.push(uid);
                }
            }
        })
        .await?;
        Ok(uids)
    }

    /// `UID STORE uids +FLAGS.SILENT (\Deleted)` then `EXPUNGE`.
    ///
    /// # Errors
    /// Refusal, connection failure or timeout.
    pub async fn delete(&mut self, uids: &[u32]) -> Result<(), Error> {
        if uids.is_empty() {
            return Ok(());
        }
        let set = uid_set(uids);
        let cmd = format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)");
        self.command("imap STORE", &cmd, |_| {}).await?;
        self.command("imap EXPUNGE", "EXPUNGE", |_| {}).await?;
        Ok(())
    }

    /// `LOGOUT` (ends IDLE first), best effort.
    pub async fn logout(mut self) {
        if self.idling && self.done().await.is_err() {
            return;
        }
        let _ = self.command("imap LOGOUT", "LOGOUT", |_| {}).await;
    }
}

/// A compact UID set: sorted ranges joined by commas, e.g. `1:3,7`.
pub fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_announcements() {
        assert_eq!(literal_len(b"* 1 FETCH (UID 4 BODY[] {123}\r\n"), Some(123));
        assert_eq!(literal_len(b"a1 LOGIN {5+}\r\n"), Some(5));
        assert_eq!(literal_len(b"* OK {not}\r\n"), None);
        assert_eq!(literal_len(b"* 3 EXISTS\r\n"), None);
    }

    #[test]
    fn response_fields() {
        let r = Response {
            text: "* 12 EXISTS".into(),
            literals: vec![],
        };
        assert_eq!(r.exists(), Some(12));
        let r = Response {
            text: "* 2 FETCH (UID 17 BODY[] {10})".into(),
            literals: vec![b"0123456789".to_vec()],
        };
        assert_eq!(r.fetch_uid(), Some(17));
        assert_eq!(r.exists(), None);
        let r = Response {
            text: "* 2 FETCH (BODY[] {10} UID 18)".into(),
            literals: vec![],
        };
        assert_eq!(r.fetch_uid(), Some(18));
        let r = Response {
            text: "* OK [UIDNEXT 4242] Predicted next UID".into(),
            literals: vec![],
        };
        assert_eq!(r.code_number("UIDNEXT"), Some(4242));
        assert_eq!(r.code_number("UIDVALIDITY"), None);
    }

    #[test]
    fn fetch_and_expunge_numbers() {
        let r = |text: &str| Response {
            text: text.into(),
            literals: vec![],
        };
        assert_eq!(r("* 3 FETCH (UID 9 BODY[] {10})").fetch_seq(), Some(3));
        assert_eq!(r("* 3 EXPUNGE").expunge(), Some(3));
        assert_eq!(r("* 3 EXPUNGE").fetch_seq(), None);
        assert_eq!(r("* 3 EXISTS").expunge(), None);
    }

    #[test]
    fn announcements_follow_exists_and_expunge() {
        let t0 = Instant::now();
        let t = |ms: u64| t0 + Duration::from_millis(ms);
        let mut a = Announcements::default();
        a.exists(1, t(1));
        a.exists(3, t(2));
        a.exists(2, t(3)); // nothing new
        assert_eq!(a.of(1), Some(t(1)));
        assert_eq!(a.of(2), Some(t(2)));
        assert_eq!(a.of(3), Some(t(2)));
        assert_eq!(a.of(4), None);
        // Message 1 goes: the former 2 and 3 are now 1 and 2, both announced at t(2).
        a.expunge(1);
        assert_eq!(a.of(1), Some(t(2)));
        assert_eq!(a.of(2), Some(t(2)));
        assert_eq!(a.of(3), None);
        a.exists(3, t(4));
        assert_eq!(a.of(3), Some(t(4)));
        // Everything goes (the server says `* 1 EXPUNGE` three times), then a new message.
        for _ in 0..3 {
            a.expunge(1);
        }
        assert_eq!(a.of(1), None);
        a.exists(1, t(5));
        assert_eq!(a.of(1), Some(t(5)));
        // An expunge after the last announced message changes nothing.
        a.expunge(7);
        assert_eq!(a.of(1), Some(t(5)));
    }

    #[test]
    fn uid_sets_are_compact() {
        assert_eq!(uid_set(&[7, 1, 2, 3, 9, 10]), "1:3,7,9:10");
        assert_eq!(uid_set(&[5]), "5");
        assert_eq!(uid_set(&[5, 5]), "5");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
