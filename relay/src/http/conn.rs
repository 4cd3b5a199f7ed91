//! One HTTP/1.1 connection: hyper's server connection over the relay's own TLS
//! ([`Pipeline`]) and either I/O backend.
//!
//! hyper wants a poll-based `AsyncRead + AsyncWrite`; the backends offer owned-buffer reads and
//! writes (io_uring's model). The bridge is an in-memory duplex pipe: hyper's connection runs
//! as a local task on one end, and two pumps move bytes between the other end and the socket,
//! decrypting on the way in and encrypting on the way out. The two directions run concurrently
//! (a request body may still be arriving while a response is being written) and share the TLS
//! state through a `RefCell` that is never borrowed across an await.
//!
//! # Limits (what one connection may cost)
//! - Request head: [`MAX_HEAD`] bytes (hyper's read buffer; more is `431`), read within
//!   `http_head_timeout` (20 s) of the connection becoming ready for a request — which also closes idle
//!   keep-alive connections and slowloris clients.
//! - Request body: per route ([`site::body_cap`]); a declared length over it is `413` before a
//!   byte of it is read, a body that grows past it is `413` too; the whole body must arrive
//!   within `http_body_timeout` (60 s, the reference's; `408`).
//! - [`MAX_REQUESTS`] requests per connection, then `Connection: close`.
//! - The duplex pipe holds at most [`PIPE_BUFFER`] bytes each way; the TLS layer buffers at most
//!   one record beyond that.
//!
//! HTTP/2 is not served (see the module docs of [`crate::http`]).
//!
//! # IMAP and submission over WebSocket
//! On the HTTPS port, `/imap` and `/smtp` upgrade to a WebSocket (RFC 6455) that carries the
//! protocol's bytes in binary (or text) messages, as the reference's websockify setup: the
//! client speaks IMAP or submission inside, the outer TLS counts as the session's TLS (no
//! STARTTLS; AUTH/LOGIN allowed at once). The session is the same sans-I/O session with the
//! same admission (IMAP and SMTP caps per source) as on ports 993 and 465, driven by the same
//! [`crate::io::drive`] over [`WsConn`]. A subprotocol `binary` is echoed when offered
//! (websockify clients ask for it). Messages from the client are capped at [`WS_MAX_MESSAGE`].

use std::cell::RefCell;
use std::convert::Infallible;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite;

use super::site::{self, Files, Listener};
use crate::io::pipeline::Pipeline;
use crate::io::{Conn, Established};
use crate::shared::Shared;

/// Largest request head (request line and headers); hyper answers `431` beyond it. Room for a
/// `/mxdeliv` request to the reference's 1,000 recipients (one `X-Mail-To` each).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a request (the recipients of a `/mxdeliv` request, and some).
pub const MAX_HEADERS: usize = crate::smtp::session::MAX_RECIPIENTS + 32;
/// Requests served on one connection before it is closed (nginx's `keepalive_requests`).
pub const MAX_REQUESTS: u32 = 1000;
/// Bytes the in-memory pipe between the socket pumps and hyper holds each way.
pub const PIPE_BUFFER: usize = 16 * 1024;
/// Largest file served from `www_folder`.
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// Files of `www_folder` on disk.
pub struct WwwFolder {
    root: Option<PathBuf>,
}

impl WwwFolder {
    /// The folder `config` names (`None`: the built-in pages only).
    pub fn new(root: Option<PathBuf>) -> WwwFolder {
        WwwFolder { root }
    }
}

impl Files for WwwFolder {
    fn site_enabled(&self) -> bool {
        // A configured folder that does not exist turns the website off (the reference).
        self.root.as_ref().is_none_or(|r| r.is_dir())
    }

    fn get(&self, rel: &str) -> Option<Vec<u8>> {
        let path = self.root.as_ref()?.join(rel);
        let meta = std::fs::metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > MAX_FILE {
            return None;
        }
        std::fs::read(path).ok()
    }
}

/// Largest WebSocket message (and frame) a client may send; the protocols inside stream, so
/// clients send data in pieces of their socket reads.
pub const WS_MAX_MESSAGE: usize = 1024 * 1024;

/// The protocol a WebSocket path carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsProtocol {
    /// `/imap`: IMAP as on port 993.
    Imap,
    /// `/smtp`: submission as on port 465.
    Submission,
}

