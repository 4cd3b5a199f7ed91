//! Connection rate limiting: the userspace twin of the XDP program, and (feature `ebpf`) its loader.
//!
//! Two limits apply per source prefix (IPv4 address, IPv6 /64; see
//! [`relay_ebpf_common::PrefixKey`]):
//! - **new connections**: a token bucket of `max_new_connections_per_minute` with a burst of
//!   `new_connections_burst`, decided by [`relay_ebpf_common::admit`]. [`Admission::admit`]
//!   applies it after `accept`, always. With [`Enforcement::Kernel`] the XDP program applies it
//!   as well, to SYNs before the kernel even answers them.
//!
//! # Why the userspace twin stays on in kernel mode
//! The XDP program judges only what it can parse: TCP SYNs over IPv4 and IPv6 without extension
//! headers, to the limited ports. Everything else (IPv6 with extension headers, VLAN-tagged or
//! other ethertypes) it passes without judging, and a flood shaped like that would reach
//! `accept` unlimited if the twin were off. So the twin judges every accepted connection, with
//! the same rate and [`KERNEL_TWIN_BURST_FACTOR`] times the burst. Traffic the kernel already
//! admitted is not limited twice: the twin sees a subset of what the kernel admitted, only later
//! (accept-queue delay), and a sequence that conforms to a bucket of rate `r` and burst `b` still
//! conforms when each event is delayed by up to `d`, given a burst of `b + r·d`; doubling the
//! burst absorbs delays up to `b / r` (20 s with the defaults). Unjudged traffic gets the looser
//! twin limit instead of none.
//! - **concurrent SMTP connections**: at most `max_smtp_connections / 5` per source (chatmail's
//!   per-client share), held by the [`SourceSlot`] guard [`Admission::enter_smtp`] returns.
//! - **concurrent IMAP connections**: at most `max_imap_connections_per_source` per source
//!   (default `max_imap_connections / 5`, the same share), held by the guard
//!   [`Admission::enter_imap`] returns. It bounds what one source holds before authentication.
//!
//! Defaults are generous because of CGNAT, where one IPv4 address carries many phones:
//! 600 new connections per minute with a burst of 200. A Delta Chat client opens a handful of
//! connections when it starts and then keeps IMAP IDLE open, so only floods come near this.
//!
//! This module does no I/O on the data path and reads no clock: callers pass `now_ns` from a
//! monotonic clock. Memory is bounded: at most [`MAX_TRACKED_SOURCES`] buckets are kept.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use relay_ebpf_common::{admit, Bucket, Limits, PrefixKey};

#[cfg(feature = "ebpf")]
pub mod ebpf;

/// Default `max_new_connections_per_minute` (per source prefix).
pub const DEFAULT_MAX_NEW_CONNECTIONS_PER_MINUTE: u32 = 600;
/// Default `new_connections_burst` (per source prefix).
pub const DEFAULT_NEW_CONNECTIONS_BURST: u32 = 200;
/// In kernel mode the userspace twin allows this many times the configured burst (see the module
/// docs).
pub const KERNEL_TWIN_BURST_FACTOR: u32 = 2;
/// Buckets kept by the userspace limiter (the kernel map has its own, equal, capacity).
pub const MAX_TRACKED_SOURCES: usize = relay_ebpf_common::MAX_SOURCES as usize;

/// The rate limiter's part of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Interfaces to attach the XDP program to; empty = userspace enforcement only.
    pub ebpf_interfaces: Vec<String>,
    /// New connections per minute per source prefix (token refill rate).
    pub max_new_connections_per_minute: u32,
    /// New connections a source may open at once (token bucket capacity).
    pub new_connections_burst: u32,
    /// chatmail's `max_smtp_connections`; a source may hold a fifth of it concurrently.
    pub max_smtp_connections: u32,
    /// Concurrent IMAP connections one source may hold (`max_imap_connections_per_source`).
    pub max_imap_connections_per_source: u32,
    /// Destination ports whose new connections are limited (the kernel program takes up to
    /// [`relay_ebpf_common::MAX_PORTS`]).
    pub ports: Vec<u16>,
}

