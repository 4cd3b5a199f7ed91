//! Opening and closing a mailbox: SELECT/EXAMINE (RFC 3501 §6.3.1, RFC 7162 `(CONDSTORE)`),
//! UNSELECT (RFC 3691), CLOSE and EXPUNGE / UID EXPUNGE (RFC 4315).

use super::super::command::SeqSet;
use super::super::session::{Open, Session};
use super::super::sync::{flags_lines, RecentSource, Selected};
use super::{Commit, Pending};
use crate::store::{flag_bits, AccountId, Op};

impl Session {
    /// `SELECT` / `EXAMINE`. Any previously selected mailbox is deselected first, even if this
    /// one does not exist.
    pub(in super::super) fn select(
        &mut self,
        account: AccountId,
        tag: &str,
        name: &str,
        read_only: bool,
        condstore: bool,
    ) {
        self.state.set_selected(None);
        let Some(view) = self.shared.store.mailbox_view(account, name) else {
            return self.tagged(
                tag,
                &format!("NO [NONEXISTENT] Mailbox doesn't exist: {name}"),
            );
        };
        if condstore {
            self.state.enable_condstore();
        }
        let recent = RecentSource {
            table: &self.shared.recent,
            account,
        };
        let sel = Selected::open(&view, read_only, &recent);
        let mut o = Vec::new();
        flags_lines(&mut o, &view.keywords, read_only);
        o.extend_from_slice(
            format!(
                "* {} EXISTS\r\n* {} RECENT\r\n",
                view.messages.len(),
                sel.recent_count()
            )
            .as_bytes(),
        );
        if let Some(pos) = view
            .messages
            .iter()
            .position(|m| m.flags & flag_bits::SEEN == 0)
        {
            o.extend_from_slice(format!("* OK [UNSEEN {}] First unseen.\r\n", pos + 1).as_bytes());
        }
        o.extend_from_slice(
            format!(
                "* OK [UIDVALIDITY {}] UIDs valid\r\n* OK [UIDNEXT {}] Predicted next UID\r\n\
                 * OK [HIGHESTMODSEQ {}] Highest\r\n",
                view.uid_validity, view.uid_next, view.highest_modseq
            )
            .as_bytes(),
        );
        self.out.extend_from_slice(&o);
        self.state.set_selected(Some(sel));
        let text = if read_only {
            "OK [READ-ONLY] Examine completed"
        } else {
            "OK [READ-WRITE] Select completed"
        };
        self.tagged(tag, text);
    }

    /// `UNSELECT`: deselect without expunging.
    pub(in super::super) fn unselect(&mut self, tag: &str) {
        self.state.set_selected(None);
        self.tagged(tag, "OK Unselect completed");
    }

    /// `CLOSE`: expunge `\Deleted` messages (unless read-only), then deselect.
    pub(in super::super) fn close_mailbox(&mut self, open: Open, tag: String) {
        let deleted = if open.read_only {
            Vec::new()
        } else {
            self.deleted_uids(open.account, None)
        };
        if deleted.is_empty() {
            self.state.set_selected(None);
            self.tagged(&tag, "OK Close completed");
        } else {
            self.commit(
                Op::Expunge {
                    account: open.account,
                    mailbox: open.mailbox,
                    uids: deleted,
                },
                Pending::Close { tag },
            );
        }
    }

    /// CLOSE's expunge committed: deselect (without reporting the expunges).
    pub(super) fn close_mailbox_done(&mut self, tag: &str, commit: Commit) {
        self.state.set_selected(None);
        match commit {
            Ok(_) => self.tagged(tag, "OK Close completed"),
            Err(e) => self.store_error(tag, &e),
        }
    }

    /// `EXPUNGE` / `UID EXPUNGE set`
    pub(in super::super) fn expunge(&mut self, open: Open, tag: String, set: Option<&SeqSet>) {
        if open.read_only {
            return self.tagged(&tag, "NO [READ-ONLY] Mailbox is read-only");
        }
        let deleted = self.deleted_uids(open.account, set);
        if deleted.is_empty() {
            return self.finish(&tag, "OK Expunge completed", true);
        }
        self.commit(
            Op::Expunge {
                account: open.account,
                mailbox: open.mailbox,
                uids: deleted,
            },
            Pending::Expunge { tag },
        );
    }

    /// EXPUNGE committed: the `* n EXPUNGE` lines come from the sync.
    pub(super) fn expunge_done(&mut self, tag: &str, commit: Commit) {
        match commit {
            Ok(_) => self.finish(tag, "OK Expunge completed", true),
            Err(e) => self.store_error(tag, &e),
        }
    }

    /// UIDs flagged `\Deleted` in the store's view (within `set` of UIDs, if given).
    fn deleted_uids(&self, account: AccountId, set: Option<&SeqSet>) -> Vec<u32> {
        let Some(view) = self.view(account) else {
            return Vec::new();
        };
        let max = view.messages.last().map_or(0, |m| m.uid);
        view.messages
            .iter()
            .filter(|m| m.flags & flag_bits::DELETED != 0)
            .filter(|m| set.is_none_or(|s| s.contains(m.uid, max)))
            .map(|m| m.uid)
            .collect()
    }
}
