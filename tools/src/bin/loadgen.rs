//! `loadgen`: load generator for a chatmail relay (or the Postfix + Dovecot baseline).
//!
//! Default mode: N SMTP submitters and M IMAP receivers in IDLE; every message is PGP/MIME
//! encrypted (it passes the encryption gate), carries a unique token, and the receiver that fetches
//! it records the delay from end-of-DATA to the `* n EXISTS` that announced it and to the fetched
//! body. `loadgen idle`: K idle IMAP sessions, the server's memory per session, and the wake-up
//! latency of a sample. Submission and IMAP may be two servers (`--imap-host`, accounts of
//! another domain with `--receivers-pattern`): mail from one relay's users to another's.
//!
//! Only talks to the addresses given with `--host` and `--imap-host` (loopback by default);
//! every wait has a deadline and `--duration` bounds the run, so a refusing or dead server gives
//! errors, never a hang.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: network clients

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use relay_tools::account::{self, Account, Pattern};
use relay_tools::mail::{self, Template};
use relay_tools::stats::{lock, Errors, Latency};
use relay_tools::{imap, loopback_source, raise_nofile, rss_kib, server_memory, smtp, tls};
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio_rustls::TlsConnector;

const LONG_ABOUT: &str = "\
Load generator for a chatmail relay (or the Postfix + Dovecot baseline).

Default mode: --senders SMTP sessions submit PGP/MIME-encrypted messages (TLS, AUTH PLAIN, one
persistent session each, MAIL/RCPT/DATA pipelined) to --receivers IMAP sessions that IDLE, fetch
each new message (UID FETCH n:* BODY.PEEK[]) and delete it (STORE \\Deleted + EXPUNGE).
Reports sent/s, delivered/s, submission latency (end of DATA -> 250), notification latency (end
of DATA -> the receiver's `* n EXISTS` announcing the message) and delivery latency (end of DATA ->
body fetched by the receiver) as percentiles, and errors by kind. Closed loop (each sender sends
as fast as the server answers) unless --rate sets a fixed total rate; --messages bounds the count.

`loadgen idle`: K IMAP sessions that log in and IDLE (spread over loopback source addresses),
the server's RSS per session (--server-pid), and the wake-up latency of a sample.

Accounts: --accounts-pattern 'lg{n:07}@[127.0.0.1]' (the relay creates them on first login;
senders are numbers --first.., receivers follow) or --accounts-file (lines 'address [password]',
e.g. /var/lib/baseline-mail/users.txt). --receivers-pattern gives the receivers (and `loadgen
idle`'s sessions) their own pattern, e.g. on another relay's domain.

Two relays (A's users mail B's users; A delivers to B over /mxdeliv or SMTP):
  loadgen --host 127.79.0.1 --imap-host 127.79.0.2 --smtp-port 465 --imap-port 993 \
          --accounts-pattern 'fl{n:07}@_fa.test' --receivers-pattern 'fl{n:07}@_fb.test' \
          --rate 200 --senders 4 --receivers 4 --duration 10

Examples:
  loadgen --senders 8 --receivers 4 --duration 10 --json out.json            # relay dev
  loadgen --rate 1000 --duration 10 --senders 4 --receivers 4                # latency at 1000/s
  loadgen --smtp-port 2465 --imap-port 2993 --server-name _baseline.test \\
          --accounts-pattern 'lg{n:07}@baseline.test'                        # the baseline
  loadgen idle --connections 10000 --server-pid $(pidof relay) --sample 50";

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
    /// Idle capacity: K IMAP sessions in IDLE, server RSS per session, wake-up latency.
    Idle(IdleArgs),
}

