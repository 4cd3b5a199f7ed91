//! The TURN server's sockets and thread: the listening sockets are bound with the other ports
//! (before the relay drops root), the server runs on a thread of its own with a current-thread
//! tokio runtime (the worker threads run tokio-uring or a `LocalSet`, the `turn` crate wants
//! `tokio::spawn`), and stops with the relay.
//!
//! # What is wrapped around the crate, and why
//! `turn` 0.17 has an [`AuthHandler`] (username → key) and a [`RelayAddressGenerator`] (the
//! relayed socket) but no allocation quotas, no bandwidth limit, and answers bad credentials
//! `400`. So each listening socket is a `Front`: it reads every datagram first and answers
//! `401` (bad credentials), `486` (the username's share is taken) or `508` (the relay is full)
//! itself, passing everything else on. The crate handles one datagram of a listener at a time
//! (`Server::read_loop` awaits `handle_request` before it reads again), so the username of an
//! Allocate the front passed on is the one whose relayed socket `Relays::allocate_conn` makes
//! next: the front leaves it in a slot the generator reads (not takes: for EVEN-PORT the crate
//! calls the generator twice, once to find a port, as coturn's `turnutils_uclient` asks for by
//! default; the front empties the slot at the next datagram). The relayed socket is a
//! `RelayConn` that holds the allocation's [`Reservation`] and drops datagrams over
//! `turn_allocation_bandwidth`.
//!
//! The crate keeps every nonce it hands out in a map it prunes only when a client shows an old
//! one again, one per unauthenticated request: a flood of those would grow it without bound. So
//! the front answers them itself (`401` with the realm and a nonce), with a nonce the crate
//! issued and still knows: it notes the nonce of the crate's own `401`/`438` answers as they go
//! out (`Front::send_to`) and hands it out for [`NONCE_REUSE`], then lets the next
//! unauthenticated request through to the crate for a fresh one (at most
//! [`CHALLENGES_PER_SECOND`] such pass a second).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_USERNAME};
use stun::error_code::{
    ErrorCode, ErrorCodeAttribute, CODE_ALLOC_QUOTA_REACHED, CODE_INSUFFICIENT_CAPACITY,
    CODE_STALE_NONCE, CODE_UNAUTHORIZED,
};
use stun::message::{
    Getter as _, Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_REQUEST,
    METHOD_ALLOCATE, METHOD_BINDING,
};
use turn::auth::AuthHandler;
use turn::relay::RelayAddressGenerator;
use webrtc_util::Conn;

use super::gate::{Bucket, Gate, Limits, Quota, Reservation};
use crate::config::Config;

/// Requests without credentials the crate may answer (each leaves a nonce in its memory) per
/// second, in all; more are dropped. A client needs one per allocation.
pub const CHALLENGES_PER_SECOND: u64 = 20;
/// How long the front hands out a nonce the crate issued (the crate honours one for an hour).
pub const NONCE_REUSE: Duration = Duration::from_secs(50 * 60);
/// How long stopping waits for the crate to close its allocations.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Relayed ports tried per allocation (from a random start in `turn_relay_ports`).
const PORT_TRIES: u32 = 64;

/// The listening sockets, bound.
#[derive(Debug)]
pub struct Bound {
    sockets: Vec<std::net::UdpSocket>,
}

impl Bound {
    /// Their addresses.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }
}

/// The addresses TURN listens on: `turn_address`, else the `listen` addresses with a wildcard
/// standing for every non-loopback, non-link-local address of its family on this machine.
pub fn listen_addresses(config: &Config) -> Vec<IpAddr> {
    if !config.turn.address.is_empty() {
        return config.turn.address.clone();
    }
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in &config.listen {
        if config.disable_ipv6 && ip.is_ipv6() {
            continue;
        }
        let found = if ip.is_unspecified() {
            interface_addresses(ip.is_ipv4())
        } else {
            vec![*ip]
        };
        for ip in found {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// The machine's non-loopback, non-link-local addresses of one family (as the reference).
fn interface_addresses(v4: bool) -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for a in addrs {
        let Some(addr) = a.address else { continue };
        let ip = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => continue,
        };
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_unicast_link_local(),
        };
        if ip.is_ipv4() == v4 && !ip.is_loopback() && !link_local && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// Binds the listening sockets; `None` when `turn_port` is 0 or there is no address to listen
/// on (said in the log).
///
/// # Errors
/// A socket cannot be bound (the port is taken, the address is not this machine's).
pub fn bind(config: &Config) -> anyhow::Result<Option<Bound>> {
    let port = config.turn.port;
    if port == 0 {
        return Ok(None);
    }
    let addrs = listen_addresses(config);
    if addrs.is_empty() {
        tracing::warn!("TURN is off: no address to listen on (set turn_address)");
        return Ok(None);
    }
    let mut sockets = Vec::new();
    for ip in addrs {
        let addr = SocketAddr::new(ip, port);
        let s = std::net::UdpSocket::bind(addr).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                anyhow::anyhow!(
                    "port {port} (TURN, UDP) on {ip}: address in use (another relay or TURN \
                     server is listening there)"
                )
            } else {
                anyhow::Error::new(e).context(format!("binding {addr} (TURN, UDP)"))
            }
        })?;
        s.set_nonblocking(true)?;
        sockets.push(s);
    }
    Ok(Some(Bound { sockets }))
}

