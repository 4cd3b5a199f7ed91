//! Operational metrics of one relay and their Prometheus text exposition (`GET /metrics` on
//! option `metrics_address`, served by [`http`]).
//!
//! Counting is one relaxed atomic add at an event point that already exists (an SMTP reply at
//! the end of DATA, a login's result, a delivery attempt's outcome, a push notifier's answer):
//! no lock and no allocation on the mail path. Values that are state rather than events (queue
//! depth, store size, rate-limit verdicts, the fsync latency histogram kept by the store's writer)
//! are read when a scrape asks, by [`Exposition`]. The text is encoded by prometheus-client (Prometheus
//! text format 0.0.4).
//!
//! Names: ours start with `chatmail_` (counters end in `_total`). The reference relay's mtail
//! counters (`delivered_mail`, `quota_exceeded`, `created_accounts`, `created_ci_accounts`,
//! `created_nonci_accounts`, `rejected_registrations`, `rejected_unencrypted_mail_count`,
//! `dkim_signed`) are exported under their own names too, untyped and without a suffix, with
//! mtail's `prog="delivered_mail.mtail"` label, so dashboards made for the reference keep working.

#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: the metrics listener
pub mod http;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::store::{DeliverError, Error as StoreError, OpResult};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The listening ports, as labelled (`port="submissions"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// SMTP from other relays (25).
    Mx,
    /// Submission with STARTTLS (587).
    Submission,
    /// Submission with implicit TLS (465).
    Submissions,
    /// IMAP with STARTTLS (143).
    Imap,
    /// IMAP with implicit TLS (993).
    Imaps,
    /// HTTPS (443), whatever its ALPN turns it into.
    Https,
    /// Plain HTTP (80).
    Http,
}

/// The listening ports' names, as the `port` label and `relay status` show them.
pub const PORT_NAMES: [&str; 7] = [
    "mx",
    "submission",
    "submissions",
    "imap",
    "imaps",
    "https",
    "http",
];

const PORTS: [(Port, &str); 7] = [
    (Port::Mx, "mx"),
    (Port::Submission, "submission"),
    (Port::Submissions, "submissions"),
    (Port::Imap, "imap"),
    (Port::Imaps, "imaps"),
    (Port::Https, "https"),
    (Port::Http, "http"),
];

/// Why a connection was closed at accept time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source's new-connection rate (the userspace twin of the XDP limiter).
    Rate,
    /// The source holds its share of the port's connections.
    Source,
    /// The relay holds its configured maximum of connections.
    Limit,
}

const REFUSALS: [(Refusal, &str); 3] = [
    (Refusal::Rate, "rate"),
    (Refusal::Source, "source"),
    (Refusal::Limit, "limit"),
];

/// Where a message came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Submission (587, 465, ALPN `smtp`, WebSocket `/smtp`).
    Submission,
    /// SMTP from other relays (25).
    Mx,
    /// HTTPS `POST /mxdeliv` from other relays.
    Mxdeliv,
}

const PATHS: [(Path, &str); 3] = [
    (Path::Submission, "submission"),
    (Path::Mx, "mx"),
    (Path::Mxdeliv, "mxdeliv"),
];

/// The reply codes a refused message is counted under; any other is `other`.
const CODES: [u16; 10] = [421, 450, 451, 452, 500, 523, 550, 552, 553, 554];
const CODE_LABELS: [&str; CODES.len() + 1] = [
    "421", "450", "451", "452", "500", "523", "550", "552", "553", "554", "other",
];

fn code_index(code: u16) -> usize {
    CODES.iter().position(|c| *c == code).unwrap_or(CODES.len())
}

/// Push notification results, one per POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult {
    /// `2xx`.
    Sent,
    /// `410`: the token is removed.
    Gone,
    /// Anything else (other status, connection failure, timeout): retried later.
    Failed,
}

/// What became of one recipient of one outbound delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    /// The other server took it.
    Delivered,
    /// A temporary failure: tried again later.
    Deferred,
    /// A permanent failure or the queue lifetime ran out: the sender gets a bounce.
    Bounced,
}

/// Upper bounds (seconds) of the fsync latency histogram's buckets.
pub const FSYNC_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A latency histogram over [`FSYNC_BUCKETS`] made of atomics (no lock to observe).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; FSYNC_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = FSYNC_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(FSYNC_BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    fn encode(&self, mut m: prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        let buckets: Vec<(f64, u64)> = FSYNC_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets.iter().map(|b| b.load(Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }
}

/// The event counters of one relay (held by [`crate::shared::Shared`]).
#[derive(Debug, Default)]
pub struct Metrics {
    accepted: [AtomicU64; PORTS.len()],
    refused: [[AtomicU64; REFUSALS.len()]; PORTS.len()],
    open: [AtomicI64; PORTS.len()],
    logins_ok: AtomicU64,
    logins_failed: AtomicU64,
    logins_later: AtomicU64,
    created: AtomicU64,
    created_ci: AtomicU64,
    rejected_registrations: AtomicU64,
    messages_accepted: [AtomicU64; PATHS.len()],
    messages_rejected: [[AtomicU64; CODE_LABELS.len()]; PATHS.len()],
    delivered_local: AtomicU64,
    quota_exceeded: AtomicU64,
    remote: [AtomicU64; 3],
    dkim_signed: AtomicU64,
    idle: AtomicI64,
    push: [AtomicU64; 3],
}

/// Which gauge an [`Open`] holds up.
#[derive(Debug, Clone, Copy)]
enum Gauge {
    Connection(Port),
    Idle,
}

/// Counts one in a gauge (an open connection, an IMAP session in IDLE) while it lives.
#[derive(Debug)]
pub struct Open {
    metrics: Arc<Metrics>,
    gauge: Gauge,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.gauge(self.gauge).fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    fn gauge(&self, g: Gauge) -> &AtomicI64 {
        match g {
            Gauge::Connection(p) => &self.open[p as usize],
            Gauge::Idle => &self.idle,
        }
    }

    fn hold(self: &Arc<Self>, gauge: Gauge) -> Open {
        self.gauge(gauge).fetch_add(1, Relaxed);
        Open {
            metrics: self.clone(),
            gauge,
        }
    }

    /// A connection to `port` was admitted: counted, and open while the guard lives.
    pub fn connection(self: &Arc<Self>, port: Port) -> Open {
        self.accepted[port as usize].fetch_add(1, Relaxed);
        self.hold(Gauge::Connection(port))
    }

    /// `(port, connections open now)` for every listening port, in [`PORT_NAMES`] order (what
    /// `relay status` shows).
    pub fn open_connections(&self) -> Vec<(&'static str, i64)> {
        PORTS
            .iter()
            .map(|&(p, name)| (name, self.open[p as usize].load(Relaxed).max(0)))
            .collect()
    }

    /// A connection to `port` was closed at accept time.
    pub fn refused(&self, port: Port, why: Refusal) {
        self.refused[port as usize][why as usize].fetch_add(1, Relaxed);
    }

    /// An IMAP session is in IDLE while the guard lives.
    pub fn idle(self: &Arc<Self>) -> Open {
        self.hold(Gauge::Idle)
    }

    /// A login with a known password (or one that created its account).
    pub fn login_ok(&self) {
        self.logins_ok.fetch_add(1, Relaxed);
    }

    /// A login refused: wrong password, or an address that may not be created.
    pub fn login_failed(&self) {
        self.logins_failed.fetch_add(1, Relaxed);
    }

    /// A login answered with a temporary failure (resources, a full hashing queue).
    pub fn login_later(&self) {
        self.logins_later.fetch_add(1, Relaxed);
    }

    /// An account was created at its first login.
    pub fn account_created(&self, addr: &str) {
        self.created.fetch_add(1, Relaxed);
        if addr.starts_with("ci-") {
            self.created_ci.fetch_add(1, Relaxed);
        }
    }

    /// Account creation refused because the machine is short of resources.
    pub fn registration_rejected(&self) {
        self.rejected_registrations.fetch_add(1, Relaxed);
    }

    /// The final reply to a message (end of DATA, or the refusal that ended its transaction):
    /// `2xx` counts as accepted, anything else as rejected by its code.
    pub fn message(&self, path: Path, code: u16) {
        if (200..300).contains(&code) {
            self.messages_accepted[path as usize].fetch_add(1, Relaxed);
        } else {
            self.messages_rejected[path as usize][code_index(code)].fetch_add(1, Relaxed);
        }
    }

    /// Messages stored in local INBOXes (one per recipient).
    pub fn delivered_local(&self, recipients: u64) {
        self.delivered_local.fetch_add(recipients, Relaxed);
    }

    /// Counts what a store commit delivered: each copy written to an INBOX, each recipient
    /// refused for a full mailbox (in `Op::Deliver` results, also inside an `Op::Group`).
    pub fn store_result(&self, result: &Result<OpResult, StoreError>) {
        fn walk(m: &Metrics, r: &OpResult) {
            match r {
                OpResult::Delivered(results) => {
                    for r in results {
                        match r {
                            Ok(_) => m.delivered_local(1),
                            Err(DeliverError::OverQuota) => m.quota_exceeded(),
                            Err(_) => {}
                        }
                    }
                }
                OpResult::Group(results) => {
                    for r in results.iter().flatten() {
                        walk(m, r);
                    }
                }
                _ => {}
            }
        }
        if let Ok(r) = result {
            walk(self, r);
        }
    }

    /// A recipient refused because its mailbox is full (`552 5.2.2`).
    pub fn quota_exceeded(&self) {
        self.quota_exceeded.fetch_add(1, Relaxed);
    }

    /// Outcomes of an outbound delivery attempt, per recipient.
    pub fn remote(&self, outcome: Remote, recipients: u64) {
        self.remote[outcome as usize].fetch_add(recipients, Relaxed);
    }

    /// A message DKIM-signed on its way out.
    pub fn dkim_signed(&self) {
        self.dkim_signed.fetch_add(1, Relaxed);
    }

    /// One push notifier answer.
    pub fn push(&self, result: PushResult) {
        self.push[result as usize].fetch_add(1, Relaxed);
    }
}

/// What a scrape reads besides the counters: the store, the queue and rate limiting.
pub struct Sources {
    /// The relay's counters.
    pub metrics: Arc<Metrics>,
    /// The store (size, segments, writer statistics, fsync latency, queue depth).
    pub store: crate::store::Store,
    /// Connection admission (the userspace or XDP verdict counters).
    pub admission: Arc<crate::ratelimit::Admission>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

/// The exposition: a prometheus-client registry over [`Sources`].
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    /// A registry reading `sources` at each scrape.
    pub fn new(sources: Sources) -> Exposition {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(sources));
        Exposition { registry }
    }

    /// The Prometheus text of every metric, now.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// The `Content-Type` of [`Exposition::render`]'s text.
    pub const CONTENT_TYPE: &'static str =
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(m)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}

/// A counter of the reference's mtail program: its name as is, untyped (no `_total`), with
/// mtail's `prog` label.
fn mtail(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Unknown)?;
    let labels = [("prog", "delivered_mail.mtail")];
    ConstCounter::new(value).encode(m.encode_family(&labels)?)
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Relaxed)
}

impl Collector for Sources {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.metrics;
        {
            let mut d = enc.encode_descriptor(
                "chatmail_connections_accepted",
                "Connections admitted, by listening port.",
                None,
                MetricType::Counter,
            )?;
            for (port, name) in PORTS {
                let v = load(&m.accepted[port as usize]);
                ConstCounter::new(v).encode(d.encode_family(&[("port", name)])?)?;
            }
        }
        {
            let mut d = enc.encode_descriptor(
                "chatmail_connections_refused",
                "Connections closed at accept time, by port and reason (rate: the source's \
                 new-connection rate; source: its share of connections; limit: the relay's).",
                None,
                MetricType::Counter,
            )?;
            for (port, name) in PORTS {
                for (why, reason) in REFUSALS {
                    let v = load(&m.refused[port as usize][why as usize]);
                    let labels = [("port", name), ("reason", reason)];
                    ConstCounter::new(v).encode(d.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut d = enc.encode_descriptor(
                "chatmail_connections_open",
                "Connections open now, by listening port.",
                None,
                MetricType::Gauge,
            )?;
            for (port, name) in PORTS {
                let v = m.open[port as usize].load(Relaxed);
                ConstGauge::new(v).encode(d.encode_family(&[("port", name)])?)?;
            }
        }
        {
            let mut d = enc.encode_descriptor(
                "chatmail_logins",
                "IMAP and SMTP logins by result (ok, failed: wrong password or an address that \
                 may not be created, later: a temporary failure).",
                None,
                MetricType::Counter,
            )?;
            for (name, v) in [
                ("ok", &m.logins_ok),
                ("failed", &m.logins_failed),
                ("later", &m.logins_later),
            ] {
                ConstCounter::new(load(v)).encode(d.encode_family(&[("result", name)])?)?;
            }
        }
        counter(
            &mut enc,
            "chatmail_accounts_created",
            "Accounts created at their first login.",
            load(&m.created),
        )?;
        {
            let mut d = enc.encode_descriptor(
                "chatmail_messages_accepted",
                "Messages accepted (250 at the end of DATA, 200 on /mxdeliv), by path.",
                None,
                MetricType::Counter,
            )?;
            for (path, name) in PATHS {
                let v = load(&m.messages_accepted[path as usize]);
                ConstCounter::new(v).encode(d.encode_family(&[("path", name)])?)?;
            }
        }
        {
            let mut d = enc.encode_descriptor(
                "chatmail_messages_rejected",
                "Messages refused, by path and SMTP reply code (523: unencrypted, 450: send \
                 rate, 552: size or quota, 554: DKIM, 451/452: temporary).",
                None,
                MetricType::Counter,
            )?;
            for (path, name) in PATHS {
                for (i, code) in CODE_LABELS.iter().enumerate() {
                    let v = load(&m.messages_rejected[path as usize][i]);
                    let labels = [("path", name), ("code", code)];
                    ConstCounter::new(v).encode(d.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut d = enc.encode_descriptor(
                "chatmail_deliveries",
                "Deliveries per recipient: local (stored in an INBOX) and remote attempts by \
                 outcome (delivered, deferred, bounced).",
                None,
                MetricType::Counter,
            )?;
            let remote = |o: Remote| load(&m.remote[o as usize]);
            for (labels, v) in [
                (
                    [("where", "local"), ("result", "delivered")],
                    load(&m.delivered_local),
                ),
                (
                    [("where", "remote"), ("result", "delivered")],
                    remote(Remote::Delivered),
                ),
                (
                    [("where", "remote"), ("result", "deferred")],
                    remote(Remote::Deferred),
                ),
                (
                    [("where", "remote"), ("result", "bounced")],
                    remote(Remote::Bounced),
                ),
            ] {
                ConstCounter::new(v).encode(d.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut enc,
            "chatmail_queue_entries",
            "Outbound queue depth: entries (one per message and destination domain) waiting.",
            i64::try_from(self.store.queue_len()).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut enc,
            "chatmail_imap_idle_sessions",
            "IMAP sessions in IDLE now.",
            m.idle.load(Relaxed),
        )?;
        {
            let mut d = enc.encode_descriptor(
                "chatmail_push_notifications",
                "Push notifier answers (sent: 2xx, gone: 410 and the token removed, failed: \
                 retried later).",
                None,
                MetricType::Counter,
            )?;
            for (name, r) in [
                ("sent", PushResult::Sent),
                ("gone", PushResult::Gone),
                ("failed", PushResult::Failed),
            ] {
                let v = load(&m.push[r as usize]);
                ConstCounter::new(v).encode(d.encode_family(&[("result", name)])?)?;
            }
        }
        self.encode_store(&mut enc)?;
        self.encode_ratelimit(&mut enc)?;
        // The reference's mtail counters.
        mtail(
            &mut enc,
            "delivered_mail",
            "Messages saved to an INBOX (the reference's mtail counter).",
            load(&m.delivered_local),
        )?;
        mtail(
            &mut enc,
            "quota_exceeded",
            "Recipients refused because their mailbox is full (the reference's mtail counter).",
            load(&m.quota_exceeded),
        )?;
        mtail(
            &mut enc,
            "dkim_signed",
            "Outgoing messages DKIM-signed (the reference's mtail counter).",
            load(&m.dkim_signed),
        )?;
        let created = load(&m.created);
        let ci = load(&m.created_ci);
        mtail(
            &mut enc,
            "created_accounts",
            "Accounts created (the reference's mtail counter).",
            created,
        )?;
        mtail(
            &mut enc,
            "created_ci_accounts",
            "Accounts created whose address starts with ci- (the reference's mtail counter).",
            ci,
        )?;
        mtail(
            &mut enc,
            "created_nonci_accounts",
            "Accounts created whose address does not start with ci- (the reference's mtail \
             counter).",
            created.saturating_sub(ci),
        )?;
        mtail(
            &mut enc,
            "rejected_registrations",
            "Account creation refused for lack of load, memory or disk headroom (the \
             reference's mtail counter).",
            load(&m.rejected_registrations),
        )?;
        let unencrypted = PATHS
            .iter()
            .map(|(p, _)| load(&m.messages_rejected[*p as usize][code_index(523)]))
            .sum();
        mtail(
            &mut enc,
            "rejected_unencrypted_mail_count",
            "Messages refused with 523 Encryption Needed (the reference's mtail counter).",
            unencrypted,
        )?;
        Ok(())
    }
}

impl Sources {
    fn encode_store(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let store = &self.store;
        let (segments, bytes) = store.segment_usage();
        gauge(
            enc,
            "chatmail_store_segments",
            "Log segment files of the store.",
            i64::try_from(segments).unwrap_or(i64::MAX),
        )?;
        gauge(
            enc,
            "chatmail_store_bytes",
            "Bytes of the store's log segment files (preallocated).",
            i64::try_from(bytes).unwrap_or(i64::MAX),
        )?;
        let stats = store.stats();
        counter(
            enc,
            "chatmail_store_written_bytes",
            "Log bytes the store wrote since the relay started.",
            stats.bytes_written,
        )?;
        counter(
            enc,
            "chatmail_store_commits",
            "Group commits (one fdatasync each) since the relay started.",
            stats.batches,
        )?;
        counter(
            enc,
            "chatmail_store_failed_commits",
            "Group commits undone after an I/O error or a full disk.",
            stats.failed_batches,
        )?;
        counter(
            enc,
            "chatmail_store_compactions",
            "Old log segments whose live messages were copied out so that they can be removed.",
            stats.compactions,
        )?;
        gauge(
            enc,
            "chatmail_store_writes_failing",
            "1 while store writes fail (full disk, I/O errors), else 0.",
            i64::from(store.writes_failing()),
        )?;
        let d = enc.encode_descriptor(
            "chatmail_store_fsync_seconds",
            "Latency of the store's fdatasync per group commit.",
            None,
            MetricType::Histogram,
        )?;
        store.fsync_latency().encode(d)
    }

    fn encode_ratelimit(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        use crate::ratelimit::Enforcement;
        let mode = match self.admission.enforcement() {
            Enforcement::Kernel => "xdp",
            Enforcement::Userspace => "userspace",
        };
        let kernel = self.admission.counters();
        let mut d = enc.encode_descriptor(
            "chatmail_ratelimit_connections",
            "New-connection rate limiter verdicts (mode xdp: the kernel program's counters, \
             packets passed unjudged included; userspace: judged at accept).",
            None,
            MetricType::Counter,
        )?;
        for (verdict, v) in [
            ("admitted", kernel.admitted),
            ("dropped", kernel.dropped),
            ("passed", kernel.passed),
            ("map_error", kernel.map_error),
        ] {
            let labels = [("mode", mode), ("verdict", verdict)];
            ConstCounter::new(v).encode(d.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reply_codes_fall_into_their_own_series_or_other() {
        let m = Metrics::default();
        m.message(Path::Submission, 250);
        m.message(Path::Submission, 523);
        m.message(Path::Mx, 523);
        m.message(Path::Mx, 599);
        assert_eq!(load(&m.messages_accepted[Path::Submission as usize]), 1);
        assert_eq!(
            load(&m.messages_rejected[Path::Submission as usize][code_index(523)]),
            1
        );
        assert_eq!(
            load(&m.messages_rejected[Path::Mx as usize][CODE_LABELS.len() - 1]),
            1
        );
    }

    #[test]
    fn histogram_buckets_hold_each_observation_once() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        assert_eq!(h.count(), 3);
        assert_eq!(h.buckets[0].load(Relaxed), 1);
        assert_eq!(h.buckets[5].load(Relaxed), 1); // <= 5 ms
        assert_eq!(h.buckets[FSYNC_BUCKETS.len()].load(Relaxed), 1); // +Inf
        assert_eq!(h.sum_ns.load(Relaxed), 10_003_050_000);
    }

    #[test]
    fn gauges_go_down_when_their_guard_is_dropped() {
        let m = Arc::new(Metrics::default());
        let a = m.connection(Port::Imaps);
        let b = m.idle();
        assert_eq!(m.open[Port::Imaps as usize].load(Relaxed), 1);
        assert_eq!(m.idle.load(Relaxed), 1);
        drop((a, b));
        assert_eq!(m.open[Port::Imaps as usize].load(Relaxed), 0);
        assert_eq!(m.idle.load(Relaxed), 0);
        assert_eq!(load(&m.accepted[Port::Imaps as usize]), 1);
    }

    #[test]
    fn store_results_count_copies_and_full_mailboxes_inside_groups() {
        let m = Metrics::default();
        let delivered = OpResult::Delivered(vec![
            Ok(1),
            Err(DeliverError::OverQuota),
            Err(DeliverError::NoSuchAccount),
            Ok(2),
        ]);
        m.store_result(&Ok(OpResult::Group(vec![
            Ok(OpResult::Enqueued(Vec::new())),
            Ok(delivered),
        ])));
        m.store_result(&Err(StoreError::OverQuota));
        assert_eq!(load(&m.delivered_local), 2);
        assert_eq!(load(&m.quota_exceeded), 1);
    }
}
