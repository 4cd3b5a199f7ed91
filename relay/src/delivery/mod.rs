//! Outbound delivery, the I/O half: one attempt to deliver messages to one destination (a
//! recipient domain), over tokio (the epoll runtime, on the delivery engine's own thread), with
//! the sans-I/O pieces of [`crate::outbound`] making the decisions.
//!
//! Per message, per MX host in order (chatmail.md §3.6):
//! 1. HTTPS `POST /mxdeliv` on `https_port`, unless the host is marked "mxdeliv unsupported";
//!    a 2xx delivers to every recipient; anything else falls through;
//! 2. SMTP on `smtp_port` with STARTTLS required; a completed transaction is the answer as-is
//!    (each recipient's reply); if it delivered, the host is marked "mxdeliv unsupported" for
//!    30 minutes;
//! 3. an SMTP connection, TLS or I/O failure unmarks the host and moves on to the next MX host.
//!
//! All hosts failing leaves every recipient temporary with `421 4.4.1 Failed to connect to any
//! mail server; last attempt to <host>: <error>`. Every deferral is logged once at info level
//! with the word `deferred`, the destination and the reason (operators grep for it, as for
//! Postfix's `status=deferred`).
//!
//! Within one attempt, a host that failed at the connection level is not tried again for the
//! next message, SMTP connections are reused from message to message, and afterwards kept idle
//! for the next attempt (as are HTTPS connections).

pub mod engine;
mod https;
mod net;
mod smtp;
pub mod tls;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use mail_auth::MessageAuthenticator;

use crate::config::Config;
use crate::outbound::mx::{self, Destination, MxHost};
use crate::outbound::mxdeliv::Verdict;
use crate::outbound::schedule::{AttemptResult, MxdelivUnsupported};
use crate::outbound::smtp_client::{ConnError, Step};
use crate::outbound::{reply_text, Failure, Outcome};
use crate::smtp::reply::Reply;

pub use smtp::Connection as SmtpConnection;

/// Deadlines of outbound connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect, all of a host's addresses together.
    pub connect: Duration,
    /// TLS handshake.
    pub tls: Duration,
    /// The SMTP greeting.
    pub greeting: Duration,
    /// Each SMTP command's reply.
    pub command: Duration,
    /// Each write of the message body (progress, RFC 5321 §4.5.3.2.5 "data block").
    pub data_block: Duration,
    /// The reply to the final dot.
    pub data_done: Duration,
    /// QUIT's reply (best effort).
    pub quit: Duration,
    /// A `/mxdeliv` request and its response, together.
    pub https: Duration,
    /// How long an idle connection is kept for reuse.
    pub idle: Duration,
}

impl Default for Timeouts {
    /// RFC 5321 §4.5.3.2 asks a client to wait 5 min for the greeting and most replies, 3 min
    /// per data block and 10 min after the final dot. We wait up to 2 min for replies and 5 min
    /// after the dot: a stalled server holds only its own destination's attempt, but it should
    /// not hold it for most of the first retry interval. `/mxdeliv` gets the reference's 60 s.
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(30),
            tls: Duration::from_secs(30),
            greeting: Duration::from_secs(120),
            command: Duration::from_secs(120),
            data_block: Duration::from_secs(180),
            data_done: Duration::from_secs(300),
            quit: Duration::from_secs(5),
            https: Duration::from_secs(60),
            idle: Duration::from_secs(30),
        }
    }
}

impl Timeouts {
    /// The same deadline for every step (tests).
    pub fn uniform(d: Duration) -> Timeouts {
        Timeouts {
            connect: d,
            tls: d,
            greeting: d,
            command: d,
            data_block: d,
            data_done: d,
            quit: d,
            https: d,
            idle: Duration::from_secs(30),
        }
    }

    fn step(&self, step: Step) -> Duration {
        match step {
            Step::Greeting => self.greeting,
            Step::Command => self.command,
            Step::DataBody => self.data_block,
            Step::DataDone => self.data_done,
        }
    }
}

/// How delivery connects.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Our name in EHLO: the mail domain (`[a.b.c.d]` for an IP-only relay).
    pub ehlo_name: String,
    /// The SMTP port of remote hosts (25; tests use ephemeral ports).
    pub smtp_port: u16,
    /// The HTTPS port of remote hosts for `/mxdeliv` (443; tests use ephemeral ports).
    pub https_port: u16,
    /// Connect to IPv6 addresses too.
    pub ipv6: bool,
    /// Option `delivery_ca_file`: extra CA certificates (PEM) to trust besides the system's.
    pub extra_ca_file: Option<PathBuf>,
    /// Deadlines.
    pub timeouts: Timeouts,
}

