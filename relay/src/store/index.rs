//! The in-memory index: accounts, mailboxes, messages (UID order), keywords, subscriptions,
//! metadata, quota usage, the outbound queue (`queue.rs`) and live bodies per segment. It
//! changes only by [`Index::apply`] of a log record, so replaying the log rebuilds exactly the
//! state the writer had. What each record
//! does to it is in the record's kind module under `record/`; `apply` never fails and never
//! panics: a record that refers to something missing is ignored.
//!
//! This module does no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::format::Record;
use super::messages::Messages;
use super::queue::Queue;
use super::{flag_bits, AccountId, AccountInfo, MailboxId, MailboxInfo, MailboxView, MessageMeta};

/// Mailbox id of every account's INBOX.
pub const INBOX_ID: MailboxId = 1;

/// One mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub id: MailboxId,
    pub name: String,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: u64,
    /// In UID order, in chunks shared between the index's two copies (`messages.rs`).
    pub messages: Messages,
    /// Sum of message sizes.
    pub size: u64,
}

impl Mailbox {
    pub(crate) fn new(id: MailboxId, name: String, uid_validity: u32) -> Self {
        Mailbox {
            id,
            name,
            uid_validity,
            uid_next: 1,
            highest_modseq: 1,
            messages: Messages::new(),
            size: 0,
        }
    }

    pub(crate) fn bump(&mut self, modseq: u64) {
        self.highest_modseq = self.highest_modseq.max(modseq);
    }
}

/// One account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub addr: String,
    pub password_hash: String,
    pub created: i64,
    pub last_login_day: u32,
    /// Highest modseq handed out in this account (starts at 1).
    pub modseq: u64,
    pub bytes_used: u64,
    pub messages: u64,
    pub mailboxes: BTreeMap<MailboxId, Mailbox>,
    pub next_mailbox_id: MailboxId,
    pub keywords: Vec<String>,
    pub subscriptions: BTreeSet<String>,
    pub metadata: BTreeMap<(Option<MailboxId>, String), Vec<u8>>,
}

impl Account {
    /// The mailbox called `name` (`INBOX` case-insensitively).
    pub fn mailbox_by_name(&self, name: &str) -> Option<&Mailbox> {
        if name.eq_ignore_ascii_case("INBOX") {
            return self.mailboxes.get(&INBOX_ID);
        }
        self.mailboxes.values().find(|m| m.name == name)
    }

    /// Keyword index of `name` (keywords compare case-insensitively, RFC 3501).
    pub fn keyword(&self, name: &str) -> Option<usize> {
        self.keywords
            .iter()
            .position(|k| k.eq_ignore_ascii_case(name))
    }

    pub fn info(&self) -> AccountInfo {
        AccountInfo {
            id: self.id,
            addr: self.addr.clone(),
            password_hash: self.password_hash.clone(),
            created: self.created,
            last_login_day: self.last_login_day,
            bytes_used: self.bytes_used,
            messages: self.messages,
            enforce_e2ee_incoming: true,
        }
    }

    pub fn view(&self, mb: &Mailbox) -> MailboxView {
        MailboxView {
            id: mb.id,
            name: mb.name.clone(),
            uid_validity: mb.uid_validity,
            uid_next: mb.uid_next,
            highest_modseq: mb.highest_modseq,
            messages: mb.messages.to_vec(),
            keywords: self.keywords.clone(),
        }
    }

    pub fn mailbox_info(&self, mb: &Mailbox) -> MailboxInfo {
        let unseen = mb
            .messages
            .iter()
            .filter(|m| m.flags & flag_bits::SEEN == 0)
            .count();
        MailboxInfo {
            id: mb.id,
            name: mb.name.clone(),
            subscribed: self.subscriptions.contains(&mb.name),
            messages: u32::try_from(mb.messages.len()).unwrap_or(u32::MAX),
            unseen: u32::try_from(unseen).unwrap_or(u32::MAX),
            recent: 0,
            uid_next: mb.uid_next,
            uid_validity: mb.uid_validity,
            highest_modseq: mb.highest_modseq,
            size: mb.size,
        }
    }

    pub(crate) fn remove_mailbox_messages(
        &mut self,
        mb: &Mailbox,
        seg_refs: &mut BTreeMap<u32, u64>,
    ) {
        for m in &mb.messages {
            unref(seg_refs, m.body.segment);
        }
        self.bytes_used = self.bytes_used.saturating_sub(mb.size);
        self.messages = self.messages.saturating_sub(mb.messages.len() as u64);
    }
}

