//! `httpbench`: HTTPS load generator for the relay's web side (`/new`, autoconfig) or any other
//! HTTPS server on loopback (nginx as the anchor, `tools/http-compare.sh`).
//!
//! Default mode: N keep-alive HTTP/1.1 connections over TLS (ALPN `http/1.1`), each sending one
//! request at a time (closed loop) or a fixed total `--rate`, for `--duration` seconds; counts
//! requests, responses by status and errors by step, and records the latency of every response
//! (hdrhistogram). `httpbench idle`: K connections that make one request each and then stay open
//! and idle; the server's RSS growth per connection (`--server-pid`).
//!
//! Only talks to the address given with `--host` (loopback by default); every network step has a
//! deadline and `--duration` bounds the run, so a refusing or dead server gives errors, never a
//! hang. Certificates are not verified (see `relay_tools::tls`).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: network clients

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use relay_tools::stats::{lock, Errors, Latency};
use relay_tools::{connect_tcp, loopback_source, raise_nofile, rss_kib, server_memory, tls, Error};
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsConnector;

const LONG_ABOUT: &str = "\
HTTPS load generator for the relay's web side (or nginx serving the same files).

Default mode: --connections keep-alive HTTP/1.1 connections over TLS (ALPN http/1.1), all opened
before the clock starts; each sends --method --path and waits for the whole response before the
next (closed loop), or the connections share a fixed total --rate (open loop: a request whose slot
came while its connection was still busy counts from its slot, so a server that falls behind
shows it). A connection the server
closes (`Connection: close` after its request budget, or an idle timeout) is reopened; the
handshake counts in no request's latency. Reports requests/s, latency percentiles, responses by
status and errors by step.

`httpbench idle`: K connections (spread over loopback source addresses) that make one request each
and stay open; the server's RSS growth per connection (--server-pid, repeatable: summed).

Examples:
  httpbench --connections 32 --duration 10                                # autoconfig, relay dev
  httpbench --method POST --path /new --connections 32 --json new.json    # /new (lift its limit)
  httpbench --rate 2000 --duration 10 --port 18445                        # 2,000 req/s to nginx
  httpbench idle --connections 5000 --server-pid $(pidof relay)";

#[derive(Parser)]
#[command(version, about, long_about = LONG_ABOUT, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    sub: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Sub {
    /// Idle keep-alive connections: server RSS per connection.
    Idle(IdleArgs),
}

#[derive(Args, Clone)]
struct TargetArgs {
    /// Server address (loopback).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// HTTPS port (`relay dev`: 10443).
    #[arg(long, default_value_t = 10443)]
    port: u16,
    /// TLS server name (SNI) and `Host` header; certificates are not verified.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Request method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request path.
    #[arg(long, default_value = "/.well-known/autoconfig/mail/config-v1.1.xml")]
    path: String,
    /// Deadline of every single network step (connect, handshakes, response head, body), in
    /// seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Worker threads of the load generator (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Total request rate per second (0: closed loop, as fast as the server answers).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests (0: no limit).
    #[arg(long, default_value_t = 0)]
    requests: u64,
}

