//! Wiring: sets up TLS, binds the listeners, attaches rate limiting, drops root (`relay serve`),
//! opens the store, starts one worker thread per core on the chosen I/O backend, and stops on
//! SIGINT/SIGTERM after a store checkpoint.
//!
//! # One process per port
//! Each port has exactly one listening socket, bound without `SO_REUSEPORT`; every worker thread
//! accepts on its own duplicate of that descriptor. A second process on the same port (an old
//! instance still running, a test relay with another data directory) therefore fails at `bind`
//! with "address in use", as Postfix and Dovecot do, instead of silently joining a reuseport
//! group and taking half of the connections. A second relay on the same data directory is kept
//! out by the store's lock as well.
//!
//! # Start-up order
//! 1. Look up the `user` to switch to (only when started as root; a missing user refuses to
//!    start before anything is bound).
//! 2. The data directory (`0700`, everything in it narrowed to `0700`/`0600`) and TLS (an
//!    external key may be readable by root only).
//! 3. Bind every port (TURN's UDP sockets too), attach the XDP program: the privileged steps.
//! 4. As root: hand the data directory tree to the user (`chown`, so a directory left by an
//!    earlier root-run relay works), then `setgroups`/`setgid`/`setuid`.
//! 5. Open the store, the DKIM key (created on first start; none for an IP-literal relay), the
//!    TURN secret (created on first start) and the admin socket as that user, so every file
//!    they create is its own; start TURN on its thread.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::Config;
use crate::http::site::Listener;
use crate::io::{self, Start};
use crate::session::Session;
use crate::shared::Shared;
use crate::store::{Store, StoreConfig};
use crate::tls::TlsConfigs;

/// Which I/O backend to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IoChoice {
    /// io_uring if the kernel allows it, else epoll.
    Auto,
    /// io_uring (tokio-uring); fail if unavailable.
    Uring,
    /// epoll (tokio).
    Epoll,
}

/// The backend actually running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// tokio-uring.
    Uring,
    /// tokio on epoll.
    Epoll,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Uring => "io_uring",
            Backend::Epoll => "epoll",
        })
    }
}

/// Picks the backend: `auto` probes io_uring and falls back to epoll.
///
/// # Errors
/// `uring` was asked for and io_uring is unavailable.
pub fn choose_backend(choice: IoChoice) -> anyhow::Result<Backend> {
    match choice {
        IoChoice::Epoll => Ok(Backend::Epoll),
        IoChoice::Uring => {
            io::uring::available().context("io_uring is unavailable (use --io epoll or auto)")?;
            Ok(Backend::Uring)
        }
        IoChoice::Auto => match io::uring::available() {
            Ok(()) => Ok(Backend::Uring),
            Err(e) => {
                tracing::info!("io_uring unavailable ({e}); using epoll");
                Ok(Backend::Epoll)
            }
        },
    }
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SMTP from other relays, STARTTLS (port 25).
    Mx,
    /// Submission with STARTTLS (587).
    Submission,
    /// Submission with implicit TLS (465).
    Submissions,
    /// IMAP with STARTTLS (143).
    Imap,
    /// IMAP with implicit TLS (993).
    Imaps,
    /// HTTPS (443): the TLS handshake's ALPN picks IMAP (`imap`), submission (`smtp`) or HTTP
    /// (anything else), as the reference's nginx `ssl_preread` multiplexer.
    Https,
    /// Plain HTTP (80): redirects to HTTPS, answers ACME HTTP-01 challenges.
    Http,
}

impl Kind {
    /// TLS from the first byte (465, 993) rather than after STARTTLS.
    fn implicit_tls(self) -> bool {
        matches!(self, Kind::Submissions | Kind::Imaps)
    }

    fn is_smtp(self) -> bool {
        matches!(self, Kind::Mx | Kind::Submission | Kind::Submissions)
    }

