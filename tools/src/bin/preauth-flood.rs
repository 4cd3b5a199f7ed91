//! `preauth-flood`: many unauthenticated IMAP connections that each try to APPEND a maximum-size
//! literal, and the relay's RSS growth they cause (from `/proc/<pid>/status`).
//!
//! Connection `i` comes from the `i / --per-source`-th loopback source address, uses the
//! implicit-TLS port for every `--tls-every`-th connection (plain otherwise), and announces a
//! synchronizing literal (even `i`) or a `LITERAL+` one (odd `i`). Whenever the server lets a
//! literal in (a `+` continuation, or a `LITERAL+` literal it keeps reading) the tool sends it,
//! up to `--literal` bytes. Sessions that survive stay open until the RSS is read.
//!
//! Only talks to `--host` (loopback by default); every step has a deadline.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: network clients

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use relay_tools::{connect_tcp, loopback_source, raise_nofile, rss_kib, tls, within};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};

/// Many unauthenticated IMAP connections, each trying a maximum-size APPEND literal; reports the
/// server's RSS growth.
///
/// Example (against `relay dev`):
///   preauth-flood --connections 1000 --server-pid $(pidof relay)
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Server address (loopback).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Plain IMAP port (the STARTTLS one; the tool never sends STARTTLS).
    #[arg(long, default_value_t = 10143)]
    imap_port: u16,
    /// Implicit-TLS IMAP port.
    #[arg(long, default_value_t = 10993)]
    imaps_port: u16,
    /// TLS server name (SNI); certificates are not verified.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Every n-th connection uses TLS (0: none).
    #[arg(long, default_value_t = 10)]
    tls_every: usize,
    /// Connections per loopback source address (127.0.0.1, .2, …).
    #[arg(long, default_value_t = 10)]
    per_source: usize,
    /// Announced literal size: the relay's `max_message_size` (dev default 30 MiB).
    #[arg(long, default_value_t = 31_457_280)]
    literal: u64,
    /// Connections being set up at the same time.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Server process whose VmRSS (and VmHWM) is read before and after.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds to wait after the last connection finished before reading the RSS.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// Deadline of each step (connect, read a reply, send the literal), in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// What happened to the connections.
