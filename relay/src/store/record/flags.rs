//! Kind 12, Flags: new flags of some messages of one mailbox, with the modseq of the change.
//! Written by `Op::SetFlags` (after the Keyword records of keywords it defines), only when some
//! message's flags change.
//!
//! Payload: `account u32, mailbox u32, modseq u64, vec<uid u32, flags u64>`.

use super::keyword::{resolve_flags, Keyword};
use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::Index;
use crate::store::{AccountId, Error, Flag, FlagMode, MailboxId, OpResult};

/// New flags of some messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flags {
    /// Account.
    pub account: u32,
    /// Mailbox.
    pub mailbox: u32,
    /// Modseq of the change.
    pub modseq: u64,
    /// `(uid, new flags)`.
    pub changes: Vec<(u32, u64)>,
}

impl Kind for Flags {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.account);
        w.u32(self.mailbox);
        w.u64(self.modseq);
        w.len(self.changes.len());
        for (uid, flags) in &self.changes {
            w.u32(*uid);
            w.u64(*flags);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let account = r.u32()?;
        let mailbox = r.u32()?;
        let modseq = r.u64()?;
        let n = r.count(12)?;
        let mut changes = Vec::with_capacity(n);
        for _ in 0..n {
            changes.push((r.u32()?, r.u64()?));
        }
        Ok(Flags {
            account,
            mailbox,
            modseq,
            changes,
        })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        let acc = index.accounts.get_mut(&self.account)?;
        let mb = acc.mailboxes.get_mut(&self.mailbox)?;
        for (uid, flags) in &self.changes {
            if let Some(m) = mb.messages.get_mut(*uid) {
                m.flags = *flags;
                m.modseq = self.modseq;
            }
        }
        mb.bump(self.modseq);
        acc.modseq = acc.modseq.max(self.modseq);
        Some(self.account)
    }
}

/// `Op::SetFlags`.
pub(crate) fn plan(
    p: &mut impl Planner,
    account: AccountId,
    mailbox: MailboxId,
    uids: Vec<u32>,
    mode: FlagMode,
    flags: &[Flag],
    unchanged_since: Option<u64>,
) -> Result<OpResult, Error> {
    let index = p.index();
    let acc = index.account(account).ok_or(Error::NotFound("account"))?;
    acc.mailboxes
        .get(&mailbox)
        .ok_or(Error::NotFound("mailbox"))?;
    let (bits, new_keywords) = resolve_flags(index, account, flags, mode != FlagMode::Remove)?;
    for name in new_keywords {
        p.emit(Keyword { account, name }.into())?;
    }
    let acc = p
        .index()
        .account(account)
        .ok_or(Error::NotFound("account"))?;
    let mb = acc
        .mailboxes
        .get(&mailbox)
        .ok_or(Error::NotFound("mailbox"))?;
    let modseq = acc.modseq + 1;
    let mut uids = uids;
    uids.sort_unstable();
    uids.dedup();
    let mut changes = Vec::new();
    let mut modified = Vec::new();
    for uid in uids {
        let Some(m) = mb.messages.get(uid) else {
            continue;
        };
        if unchanged_since.is_some_and(|us| m.modseq > us) {
            modified.push(uid);
            continue;
        }
        let new = match mode {
            FlagMode::Add => m.flags | bits,
            FlagMode::Remove => m.flags & !bits,
            FlagMode::Replace => bits,
        };
        if new != m.flags {
            changes.push((uid, new));
        }
    }
    let changed = changes.iter().map(|&(u, f)| (u, f, modseq)).collect();
    if !changes.is_empty() {
        p.emit(
            Flags {
                account,
                mailbox,
                modseq,
                changes,
            }
            .into(),
        )?;
    }
    Ok(OpResult::FlagsSet { changed, modified })
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
            proptest::collection::vec((any::<u32>(), any::<u64>()), 0..5),
        )
            .prop_map(|(account, mailbox, modseq, changes)| {
                Record::Flags(Flags {
                    account,
                    mailbox,
                    modseq,
                    changes,
                })
            })
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::Flags(Flags {
                account: 7,
                mailbox: 1,
                modseq: 6,
                changes: vec![(4, 2), (5, u64::MAX)],
            }),
            concat!(
                "2d000000aa2404270c0700000001000000060000000000000002000000040000",
                "00020000000000000005000000ffffffffffffffff",
            ),
        )]
    }
}
