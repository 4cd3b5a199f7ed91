//! An SMTP connection to one host, driving [`crate::outbound::smtp_client::Client`] over tokio
//! sockets: connect (Happy Eyeballs over the host's addresses), STARTTLS with SNI and the
//! destination's certificate policy, per-step deadlines, several messages in turn (connection
//! reuse), QUIT.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::Timeouts;
use crate::outbound::mx::MxHost;
use crate::outbound::smtp_client::{Client, ConnError, Event, Step};
use crate::outbound::Outcome;

/// Read buffer per connection.
const READ_BUF: usize = 16 * 1024;

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Between the two (only while the handshake runs).
    Gone,
}

impl Stream {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(buf).await,
            Stream::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(s) => Some(s.get_ref().0),
            Stream::Gone => None,
        }
    }
}

/// An open SMTP session with a host, past STARTTLS and EHLO, ready for messages.
pub struct Connection {
    stream: Stream,
    client: Client,
    timeouts: Timeouts,
    /// When it last finished a transaction (for the idle pool).
    pub(crate) idle_since: Instant,
}

impl Connection {
    /// Connects to `host` at one of `addrs` on `port`, greets, upgrades with STARTTLS (SNI and
    /// certificate check per `tls`) and greets again.
    ///
    /// # Errors
    /// [`ConnError::Connect`] (no address answered), [`ConnError::Tls`] (no STARTTLS, handshake
    /// or certificate failure), [`ConnError::Refused`], [`ConnError::Protocol`],
    /// [`ConnError::Io`] (including timeouts).
    pub async fn open(
        host: &MxHost,
        addrs: &[IpAddr],
        port: u16,
        ehlo_name: &str,
        tls: Arc<ClientConfig>,
        timeouts: Timeouts,
    ) -> Result<Connection, ConnError> {
        let tcp = super::net::connect_any(addrs, port, timeouts.connect)
            .await
            .map_err(ConnError::Connect)?;
        let mut conn = Connection {
            stream: Stream::Plain(tcp),
            client: Client::new(ehlo_name),
            timeouts,
            idle_since: Instant::now(),
        };
        match conn.drive(Some((host, tls))).await? {
            Event::Ready => Ok(conn),
            other => Err(ConnError::Protocol(format!("unexpected state {other:?}"))),
        }
    }

    /// Sends one message: one outcome per recipient. After it, [`Connection::is_reusable`] says
    /// whether another message may follow.
    ///
    /// # Errors
    /// A connection failure before the transaction was answered: no recipient has an answer
    /// (the next MX host may be tried).
    pub async fn send(
        &mut self,
        sender: &str,
        recipients: &[String],
        body: Bytes,
    ) -> Result<Vec<Outcome>, ConnError> {
        self.client.send(sender, recipients, body);
        let outcomes = match self.drive(None).await? {
            Event::Done(outcomes) => outcomes,
            other => return Err(ConnError::Protocol(format!("unexpected state {other:?}"))),
        };
        // Finish any RSET now so the connection is idle (or known dead) when pooled.
        if !matches!(
            self.client.poll(),
            Event::Ready | Event::Closed | Event::Failed(_)
        ) {
            let _ = self.drive(None).await;
        }
        self.idle_since = Instant::now();
        Ok(outcomes)
    }

    /// Whether the session is idle and healthy, and the peer has not closed or written
    /// anything unasked since (checked without reading: a byte waiting means a `421` or a
    /// close).
    pub fn is_reusable(&self) -> bool {
        if !self.client.is_ready() {
            return false;
        }
        let Some(tcp) = self.stream.tcp() else {
            return false;
        };
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        matches!(
            socket2::SockRef::from(tcp).peek(&mut probe),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }

    /// Sends QUIT and waits briefly for its answer; errors are ignored.
    pub async fn quit(mut self) {
        self.client.quit();
        let _ = tokio::time::timeout(self.timeouts.quit, self.drive(None)).await;
    }

    /// Runs the client until it needs the caller: Ready, Done, Closed (as events) or a failure
    /// (as the error). `starttls` carries what the handshake needs (only while opening).
    async fn drive(
        &mut self,
        starttls: Option<(&MxHost, Arc<ClientConfig>)>,
    ) -> Result<Event, ConnError> {
        let mut buf = vec![0u8; READ_BUF];
        // The deadline of the reply being waited for; a new command starts a new one.
        let mut deadline: Option<Instant> = None;
        loop {
            if !self.client.output().is_empty() {
                deadline = None;
                self.flush().await?;
            }
            match self.client.poll() {
                Event::Read(step) => {
                    let until =
                        *deadline.get_or_insert_with(|| Instant::now() + self.timeouts.step(step));
                    let n = match tokio::time::timeout_at(until, self.stream.read(&mut buf)).await {
                        Ok(Ok(n)) => n,
                        // A close without TLS close_notify is still a close.
                        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                        Ok(Err(e)) => return Err(ConnError::Io(format!("read: {e}"))),
                        Err(_) => {
                            return Err(ConnError::Io(timed_out(step, self.timeouts.step(step))))
                        }
                    };
                    if n == 0 {
                        self.client.receive_eof();
                    } else {
                        self.client.receive(&buf[..n]);
                    }
                }
                // `flush` above wrote the body chunk by chunk.
                Event::Write(_) => {}
                Event::StartTls => {
                    let Some((host, config)) = &starttls else {
                        return Err(ConnError::Protocol(
                            "STARTTLS after the session opened".into(),
                        ));
                    };
                    self.handshake(host, config.clone()).await?;
                    self.client.tls_established();
                }
                Event::Failed(e) => return Err(e),
                event @ (Event::Ready | Event::Done(_) | Event::Closed) => return Ok(event),
            }
        }
    }

    /// Writes the client's output (for a body: chunk after chunk), each write within its
    /// step's deadline.
    async fn flush(&mut self) -> Result<(), ConnError> {
        while !self.client.output().is_empty() {
            let step = if self.client.is_sending_body() {
                Step::DataBody
            } else {
                Step::Command
            };
            let limit = self.timeouts.step(step);
            let out = self.client.output();
            let n = out.len();
            match tokio::time::timeout(limit, self.stream.write_all(out)).await {
                Ok(Ok(())) => self.client.consume_output(n),
                Ok(Err(e)) => return Err(ConnError::Io(format!("write: {e}"))),
                Err(_) => return Err(ConnError::Io(timed_out(step, limit))),
            }
        }
        Ok(())
    }

    async fn handshake(
        &mut self,
        host: &MxHost,
        config: Arc<ClientConfig>,
    ) -> Result<(), ConnError> {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(ConnError::Tls("STARTTLS twice".into()));
        };
        let name = super::tls::server_name(host).map_err(ConnError::Tls)?;
        let connect = TlsConnector::from(config).connect(name, tcp);
        match tokio::time::timeout(self.timeouts.tls, connect).await {
            Ok(Ok(tls)) => {
                self.stream = Stream::Tls(Box::new(tls));
                Ok(())
            }
            Ok(Err(e)) => Err(ConnError::Tls(e.to_string())),
            Err(_) => Err(ConnError::Tls(format!(
                "handshake timed out after {} ms",
                self.timeouts.tls.as_millis()
            ))),
        }
    }
}

fn timed_out(step: Step, limit: std::time::Duration) -> String {
    let what = match step {
        Step::Greeting => "waiting for the greeting",
        Step::Command => "waiting for a reply",
        Step::DataBody => "sending the message",
        Step::DataDone => "waiting for the reply to the message",
    };
    format!("timed out {what} ({} ms)", limit.as_millis())
}
