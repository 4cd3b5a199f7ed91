//! The single writer thread: group commit.
//!
//! It takes every queued request, validates each [`Op`] against its private copy of the index
//! (which already includes the earlier ops of the same batch), assigns ids/UIDs/modseqs, places
//! the records in the log (that planning is per record kind, in `record/`, through
//! [`Planner`]), writes the batch and `fdatasync`s once, then applies the same records
//! to the index readers share, wakes watchers and completes the callers.
//!
//! The private index is a second copy of the shared one, kept equal by applying the same records
//! to both; it lets validation see uncommitted ops without readers ever seeing them, and never
//! holds the shared lock during I/O.
//!
//! # Failing writes
//! The writer is `Healthy` or `Failing` (since when, why). A batch that meets an I/O error
//! ([`Error::Io`], [`Error::NoSpace`]) is undone: every op of it gets the error (a temporary
//! one for the sessions), the log is cut back to where the batch began (`Log::rollback`: the
//! segments it created are deleted, the bytes it wrote are zeroed and synced, so neither
//! recovery nor later appends see them; the page cache after a failed `fdatasync` is not
//! trusted, the zeros are written over it) and the private index is copied again from the
//! shared one, which never saw the batch. The writer then is `Failing` and keeps serving: each
//! new batch is tried again, and while failing a probe (finish the rollback, create the next
//! segment ahead, restore the space reserve) runs before every batch and on a timer with
//! backoff; when it succeeds the writer is `Healthy` again. One log line on entering `Failing`,
//! one on recovering.
//!
//! A full disk does not fail a whole batch: before an op is planned, `Log::ensure_room` makes
//! room for a bound of what it writes, so an op the disk has no room for is refused alone with
//! [`Error::NoSpace`] before anything of it is placed, and the rest of the batch commits (the
//! preallocated rest of the active segment is still usable). Ops that free space (expunge,
//! delete account or mailbox, flag changes, which `\Deleted` needs, queue entries done) may use
//! the reserve.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::checkpoint;
use super::index::Index;
use super::log::{Log, Position};
use super::record::{self, is_io, Planner, Record};
use super::{AccountId, BodyRef, Error, Op, OpResult, Shared, StoreConfig};

/// Replayed records at open above which shutdown writes a checkpoint even without new writes.
const REPLAY_WORTH_CHECKPOINT: u64 = 1024;

/// Most ops in one group commit.
const MAX_BATCH_OPS: usize = 4096;
/// Message bytes after which a batch stops taking more ops (bounds the batch buffer).
const MAX_BATCH_BYTES: usize = 32 << 20;

/// Share of a segment (percent of `segment_size`) that live message bodies may fill at most for
/// the writer to move them out after a checkpoint (compaction, `record/body_move.rs`). A
/// quarter: the copy costs at most a quarter of a segment's writes and frees at least three
/// quarters of it.
const COMPACT_LIVE_PERCENT: u64 = 25;
/// Body bytes a compaction copies per batch of its own: a commit queued behind one waits for
/// about this much writing and one `fdatasync` (a whole 16 MiB at once stalled deliveries for
/// 80 ms in `store::tests::bench_compaction`).
const COMPACT_STEP_BYTES: u64 = 1 << 20;

/// A compaction in progress: the bodies of `segment` still to move, by offset.
struct Compaction {
    segment: u32,
    bodies: VecDeque<(u64, u32)>,
    /// Bytes and entries when it was chosen (for the log line at the end).
    live: u64,
    entries: u64,
}

/// First wait between probes while failing; doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest wait between probes while failing.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Whether writes currently succeed.
enum Health {
    Healthy,
    Failing {
        since: Instant,
        /// When to probe next without a batch.
        retry_at: Instant,
        backoff: Duration,
    },
}