impl DeliveryConfig {
    /// The production settings for `config`: ports 25 and 443, default deadlines.
    pub fn from_config(config: &Config) -> DeliveryConfig {
        DeliveryConfig {
            ehlo_name: config.address_domain(),
            smtp_port: 25,
            https_port: 443,
            ipv6: !config.disable_ipv6,
            extra_ca_file: config.delivery_ca_file.clone(),
            timeouts: Timeouts::default(),
        }
    }
}

/// One message to deliver to one destination.
#[derive(Debug, Clone)]
pub struct Message {
    /// The queue id, for logs.
    pub id: String,
    /// The envelope sender; empty for a bounce (`MAIL FROM:<>`, no `X-Mail-From`).
    pub sender: String,
    /// The envelope recipients, all in the destination domain.
    pub recipients: Vec<String>,
    /// The raw message as stored (unstuffed).
    pub body: Bytes,
}

/// How one message fared in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// One outcome per recipient, in the order of [`Message::recipients`].
    pub outcomes: Vec<Outcome>,
    /// How it went out, if a server answered.
    pub route: Option<Route>,
    /// The host that answered, or the last one tried (`Remote-MTA` of a DSN).
    pub host: Option<String>,
}

/// The way a message reached a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /mxdeliv` answered 2xx.
    Https,
    /// An SMTP transaction was answered.
    Smtp,
}

/// The backoff input for a destination after an attempt on `attempts`: `Done` if no
/// recipient is left temporary, `Deferred` if a server answered but some recipient is
/// temporary, `Unreachable` if no server answered at all.
pub fn summarize(attempts: &[Attempt]) -> AttemptResult {
    let temporary = attempts
        .iter()
        .any(|a| a.outcomes.iter().any(Outcome::is_temporary));
    if !temporary {
        AttemptResult::Done
    } else if attempts.iter().any(|a| a.route.is_some()) {
        AttemptResult::Deferred
    } else {
        AttemptResult::Unreachable
    }
}

/// Errors setting up delivery.
pub type Error = tls::Error;

/// Outbound delivery: TLS configurations, the resolver, idle connections and the "mxdeliv
/// unsupported" memory, shared by all attempts (hold it in an `Arc`).
pub struct Delivery {
    config: DeliveryConfig,
    tls: tls::ClientTls,
    dns: MessageAuthenticator,
    https: https::Pool,
    smtp_idle: Mutex<HashMap<String, Vec<SmtpConnection>>>,
    mxdeliv_unsupported: Mutex<MxdelivUnsupported>,
}

/// Idle SMTP connections kept per host.
const MAX_SMTP_IDLE_PER_HOST: usize = 4;
/// Idle SMTP connections kept in all.
const MAX_SMTP_IDLE: usize = 256;

/// Per-attempt memory: each host's addresses (or why it has none), the hosts that failed at
/// the connection level (the next message skips them) and the open SMTP connections (by
/// [`Delivery::idle_key`]).
#[derive(Default)]
struct AttemptState {
    addrs: HashMap<String, Result<Vec<IpAddr>, String>>,
    dead: HashMap<String, String>,
    conns: HashMap<String, SmtpConnection>,
}

impl Delivery {
    /// Sets up delivery with `config`, looking names up through `dns` (`Shared::dns`).
    ///
    /// # Errors
    /// The extra CA file is unreadable or not PEM.
    pub fn new(config: DeliveryConfig, dns: MessageAuthenticator) -> Result<Delivery, Error> {
        let tls = tls::ClientTls::new(config.extra_ca_file.as_deref())?;
        Ok(Delivery {
            config,
            tls,
            dns,
            https: https::Pool::default(),
            smtp_idle: Mutex::default(),
            mxdeliv_unsupported: Mutex::default(),
        })
    }

    /// The verified HTTPS client configuration (the system's CA certificates and
    /// `delivery_ca_file`), for the process's other HTTPS clients (the push notifier).
    pub fn https_verified(&self) -> std::sync::Arc<rustls::ClientConfig> {
        self.tls.https(mx::TlsPolicy::Verify)
    }

    /// The settings in use.
    pub fn config(&self) -> &DeliveryConfig {
        &self.config
    }

    /// Whether `/mxdeliv` is skipped for `host` now.
    pub fn is_mxdeliv_unsupported(&self, host: &str) -> bool {
        lock(&self.mxdeliv_unsupported).is_marked(host, now_ms())
    }

    /// Idle connections kept for reuse: (SMTP, HTTPS).
    pub fn idle_connections(&self) -> (usize, usize) {
        let smtp = lock(&self.smtp_idle).values().map(Vec::len).sum();
        (smtp, self.https.idle_count())
    }

