//! The narrow interface sessions use: [`Mailstore`]. Implemented by the real [`Store`] and by the
//! in-memory [`MemoryStore`](super::MemoryStore), so session code and its tests can run against
//! either. Operator paths (admin socket, expiry, checkpoints at shutdown) keep using [`Store`].

use std::future::Future;
use std::pin::Pin;

use super::{
    AccountId, AccountInfo, Body, BodyRef, Error, MailboxId, MailboxInfo, MailboxView, Op,
    OpResult, Store,
};

/// The future of [`Mailstore::commit`]: resolves once the op is durable (real store) or applied
/// (memory store) and visible to readers.
pub type Commit = Pin<Box<dyn Future<Output = Result<OpResult, Error>> + Send + 'static>>;

/// What IMAP and SMTP sessions, `accounts` and the effect runner of `io::drive` need from the
/// store: reads of the committed state, IDLE watch, and commit of an [`Op`].
pub trait Mailstore: Send + Sync {
    /// Look up an account by address (case-folded).
    fn account(&self, addr: &str) -> Option<AccountInfo>;
    /// Look up an account by id.
    fn account_by_id(&self, id: AccountId) -> Option<AccountInfo>;
    /// All mailboxes of an account, in name order.
    fn mailboxes(&self, account: AccountId) -> Vec<MailboxInfo>;
    /// A snapshot of a mailbox by name (`INBOX` is case-insensitive).
    fn mailbox_view(&self, account: AccountId, name: &str) -> Option<MailboxView>;
    /// A snapshot of a mailbox by id.
    fn mailbox_view_by_id(&self, account: AccountId, id: MailboxId) -> Option<MailboxView>;
    /// Subscribed mailbox names, including ones that do not exist.
    fn subscriptions(&self, account: AccountId) -> Vec<String>;
    /// The body of a message.
    fn read(&self, body: BodyRef) -> Result<Body, Error>;
    /// A metadata entry.
    fn metadata(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        key: &str,
    ) -> Option<Vec<u8>>;
    /// `(entries, value bytes)` of all metadata of an account, for the per-account caps.
    fn metadata_usage(&self, account: AccountId) -> (usize, u64);
    /// `(used, limit)` in bytes.
    fn quota(&self, account: AccountId) -> (u64, u64);
    /// A receiver that changes to the account's newest modseq after each committed change.
    fn watch(&self, account: AccountId) -> tokio::sync::watch::Receiver<u64>;
    /// Submit a write; it is queued (or applied) when called, dropping the future does not
    /// cancel it.
    fn commit(&self, op: Op) -> Commit;
}

impl Mailstore for Store {
    fn account(&self, addr: &str) -> Option<AccountInfo> {
        Store::account(self, addr)
    }
    fn account_by_id(&self, id: AccountId) -> Option<AccountInfo> {
        Store::account_by_id(self, id)
    }
    fn mailboxes(&self, account: AccountId) -> Vec<MailboxInfo> {
        Store::mailboxes(self, account)
    }
    fn mailbox_view(&self, account: AccountId, name: &str) -> Option<MailboxView> {
        Store::mailbox_view(self, account, name)
    }
    fn mailbox_view_by_id(&self, account: AccountId, id: MailboxId) -> Option<MailboxView> {
        Store::mailbox_view_by_id(self, account, id)
    }
    fn subscriptions(&self, account: AccountId) -> Vec<String> {
        Store::subscriptions(self, account)
    }
    fn read(&self, body: BodyRef) -> Result<Body, Error> {
        Store::read(self, body)
    }
    fn metadata(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        key: &str,
    ) -> Option<Vec<u8>> {
        Store::metadata(self, account, mailbox, key)
    }
    fn metadata_usage(&self, account: AccountId) -> (usize, u64) {
        Store::metadata_usage(self, account)
    }
    fn quota(&self, account: AccountId) -> (u64, u64) {
        Store::quota(self, account)
    }
    fn watch(&self, account: AccountId) -> tokio::sync::watch::Receiver<u64> {
        Store::watch(self, account)
    }
    fn commit(&self, op: Op) -> Commit {
        Box::pin(Store::commit(self, op))
    }
}
