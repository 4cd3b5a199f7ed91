//! Kind 6, MailboxCreate: a new mailbox. Written by `Op::CreateMailbox`.
//!
//! Payload: `account u32, id u32, name str, uid_validity u32`.

use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::{Index, Mailbox};
use crate::store::{AccountId, Error, OpResult};

/// Longest mailbox name accepted.
pub const MAX_MAILBOX_NAME: usize = 512;

/// New mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxCreate {
    /// Account.
    pub account: u32,
    /// Mailbox id.
    pub id: u32,
    /// Name.
    pub name: String,
    /// UIDVALIDITY.
    pub uid_validity: u32,
}

impl Kind for MailboxCreate {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.account);
        w.u32(self.id);
        w.str(&self.name);
        w.u32(self.uid_validity);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(MailboxCreate {
            account: r.u32()?,
            id: r.u32()?,
            name: r.str()?,
            uid_validity: r.u32()?,
        })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        index.last_uid_validity = index.last_uid_validity.max(self.uid_validity);
        let acc = index.accounts.get_mut(&self.account)?;
        acc.mailboxes.insert(
            self.id,
            Mailbox::new(self.id, self.name.clone(), self.uid_validity),
        );
        acc.next_mailbox_id = acc.next_mailbox_id.max(self.id.saturating_add(1));
        None
    }
}

/// `Op::CreateMailbox`.
pub(crate) fn plan(
    p: &mut impl Planner,
    account: AccountId,
    name: String,
) -> Result<OpResult, Error> {
    let index = p.index();
    let acc = index.account(account).ok_or(Error::NotFound("account"))?;
    check_mailbox_name(&name)?;
    if acc.mailbox_by_name(&name).is_some() {
        return Err(Error::Exists("mailbox"));
    }
    let id = acc.next_mailbox_id;
    let uid_validity = index.last_uid_validity.saturating_add(1);
    p.emit(
        MailboxCreate {
            account,
            id,
            name,
            uid_validity,
        }
        .into(),
    )?;
    Ok(OpResult::MailboxCreated(id))
}

/// `Op::ImportMailbox`: the mailbox with `uid_validity` (0: as `plan` chooses) unless it
/// exists (with the same UIDVALIDITY, or `uid_validity` 0), then its UIDNEXT raised.
pub(crate) fn plan_import(
    p: &mut impl Planner,
    account: AccountId,
    name: String,
    uid_validity: u32,
    uid_next: u32,
) -> Result<OpResult, Error> {
    let index = p.index();
    let acc = index.account(account).ok_or(Error::NotFound("account"))?;
    let id = match acc.mailbox_by_name(&name) {
        Some(mb) if uid_validity != 0 && mb.uid_validity != uid_validity => {
            return Err(Error::Exists("mailbox with another UIDVALIDITY"))
        }
        Some(mb) => mb.id,
        None => {
            check_mailbox_name(&name)?;
            let id = acc.next_mailbox_id;
            let uid_validity = if uid_validity == 0 {
                index.last_uid_validity.saturating_add(1)
            } else {
                uid_validity
            };
            p.emit(
                MailboxCreate {
                    account,
                    id,
                    name,
                    uid_validity,
                }
                .into(),
            )?;
            id
        }
    };
    super::uid_next::plan(p, account, id, uid_next.min(u32::MAX - 1))?;
    Ok(OpResult::MailboxCreated(id))
}

/// A mailbox name the store accepts: `/`-separated non-empty parts, no control characters, no
/// LIST wildcards.
pub fn check_mailbox_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_MAILBOX_NAME
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && !name.chars().any(|c| c.is_control() || c == '*' || c == '%');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid("bad mailbox name"))
    }
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
        (any::<u32>(), any::<u32>(), s, any::<u32>()).prop_map(|(account, id, name, v)| {
            Record::MailboxCreate(MailboxCreate {
                account,
                id,
                name,
                uid_validity: v,
            })
        })
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::MailboxCreate(MailboxCreate {
                account: 7,
                id: 2,
                name: "Ä/b".into(),
                uid_validity: 10,
            }),
            "15000000e234179306070000000200000004000000c3842f620a000000",
        )]
    }
}
