//! Kind 19, NotifyDone: the notifier has told the account's devices of delivery `seq` (or given
//! up, or found no token left). Written by `Op::NotifyDone` when that notification is still
//! the pending one; applying it removes the pending entry only then (`store/notify.rs`).
//!
//! Payload: `account u32, seq u64`.

use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::Index;
use crate::store::{AccountId, Error, OpResult};

/// A pending notification finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyDone {
    /// The account.
    pub account: u32,
    /// The delivery's sequence number the notifier sent for.
    pub seq: u64,
}

impl Kind for NotifyDone {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.account);
        w.u64(self.seq);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(NotifyDone {
            account: r.u32()?,
            seq: r.u64()?,
        })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        index.notify.done(self.account, self.seq);
        None
    }
}

/// `Op::NotifyDone`: nothing is written unless `seq` is the account's pending notification
/// (a newer delivery, or an earlier NotifyDone, leaves it alone).
pub(crate) fn plan(p: &mut impl Planner, account: AccountId, seq: u64) -> Result<OpResult, Error> {
    if p.index().notify.get(account).is_some_and(|n| n.seq == seq) {
        p.emit(NotifyDone { account, seq }.into())?;
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
        (any::<u32>(), any::<u64>())
            .prop_map(|(account, seq)| Record::NotifyDone(NotifyDone { account, seq }))
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::NotifyDone(NotifyDone {
                account: 3,
                seq: 1 << 35,
            }),
            "0d000000beefec4b13030000000000000008000000",
        )]
    }
}
