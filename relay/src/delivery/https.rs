//! The HTTPS client for `POST /mxdeliv` (chatmail.md §3.7): hyper's HTTP/1.1 client connection
//! over tokio-rustls, kept alive per host.
//!
//! A small pool is written here instead of hyper-util's legacy `Client` because the TLS policy
//! differs per destination (verified, or any certificate for literals and `_` domains), the
//! addresses come from our own resolution (shared with SMTP), and the port is a parameter;
//! keyed by host, port and policy, the pool is a few lines.
//!
//! Bounds: connect and handshake have their own timeouts, the request and response together
//! [`super::Timeouts::https`] (the reference's 60 s), the response body at most
//! [`MAX_RESPONSE_BODY`] bytes; an idle connection is kept [`super::Timeouts::idle`] and at most
//! [`MAX_IDLE_PER_HOST`] per host.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::Timeouts;
use crate::outbound::mx::MxHost;
use crate::outbound::mxdeliv::{self, Verdict};

/// Response body bytes read at most (the receiver answers with an SMTP reply line).
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// Idle keep-alive connections kept per host.
pub const MAX_IDLE_PER_HOST: usize = 8;
/// Idle connections kept in all.
pub const MAX_IDLE: usize = 1024;

type Sender = SendRequest<Full<Bytes>>;

/// Keep-alive connections by `host:port:policy`.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<(Sender, Instant)>>>,
}

impl Pool {
    fn take(&self, key: &str, idle_limit: std::time::Duration) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(key)?;
        let mut found = None;
        while let Some((sender, since)) = list.pop() {
            if since.elapsed() < idle_limit && sender.is_ready() {
                found = Some(sender);
                break;
            }
        }
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    fn put(&self, key: String, sender: Sender, idle_limit: std::time::Duration) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = idle.values().map(Vec::len).sum();
        if total >= MAX_IDLE {
            idle.retain(|_, list| {
                list.retain(|(s, since)| since.elapsed() < idle_limit && !s.is_closed());
                !list.is_empty()
            });
            if idle.values().map(Vec::len).sum::<usize>() >= MAX_IDLE {
                return;
            }
        }
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_HOST {
            list.push((sender, Instant::now()));
        }
    }

    /// Idle connections held (for tests and status).
    pub fn idle_count(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.values().map(Vec::len).sum()
    }
}

/// Posts the message to `https://<host>:<port>/mxdeliv` and says what the answer means.
/// Every failure (connect, TLS, timeout, a non-2xx status) is [`Verdict::FallThrough`].
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the arguments
pub async fn post(
    pool: &Pool,
    host: &MxHost,
    addrs: &[IpAddr],
    port: u16,
    tls: Arc<ClientConfig>,
    timeouts: &Timeouts,
    sender: &str,
    recipients: &[String],
    body: Bytes,
) -> Verdict {
    let key = format!("{}:{port}:{:?}", host.name, host.tls);
    let build = || mxdeliv::request(&host.name, port, sender, recipients, body.clone());
    if let Err(e) = build() {
        return Verdict::FallThrough(e);
    }
    // A pooled connection the server closed meanwhile fails before any answer: try once more
    // on a fresh one (the server never saw the request).
    if let Some(conn) = pool.take(&key, timeouts.idle) {
        if let Ok(req) = build() {
            match exchange(conn, req, timeouts).await {
                Ok((verdict, keep)) => {
                    if let Some(conn) = keep {
                        pool.put(key, conn, timeouts.idle);
                    }
                    return verdict;
                }
                Err(e) => {
                    tracing::debug!("reused /mxdeliv connection to {} failed: {e}", host.name)
                }
            }
        }
    }
    let conn = match connect(host, addrs, port, tls, timeouts).await {
        Ok(c) => c,
        Err(e) => return Verdict::FallThrough(e),
    };
    let Ok(req) = build() else {
        return Verdict::FallThrough("request".into());
    };
    match exchange(conn, req, timeouts).await {
        Ok((verdict, keep)) => {
            if let Some(conn) = keep {
                pool.put(key, conn, timeouts.idle);
            }
            verdict
        }
        Err(e) => Verdict::FallThrough(e),
    }
}

/// A new HTTP/1.1 connection over TLS; its connection task runs until the server closes or the
/// sender is dropped.
async fn connect(
    host: &MxHost,
    addrs: &[IpAddr],
    port: u16,
    tls: Arc<ClientConfig>,
    timeouts: &Timeouts,
) -> Result<Sender, String> {
    let tcp = super::net::connect_any(addrs, port, timeouts.connect)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = super::tls::server_name(host)?;
    let stream = tokio::time::timeout(timeouts.tls, TlsConnector::from(tls).connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("/mxdeliv connection ended: {e}");
        }
    });
    Ok(sender)
}

/// One request and its response within [`Timeouts::https`]. `Err` only when no response head
/// arrived (the request may be retried); a response gives a verdict and, if the connection can
/// carry another request, the sender back.
async fn exchange(
    mut conn: Sender,
    req: Request<Full<Bytes>>,
    timeouts: &Timeouts,
) -> Result<(Verdict, Option<Sender>), String> {
    let deadline = Instant::now() + timeouts.https;
    let head = tokio::time::timeout_at(deadline, async {
        conn.ready().await?;
        conn.send_request(req).await
    })
    .await;
    let response = match head {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(format!("HTTP: {e}")),
        Err(_) => {
            return Ok((
                Verdict::FallThrough(format!(
                    "no response within {} ms",
                    timeouts.https.as_millis()
                )),
                None,
            ))
        }
    };
    let status = response.status().as_u16();
    let body = tokio::time::timeout_at(
        deadline,
        Limited::new(response.into_body(), MAX_RESPONSE_BODY).collect(),
    )
    .await;
    match body {
        Ok(Ok(collected)) => {
            let bytes = collected.to_bytes();
            let keep = (!conn.is_closed()).then_some(conn);
            Ok((mxdeliv::classify(status, &bytes), keep))
        }
        // The status counts even if the body is too large or too slow; the connection does not.
        Ok(Err(e)) => {
            tracing::debug!("/mxdeliv response body: {e}");
            Ok((mxdeliv::classify(status, b""), None))
        }
        Err(_) => Ok((mxdeliv::classify(status, b""), None)),
    }
}
