//! Mailbox synchronisation: the selected mailbox as the client knows it ([`Selected`]) and the
//! untagged responses that bring the client up to date with the store.
//!
//! NOOP, IDLE, the end of most commands and a store change seen while idling all report through
//! [`Selected::sync`]: `* n EXPUNGE` for messages gone (not while answering FETCH, STORE or SEARCH
//! by sequence number, RFC 3501 §7.4.1), `* n EXISTS` for new ones and `* n FETCH (FLAGS ..)` for
//! changed flags (with `MODSEQ` once CONDSTORE is on), and `* n RECENT` when the number of
//! messages that are `\Recent` for this session changed (see `super::recent`). This is the one
//! place that compares the client's view with the store's: QRESYNC (RFC 7162 §3.2: `* VANISHED`
//! instead of `EXPUNGE`, `SELECT (QRESYNC ..)` catching up from a known mod-sequence) goes here.

use super::command::types::STAR;
use super::command::SeqSet;
use super::recent::RecentUids;
use super::response;
use super::session::Session;
use crate::store::{flag_bits, AccountId, MailboxId, MailboxView, MessageMeta};

/// A message as the client currently knows it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Known {
    pub(super) uid: u32,
    pub(super) flags: u64,
    pub(super) modseq: u64,
    /// `\Recent` in this session: it was the first to see the message.
    pub(super) recent: bool,
}

impl Known {
    fn of(m: &MessageMeta, first_recent: u32) -> Self {
        Known {
            uid: m.uid,
            flags: m.flags,
            modseq: m.modseq,
            recent: m.uid >= first_recent,
        }
    }
}

/// Where a session learns which new messages are recent for it.
pub(super) struct RecentSource<'a> {
    pub(super) table: &'a RecentUids,
    pub(super) account: AccountId,
}

impl RecentSource<'_> {
    /// The first UID of `view` up to its last that is recent for this session: claimed if
    /// `read_only` is false, only looked at if it is (EXAMINE must not take `\Recent`).
    fn first_recent(&self, view: &MailboxView, read_only: bool) -> u32 {
        let max = view.messages.last().map_or(0, |m| m.uid);
        if read_only {
            self.table
                .first_unclaimed(self.account, view.id, view.uid_validity)
        } else {
            self.table
                .claim(self.account, view.id, view.uid_validity, max)
        }
    }
}

/// The selected mailbox as the client knows it.
#[derive(Debug)]
pub(super) struct Selected {
    pub(super) id: MailboxId,
    pub(super) read_only: bool,
    /// In sequence order (= UID order).
    pub(super) msgs: Vec<Known>,
    /// Keywords announced in `* FLAGS`.
    pub(super) keywords: usize,
    /// The `\Recent` count the client was last told.
    pub(super) recent_reported: usize,
}

impl Selected {
    /// The client's view right after SELECT/EXAMINE of `view`; a SELECT claims the messages no
    /// other session saw yet as recent.
    pub(super) fn open(view: &MailboxView, read_only: bool, recent: &RecentSource<'_>) -> Self {
        let first = if view.messages.is_empty() {
            u32::MAX
        } else {
            recent.first_recent(view, read_only)
        };
        let msgs: Vec<Known> = view.messages.iter().map(|m| Known::of(m, first)).collect();
        Selected {
            id: view.id,
            read_only,
            keywords: view.keywords.len(),
            recent_reported: msgs.iter().filter(|k| k.recent).count(),
            msgs,
        }
    }

    /// The number of messages that are `\Recent` in this session.
    pub(super) fn recent_count(&self) -> usize {
        self.msgs.iter().filter(|k| k.recent).count()
    }

    /// `* FLAGS` and `* OK [PERMANENTFLAGS]` again if the account's keywords changed.
    pub(super) fn sync_keywords(&mut self, view: &MailboxView, out: &mut Vec<u8>) {
        if view.keywords.len() != self.keywords {
            self.keywords = view.keywords.len();
            flags_lines(out, &view.keywords, self.read_only);
        }
    }