#[derive(Default)]
struct Tally {
    /// The APPEND was refused without a continuation (synchronizing literal).
    refused: AtomicUsize,
    /// The server closed the connection (`LITERAL+`), before taking the whole literal.
    cut_off: AtomicUsize,
    /// The server asked for (or kept reading) the literal: what the relay must not do before
    /// login.
    accepted: AtomicUsize,
    /// Connect, TLS or protocol failures.
    failed: AtomicUsize,
    /// Literal bytes the server took.
    literal_bytes: AtomicU64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    rt.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `VmHWM` (peak RSS) of a process in KiB.
fn hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn run(a: Cli) -> anyhow::Result<()> {
    let k = a.connections;
    if k == 0 {
        bail!("--connections must be at least 1");
    }
    if !a.host.is_loopback() {
        bail!("--host must be a loopback address");
    }
    let nofile = raise_nofile(k as u64 + 256).context("raising RLIMIT_NOFILE")?;
    if nofile < k as u64 + 64 {
        bail!("RLIMIT_NOFILE is {nofile}, too low for {k} connections");
    }
    let name = tls::server_name(&a.server_name).map_err(anyhow::Error::msg)?;
    let connector = tls::connector();
    let limit = Duration::from_secs_f64(a.timeout.max(1.0));
    let rss_before = a.server_pid.and_then(rss_kib).unwrap_or(0);
    let hwm_before = a.server_pid.and_then(hwm_kib).unwrap_or(0);
    eprintln!(
        "preauth-flood: {k} connections, literal {} bytes, server RSS {rss_before} KiB",
        a.literal
    );
    let tally = Arc::new(Tally::default());
    let gate = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(k);
    for i in 0..k {
        let use_tls = a.tls_every > 0 && i % a.tls_every == 0;
        let port = if use_tls { a.imaps_port } else { a.imap_port };
        let dst = SocketAddr::new(a.host, port);
        let src = loopback_source(i / a.per_source.max(1));
        let (tally, gate, connector, name, mut stop) = (
            tally.clone(),
            gate.clone(),
            connector.clone(),
            name.clone(),
            stop_rx.clone(),
        );
        let (literal, plus) = (a.literal, i % 2 == 1);
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let outcome = async {
                let tcp = connect_tcp("connect", dst, Some(src), limit).await?;
                if use_tls {
                    let s = tls::handshake("tls", &connector, &name, tcp, limit).await?;
                    let kept = attempt(s, literal, plus, limit, &tally).await?;
                    Ok(kept.map(|c| Box::new(c) as Box<dyn Send>))
                } else {
                    let kept = attempt(tcp, literal, plus, limit, &tally).await?;
                    Ok::<_, relay_tools::Error>(kept.map(|c| Box::new(c) as Box<dyn Send>))
                }
            }
            .await;
            drop(permit);
            match outcome {
                // Keep a surviving session open until the RSS was read.
                Ok(Some(conn)) => {
                    let _ = stop.wait_for(|s| *s).await;
                    drop(conn);
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("connection {i}: {e}");
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Wait until every connection finished its attempt (they then hold or have closed).
    loop {
        let done = tally.refused.load(Ordering::Relaxed)
            + tally.cut_off.load(Ordering::Relaxed)
            + tally.accepted.load(Ordering::Relaxed)
            + tally.failed.load(Ordering::Relaxed);
        if done >= k {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(a.settle.max(0.0))).await;
    let rss_after = a.server_pid.and_then(rss_kib).unwrap_or(0);
    let hwm_after = a.server_pid.and_then(hwm_kib).unwrap_or(0);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let growth = rss_after.saturating_sub(rss_before);
    let peak_growth = hwm_after.saturating_sub(rss_before);
    let (refused, cut_off, accepted, failed) = (
        tally.refused.load(Ordering::Relaxed),
        tally.cut_off.load(Ordering::Relaxed),
        tally.accepted.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    let taken = tally.literal_bytes.load(Ordering::Relaxed);
    println!("connections  {k} in {secs:.1} s");
    println!("refused      {refused} (no continuation)");
    println!("cut off      {cut_off} (closed before the LITERAL+ literal was taken)");
    println!("accepted     {accepted} (literal read by the server: {taken} bytes)");
    println!("failed       {failed}");
    if a.server_pid.is_some() {
        println!(
            "server RSS   {rss_before} -> {rss_after} KiB (peak {hwm_after} KiB, before the run {hwm_before} KiB): growth {:.1} MiB, peak growth {:.1} MiB",
            growth as f64 / 1024.0,
            peak_growth as f64 / 1024.0
        );
    }
    if let Some(path) = &a.json {
        let v = json!({
            "tool": "preauth-flood",
            "connections": k,
            "literal": a.literal,
            "refused": refused,
            "cut_off": cut_off,
            "accepted": accepted,
            "failed": failed,
            "literal_bytes_taken": taken,
            "server_rss_before_kib": rss_before,
            "server_rss_after_kib": rss_after,
            "server_hwm_after_kib": hwm_after,
            "server_rss_growth_kib": growth,
            "server_peak_growth_kib": peak_growth,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// One pre-login APPEND attempt on `s`. Returns the connection if the server kept it open.
async fn attempt<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    literal: u64,
    plus: bool,
    limit: Duration,
    tally: &Tally,
) -> Result<Option<S>, relay_tools::Error> {
    let mut buf = Vec::new();
    let greeting = read_line(&mut s, &mut buf, limit).await?;
    if !greeting.starts_with(b"* OK") {
        return Err(relay_tools::Error::Closed { what: "greeting" });
    }
    let header = if plus {
        format!("a APPEND INBOX {{{literal}+}}\r\n")
    } else {
        format!("a APPEND INBOX {{{literal}}}\r\n")
    };
    within("send APPEND", limit, s.write_all(header.as_bytes())).await?;
    if !plus {
        let reply = read_line(&mut s, &mut buf, limit).await?;
        if reply.starts_with(b"+") {
            tally.accepted.fetch_add(1, Ordering::Relaxed);
            let sent = push(&mut s, literal, limit).await;
            tally.literal_bytes.fetch_add(sent, Ordering::Relaxed);
        } else {
            tally.refused.fetch_add(1, Ordering::Relaxed);
        }
        return Ok(Some(s));
    }
    let sent = push(&mut s, literal, limit).await;
    if sent >= literal {
        tally.accepted.fetch_add(1, Ordering::Relaxed);
        tally.literal_bytes.fetch_add(sent, Ordering::Relaxed);
        return Ok(Some(s));
    }
    tally.cut_off.fetch_add(1, Ordering::Relaxed);
    Ok(None)
}

/// Sends up to `n` literal bytes; returns how many were written before an error.
async fn push<S: AsyncWrite + Unpin>(s: &mut S, n: u64, limit: Duration) -> u64 {
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0u64;
    while sent < n {
        let len = usize::try_from(n - sent)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        match tokio::time::timeout(limit, s.write(&chunk[..len])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(w)) => sent += w as u64,
        }
    }
    let _ = tokio::time::timeout(limit, s.flush()).await;
    sent
}

/// Reads one line (through LF) from `s`, using `buf` for bytes read past it.
async fn read_line<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    limit: Duration,
) -> Result<Vec<u8>, relay_tools::Error> {
    loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            return Ok(buf.drain(..=pos).collect());
        }
        if buf.len() > 64 * 1024 {
            return Err(relay_tools::Error::Closed {
                what: "overlong line",
            });
        }
        let mut chunk = [0u8; 4096];
        let n = within("read reply", limit, s.read(&mut chunk)).await?;
        if n == 0 {
            return Err(relay_tools::Error::Closed { what: "read reply" });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