/// The running TURN server.
#[derive(Debug)]
pub struct Handle {
    addrs: Vec<SocketAddr>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Handle {
    /// The addresses it listens on.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops the server (its allocations end) and waits for its thread.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// What the front, the auth handler and the relayed sockets share.
struct Ctx {
    secret: Arc<[u8]>,
    realm: String,
    gate: Arc<Gate>,
    bandwidth: u64,
    external: Option<IpAddr>,
    relay_ports: (u16, u16),
    epoch: Instant,
    challenges: Mutex<Bucket>,
    /// The nonce of the crate's last `401`/`438` and when it went out (ns since `epoch`).
    nonce: Mutex<Option<(String, u64)>>,
}

impl Ctx {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Starts the server on `bound` with `secret`, realm = the mail domain.
///
/// # Errors
/// The runtime or the thread cannot be made.
pub fn start(bound: Bound, config: &Config, secret: Arc<[u8]>) -> std::io::Result<Handle> {
    let addrs = bound.addrs();
    let t = &config.turn;
    let epoch = Instant::now();
    let ctx = Arc::new(Ctx {
        secret,
        realm: config.mail_domain.clone(),
        gate: Arc::new(Gate::new(Limits {
            per_username: t.max_allocations_per_username,
            per_source: t.max_allocations_per_source,
            total: t.max_allocations,
        })),
        bandwidth: t.allocation_bandwidth,
        external: t.external_address,
        relay_ports: t.relay_ports,
        epoch,
        challenges: Mutex::new(Bucket::new(CHALLENGES_PER_SECOND, 0)),
        nonce: Mutex::new(None),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("turn".into())
        .spawn(move || {
            rt.block_on(async move {
                if let Err(e) = serve(bound, ctx, stopped).await {
                    tracing::error!("TURN server: {e}");
                }
            });
        })?;
    tracing::info!(?addrs, "TURN/STUN listening");
    Ok(Handle {
        addrs,
        stop,
        thread,
    })
}

async fn serve(
    bound: Bound,
    ctx: Arc<Ctx>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let mut conn_configs = Vec::new();
    for socket in bound.sockets {
        let ip = socket.local_addr()?.ip();
        let socket = Arc::new(tokio::net::UdpSocket::from_std(socket)?);
        let pending = Arc::new(Mutex::new(None));
        let announce = match ctx.external {
            Some(ext) if ext.is_ipv4() == ip.is_ipv4() => ext,
            _ => ip,
        };
        conn_configs.push(turn::server::config::ConnConfig {
            conn: Arc::new(Front {
                socket,
                ctx: ctx.clone(),
                pending: pending.clone(),
            }),
            relay_addr_generator: Box::new(Relays {
                bind_ip: ip,
                announce,
                ctx: ctx.clone(),
                pending,
            }),
        });
    }
    let server = turn::server::Server::new(turn::server::config::ServerConfig {
        conn_configs,
        realm: ctx.realm.clone(),
        auth_handler: Arc::new(Auth { ctx: ctx.clone() }),
        channel_bind_timeout: Duration::ZERO,
        alloc_close_notify: None,
    })
    .await?;
    let _ = stopped.await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, server.close()).await;
    Ok(())
}

/// The crate's check of requests the front passed on (same decision: a time not yet past,
/// the password of the secret, our realm).
struct Auth {
    ctx: Arc<Ctx>,
}

impl AuthHandler for Auth {
    fn auth_handle(
        &self,
        username: &str,
        _realm: &str,
        _src: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        super::long_term_key(&self.ctx.secret, username, &self.ctx.realm, now_unix())
            .map_err(|e| turn::Error::Other(e.to_string()))
    }
}

/// What the front does with a datagram.
enum Verdict {
    /// Hand it to the crate.
    Pass,
    /// Answer it with these bytes, the crate never sees it.
    Reply(Vec<u8>),
    /// Drop it.
    Drop,
}

/// A listening socket as the crate sees it, screening requests first (module docs).
struct Front {
    socket: Arc<tokio::net::UdpSocket>,
    ctx: Arc<Ctx>,
    /// The username of the Allocate passed on last, for [`Relays::allocate_conn`].
    pending: Arc<Mutex<Option<(String, IpAddr)>>>,
}

impl Front {
    fn set_pending(&self, username: Option<(String, IpAddr)>) {
        *self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = username;
    }

    fn screen(&self, datagram: &[u8], from: IpAddr) -> Verdict {
        self.set_pending(None);
        if !stun::message::is_message(datagram) {
            return Verdict::Pass; // ChannelData
        }
        let mut msg = Message::new();
        msg.raw = datagram.to_vec();
        if msg.decode().is_err() || msg.typ.class != CLASS_REQUEST {
            return Verdict::Pass;
        }
        if msg.typ.method == METHOD_BINDING {
            return Verdict::Pass;
        }
        if !msg.contains(ATTR_MESSAGE_INTEGRITY) || !msg.contains(ATTR_USERNAME) {
            let now = self.ctx.now_ns();
            let reuse = u64::try_from(NONCE_REUSE.as_nanos()).unwrap_or(u64::MAX);
            let known = self
                .ctx
                .nonce
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
                .filter(|(_, at)| now.saturating_sub(*at) < reuse);
            if let Some((nonce, _)) = known {
                return self.challenge(&msg, nonce);
            }
            // The crate answers with a new nonce it keeps (noted on the way out).
            let mut challenges = self
                .ctx
                .challenges
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            return if challenges.take(1, now) {
                Verdict::Pass
            } else {
                Verdict::Drop
            };
        }
        let (username, key) =
            match super::check_request(&self.ctx.secret, &self.ctx.realm, &msg, now_unix()) {
                Ok(ok) => ok,
                Err(why) => {
                    tracing::debug!("TURN request refused: {why}");
                    return self.unauthorized(&msg);
                }
            };
        if msg.typ.method == METHOD_ALLOCATE {
            match self.ctx.gate.admits(&username, from) {
                Ok(()) => self.set_pending(Some((username, from))),
                Err(q) => {
                    tracing::debug!("TURN allocate refused: {q}");
                    let code = match q {
                        Quota::Username | Quota::Source => CODE_ALLOC_QUOTA_REACHED,
                        Quota::Total => CODE_INSUFFICIENT_CAPACITY,
                    };
                    let integrity = stun::integrity::MessageIntegrity(key);
                    return reply(&msg, code, &q.to_string(), vec![Box::new(integrity)]);
                }
            }
        }
        Verdict::Pass
    }

    /// `401` with our REALM and `nonce`: the answer to a request without credentials.
    fn challenge(&self, msg: &Message, nonce: String) -> Verdict {
        let extra: Vec<Box<dyn Setter>> = vec![
            Box::new(stun::textattrs::Nonce::new(ATTR_NONCE, nonce)),
            Box::new(stun::textattrs::Realm::new(
                stun::attributes::ATTR_REALM,
                self.ctx.realm.clone(),
            )),
        ];
        reply(msg, CODE_UNAUTHORIZED, "Unauthorized", extra)
    }

    /// Notes the nonce of an outgoing `401`/`438` of the crate.
    fn note_nonce(&self, datagram: &[u8]) {
        // The class bits of the message type (RFC 5389 §6): an error response has both.
        let error_class = datagram.len() >= 20
            && datagram[0] & 0x01 != 0
            && datagram[1] & 0x10 != 0
            && stun::message::is_message(datagram);
        if !error_class {
            return;
        }
        let mut msg = Message::new();
        msg.raw = datagram.to_vec();
        if msg.decode().is_err() {
            return;
        }
        let mut code = ErrorCodeAttribute::default();
        let mut nonce = stun::textattrs::Nonce::new(ATTR_NONCE, String::new());
        if code.get_from(&msg).is_ok()
            && (code.code == CODE_UNAUTHORIZED || code.code == CODE_STALE_NONCE)
            && nonce.get_from(&msg).is_ok()
        {
            *self
                .ctx
                .nonce
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((nonce.text, self.ctx.now_ns()));
        }
    }

    /// `401` with our REALM and the request's NONCE (RFC 5389 §10.2.2).
    fn unauthorized(&self, msg: &Message) -> Verdict {
        let mut extra: Vec<Box<dyn Setter>> = vec![Box::new(stun::textattrs::Realm::new(
            stun::attributes::ATTR_REALM,
            self.ctx.realm.clone(),
        ))];
        let mut nonce = stun::textattrs::Nonce::new(ATTR_NONCE, String::new());
        if nonce.get_from(msg).is_ok() {
            extra.push(Box::new(nonce));
        }
        reply(msg, CODE_UNAUTHORIZED, "Unauthorized", extra)
    }
}

/// An error response to `req`.
fn reply(req: &Message, code: ErrorCode, reason: &str, extra: Vec<Box<dyn Setter>>) -> Verdict {
    let mut attrs: Vec<Box<dyn Setter>> = vec![
        Box::new(Message {
            transaction_id: req.transaction_id,
            ..Default::default()
        }),
        Box::new(MessageType::new(req.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code,
            reason: reason.as_bytes().to_vec(),
        }),
    ];
    attrs.extend(extra);
    let mut m = Message::new();
    match m.build(&attrs) {
        Ok(()) => Verdict::Reply(m.raw),
        Err(_) => Verdict::Drop,
    }
}

#[async_trait]
impl Conn for Front {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported).into())
    }

    async fn recv(&self, _buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported).into())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = match self.socket.recv_from(buf).await {
                Ok(x) => x,
                // An error here would end the crate's read loop: log it and read on.
                Err(e) => {
                    tracing::debug!("TURN receive: {e}");
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            match self.screen(&buf[..n], from.ip()) {
                Verdict::Pass => return Ok((n, from)),
                Verdict::Reply(bytes) => {
                    let _ = self.socket.send_to(&bytes, from).await;
                }
                Verdict::Drop => {}
            }
        }
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported).into())
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        self.note_nonce(buf);
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Nothing: the crate calls this whenever one allocation ends (the listener lives on).
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// Makes the relayed sockets of one listener: on its address, a port of `turn_relay_ports`,
/// announced as `turn_external_address` (same family) or the listening address.
struct Relays {
    bind_ip: IpAddr,
    announce: IpAddr,
    ctx: Arc<Ctx>,
    pending: Arc<Mutex<Option<(String, IpAddr)>>>,
}