    /// Bring the client's view up to `view`, appending the untagged responses to `out`:
    /// keywords, then `EXPUNGE` (only if `allow_expunge`), `EXISTS`, `RECENT` (if the count
    /// changed) and `FETCH (FLAGS ..)` for messages whose flags (or, with `condstore`,
    /// mod-sequence) changed.
    pub(super) fn sync(
        &mut self,
        view: &MailboxView,
        condstore: bool,
        allow_expunge: bool,
        recent: &RecentSource<'_>,
        out: &mut Vec<u8>,
    ) {
        self.sync_keywords(view, out);
        if allow_expunge {
            for i in (0..self.msgs.len()).rev() {
                if find(view, self.msgs[i].uid).is_none() {
                    out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
                    self.msgs.remove(i);
                }
            }
        }
        let last = self.msgs.last().map_or(0, |k| k.uid);
        let before = self.msgs.len();
        if view.messages.last().is_some_and(|m| m.uid > last) {
            let first = recent.first_recent(view, self.read_only);
            self.msgs.extend(
                view.messages
                    .iter()
                    .filter(|m| m.uid > last)
                    .map(|m| Known::of(m, first)),
            );
        }
        if self.msgs.len() != before {
            out.extend_from_slice(format!("* {} EXISTS\r\n", self.msgs.len()).as_bytes());
        }
        let recent_now = self.recent_count();
        if recent_now != self.recent_reported {
            self.recent_reported = recent_now;
            out.extend_from_slice(format!("* {recent_now} RECENT\r\n").as_bytes());
        }
        for (i, k) in self.msgs[..before].iter_mut().enumerate() {
            let Some(m) = find(view, k.uid) else {
                continue;
            };
            let flags_changed = m.flags != k.flags;
            if flags_changed || (condstore && m.modseq != k.modseq) {
                out.extend_from_slice(format!("* {} FETCH (FLAGS ", i + 1).as_bytes());
                response::flags_recent(out, m.flags, k.recent, &view.keywords);
                out.extend_from_slice(format!(" UID {}", m.uid).as_bytes());
                if condstore {
                    out.extend_from_slice(format!(" MODSEQ ({})", m.modseq).as_bytes());
                }
                out.extend_from_slice(b")\r\n");
            }
            k.flags = m.flags;
            k.modseq = m.modseq;
        }
    }

    /// Resolve a set against the client's view: `(seq, uid)` pairs. A sequence number beyond the
    /// client's view is an error (the `BAD` text).
    pub(super) fn targets(&self, set: &SeqSet, uid: bool) -> Result<Vec<(u32, u32)>, &'static str> {
        let count = self.msgs.len() as u32;
        if uid {
            let max = self.msgs.last().map_or(0, |k| k.uid);
            return Ok(self
                .msgs
                .iter()
                .enumerate()
                .filter(|(_, k)| max > 0 && set.contains(k.uid, max))
                .map(|(i, k)| (i as u32 + 1, k.uid))
                .collect());
        }
        if set
            .0
            .iter()
            .any(|&(a, b)| (a != STAR && a > count) || (b != STAR && b > count))
        {
            return Err("BAD Error in IMAP command: Invalid messageset");
        }
        Ok(self
            .msgs
            .iter()
            .enumerate()
            .filter(|(i, _)| set.contains(*i as u32 + 1, count))
            .map(|(i, k)| (i as u32 + 1, k.uid))
            .collect())
    }
}

impl Session {
    /// Report changes by others (and by our own writes) to the client; `EXPUNGE` only if
    /// `allow_expunge`. Nothing without a selected mailbox.
    pub(super) fn sync(&mut self, allow_expunge: bool) {
        let Some(account) = self.state.account() else {
            return;
        };
        let condstore = self.state.condstore();
        let Some(sel) = self.state.selected_mut() else {
            return;
        };
        let Some(view) = self.shared.store.mailbox_view_by_id(account, sel.id) else {
            return;
        };
        let recent = RecentSource {
            table: &self.shared.recent,
            account,
        };
        sel.sync(&view, condstore, allow_expunge, &recent, &mut self.out);
    }
}

/// `* FLAGS` and `* OK [PERMANENTFLAGS]` for the account's keywords.
pub(super) fn flags_lines(o: &mut Vec<u8>, keywords: &[String], read_only: bool) {
    o.extend_from_slice(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft");
    for k in keywords.iter().take(flag_bits::MAX_KEYWORDS) {
        o.push(b' ');
        o.extend_from_slice(k.as_bytes());
    }
    if read_only {
        o.extend_from_slice(b")\r\n* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n");
    } else {
        o.extend_from_slice(
            b")\r\n* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft",
        );
        for k in keywords.iter().take(flag_bits::MAX_KEYWORDS) {
            o.push(b' ');
            o.extend_from_slice(k.as_bytes());
        }
        o.extend_from_slice(b" \\*)] Flags permitted.\r\n");
    }
}

/// The message with `uid` in a view (messages are in UID order).
pub(super) fn find(view: &MailboxView, uid: u32) -> Option<&MessageMeta> {
    view.messages
        .binary_search_by_key(&uid, |m| m.uid)
        .ok()
        .map(|i| &view.messages[i])
}