    /// The `port` label of the metrics.
    fn metrics_port(self) -> crate::metrics::Port {
        use crate::metrics::Port;
        match self {
            Kind::Mx => Port::Mx,
            Kind::Submission => Port::Submission,
            Kind::Submissions => Port::Submissions,
            Kind::Imap => Port::Imap,
            Kind::Imaps => Port::Imaps,
            Kind::Https => Port::Https,
            Kind::Http => Port::Http,
        }
    }
}

/// Connection counters for the configured limits.
#[derive(Default)]
pub struct Counters {
    imap: Arc<AtomicU32>,
    smtp: Arc<AtomicU32>,
    http: Arc<AtomicU32>,
}

/// Decrements a counter when the connection ends.
struct Slot(Arc<AtomicU32>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn take_slot(counter: &Arc<AtomicU32>, max: u32) -> Option<Slot> {
    let prev = counter.fetch_add(1, Ordering::Relaxed);
    let slot = Slot(counter.clone());
    (prev < max).then_some(slot)
}

/// Held for a connection's life: releases its global slot and per-source slot, and counts it
/// as open in the metrics.
struct Admitted {
    _slot: Slot,
    _source: crate::ratelimit::SourceSlot,
    _open: crate::metrics::Open,
}

/// The outcome of admission at accept time.
enum Admission {
    /// Serve the connection while this is held.
    Admitted(Admitted),
    /// Close at once, without a word (connection rate, global limits, SMTP per-source cap).
    Close,
    /// The source holds its share of IMAP connections: say so, then close.
    ImapSourceFull,
}

/// What an IMAP client over its source's share is told before the connection closes.
pub const IMAP_SOURCE_FULL: &str = "* BYE Too many connections from your address";

/// How long a refused connection may take (its TLS handshake) before it is just closed.
const REFUSAL_TIMEOUT_MS: u64 = 10_000;

/// A session that only says one line and closes (on an implicit-TLS port once the handshake is
/// done): refuses a connection in the protocol's words without creating a real session.
struct Refusal {
    out: Vec<u8>,
    line: &'static str,
    awaiting_tls: bool,
    give_up_at: u64,
    closed: bool,
}

impl Refusal {
    fn new(line: &'static str, tls: bool, now_ms: u64) -> Self {
        let mut r = Refusal {
            out: Vec::new(),
            line,
            awaiting_tls: tls,
            give_up_at: now_ms + REFUSAL_TIMEOUT_MS,
            closed: false,
        };
        if !tls {
            r.say();
        }
        r
    }

    fn say(&mut self) {
        self.out.extend_from_slice(self.line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }
}

impl Session for Refusal {
    fn receive(&mut self, _input: &[u8], _now_ms: u64) {}
    fn output(&self) -> &[u8] {
        &self.out
    }
    fn consume_output(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }
    fn poll_action(&mut self) -> Option<crate::session::Action> {
        if self.awaiting_tls || self.closed {
            return None;
        }
        self.closed = true;
        Some(crate::session::Action::Close)
    }
    fn complete(&mut self, _result: crate::session::EffectResult, _now_ms: u64) {}
    fn tls_established(&mut self) {
        if self.awaiting_tls {
            self.awaiting_tls = false;
            self.say();
        }
    }
    fn next_timeout(&self) -> Option<u64> {
        (!self.closed).then_some(self.give_up_at)
    }
    fn handle_timeout(&mut self, now_ms: u64) {
        if now_ms >= self.give_up_at {
            // Close without the line: the handshake never finished.
            self.awaiting_tls = false;
        }
    }
    fn wants_input(&self) -> bool {
        false
    }
}

/// Everything a worker thread needs.
struct Ctx {
    shared: Arc<Shared>,
    admission: Arc<crate::ratelimit::Admission>,
    epoch: std::time::Instant,
    tls: TlsConfigs,
    counters: Counters,
    www: Arc<crate::http::conn::WwwFolder>,
}

fn new_session(
    kind: Kind,
    shared: &Arc<Shared>,
    peer: SocketAddr,
    now_ms: u64,
) -> Box<dyn Session> {
    use crate::{imap, smtp};
    let shared = shared.clone();
    let tls = kind.implicit_tls();
    match kind {
        Kind::Mx | Kind::Submission | Kind::Submissions => {
            let mode = if kind == Kind::Mx {
                smtp::Mode::Mx
            } else {
                smtp::Mode::Submission
            };
            Box::new(smtp::Session::new(shared, mode, tls, peer.ip(), now_ms))
        }
        Kind::Imap | Kind::Imaps => Box::new(imap::Session::new(shared, tls, now_ms)),
        Kind::Https | Kind::Http => unreachable!("HTTP has no line session"),
    }
}

impl Ctx {
    fn http_context(
        self: &Arc<Self>,
        listener: Listener,
        peer: SocketAddr,
    ) -> crate::http::conn::Context {
        use crate::http::conn::WsProtocol;
        let clock = io::SessionClock::start();
        let ctx = self.clone();
        let sessions: crate::http::conn::Sessions = std::rc::Rc::new(move |protocol| {
            let kind = match protocol {
                WsProtocol::Imap => Kind::Imaps,
                WsProtocol::Submission => Kind::Submissions,
            };
            let Admission::Admitted(admitted) = ctx.enter(kind, peer.ip()) else {
                return None;
            };
            let session = new_session(kind, &ctx.shared, peer, io::SessionClock::start().now_ms());
            Some((session, Box::new(admitted) as Box<dyn std::any::Any>))
        });
        crate::http::conn::Context {
            shared: self.shared.clone(),
            listener,
            peer: peer.ip(),
            files: self.www.clone(),
            now_ms: std::rc::Rc::new(move || clock.now_ms()),
            sessions: (listener == Listener::Https).then_some(sessions),
            tls: self.tls.strict.clone(),
        }
    }

    fn start_for(&self, kind: Kind) -> Start {
        let config = if kind == Kind::Mx {
            self.tls.mx.clone()
        } else {
            self.tls.strict.clone()
        };
        if kind.implicit_tls() {
            Start::Tls(config)
        } else {
            Start::Plain(config)
        }
    }

    /// Admission at accept time: the per-source new-connection rate (also when the XDP program
    /// enforces it in the kernel: it passes some traffic without judging), the per-source SMTP
    /// and IMAP caps, and the global connection limits.
    fn admit(&self, kind: Kind, peer: IpAddr) -> Admission {
        if !self.admit_rate(kind, peer) {
            return Admission::Close;
        }
        self.enter(kind, peer)
    }

    /// The per-source new-connection rate alone.
    fn admit_rate(&self, kind: Kind, peer: IpAddr) -> bool {
        let now_ns = self.epoch.elapsed().as_nanos() as u64;
        let admitted = self.admission.admit(peer, now_ns);
        if !admitted {
            self.shared
                .metrics
                .refused(kind.metrics_port(), crate::metrics::Refusal::Rate);
        }
        admitted
    }

    /// The per-source and global caps of `kind` (`Https` and `Http` count as HTTP: an HTTPS
    /// connection is HTTP until its ALPN says otherwise). Counted in the metrics under `kind`.
    fn enter(&self, kind: Kind, peer: IpAddr) -> Admission {
        use crate::metrics::Refusal;
        let port = kind.metrics_port();
        let metrics = &self.shared.metrics;
        let config = &self.shared.config;
        let (source, slot) = if matches!(kind, Kind::Https | Kind::Http) {
            let Some(source) = self.admission.enter_http(peer) else {
                metrics.refused(port, Refusal::Source);
                return Admission::Close;
            };
            // As many as the SMTP listeners together: relays deliver over /mxdeliv.
            let slot = take_slot(
                &self.counters.http,
                config.max_smtp_connections.saturating_mul(3),
            );
            (source, slot)
        } else if kind.is_smtp() {
            let Some(source) = self.admission.enter_smtp(peer) else {
                metrics.refused(port, Refusal::Source);
                return Admission::Close;
            };
            // Each SMTP listener may hold max_smtp_connections (as Postfix's maxproc per service).
            let slot = take_slot(
                &self.counters.smtp,
                config.max_smtp_connections.saturating_mul(3),
            );
            (source, slot)
        } else {
            let Some(source) = self.admission.enter_imap(peer) else {
                metrics.refused(port, Refusal::Source);
                return Admission::ImapSourceFull;
            };
            (
                source,
                take_slot(&self.counters.imap, config.max_imap_connections),
            )
        };
        match slot {
            Some(slot) => Admission::Admitted(Admitted {
                _slot: slot,
                _source: source,
                _open: metrics.connection(port),
            }),
            None => {
                metrics.refused(port, Refusal::Limit);
                Admission::Close
            }
        }
    }
}

/// A bound listening socket description.
#[derive(Debug, Clone, Copy)]
struct ListenSpec {
    addr: SocketAddr,
    kind: Kind,
}

fn listen_specs(config: &Config) -> Vec<ListenSpec> {
    let p = config.ports;
    let ports = [
        (p.smtp, Kind::Mx),
        (p.submission, Kind::Submission),
        (p.submissions, Kind::Submissions),
        (p.imap, Kind::Imap),
        (p.imaps, Kind::Imaps),
        (p.https, Kind::Https),
        (p.http, Kind::Http),
    ];
    let mut specs = Vec::new();
    for ip in &config.listen {
        if config.disable_ipv6 && ip.is_ipv6() {
            continue;
        }
        for (port, kind) in ports {
            if port != 0 {
                specs.push(ListenSpec {
                    addr: SocketAddr::new(*ip, port),
                    kind,
                });
            }
        }
    }
    specs
}

/// The one listening socket of a port, with room for `backlog` connections not yet accepted.
/// `SO_REUSEADDR` (restart over `TIME_WAIT` connections) but no `SO_REUSEPORT`: a second
/// listener on the port, in this process or another, gets `EADDRINUSE`. Non-blocking.
pub(crate) fn bind_listener(
    addr: SocketAddr,
    backlog: i32,
) -> std::io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(s.into())
}

/// A running relay: its ports and how to stop it.
pub struct Running {
    /// The backend in use.
    pub backend: Backend,
    /// Bound addresses per listener kind (port 0 in the config gets an ephemeral port).
    pub bound: Vec<(Kind, SocketAddr)>,
    certs: Arc<crate::tls::CertStore>,
    shared: Arc<Shared>,
    store: Store,
    admin: crate::admin::Handle,
    engine: crate::delivery::engine::Engine,
    notifier: Option<crate::push::Notifier>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
    turn: Option<crate::turn::server::Handle>,
    metrics: Option<crate::metrics::http::Listener>,
}

impl Running {
    /// Where `GET /metrics` is served (`None`: `metrics_address` is off).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .map(crate::metrics::http::Listener::addr)
    }

    /// The UDP addresses TURN/STUN listens on (none when it is off).
    pub fn turn_addrs(&self) -> &[SocketAddr] {
        self.turn.as_ref().map_or(&[], |t| t.addrs())
    }

    /// The shared state (store, config).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The certificate every TLS listener serves (swapped by renewals and reloads).
    pub fn certs(&self) -> &Arc<crate::tls::CertStore> {
        &self.certs
    }

    /// The store itself, for operator paths (the sessions see it through `shared().store`).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stops accepting, waits for the workers, checkpoints the store.
    pub fn shutdown(self) {
        if let Some(m) = self.metrics {
            m.stop();
        }
        drop(self.admin);
        // Attempts in flight are abandoned; their entries stay queued for the next start.
        self.engine.stop();
        if let Some(n) = self.notifier {
            n.stop();
        }
        if let Some(turn) = self.turn {
            turn.stop();
        }
        let _ = self.stop.send(true);
        for t in self.threads {
            let _ = t.join();
        }
        if let Err(e) = self.store.checkpoint() {
            tracing::warn!("checkpoint at shutdown failed: {e}");
        }
    }
}