impl Default for RateLimitConfig {
    /// No XDP, the generous defaults above, chatmail's default of 1000 SMTP connections (200 per
    /// source), 2000 IMAP connections per source (a fifth of chatmail's default
    /// `max_imap_connections` of 10000), and the standard SMTP, submission and IMAP ports.
    fn default() -> Self {
        Self {
            ebpf_interfaces: Vec::new(),
            max_new_connections_per_minute: DEFAULT_MAX_NEW_CONNECTIONS_PER_MINUTE,
            new_connections_burst: DEFAULT_NEW_CONNECTIONS_BURST,
            max_smtp_connections: 1000,
            max_imap_connections_per_source: 2000,
            ports: vec![25, 587, 465, 143, 993],
        }
    }
}

/// Where new-connection rate limiting happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// The XDP program drops excess SYNs; [`Admission::admit`] still judges every accepted
    /// connection, with a wider burst, for what the program passes without judging.
    Kernel,
    /// [`Admission::admit`] decides after `accept`.
    Userspace,
}

/// Verdict counters (kernel: summed over CPUs since load; userspace: since start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Kernel: packets passed without judging (everything but SYNs to limited ports).
    /// Userspace: always 0 (only connections that are judged are counted).
    pub passed: u64,
    /// New connections admitted.
    pub admitted: u64,
    /// New connections refused (kernel: SYNs dropped).
    pub dropped: u64,
    /// Kernel: SYNs admitted because the source map refused an insert (fail open).
    /// Userspace: always 0 (the table evicts instead).
    pub map_error: u64,
}

/// Admission control for new connections. Cheap to share (`&self` methods, internally locked).
pub struct Admission {
    limits: Limits,
    enforcement: Enforcement,
    buckets: Mutex<Buckets>,
    smtp: Arc<SourceTable>,
    imap: Arc<SourceTable>,
    http: Arc<SourceTable>,
    #[cfg(feature = "ebpf")]
    kernel: Option<Mutex<ebpf::Kernel>>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("limits", &self.limits)
            .field("enforcement", &self.enforcement)
            .field("max_smtp_per_source", &self.smtp.max_per_source)
            .field("max_imap_per_source", &self.imap.max_per_source)
            .finish_non_exhaustive()
    }
}

struct Buckets {
    map: HashMap<PrefixKey, Bucket>,
    capacity: usize,
    counters: Counters,
}

/// Concurrent connections per source (one table for SMTP, one for IMAP).
struct SourceTable {
    max_per_source: u32,
    open: Mutex<HashMap<PrefixKey, u32>>,
}

/// One open connection counted against its source; dropping it frees the slot.
#[derive(Debug)]
#[must_use = "the slot is released when the guard is dropped"]
pub struct SourceSlot {
    table: Arc<SourceTable>,
    key: PrefixKey,
}

/// The SMTP guard's earlier name.
pub type SmtpSlot = SourceSlot;

