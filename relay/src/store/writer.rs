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
//! holds the shared lock during I/O. An I/O error stops the writer: every op of the failed batch
//! gets the error and later commits get [`Error::Closed`] (after a failed `fdatasync` the page
//! cache may not match the disk, so continuing would be unsafe).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::checkpoint;
use super::index::Index;
use super::log::{Log, Position};
use super::record::{self, Planner, Record};
use super::{BodyRef, Error, Op, OpResult, Shared, StoreConfig};

/// Replayed records at open above which shutdown writes a checkpoint even without new writes.
const REPLAY_WORTH_CHECKPOINT: u64 = 1024;

/// Most ops in one group commit.
const MAX_BATCH_OPS: usize = 4096;
/// Message bytes after which a batch stops taking more ops (bounds the batch buffer).
const MAX_BATCH_BYTES: usize = 32 << 20;

/// A request to the writer thread.
pub enum Msg {
    /// A write.
    Op(Op, oneshot::Sender<Result<OpResult, Error>>),
    /// Write a checkpoint now.
    Checkpoint(mpsc::SyncSender<Result<(), Error>>),
}

/// What a background checkpoint thread returns: its position, and the previous checkpoint's.
type BackgroundResult = (Position, Result<Option<Position>, Error>);

impl Msg {
    /// Message bytes the request will write.
    fn body_len(&self) -> usize {
        match self {
            Msg::Op(op, _) => op.body_len(),
            Msg::Checkpoint(_) => 0,
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
}

fn copy_io(e: &Error) -> Error {
    match e {
        Error::Io { op, path, source } => Error::Io {
            op,
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
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
        }
    }

    /// Bytes of log after which the writer takes a checkpoint on its own.
    fn checkpoint_every(&self) -> u64 {
        self.config.segment_size.saturating_mul(4).max(1 << 20)
    }

    /// Run until every `Store` handle is gone (the channel closes) or an I/O error.
    pub fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut pending = Vec::new();
        let mut completions = Vec::new();
        while let Ok(first) = rx.recv() {
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
            let mut fatal: Option<Error> = None;
            let mut checkpoints = Vec::new();
            for msg in batch {
                match msg {
                    Msg::Op(op, done) => {
                        if fatal.is_some() {
                            completions.push((done, Err(Error::Closed)));
                            continue;
                        }
                        let res = self.plan(op, &mut pending);
                        if let Err(e @ Error::Io { .. }) = &res {
                            fatal = Some(copy_io(e));
                        }
                        completions.push((done, res));
                    }
                    Msg::Checkpoint(done) => checkpoints.push(done),
                }
            }
            if fatal.is_none() {
                if let Err(e) = self.log.commit() {
                    fatal = Some(e);
                }
            }
            if let Some(e) = fatal {
                tracing::error!(error = %e, "store writer failed, closing the store");
                for (done, _) in completions.drain(..) {
                    let _ = done.send(Err(copy_io(&e)));
                }
                for done in checkpoints {
                    let _ = done.send(Err(copy_io(&e)));
                }
                // Wait for a checkpoint in flight (its snapshot was committed state), but
                // remove no segment: the private index may hold uncommitted changes.
                if let Some(h) = self.background.take() {
                    let _ = h.join();
                }
                return;
            }
            self.publish(&mut pending);
            {
                let st = &self.shared.stats;
                st.batches.fetch_add(1, Relaxed);
                st.ops.fetch_add(completions.len() as u64, Relaxed);
                st.fsyncs.store(self.log.syncs, Relaxed);
                st.bytes_written.store(self.log.appended, Relaxed);
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

    /// Apply committed records to the shared index and wake watchers.
    fn publish(&mut self, pending: &mut Vec<Record>) {
        if pending.is_empty() {
            return;
        }
        let mut touched = BTreeSet::new();
        {
            let mut index = self
                .shared
                .index
                .write()
                .expect("index lock should not be poisoned");
            for rec in pending.iter() {
                if let Some(a) = index.apply(rec) {
                    touched.insert(a);
                }
                rec.also_wakes(&mut touched);
            }
        }
        pending.clear();
        let index = &self.index;
        self.shared.watchers.wake(touched, |a| index.modseq(a));
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
            .spawn(move || (pos, checkpoint::write_snapshot(&dir, &cp)));
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

    /// Delete segments before the previous checkpoint that hold no live body.
    fn remove_segments(&mut self, previous: Option<Position>) -> Result<(), Error> {
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

    /// Validate `op`, place its records and apply them to the private index (the planning
    /// itself is in the kind modules under `record/`).
    fn plan(&mut self, op: Op, pending: &mut Vec<Record>) -> Result<OpResult, Error> {
        let mut planning = Planning {
            log: &mut self.log,
            index: &mut self.index,
            max_mailbox_size: self.config.max_mailbox_size,
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
    pending: &'a mut Vec<Record>,
}

impl Planner for Planning<'_> {
    fn index(&self) -> &Index {
        self.index
    }

    fn max_mailbox_size(&self) -> u64 {
        self.max_mailbox_size
    }

    fn append_body(&mut self, body: &[u8]) -> Result<BodyRef, Error> {
        self.log.append_body(body)
    }

    fn emit(&mut self, rec: Record) -> Result<(), Error> {
        self.log.append_record(&rec)?;
        self.index.apply(&rec);
        self.pending.push(rec);
        Ok(())
    }
}