/// Binds `spec`; a port taken by another process is reported by its number.
fn bind_spec(spec: &ListenSpec) -> anyhow::Result<std::net::TcpListener> {
    bind_listener(spec.addr, 4096).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "port {} ({:?}) on {}: address in use (another relay or mail server is \
                 listening there)",
                spec.addr.port(),
                spec.kind,
                spec.addr.ip()
            )
        } else {
            anyhow::Error::new(e).context(format!("binding {} ({:?})", spec.addr, spec.kind))
        }
    })
}

/// Sets up TLS, binds every listener, drops root if configured, opens the store and starts the
/// workers (see the module docs for the order).
///
/// # Errors
/// User lookup, TLS, bind, privilege, store or admin socket failures, with context.
pub fn start(config: Config, backend: Backend, workers: usize) -> anyhow::Result<Running> {
    let switch_to = match &config.user {
        Some(name) if crate::privilege::is_root() => {
            Some(crate::privilege::RelayUser::lookup(name)?)
        }
        _ => None,
    };
    crate::privilege::private_dir(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    crate::privilege::private_tree(&config.data_dir).context("narrowing the data directory")?;
    let tls = crate::tls::setup(&config).context("setting up TLS")?;
    let mut bound = Vec::new();
    let mut listeners = Vec::new();
    for spec in listen_specs(&config) {
        let l = bind_spec(&spec)?;
        bound.push((spec.kind, l.local_addr()?));
        listeners.push((spec.kind, l));
    }
    let turn_bound = match crate::turn::server::bind(&config) {
        Ok(b) => b,
        Err(e) if !config.turn.required => {
            tracing::warn!("TURN is off: {e:#}");
            None
        }
        Err(e) => return Err(e),
    };
    let metrics_listener = match config.metrics_address {
        Some(addr) => Some(crate::metrics::http::bind(addr).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                anyhow::anyhow!("metrics_address {addr}: address in use")
            } else {
                anyhow::Error::new(e).context(format!("binding metrics_address {addr}"))
            }
        })?),
        None => None,
    };
    crate::redact::set_log_client_ips(config.log_client_ips);
    let (admission, enforcement) = crate::ratelimit::start(&config.ratelimit);
    let admission = Arc::new(admission);
    if let Some(user) = &switch_to {
        user.become_user(&config.data_dir)?;
        tracing::info!(uid = user.uid(), "running as user {}", user.name);
    }
    let store = Store::open(
        &config.data_dir.join("store"),
        StoreConfig {
            max_mailbox_size: config.max_mailbox_size,
            max_mailbox_messages: config.max_mailbox_messages,
            ..StoreConfig::default()
        },
    )
    .context("opening the store")?;
    // As the relay's user, so that a key it creates is its own.
    let dkim = crate::dkim::load_signer(&config).with_context(|| {
        format!(
            "loading the DKIM key {}",
            crate::dkim::key_path(&config.data_dir, &config.dkim_selector).display()
        )
    })?;
    let turn = match turn_bound {
        None => None,
        Some(bound) => {
            let secret = crate::turn::secret::load_or_create(&config.data_dir)
                .context("loading the TURN secret")?;
            let published = crate::turn::Published::new(config.turn.port, secret.clone());
            let handle = crate::turn::server::start(bound, &config, secret)
                .context("starting the TURN server")?;
            Some((published, handle))
        }
    };
    let (published, turn) = turn.unzip();
    let mut shared = Shared::new(config, Arc::new(store.clone()));
    shared.dkim = dkim.map(Arc::new);
    shared.turn = published;
    {
        let live = &shared.live;
        live.started.store(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
            Ordering::Relaxed,
        );
        let _ = live.backend.set(backend.to_string());
        let _ = live.rate_limit.set(
            match enforcement {
                crate::ratelimit::Enforcement::Kernel => "kernel (XDP)",
                crate::ratelimit::Enforcement::Userspace => "userspace",
            }
            .to_owned(),
        );
        let _ = live.certs.set(tls.certs.clone());
    }
    let shared = Arc::new(shared);
    let admin_path = crate::admin::socket_path(&shared.config);
    let admin = crate::admin::spawn(shared.clone(), store.clone(), &admin_path)
        .with_context(|| format!("starting the admin socket {}", admin_path.display()))?;
    let delivery = crate::delivery::Delivery::new(
        crate::delivery::DeliveryConfig::from_config(&shared.config),
        shared.dns.clone(),
    )
    .context("setting up outbound delivery")?;
    let notifier_tls = delivery.https_verified();
    let engine = crate::delivery::engine::Engine::start(shared.clone(), delivery)
        .context("starting the delivery engine")?;
    let notifier = crate::push::Notifier::start(shared.clone(), notifier_tls)
        .context("starting the push notifier")?;
    let metrics = match metrics_listener {
        Some(listener) => Some(
            crate::metrics::http::Listener::start(
                listener,
                crate::metrics::Exposition::new(crate::metrics::Sources {
                    metrics: shared.metrics.clone(),
                    store: store.clone(),
                    admission: admission.clone(),
                }),
            )
            .context("starting the metrics listener")?,
        ),
        None => None,
    };
    let certs = tls.certs.clone();
    let ctx = Arc::new(Ctx {
        shared: shared.clone(),
        admission,
        epoch: std::time::Instant::now(),
        tls,
        counters: Counters::default(),
        www: Arc::new(crate::http::conn::WwwFolder::new(
            shared.config.www_folder.clone(),
        )),
    });
    // Every worker accepts on its own duplicate of each port's one socket.
    let mut per_worker: Vec<Vec<(Kind, std::net::TcpListener)>> = Vec::new();
    for _ in 0..workers.max(1) {
        let ls = listeners
            .iter()
            .map(|(kind, l)| Ok((*kind, l.try_clone()?)))
            .collect::<std::io::Result<Vec<_>>>()
            .context("sharing a listening socket with a worker")?;
        per_worker.push(ls);
    }
    drop(listeners);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut threads = Vec::new();
    for (i, listeners) in per_worker.into_iter().enumerate() {
        let ctx = ctx.clone();
        let stop = stop_rx.clone();
        let t = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || match backend {
                Backend::Uring => run_uring(ctx, listeners, stop),
                Backend::Epoll => run_epoll(ctx, listeners, stop),
            })
            .context("spawning a worker thread")?;
        threads.push(t);
    }
    // Certificate upkeep (ACME, external file reloads) runs as the relay's user, so the files it
    // writes under the data directory are the user's.
    let certificates = crate::tls::task::spawn(
        &shared.config,
        certs.clone(),
        shared.acme_challenges.clone(),
        stop_rx.clone(),
    )
    .context("starting the certificate thread")?;
    threads.extend(certificates);
    tracing::debug!(?enforcement, "connection rate limiting");
    Ok(Running {
        metrics,
        certs,
        backend,
        bound,
        shared,
        store,
        admin,
        engine,
        notifier,
        threads,
        stop,
        turn,
    })
}

