//! Kind 20, UidNext: raise a mailbox's UIDNEXT without a message. Written by
//! `Op::ImportMailbox` (`relay import`): a mailbox moved from another server keeps the UIDNEXT it
//! had there, so a UID a client saw (of a message expunged since) is never handed out again.
//!
//! Payload: `account u32, mailbox u32, uid_next u32`.

use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::Index;
use crate::store::{AccountId, Error, MailboxId, OpResult};

/// A mailbox's UIDNEXT raised (never lowered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidNext {
    /// Account.
    pub account: u32,
    /// Mailbox.
    pub mailbox: u32,
    /// The new UIDNEXT; a value at or below the current one changes nothing.
    pub uid_next: u32,
}

impl Kind for UidNext {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.account);
        w.u32(self.mailbox);
        w.u32(self.uid_next);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(UidNext {
            account: r.u32()?,
            mailbox: r.u32()?,
            uid_next: r.u32()?,
        })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        let mb = index
            .accounts
            .get_mut(&self.account)?
            .mailboxes
            .get_mut(&self.mailbox)?;
        mb.uid_next = mb.uid_next.max(self.uid_next);
        None
    }
}

/// Raise `mailbox`'s UIDNEXT to `uid_next` (nothing if it is there already). UID `u32::MAX` is
/// never handed out, so `uid_next` is capped there.
pub(crate) fn plan(
    p: &mut impl Planner,
    account: AccountId,
    mailbox: MailboxId,
    uid_next: u32,
) -> Result<OpResult, Error> {
    let mb = p
        .index()
        .account(account)
        .ok_or(Error::NotFound("account"))?
        .mailboxes
        .get(&mailbox)
        .ok_or(Error::NotFound("mailbox"))?;
    if uid_next > mb.uid_next {
        p.emit(
            UidNext {
                account,
                mailbox,
                uid_next,
            }
            .into(),
        )?;
    }
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
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(account, mailbox, uid_next)| {
            Record::UidNext(UidNext {
                account,
                mailbox,
                uid_next,
            })
        })
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::UidNext(UidNext {
                account: 7,
                mailbox: 2,
                uid_next: 4242,
            }),
            "0d000000e4a9280c14070000000200000092100000",
        )]
    }
}
