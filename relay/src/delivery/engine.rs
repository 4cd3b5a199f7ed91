//! The delivery engine: takes queued messages from the store to other relays and mail servers.
//!
//! One thread with its own tokio runtime (outbound delivery never runs on the connection workers,
//! so a slow remote server costs no client a wake-up). The [`Scheduler`] decides which
//! destination is due; for each due destination a task walks its queue entries oldest first in
//! batches, signs each message with the relay's DKIM key right before it leaves, hands the batch
//! in [`PARALLEL`] shares to [`Delivery::attempt`] (MX resolution, `/mxdeliv` then SMTP,
//! connection reuse; the shares at once) and commits what became of every recipient:
//!
//! - delivered, or failed for good (5xx, null MX, no such domain, expired): `QueueDone` for
//!   those recipients, in one `Op::Group` with the bounce to the sender (delivered locally when
//!   the sender is ours, queued to the sender's domain otherwise; never for a bounce);
//! - deferred (4xx, no server reachable): left in the queue; the destination backs off as a
//!   whole and its remaining entries wait for the next attempt.
//!
//! An entry older than `maximal_queue_lifetime` bounces after its next failed attempt (the
//! scheduler never waits past the oldest entry's expiry). Memory is per destination and per
//! batch in flight: the queue itself stays on disk, its index in the store.
//!
//! New entries wake the engine through
//! [`Mailstore::queue_watch`](crate::store::Mailstore::queue_watch); it then compares each
//! destination's count with what it saw and schedules the ones that grew.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{summarize, Attempt, Delivery, Message};
use crate::io::background::Background;
use crate::outbound::dsn::{self, FailedRecipient};
use crate::outbound::schedule::{AttemptResult, RetryPolicy, Scheduler, DEFAULT_MAX_IN_FLIGHT};
use crate::outbound::{reply_text, Outcome};
use crate::shared::Shared;
use crate::smtp::reply::Reply;
use crate::store::{Op, OpResult, QueueEntry, QueueId};

/// Entries attempted together, spread over [`PARALLEL`] connections.
pub const BATCH: usize = 32;
/// Connections to one destination at once (each an SMTP session or a keep-alive HTTPS
/// connection carrying a share of the batch). One connection would wait for the receiver's
/// `fsync` once per message; several let the receiver's group commit take their messages
/// together. Postfix allows 20 per destination by default; 4 is gentle on small servers.
pub const PARALLEL: usize = 4;

/// A running engine; stopped (its thread joined) when dropped or with [`Engine::stop`].
pub struct Engine(Background);

impl Engine {
    /// Starts the engine thread over `shared.store`.
    ///
    /// # Errors
    /// The delivery set-up (extra CA file) or the thread could not be created.
    pub fn start(shared: Arc<Shared>, delivery: Delivery) -> std::io::Result<Engine> {
        Background::spawn("delivery", move |stop_rx| {
            // Signing runs on the blocking pool: one thread per core at most.
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(cores)
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("delivery runtime: {e}");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, run(shared, Rc::new(delivery), stop_rx));
        })
        .map(Engine)
    }

    /// Stops taking new work and waits for the thread (attempts in flight are abandoned: their
    /// entries stay queued and are tried again after a restart).
    pub fn stop(self) {
        self.0.stop();
    }
}

fn now_ms() -> u64 {
    crate::io::now_ms()
}

/// Everything the destination tasks share on the engine thread.
struct Ctx {
    shared: Arc<Shared>,
    delivery: Rc<Delivery>,
    scheduler: RefCell<Scheduler>,
    /// Entries per destination as last seen (to notice growth).
    seen: RefCell<HashMap<String, usize>>,
    /// Wakes the main loop when a destination task finishes.
    finished: tokio::sync::Notify,
}

