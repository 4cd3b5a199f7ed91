//! Push notifications (chatmail.md §6.2): wakes the phones of accounts that got new mail.
//!
//! A delivery to an account with device tokens writes a pending notification in the same
//! commit as the message (`store/notify.rs`), so it costs the delivery no extra `fdatasync`,
//! survives `kill -9` and never waits for the notifier. This module is the notifier: one
//! thread with its own tokio runtime (never the connection workers, so a slow or dead notifier
//! service delays no delivery and no IDLE wake-up) that reads new pending notifications when
//! the store's [`notify_watch`](crate::store::Mailstore::notify_watch) changes, and POSTs
//! `<notification_url>/notify` with the raw token as body, one request per token, at most
//! [`MAX_IN_FLIGHT`] at once over keep-alive connections, each within [`REQUEST_TIMEOUT`]
//! (the reference's 60 s). What a result means and when to retry is the sans-I/O
//! [`schedule`]; finished notifications are committed as `Op::NotifyDone`, up to
//! [`DONE_GROUP`] in one commit within [`DONE_DELAY_MS`], tokens answered `410 Gone` removed
//! with `Op::RemoveDeviceToken`. The thread runs at a lower CPU priority (nice 10).
//!
//! Memory: the store keeps one small entry per account with a pending notification; the
//! schedule one job per (account, token) it works on.

pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tokio::task::JoinSet;

use crate::io::background::Background;
use crate::shared::Shared;
use crate::store::Op;
use schedule::{Action, Outcome, Schedule, Send};

/// The notifier thread's nice value (as the hash pool's).
const NICE: i32 = crate::io::hash_pool::NICE;
/// POSTs in flight at most.
pub const MAX_IN_FLIGHT: usize = 32;
/// Jobs (account and token) the schedule holds at most; further pending notifications wait in
/// the store until there is room, so that a long notifier outage with a million pending
/// notifications costs the notifier no more memory than this many jobs.
pub const MAX_JOBS: usize = 20_000;
/// Pending notifications read from the store at a time.
const READ_BATCH: usize = 1024;
/// One request and its response (the reference's 60 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Finished notifications are committed together (one `Op::Group`), this many at most ...
pub const DONE_GROUP: usize = 256;
/// ... at most this long (ms) after the first of them finished. A crash in between sends those
/// notifications again after the restart (a second wake-up of a phone, harmless); in exchange
/// the store writes one commit per group instead of one per POST.
pub const DONE_DELAY_MS: u64 = 50;
/// Response body bytes read (to keep the connection) at most.
const MAX_RESPONSE_BODY: usize = 16 * 1024;

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A running notifier; stopped (its thread joined) when dropped or with [`Notifier::stop`].
pub struct Notifier(Background);

impl Notifier {
    /// Starts the notifier thread if `notification_url` is set; HTTPS with `tls`.
    ///
    /// # Errors
    /// The thread could not be created.
    pub fn start(
        shared: Arc<Shared>,
        tls: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Option<Notifier>> {
        let Some(base) = shared.config.notification_url.clone() else {
            return Ok(None);
        };
        let url = format!("{base}/notify");
        Background::spawn("notifier", move |stop_rx| {
            // Background work: a lower priority for this thread (Linux: the nice value is
            // per thread, and threads it starts inherit it), so that on a busy machine
            // deliveries and IDLE wake-ups get the CPU first. Failing to set it changes
            // nothing but the priority.
            if let Err(e) = rustix::process::setpriority_process(None, NICE) {
                tracing::debug!("notifier thread priority: {e}");
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("notifier runtime: {e}");
                    return;
                }
            };
            rt.block_on(run(shared, client(tls), url, stop_rx));
        })
        .map(|b| Some(Notifier(b)))
    }

    /// Stops and waits for the thread (POSTs in flight are abandoned: their notifications stay
    /// pending in the store and are sent after a restart).
    pub fn stop(self) {
        self.0.stop();
    }
}

/// The HTTP client: HTTPS with `tls` (the delivery's verified configuration: the system's CA
/// certificates and `delivery_ca_file`), plain HTTP for the loopback stand-ins
/// `notification_url` allows; keep-alive.
fn client(tls: Arc<rustls::ClientConfig>) -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http.enforce_http(false);
    http.set_nodelay(true);
    // hyper-rustls sets ALPN itself (none for HTTP/1.1 only) and refuses a preset list.
    let mut tls = (*tls).clone();
    tls.alpn_protocols.clear();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// One POST and what its answer means.
async fn post(client: HttpClient, url: Arc<str>, token: String) -> Outcome {
    let req = match hyper::Request::post(&*url).body(Full::new(Bytes::from(token))) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("push: bad request: {e}");
            return Outcome::Failed;
        }
    };
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        // Read a small body so that the connection can carry the next request.
        let _ = Limited::new(resp.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await;
        Ok::<u16, String>(status)
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(200..=299)) => Outcome::Sent,
        Ok(Ok(410)) => Outcome::Gone,
        Ok(Ok(status)) => {
            tracing::debug!(status, "push: notifier refused, will retry");
            Outcome::Failed
        }
        Ok(Err(e)) => {
            tracing::debug!("push: notifier unreachable, will retry: {e}");
            Outcome::Failed
        }
        Err(_) => {
            tracing::debug!("push: no answer within 60 s, will retry");
            Outcome::Failed
        }
    }
}