fn peer_ip(addr: SocketAddr) -> IpAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn run_epoll(
    ctx: Arc<Ctx>,
    listeners: Vec<(Kind, std::net::TcpListener)>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("worker runtime: {e}");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        for (kind, l) in listeners {
            let ctx = ctx.clone();
            let listener = match tokio::net::TcpListener::from_std(l) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!("listener: {e}");
                    continue;
                }
            };
            tokio::task::spawn_local(async move {
                loop {
                    let (stream, peer) = match listener.accept().await {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!("accept: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let ctx = ctx.clone();
                    tokio::task::spawn_local(async move {
                        let _ = stream.set_nodelay(true);
                        serve(&ctx, kind, io::epoll::EpollConn(stream), peer).await;
                    });
                }
            });
        }
        let _ = stop.wait_for(|v| *v).await;
    });
}

/// One accepted connection: admission, then its session until it ends.
async fn serve(ctx: &Arc<Ctx>, kind: Kind, conn: impl io::Conn, peer: SocketAddr) {
    let ip = peer_ip(peer);
    match kind {
        Kind::Https => return serve_https(ctx, conn, ip, peer.port()).await,
        Kind::Http => {
            let Admission::Admitted(_admitted) = ctx.admit(kind, ip) else {
                return;
            };
            let addr = SocketAddr::new(ip, peer.port());
            return crate::http::conn::serve(&conn, None, ctx.http_context(Listener::Http, addr))
                .await;
        }
        _ => {}
    }
    let _admitted = match ctx.admit(kind, ip) {
        Admission::Admitted(a) => a,
        Admission::Close => return,
        Admission::ImapSourceFull => {
            tracing::info!(source = %crate::redact::ip(ip), "imap: too many connections from the source");
            let clock = io::SessionClock::start();
            let refusal = Refusal::new(IMAP_SOURCE_FULL, kind.implicit_tls(), clock.now_ms());
            let start = ctx.start_for(kind);
            io::drive(
                conn,
                Box::new(refusal),
                start,
                ctx.shared.clone(),
                clock,
                ip,
            )
            .await;
            return;
        }
    };
    let clock = io::SessionClock::start();
    let session = new_session(
        kind,
        &ctx.shared,
        SocketAddr::new(ip, peer.port()),
        clock.now_ms(),
    );
    io::drive(
        conn,
        session,
        ctx.start_for(kind),
        ctx.shared.clone(),
        clock,
        ip,
    )
    .await;
}