#[derive(Args, Clone)]
struct ServerArgs {
    /// Server address (loopback).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The IMAP server's address, if not --host (receivers on another relay).
    #[arg(long)]
    imap_host: Option<IpAddr>,
    /// TLS server name (SNI); certificates are not verified.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// The IMAP server's TLS name, if not --server-name.
    #[arg(long)]
    imap_server_name: Option<String>,
    /// SMTP submission port.
    #[arg(long, default_value_t = 10465)]
    smtp_port: u16,
    /// How SMTP TLS starts (implicit for 465-style ports, starttls for 587-style).
    #[arg(long, value_enum, default_value = "implicit")]
    smtp_tls: smtp::TlsMode,
    /// IMAP port (implicit TLS).
    #[arg(long, default_value_t = 10993)]
    imap_port: u16,
    /// Account addresses: a placeholder such as {n:07} (zero-padded), {n:7} (space-padded) or a
    /// bare n in braces is replaced by the account number.
    #[arg(long, default_value = "lg{n:07}@[127.0.0.1]")]
    accounts_pattern: String,
    /// Receivers' addresses (IMAP), if not from --accounts-pattern or --accounts-file: a
    /// pattern like --accounts-pattern's (numbers continue after the senders').
    #[arg(long)]
    receivers_pattern: Option<String>,
    /// Read accounts from this file (`address [password]` per line) instead of the pattern.
    #[arg(long)]
    accounts_file: Option<PathBuf>,
    /// Password for pattern accounts and file lines without one.
    #[arg(long, default_value = "loadgen-password-0123")]
    password: String,
    /// First account number (pattern) or 0-based line index (file).
    #[arg(long, default_value_t = 1)]
    first: usize,
    /// Deadline of every single network step, in seconds.
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
    server: ServerArgs,
    /// SMTP submitter sessions.
    #[arg(long, default_value_t = 8)]
    senders: usize,
    /// IMAP receiver sessions (0: each sender mails itself and nothing is fetched).
    #[arg(long, default_value_t = 4)]
    receivers: usize,
    /// Encrypted payload size in bytes: the nearest built-in fixture (1k, 4k, 16k, 64k).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Use this ASCII-armored OpenPGP message instead (see tools/fixtures/make-fixtures.sh).
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// Total send rate in messages per second (0: closed loop, as fast as the server answers).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many messages (0: no limit).
    #[arg(long, default_value_t = 0)]
    messages: u64,
    /// After sending stops, how long to wait for outstanding deliveries, in seconds.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Recipients per message (distinct receivers; each counts as one delivery).
    #[arg(long, default_value_t = 1)]
    rcpts: usize,
    /// Receivers delete (STORE \Deleted + EXPUNGE) once this many fetched messages have piled
    /// up (1: after every fetch). Each delete is a store commit the receiver waits for.
    #[arg(long, default_value_t = 1)]
    delete_batch: usize,
    /// Receivers register a push device token (`SETMETADATA INBOX (/private/devicetoken
    /// "lg-<address>")`) after login, so every delivery to them makes the relay notify.
    #[arg(long)]
    device_tokens: bool,
    /// Further accounts (numbered after the receivers) that log in once, register a device
    /// token and log out before the run: the relay then holds that many more tokens.
    #[arg(long, default_value_t = 0)]
    token_accounts: usize,
    /// Serve a push notifier stand-in on 127.0.0.1:PORT (start the relay with
    /// `notification_url = http://127.0.0.1:PORT`) and report end of DATA -> POST latency.
    #[arg(long, default_value_t = 0)]
    notifier_port: u16,
}

#[derive(Args, Clone)]
struct IdleArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Idle IMAP sessions to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Distinct accounts (session i logs in as account i mod A; default: one per session).
    #[arg(long)]
    accounts: Option<usize>,
    /// Sessions per loopback source address (127.0.0.1, .2, … 127.0.x.y); 0: no bind.
    #[arg(long, default_value_t = 10_000)]
    per_source: usize,
    /// Sessions being set up at the same time.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Server process whose VmRSS is read before and after (repeatable; summed).
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Also sum VmRSS/Pss of every process with this name (e.g. imap, for Dovecot).
    #[arg(long)]
    server_process: Vec<String>,
    /// Sessions whose wake-up latency is measured (one message each, sequentially).
    #[arg(long, default_value_t = 50)]
    sample: usize,
    /// Seconds to wait after the last session is idle before reading RSS.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Bound for the whole set-up phase, in seconds.
    #[arg(long, default_value_t = 600.0)]
    setup_limit: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.sub {
        Some(Sub::Idle(a)) => a.server.threads,
        None => cli.run.server.threads,
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

/// Targets, accounts and TLS derived from [`ServerArgs`].
struct Setup {
    smtp: smtp::Target,
    imap: imap::Target,
    connector: TlsConnector,
    timeout: Duration,
}

impl Setup {
    fn new(a: &ServerArgs) -> anyhow::Result<Setup> {
        if !(a.timeout > 0.0 && a.timeout < 3600.0) {
            bail!("--timeout must be between 0 and 3600 seconds");
        }
        let timeout = Duration::from_secs_f64(a.timeout);
        let name = tls::server_name(&a.server_name).map_err(anyhow::Error::msg)?;
        let imap_name = match &a.imap_server_name {
            Some(n) => tls::server_name(n).map_err(anyhow::Error::msg)?,
            None => name.clone(),
        };
        Ok(Setup {
            smtp: smtp::Target {
                addr: SocketAddr::new(a.host, a.smtp_port),
                tls: a.smtp_tls,
                server_name: name,
                timeout,
            },
            imap: imap::Target {
                addr: SocketAddr::new(a.imap_host.unwrap_or(a.host), a.imap_port),
                server_name: imap_name,
                timeout,
            },
            connector: tls::connector(),
            timeout,
        })
    }
}

/// Who an account is for: the receivers may have a pattern of their own.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Sender,
    Receiver,
}