#[derive(Args, Clone)]
struct IdleArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Idle connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Connections per loopback source address (127.0.0.1, .2, … 127.0.x.y); 0: no bind.
    #[arg(long, default_value_t = 100)]
    per_source: usize,
    /// Connections being set up at the same time.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Server process whose VmRSS is read before and after (repeatable; summed).
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Also sum VmRSS/Pss of every process with this name.
    #[arg(long)]
    server_process: Vec<String>,
    /// Seconds to wait after the last connection is idle before reading RSS.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Bound for the whole set-up phase, in seconds.
    #[arg(long, default_value_t = 300.0)]
    setup_limit: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.sub {
        Some(Sub::Idle(a)) => a.target.threads,
        None => cli.run.target.threads,
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.sub {
            Some(Sub::Idle(args)) => idle(args).await,
            None => run(cli.run).await,
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ------------------------------------------------------------------------------ client

/// Where and what to ask, derived from [`TargetArgs`].
struct Target {
    addr: SocketAddr,
    name: ServerName<'static>,
    host: HeaderValue,
    method: Method,
    path: hyper::Uri,
    connector: TlsConnector,
    timeout: Duration,
}

impl Target {
    fn new(a: &TargetArgs) -> anyhow::Result<Target> {
        if !(a.timeout > 0.0 && a.timeout < 3600.0) {
            bail!("--timeout must be between 0 and 3600 seconds");
        }
        let method = Method::from_bytes(a.method.to_ascii_uppercase().as_bytes())
            .with_context(|| format!("--method {:?}", a.method))?;
        let path: hyper::Uri = a
            .path
            .parse()
            .with_context(|| format!("--path {:?}", a.path))?;
        if path.scheme().is_some() || !a.path.starts_with('/') {
            bail!("--path must be an absolute path such as /new");
        }
        Ok(Target {
            addr: SocketAddr::new(a.host, a.port),
            name: tls::server_name(&a.server_name).map_err(anyhow::Error::msg)?,
            host: HeaderValue::from_str(&a.server_name).context("--server-name as Host header")?,
            method,
            path,
            connector: tls::connector_with_alpn(&[b"http/1.1"]),
            timeout: Duration::from_secs_f64(a.timeout),
        })
    }

    fn url(&self) -> String {
        format!("https://{}{}", self.addr, self.path)
    }

    /// The request: no body (`Content-Length: 0` on methods that usually carry one).
    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.path.clone();
        let h = req.headers_mut();
        h.insert(header::HOST, self.host.clone());
        h.insert(header::USER_AGENT, HeaderValue::from_static("httpbench"));
        if !matches!(self.method, Method::GET | Method::HEAD) {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        req
    }
}

/// A hyper client error as an [`Error`] of step `what`.
fn from_hyper(what: &'static str, e: hyper::Error) -> Error {
    use std::error::Error as _;
    if e.is_closed() || e.is_incomplete_message() || e.is_canceled() {
        return Error::Closed { what };
    }
    if e.is_parse() || e.is_parse_status() {
        return Error::Protocol {
            what,
            detail: e.to_string(),
        };
    }
    let kind = e
        .source()
        .and_then(|s| s.downcast_ref::<io::Error>())
        .map_or(io::ErrorKind::Other, io::Error::kind);
    Error::Io {
        what,
        source: io::Error::new(kind, e.to_string()),
    }
}

/// Runs a hyper step with a deadline.
async fn step<T>(
    what: &'static str,
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, hyper::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(from_hyper(what, e)),
        Err(_) => Err(Error::Timeout { what }),
    }
}

/// An open HTTP/1.1 connection; its driver task ends when the connection closes.
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// What one response was.
struct Answer {
    status: u16,
    bytes: usize,
    /// The server announced it closes the connection after this response.
    close: bool,
}

/// TCP (from `src` if given), TLS with ALPN `http/1.1`, HTTP/1.1 handshake.
async fn open(t: &Target, src: Option<IpAddr>) -> Result<Connection, Error> {
    let tcp = connect_tcp("tcp connect", t.addr, src, t.timeout).await?;
    let stream = tls::handshake("tls handshake", &t.connector, &t.name, tcp, t.timeout).await?;
    if let Some(p) = stream.get_ref().1.alpn_protocol() {
        if p != b"http/1.1" {
            return Err(Error::Protocol {
                what: "tls handshake",
                detail: format!("ALPN chose {:?}", String::from_utf8_lossy(p)),
            });
        }
    }
    let (sender, conn) = step(
        "http handshake",
        t.timeout,
        http1::handshake(TokioIo::new(stream)),
    )
    .await?;
    let driver = tokio::spawn(async move {
        // Errors show up on the request that was in flight.
        let _ = conn.await;
    });
    Ok(Connection { sender, driver })
}

/// One request and its whole response body.
async fn exchange(t: &Target, c: &mut Connection) -> Result<Answer, Error> {
    step("http ready", t.timeout, c.sender.ready()).await?;
    let resp = step(
        "http response",
        t.timeout,
        c.sender.send_request(t.request()),
    )
    .await?;
    let status = resp.status().as_u16();
    let close = resp
        .headers()
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let body = step("http body", t.timeout, resp.into_body().collect()).await?;
    Ok(Answer {
        status,
        bytes: body.to_bytes().len(),
        close,
    })
}

/// Responses by status code.
#[derive(Default)]
struct Statuses(Mutex<BTreeMap<u16, u64>>);

impl Statuses {
    fn add(&self, status: u16) {
        *lock(&self.0).entry(status).or_default() += 1;
    }

    fn count(&self, status: u16) -> u64 {
        lock(&self.0).get(&status).copied().unwrap_or(0)
    }

    /// `{"200": n, ...}`.
    fn summary(&self) -> Value {
        let m = lock(&self.0);
        Value::Object(m.iter().map(|(s, n)| (s.to_string(), json!(n))).collect())
    }

    /// `200: n, 429: m`.
    fn line(&self) -> String {
        let m = lock(&self.0);
        if m.is_empty() {
            return "none".into();
        }
        m.iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn write_json(path: &Option<PathBuf>, v: &Value) -> anyhow::Result<()> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(v)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(())
}

// ------------------------------------------------------------------------------ load run

/// State shared by the connection tasks of one run.
struct Run {
    target: Arc<Target>,
    rate: f64,
    max_requests: u64,
    start: tokio::time::Instant,
    stop: tokio::time::Instant,
    next_seq: AtomicU64,
    /// Requests written (each ends as a response or an error).
    sent: AtomicU64,
    responses: AtomicU64,
    response_bytes: AtomicU64,
    /// Connections opened during the run (after the first set).
    reopened: AtomicU64,
    /// Of those, connections the server closed without announcing it on a response.
    closed_unannounced: AtomicU64,
    statuses: Statuses,
    latency: Latency,
    errors: Errors,
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    if a.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if !(a.duration > 0.0 && a.duration <= 86_400.0) {
        bail!("--duration must be in (0, 86400] seconds");
    }
    if !(a.rate >= 0.0 && a.rate.is_finite()) {
        bail!("--rate must be a non-negative number");
    }
    raise_nofile(a.connections as u64 + 256).context("raising RLIMIT_NOFILE")?;
    let target = Target::new(&a.target)?;
    eprintln!(
        "httpbench: {} {}, {} connections, {}, {} s",
        target.method,
        target.url(),
        a.connections,
        if a.rate > 0.0 {
            format!("{} req/s", a.rate)
        } else {
            "closed loop".into()
        },
        a.duration
    );

    // Every connection is open before the clock starts.
    let target = Arc::new(target);
    let errors = Errors::default();
    let opening: Vec<_> = (0..a.connections)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move { open(&target, None).await })
        })
        .collect();
    let mut conns = Vec::with_capacity(a.connections);
    for t in opening {
        match t.await {
            Ok(Ok(c)) => conns.push(Some(c)),
            Ok(Err(e)) => {
                errors.add(&e);
                conns.push(None);
            }
            Err(e) => bail!("a connection task failed: {e}"),
        }
    }
    let opened = conns.iter().filter(|c| c.is_some()).count();
    if opened == 0 {
        bail!(
            "no connection to {} could be opened: {}",
            target.addr,
            errors.lines().join("; ")
        );
    }
    let start = tokio::time::Instant::now();
    let run = Arc::new(Run {
        target,
        rate: a.rate,
        max_requests: a.requests,
        start,
        stop: start + Duration::from_secs_f64(a.duration),
        next_seq: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        responses: AtomicU64::new(0),
        response_bytes: AtomicU64::new(0),
        reopened: AtomicU64::new(0),
        closed_unannounced: AtomicU64::new(0),
        statuses: Statuses::default(),
        latency: Latency::new(),
        errors,
    });
    let progress = tokio::spawn(progress(run.clone()));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| tokio::spawn(connection(run.clone(), c)))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let window = start.elapsed().as_secs_f64();
    progress.abort();

    let sent = run.sent.load(Ordering::Relaxed);
    let responses = run.responses.load(Ordering::Relaxed);
    let bytes = run.response_bytes.load(Ordering::Relaxed);
    let per_s = |n: u64| if window > 0.0 { n as f64 / window } else { 0.0 };
    let ok = run.statuses.count(200);
    let figures = json!({
        "tool": "httpbench",
        "mode": if a.rate > 0.0 { "rate" } else { "closed-loop" },
        "url": run.target.url(),
        "method": run.target.method.as_str(),
        "connections": a.connections,
        "connections_opened_at_start": opened,
        "connections_reopened": run.reopened.load(Ordering::Relaxed),
        "connections_closed_unannounced": run.closed_unannounced.load(Ordering::Relaxed),
        "rate_target": a.rate,
        "duration_s": a.duration,
        "window_s": window,
        "sent": sent,
        "responses": responses,
        "statuses": run.statuses.summary(),
        "requests_per_s": per_s(responses),
        "ok_per_s": per_s(ok),
        "response_bytes_mean": if responses > 0 { bytes as f64 / responses as f64 } else { 0.0 },
        "latency": run.latency.summary(),
        "errors_total": run.errors.total(),
        "errors": run.errors.summary(),
    });
    println!(
        "requests  {responses} responses in {window:.2} s = {:.0} req/s (sent {sent}; {})",
        per_s(responses),
        run.statuses.line()
    );
    println!(
        "latency   {}{}",
        run.latency.line(),
        if a.rate > 0.0 {
            " (late requests from their slot)"
        } else {
            ""
        }
    );
    println!(
        "p999      {:.3} ms",
        if run.latency.count() > 0 {
            run.latency.quantile_ms(0.999)
        } else {
            0.0
        }
    );
    println!(
        "conns     {opened} opened at start, {} reopened ({} closed by the server unannounced)",
        run.reopened.load(Ordering::Relaxed),
        run.closed_unannounced.load(Ordering::Relaxed)
    );
    println!("errors    {}", run.errors.total());
    for l in run.errors.lines() {
        println!("  {l}");
    }
    write_json(&a.target.json, &figures)?;
    Ok(())
}

