//! The metrics listener: plain HTTP/1.1 on `metrics_address`, `GET /metrics` answered with the
//! Prometheus text of [`super::Exposition`], anything else `404` (`405` for other methods on
//! `/metrics`).
//!
//! It runs on a thread and runtime of its own at a lower CPU priority (nice 10, as the push
//! notifier), so scrapes never run on a worker thread that serves mail. A flood stays bounded:
//! at most [`MAX_CONNECTIONS`] connections are served at once (more are closed at accept), a
//! request head must arrive within [`HEAD_TIMEOUT`] and fit in [`MAX_HEAD`] bytes, and a
//! connection lives at most [`CONNECTION_LIFETIME`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use super::Exposition;

/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 16;
/// How long a request head may take (also the idle time allowed between keep-alive requests).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head read (hyper's smallest buffer).
pub const MAX_HEAD: usize = 8192;
/// A connection is closed after this long, however busy (Prometheus reconnects).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The listener thread's nice value.
const NICE: i32 = 10;

/// The running listener; [`Listener::stop`] (or dropping it) stops and joins its thread.
pub struct Listener {
    addr: SocketAddr,
    thread: crate::io::background::Background,
}

impl Listener {
    /// Serves on `listener` (bound by [`bind`] with the relay's other ports, before it drops
    /// root).
    ///
    /// # Errors
    /// The thread or its runtime could not be started.
    pub fn start(listener: std::net::TcpListener, exposition: Exposition) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let exposition = Arc::new(exposition);
        let thread = crate::io::background::Background::spawn("metrics", move |stop| {
            // Background work: a lower priority for this thread only (Linux applies the nice
            // value per thread).
            if let Err(e) = rustix::process::setpriority_process(None, NICE) {
                tracing::debug!("metrics: lowering the thread's priority: {e}");
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("metrics: runtime: {e}");
                    return;
                }
            };
            rt.block_on(serve(listener, exposition, stop));
        })?;
        tracing::info!("metrics on http://{addr}/metrics");
        Ok(Listener { addr, thread })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and joins the thread.
    pub fn stop(self) {
        self.thread.stop();
    }
}

/// Binds the metrics address (no `SO_REUSEPORT`: a second relay on it fails to start).
///
/// # Errors
/// The address is taken or not local.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    crate::server::bind_listener(addr, 128)
}

async fn serve(
    listener: std::net::TcpListener,
    exposition: Arc<Exposition>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("metrics: listener: {e}");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|v| *v) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the cap the connection is closed at once: a flood costs an accept and a close.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let exposition = exposition.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let exposition = exposition.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &exposition)) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // Past its lifetime the connection is dropped, whatever it is doing.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
    }
}

fn answer<B>(req: &hyper::Request<B>, exposition: &Exposition) -> hyper::Response<Full<Bytes>> {
    use hyper::{header, Method, StatusCode};
    let reply = |status: StatusCode, content_type: &'static str, body: Bytes| {
        let mut r = hyper::Response::new(Full::new(body));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        r
    };
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"not found: the metrics are at /metrics\n"),
        );
    }
    match *req.method() {
        Method::GET => reply(
            StatusCode::OK,
            Exposition::CONTENT_TYPE,
            Bytes::from(exposition.render()),
        ),
        Method::HEAD => reply(StatusCode::OK, Exposition::CONTENT_TYPE, Bytes::new()),
        _ => {
            let mut r = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                Bytes::from_static(b"only GET\n"),
            );
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            r
        }
    }
}