/// `count` accounts starting at `--first` (+ `offset`).
fn accounts(
    a: &ServerArgs,
    role: Role,
    offset: usize,
    count: usize,
) -> anyhow::Result<Vec<Account>> {
    let first = a.first + offset;
    if let (Role::Receiver, Some(pattern)) = (role, &a.receivers_pattern) {
        let p = Pattern::parse(pattern).map_err(anyhow::Error::msg)?;
        return Ok(account::from_pattern(&p, first, count, &a.password));
    }
    match &a.accounts_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let all = account::parse_file(&text, &a.password);
            if all.len() < first + count {
                bail!(
                    "{} has {} accounts; this run needs lines {}..{}",
                    path.display(),
                    all.len(),
                    first,
                    first + count
                );
            }
            Ok(all[first..first + count].to_vec())
        }
        None => {
            let p = Pattern::parse(&a.accounts_pattern).map_err(anyhow::Error::msg)?;
            Ok(account::from_pattern(&p, first, count, &a.password))
        }
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

/// Send time, or fetch time and announcement time, of a message whose counterpart has not been
/// seen yet.
enum Mark {
    Sent(Instant),
    Fetched(Instant, Option<Instant>),
}

/// State shared by the tasks of one load run.
struct Run {
    id: u32,
    start: Instant,
    next_seq: AtomicU64,
    attempted: AtomicU64,
    accepted: AtomicU64,
    delivered: AtomicU64,
    stale: AtomicU64,
    last_delivery_us: AtomicU64,
    ready: AtomicUsize,
    pending: Mutex<HashMap<u64, Mark>>,
    /// With the notifier stand-in: per device token, the ends of DATA of its account's
    /// messages.
    pushed: Option<Mutex<HashMap<String, Vec<Instant>>>>,
    submit: Latency,
    delivery: Latency,
    notify: Latency,
    errors: Errors,
}

impl Run {
    fn on_accepted(&self, seq: u64, data_end: Instant) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        let mut p = lock(&self.pending);
        match p.remove(&seq) {
            Some(Mark::Fetched(t1, announced)) => self.record(data_end, t1, announced),
            Some(Mark::Sent(t0)) => {
                p.insert(seq, Mark::Sent(t0));
            }
            None => {
                p.insert(seq, Mark::Sent(data_end));
            }
        }
    }

    fn on_fetched(&self, seq: u64, t1: Instant, announced: Option<Instant>) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let us = t1.duration_since(self.start).as_micros() as u64;
        self.last_delivery_us.fetch_max(us, Ordering::Relaxed);
        let mut p = lock(&self.pending);
        match p.remove(&seq) {
            Some(Mark::Sent(t0)) => self.record(t0, t1, announced),
            Some(Mark::Fetched(t, a)) => {
                p.insert(seq, Mark::Fetched(t, a));
            }
            None => {
                p.insert(seq, Mark::Fetched(t1, announced));
            }
        }
    }

    /// Both latencies of one message: to its `EXISTS` (when the receiver saw one) and to its
    /// fetched body.
    fn record(&self, data_end: Instant, fetched: Instant, announced: Option<Instant>) {
        self.delivery
            .record(fetched.saturating_duration_since(data_end));
        if let Some(t) = announced {
            self.notify.record(t.saturating_duration_since(data_end));
        }
    }
}