/// The whole index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    pub accounts: HashMap<AccountId, Account>,
    pub by_addr: HashMap<String, AccountId>,
    /// Next account id to hand out.
    pub next_account_id: AccountId,
    /// Highest UIDVALIDITY handed out so far (store-wide, so a re-created name gets a new one).
    pub last_uid_validity: u32,
    /// Index entries referencing bodies in each segment (messages and queue entries).
    pub seg_refs: BTreeMap<u32, u64>,
    /// The outbound queue.
    pub queue: Queue,
    /// Pending push notifications.
    pub notify: super::notify::Notifications,
}

/// Drop one reference to a body in `segment`.
pub(crate) fn unref(seg_refs: &mut BTreeMap<u32, u64>, segment: u32) {
    if let Some(n) = seg_refs.get_mut(&segment) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            seg_refs.remove(&segment);
        }
    }
}

impl Index {
    /// The account `id`.
    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.accounts.get(&id)
    }

    /// Look up an account by lowercase address (other case is folded, as at creation).
    pub fn account_by_addr(&self, addr: &str) -> Option<AccountInfo> {
        let folded;
        let addr = if addr.chars().any(char::is_uppercase) {
            folded = addr.to_lowercase();
            folded.as_str()
        } else {
            addr
        };
        let id = self.by_addr.get(addr)?;
        self.account(*id).map(Account::info)
    }

    /// All accounts, by id.
    pub fn account_infos(&self) -> Vec<AccountInfo> {
        let mut v: Vec<_> = self.accounts.values().map(Account::info).collect();
        v.sort_by_key(|a| a.id);
        v
    }

    /// Every message of an account with its mailbox, in mailbox id then UID order.
    pub fn messages(&self, account: AccountId) -> Vec<(MailboxId, MessageMeta)> {
        let Some(acc) = self.account(account) else {
            return Vec::new();
        };
        acc.mailboxes
            .values()
            .flat_map(|mb| mb.messages.iter().map(move |m| (mb.id, *m)))
            .collect()
    }

    /// All mailboxes of an account, in name order.
    pub fn mailbox_infos(&self, account: AccountId) -> Vec<MailboxInfo> {
        let Some(acc) = self.account(account) else {
            return Vec::new();
        };
        let mut v: Vec<_> = acc
            .mailboxes
            .values()
            .map(|mb| acc.mailbox_info(mb))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A snapshot of a mailbox by name (`INBOX` is case-insensitive).
    pub fn view_by_name(&self, account: AccountId, name: &str) -> Option<MailboxView> {
        let acc = self.account(account)?;
        acc.mailbox_by_name(name).map(|mb| acc.view(mb))
    }

    /// A snapshot of a mailbox by id.
    pub fn view_by_id(&self, account: AccountId, id: MailboxId) -> Option<MailboxView> {
        let acc = self.account(account)?;
        acc.mailboxes.get(&id).map(|mb| acc.view(mb))
    }

    /// Subscribed mailbox names, including ones that do not exist.
    pub fn subscription_list(&self, account: AccountId) -> Vec<String> {
        self.account(account)
            .map(|a| a.subscriptions.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A metadata entry.
    pub fn metadata_value(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        key: &str,
    ) -> Option<Vec<u8>> {
        self.account(account)?
            .metadata
            .get(&(mailbox, key.to_owned()))
            .cloned()
    }

    /// `(entries, value bytes)` of all metadata of an account, for the per-account caps.
    pub fn metadata_usage(&self, account: AccountId) -> (usize, u64) {
        self.account(account).map_or((0, 0), |a| {
            let bytes = a.metadata.values().map(|v| v.len() as u64).sum();
            (a.metadata.len(), bytes)
        })
    }

    /// Bytes used by the account's messages (0 if it does not exist).
    pub fn bytes_used(&self, account: AccountId) -> u64 {
        self.account(account).map_or(0, |a| a.bytes_used)
    }

    /// The account's newest modseq (0 if it does not exist): the value its watchers see.
    pub fn modseq(&self, account: AccountId) -> u64 {
        self.account(account).map_or(0, |a| a.modseq)
    }

    /// Apply one record (dispatched to its kind module under `record/`). Returns the account
    /// whose modseq changed, if any (for watchers).
    pub fn apply(&mut self, rec: &Record) -> Option<AccountId> {
        rec.apply(self)
    }
}