/// A request to the writer thread.
pub enum Msg {
    /// A write.
    Op(Op, oneshot::Sender<Result<OpResult, Error>>),
    /// Write a checkpoint now.
    Checkpoint(mpsc::SyncSender<Result<(), Error>>),
    /// The consistent point of a backup (`backup.rs`), taken between batches.
    Backup(mpsc::SyncSender<Result<super::backup::Point, Error>>),
}

/// What a background checkpoint thread returns: its position, and the previous checkpoint's.
type BackgroundResult = (Position, Result<Option<Position>, Error>);

impl Msg {
    /// Message bytes the request will write.
    fn body_len(&self) -> usize {
        match self {
            Msg::Op(op, _) => op.body_len(),
            Msg::Checkpoint(_) | Msg::Backup(_) => 0,
        }
    }
}

/// The writer thread's state.
pub struct Writer {
    log: Log,
    index: Index,
    config: StoreConfig,
    shared: Arc<Shared>,
    index_dir: PathBuf,
    /// Position of the newest checkpoint written or loaded.
    last_checkpoint: Option<Position>,
    /// `log.appended` at the last checkpoint.
    appended_at_checkpoint: u64,
    /// Records replayed at open (a long replay is worth a checkpoint at shutdown).
    replayed: u64,
    /// A checkpoint being written by another thread: its position and outcome.
    background: Option<std::thread::JoinHandle<BackgroundResult>>,
    health: Health,
    /// The compaction in progress, a step after each batch and whenever no request waits.
    compaction: Option<Compaction>,
}

