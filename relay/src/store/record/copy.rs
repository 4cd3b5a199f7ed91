//! Kind 14, Copy: COPY or MOVE of messages within an account; the copies share the bodies.
//! Written by `Op::Copy` for the UIDs that exist, if any.
//!
//! Payload: `account u32, from u32, to u32, modseq u64, remove_source u8,
//! vec<src uid u32, new uid u32>`.

use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::{unref, Index};
use crate::store::{AccountId, Error, MailboxId, OpResult};

/// COPY / MOVE within an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Account.
    pub account: u32,
    /// Source mailbox.
    pub from: u32,
    /// Target mailbox.
    pub to: u32,
    /// Modseq of the change.
    pub modseq: u64,
    /// Remove the sources (MOVE).
    pub remove_source: bool,
    /// `(source uid, new uid)`.
    pub pairs: Vec<(u32, u32)>,
}

impl Kind for Copy {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.account);
        w.u32(self.from);
        w.u32(self.to);
        w.u64(self.modseq);
        w.u8(u8::from(self.remove_source));
        w.len(self.pairs.len());
        for (a, b) in &self.pairs {
            w.u32(*a);
            w.u32(*b);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let account = r.u32()?;
        let from = r.u32()?;
        let to = r.u32()?;
        let modseq = r.u64()?;
        let remove_source = r.bool()?;
        let n = r.count(8)?;
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            pairs.push((r.u32()?, r.u32()?));
        }
        Ok(Copy {
            account,
            from,
            to,
            modseq,
            remove_source,
            pairs,
        })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        let modseq = self.modseq;
        let acc = index.accounts.get_mut(&self.account)?;
        let src = acc.mailboxes.get(&self.from)?;
        acc.mailboxes.get(&self.to)?;
        let mut copies = Vec::with_capacity(self.pairs.len());
        for (old, new) in &self.pairs {
            if let Some(m) = src.messages.get(*old) {
                let mut m = *m;
                m.uid = *new;
                m.modseq = modseq;
                copies.push((*old, m));
            }
        }
        if self.remove_source {
            let src = acc.mailboxes.get_mut(&self.from)?;
            for (old, m) in &copies {
                if src.messages.remove(*old).is_some() {
                    src.size = src.size.saturating_sub(u64::from(m.size));
                    acc.bytes_used = acc.bytes_used.saturating_sub(u64::from(m.size));
                    acc.messages = acc.messages.saturating_sub(1);
                    unref(&mut index.seg_refs, m.body.segment);
                }
            }
            src.bump(modseq);
        }
        let dst = acc.mailboxes.get_mut(&self.to)?;
        for (_, m) in copies {
            if !dst.messages.insert(m) {
                continue;
            }
            dst.uid_next = dst.uid_next.max(m.uid.saturating_add(1));
            dst.size += u64::from(m.size);
            acc.bytes_used += u64::from(m.size);
            acc.messages += 1;
            *index.seg_refs.entry(m.body.segment).or_default() += 1;
        }
        dst.bump(modseq);
        acc.modseq = acc.modseq.max(modseq);
        Some(self.account)
    }
}

/// `Op::Copy`.
pub(crate) fn plan(
    p: &mut impl Planner,
    account: AccountId,
    from: MailboxId,
    to: MailboxId,
    uids: Vec<u32>,
    remove_source: bool,
) -> Result<OpResult, Error> {
    let max = p.max_mailbox_size();
    let acc = p
        .index()
        .account(account)
        .ok_or(Error::NotFound("account"))?;
    let src = acc.mailboxes.get(&from).ok_or(Error::NotFound("mailbox"))?;
    let dst = acc.mailboxes.get(&to).ok_or(Error::NotFound("mailbox"))?;
    let mut uids = uids;
    uids.sort_unstable();
    uids.dedup();
    let mut bytes = 0u64;
    let mut pairs = Vec::new();
    for uid in uids {
        if let Some(m) = src.messages.get(uid) {
            bytes += u64::from(m.size);
            let new = dst
                .uid_next
                .checked_add(u32::try_from(pairs.len()).unwrap_or(u32::MAX))
                .filter(|u| *u < u32::MAX)
                .ok_or(Error::Invalid("UIDs exhausted"))?;
            pairs.push((uid, new));
        }
    }
    let uid_validity = dst.uid_validity;
    let messages = acc.messages + pairs.len() as u64;
    if !remove_source && (acc.bytes_used + bytes > max || messages > p.max_mailbox_messages()) {
        return Err(Error::OverQuota);
    }
    if !pairs.is_empty() {
        let modseq = acc.modseq + 1;
        p.emit(
            Copy {
                account,
                from,
                to,
                modseq,
                remove_source,
                pairs: pairs.clone(),
            }
            .into(),
        )?;
    }
    Ok(OpResult::Copied {
        uid_validity,
        pairs,
    })
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
            any::<u32>(),
            any::<u64>(),
            any::<bool>(),
            proptest::collection::vec((any::<u32>(), any::<u32>()), 0..5),
        )
            .prop_map(|(account, from, to, modseq, remove_source, pairs)| {
                Record::Copy(Copy {
                    account,
                    from,
                    to,
                    modseq,
                    remove_source,
                    pairs,
                })
            })
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::Copy(Copy {
                account: 7,
                from: 1,
                to: 2,
                modseq: 8,
                remove_source: true,
                pairs: vec![(5, 1)],
            }),
            "22000000d79f18d70e070000000100000002000000080000000000000001010000000500000001000000",
        )]
    }
}
