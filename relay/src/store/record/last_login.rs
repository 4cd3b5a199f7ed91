//! Kind 5, LastLogin: the day of the last successful login. Written by `Op::SetLastLogin`
//! (only when the day changed).
//!
//! Payload: `account u32, day u32`.

use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::Index;
use crate::store::{AccountId, Error, OpResult};

/// Day of last login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastLogin {
    /// Account.
    pub account: u32,
    /// Unix day.
    pub day: u32,
}

impl Kind for LastLogin {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.account);
        w.u32(self.day);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(LastLogin {
            account: r.u32()?,
            day: r.u32()?,
        })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        if let Some(acc) = index.accounts.get_mut(&self.account) {
            acc.last_login_day = self.day;
        }
        None
    }
}

/// `Op::SetLastLogin`.
pub(crate) fn plan(p: &mut impl Planner, account: AccountId, day: u32) -> Result<OpResult, Error> {
    let acc = p
        .index()
        .account(account)
        .ok_or(Error::NotFound("account"))?;
    if acc.last_login_day != day {
        p.emit(LastLogin { account, day }.into())?;
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
        (any::<u32>(), any::<u32>())
            .prop_map(|(account, day)| Record::LastLogin(LastLogin { account, day }))
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::LastLogin(LastLogin {
                account: 7,
                day: 20_000,
            }),
            "090000005c25ed920507000000204e0000",
        )]
    }
}