impl std::fmt::Debug for SourceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceTable")
            .field("max_per_source", &self.max_per_source)
            .finish_non_exhaustive()
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.table.open);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A poisoned lock only means another thread panicked mid-update of a counter table; the data is
/// still a valid map, so keep going rather than take the whole relay down.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Admission {
    /// A limiter that enforces the new-connection rate in userspace.
    pub fn new(cfg: &RateLimitConfig) -> Self {
        Self::with_capacity(cfg, MAX_TRACKED_SOURCES)
    }

    /// As [`Admission::new`], tracking at most `capacity` sources (at least 1).
    pub fn with_capacity(cfg: &RateLimitConfig, capacity: usize) -> Self {
        Self {
            limits: Limits {
                rate_per_minute: cfg.max_new_connections_per_minute,
                burst: cfg.new_connections_burst,
            },
            enforcement: Enforcement::Userspace,
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                capacity: capacity.max(1),
                counters: Counters::default(),
            }),
            smtp: Arc::new(SourceTable {
                max_per_source: (cfg.max_smtp_connections / 5).max(1),
                open: Mutex::new(HashMap::new()),
            }),
            imap: Arc::new(SourceTable {
                max_per_source: cfg.max_imap_connections_per_source.max(1),
                open: Mutex::new(HashMap::new()),
            }),
            http: Arc::new(SourceTable {
                max_per_source: (cfg.max_smtp_connections / 5).max(1),
                open: Mutex::new(HashMap::new()),
            }),
            #[cfg(feature = "ebpf")]
            kernel: None,
        }
    }

    /// Who enforces the new-connection rate.
    pub fn enforcement(&self) -> Enforcement {
        self.enforcement
    }

    /// Switches to kernel mode: the XDP program enforces the configured limits, and this twin
    /// keeps judging with [`KERNEL_TWIN_BURST_FACTOR`] times the burst.
    #[cfg(any(test, feature = "ebpf"))]
    fn set_kernel_enforcement(&mut self) {
        self.enforcement = Enforcement::Kernel;
        self.limits.burst = self.limits.burst.saturating_mul(KERNEL_TWIN_BURST_FACTOR);
    }

    /// Whether `peer` may open a new connection at `now_ns` (monotonic nanoseconds). Judged in
    /// both modes (see the module docs: no bypass for what XDP passes without judging).
    pub fn admit(&self, peer: IpAddr, now_ns: u64) -> bool {
        let key = PrefixKey::from_ip(peer);
        let mut buckets = lock(&self.buckets);
        let limits = self.limits;
        let admitted = match buckets.map.get_mut(&key) {
            Some(bucket) => admit(bucket, now_ns, &limits),
            None => {
                if buckets.map.len() >= buckets.capacity {
                    buckets.evict(now_ns, &limits);
                }
                let mut bucket = Bucket::full(now_ns, &limits);
                let admitted = admit(&mut bucket, now_ns, &limits);
                buckets.map.insert(key, bucket);
                admitted
            }
        };
        if admitted {
            buckets.counters.admitted += 1;
        } else {
            buckets.counters.dropped += 1;
        }
        admitted
    }

    /// Counts an SMTP connection from `peer`, or `None` if that source already holds
    /// `max_smtp_connections / 5` of them. The slot is freed when the guard drops.
    pub fn enter_smtp(&self, peer: IpAddr) -> Option<SourceSlot> {
        SourceTable::enter(&self.smtp, peer)
    }

    /// Counts an IMAP connection from `peer`, or `None` if that source already holds
    /// `max_imap_connections_per_source` of them. The slot is freed when the guard drops.
    pub fn enter_imap(&self, peer: IpAddr) -> Option<SourceSlot> {
        SourceTable::enter(&self.imap, peer)
    }

    /// Counts an HTTP connection (or a connection to the HTTPS port before ALPN chose its
    /// protocol) from `peer`, or `None` if that source already holds `max_smtp_connections / 5`
    /// of them (relays deliver over `/mxdeliv` as over SMTP). Freed when the guard drops.
    pub fn enter_http(&self, peer: IpAddr) -> Option<SourceSlot> {
        SourceTable::enter(&self.http, peer)
    }

    /// Verdict counters of whichever side enforces (kernel counters if attached).
    pub fn counters(&self) -> Counters {
        #[cfg(feature = "ebpf")]
        if let Some(kernel) = &self.kernel {
            match lock(kernel).counters() {
                Ok(c) => return c,
                Err(e) => tracing::warn!("reading XDP counters: {e}"),
            }
        }
        lock(&self.buckets).counters
    }

    /// Up to `n` sources with the most refused connections, most first, with their counts.
    pub fn top_dropped(&self, n: usize) -> Vec<(PrefixKey, u64)> {
        #[cfg(feature = "ebpf")]
        if let Some(kernel) = &self.kernel {
            match lock(kernel).top_dropped(n) {
                Ok(top) => return top.into_iter().map(|(k, b)| (k, b.dropped)).collect(),
                Err(e) => tracing::warn!("reading XDP sources: {e}"),
            }
        }
        let buckets = lock(&self.buckets);
        let mut top: Vec<(PrefixKey, u64)> = buckets
            .map
            .iter()
            .filter(|(_, b)| b.dropped > 0)
            .map(|(k, b)| (*k, b.dropped))
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(n);
        top
    }

    /// Sources currently tracked by the userspace limiter.
    pub fn tracked_sources(&self) -> usize {
        lock(&self.buckets).map.len()
    }
}