fn copy_io(e: &Error) -> Error {
    match e {
        Error::Io { op, path, source } => Error::Io {
            op,
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::NoSpace { op, path } => Error::NoSpace {
            op,
            path: path.clone(),
        },
        _ => Error::Closed,
    }
}

impl Writer {
    /// A writer continuing `log` with the replayed `index`.
    pub fn new(
        log: Log,
        index: Index,
        config: StoreConfig,
        shared: Arc<Shared>,
        index_dir: PathBuf,
        last_checkpoint: Option<Position>,
        replayed: u64,
    ) -> Self {
        Writer {
            log,
            index,
            config,
            shared,
            index_dir,
            last_checkpoint,
            appended_at_checkpoint: 0,
            replayed,
            background: None,
            health: Health::Healthy,
            compaction: None,
        }
    }

    /// Bytes of log after which the writer takes a checkpoint on its own.
    fn checkpoint_every(&self) -> u64 {
        self.config.segment_size.saturating_mul(4).max(1 << 20)
    }

    /// Run until every `Store` handle is gone (the channel closes).
    pub fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut pending = Vec::new();
        loop {
            let first = match self.health {
                // With a compaction in progress, its steps fill the time no request waits.
                Health::Healthy if self.compaction.is_some() => match rx.try_recv() {
                    Ok(m) => m,
                    Err(mpsc::TryRecvError::Empty) => {
                        self.compact_step(&mut pending);
                        continue;
                    }
                    Err(mpsc::TryRecvError::Disconnected) => break,
                },
                Health::Healthy => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
                Health::Failing { retry_at, .. } => {
                    let wait = retry_at.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(m) => m,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.probe();
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let mut bytes = first.body_len();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_OPS && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(m) => {
                        bytes += m.body_len();
                        batch.push(m);
                    }
                    Err(_) => break,
                }
            }
            if matches!(self.health, Health::Failing { .. }) {
                self.probe();
            }
            self.batch(batch, &mut pending);
            self.compact_step(&mut pending);
        }
        self.finish_background(true);
        // At shutdown: checkpoint if anything was written since the last one, or if this open
        // had to replay much.
        if self.log.appended > self.appended_at_checkpoint
            || self.replayed >= REPLAY_WORTH_CHECKPOINT
        {
            if let Err(e) = self.checkpoint() {
                tracing::warn!(error = %e, "store checkpoint at shutdown failed");
            }
        }
    }

    /// Plan, write, sync and publish one group commit, or undo it on an I/O error.
    fn batch(&mut self, batch: Vec<Msg>, pending: &mut Vec<Record>) {
        let mut completions = Vec::new();
        let mut checkpoints = Vec::new();
        let mut backups = Vec::new();
        let mut fatal: Option<Error> = self.log.ready().err();
        let mut refused: Option<Error> = None;
        if fatal.is_none() {
            self.log.begin();
        }
        for msg in batch {
            match msg {
                Msg::Op(op, done) => {
                    if fatal.is_some() {
                        completions.push((done, Err(Error::Closed)));
                        continue;
                    }
                    self.log.freeing = op.frees_space();
                    if let Err(e) = self.log.ensure_room(op.space_bound()) {
                        if matches!(e, Error::NoSpace { .. }) {
                            // Refused alone: nothing of it was placed.
                            refused = Some(copy_io(&e));
                            completions.push((done, Err(e)));
                        } else {
                            fatal = Some(copy_io(&e));
                            completions.push((done, Err(e)));
                        }
                        continue;
                    }
                    let res = self.plan(op, pending);
                    if let Err(e) = &res {
                        if is_io(e) {
                            fatal = Some(copy_io(e));
                        }
                    }
                    completions.push((done, res));
                }
                Msg::Checkpoint(done) => checkpoints.push(done),
                Msg::Backup(done) => backups.push(done),
            }
        }
        self.log.freeing = false;
        if fatal.is_none() {
            if let Err(e) = self.log.commit() {
                fatal = Some(e);
            }
        }
        if let Some(e) = fatal {
            if let Err(re) = self.log.rollback() {
                tracing::debug!(error = %re, "cutting back the failed batch failed, will retry");
            }
            pending.clear();
            self.index = self
                .shared
                .index
                .read()
                .expect("index lock should not be poisoned")
                .clone();
            self.shared.stats.failed_batches.fetch_add(1, Relaxed);
            self.failing(&e);
            for (done, _) in completions.drain(..) {
                let _ = done.send(Err(copy_io(&e)));
            }
            for done in checkpoints {
                let _ = done.send(Err(copy_io(&e)));
            }
            for done in backups {
                let _ = done.send(Err(copy_io(&e)));
            }
            return;
        }
        self.publish(pending);
        {
            let st = &self.shared.stats;
            st.batches.fetch_add(1, Relaxed);
            st.ops.fetch_add(completions.len() as u64, Relaxed);
            st.fsyncs.store(self.log.syncs, Relaxed);
            if let Some(d) = self.log.last_sync.take() {
                st.fsync.observe(d);
            }
            st.bytes_written.store(self.log.appended, Relaxed);
        }
        if let Some(e) = refused {
            self.failing(&e);
        }
        for (done, res) in completions.drain(..) {
            let _ = done.send(res);
        }
        if checkpoints.is_empty()
            && self.log.appended - self.appended_at_checkpoint >= self.checkpoint_every()
        {
            self.checkpoint_in_background();
        }
        self.finish_background(false);
        for done in checkpoints {
            let _ = done.send(self.checkpoint());
        }
        for done in backups {
            let _ = done.send(Ok(self.backup_point()));
        }
    }

    /// The consistent point of a backup, at a batch boundary (the private index equals the
    /// shared one, everything before `log.position()` is synced): a snapshot of the index (the
    /// accounts flattened, the queue shared), the position, and the maps of the segments that
    /// hold its bodies plus the active one. This is all the writer does for a backup; the
    /// copying happens on the caller's thread.
    fn backup_point(&mut self) -> super::backup::Point {
        let started = Instant::now();
        let pos = self.log.position();
        let snapshot = checkpoint::snapshot(&self.index, pos);
        let maps = {
            let segs = self
                .shared
                .segments
                .read()
                .expect("segment map lock should not be poisoned");
            segs.iter()
                .filter(|(s, _)| {
                    **s == pos.segment || (**s < pos.segment && self.index.seg_refs.contains_key(s))
                })
                .map(|(s, m)| (*s, m.clone()))
                .collect()
        };
        super::backup::Point {
            snapshot,
            position: pos,
            maps,
            accounts: self.index.accounts.len() as u64,
            messages: self.index.accounts.values().map(|a| a.messages).sum(),
            queued: self.index.queue.len(),
            held: started.elapsed(),
        }
    }

    /// Enter (or stay in) `Failing` after `e`.
    fn failing(&mut self, e: &Error) {
        let now = Instant::now();
        match &mut self.health {
            Health::Healthy => {
                tracing::error!(error = %e, "store writes failing; refusing writes with a temporary error and retrying");
                self.shared.failing.store(true, Relaxed);
                self.health = Health::Failing {
                    since: now,
                    retry_at: now + FIRST_RETRY,
                    backoff: FIRST_RETRY,
                };
            }
            Health::Failing {
                retry_at, backoff, ..
            } => {
                tracing::debug!(error = %e, "store write failed again");
                *backoff = (*backoff * 2).min(MAX_RETRY);
                *retry_at = now + *backoff;
            }
        }
    }

    /// While failing: try what the next batches will need; back to `Healthy` if it all works.
    fn probe(&mut self) {
        let Health::Failing { since, .. } = self.health else {
            return;
        };
        let res = self
            .log
            .ready()
            .and_then(|()| self.log.prepare_spare())
            .and_then(|()| self.log.restore_reserve());
        match res {
            Ok(()) => {
                tracing::warn!(failing_for = ?since.elapsed(), "store writes recovered");
                self.shared.failing.store(false, Relaxed);
                self.health = Health::Healthy;
            }
            Err(e) => self.failing(&e),
        }
    }

    /// Apply committed records to the shared index and wake watchers (IDLE; the queue's when
    /// entries were added).
    fn publish(&mut self, pending: &mut Vec<Record>) {
        if pending.is_empty() {
            return;
        }
        let mut touched = BTreeSet::new();
        let queued = {
            let mut index = self
                .shared
                .index
                .write()
                .expect("index lock should not be poisoned");
            let before = (index.queue.next_seq(), index.queue.len());
            let notify_before = index.notify.next_seq();
            for rec in pending.iter() {
                if let Some(a) = index.apply(rec) {
                    touched.insert(a);
                }
                rec.also_wakes(&mut touched);
            }
            // The mailboxes the batch changed: the writer's copy takes the readers' chunks of
            // them, so that messages cost their memory once (see `messages.rs`). A compaction
            // step changes mailboxes of any account without a modseq.
            let moved_bodies = pending.iter().any(|r| matches!(r, Record::BodyMove(_)));
            let changed: Vec<AccountId> = if moved_bodies {
                index.accounts.keys().copied().collect()
            } else {
                touched.iter().copied().collect()
            };
            for id in changed {
                let (Some(mine), Some(theirs)) =
                    (self.index.accounts.get_mut(&id), index.accounts.get(&id))
                else {
                    continue;
                };
                for (mb_id, mb) in &mut mine.mailboxes {
                    if let Some(other) = theirs.mailboxes.get(mb_id) {
                        mb.messages.share_from(&other.messages);
                    }
                }
            }
            let after = (index.queue.next_seq(), index.queue.len());
            if after != before {
                // Both copies hold the same entries now: share the readers' chunks again, so
                // that the queue costs its memory once (see `queue.rs`).
                self.index.queue.share_from(&index.queue);
            }
            let notify_after = index.notify.next_seq();
            (
                (after.0 != before.0).then_some(after.0),
                (notify_after != notify_before).then_some(notify_after),
            )
        };
        let (queued, notified) = queued;
        pending.clear();
        let index = &self.index;
        self.shared.watchers.wake(touched, |a| index.modseq(a));
        if let Some(next) = queued {
            self.shared.queue_watch.send_replace(next);
        }
        if let Some(next) = notified {
            self.shared.notify_watch.send_replace(next);
        }
    }

    /// Write a checkpoint of the committed index (called between batches, when the private
    /// index equals the shared one), then delete segments no longer needed.
    pub fn checkpoint(&mut self) -> Result<(), Error> {
        self.finish_background(true);
        let pos = self.log.position();
        self.appended_at_checkpoint = self.log.appended;
        if self.last_checkpoint == Some(pos) {
            return Ok(());
        }
        let previous = checkpoint::write(&self.index_dir, &self.index, pos)?;
        self.last_checkpoint = Some(pos);
        self.remove_segments(previous)
    }

    /// Start writing a checkpoint on another thread (the periodic one): the snapshot is taken
    /// here, at a batch boundary; serializing and syncing it does not delay commits.
    fn checkpoint_in_background(&mut self) {
        if self.background.is_some() {
            return;
        }
        let pos = self.log.position();
        self.appended_at_checkpoint = self.log.appended;
        if self.last_checkpoint == Some(pos) {
            return;
        }
        let cp = checkpoint::snapshot(&self.index, pos);
        let dir = self.index_dir.clone();
        let spawned = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || (pos, checkpoint::write_snapshot(&dir, cp)));
        match spawned {
            Ok(h) => self.background = Some(h),
            Err(e) => tracing::warn!(error = %e, "cannot start checkpoint thread"),
        }
    }

    /// Collect a finished background checkpoint (or wait for it) and remove the segments it
    /// made unnecessary.
    fn finish_background(&mut self, wait: bool) {
        if !wait && !self.background.as_ref().is_some_and(|h| h.is_finished()) {
            return;
        }
        let Some(h) = self.background.take() else {
            return;
        };
        match h.join() {
            Ok((pos, Ok(previous))) => {
                self.last_checkpoint = Some(pos);
                if let Err(e) = self.remove_segments(previous) {
                    tracing::warn!(error = %e, "removing old segments failed");
                }
            }
            Ok((_, Err(e))) => tracing::warn!(error = %e, "store checkpoint failed"),
            Err(_) => tracing::error!("store checkpoint thread panicked"),
        }
    }

    /// Delete segments before the previous checkpoint that hold no live body, after choosing a
    /// segment to compact if one is worth it.
    fn remove_segments(&mut self, previous: Option<Position>) -> Result<(), Error> {
        if self.compaction.is_none() {
            self.compaction = self.choose_compaction();
        }
        let Some(previous) = previous else {
            return Ok(());
        };
        let refs = &self.index.seg_refs;
        let removed = self
            .log
            .remove_unused(previous.segment, |s| refs.contains_key(&s))?;
        tracing::debug!(?previous, removed, "old segments removed");
        Ok(())
    }

    /// The old segment whose live message bodies are the smallest share of it, if that share
    /// is at most [`COMPACT_LIVE_PERCENT`] and no queued message is in it, with its bodies. Two
    /// passes over the index's messages (bodies a COPY shares are counted per entry: the share
    /// is overrated, never underrated).
    fn choose_compaction(&self) -> Option<Compaction> {
        let active = self.log.position().segment;
        let mut live: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        let messages = || {
            self.index
                .accounts
                .values()
                .flat_map(|acc| acc.mailboxes.values())
                .flat_map(|mb| mb.messages.iter())
        };
        for m in messages().filter(|m| m.body.segment < active) {
            let e = live.entry(m.body.segment).or_default();
            e.0 += u64::from(m.body.len);
            e.1 += 1;
        }
        let limit = self
            .config
            .segment_size
            .saturating_mul(COMPACT_LIVE_PERCENT)
            / 100;
        let (segment, (live, entries)) = live
            .into_iter()
            .filter(|(seg, (bytes, entries))| {
                // Fewer message entries than references: a queue entry holds one.
                *bytes <= limit && self.index.seg_refs.get(seg) == Some(entries)
            })
            .min_by_key(|(_, (bytes, _))| *bytes)?;
        let bodies: BTreeSet<(u64, u32)> = messages()
            .filter(|m| m.body.segment == segment)
            .map(|m| (m.body.offset, m.body.len))
            .collect();
        Some(Compaction {
            segment,
            bodies: bodies.into_iter().collect(),
            live,
            entries,
        })
    }

    /// Move the next [`COMPACT_STEP_BYTES`] of the compaction in progress, as a batch of its
    /// own (nobody waits for it; its outcome is logged), and choose the next segment when it is
    /// done. On a refusal or an I/O error the compaction is dropped; a later checkpoint chooses
    /// again.
    fn compact_step(&mut self, pending: &mut Vec<Record>) {
        if !matches!(self.health, Health::Healthy) {
            return;
        }
        let Some(c) = self.compaction.as_mut() else {
            return;
        };
        let mut bodies = Vec::new();
        let mut bytes = 0u64;
        while let Some(&(offset, len)) = c.bodies.front() {
            if !bodies.is_empty() && bytes + u64::from(len) > COMPACT_STEP_BYTES {
                break;
            }
            bytes += u64::from(len);
            bodies.push((offset, len));
            c.bodies.pop_front();
        }
        let (segment, last) = (c.segment, c.bodies.is_empty());
        let (done, mut outcome) = oneshot::channel();
        let op = Op::Compact { segment, bodies };
        self.batch(vec![Msg::Op(op, done)], pending);
        match outcome.try_recv() {
            Ok(Ok(_)) if last => {
                let c = self.compaction.take();
                self.shared.stats.compactions.fetch_add(1, Relaxed);
                let (live, entries) = c.map_or((0, 0), |c| (c.live, c.entries));
                tracing::info!(
                    segment,
                    live,
                    entries,
                    "segment compacted: its live messages copied, it goes at a later checkpoint"
                );
                // The next one right away: between two checkpoints several segments fill, and
                // each may keep a few unread messages. (Never the same segment again: its
                // entries all point elsewhere now, but a mistake here would copy forever.)
                self.compaction = self.choose_compaction().filter(|c| c.segment != segment);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(segment, error = %e, "segment compaction stopped");
                self.compaction = None;
            }
            Err(_) => self.compaction = None,
        }
    }

    /// Validate `op`, place its records and apply them to the private index (the planning
    /// itself is in the kind modules under `record/`).
    fn plan(&mut self, op: Op, pending: &mut Vec<Record>) -> Result<OpResult, Error> {
        let mut planning = Planning {
            log: &mut self.log,
            index: &mut self.index,
            max_mailbox_size: self.config.max_mailbox_size,
            max_mailbox_messages: self.config.max_mailbox_messages,
            pending,
        };
        record::plan(&mut planning, op)
    }
}