/// An admitted session for a WebSocket, and what must be held while it runs (its connection
/// slots); `None` when admission refuses (per-source or global caps).
pub type Sessions =
    Rc<dyn Fn(WsProtocol) -> Option<(Box<dyn crate::session::Session>, Box<dyn std::any::Any>)>>;

/// What a connection needs besides its socket.
#[derive(Clone)]
pub struct Context {
    /// The relay's shared state.
    pub shared: Arc<Shared>,
    /// Which listener accepted the connection.
    pub listener: Listener,
    /// The client's address (the `/new` limiter).
    pub peer: IpAddr,
    /// `www_folder`.
    pub files: Arc<WwwFolder>,
    /// The session clock of the connection (unix ms).
    pub now_ms: Rc<dyn Fn() -> u64>,
    /// Starts WebSocket sessions (the HTTPS port only; `None` on the HTTP port).
    pub sessions: Option<Sessions>,
    /// The TLS configuration a session would use for STARTTLS (never asked for over WebSocket).
    pub tls: Arc<rustls::ServerConfig>,
}

/// Serves HTTP on `conn` until the client or hyper closes it. `established` is the TLS state of
/// the HTTPS port (handshake done, ALPN chose HTTP); `None` serves plain HTTP (the HTTP port).
pub async fn serve<C: Conn>(conn: &C, established: Option<Established>, ctx: Context) {
    let (pipe, plain) = match established {
        Some(e) => (e.pipe, e.plain),
        None => (Pipeline::default(), Vec::new()),
    };
    if let Err(e) = bridge(conn, pipe, plain, ctx).await {
        tracing::debug!("http connection ended: {e}");
    }
}

