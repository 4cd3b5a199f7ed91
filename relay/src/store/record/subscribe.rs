//! Kind 9, Subscribe: (un)subscribe a mailbox name, which need not exist. Written by
//! `Op::Subscribe` (only when the state changes).
//!
//! Payload: `account u32, name str, subscribed u8`.

use super::mailbox_create::MAX_MAILBOX_NAME;
use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::Index;
use crate::store::{AccountId, Error, OpResult};

/// (Un)subscribe a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Account.
    pub account: u32,
    /// Name.
    pub name: String,
    /// New state.
    pub subscribed: bool,
}

impl Kind for Subscribe {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.account);
        w.str(&self.name);
        w.u8(u8::from(self.subscribed));
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Subscribe {
            account: r.u32()?,
            name: r.str()?,
            subscribed: r.bool()?,
        })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        let acc = index.accounts.get_mut(&self.account)?;
        if self.subscribed {
            acc.subscriptions.insert(self.name.clone());
        } else {
            acc.subscriptions.remove(&self.name);
        }
        None
    }
}

/// `Op::Subscribe`.
pub(crate) fn plan(
    p: &mut impl Planner,
    account: AccountId,
    name: String,
    subscribed: bool,
) -> Result<OpResult, Error> {
    let acc = p
        .index()
        .account(account)
        .ok_or(Error::NotFound("account"))?;
    if name.is_empty() || name.len() > MAX_MAILBOX_NAME {
        return Err(Error::Invalid("bad mailbox name"));
    }
    let name = if name.eq_ignore_ascii_case("INBOX") {
        "INBOX".to_owned()
    } else {
        name
    };
    if acc.subscriptions.contains(&name) != subscribed {
        p.emit(
            Subscribe {
                account,
                name,
                subscribed,
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
        let s = ".{0,20}";
        (any::<u32>(), s, any::<bool>()).prop_map(|(account, name, subscribed)| {
            Record::Subscribe(Subscribe {
                account,
                name,
                subscribed,
            })
        })
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::Subscribe(Subscribe {
                account: 7,
                name: "c".into(),
                subscribed: true,
            }),
            "0b000000e9cec5430907000000010000006301",
        )]
    }
}