    /// One attempt to deliver `messages` to `domain` (the domain part of all their recipients;
    /// `[ip]` for a literal). One [`Attempt`] per message, in order. `seed` orders MX hosts of
    /// equal preference.
    pub async fn attempt(&self, domain: &str, messages: &[Message], seed: u64) -> Vec<Attempt> {
        let hosts = match self.resolve(domain, seed).await {
            Ok(hosts) => hosts,
            Err(failure) => {
                let outcome = Outcome::from(failure);
                return messages
                    .iter()
                    .map(|m| {
                        let attempt = Attempt {
                            outcomes: vec![outcome.clone(); m.recipients.len()],
                            route: None,
                            host: None,
                        };
                        log(domain, m, &attempt);
                        attempt
                    })
                    .collect();
            }
        };
        self.attempt_hosts(domain, &hosts, messages).await
    }

    /// [`Delivery::attempt`] with the MX hosts already resolved (best first). A host with a
    /// `literal` address is connected to there without a lookup.
    pub async fn attempt_hosts(
        &self,
        domain: &str,
        hosts: &[MxHost],
        messages: &[Message],
    ) -> Vec<Attempt> {
        let mut state = AttemptState::default();
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            let attempt = self.deliver(hosts, m, &mut state).await;
            log(domain, m, &attempt);
            out.push(attempt);
        }
        self.keep_idle(state.conns);
        out
    }

    /// The MX hosts of `domain`.
    async fn resolve(&self, domain: &str, seed: u64) -> Result<Vec<MxHost>, Failure> {
        match mx::destination(domain)? {
            Destination::Literal(ip) => Ok(vec![mx::literal_host(ip)]),
            Destination::Name(name) => mx::hosts(&name, net::mx(&self.dns, &name).await, seed),
        }
    }

    async fn deliver(&self, hosts: &[MxHost], m: &Message, state: &mut AttemptState) -> Attempt {
        if m.recipients.is_empty() {
            return Attempt {
                outcomes: Vec::new(),
                route: None,
                host: None,
            };
        }
        let mut last: Option<(String, String)> = None;
        for host in hosts {
            if let Some(e) = state.dead.get(&host.name) {
                last = Some((host.name.clone(), e.clone()));
                continue;
            }
            let addrs = match self.host_addresses(host, state).await {
                Ok(a) => a,
                Err(e) => {
                    state.dead.insert(host.name.clone(), e.clone());
                    last = Some((host.name.clone(), e));
                    continue;
                }
            };
            if !self.is_mxdeliv_unsupported(&host.name) {
                let verdict = https::post(
                    &self.https,
                    host,
                    &addrs,
                    self.config.https_port,
                    self.tls.https(host.tls),
                    &self.config.timeouts,
                    &m.sender,
                    &m.recipients,
                    m.body.clone(),
                )
                .await;
                match verdict {
                    Verdict::Delivered => {
                        return Attempt {
                            outcomes: vec![Outcome::Delivered; m.recipients.len()],
                            route: Some(Route::Https),
                            host: Some(host.name.clone()),
                        }
                    }
                    Verdict::FallThrough(why) => {
                        tracing::debug!(host = %host.name, id = %m.id, "/mxdeliv not used: {why}");
                    }
                }
            }
            match self.smtp_send(host, &addrs, m, state).await {
                Ok(outcomes) => {
                    if outcomes.contains(&Outcome::Delivered) {
                        lock(&self.mxdeliv_unsupported).mark(&host.name, now_ms());
                    }
                    return Attempt {
                        outcomes,
                        route: Some(Route::Smtp),
                        host: Some(host.name.clone()),
                    };
                }
                Err(e) => {
                    lock(&self.mxdeliv_unsupported).unmark(&host.name);
                    let e = e.to_string();
                    state.dead.insert(host.name.clone(), e.clone());
                    last = Some((host.name.clone(), e));
                }
            }
        }
        let (host, error) = last.unwrap_or_else(|| ("none".into(), "no MX host".into()));
        let reply = Reply::new(
            421,
            format!("4.4.1 Failed to connect to any mail server; last attempt to {host}: {error}"),
        );
        Attempt {
            outcomes: vec![Outcome::Temporary(reply); m.recipients.len()],
            route: None,
            host: Some(host),
        }
    }

    async fn host_addresses(
        &self,
        host: &MxHost,
        state: &mut AttemptState,
    ) -> Result<Vec<IpAddr>, String> {
        if let Some(ip) = host.literal {
            return Ok(vec![ip]);
        }
        if let Some(known) = state.addrs.get(&host.name) {
            return known.clone();
        }
        let found = net::addresses(&self.dns, &host.name, self.config.ipv6).await;
        state.addrs.insert(host.name.clone(), found.clone());
        found
    }

    /// Sends over a connection to `host`: this attempt's, an idle one, or a new one. A reused
    /// connection that fails before answering is replaced by a new one once.
    async fn smtp_send(
        &self,
        host: &MxHost,
        addrs: &[IpAddr],
        m: &Message,
        state: &mut AttemptState,
    ) -> Result<Vec<Outcome>, ConnError> {
        let key = self.idle_key(&host.name, host.tls);
        let reused = state.conns.remove(&key).or_else(|| self.take_idle(&key));
        if let Some(mut conn) = reused {
            if let Ok(outcomes) = conn.send(&m.sender, &m.recipients, m.body.clone()).await {
                if outcomes.iter().all(Outcome::is_temporary) && !conn.is_reusable() {
                    // A reused session the server was closing (`421` to MAIL): ask a fresh one.
                    tracing::debug!(host = %host.name, "reused SMTP connection was closing");
                } else {
                    self.keep_for_attempt(host, conn, state);
                    return Ok(outcomes);
                }
            }
        }
        let mut conn = SmtpConnection::open(
            host,
            addrs,
            self.config.smtp_port,
            &self.config.ehlo_name,
            self.tls.smtp(host.tls),
            self.config.timeouts,
        )
        .await?;
        let outcomes = conn.send(&m.sender, &m.recipients, m.body.clone()).await?;
        self.keep_for_attempt(host, conn, state);
        Ok(outcomes)
    }

    fn keep_for_attempt(&self, host: &MxHost, conn: SmtpConnection, state: &mut AttemptState) {
        if conn.is_reusable() {
            state
                .conns
                .insert(self.idle_key(&host.name, host.tls), conn);
        }
    }

    fn take_idle(&self, key: &str) -> Option<SmtpConnection> {
        let mut idle = lock(&self.smtp_idle);
        let list = idle.get_mut(key)?;
        let mut found = None;
        while let Some(conn) = list.pop() {
            if conn.idle_since.elapsed() < self.config.timeouts.idle && conn.is_reusable() {
                found = Some(conn);
                break;
            }
        }
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Keeps the attempt's connections for the next attempt (stale ones are dropped; the
    /// server sees a close without QUIT, as with Postfix's connection cache).
    fn keep_idle(&self, conns: HashMap<String, SmtpConnection>) {
        let mut idle = lock(&self.smtp_idle);
        let limit = self.config.timeouts.idle;
        idle.retain(|_, list| {
            list.retain(|c| c.idle_since.elapsed() < limit);
            !list.is_empty()
        });
        for (key, conn) in conns {
            let total: usize = idle.values().map(Vec::len).sum();
            let list = idle.entry(key).or_default();
            if total < MAX_SMTP_IDLE && list.len() < MAX_SMTP_IDLE_PER_HOST && conn.is_reusable() {
                list.push(conn);
            }
        }
        idle.retain(|_, list| !list.is_empty());
    }

    /// Connections are kept by host, port and certificate policy (a host may serve a verified
    /// and a `_` domain).
    fn idle_key(&self, host: &str, tls: mx::TlsPolicy) -> String {
        format!("{host}:{}:{tls:?}", self.config.smtp_port)
    }
}

/// Logs an attempt's temporary and permanent outcomes, once per message.
fn log(domain: &str, m: &Message, a: &Attempt) {
    let via = a.host.as_deref().unwrap_or("-");
    let deferred: Vec<(&String, &Reply)> = m
        .recipients
        .iter()
        .zip(&a.outcomes)
        .filter_map(|(r, o)| match o {
            Outcome::Temporary(reply) => Some((r, reply)),
            _ => None,
        })
        .collect();
    if let Some((_, reply)) = deferred.first() {
        let to: Vec<&str> = deferred.iter().map(|(r, _)| r.as_str()).collect();
        tracing::info!(
            destination = domain,
            id = %m.id,
            to = %to.join(","),
            relay = via,
            "deferred: {}",
            reply_text(reply)
        );
    }
    for (r, o) in m.recipients.iter().zip(&a.outcomes) {
        if let Outcome::Permanent(reply) = o {
            tracing::info!(
                destination = domain,
                id = %m.id,
                to = %r,
                relay = via,
                "rejected: {}",
                reply_text(reply)
            );
        }
    }
    if a.outcomes.iter().all(|o| *o == Outcome::Delivered) {
        tracing::debug!(destination = domain, id = %m.id, relay = via, route = ?a.route, "sent");
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
