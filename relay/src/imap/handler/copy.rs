//! COPY / MOVE and their UID forms (RFC 3501 §6.4.7, RFC 6851), answered with `COPYUID`
//! (RFC 4315).

use super::super::command::SeqSet;
use super::super::response;
use super::super::session::{Open, Session};
use super::{Commit, Pending};
use crate::store::{Op, OpResult};

impl Session {
    /// `COPY set mailbox` / `MOVE set mailbox` (and `UID` forms)
    pub(in super::super) fn copy(
        &mut self,
        open: Open,
        tag: String,
        uid: bool,
        is_move: bool,
        set: &SeqSet,
        target: &str,
    ) {
        if is_move && open.read_only {
            return self.tagged(&tag, "NO [READ-ONLY] Mailbox is read-only");
        }
        let targets = match self.targets(set, uid) {
            Ok(t) => t,
            Err(e) => return self.tagged(&tag, e),
        };
        let Some(to) = self.mailbox_id(open.account, target) else {
            return self.tagged(
                &tag,
                &format!("NO [TRYCREATE] Mailbox doesn't exist: {target}"),
            );
        };
        if targets.is_empty() {
            let text = if is_move {
                "OK No messages found"
            } else {
                "OK Copy completed"
            };
            return self.finish(&tag, text, uid);
        }
        self.commit(
            Op::Copy {
                account: open.account,
                from: open.mailbox,
                to,
                uids: targets.iter().map(|t| t.1).collect(),
                remove_source: is_move,
            },
            Pending::Copy { tag, is_move },
        );
    }

    /// COPY/MOVE committed; a MOVE's expunges come from the sync.
    pub(super) fn copy_done(&mut self, tag: &str, is_move: bool, commit: Commit) {
        match commit {
            Ok(OpResult::Copied {
                uid_validity,
                mut pairs,
            }) => {
                pairs.sort_unstable();
                let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
                let dst: Vec<u32> = pairs.iter().map(|p| p.1).collect();
                let code = if pairs.is_empty() {
                    String::new()
                } else {
                    format!(
                        "[COPYUID {uid_validity} {} {}] ",
                        response::seq_set(&src),
                        response::seq_set(&dst)
                    )
                };
                if is_move {
                    if !code.is_empty() {
                        self.line(&format!("* OK {code}Moved UIDs."));
                    }
                    self.finish(tag, "OK Move completed", true);
                } else {
                    self.finish(tag, &format!("OK {code}Copy completed"), true);
                }
            }
            Ok(_) => self.finish(tag, "OK Copy completed", true),
            Err(e) => self.store_error(tag, &e),
        }
    }
}
