//! Kind 3, AccountCreate: a new account with its INBOX (mailbox id 1). Written by
//! `Op::CreateAccount`.
//!
//! Payload: `id u32, addr str, password_hash str, created i64, inbox_uid_validity u32`.

use std::collections::{BTreeMap, BTreeSet};

use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::{Account, Index, Mailbox, INBOX_ID};
use crate::store::{AccountId, Error, OpResult};

/// A new account with its INBOX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountCreate {
    /// Account id.
    pub id: u32,
    /// Lowercase address.
    pub addr: String,
    /// Password hash.
    pub password_hash: String,
    /// Unix seconds.
    pub created: i64,
    /// UIDVALIDITY of the INBOX.
    pub inbox_uid_validity: u32,
}

impl Kind for AccountCreate {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.id);
        w.str(&self.addr);
        w.str(&self.password_hash);
        w.i64(self.created);
        w.u32(self.inbox_uid_validity);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(AccountCreate {
            id: r.u32()?,
            addr: r.str()?,
            password_hash: r.str()?,
            created: r.i64()?,
            inbox_uid_validity: r.u32()?,
        })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        let mut mailboxes = BTreeMap::new();
        mailboxes.insert(
            INBOX_ID,
            Mailbox::new(INBOX_ID, "INBOX".to_owned(), self.inbox_uid_validity),
        );
        let acc = Account {
            id: self.id,
            addr: self.addr.clone(),
            password_hash: self.password_hash.clone(),
            created: self.created,
            last_login_day: u32::try_from(self.created.div_euclid(86_400)).unwrap_or(0),
            modseq: 1,
            bytes_used: 0,
            messages: 0,
            mailboxes,
            next_mailbox_id: INBOX_ID + 1,
            keywords: Vec::new(),
            subscriptions: BTreeSet::from(["INBOX".to_owned()]),
            metadata: BTreeMap::new(),
        };
        if let Some(old) = index.accounts.insert(self.id, acc) {
            index.by_addr.remove(&old.addr);
        }
        index.by_addr.insert(self.addr.clone(), self.id);
        index.next_account_id = index.next_account_id.max(self.id.saturating_add(1));
        index.last_uid_validity = index.last_uid_validity.max(self.inbox_uid_validity);
        None
    }
}

/// `Op::CreateAccount`.
pub(crate) fn plan(
    p: &mut impl Planner,
    addr: String,
    password_hash: String,
    now: i64,
) -> Result<OpResult, Error> {
    let id = plan_create(p, addr, password_hash, now, 0)?;
    Ok(OpResult::AccountCreated(id))
}

/// `Op::ImportAccount`: the account with the given INBOX UIDVALIDITY (0: as `plan` chooses),
/// then its last-login day when that is not the creation day.
pub(crate) fn plan_import(
    p: &mut impl Planner,
    addr: String,
    password_hash: String,
    created: i64,
    inbox_uid_validity: u32,
    last_login_day: u32,
) -> Result<OpResult, Error> {
    let id = plan_create(p, addr, password_hash, created, inbox_uid_validity)?;
    super::last_login::plan(p, id, last_login_day)?;
    Ok(OpResult::AccountCreated(id))
}

/// The checks and the record of both: a valid address no account has, the next account id, and
/// the INBOX UIDVALIDITY given (0: after every one handed out so far, and at least `created`).
fn plan_create(
    p: &mut impl Planner,
    addr: String,
    password_hash: String,
    created: i64,
    inbox_uid_validity: u32,
) -> Result<AccountId, Error> {
    let addr = addr.to_lowercase();
    if addr.is_empty() || addr.len() > 320 || addr.chars().any(char::is_control) {
        return Err(Error::Invalid("bad address"));
    }
    let index = p.index();
    if index.by_addr.contains_key(&addr) {
        return Err(Error::Exists("account"));
    }
    let id = index.next_account_id.max(1);
    let inbox_uid_validity = if inbox_uid_validity == 0 {
        let now32 = u32::try_from(created.max(0)).unwrap_or(u32::MAX);
        index.last_uid_validity.saturating_add(1).max(now32)
    } else {
        inbox_uid_validity
    };
    p.emit(
        AccountCreate {
            id,
            addr,
            password_hash,
            created,
            inbox_uid_validity,
        }
        .into(),
    )?;
    Ok(id)
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
        (any::<u32>(), s, s, any::<i64>(), any::<u32>()).prop_map(|(id, a, p, c, v)| {
            Record::AccountCreate(AccountCreate {
                id,
                addr: a,
                password_hash: p,
                created: c,
                inbox_uid_validity: v,
            })
        })
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::AccountCreate(AccountCreate {
                id: 7,
                addr: "a@x".into(),
                password_hash: "h".into(),
                created: -3,
                inbox_uid_validity: 9,
            }),
            "1d0000009d16ff9a0307000000030000006140780100000068fdffffffffffffff09000000",
        )]
    }
}
