//! Kind 15, Metadata: set or delete one METADATA entry of the account (server entry) or of a
//! mailbox. Written by `Op::SetMetadata` only when the value changes.
//!
//! Payload: `account u32, mailbox opt<u32>, key str, value opt<bytes>`.

use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::{Index, INBOX_ID};
use crate::store::notify::{self, TOKENS_KEY};
use crate::store::{AccountId, Error, MailboxId, OpResult};

/// Largest metadata value accepted (RFC 5464 servers limit it; Dovecot's default is 64 KiB).
pub const MAX_METADATA_VALUE: usize = 64 * 1024;

/// Set or delete a metadata entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Account.
    pub account: u32,
    /// Mailbox, or `None` for server entries.
    pub mailbox: Option<u32>,
    /// Entry name.
    pub key: String,
    /// Value, `None` deletes.
    pub value: Option<Vec<u8>>,
}

impl Kind for Metadata {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.account);
        match self.mailbox {
            None => w.u8(0),
            Some(m) => {
                w.u8(1);
                w.u32(m);
            }
        }
        w.str(&self.key);
        match &self.value {
            None => w.u8(0),
            Some(v) => {
                w.u8(1);
                w.bytes(v);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let account = r.u32()?;
        let mailbox = if r.bool()? { Some(r.u32()?) } else { None };
        let key = r.str()?;
        let value = if r.bool()? {
            Some(r.bytes()?.to_vec())
        } else {
            None
        };
        Ok(Metadata {
            account,
            mailbox,
            key,
            value,
        })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        let acc = index.accounts.get_mut(&self.account)?;
        match &self.value {
            Some(v) => {
                acc.metadata
                    .insert((self.mailbox, self.key.clone()), v.clone());
            }
            None => {
                acc.metadata.remove(&(self.mailbox, self.key.clone()));
            }
        }
        None
    }
}

/// `Op::SetMetadata`.
pub(crate) fn plan(
    p: &mut impl Planner,
    account: AccountId,
    mailbox: Option<MailboxId>,
    key: String,
    value: Option<Vec<u8>>,
) -> Result<OpResult, Error> {
    let acc = p
        .index()
        .account(account)
        .ok_or(Error::NotFound("account"))?;
    if let Some(m) = mailbox {
        acc.mailboxes.get(&m).ok_or(Error::NotFound("mailbox"))?;
    }
    if key.is_empty() || key.len() > 1024 || key.chars().any(char::is_control) {
        return Err(Error::Invalid("bad metadata entry name"));
    }
    if value.as_ref().is_some_and(|v| v.len() > MAX_METADATA_VALUE) {
        return Err(Error::Invalid("metadata value too large"));
    }
    let current = acc.metadata.get(&(mailbox, key.clone()));
    if current != value.as_ref() {
        p.emit(
            Metadata {
                account,
                mailbox,
                key,
                value,
            }
            .into(),
        )?;
    }
    Ok(OpResult::Done)
}

/// `Op::SetDeviceToken`: the account's token list (`store/notify.rs`) with `token` set at
/// `now`, planned against the writer's index so that concurrent sets all land.
pub(crate) fn plan_set_token(
    p: &mut impl Planner,
    account: AccountId,
    token: &str,
    now: i64,
) -> Result<OpResult, Error> {
    notify::check_token(token.as_bytes()).map_err(Error::Invalid)?;
    let current = tokens_of(p.index(), account)?;
    let value = notify::encode(&notify::with_token(current, token, now));
    plan(
        p,
        account,
        Some(INBOX_ID),
        TOKENS_KEY.to_owned(),
        Some(value),
    )
}

/// `Op::RemoveDeviceToken`: the account's token list without `token` (the entry deleted when
/// none is left); nothing is written if it was not there.
pub(crate) fn plan_remove_token(
    p: &mut impl Planner,
    account: AccountId,
    token: &str,
) -> Result<OpResult, Error> {
    let mut tokens = tokens_of(p.index(), account)?;
    let before = tokens.len();
    tokens.retain(|t| t.value != token);
    if tokens.len() == before {
        return Ok(OpResult::Done);
    }
    let value = (!tokens.is_empty()).then(|| notify::encode(&tokens));
    plan(p, account, Some(INBOX_ID), TOKENS_KEY.to_owned(), value)
}

fn tokens_of(index: &Index, account: AccountId) -> Result<Vec<notify::Token>, Error> {
    let acc = index.account(account).ok_or(Error::NotFound("account"))?;
    Ok(acc
        .metadata
        .get(&(Some(INBOX_ID), TOKENS_KEY.to_owned()))
        .map(|v| notify::decode(v))
        .unwrap_or_default())
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
        (
            any::<u32>(),
            proptest::option::of(any::<u32>()),
            s,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
        )
            .prop_map(|(account, mailbox, key, value)| {
                Record::Metadata(Metadata {
                    account,
                    mailbox,
                    key,
                    value,
                })
            })
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![
            (
                Record::Metadata(Metadata {
                    account: 7,
                    mailbox: Some(2),
                    key: "/private/k".into(),
                    value: Some(b"v".to_vec()),
                }),
                "1e0000009e921f200f0700000001020000000a0000002f707269766174652f6b010100000076",
            ),
            (
                Record::Metadata(Metadata {
                    account: 7,
                    mailbox: None,
                    key: "/private/k".into(),
                    value: None,
                }),
                "15000000fb30c1c70f07000000000a0000002f707269766174652f6b00",
            ),
        ]
    }
}