/// Planning of one batch: records go to the log buffer (written and synced by `Log::commit`),
/// to the private index, and to `pending` for the shared index after the sync.
struct Planning<'a> {
    log: &'a mut Log,
    index: &'a mut Index,
    max_mailbox_size: u64,
    max_mailbox_messages: u64,
    pending: &'a mut Vec<Record>,
}

impl Planner for Planning<'_> {
    fn index(&self) -> &Index {
        self.index
    }

    fn max_mailbox_size(&self) -> u64 {
        self.max_mailbox_size
    }

    fn max_mailbox_messages(&self) -> u64 {
        self.max_mailbox_messages
    }

    fn append_body(&mut self, body: &[u8]) -> Result<BodyRef, Error> {
        self.log.append_body(body)
    }

    /// Only bodies of segments before the active one: those are written and mapped whole
    /// (the active segment's newest bytes may still be in the batch buffer).
    fn copy_body(&mut self, body: BodyRef) -> Result<BodyRef, Error> {
        if body.segment >= self.log.position().segment {
            return Err(Error::Invalid("body in the active segment"));
        }
        let bytes = super::mapped_body(&self.log.segments(), body)?;
        self.log.append_body(&bytes)
    }

    fn emit(&mut self, rec: Record) -> Result<(), Error> {
        self.log.append_record(&rec)?;
        self.index.apply(&rec);
        self.pending.push(rec);
        Ok(())
    }
}