/// One connection's loop: take the next request number, wait for its slot (with `--rate`), send,
/// read the whole response; reopen the connection when the server closed it.
async fn connection(run: Arc<Run>, mut conn: Option<Connection>) {
    let backoff = Duration::from_millis(100);
    // When the previous request ended: with `--rate`, a request whose slot came while this
    // connection was still busy counts from its slot (the server made it late); one that waited
    // for its slot counts from when it went out (the timer's own lateness, up to a millisecond,
    // is the client's).
    let mut free_since = run.start;
    loop {
        let seq = run.next_seq.fetch_add(1, Ordering::Relaxed);
        if run.max_requests > 0 && seq >= run.max_requests {
            break;
        }
        let scheduled = if run.rate > 0.0 {
            let at = run.start + Duration::from_secs_f64(seq as f64 / run.rate);
            if at >= run.stop {
                break;
            }
            tokio::time::sleep_until(at).await;
            Some(at)
        } else {
            None
        };
        if tokio::time::Instant::now() >= run.stop {
            break;
        }
        if conn.as_ref().is_some_and(|c| c.sender.is_closed()) {
            run.closed_unannounced.fetch_add(1, Ordering::Relaxed);
            conn = None;
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match open(&run.target, None).await {
                Ok(c) => {
                    run.reopened.fetch_add(1, Ordering::Relaxed);
                    conn.insert(c)
                }
                Err(e) => {
                    run.errors.add(&e);
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            },
        };
        run.sent.fetch_add(1, Ordering::Relaxed);
        let t0 = tokio::time::Instant::now();
        let result = exchange(&run.target, c).await;
        let from = match scheduled {
            Some(at) if free_since > at => at,
            _ => t0,
        };
        free_since = tokio::time::Instant::now();
        match result {
            Ok(answer) => {
                run.latency.record(free_since - from);
                run.responses.fetch_add(1, Ordering::Relaxed);
                run.response_bytes
                    .fetch_add(answer.bytes as u64, Ordering::Relaxed);
                run.statuses.add(answer.status);
                if answer.close {
                    conn = None;
                }
            }
            Err(e) => {
                run.errors.add(&e);
                conn = None;
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

async fn progress(run: Arc<Run>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tick.tick().await;
        let n = run.responses.load(Ordering::Relaxed);
        eprintln!(
            "[{:>6.1}s] responses {n} (+{}/s)  errors {}  latency {}",
            run.start.elapsed().as_secs_f64(),
            n - last,
            run.errors.total(),
            if run.latency.count() > 0 {
                format!(
                    "p50 {:.2} ms p99 {:.2} ms",
                    run.latency.quantile_ms(0.5),
                    run.latency.quantile_ms(0.99)
                )
            } else {
                "-".into()
            }
        );
        last = n;
    }
}

// ------------------------------------------------------------------------------ idle

struct Idle {
    /// Connections that got their response and are open.
    open: AtomicUsize,
    /// Connections that could not be set up (or got no response).
    failed: AtomicUsize,
    /// Idle connections the server closed.
    closed_by_server: AtomicUsize,
    statuses: Statuses,
    errors: Errors,
}

async fn idle(a: IdleArgs) -> anyhow::Result<()> {
    let k = a.connections;
    if k == 0 {
        bail!("--connections must be at least 1");
    }
    let nofile = raise_nofile(k as u64 + 1024).context("raising RLIMIT_NOFILE")?;
    if nofile < k as u64 + 64 {
        bail!("RLIMIT_NOFILE is {nofile}, too low for {k} connections");
    }
    let target = Arc::new(Target::new(&a.target)?);
    let watched = !a.server_pid.is_empty() || !a.server_process.is_empty();
    let (rss_before, pss_before) = server_memory(&a.server_pid, &a.server_process);
    let own_before = rss_kib(std::process::id()).unwrap_or(0);
    eprintln!(
        "httpbench idle: {k} connections to {}, one {} each, RLIMIT_NOFILE {nofile}, server RSS {rss_before} KiB",
        target.url(),
        target.method
    );
    let state = Arc::new(Idle {
        open: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        closed_by_server: AtomicUsize::new(0),
        statuses: Statuses::default(),
        errors: Errors::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(k);
    for i in 0..k {
        let (state, target, gate, mut stop) =
            (state.clone(), target.clone(), gate.clone(), stop_rx.clone());
        let src = (a.per_source > 0).then(|| loopback_source(i / a.per_source));
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let set_up = async {
                let mut c = open(&target, src).await?;
                let answer = exchange(&target, &mut c).await?;
                Ok::<_, Error>((c, answer))
            }
            .await;
            drop(permit);
            let mut c = match set_up {
                Ok((c, answer)) if !answer.close => {
                    state.statuses.add(answer.status);
                    c
                }
                Ok((_, answer)) => {
                    state.statuses.add(answer.status);
                    state.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    state.errors.add(&e);
                    state.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            state.open.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = &mut c.driver => {
                    state.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    state.open.fetch_sub(1, Ordering::Relaxed);
                }
                _ = stop.wait_for(|s| *s) => {}
            }
        }));
    }
    let setup_deadline = started + Duration::from_secs_f64(a.setup_limit.max(1.0));
    let mut last_print = Instant::now();
    loop {
        let (open, failed, closed) = (
            state.open.load(Ordering::Relaxed),
            state.failed.load(Ordering::Relaxed),
            state.closed_by_server.load(Ordering::Relaxed),
        );
        if open + failed + closed >= k || Instant::now() >= setup_deadline {
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let (rss, _) = server_memory(&a.server_pid, &a.server_process);
            eprintln!(
                "[{:>6.1}s] open {open}  failed {failed}  server RSS {rss} KiB",
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(a.settle.max(0.0))).await;
    let open_now = state.open.load(Ordering::Relaxed);
    let (rss_after, pss_after) = server_memory(&a.server_pid, &a.server_process);
    let own_after = rss_kib(std::process::id()).unwrap_or(0);
    let closed = state.closed_by_server.load(Ordering::Relaxed);
    let per = |after: u64, before: u64| {
        if open_now > 0 {
            after.saturating_sub(before) as f64 / open_now as f64
        } else {
            0.0
        }
    };
    let _ = stop_tx.send(true);
    let close_deadline = Instant::now() + Duration::from_secs(10);
    for t in tasks {
        let left = close_deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, t).await.is_err() {
            break;
        }
    }

    let figures = json!({
        "tool": "httpbench idle",
        "url": target.url(),
        "method": target.method.as_str(),
        "connections_requested": k,
        "idle": open_now,
        "failed": state.failed.load(Ordering::Relaxed),
        "closed_by_server": closed,
        "statuses": state.statuses.summary(),
        "setup_s": setup_secs,
        "settle_s": a.settle,
        "server_measured": watched,
        "server_rss_before_kib": rss_before,
        "server_rss_after_kib": rss_after,
        "server_rss_per_connection_kib": per(rss_after, rss_before),
        "server_pss_per_connection_kib": per(pss_after, pss_before),
        "httpbench_rss_per_connection_kib": per(own_after, own_before),
        "errors_total": state.errors.total(),
        "errors": state.errors.summary(),
    });
    println!(
        "idle      {open_now} of {k} connections open and idle (set-up {setup_secs:.1} s; {})",
        state.statuses.line()
    );
    if closed > 0 {
        println!("closed    {closed} idle connections closed by the server before the reading");
    }
    if watched {
        println!(
            "server    RSS {rss_before} -> {rss_after} KiB: {:.2} KiB per connection (Pss {:.2})",
            per(rss_after, rss_before),
            per(pss_after, pss_before)
        );
    }
    println!("errors    {}", state.errors.total());
    for l in state.errors.lines() {
        println!("  {l}");
    }
    write_json(&a.target.json, &figures)?;
    Ok(())
}
