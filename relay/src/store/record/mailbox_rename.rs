//! Kind 8, MailboxRename: rename a mailbox and its children. Written by `Op::RenameMailbox`
//! (never for INBOX).
//!
//! Payload: `account u32, id u32, name str`.

use super::mailbox_create::check_mailbox_name;
use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::{Index, INBOX_ID};
use crate::store::{AccountId, Error, MailboxId, OpResult};

/// Rename a mailbox (and its children).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxRename {
    /// Account.
    pub account: u32,
    /// Mailbox id.
    pub id: u32,
    /// New name.
    pub name: String,
}

impl Kind for MailboxRename {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.account);
        w.u32(self.id);
        w.str(&self.name);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(MailboxRename {
            account: r.u32()?,
            id: r.u32()?,
            name: r.str()?,
        })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        let acc = index.accounts.get_mut(&self.account)?;
        let old = acc.mailboxes.get(&self.id)?.name.clone();
        let prefix = format!("{old}/");
        for mb in acc.mailboxes.values_mut() {
            if mb.id == self.id {
                mb.name.clone_from(&self.name);
            } else if let Some(rest) = mb.name.strip_prefix(&prefix) {
                mb.name = format!("{}/{rest}", self.name);
            }
        }
        Some(self.account)
    }
}

/// `Op::RenameMailbox`.
pub(crate) fn plan(
    p: &mut impl Planner,
    account: AccountId,
    mailbox: MailboxId,
    to: String,
) -> Result<OpResult, Error> {
    let acc = p
        .index()
        .account(account)
        .ok_or(Error::NotFound("account"))?;
    if mailbox == INBOX_ID {
        return Err(Error::Invalid("INBOX cannot be renamed"));
    }
    let old = &acc
        .mailboxes
        .get(&mailbox)
        .ok_or(Error::NotFound("mailbox"))?
        .name;
    check_mailbox_name(&to)?;
    if acc.mailbox_by_name(&to).is_some() {
        return Err(Error::Exists("mailbox"));
    }
    let prefix = format!("{old}/");
    if to.starts_with(&prefix) {
        return Err(Error::Invalid("cannot rename a mailbox into itself"));
    }
    for mb in acc.mailboxes.values() {
        if let Some(rest) = mb.name.strip_prefix(&prefix) {
            if acc.mailbox_by_name(&format!("{to}/{rest}")).is_some() {
                return Err(Error::Exists("mailbox"));
            }
        }
    }
    p.emit(
        MailboxRename {
            account,
            id: mailbox,
            name: to,
        }
        .into(),
    )?;
    Ok(OpResult::Done)
}

#[cfg(test)]
pub(crate) mod test_data {
    //! Values of this kind for the codec tests in `format`.
    use super::*;
    use crate::store::format::Record;
    use proptest::prelude::*;

    /// Any record of this kind (round trip, bit flips).
    pub(crate) fn arbitrary() -> impl Strategy<Value = Record> {
        let s = ".{0,20}";
        (any::<u32>(), any::<u32>(), s).prop_map(|(account, id, name)| {
            Record::MailboxRename(MailboxRename { account, id, name })
        })
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::MailboxRename(MailboxRename {
                account: 7,
                id: 2,
                name: "c".into(),
            }),
            "0e000000430ca1e80807000000020000000100000063",
        )]
    }
}