/// A connection to the HTTPS port: counted as HTTP during the handshake, then as IMAP or
/// submission if its ALPN asks for them (with their caps, and IMAP's `* BYE` when the source
/// holds its share), else served as HTTPS.
async fn serve_https(ctx: &Arc<Ctx>, conn: impl io::Conn, ip: IpAddr, port: u16) {
    if !ctx.admit_rate(Kind::Https, ip) {
        return;
    }
    let Admission::Admitted(handshaking) = ctx.enter(Kind::Https, ip) else {
        return;
    };
    let established = match io::handshake(&conn, ctx.tls.https.clone()).await {
        Ok(e) => e,
        Err(e) => {
            tracing::debug!("https handshake: {e}");
            return;
        }
    };
    let as_kind = match established.pipe.alpn() {
        Some(b"imap") => Kind::Imaps,
        Some(b"smtp") => Kind::Submissions,
        _ => {
            return crate::http::conn::serve(
                &conn,
                Some(established),
                ctx.http_context(Listener::Https, SocketAddr::new(ip, port)),
            )
            .await;
        }
    };
    drop(handshaking);
    let clock = io::SessionClock::start();
    let (session, _admitted): (Box<dyn Session>, _) = match ctx.enter(as_kind, ip) {
        Admission::Admitted(a) => (
            new_session(
                as_kind,
                &ctx.shared,
                SocketAddr::new(ip, port),
                clock.now_ms(),
            ),
            a,
        ),
        Admission::Close => return,
        Admission::ImapSourceFull => {
            tracing::info!(source = %crate::redact::ip(ip), "imap: too many connections from the source");
            let refusal = Refusal::new(IMAP_SOURCE_FULL, false, clock.now_ms());
            io::drive_established(
                &conn,
                Box::new(refusal),
                established,
                ctx.tls.strict.clone(),
                ctx.shared.clone(),
                clock,
                ip,
            )
            .await;
            return;
        }
    };
    io::drive_established(
        &conn,
        session,
        established,
        ctx.tls.strict.clone(),
        ctx.shared.clone(),
        clock,
        ip,
    )
    .await;
}

fn run_uring(
    ctx: Arc<Ctx>,
    listeners: Vec<(Kind, std::net::TcpListener)>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let rt = match tokio_uring::Runtime::new(tokio_uring::builder().entries(1024)) {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("io_uring worker runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        for (kind, l) in listeners {
            let ctx = ctx.clone();
            let listener = tokio_uring::net::TcpListener::from_std(l);
            tokio_uring::spawn(async move {
                loop {
                    let (stream, peer) = match listener.accept().await {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!("accept: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let ctx = ctx.clone();
                    tokio_uring::spawn(async move {
                        let _ = stream.set_nodelay(true);
                        serve(&ctx, kind, io::uring::UringConn(stream), peer).await;
                    });
                }
            });
        }
        let _ = stop.wait_for(|v| *v).await;
    });
}