/// Read-only configuration of a load run.
struct Plan {
    setup: Arc<Setup>,
    senders: Vec<Account>,
    recipients: Vec<String>,
    rcpts: usize,
    template: Template,
    rate: f64,
    max_messages: u64,
    send_start: tokio::time::Instant,
    send_stop: tokio::time::Instant,
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    if a.senders == 0 {
        bail!("--senders must be at least 1");
    }
    if !(a.duration > 0.0 && a.duration <= 86_400.0 && (0.0..=86_400.0).contains(&a.drain)) {
        bail!("--duration must be in (0, 86400] and --drain in [0, 86400] seconds");
    }
    if !(a.rate >= 0.0 && a.rate.is_finite()) {
        bail!("--rate must be a non-negative number");
    }
    if a.rcpts == 0 || (a.receivers > 0 && a.rcpts > a.receivers) {
        bail!("--rcpts must be between 1 and --receivers");
    }
    let setup = Setup::new(&a.server)?;
    let senders = accounts(&a.server, Role::Sender, 0, a.senders)?;
    let receivers = accounts(&a.server, Role::Receiver, a.senders, a.receivers)?;
    let armor = match &a.fixture {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => mail::fixture_for_size(a.size).to_vec(),
    };
    let template = Template::new(&armor);
    let recipients: Vec<String> = receivers.iter().map(|r| r.addr.clone()).collect();
    let rcpts = if receivers.is_empty() { 1 } else { a.rcpts };
    let run = Arc::new(Run {
        id: rand::random(),
        start: Instant::now(),
        next_seq: AtomicU64::new(0),
        attempted: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        stale: AtomicU64::new(0),
        last_delivery_us: AtomicU64::new(0),
        ready: AtomicUsize::new(0),
        pending: Mutex::new(HashMap::new()),
        pushed: (a.notifier_port > 0).then(Mutex::default),
        submit: Latency::new(),
        delivery: Latency::new(),
        notify: Latency::new(),
        errors: Errors::default(),
    });
    let msg_bytes = template
        .render(&senders[0].addr, "x@y", &mail::token(0, 0))
        .len();
    eprintln!(
        "loadgen: run {:08x}: {} senders, {} receivers, {} byte messages, {}, {} s",
        run.id,
        a.senders,
        a.receivers,
        msg_bytes,
        if a.rate > 0.0 {
            format!("{} msgs/s", a.rate)
        } else {
            "closed loop".into()
        },
        a.duration
    );

    let arrivals = if a.notifier_port > 0 {
        let addr = SocketAddr::from(([127, 0, 0, 1], a.notifier_port));
        Some(
            relay_tools::notifier::serve(addr)
                .await
                .with_context(|| format!("notifier stand-in on {addr}"))?,
        )
    } else {
        None
    };
    if a.token_accounts > 0 {
        let extra = accounts(
            &a.server,
            Role::Receiver,
            a.senders + a.receivers,
            a.token_accounts,
        )?;
        register_tokens(&setup, extra).await?;
    }

    // Receivers first: every one in IDLE before the first message goes out.
    let (stop_tx, stop_rx) = watch::channel(false);
    let setup_arc = Arc::new(setup);
    let mut receiver_tasks = Vec::new();
    for acct in receivers {
        let (run, setup, stop) = (run.clone(), setup_arc.clone(), stop_rx.clone());
        let batch = a.delete_batch.max(1);
        let token = a.device_tokens;
        receiver_tasks.push(tokio::spawn(receiver(run, setup, acct, batch, token, stop)));
    }
    let ready_deadline = Instant::now() + setup_arc.timeout * 3;
    while run.ready.load(Ordering::Relaxed) < a.receivers && Instant::now() < ready_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = run.ready.load(Ordering::Relaxed);
    if ready < a.receivers {
        eprintln!(
            "loadgen: only {ready} of {} receivers in IDLE; starting anyway",
            a.receivers
        );
    }

    let send_start = tokio::time::Instant::now();
    let plan = Arc::new(Plan {
        setup: setup_arc,
        senders,
        recipients,
        rcpts,
        template,
        rate: a.rate,
        max_messages: a.messages,
        send_start,
        send_stop: send_start + Duration::from_secs_f64(a.duration),
    });
    let send_start_us = run.start.elapsed().as_micros() as u64;
    let progress = tokio::spawn(progress(run.clone()));
    let mut sender_tasks = Vec::new();
    for i in 0..a.senders {
        sender_tasks.push(tokio::spawn(sender(run.clone(), plan.clone(), i)));
    }
    for t in sender_tasks {
        let _ = t.await;
    }
    let send_secs = (run.start.elapsed().as_micros() as u64 - send_start_us) as f64 / 1e6;

    // Drain: wait for what was accepted to be fetched.
    let accepted = run.accepted.load(Ordering::Relaxed);
    let expect = if a.receivers > 0 {
        accepted * rcpts as u64
    } else {
        0
    };
    let drain_until = Instant::now() + Duration::from_secs_f64(a.drain);
    while run.delivered.load(Ordering::Relaxed) < expect && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The last POSTs follow the last deliveries closely.
    if arrivals.is_some() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = stop_tx.send(true);
    for t in receiver_tasks {
        let _ = tokio::time::timeout(plan.setup.timeout, t).await;
    }
    progress.abort();

