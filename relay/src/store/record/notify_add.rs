//! Kind 18, NotifyAdd: new mail arrived for these accounts, their devices are to be told
//! (`store/notify.rs`). Written by `Op::Deliver`, after the Insert of the message, for the
//! recipients that got it, have a live device token and are not its local sender.
//!
//! Payload: `first_seq u64, at i64, vec<account u32>`: account `k` of the list gets the
//! pending notification `(first_seq + k, at)`, so every pending entry has its own sequence
//! number (the notifier reads them in that order, in batches).

use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::{Index, INBOX_ID};
use crate::store::notify::{self, TOKENS_KEY};
use crate::store::{AccountId, Error};

/// Accounts to notify of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyAdd {
    /// Sequence number of the first account's notification; the others follow one by one.
    pub seq: u64,
    /// Unix seconds of the delivery.
    pub at: i64,
    /// The accounts.
    pub accounts: Vec<u32>,
}

impl Kind for NotifyAdd {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u64(self.seq);
        w.i64(self.at);
        w.len(self.accounts.len());
        for a in &self.accounts {
            w.u32(*a);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let seq = r.u64()?;
        let at = r.i64()?;
        let n = r.count(4)?;
        let mut accounts = Vec::with_capacity(n);
        for _ in 0..n {
            accounts.push(r.u32()?);
        }
        Ok(NotifyAdd { seq, at, accounts })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        for (k, &a) in self.accounts.iter().enumerate() {
            if index.accounts.contains_key(&a) {
                index
                    .notify
                    .add(a, self.seq.saturating_add(k as u64), self.at);
            }
        }
        None
    }
}

/// Part of `Op::Deliver`: a NotifyAdd for those of `delivered` (accounts that got the message,
/// possibly repeated) with a live device token at `at`, except `sender`; nothing if none.
pub(crate) fn plan_for_delivery(
    p: &mut impl Planner,
    delivered: impl IntoIterator<Item = AccountId>,
    sender: Option<AccountId>,
    at: i64,
) -> Result<(), Error> {
    let index = p.index();
    let mut accounts: Vec<u32> = delivered
        .into_iter()
        .filter(|a| Some(*a) != sender)
        .filter(|a| {
            index.account(*a).is_some_and(|acc| {
                let value = acc.metadata.get(&(Some(INBOX_ID), TOKENS_KEY.to_owned()));
                !notify::live(value.map(Vec::as_slice), at).is_empty()
            })
        })
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    if accounts.is_empty() {
        return Ok(());
    }
    let seq = index.notify.next_seq();
    if seq.checked_add(accounts.len() as u64).is_none() {
        return Err(Error::Invalid("notification ids exhausted"));
    }
    p.emit(NotifyAdd { seq, at, accounts }.into())
}

#[cfg(test)]
pub(crate) mod test_data {
    //! Values of this kind for the codec tests in `format`.
    use super::*;
    use crate::store::format::Record;
    use proptest::prelude::*;

    /// Any record of this kind (round trip, bit flips).
    pub(crate) fn arbitrary() -> impl Strategy<Value = Record> {
        (
            any::<u64>(),
            any::<i64>(),
            proptest::collection::vec(any::<u32>(), 0..6),
        )
            .prop_map(|(seq, at, accounts)| Record::NotifyAdd(NotifyAdd { seq, at, accounts }))
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::NotifyAdd(NotifyAdd {
                seq: 5,
                at: 1_800_000_000,
                accounts: vec![1, 70_000],
            }),
            "1d000000cf424ee412050000000000000000d2496b00000000020000000100000070110100",
        )]
    }
}