async fn bridge<C: Conn>(conn: &C, pipe: Pipeline, plain: Vec<u8>, ctx: Context) -> io::Result<()> {
    let config = &ctx.shared.config;
    let head_timeout = Duration::from_secs(config.http_head_timeout_secs);
    let body_timeout = Duration::from_secs(config.http_body_timeout_secs);
    let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
    let (mut from_hyper, mut to_hyper) = tokio::io::split(ours);
    let requests = Rc::new(std::cell::Cell::new(0u32));
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        let requests = requests.clone();
        async move {
            requests.set(requests.get() + 1);
            let mut resp = handle(&ctx, req).await;
            if requests.get() >= MAX_REQUESTS {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let connection = builder
        .serve_connection(hyper_util::rt::TokioIo::new(theirs), service)
        .with_upgrades();
    let hyper_task = tokio::task::spawn_local(async move {
        if let Err(e) = connection.await {
            tracing::debug!("http: {e}");
        }
    });
    let pipe = RefCell::new(pipe);
    // One writer at a time on the socket: both pumps may have bytes to send.
    let write_lock = tokio::sync::Mutex::new(());
    let send = |wire: Vec<u8>| {
        let lock = &write_lock;
        async move {
            if wire.is_empty() {
                return Ok(());
            }
            let _held = lock.lock().await;
            let (res, _) = conn.write_all(wire).await;
            res
        }
    };

    // Socket → TLS → hyper.
    let inbound = async {
        if !plain.is_empty() {
            to_hyper.write_all(&plain).await?;
        }
        drop(plain);
        let mut buf = Vec::new();
        loop {
            let (res, b) = conn.read(buf).await;
            res?;
            if b.is_empty() {
                // The client closed its side: hyper sees the end of input.
                let _ = to_hyper.shutdown().await;
                return Ok::<(), io::Error>(());
            }
            let mut clear = Vec::new();
            let mut wire = Vec::new();
            let result = pipe.borrow_mut().input(&b, &mut clear, &mut wire);
            send(wire).await?;
            result?;
            if !clear.is_empty() {
                to_hyper.write_all(&clear).await?;
            }
            buf = b;
        }
    };

    // hyper → TLS → socket.
    let outbound = async {
        let mut buf = vec![0u8; PIPE_BUFFER];
        loop {
            let n = from_hyper.read(&mut buf).await?;
            let mut wire = Vec::new();
            if n == 0 {
                // hyper is done with the connection: close_notify, then close.
                pipe.borrow_mut().close(&mut wire);
                send(wire).await?;
                return Ok::<(), io::Error>(());
            }
            {
                let mut p = pipe.borrow_mut();
                p.output(&buf[..n], &mut wire)?;
                p.flush(&mut wire)?;
            }
            send(wire).await?;
        }
    };

    tokio::pin!(inbound);
    tokio::pin!(outbound);
    let result = tokio::select! {
        r = &mut outbound => r,
        r = &mut inbound => match r {
            // The client stopped sending: let hyper finish what it has (bounded by the write
            // timeout of the socket), then stop.
            Ok(()) => match tokio::time::timeout(body_timeout, &mut outbound).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            },
            Err(e) => Err(e),
        },
    };
    hyper_task.abort();
    result
}

/// One request: the body read within its cap and deadline, then the route's answer.
async fn handle(ctx: &Context, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(sessions) = &ctx.sessions {
        let protocol = match req.uri().path() {
            "/imap" => Some(WsProtocol::Imap),
            "/smtp" => Some(WsProtocol::Submission),
            _ => None,
        };
        if let Some(protocol) = protocol {
            return websocket(ctx, sessions, protocol, req);
        }
    }
    let cap = site::body_cap(req.method(), req.uri().path(), &ctx.shared.config);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return plain_response(site::too_large(req.uri().path()));
    }
    let (parts, body) = req.into_parts();
    let body_timeout = Duration::from_secs(ctx.shared.config.http_body_timeout_secs);
    let collected = tokio::time::timeout(body_timeout, Limited::new(body, cap).collect()).await;
    let body = match collected {
        Err(_) => {
            return plain_response(site::status_text(
                StatusCode::REQUEST_TIMEOUT,
                "Request Timeout\n",
            ))
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return plain_response(site::too_large(parts.uri.path()));
        }
        Ok(Err(e)) => {
            tracing::debug!("http: reading a request body: {e}");
            return plain_response(site::status_text(StatusCode::BAD_REQUEST, "Bad Request\n"));
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    if ctx.listener == Listener::Https
        && parts.method == hyper::Method::POST
        && parts.uri.path() == "/mxdeliv"
    {
        return plain_response(mxdeliv(ctx, &parts.headers, body).await);
    }
    let req = Request::from_parts(parts, body);
    let resp = site::handle(
        &ctx.shared,
        &*ctx.files,
        ctx.listener,
        &req,
        ctx.peer,
        (ctx.now_ms)(),
        &mut rand::thread_rng(),
    );
    plain_response(resp)
}

/// `POST /mxdeliv` (see [`super::mxdeliv`]): the checks of port 25 in the same order, the
/// origin verification, the durable write; one SMTP reply mapped to the HTTP answer.
async fn mxdeliv(ctx: &Context, headers: &hyper::HeaderMap, body: Bytes) -> Response<Bytes> {
    let reply = mxdeliv_reply(ctx, headers, body).await;
    ctx.shared
        .metrics
        .message(crate::metrics::Path::Mxdeliv, reply.code);
    super::mxdeliv::respond(&reply)
}

/// The SMTP reply [`mxdeliv`] answers with.
async fn mxdeliv_reply(
    ctx: &Context,
    headers: &hyper::HeaderMap,
    body: Bytes,
) -> crate::smtp::reply::Reply {
    use crate::smtp::inbound;
    let shared = &ctx.shared;
    let envelope = match super::mxdeliv::envelope(headers) {
        Ok(e) => e,
        Err(reply) => return reply,
    };
    let mut accounts = Vec::with_capacity(envelope.recipients.len());
    let mut addrs = Vec::with_capacity(envelope.recipients.len());
    for rcpt in &envelope.recipients {
        match inbound::check_recipient(shared, rcpt) {
            Ok(account) => {
                if !accounts.contains(&account.id) {
                    accounts.push(account.id);
                    addrs.push(account.addr);
                }
            }
            Err(reply) => return reply,
        }
    }
    let policy_envelope = crate::policy::Envelope {
        mail_from: &envelope.sender,
        rcpt_to: &addrs,
    };
    let incoming = match inbound::check_message(shared, &policy_envelope, &body) {
        Ok(i) => i,
        Err(reply) => return reply,
    };
    if inbound::needs_origin_check(&incoming) {
        let verdict = crate::dkim::verify_origin(shared, &body, incoming.from_domain()).await;
        if let Some((code, text)) = verdict.reply() {
            return crate::smtp::reply::Reply::new(code, text);
        }
    }
    let now = i64::try_from((ctx.now_ms)() / 1000).unwrap_or(i64::MAX);
    let op = crate::store::Op::Deliver {
        recipients: accounts.clone(),
        sender: None,
        internal_date: now,
        body: crate::policy::clean_delivery_headers(&body),
    };
    let result = shared.store.commit(op).await;
    shared.metrics.store_result(&result);
    inbound::delivery_reply(&accounts, result)
}

fn plain_response(resp: Response<Bytes>) -> Response<Full<Bytes>> {
    resp.map(Full::new)
}

/// `/imap` and `/smtp`: the WebSocket handshake, then the session on the upgraded connection
/// (a local task; the HTTP connection ends with it).
fn websocket(
    ctx: &Context,
    sessions: &Sessions,
    protocol: WsProtocol,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let headers = req.headers();
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let upgrade = req.method() == hyper::Method::GET
        && has(header::UPGRADE, "websocket")
        && has(header::CONNECTION, "upgrade")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let Some(key) = key.filter(|_| upgrade) else {
        let mut r = plain_response(site::status_text(
            StatusCode::UPGRADE_REQUIRED,
            "This path speaks WebSocket only\n",
        ));
        r.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return r;
    };
    let binary = has(header::SEC_WEBSOCKET_PROTOCOL, "binary");
    let Some((session, admitted)) = sessions(protocol) else {
        return plain_response(site::status_text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many connections\n",
        ));
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let shared = ctx.shared.clone();
    let tls = ctx.tls.clone();
    let peer = ctx.peer;
    tokio::task::spawn_local(async move {
        let _admitted = admitted;
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("websocket upgrade: {e}");
                return;
            }
        };
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(WS_MAX_MESSAGE))
            .max_frame_size(Some(WS_MAX_MESSAGE));
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            tungstenite::protocol::Role::Server,
            Some(config),
        )
        .await;
        let clock = crate::io::SessionClock::start();
        crate::io::drive(
            WsConn::new(ws),
            session,
            crate::io::Start::Plain(tls),
            shared,
            clock,
            peer,
        )
        .await;
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if binary {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("binary"),
        );
    }
    r
}