    let delivered = run.delivered.load(Ordering::Relaxed);
    let last_delivery = run.last_delivery_us.load(Ordering::Relaxed);
    let deliver_secs = last_delivery.saturating_sub(send_start_us) as f64 / 1e6;
    let per_s = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    // Push: end of DATA -> POST at the stand-in, per token.
    let push = match (&arrivals, &run.pushed) {
        (Some(arrivals), Some(pushed)) => {
            let arrivals = lock(arrivals).clone();
            let (lat, unmatched) = relay_tools::notifier::match_latencies(&lock(pushed), &arrivals);
            let h = Latency::new();
            for d in lat {
                h.record(d);
            }
            Some((arrivals.len(), unmatched, h))
        }
        _ => None,
    };
    let figures = json!({
        "tool": "loadgen",
        "mode": if a.rate > 0.0 { "rate" } else { "closed-loop" },
        "run_id": format!("{:08x}", run.id),
        "smtp": plan.setup.smtp.addr.to_string(),
        "imap": plan.setup.imap.addr.to_string(),
        "senders": a.senders,
        "receivers": a.receivers,
        "rcpts_per_message": rcpts,
        "message_bytes": msg_bytes,
        "rate_target": a.rate,
        "duration_s": a.duration,
        "send_window_s": send_secs,
        "attempted": run.attempted.load(Ordering::Relaxed),
        "accepted": accepted,
        "delivered": delivered,
        "undelivered": expect.saturating_sub(delivered),
        "stale_fetched": run.stale.load(Ordering::Relaxed),
        "sent_per_s": per_s(accepted, send_secs),
        "delivered_per_s": per_s(delivered, deliver_secs),
        "submit_latency": run.submit.summary(),
        "notify_latency": run.notify.summary(),
        "delivery_latency": run.delivery.summary(),
        "errors_total": run.errors.total(),
        "errors": run.errors.summary(),
        "push_posts": push.as_ref().map(|p| p.0),
        "push_unmatched": push.as_ref().map(|p| p.1),
        "push_latency": push.as_ref().map(|p| p.2.summary()),
    });
    println!(
        "sent      {accepted} in {send_secs:.2} s = {:.0} msgs/s (attempted {})",
        per_s(accepted, send_secs),
        run.attempted.load(Ordering::Relaxed)
    );
    println!(
        "delivered {delivered} of {expect} = {:.0} msgs/s",
        per_s(delivered, deliver_secs)
    );
    println!("submit    end of DATA -> 250:        {}", run.submit.line());
    println!("notify    end of DATA -> EXISTS:     {}", run.notify.line());
    println!(
        "delivery  end of DATA -> body fetched: {}",
        run.delivery.line()
    );
    if let Some((posts, unmatched, h)) = &push {
        println!("push      end of DATA -> POST:       {}", h.line());
        println!("push      {posts} POSTs ({unmatched} matched no message)");
    }
    println!("errors    {}", run.errors.total());
    for l in run.errors.lines() {
        println!("  {l}");
    }
    write_json(&a.server.json, &figures)?;
    Ok(())
}

async fn progress(run: Arc<Run>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_sent, mut last_deliv) = (0, 0);
    loop {
        tick.tick().await;
        let sent = run.accepted.load(Ordering::Relaxed);
        let deliv = run.delivered.load(Ordering::Relaxed);
        eprintln!(
            "[{:>6.1}s] sent {sent} (+{}/s)  delivered {deliv} (+{}/s)  errors {}  delivery {}",
            run.start.elapsed().as_secs_f64(),
            sent - last_sent,
            deliv - last_deliv,
            run.errors.total(),
            if run.delivery.count() > 0 {
                format!(
                    "p50 {:.2} ms p99 {:.2} ms",
                    run.delivery.quantile_ms(0.5),
                    run.delivery.quantile_ms(0.99)
                )
            } else {
                "-".into()
            }
        );
        (last_sent, last_deliv) = (sent, deliv);
    }
}

