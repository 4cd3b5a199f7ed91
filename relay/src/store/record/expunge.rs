//! Kind 13, Expunge: remove messages of one mailbox. Written by `Op::Expunge` for the UIDs that
//! exist, if any.
//!
//! Payload: `account u32, mailbox u32, modseq u64, vec<uid u32>`.

use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::{unref, Index};
use crate::store::{AccountId, Error, MailboxId, OpResult};

/// Remove messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expunge {
    /// Account.
    pub account: u32,
    /// Mailbox.
    pub mailbox: u32,
    /// Modseq of the change.
    pub modseq: u64,
    /// UIDs.
    pub uids: Vec<u32>,
}

impl Kind for Expunge {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.account);
        w.u32(self.mailbox);
        w.u64(self.modseq);
        w.len(self.uids.len());
        for uid in &self.uids {
            w.u32(*uid);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let account = r.u32()?;
        let mailbox = r.u32()?;
        let modseq = r.u64()?;
        let n = r.count(4)?;
        let mut uids = Vec::with_capacity(n);
        for _ in 0..n {
            uids.push(r.u32()?);
        }
        Ok(Expunge {
            account,
            mailbox,
            modseq,
            uids,
        })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        let acc = index.accounts.get_mut(&self.account)?;
        let mb = acc.mailboxes.get_mut(&self.mailbox)?;
        let mut freed = 0u64;
        let mut removed = 0u64;
        for uid in &self.uids {
            if let Some(m) = mb.messages.remove(*uid) {
                freed += u64::from(m.size);
                removed += 1;
                unref(&mut index.seg_refs, m.body.segment);
            }
        }
        mb.size = mb.size.saturating_sub(freed);
        mb.bump(self.modseq);
        acc.bytes_used = acc.bytes_used.saturating_sub(freed);
        acc.messages = acc.messages.saturating_sub(removed);
        acc.modseq = acc.modseq.max(self.modseq);
        Some(self.account)
    }
}

/// `Op::Expunge`.
pub(crate) fn plan(
    p: &mut impl Planner,
    account: AccountId,
    mailbox: MailboxId,
    uids: Vec<u32>,
) -> Result<OpResult, Error> {
    let acc = p
        .index()
        .account(account)
        .ok_or(Error::NotFound("account"))?;
    let mb = acc
        .mailboxes
        .get(&mailbox)
        .ok_or(Error::NotFound("mailbox"))?;
    let mut uids = uids;
    uids.sort_unstable();
    uids.dedup();
    uids.retain(|u| mb.messages.contains(*u));
    if !uids.is_empty() {
        let modseq = acc.modseq + 1;
        p.emit(
            Expunge {
                account,
                mailbox,
                modseq,
                uids: uids.clone(),
            }
            .into(),
        )?;
    }
    Ok(OpResult::Expunged(uids))
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
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            proptest::collection::vec(any::<u32>(), 0..5),
        )
            .prop_map(|(account, mailbox, modseq, uids)| {
                Record::Expunge(Expunge {
                    account,
                    mailbox,
                    modseq,
                    uids,
                })
            })
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::Expunge(Expunge {
                account: 7,
                mailbox: 1,
                modseq: 7,
                uids: vec![4, 9],
            }),
            "1d000000147a02fc0d07000000010000000700000000000000020000000400000009000000",
        )]
    }
}
