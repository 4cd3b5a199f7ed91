//! A minimal SMTP submission client for load tests: implicit TLS or STARTTLS, `AUTH PLAIN`,
//! persistent sessions, and RFC 2920 pipelining of `MAIL`/`RCPT`/`DATA` when the server offers it.
//! Every read and write has a deadline; a refusal or a dropped connection is an [`Error`].

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_rustls::TlsConnector;

use crate::tls::{self, Stream};
use crate::{connect_tcp, within, Error};

/// How TLS starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    /// TLS from the first byte (port 465).
    Implicit,
    /// Plain greeting and EHLO, then `STARTTLS` (port 587).
    Starttls,
}

/// One SMTP reply (all lines of a multi-line reply joined by `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text after the code.
    pub text: String,
}

/// Where a server is and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Server address.
    pub addr: SocketAddr,
    /// How TLS starts.
    pub tls: TlsMode,
    /// SNI name.
    pub server_name: ServerName<'static>,
    /// Deadline of every single step.
    pub timeout: Duration,
}

/// Times of one submitted message.
#[derive(Debug, Clone, Copy)]
pub struct Submitted {
    /// When the last byte of DATA (the final `.` CRLF) was handed to the socket.
    pub data_end: Instant,
    /// When the `250` for it arrived.
    pub accepted: Instant,
}

/// An authenticated SMTP session.
pub struct Client {
    io: BufReader<Stream>,
    line: Vec<u8>,
    timeout: Duration,
    pipelining: bool,
}

async fn read_reply_from<R: tokio::io::AsyncBufRead + Unpin>(
    io: &mut R,
    line: &mut Vec<u8>,
    what: &'static str,
    limit: Duration,
) -> Result<Reply, Error> {
    let mut text = String::new();
    loop {
        line.clear();
        let n = within(what, limit, io.read_until(b'\n', line)).await?;
        if n == 0 {
            return Err(Error::Closed { what });
        }
        let l = String::from_utf8_lossy(line);
        let l = l.trim_end();
        let code = l
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| Error::Protocol {
                what,
                detail: format!("bad reply line {l:?}"),
            })?;
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(l.get(4..).unwrap_or(""));
        if l.as_bytes().get(3) != Some(&b'-') {
            return Ok(Reply { code, text });
        }
    }
}

fn expect(what: &'static str, reply: Reply, ok: impl Fn(u16) -> bool) -> Result<Reply, Error> {
    if ok(reply.code) {
        Ok(reply)
    } else {
        Err(Error::Reply {
            what,
            code: reply.code,
            text: reply.text,
        })
    }
}

impl Client {
    /// Connects (from `src` if given), does TLS (implicit or STARTTLS) and EHLO.
    ///
    /// # Errors
    /// Connection, TLS or protocol failure, a refusal, or a timeout.
    pub async fn connect(
        target: &Target,
        connector: &TlsConnector,
        src: Option<IpAddr>,
    ) -> Result<Client, Error> {
        let limit = target.timeout;
        let tcp = connect_tcp("smtp connect", target.addr, src, limit).await?;
        let tcp = match target.tls {
            TlsMode::Implicit => tcp,
            TlsMode::Starttls => {
                let mut plain = BufReader::new(tcp);
                let mut line = Vec::new();
                let greet = read_reply_from(&mut plain, &mut line, "smtp greeting", limit).await?;
                expect("smtp greeting", greet, |c| c == 220)?;
                within(
                    "smtp EHLO",
                    limit,
                    plain.get_mut().write_all(b"EHLO loadgen\r\n"),
                )
                .await?;
                let ehlo = read_reply_from(&mut plain, &mut line, "smtp EHLO", limit).await?;
                expect("smtp EHLO", ehlo, |c| c == 250)?;
                within(
                    "smtp STARTTLS",
                    limit,
                    plain.get_mut().write_all(b"STARTTLS\r\n"),
                )
                .await?;
                let r = read_reply_from(&mut plain, &mut line, "smtp STARTTLS", limit).await?;
                expect("smtp STARTTLS", r, |c| c == 220)?;
                if !plain.buffer().is_empty() {
                    return Err(Error::Protocol {
                        what: "smtp STARTTLS",
                        detail: "server sent data after 220 ready".into(),
                    });
                }
                plain.into_inner()
            }
        };
        let stream = tls::handshake(
            "smtp TLS handshake",
            connector,
            &target.server_name,
            tcp,
            limit,
        )
        .await?;
        let mut client = Client {
            io: BufReader::with_capacity(4096, stream),
            line: Vec::with_capacity(256),
            timeout: limit,
            pipelining: false,
        };
        if target.tls == TlsMode::Implicit {
            let greet = client.reply("smtp greeting").await?;
            expect("smtp greeting", greet, |c| c == 220)?;
        }
        client.write("smtp EHLO", b"EHLO loadgen\r\n").await?;
        let ehlo = client.reply("smtp EHLO").await?;
        let ehlo = expect("smtp EHLO", ehlo, |c| c == 250)?;
        client.pipelining = ehlo
            .text
            .lines()
            .any(|l| l.trim().eq_ignore_ascii_case("PIPELINING"));
        Ok(client)
    }