impl SourceTable {
    fn enter(table: &Arc<SourceTable>, peer: IpAddr) -> Option<SourceSlot> {
        let key = PrefixKey::from_ip(peer);
        let mut open = lock(&table.open);
        let n = open.entry(key).or_insert(0);
        if *n >= table.max_per_source {
            return None;
        }
        *n += 1;
        drop(open);
        Some(SourceSlot {
            table: Arc::clone(table),
            key,
        })
    }
}

impl Buckets {
    /// Makes room for at least one source (amortised O(1) per insert).
    ///
    /// First forgets buckets that have refilled to capacity: a full bucket is exactly what a new
    /// source gets, so forgetting one changes no decision. If that frees less than an eighth of
    /// the table (a flood from many active sources), also forgets the least recently updated
    /// buckets down to seven eighths, which can only ever be generous to those sources.
    fn evict(&mut self, now_ns: u64, limits: &Limits) {
        let capacity = limits.capacity_ns();
        self.map.retain(|_, b| {
            let elapsed = now_ns.saturating_sub(b.last_ns);
            b.level_ns.saturating_add(elapsed) < capacity || limits.rate_per_minute == 0
        });
        let target = self.capacity - self.capacity / 8;
        if self.map.len() > target || self.map.len() >= self.capacity {
            let target = target.min(self.capacity - 1);
            let mut ages: Vec<u64> = self.map.values().map(|b| b.last_ns).collect();
            let cut = ages.len() - target;
            // The `cut`-th oldest update time: everything older goes, then ties up to `cut`.
            let (_, threshold, _) = ages.select_nth_unstable(cut - 1);
            let threshold = *threshold;
            self.map.retain(|_, b| b.last_ns >= threshold);
            let mut excess = self.map.len().saturating_sub(target);
            self.map.retain(|_, b| {
                if excess > 0 && b.last_ns == threshold {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }
}

/// Sets up rate limiting: the XDP program when built with feature `ebpf`, interfaces are
/// configured and the process may load BPF programs; the userspace limiter otherwise. Logs once
/// which one is active.
pub fn start(cfg: &RateLimitConfig) -> (Admission, Enforcement) {
    #[cfg_attr(not(feature = "ebpf"), allow(unused_mut))]
    let mut admission = Admission::new(cfg);
    if !cfg.ebpf_interfaces.is_empty() {
        #[cfg(feature = "ebpf")]
        match ebpf::Kernel::start(cfg) {
            Ok(kernel) => {
                let on: Vec<String> = kernel.attachments().map(ToString::to_string).collect();
                tracing::info!(
                    rate_per_minute = cfg.max_new_connections_per_minute,
                    burst = cfg.new_connections_burst,
                    "connection rate limiting: kernel (XDP on {})",
                    on.join(", ")
                );
                admission.set_kernel_enforcement();
                admission.kernel = Some(Mutex::new(kernel));
                return (admission, Enforcement::Kernel);
            }
            Err(e) => tracing::warn!("XDP rate limiting unavailable ({e}), using userspace"),
        }
        #[cfg(not(feature = "ebpf"))]
        tracing::warn!("ebpf_interfaces is set but this relay was built without feature `ebpf`");
    }
    tracing::info!(
        rate_per_minute = cfg.max_new_connections_per_minute,
        burst = cfg.new_connections_burst,
        "connection rate limiting: userspace"
    );
    (admission, Enforcement::Userspace)
}

#[cfg(test)]
mod tests;