type WsStream =
    tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// A WebSocket as a [`Conn`]: a read is the payload of the next data message (pings are
/// answered, a close or the end of the stream reads as end of input), a write is one binary
/// message. Reads and writes may be in flight at once (the drive loop keeps a read pending
/// while it writes), so the two halves are locked separately.
pub struct WsConn {
    rx: tokio::sync::Mutex<futures_util::stream::SplitStream<WsStream>>,
    tx: tokio::sync::Mutex<futures_util::stream::SplitSink<WsStream, tungstenite::Message>>,
}

impl WsConn {
    fn new(ws: WsStream) -> WsConn {
        use futures_util::StreamExt;
        let (tx, rx) = ws.split();
        WsConn {
            rx: tokio::sync::Mutex::new(rx),
            tx: tokio::sync::Mutex::new(tx),
        }
    }
}

impl Conn for WsConn {
    async fn read(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        use futures_util::StreamExt;
        use tungstenite::Message;
        drop(buf);
        let mut rx = self.rx.lock().await;
        loop {
            return match rx.next().await {
                None | Some(Ok(Message::Close(_))) => (Ok(()), Vec::new()),
                Some(Ok(Message::Binary(b))) if !b.is_empty() => (Ok(()), b.to_vec()),
                Some(Ok(Message::Text(t))) if !t.is_empty() => (Ok(()), t.as_bytes().to_vec()),
                // Pings are answered by the library; empty messages carry nothing.
                Some(Ok(_)) => continue,
                Some(Err(e)) => (Err(io::Error::other(e)), Vec::new()),
            };
        }
    }

    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        use futures_util::SinkExt;
        use tungstenite::Message;
        let mut tx = self.tx.lock().await;
        let res = tx
            .send(Message::Binary(Bytes::from(buf)))
            .await
            .map_err(io::Error::other);
        (res, Vec::new())
    }
}
