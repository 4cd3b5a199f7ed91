//! The narrow interface sessions and the outbound delivery engine use: [`Mailstore`].
//! Implemented by the real [`Store`] and by the in-memory [`MemoryStore`](super::MemoryStore),
//! so session code and its tests can run against either. Operator paths (admin socket, expiry,
//! checkpoints at shutdown) keep using [`Store`].

use std::future::Future;
use std::pin::Pin;

use super::{
    AccountId, AccountInfo, Body, BodyRef, Error, MailboxId, MailboxInfo, MailboxView, Op,
    OpResult, PendingNotify, QueueDestination, QueueEntry, QueueId, Store,
};

/// The future of [`Mailstore::commit`]: resolves once the op is durable (real store) or applied
/// (memory store) and visible to readers.
pub type Commit = Pin<Box<dyn Future<Output = Result<OpResult, Error>> + Send + 'static>>;

/// What IMAP and SMTP sessions, `accounts`, the effect runner of `io::drive` and the outbound
/// delivery engine need from the store: reads of the committed state, IDLE and queue watch, and
/// commit of an [`Op`].
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
    /// Entries in the outbound queue.
    fn queue_len(&self) -> u64;
    /// Destinations with queued entries, by name, with counts and oldest entries.
    fn queue_destinations(&self) -> Vec<QueueDestination>;
    /// Up to `limit` entry ids of `destination`, oldest first, after `after` if given.
    fn queue_ids(&self, destination: &str, after: Option<QueueId>, limit: usize) -> Vec<QueueId>;
    /// One queue entry with its envelope and message; `Error::NotFound` once it is done.
    fn queue_entry(&self, id: QueueId) -> Result<QueueEntry, Error>;
    /// A receiver that changes after every commit that adds queue entries.
    fn queue_watch(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Up to `limit` pending push notifications with `seq >= from`, in `seq` order.
    fn notify_pending(&self, from: u64, limit: usize) -> Vec<PendingNotify>;
    /// The pending push notification of `account`.
    fn notify_get(&self, account: AccountId) -> Option<PendingNotify>;
    /// A receiver that changes after every commit that adds pending notifications.
    fn notify_watch(&self) -> tokio::sync::watch::Receiver<u64>;
    /// The account's live device tokens at `now` (unix seconds), least recently set first.
    fn device_tokens(&self, account: AccountId, now: i64) -> Vec<String>;
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
    fn queue_len(&self) -> u64 {
        Store::queue_len(self)
    }
    fn queue_destinations(&self) -> Vec<QueueDestination> {
        Store::queue_destinations(self)
    }
    fn queue_ids(&self, destination: &str, after: Option<QueueId>, limit: usize) -> Vec<QueueId> {
        Store::queue_ids(self, destination, after, limit)
    }
    fn queue_entry(&self, id: QueueId) -> Result<QueueEntry, Error> {
        Store::queue_entry(self, id)
    }
    fn queue_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        Store::queue_watch(self)
    }
    fn notify_pending(&self, from: u64, limit: usize) -> Vec<PendingNotify> {
        Store::notify_pending(self, from, limit)
    }
    fn notify_get(&self, account: AccountId) -> Option<PendingNotify> {
        Store::notify_get(self, account)
    }
    fn notify_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        Store::notify_watch(self)
    }
    fn device_tokens(&self, account: AccountId, now: i64) -> Vec<String> {
        Store::device_tokens(self, account, now)
    }
}
