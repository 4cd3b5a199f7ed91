//! FETCH / UID FETCH (RFC 3501 §6.4.5, RFC 7162 `CHANGEDSINCE`): first the `\Seen` update that
//! `BODY[]` and friends imply (a commit), then the responses, rendered by `imap::fetch` in
//! batches up to the output cap ([`FetchJob`]).

use super::super::command::{Command, FetchItem};
use super::super::fetch::{self, FetchCtx};
use super::super::session::{Blocked, Open, Session};
use super::super::sync::find;
use super::{Commit, Pending};
use crate::store::{flag_bits, AccountId, Flag, FlagMode, Op};

/// A FETCH waiting for its `\Seen` update.
#[derive(Debug)]
pub(in super::super) struct SeenThenFetch {
    account: AccountId,
    tag: String,
    cmd: Command,
    /// UIDs whose `\Seen` is being set.
    seen: Vec<u32>,
}

/// A FETCH in progress (see [`Session::run_fetch`]).
#[derive(Debug)]
pub(in super::super) struct FetchJob {
    account: AccountId,
    tag: String,
    uid: bool,
    items: Vec<FetchItem>,
    changed_since: Option<u64>,
    /// `(seq, uid)` to answer, in order.
    targets: Vec<(u32, u32)>,
    /// Index of the next target.
    next: usize,
    /// UIDs whose `\Seen` this FETCH set (sorted): their FLAGS are reported.
    seen: Vec<u32>,
    /// A body could not be read.
    failed: bool,
}

impl Session {
    /// `FETCH` / `UID FETCH`: set `\Seen` where the items imply it, then answer.
    pub(in super::super) fn fetch(&mut self, open: Open, tag: String, cmd: Command) {
        let Command::Fetch {
            uid,
            set,
            items,
            changed_since,
        } = &cmd
        else {
            return self.tagged(&tag, "BAD Unexpected command");
        };
        let targets = match self.targets(set, *uid) {
            Ok(t) => t,
            Err(e) => return self.tagged(&tag, e),
        };
        if changed_since.is_some() || items.contains(&FetchItem::ModSeq) {
            self.state.enable_condstore();
        }
        let mut seen = Vec::new();
        if !open.read_only && fetch::sets_seen(items) {
            if let Some(view) = self.view(open.account) {
                for (_, u) in &targets {
                    if find(&view, *u).is_some_and(|m| m.flags & flag_bits::SEEN == 0) {
                        seen.push(*u);
                    }
                }
            }
        }
        if seen.is_empty() {
            self.start_fetch(open.account, &tag, &cmd, &[]);
        } else {
            self.commit(
                Op::SetFlags {
                    account: open.account,
                    mailbox: open.mailbox,
                    uids: seen.clone(),
                    mode: FlagMode::Add,
                    flags: vec![Flag::Seen],
                    unchanged_since: None,
                },
                Pending::Fetch(SeenThenFetch {
                    account: open.account,
                    tag,
                    cmd,
                    seen,
                }),
            );
        }
    }

    /// The `\Seen` update committed; a failed one does not fail the FETCH.
    pub(super) fn seen_then_fetch_done(&mut self, p: SeenThenFetch, commit: &Commit) {
        let seen = if commit.is_ok() { p.seen } else { Vec::new() };
        self.start_fetch(p.account, &p.tag, &p.cmd, &seen);
    }

    fn start_fetch(&mut self, account: AccountId, tag: &str, cmd: &Command, seen: &[u32]) {
        let Command::Fetch {
            uid,
            set,
            items,
            changed_since,
        } = cmd
        else {
            return self.tagged(tag, "BAD Unexpected command");
        };
        let targets = match self.targets(set, *uid) {
            Ok(t) => t,
            Err(e) => return self.tagged(tag, e),
        };
        let mut seen = seen.to_vec();
        seen.sort_unstable();
        self.run_fetch(FetchJob {
            account,
            tag: tag.to_owned(),
            uid: *uid,
            items: items.clone(),
            changed_since: *changed_since,
            targets,
            next: 0,
            seen,
            failed: false,
        });
    }

    /// Render FETCH responses until done or the output cap is reached; then the job waits in
    /// `self.blocked` until the driver drained the output (a `FETCH 1:* BODY[]` over a large
    /// mailbox never sits in memory at once).
    pub(in super::super) fn run_fetch(&mut self, mut job: FetchJob) {
        let Some(view) = self.view(job.account) else {
            return self.tagged(&job.tag, "NO [NONEXISTENT] Mailbox was removed");
        };
        let needs_body = fetch::needs_body(&job.items);
        let condstore = self.state.condstore();
        while job.next < job.targets.len() {
            if self.output_backed_up() {
                self.blocked = Some(Blocked::Fetch(job));
                return;
            }
            let (seq, u) = job.targets[job.next];
            job.next += 1;
            let Some(meta) = find(&view, u) else { continue };
            if job.changed_since.is_some_and(|c| meta.modseq <= c) {
                continue;
            }
            let body = if needs_body {
                match self.shared.store.read(meta.body) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        tracing::warn!(error = %e, uid = u, "cannot read message body");
                        job.failed = true;
                        continue;
                    }
                }
            } else {
                None
            };
            let force_flags = job.seen.binary_search(&u).is_ok();
            let with_flags = force_flags || job.items.contains(&FetchItem::Flags);
            let recent = self
                .state
                .selected()
                .and_then(|sel| sel.msgs.get(seq as usize - 1))
                .is_some_and(|k| k.recent);
            let ctx = FetchCtx {
                seq,
                meta,
                keywords: &view.keywords,
                recent,
                raw: body.as_deref(),
                force_uid: job.uid,
                force_modseq: job.changed_since.is_some() || (condstore && with_flags),
                force_flags,
            };
            fetch::render(&mut self.out, &ctx, &job.items);
            if with_flags {
                if let Some(k) = self
                    .state
                    .selected_mut()
                    .and_then(|sel| sel.msgs.get_mut(seq as usize - 1))
                {
                    k.flags = meta.flags;
                    k.modseq = meta.modseq;
                }
            }
        }
        if job.failed {
            self.sync(job.uid);
            return self.tagged(&job.tag, "NO [SERVERBUG] Some messages could not be read");
        }
        self.finish(&job.tag, "OK Fetch completed", job.uid);
    }
}
