//! Kind 4, AccountDelete: remove an account and all its messages. Written by
//! `Op::DeleteAccount`.
//!
//! Payload: `id u32`.

use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::Index;
use crate::store::{AccountId, Error, OpResult};

/// Remove an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountDelete {
    /// Account id.
    pub id: u32,
}

impl Kind for AccountDelete {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.id);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(AccountDelete { id: r.u32()? })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        let mut acc = index.accounts.remove(&self.id)?;
        index.by_addr.remove(&acc.addr);
        for mb in std::mem::take(&mut acc.mailboxes).into_values() {
            acc.remove_mailbox_messages(&mb, &mut index.seg_refs);
        }
        Some(self.id)
    }
}

/// `Op::DeleteAccount`.
pub(crate) fn plan(p: &mut impl Planner, account: AccountId) -> Result<OpResult, Error> {
    p.index()
        .account(account)
        .ok_or(Error::NotFound("account"))?;
    p.emit(AccountDelete { id: account }.into())?;
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
        any::<u32>().prop_map(|id| Record::AccountDelete(AccountDelete { id }))
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::AccountDelete(AccountDelete { id: 7 }),
            "050000004f7037bc0407000000",
        )]
    }
}
