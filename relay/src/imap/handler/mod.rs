//! Command handlers, one file per command family, each an `impl Session` block.
//!
//! A handler checks its arguments against the state, answers reads from the store at once and
//! turns a write into an effect together with a [`Pending`] that says how to finish; the code that
//! finishes it (`*_done`, called from [`Session::completed`]) sits right below the code that asked
//! for it.
//!
//! | file | commands |
//! |---|---|
//! | `connection.rs` | CAPABILITY, LOGOUT, ID, ENABLE, NAMESPACE, COMPRESS |
//! | `auth.rs` | STARTTLS, LOGIN, AUTHENTICATE |
//! | `mailbox.rs` | LIST, LSUB, STATUS, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, APPEND, GETQUOTA(ROOT) |
//! | `select.rs` | SELECT, EXAMINE, UNSELECT, CLOSE, EXPUNGE |
//! | `fetch.rs` | FETCH (with the `\Seen` update and the output-capped [`FetchJob`]) |
//! | `search.rs` | SEARCH |
//! | `store.rs` | STORE |
//! | `copy.rs` | COPY, MOVE |
//! | `metadata.rs` | GETMETADATA, SETMETADATA |
//! | `idle.rs` | IDLE, `DONE`, the IDLE keep-alive |
//!
//! NOOP and CHECK only report changes (`super::sync`) and are answered in the dispatcher.

mod auth;
mod connection;
mod copy;
mod fetch;
mod idle;
mod mailbox;
mod metadata;
mod search;
mod select;
mod store;

use std::collections::VecDeque;

pub(super) use fetch::FetchJob;

use super::command::SeqSet;
use super::session::Session;
use crate::session::EffectResult;
use crate::store::{AccountId, MailboxId, MailboxView, Op, OpResult};

/// How to finish a command whose effect is in flight. Each variant belongs to one handler file.
#[derive(Debug)]
pub(super) enum Pending {
    /// `auth`: LOGIN, AUTHENTICATE.
    Login { tag: String },
    /// `mailbox`: CREATE, DELETE, RENAME, (UN)SUBSCRIBE, answered with a fixed text.
    Simple { tag: String, text: &'static str },
    /// `mailbox`: APPEND.
    Append { tag: String },
    /// `fetch`: `\Seen` was set, now the FETCH itself.
    Fetch(fetch::SeenThenFetch),
    /// `store`: STORE.
    Store(store::StoreDone),
    /// `copy`: COPY, MOVE.
    Copy { tag: String, is_move: bool },
    /// `select`: EXPUNGE.
    Expunge { tag: String },
    /// `select`: CLOSE.
    Close { tag: String },
    /// `metadata`: SETMETADATA, one commit per entry.
    SetMetadata { tag: String, rest: VecDeque<Op> },
}

/// The result of a store commit.
type Commit = Result<OpResult, crate::store::Error>;

impl Session {
    /// The pending effect finished: hand its result to the handler that asked for it.
    pub(super) fn completed(&mut self, pending: Pending, result: EffectResult) {
        let commit = match result {
            EffectResult::Login(r) => {
                let Pending::Login { tag } = pending else {
                    tracing::error!("login result for a non-login effect");
                    return self.close();
                };
                return self.login_done(&tag, r);
            }
            EffectResult::Commit(r) => r,
            EffectResult::Origin { .. } => {
                tracing::error!("origin result in an IMAP session");
                return self.close();
            }
        };
        match pending {
            Pending::Login { tag } => self.tagged(&tag, "NO [SERVERBUG] Internal error"),
            Pending::Simple { tag, text } => self.simple_done(&tag, text, commit),
            Pending::Append { tag } => self.append_done(&tag, commit),
            Pending::Fetch(p) => self.seen_then_fetch_done(p, &commit),
            Pending::Store(p) => self.store_done(p, commit),
            Pending::Copy { tag, is_move } => self.copy_done(&tag, is_move, commit),
            Pending::Expunge { tag } => self.expunge_done(&tag, commit),
            Pending::Close { tag } => self.close_mailbox_done(&tag, commit),
            Pending::SetMetadata { tag, rest } => self.set_metadata_done(tag, rest, commit),
        }
    }

    /// A failed commit: its `NO` text (internal detail is logged, not sent), after reporting
    /// changes.
    fn store_error(&mut self, tag: &str, e: &crate::store::Error) {
        use crate::store::Error as E;
        let text = match e {
            E::OverQuota => "NO [OVERQUOTA] Quota exceeded (mailbox for user is full)".to_owned(),
            // RFC 5530 OVERQUOTA, as Dovecot answers ENOSPC; other I/O errors fall to UNAVAILABLE.
            E::NoSpace { .. } => "NO [OVERQUOTA] Not enough disk space, try again later".to_owned(),
            E::NotFound(what) => format!("NO [NONEXISTENT] No such {what}"),
            E::Exists(_) => "NO [ALREADYEXISTS] Mailbox already exists".to_owned(),
            E::Invalid(why) => format!("NO [CANNOT] {why}"),
            other => {
                tracing::warn!(error = %other, "store write failed");
                "NO [UNAVAILABLE] Internal error, try again later".to_owned()
            }
        };
        self.sync(true);
        self.tagged(tag, &text);
    }

    /// The store's current view of the selected mailbox.
    fn view(&self, account: AccountId) -> Option<MailboxView> {
        let sel = self.state.selected()?;
        self.shared.store.mailbox_view_by_id(account, sel.id)
    }

    /// The mailbox called `name` (`INBOX` case-insensitively).
    fn mailbox_id(&self, account: AccountId, name: &str) -> Option<MailboxId> {
        self.shared
            .store
            .mailboxes(account)
            .into_iter()
            .find(|m| mailbox::same_name(&m.name, name))
            .map(|m| m.id)
    }

    /// Resolve a set against the client's view of the selected mailbox: `(seq, uid)` pairs.
    fn targets(&self, set: &SeqSet, uid: bool) -> Result<Vec<(u32, u32)>, &'static str> {
        match self.state.selected() {
            Some(sel) => sel.targets(set, uid),
            None => Ok(Vec::new()),
        }
    }
}