    /// Whether the server offered PIPELINING.
    pub fn pipelining(&self) -> bool {
        self.pipelining
    }

    async fn reply(&mut self, what: &'static str) -> Result<Reply, Error> {
        read_reply_from(&mut self.io, &mut self.line, what, self.timeout).await
    }

    async fn write(&mut self, what: &'static str, bytes: &[u8]) -> Result<(), Error> {
        let io = self.io.get_mut();
        within(what, self.timeout, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await
    }

    /// `AUTH PLAIN` with an initial response.
    ///
    /// # Errors
    /// Refusal (`535`), connection failure or timeout.
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), Error> {
        let creds =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.write("smtp AUTH", format!("AUTH PLAIN {creds}\r\n").as_bytes())
            .await?;
        let r = self.reply("smtp AUTH").await?;
        expect("smtp AUTH", r, |c| c == 235)?;
        Ok(())
    }

    /// Sends one message: `MAIL`, `RCPT`s and `DATA` (pipelined in one write when offered), then
    /// `data` — which must be dot-stuffed and end with `.` CRLF (see [`crate::mail::dot_stuff`]).
    ///
    /// # Errors
    /// The first refusal among the replies, connection failure or timeout. After an error the
    /// session should be dropped.
    pub async fn send(
        &mut self,
        from: &str,
        rcpts: &[&str],
        data: &[u8],
    ) -> Result<Submitted, Error> {
        let mail = format!("MAIL FROM:<{from}>\r\n");
        let rcpt_cmds: Vec<String> = rcpts.iter().map(|r| format!("RCPT TO:<{r}>\r\n")).collect();
        let mut first_error = None;
        if self.pipelining {
            let mut batch = mail;
            for c in &rcpt_cmds {
                batch.push_str(c);
            }
            batch.push_str("DATA\r\n");
            self.write("smtp MAIL", batch.as_bytes()).await?;
            let r = self.reply("smtp MAIL").await?;
            if let Err(e) = expect("smtp MAIL", r, |c| c == 250) {
                first_error = Some(e);
            }
            for _ in rcpts {
                let r = self.reply("smtp RCPT").await?;
                if let Err(e) = expect("smtp RCPT", r, |c| c == 250 || c == 251) {
                    first_error.get_or_insert(e);
                }
            }
        } else {
            self.write("smtp MAIL", mail.as_bytes()).await?;
            let r = self.reply("smtp MAIL").await?;
            expect("smtp MAIL", r, |c| c == 250)?;
            for c in &rcpt_cmds {
                self.write("smtp RCPT", c.as_bytes()).await?;
                let r = self.reply("smtp RCPT").await?;
                expect("smtp RCPT", r, |c| c == 250 || c == 251)?;
            }
            self.write("smtp DATA", b"DATA\r\n").await?;
        }
        let r = self.reply("smtp DATA").await?;
        if r.code != 354 {
            return Err(first_error.unwrap_or(Error::Reply {
                what: "smtp DATA",
                code: r.code,
                text: r.text,
            }));
        }
        if let Some(e) = first_error {
            // The server took DATA although a command before it failed: end it empty.
            self.write("smtp DATA", b".\r\n").await?;
            let _ = self.reply("smtp end of data").await;
            return Err(e);
        }
        self.write("smtp end of data", data).await?;
        let data_end = Instant::now();
        let r = self.reply("smtp end of data").await?;
        expect("smtp end of data", r, |c| c == 250)?;
        Ok(Submitted {
            data_end,
            accepted: Instant::now(),
        })
    }

    /// `QUIT`, best effort.
    pub async fn quit(mut self) {
        if self.write("smtp QUIT", b"QUIT\r\n").await.is_ok() {
            let _ = self.reply("smtp QUIT").await;
        }
        let _ = within("smtp close", self.timeout, self.io.get_mut().shutdown()).await;
    }
}