async fn sender(run: Arc<Run>, plan: Arc<Plan>, me: usize) {
    let acct = &plan.senders[me];
    let mut client: Option<smtp::Client> = None;
    let backoff = Duration::from_millis(100);
    loop {
        let seq = run.next_seq.fetch_add(1, Ordering::Relaxed);
        if plan.max_messages > 0 && seq >= plan.max_messages {
            break;
        }
        if plan.rate > 0.0 {
            let at = plan.send_start + Duration::from_secs_f64(seq as f64 / plan.rate);
            if at >= plan.send_stop {
                break;
            }
            tokio::time::sleep_until(at).await;
        }
        if tokio::time::Instant::now() >= plan.send_stop {
            break;
        }
        let c = match &mut client {
            Some(c) => c,
            None => {
                let connected = async {
                    let mut c =
                        smtp::Client::connect(&plan.setup.smtp, &plan.setup.connector, None)
                            .await?;
                    c.auth_plain(&acct.addr, &acct.password).await?;
                    Ok::<_, relay_tools::Error>(c)
                }
                .await;
                match connected {
                    Ok(c) => client.insert(c),
                    Err(e) => {
                        run.errors.add(&e);
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                }
            }
        };
        let rcpts: Vec<&str> = if plan.recipients.is_empty() {
            vec![acct.addr.as_str()]
        } else {
            (0..plan.rcpts)
                .map(|j| {
                    let i = (seq as usize * plan.rcpts + j) % plan.recipients.len();
                    plan.recipients[i].as_str()
                })
                .collect()
        };
        let msg = plan
            .template
            .render(&acct.addr, rcpts[0], &mail::token(run.id, seq));
        let data = mail::dot_stuff(&msg);
        run.attempted.fetch_add(1, Ordering::Relaxed);
        match c.send(&acct.addr, &rcpts, &data).await {
            Ok(s) => {
                run.submit.record(s.accepted - s.data_end);
                if plan.recipients.is_empty() {
                    run.accepted.fetch_add(1, Ordering::Relaxed);
                } else {
                    run.on_accepted(seq, s.data_end);
                    if let Some(pushed) = &run.pushed {
                        let mut p = lock(pushed);
                        for r in &rcpts {
                            p.entry(device_token(r)).or_default().push(s.data_end);
                        }
                    }
                }
            }
            Err(e) => {
                run.errors.add(&e);
                client = None;
                tokio::time::sleep(backoff).await;
            }
        }
    }
    if let Some(c) = client {
        c.quit().await;
    }
}

/// The device token the receivers and token accounts register.
fn device_token(addr: &str) -> String {
    format!("lg-{addr}")
}

/// `SETMETADATA` of the account's device token.
async fn set_token(c: &mut imap::Client, addr: &str) -> Result<(), relay_tools::Error> {
    let cmd = format!(
        "SETMETADATA INBOX (/private/devicetoken {})",
        imap::quote(&device_token(addr))
    );
    c.command("imap SETMETADATA", &cmd, |_| {})
        .await
        .map(|_| ())
}

/// Logs each account in once (creating it), registers its token, logs out; 32 at a time.
async fn register_tokens(setup: &Setup, accounts: Vec<Account>) -> anyhow::Result<()> {
    let started = Instant::now();
    let n = accounts.len();
    let sem = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    for acct in accounts {
        let permit = sem.clone().acquire_owned().await?;
        let (imap_target, connector) = (setup.imap.clone(), setup.connector.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let mut c = imap::Client::connect(&imap_target, &connector, None, 16 * 1024).await?;
            c.login(&acct.addr, &acct.password).await?;
            set_token(&mut c, &acct.addr).await?;
            c.logout().await;
            Ok::<(), relay_tools::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    eprintln!(
        "loadgen: {n} token accounts registered in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn receiver(
    run: Arc<Run>,
    setup: Arc<Setup>,
    acct: Account,
    delete_batch: usize,
    token: bool,
    mut stop: watch::Receiver<bool>,
) {
    let mut ready = false;
    while !*stop.borrow() {
        match receive(
            &run,
            &setup,
            &acct,
            delete_batch,
            token,
            &mut stop,
            &mut ready,
        )
        .await
        {
            Ok(()) => return,
            Err(e) => {
                run.errors.add(&e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn receive(
    run: &Run,
    setup: &Setup,
    acct: &Account,
    delete_batch: usize,
    token: bool,
    stop: &mut watch::Receiver<bool>,
    ready: &mut bool,
) -> Result<(), relay_tools::Error> {
    let mut c = imap::Client::connect(&setup.imap, &setup.connector, None, 16 * 1024).await?;
    c.login(&acct.addr, &acct.password).await?;
    if token {
        set_token(&mut c, &acct.addr).await?;
    }
    let sel = c.select_inbox().await?;
    let mut next_uid = if sel.exists > 0 { 1 } else { sel.uid_next };
    let mut fetched = Vec::new();
    if sel.exists > 0 {
        fetch_and_delete(run, &mut c, &mut next_uid, &mut fetched, 1).await?;
    }
    if !*ready {
        *ready = true;
        run.ready.fetch_add(1, Ordering::Relaxed);
    }
    loop {
        c.idle().await?;
        let got = c.wait_exists(stop).await?;
        c.done().await?;
        if got.is_none() {
            c.delete(&fetched).await?;
            c.logout().await;
            return Ok(());
        }
        fetch_and_delete(run, &mut c, &mut next_uid, &mut fetched, delete_batch).await?;
    }
}

/// Fetches every message from `next_uid` on and records the tokens; deletes what was fetched
/// once `delete_batch` messages are pending; repeats while new mail was announced meanwhile.
async fn fetch_and_delete(
    run: &Run,
    c: &mut imap::Client,
    next_uid: &mut u32,
    fetched: &mut Vec<u32>,
    delete_batch: usize,
) -> Result<(), relay_tools::Error> {
    loop {
        c.take_saw_exists();
        let uids = c
            .fetch_new(*next_uid, |f| match mail::find_token(f.body) {
                Some((id, seq)) if id == run.id => run.on_fetched(seq, f.at, f.announced),
                _ => {
                    run.stale.fetch_add(1, Ordering::Relaxed);
                }
            })
            .await?;
        if let Some(max) = uids.iter().max() {
            *next_uid = max + 1;
        }
        fetched.extend_from_slice(&uids);
        if fetched.len() >= delete_batch {
            c.delete(fetched).await?;
            fetched.clear();
        }
        if uids.is_empty() && !c.take_saw_exists() {
            return Ok(());
        }
    }
}

// ------------------------------------------------------------------------------ idle capacity

struct Idle {
    idle: AtomicUsize,
    failed: AtomicUsize,
    dropped: AtomicUsize,
    errors: Errors,
    connected: Mutex<Vec<usize>>,
    waiters: Mutex<HashMap<usize, oneshot::Sender<Instant>>>,
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
    let setup = Arc::new(Setup::new(&a.server)?);
    let n_accounts = a.accounts.unwrap_or(k).max(1);
    let accts = Arc::new(accounts(&a.server, Role::Receiver, 0, n_accounts)?);
    let sender_acct = accounts(&a.server, Role::Sender, n_accounts, 1)?.remove(0);
    let watched = !a.server_pid.is_empty() || !a.server_process.is_empty();
    let (rss_before, pss_before) = server_memory(&a.server_pid, &a.server_process);
    let own_before = rss_kib(std::process::id()).unwrap_or(0);
    let state = Arc::new(Idle {
        idle: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        dropped: AtomicUsize::new(0),
        errors: Errors::default(),
        connected: Mutex::new(Vec::with_capacity(k)),
        waiters: Mutex::new(HashMap::new()),
    });
    eprintln!(
        "loadgen idle: {k} sessions over {n_accounts} accounts, RLIMIT_NOFILE {nofile}, server RSS {rss_before} KiB"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(k);
    for i in 0..k {
        let (state, setup, accts, gate, stop) = (
            state.clone(),
            setup.clone(),
            accts.clone(),
            gate.clone(),
            stop_rx.clone(),
        );
        let src = (a.per_source > 0).then(|| loopback_source(i / a.per_source));
        tasks.push(tokio::spawn(async move {
            let acct = &accts[i % accts.len()];
            let permit = gate.acquire_owned().await;
            let setup_result = async {
                let mut c = imap::Client::connect(&setup.imap, &setup.connector, src, 1024).await?;
                c.login(&acct.addr, &acct.password).await?;
                c.select_inbox().await?;
                c.idle().await?;
                Ok::<_, relay_tools::Error>(c)
            }
            .await;
            drop(permit);
            let mut c = match setup_result {
                Ok(c) => c,
                Err(e) => {
                    state.errors.add(&e);
                    state.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            lock(&state.connected).push(i);
            state.idle.fetch_add(1, Ordering::Relaxed);
            let mut stop = stop;
            loop {
                match c.wait_exists(&mut stop).await {
                    Ok(Some(_)) => {
                        let now = Instant::now();
                        if let Some(tx) = lock(&state.waiters).remove(&i) {
                            let _ = tx.send(now);
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        state.errors.add(&e);
                        state.dropped.fetch_add(1, Ordering::Relaxed);
                        state.idle.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    let setup_deadline = started + Duration::from_secs_f64(a.setup_limit.max(1.0));
    let mut last_print = Instant::now();
    loop {
        let (ok, failed) = (
            state.idle.load(Ordering::Relaxed),
            state.failed.load(Ordering::Relaxed),
        );
        if ok + failed + state.dropped.load(Ordering::Relaxed) >= k
            || Instant::now() >= setup_deadline
        {
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let (rss, _) = server_memory(&a.server_pid, &a.server_process);
            eprintln!(
                "[{:>6.1}s] idle {ok}  failed {failed}  server RSS {rss} KiB",
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let setup_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(a.settle.max(0.0))).await;
    let idle_now = state.idle.load(Ordering::Relaxed);
    let (rss_after, pss_after) = server_memory(&a.server_pid, &a.server_process);
    let own_after = rss_kib(std::process::id()).unwrap_or(0);
    let per = |after: u64, before: u64| {
        if idle_now > 0 {
            after.saturating_sub(before) as f64 / idle_now as f64
        } else {
            0.0
        }
    };
    eprintln!(
        "loadgen idle: {idle_now} idle after {setup_secs:.1} s; server RSS {rss_before} -> {rss_after} KiB = {:.2} KiB/session",
        per(rss_after, rss_before)
    );

    // Wake-up latency of a sample, one message at a time (reconnecting after an SMTP error).
    let wake = Latency::new();
    let mut connected = lock(&state.connected).clone();
    connected.sort_unstable();
    let sample = a.sample.min(connected.len());
    let template = Template::new(mail::FIXTURES[0].1);
    let mut smtp_client: Option<smtp::Client> = None;
    for j in 0..sample {
        let c = match &mut smtp_client {
            Some(c) => c,
            None => {
                let connected = async {
                    let mut c = smtp::Client::connect(&setup.smtp, &setup.connector, None).await?;
                    c.auth_plain(&sender_acct.addr, &sender_acct.password)
                        .await?;
                    Ok::<_, relay_tools::Error>(c)
                }
                .await;
                match connected {
                    Ok(c) => smtp_client.insert(c),
                    Err(e) => {
                        state.errors.add(&e);
                        continue;
                    }
                }
            }
        };
        let i = connected[j * connected.len() / sample];
        let rcpt = &accts[i % accts.len()].addr;
        let (tx, rx) = oneshot::channel();
        lock(&state.waiters).insert(i, tx);
        let msg = template.render(&sender_acct.addr, rcpt, &mail::token(0, j as u64));
        match c
            .send(&sender_acct.addr, &[rcpt.as_str()], &mail::dot_stuff(&msg))
            .await
        {
            Ok(s) => match tokio::time::timeout(setup.timeout, rx).await {
                Ok(Ok(t)) => wake.record(t.saturating_duration_since(s.data_end)),
                _ => state.errors.add(&relay_tools::Error::Timeout {
                    what: "idle wake-up",
                }),
            },
            Err(e) => {
                state.errors.add(&e);
                smtp_client = None;
            }
        }
        lock(&state.waiters).remove(&i);
    }
    if let Some(c) = smtp_client {
        c.quit().await;
    }
    let _ = stop_tx.send(true);
    let close_deadline = Instant::now() + Duration::from_secs(10);
    for t in tasks {
        let left = close_deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, t).await.is_err() {
            break;
        }
    }

    let figures = json!({
        "tool": "loadgen idle",
        "imap": setup.imap.addr.to_string(),
        "connections_requested": k,
        "accounts": n_accounts,
        "idle": idle_now,
        "failed": state.failed.load(Ordering::Relaxed),
        "dropped": state.dropped.load(Ordering::Relaxed),
        "setup_s": setup_secs,
        "server_measured": watched,
        "server_rss_before_kib": rss_before,
        "server_rss_after_kib": rss_after,
        "server_rss_per_session_kib": per(rss_after, rss_before),
        "server_pss_per_session_kib": per(pss_after, pss_before),
        "loadgen_rss_per_session_kib": per(own_after, own_before),
        "wakeup_latency": wake.summary(),
        "errors_total": state.errors.total(),
        "errors": state.errors.summary(),
    });
    println!("idle      {idle_now} of {k} sessions in IDLE (set-up {setup_secs:.1} s)");
    if watched {
        println!(
            "server    RSS {rss_before} -> {rss_after} KiB: {:.2} KiB per session (Pss {:.2})",
            per(rss_after, rss_before),
            per(pss_after, pss_before)
        );
    }
    println!("wake-up   end of DATA -> EXISTS: {}", wake.line());
    println!("errors    {}", state.errors.total());
    for l in state.errors.lines() {
        println!("  {l}");
    }
    write_json(&a.server.json, &figures)?;
    Ok(())
}
