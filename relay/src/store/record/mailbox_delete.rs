//! Kind 7, MailboxDelete: remove a mailbox with its messages and metadata. Written by
//! `Op::DeleteMailbox` (never for INBOX).
//!
//! Payload: `account u32, id u32`.

use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::{Index, INBOX_ID};
use crate::store::{AccountId, Error, MailboxId, OpResult};

/// Remove a mailbox with its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxDelete {
    /// Account.
    pub account: u32,
    /// Mailbox id.
    pub id: u32,
}

impl Kind for MailboxDelete {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.account);
        w.u32(self.id);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(MailboxDelete {
            account: r.u32()?,
            id: r.u32()?,
        })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        let acc = index.accounts.get_mut(&self.account)?;
        let mb = acc.mailboxes.remove(&self.id)?;
        acc.remove_mailbox_messages(&mb, &mut index.seg_refs);
        let keys: Vec<_> = acc
            .metadata
            .keys()
            .filter(|(m, _)| *m == Some(self.id))
            .cloned()
            .collect();
        for k in keys {
            acc.metadata.remove(&k);
        }
        Some(self.account)
    }
}

/// `Op::DeleteMailbox`.
pub(crate) fn plan(
    p: &mut impl Planner,
    account: AccountId,
    mailbox: MailboxId,
) -> Result<OpResult, Error> {
    let acc = p
        .index()
        .account(account)
        .ok_or(Error::NotFound("account"))?;
    if mailbox == INBOX_ID {
        return Err(Error::Invalid("INBOX cannot be deleted"));
    }
    acc.mailboxes
        .get(&mailbox)
        .ok_or(Error::NotFound("mailbox"))?;
    p.emit(
        MailboxDelete {
            account,
            id: mailbox,
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
        (any::<u32>(), any::<u32>())
            .prop_map(|(account, id)| Record::MailboxDelete(MailboxDelete { account, id }))
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::MailboxDelete(MailboxDelete { account: 7, id: 2 }),
            "090000003c80bb39070700000002000000",
        )]
    }
}