#[async_trait]
impl RelayAddressGenerator for Relays {
    fn validate(&self) -> Result<(), turn::Error> {
        Ok(())
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        let (username, source) = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| turn::Error::Other("allocation without a screened request".into()))?;
        if use_ipv4 != self.bind_ip.is_ipv4() {
            return Err(turn::Error::Other("address family not served here".into()));
        }
        // Counted before the socket exists, so that two listeners cannot both take the last.
        let reservation = self
            .ctx
            .gate
            .reserve(&username, source)
            .map_err(|q| turn::Error::Other(q.to_string()))?;
        let (low, high) = self.ctx.relay_ports;
        let span = u32::from(high - low) + 1;
        let candidates: Vec<u16> = if requested_port != 0 {
            vec![requested_port]
        } else {
            let start = rand::random::<u32>() % span;
            (0..span.min(PORT_TRIES))
                .map(|i| low + ((start + i) % span) as u16)
                .collect()
        };
        for port in candidates {
            if port < low || port > high {
                continue;
            }
            let Ok(socket) = tokio::net::UdpSocket::bind((self.bind_ip, port)).await else {
                continue;
            };
            let relayed = SocketAddr::new(self.announce, port);
            let now = self.ctx.now_ns();
            let conn = RelayConn {
                socket,
                ctx: self.ctx.clone(),
                bucket: Mutex::new(Bucket::new(self.ctx.bandwidth, now)),
                reservation: Mutex::new(Some(reservation)),
            };
            return Ok((Arc::new(conn), relayed));
        }
        Err(turn::Error::Other(format!(
            "no free relay port in {low}-{high}"
        )))
    }
}

/// A relayed socket: at most `turn_allocation_bandwidth` bytes a second pass, both ways
/// together; holds its allocation's slot until it is closed or dropped.
struct RelayConn {
    socket: tokio::net::UdpSocket,
    ctx: Arc<Ctx>,
    bucket: Mutex<Bucket>,
    reservation: Mutex<Option<Reservation>>,
}

impl RelayConn {
    fn admit(&self, len: usize) -> bool {
        let now = self.ctx.now_ns();
        self.bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take(len, now)
    }
}

#[async_trait]
impl Conn for RelayConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported).into())
    }

    async fn recv(&self, _buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported).into())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.socket.recv_from(buf).await?;
            if self.admit(n) {
                return Ok((n, from));
            }
        }
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported).into())
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if !self.admit(buf.len()) {
            return Ok(buf.len()); // dropped, as the network would
        }
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.reservation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}