fn now_ms() -> u64 {
    crate::io::now_ms()
}

/// Commit what the schedule decided (in the background: a slow store write holds no POST).
/// Carries out the schedule's actions: finished notifications join `finished`, a token
/// answered `410` is removed at once.
fn apply(shared: &Arc<Shared>, actions: Vec<Action>, finished: &mut Finished, now: u64) {
    for a in actions {
        match a {
            Action::Done { account, seq } => finished.add(Op::NotifyDone { account, seq }, now),
            Action::RemoveToken { account, token } => {
                tracing::info!(account, "push: token gone (410), removed");
                commit(shared, Op::RemoveDeviceToken { account, token });
            }
        }
        if finished.ops.len() >= DONE_GROUP {
            finished.flush(shared);
        }
    }
}

/// Commits `op` without waiting for it (a failure is logged; the notification stays pending
/// and is sent again).
fn commit(shared: &Arc<Shared>, op: Op) {
    let commit = shared.store.commit(op);
    tokio::spawn(async move {
        if let Err(e) = commit.await {
            tracing::warn!("push: store update failed: {e}");
        }
    });
}

/// Finished notifications not yet committed ([`DONE_GROUP`], [`DONE_DELAY_MS`]).
#[derive(Default)]
struct Finished {
    ops: Vec<Op>,
    /// When they are committed at the latest (ms).
    due: Option<u64>,
}

impl Finished {
    fn add(&mut self, op: Op, now: u64) {
        self.due.get_or_insert(now + DONE_DELAY_MS);
        self.ops.push(op);
    }

    fn flush_if_due(&mut self, shared: &Arc<Shared>, now: u64) {
        if self.due.is_some_and(|due| now >= due) {
            self.flush(shared);
        }
    }

    fn flush(&mut self, shared: &Arc<Shared>) {
        self.due = None;
        match std::mem::take(&mut self.ops) {
            ops if ops.is_empty() => {}
            mut ops if ops.len() == 1 => commit(shared, ops.remove(0)),
            ops => commit(shared, Op::Group(ops)),
        }
    }
}

async fn run(
    shared: Arc<Shared>,
    client: HttpClient,
    url: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let url: Arc<str> = url.into();
    let store = shared.store.clone();
    let mut watch = store.notify_watch();
    let mut schedule = Schedule::default();
    let mut in_flight: JoinSet<(Send, Outcome)> = JoinSet::new();
    // Pending notifications from this `seq` on have not been read yet.
    let mut unread = 0u64;
    let mut new_pending = true;
    let mut finished = Finished::default();
    loop {
        let now = now_ms();
        finished.flush_if_due(&shared, now);
        if new_pending {
            watch.borrow_and_update();
            let now_s = i64::try_from(now / 1000).unwrap_or(i64::MAX);
            let mut actions = Vec::new();
            // Read in `seq` order while the schedule has room; what is left waits for the next
            // round (`new_pending` stays set until everything was read).
            new_pending = false;
            while schedule.len() < MAX_JOBS {
                let batch = store.notify_pending(unread, READ_BATCH);
                let Some(last) = batch.last() else {
                    break;
                };
                unread = last.seq + 1;
                let full = batch.len() == READ_BATCH;
                for p in batch {
                    let tokens = store.device_tokens(p.account, now_s);
                    actions.extend(schedule.offer(p, tokens, now));
                }
                if !full {
                    break;
                }
            }
            if schedule.len() >= MAX_JOBS {
                new_pending = !store.notify_pending(unread, 1).is_empty();
            }
            apply(&shared, actions, &mut finished, now);
        }
        for send in schedule.due(now, MAX_IN_FLIGHT - in_flight.len()) {
            let (client, url) = (client.clone(), url.clone());
            in_flight.spawn(async move {
                let outcome = post(client, url, send.token.clone()).await;
                (send, outcome)
            });
        }
        let sleep = schedule
            .next_due()
            .filter(|_| in_flight.len() < MAX_IN_FLIGHT)
            .into_iter()
            .chain(finished.due)
            .min()
            .map_or(Duration::from_secs(3600), |due| {
                Duration::from_millis(due.saturating_sub(now))
            });
        tokio::select! {
            _ = stop.changed() => {
                finished.flush(&shared);
                return;
            }
            changed = watch.changed() => {
                if changed.is_err() {
                    finished.flush(&shared);
                    return;
                }
                new_pending = true;
            }
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                if let Ok((send, outcome)) = done {
                    shared.metrics.push(match outcome {
                        Outcome::Sent => crate::metrics::PushResult::Sent,
                        Outcome::Gone => crate::metrics::PushResult::Gone,
                        Outcome::Failed => crate::metrics::PushResult::Failed,
                    });
                    let now = now_ms();
                    let actions = schedule.result(&send, outcome, now);
                    apply(&shared, actions, &mut finished, now);
                }
            }
            () = tokio::time::sleep(sleep) => {}
        }
    }
}
