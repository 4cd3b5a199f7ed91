//! The in-memory index: accounts, mailboxes, messages (UID order), keywords, subscriptions,
//! metadata, quota usage and live bodies per segment. It changes only by [`Index::apply`] of a
//! log record, so replaying the log rebuilds exactly the state the writer had. `apply` never
//! fails and never panics: a record that refers to something missing is ignored.
//!
//! This module does no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::format::Record;
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
    /// Sorted by UID.
    pub messages: Vec<MessageMeta>,
    /// Sum of message sizes.
    pub size: u64,
}

impl Mailbox {
    fn new(id: MailboxId, name: String, uid_validity: u32) -> Self {
        Mailbox {
            id,
            name,
            uid_validity,
            uid_next: 1,
            highest_modseq: 1,
            messages: Vec::new(),
            size: 0,
        }
    }

    /// Position of `uid` in `messages`.
    pub fn find(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    fn bump(&mut self, modseq: u64) {
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
            messages: mb.messages.clone(),
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

    fn remove_mailbox_messages(&mut self, mb: &Mailbox, seg_refs: &mut BTreeMap<u32, u64>) {
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
    /// Index entries referencing bodies in each segment.
    pub seg_refs: BTreeMap<u32, u64>,
}

fn unref(seg_refs: &mut BTreeMap<u32, u64>, segment: u32) {
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

    /// Apply one record. Returns the account whose modseq changed, if any (for watchers).
    pub fn apply(&mut self, rec: &Record) -> Option<AccountId> {
        match rec {
            Record::AccountCreate {
                id,
                addr,
                password_hash,
                created,
                inbox_uid_validity,
            } => {
                let mut mailboxes = BTreeMap::new();
                mailboxes.insert(
                    INBOX_ID,
                    Mailbox::new(INBOX_ID, "INBOX".to_owned(), *inbox_uid_validity),
                );
                let acc = Account {
                    id: *id,
                    addr: addr.clone(),
                    password_hash: password_hash.clone(),
                    created: *created,
                    last_login_day: u32::try_from(created.div_euclid(86_400)).unwrap_or(0),
                    modseq: 1,
                    bytes_used: 0,
                    messages: 0,
                    mailboxes,
                    next_mailbox_id: INBOX_ID + 1,
                    keywords: Vec::new(),
                    subscriptions: BTreeSet::from(["INBOX".to_owned()]),
                    metadata: BTreeMap::new(),
                };
                if let Some(old) = self.accounts.insert(*id, acc) {
                    self.by_addr.remove(&old.addr);
                }
                self.by_addr.insert(addr.clone(), *id);
                self.next_account_id = self.next_account_id.max(id.saturating_add(1));
                self.last_uid_validity = self.last_uid_validity.max(*inbox_uid_validity);
                None
            }
            Record::AccountDelete { id } => {
                let mut acc = self.accounts.remove(id)?;
                self.by_addr.remove(&acc.addr);
                for mb in std::mem::take(&mut acc.mailboxes).into_values() {
                    acc.remove_mailbox_messages(&mb, &mut self.seg_refs);
                }
                Some(*id)
            }
            Record::LastLogin { account, day } => {
                if let Some(acc) = self.accounts.get_mut(account) {
                    acc.last_login_day = *day;
                }
                None
            }
            Record::MailboxCreate {
                account,
                id,
                name,
                uid_validity,
            } => {
                self.last_uid_validity = self.last_uid_validity.max(*uid_validity);
                let acc = self.accounts.get_mut(account)?;
                acc.mailboxes
                    .insert(*id, Mailbox::new(*id, name.clone(), *uid_validity));
                acc.next_mailbox_id = acc.next_mailbox_id.max(id.saturating_add(1));
                None
            }
            Record::MailboxDelete { account, id } => {
                let acc = self.accounts.get_mut(account)?;
                let mb = acc.mailboxes.remove(id)?;
                acc.remove_mailbox_messages(&mb, &mut self.seg_refs);
                let keys: Vec<_> = acc
                    .metadata
                    .keys()
                    .filter(|(m, _)| *m == Some(*id))
                    .cloned()
                    .collect();
                for k in keys {
                    acc.metadata.remove(&k);
                }
                Some(*account)
            }
            Record::MailboxRename { account, id, name } => {
                let acc = self.accounts.get_mut(account)?;
                let old = acc.mailboxes.get(id)?.name.clone();
                let prefix = format!("{old}/");
                for mb in acc.mailboxes.values_mut() {
                    if mb.id == *id {
                        mb.name.clone_from(name);
                    } else if let Some(rest) = mb.name.strip_prefix(&prefix) {
                        mb.name = format!("{name}/{rest}");
                    }
                }
                Some(*account)
            }
            Record::Subscribe {
                account,
                name,
                subscribed,
            } => {
                let acc = self.accounts.get_mut(account)?;
                if *subscribed {
                    acc.subscriptions.insert(name.clone());
                } else {
                    acc.subscriptions.remove(name);
                }
                None
            }
            Record::Keyword { account, name } => {
                let acc = self.accounts.get_mut(account)?;
                if acc.keywords.len() < flag_bits::MAX_KEYWORDS {
                    acc.keywords.push(name.clone());
                }
                None
            }
            Record::Insert {
                body,
                internal_date,
                entries,
            } => {
                let mut touched = None;
                for e in entries {
                    let Some(acc) = self.accounts.get_mut(&e.account) else {
                        continue;
                    };
                    let Some(mb) = acc.mailboxes.get_mut(&e.mailbox) else {
                        continue;
                    };
                    let meta = MessageMeta {
                        uid: e.uid,
                        flags: e.flags,
                        modseq: e.modseq,
                        internal_date: *internal_date,
                        size: body.len,
                        body: *body,
                    };
                    // UIDs are assigned in log order, so this is an append in practice.
                    match mb.messages.binary_search_by_key(&e.uid, |m| m.uid) {
                        Ok(_) => continue,
                        Err(pos) => mb.messages.insert(pos, meta),
                    }
                    mb.uid_next = mb.uid_next.max(e.uid.saturating_add(1));
                    mb.size += u64::from(body.len);
                    mb.bump(e.modseq);
                    acc.modseq = acc.modseq.max(e.modseq);
                    acc.bytes_used += u64::from(body.len);
                    acc.messages += 1;
                    *self.seg_refs.entry(body.segment).or_default() += 1;
                    touched = Some(e.account);
                }
                touched
            }
            Record::Flags {
                account,
                mailbox,
                modseq,
                changes,
            } => {
                let acc = self.accounts.get_mut(account)?;
                let mb = acc.mailboxes.get_mut(mailbox)?;
                for (uid, flags) in changes {
                    if let Some(i) = mb.find(*uid) {
                        mb.messages[i].flags = *flags;
                        mb.messages[i].modseq = *modseq;
                    }
                }
                mb.bump(*modseq);
                acc.modseq = acc.modseq.max(*modseq);
                Some(*account)
            }
            Record::Expunge {
                account,
                mailbox,
                modseq,
                uids,
            } => {
                let acc = self.accounts.get_mut(account)?;
                let mb = acc.mailboxes.get_mut(mailbox)?;
                let mut freed = 0u64;
                let mut removed = 0u64;
                for uid in uids {
                    if let Some(i) = mb.find(*uid) {
                        let m = mb.messages.remove(i);
                        freed += u64::from(m.size);
                        removed += 1;
                        unref(&mut self.seg_refs, m.body.segment);
                    }
                }
                mb.size = mb.size.saturating_sub(freed);
                mb.bump(*modseq);
                acc.bytes_used = acc.bytes_used.saturating_sub(freed);
                acc.messages = acc.messages.saturating_sub(removed);
                acc.modseq = acc.modseq.max(*modseq);
                Some(*account)
            }
            Record::Copy {
                account,
                from,
                to,
                modseq,
                remove_source,
                pairs,
            } => {
                let acc = self.accounts.get_mut(account)?;
                let src = acc.mailboxes.get(from)?;
                acc.mailboxes.get(to)?;
                let mut copies = Vec::with_capacity(pairs.len());
                for (old, new) in pairs {
                    if let Some(i) = src.find(*old) {
                        let mut m = src.messages[i];
                        m.uid = *new;
                        m.modseq = *modseq;
                        copies.push((*old, m));
                    }
                }
                if *remove_source {
                    let src = acc.mailboxes.get_mut(from)?;
                    for (old, m) in &copies {
                        if let Some(i) = src.find(*old) {
                            src.messages.remove(i);
                            src.size = src.size.saturating_sub(u64::from(m.size));
                            acc.bytes_used = acc.bytes_used.saturating_sub(u64::from(m.size));
                            acc.messages = acc.messages.saturating_sub(1);
                            unref(&mut self.seg_refs, m.body.segment);
                        }
                    }
                    src.bump(*modseq);
                }
                let dst = acc.mailboxes.get_mut(to)?;
                for (_, m) in copies {
                    match dst.messages.binary_search_by_key(&m.uid, |x| x.uid) {
                        Ok(_) => continue,
                        Err(pos) => dst.messages.insert(pos, m),
                    }
                    dst.uid_next = dst.uid_next.max(m.uid.saturating_add(1));
                    dst.size += u64::from(m.size);
                    acc.bytes_used += u64::from(m.size);
                    acc.messages += 1;
                    *self.seg_refs.entry(m.body.segment).or_default() += 1;
                }
                dst.bump(*modseq);
                acc.modseq = acc.modseq.max(*modseq);
                Some(*account)
            }
            Record::Metadata {
                account,
                mailbox,
                key,
                value,
            } => {
                let acc = self.accounts.get_mut(account)?;
                match value {
                    Some(v) => {
                        acc.metadata.insert((*mailbox, key.clone()), v.clone());
                    }
                    None => {
                        acc.metadata.remove(&(*mailbox, key.clone()));
                    }
                }
                None
            }
        }
    }
}