async fn run(
    shared: Arc<Shared>,
    delivery: Rc<Delivery>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let policy = RetryPolicy::new(shared.config.maximal_queue_lifetime_secs);
    let mut watch = shared.store.queue_watch();
    watch.mark_unchanged();
    let mut retry = shared.delivery_retry.subscribe();
    retry.mark_unchanged();
    let ctx = Rc::new(Ctx {
        shared,
        delivery,
        scheduler: RefCell::new(Scheduler::new(policy, DEFAULT_MAX_IN_FLIGHT)),
        seen: RefCell::new(HashMap::new()),
        finished: tokio::sync::Notify::new(),
    });
    let queued = ctx.shared.store.queue_len();
    if queued > 0 {
        tracing::info!(queued, "delivery: resuming the queue");
    }
    loop {
        ctx.notice_new_entries();
        let now = now_ms();
        loop {
            let Some(dest) = ctx.scheduler.borrow_mut().next_due(now) else {
                break;
            };
            let ctx = ctx.clone();
            tokio::task::spawn_local(async move {
                let (result, oldest) = ctx.attempt_destination(&dest).await;
                let now = now_ms();
                ctx.scheduler
                    .borrow_mut()
                    .finished(&dest, result, oldest, now);
                if oldest.is_none() {
                    ctx.seen.borrow_mut().remove(&dest);
                }
                ctx.finished.notify_one();
            });
        }
        let wake = ctx.scheduler.borrow().next_wakeup();
        let sleep = async {
            match wake {
                Some(at) => {
                    let wait = at.saturating_sub(now_ms());
                    tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = watch.changed() => {
                if changed.is_err() {
                    return; // the store is gone
                }
            }
            () = ctx.finished.notified() => {}
            changed = retry.changed() => {
                if changed.is_ok() {
                    let dest = retry.borrow_and_update().clone();
                    let dest = (!dest.is_empty()).then_some(dest.as_str());
                    tracing::info!(destination = dest.unwrap_or("all"), "delivery: retry now");
                    ctx.scheduler.borrow_mut().retry_now(dest, now_ms());
                }
            }
            () = sleep => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

impl Ctx {
    /// Schedules every destination that has more entries than last seen (new mail).
    fn notice_new_entries(&self) {
        let now = now_ms();
        let mut seen = self.seen.borrow_mut();
        let mut scheduler = self.scheduler.borrow_mut();
        let current = self.shared.store.queue_destinations();
        let mut alive = std::collections::HashSet::with_capacity(current.len());
        for d in current {
            let before = seen.insert(d.name.clone(), d.entries);
            if before.is_none_or(|n| d.entries > n) {
                scheduler.enqueue(&d.name, now);
            }
            alive.insert(d.name);
        }
        // Destinations emptied from outside (an operator dropped their entries).
        seen.retain(|d, _| {
            let keep = alive.contains(d);
            if !keep {
                scheduler.forget(d);
            }
            keep
        });
    }

    /// One attempt on `dest`: every entry, oldest first, in batches, until the destination
    /// defers. Returns how it went and the creation time of the oldest entry left (ms).
    async fn attempt_destination(&self, dest: &str) -> (AttemptResult, Option<u64>) {
        let store = &self.shared.store;
        let mut after: Option<QueueId> = None;
        let mut result = AttemptResult::Done;
        loop {
            let ids = store.queue_ids(dest, after, BATCH);
            let Some(last) = ids.last() else {
                break;
            };
            after = Some(*last);
            let entries: Vec<QueueEntry> = ids
                .iter()
                .filter_map(|id| match store.queue_entry(*id) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        tracing::error!(id = %id, "delivery: unreadable queue entry: {e}");
                        None
                    }
                })
                .filter(|e| e.pending().next().is_some())
                .collect();
            if entries.is_empty() {
                continue;
            }
            let messages: Vec<Message> =
                futures_util::future::join_all(entries.iter().map(|e| self.message(e))).await;
            let share = messages.len().div_ceil(PARALLEL).max(1);
            let attempts: Vec<Attempt> = futures_util::future::join_all(
                messages
                    .chunks(share)
                    .map(|part| self.delivery.attempt(dest, part, rand::random())),
            )
            .await
            .into_iter()
            .flatten()
            .collect();
            let batch = summarize(&attempts);
            // Committed together: the store's group commit takes them in one sync.
            futures_util::future::join_all(
                entries
                    .iter()
                    .zip(&attempts)
                    .map(|(entry, attempt)| self.settle(entry, attempt)),
            )
            .await;
            if batch != AttemptResult::Done {
                // The destination defers: the rest waits for the next attempt.
                result = batch;
                break;
            }
        }
        let oldest = store
            .queue_ids(dest, None, 1)
            .first()
            .and_then(|id| store.queue_entry(*id).ok())
            .map(|e| u64::try_from(e.created).unwrap_or(0).saturating_mul(1000));
        (result, oldest)
    }

    /// The message of `entry` for its pending recipients, DKIM-signed now. Signing (RSA-2048,
    /// about a millisecond) runs on the runtime's blocking pool, so the messages of a batch are
    /// signed on every core at once rather than one after another on this thread.
    async fn message(&self, entry: &QueueEntry) -> Message {
        let recipients = entry.pending().map(|(_, a)| a.to_owned()).collect();
        let raw = Bytes::copy_from_slice(&entry.body);
        let body = match self.shared.dkim.clone() {
            Some(signer) => {
                let unsigned = raw.clone();
                let now = now_ms() / 1000;
                let signed = tokio::task::spawn_blocking(move || signer.sign(&unsigned, now)).await;
                match signed {
                    Ok(Ok(mut header)) => {
                        self.shared.metrics.dkim_signed();
                        header.extend_from_slice(&raw);
                        Bytes::from(header)
                    }
                    Ok(Err(e)) => {
                        // Sent unsigned: the receiver decides (a chatmail relay refuses it, the
                        // sender gets the bounce). Only a message without From fails here, and
                        // the submission gate refuses those.
                        tracing::warn!(id = %entry.id, "delivery: not DKIM-signed: {e}");
                        raw
                    }
                    Err(e) => {
                        tracing::error!(id = %entry.id, "delivery: signing task failed: {e}");
                        raw
                    }
                }
            }
            None => raw,
        };
        Message {
            id: entry.id.to_string(),
            sender: entry.sender.clone(),
            recipients,
            body,
        }
    }

    /// Commits what became of `entry`'s recipients in `attempt`: finished ones are done, failed
    /// ones (and, once the entry expired, deferred ones) bounce.
    async fn settle(&self, entry: &QueueEntry, attempt: &Attempt) {
        let now = now_ms();
        let policy = *self.scheduler.borrow().policy();
        let created_ms = u64::try_from(entry.created)
            .unwrap_or(0)
            .saturating_mul(1000);
        let expired = policy.is_expired(created_ms, now);
        let pending: Vec<(u32, &str)> = entry.pending().collect();
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let metrics = &self.shared.metrics;
        for ((index, rcpt), outcome) in pending.iter().zip(&attempt.outcomes) {
            metrics.remote(
                match outcome {
                    Outcome::Delivered => crate::metrics::Remote::Delivered,
                    Outcome::Permanent(_) => crate::metrics::Remote::Bounced,
                    Outcome::Temporary(_) if expired => crate::metrics::Remote::Bounced,
                    Outcome::Temporary(_) => crate::metrics::Remote::Deferred,
                },
                1,
            );
            match outcome {
                Outcome::Delivered => done.push(*index),
                Outcome::Permanent(reply) => {
                    done.push(*index);
                    failed.push(failed_recipient(rcpt, reply, attempt, false));
                }
                Outcome::Temporary(reply) if expired => {
                    done.push(*index);
                    failed.push(failed_recipient(rcpt, reply, attempt, true));
                }
                Outcome::Temporary(_) => {}
            }
        }
        if done.is_empty() {
            return;
        }
        for f in &failed {
            tracing::info!(
                id = %entry.id,
                to = %f.recipient,
                status = if f.expired { "expired" } else { "bounced" },
                "delivery: {}",
                reply_text(&f.reply)
            );
        }
        let mut ops = vec![Op::QueueDone {
            id: entry.id,
            recipients: done,
        }];
        if let Some(op) = self.bounce(entry, &failed, now) {
            ops.push(op);
        }
        let op = if ops.len() == 1 {
            ops.remove(0)
        } else {
            Op::Group(ops)
        };
        let result = self.shared.store.commit(op).await;
        // A bounce to a local sender is a delivery to its INBOX.
        self.shared.metrics.store_result(&result);
        match result {
            Ok(OpResult::Group(results)) => {
                for r in results {
                    if let Err(e) = r {
                        tracing::error!(id = %entry.id, "delivery: committing the outcome: {e}");
                    }
                }
            }
            Ok(_) => {}
            // The entry stays queued and is tried again: a duplicate delivery is possible, a
            // lost message is not.
            Err(e) => tracing::error!(id = %entry.id, "delivery: committing the outcome: {e}"),
        }
    }

    /// The store op that gets the notification for `failed` to `entry`'s sender: delivered
    /// locally when the sender is ours, queued to its domain otherwise (as a bounce, `<>`);
    /// nothing for a bounce or when nothing failed.
    fn bounce(&self, entry: &QueueEntry, failed: &[FailedRecipient], now_ms: u64) -> Option<Op> {
        let config = &self.shared.config;
        let domain = config.address_domain();
        let now_unix = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        let message_id = format!(
            "{}.{}@{}",
            entry.id,
            now_ms,
            domain.trim_matches(['[', ']'])
        );
        let body = dsn::build(&dsn::Bounce {
            domain: &domain,
            sender: &entry.sender,
            failed,
            original: &entry.body,
            date_unix: now_unix,
            message_id: &message_id,
            arrival_unix: Some(entry.created),
        })?;
        let sender = entry.sender.to_ascii_lowercase();
        let (_, sender_domain) = sender.rsplit_once('@')?;
        if sender_domain == domain {
            let Some(account) = self.shared.store.account(&sender) else {
                tracing::info!(id = %entry.id, "delivery: no bounce, the sender's account is gone");
                return None;
            };
            return Some(Op::Deliver {
                recipients: vec![account.id],
                sender: None,
                internal_date: now_unix,
                body,
            });
        }
        Some(Op::Enqueue {
            sender: String::new(),
            created: now_unix,
            destinations: vec![(sender_domain.to_owned(), vec![sender.clone()])],
            body,
        })
    }
}

fn failed_recipient(
    rcpt: &str,
    reply: &Reply,
    attempt: &Attempt,
    expired: bool,
) -> FailedRecipient {
    FailedRecipient {
        recipient: rcpt.to_owned(),
        reply: reply.clone(),
        remote_mta: attempt.host.clone(),
        expired,
    }
}
