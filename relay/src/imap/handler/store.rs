//! STORE / UID STORE (RFC 3501 §6.4.6, RFC 7162 `UNCHANGEDSINCE` and `[MODIFIED]`): the flag
//! commit, then the `FETCH (FLAGS ..)` responses for the messages it touched.

use super::super::command::Command;
use super::super::response;
use super::super::session::{Open, Session};
use super::super::sync::find;
use super::{Commit, Pending};
use crate::store::{AccountId, Op, OpResult};

/// A STORE waiting for its commit.
#[derive(Debug)]
pub(in super::super) struct StoreDone {
    account: AccountId,
    tag: String,
    uid: bool,
    silent: bool,
    /// `(seq, uid)` the STORE applies to.
    targets: Vec<(u32, u32)>,
}

impl Session {
    /// `STORE set [+-]FLAGS[.SILENT] [(UNCHANGEDSINCE n)] (flags)` and its UID form.
    pub(in super::super) fn store(&mut self, open: Open, tag: String, cmd: Command) {
        let Command::Store {
            uid,
            set,
            mode,
            silent,
            flags,
            unchanged_since,
        } = cmd
        else {
            return self.tagged(&tag, "BAD Unexpected command");
        };
        if open.read_only {
            return self.tagged(&tag, "NO [READ-ONLY] Mailbox is read-only");
        }
        if unchanged_since.is_some() {
            self.state.enable_condstore();
        }
        let targets = match self.targets(&set, uid) {
            Ok(t) => t,
            Err(e) => return self.tagged(&tag, e),
        };
        if targets.is_empty() {
            return self.finish(&tag, "OK Store completed", uid);
        }
        self.commit(
            Op::SetFlags {
                account: open.account,
                mailbox: open.mailbox,
                uids: targets.iter().map(|t| t.1).collect(),
                mode,
                flags,
                unchanged_since,
            },
            Pending::Store(StoreDone {
                account: open.account,
                tag,
                uid,
                silent,
                targets,
            }),
        );
    }

    /// The flags were set: report them (unless `.SILENT`, where CONDSTORE still reports a new
    /// mod-sequence), and `[MODIFIED set]` for what `UNCHANGEDSINCE` refused.
    pub(super) fn store_done(&mut self, p: StoreDone, commit: Commit) {
        let StoreDone {
            account,
            tag,
            uid,
            silent,
            targets,
        } = p;
        let modified = match commit {
            Ok(OpResult::FlagsSet { modified, .. }) => modified,
            Ok(_) => Vec::new(),
            Err(e) => return self.store_error(&tag, &e),
        };
        if let Some(view) = self.view(account) {
            let condstore = self.state.condstore();
            let mut o = Vec::new();
            if let Some(sel) = self.state.selected_mut() {
                sel.sync_keywords(&view, &mut o);
                for (seq, u) in &targets {
                    let Some(m) = find(&view, *u) else { continue };
                    let Some(k) = sel.msgs.get_mut(*seq as usize - 1) else {
                        continue;
                    };
                    if modified.contains(u) {
                        continue;
                    }
                    if !silent || (condstore && k.modseq != m.modseq) {
                        o.extend_from_slice(format!("* {seq} FETCH (FLAGS ").as_bytes());
                        response::flags_recent(&mut o, m.flags, k.recent, &view.keywords);
                        if uid {
                            o.extend_from_slice(format!(" UID {u}").as_bytes());
                        }
                        if condstore {
                            o.extend_from_slice(format!(" MODSEQ ({})", m.modseq).as_bytes());
                        }
                        o.extend_from_slice(b")\r\n");
                        k.flags = m.flags;
                        k.modseq = m.modseq;
                    } else if silent && k.flags != m.flags {
                        // Our own silent change: the client knows the new flags.
                        k.flags = m.flags;
                        k.modseq = m.modseq;
                    }
                }
            }
            self.out.extend_from_slice(&o);
        }
        if modified.is_empty() {
            self.finish(&tag, "OK Store completed", uid);
        } else {
            let mut nums: Vec<u32> = if uid {
                modified
            } else {
                targets
                    .iter()
                    .filter(|t| modified.contains(&t.1))
                    .map(|t| t.0)
                    .collect()
            };
            nums.sort_unstable();
            let set = response::seq_set(&nums);
            self.sync(uid);
            self.tagged(
                &tag,
                &format!("OK [MODIFIED {set}] Conditional STORE failed"),
            );
        }
    }
}
