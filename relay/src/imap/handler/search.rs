//! SEARCH / UID SEARCH (RFC 3501 §6.4.4, RFC 7162 `MODSEQ`), evaluated by `imap::search` over
//! the client's view of the selected mailbox.

use super::super::command::SearchKey;
use super::super::search::{self, Candidate};
use super::super::session::Session;
use super::super::sync::find;
use crate::store::AccountId;

impl Session {
    /// `SEARCH key` / `UID SEARCH key`
    pub(in super::super) fn search(
        &mut self,
        account: AccountId,
        tag: &str,
        uid: bool,
        key: &SearchKey,
    ) {
        if search::uses_modseq(key) {
            self.state.enable_condstore();
        }
        let Some(view) = self.view(account) else {
            return self.tagged(tag, "NO [NONEXISTENT] Mailbox was removed");
        };
        let Some(sel) = self.state.selected() else {
            return;
        };
        let max_seq = sel.msgs.len() as u32;
        let max_uid = sel.msgs.last().map_or(0, |k| k.uid);
        let store = &self.shared.store;
        let mut hits = Vec::new();
        let mut max_modseq = 0;
        for (i, k) in sel.msgs.iter().enumerate() {
            let Some(meta) = find(&view, k.uid) else {
                continue;
            };
            let mut load = || store.read(meta.body).ok();
            let mut c = Candidate {
                seq: i as u32 + 1,
                max_seq,
                max_uid,
                meta,
                recent: k.recent,
                keywords: &view.keywords,
                load: &mut load,
                raw: None,
            };
            if search::matches(key, &mut c) {
                hits.push(if uid { meta.uid } else { i as u32 + 1 });
                max_modseq = max_modseq.max(meta.modseq);
            }
        }
        let mut line = String::from("* SEARCH");
        for h in &hits {
            line.push_str(&format!(" {h}"));
        }
        if search::uses_modseq(key) && !hits.is_empty() {
            line.push_str(&format!(" (MODSEQ {max_modseq})"));
        }
        self.line(&line);
        self.finish(tag, "OK Search completed", uid);
    }
}
