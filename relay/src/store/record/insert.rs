//! Kind 11, Insert: index entries for one body (a Body frame written just before it). Written
//! by `Op::Deliver` (one entry per recipient INBOX) and `Op::Append` (one entry).
//!
//! Payload: `segment u32, offset u64, len u32` (the Body's bytes), `internal_date i64`,
//! `vec<account u32, mailbox u32, uid u32, modseq u64, flags u64>`.

use std::collections::{BTreeSet, HashMap};

use super::keyword::{resolve_flags, Keyword};
use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::{Index, INBOX_ID};
use crate::store::{
    AccountId, BodyRef, DeliverError, Error, Flag, MailboxId, MessageMeta, OpResult,
};

/// One index entry of an [`Insert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertEntry {
    /// Account.
    pub account: u32,
    /// Mailbox.
    pub mailbox: u32,
    /// Assigned UID.
    pub uid: u32,
    /// Assigned modseq.
    pub modseq: u64,
    /// Initial flags.
    pub flags: u64,
}

/// Index entries for one body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// The body (a Body record written before this one).
    pub body: BodyRef,
    /// INTERNALDATE.
    pub internal_date: i64,
    /// Where it goes.
    pub entries: Vec<InsertEntry>,
}

impl Kind for Insert {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.body.segment);
        w.u64(self.body.offset);
        w.u32(self.body.len);
        w.i64(self.internal_date);
        w.len(self.entries.len());
        for e in &self.entries {
            w.u32(e.account);
            w.u32(e.mailbox);
            w.u32(e.uid);
            w.u64(e.modseq);
            w.u64(e.flags);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let body = BodyRef {
            segment: r.u32()?,
            offset: r.u64()?,
            len: r.u32()?,
        };
        let internal_date = r.i64()?;
        let n = r.count(28)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(InsertEntry {
                account: r.u32()?,
                mailbox: r.u32()?,
                uid: r.u32()?,
                modseq: r.u64()?,
                flags: r.u64()?,
            });
        }
        Ok(Insert {
            body,
            internal_date,
            entries,
        })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        let body = self.body;
        let mut touched = None;
        for e in &self.entries {
            let Some(acc) = index.accounts.get_mut(&e.account) else {
                continue;
            };
            let Some(mb) = acc.mailboxes.get_mut(&e.mailbox) else {
                continue;
            };
            let meta = MessageMeta {
                uid: e.uid,
                flags: e.flags,
                modseq: e.modseq,
                internal_date: self.internal_date,
                size: body.len,
                body,
            };
            // UIDs are assigned in log order, so this is an append in practice.
            if !mb.messages.insert(meta) {
                continue;
            }
            mb.uid_next = mb.uid_next.max(e.uid.saturating_add(1));
            mb.size += u64::from(body.len);
            mb.bump(e.modseq);
            acc.modseq = acc.modseq.max(e.modseq);
            acc.bytes_used += u64::from(body.len);
            acc.messages += 1;
            *index.seg_refs.entry(body.segment).or_default() += 1;
            touched = Some(e.account);
        }
        touched
    }

    /// One body delivered to several accounts touches all of them, not only the one `apply`
    /// reports: every recipient's IDLE must wake.
    fn also_wakes(&self, out: &mut BTreeSet<AccountId>) {
        out.extend(self.entries.iter().map(|e| e.account));
    }
}

fn body_len(body: &[u8]) -> Result<u32, Error> {
    u32::try_from(body.len())
        .ok()
        .filter(|l| *l < u32::MAX - 16)
        .ok_or(Error::Invalid("message too large"))
}

/// `Op::Deliver`: one body, an INBOX entry for every recipient with room.
pub(crate) fn plan_deliver(
    p: &mut impl Planner,
    recipients: Vec<AccountId>,
    sender: Option<AccountId>,
    internal_date: i64,
    body: &[u8],
) -> Result<OpResult, Error> {
    let max = p.max_mailbox_size();
    let max_messages = p.max_mailbox_messages();
    let size = body_len(body)?;
    let mut results = Vec::with_capacity(recipients.len());
    let mut entries = Vec::new();
    // Earlier recipients of the same op (duplicates): (bytes, uids).
    let mut extra: HashMap<AccountId, (u64, u32)> = HashMap::new();
    let index = p.index();
    for r in recipients {
        let Some(acc) = index.account(r) else {
            results.push(Err(DeliverError::NoSuchAccount));
            continue;
        };
        let Some(inbox) = acc.mailboxes.get(&INBOX_ID) else {
            results.push(Err(DeliverError::NoSuchAccount));
            continue;
        };
        let ex = extra.entry(r).or_default();
        if acc.bytes_used + ex.0 + u64::from(size) > max
            || acc.messages + u64::from(ex.1) >= max_messages
        {
            results.push(Err(DeliverError::OverQuota));
            continue;
        }
        // UID u32::MAX is never handed out, so `uid_next` cannot wrap.
        let Some(uid) = inbox.uid_next.checked_add(ex.1).filter(|u| *u < u32::MAX) else {
            results.push(Err(DeliverError::OverQuota));
            continue;
        };
        let modseq = acc.modseq + 1 + u64::from(ex.1);
        ex.0 += u64::from(size);
        ex.1 += 1;
        entries.push(InsertEntry {
            account: r,
            mailbox: INBOX_ID,
            uid,
            modseq,
            flags: 0,
        });
        results.push(Ok(uid));
    }
    if !entries.is_empty() {
        let delivered: Vec<AccountId> = entries.iter().map(|e| e.account).collect();
        let body = p.append_body(body)?;
        p.emit(
            Insert {
                body,
                internal_date,
                entries,
            }
            .into(),
        )?;
        super::notify_add::plan_for_delivery(p, delivered, sender, internal_date)?;
    }
    Ok(OpResult::Delivered(results))
}

/// `Op::Append`: new keywords first, then the body and its entry, at the mailbox's next UID
/// (an import's planning with no UID of its own).
pub(crate) fn plan_append(
    p: &mut impl Planner,
    account: AccountId,
    mailbox: MailboxId,
    flags: &[Flag],
    internal_date: i64,
    body: &[u8],
) -> Result<OpResult, Error> {
    plan_import(p, account, mailbox, 0, flags, internal_date, body)
}

/// `Op::ImportMessage`: new keywords first, then the body and its entry, with the UID the
/// message had (0: the mailbox's next, as `Op::Append`). A UID the mailbox holds is refused
/// (`Error::Exists`), so an import run twice adds nothing twice.
pub(crate) fn plan_import(
    p: &mut impl Planner,
    account: AccountId,
    mailbox: MailboxId,
    uid: u32,
    flags: &[Flag],
    internal_date: i64,
    body: &[u8],
) -> Result<OpResult, Error> {
    let max = p.max_mailbox_size();
    let size = body_len(body)?;
    let index = p.index();
    let acc = index.account(account).ok_or(Error::NotFound("account"))?;
    let mb = acc
        .mailboxes
        .get(&mailbox)
        .ok_or(Error::NotFound("mailbox"))?;
    let uid = if uid == 0 { mb.uid_next } else { uid };
    if uid == u32::MAX {
        return Err(Error::Invalid("UIDs exhausted"));
    }
    if mb.messages.contains(uid) {
        return Err(Error::Exists("message"));
    }
    if acc.bytes_used + u64::from(size) > max || acc.messages >= p.max_mailbox_messages() {
        return Err(Error::OverQuota);
    }
    let (bits, new_keywords) = resolve_flags(index, account, flags, true)?;
    let (modseq, uid_validity) = (acc.modseq + 1, mb.uid_validity);
    for name in new_keywords {
        p.emit(Keyword { account, name }.into())?;
    }
    let body = p.append_body(body)?;
    p.emit(
        Insert {
            body,
            internal_date,
            entries: vec![InsertEntry {
                account,
                mailbox,
                uid,
                modseq,
                flags: bits,
            }],
        }
        .into(),
    )?;
    Ok(OpResult::Appended { uid_validity, uid })
}

#[cfg(test)]
pub(crate) mod test_data {
    //! Values of this kind for the codec tests in `format`.
    use super::*;
    use crate::store::format::Record;
    use crate::store::BodyRef;
    use proptest::prelude::*;

    fn body_ref() -> impl Strategy<Value = BodyRef> {
        (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(segment, offset, len)| BodyRef {
            segment,
            offset,
            len,
        })
    }

    /// Any record of this kind (round trip, bit flips).
    pub(crate) fn arbitrary() -> impl Strategy<Value = Record> {
        (
            body_ref(),
            any::<i64>(),
            proptest::collection::vec(
                (
                    any::<u32>(),
                    any::<u32>(),
                    any::<u32>(),
                    any::<u64>(),
                    any::<u64>(),
                ),
                0..5,
            ),
        )
            .prop_map(|(body, internal_date, es)| {
                Record::Insert(Insert {
                    body,
                    internal_date,
                    entries: es
                        .into_iter()
                        .map(|(account, mailbox, uid, modseq, flags)| InsertEntry {
                            account,
                            mailbox,
                            uid,
                            modseq,
                            flags,
                        })
                        .collect(),
                })
            })
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::Insert(Insert {
                body: BodyRef {
                    segment: 3,
                    offset: 1 << 40,
                    len: 5,
                },
                internal_date: 1_700_000_000,
                entries: vec![
                    InsertEntry {
                        account: 7,
                        mailbox: 1,
                        uid: 4,
                        modseq: 5,
                        flags: 1 << 8 | 1,
                    },
                    InsertEntry {
                        account: 8,
                        mailbox: 1,
                        uid: 1,
                        modseq: 2,
                        flags: 0,
                    },
                ],
            }),
            concat!(
                "5500000048a2de300b0300000000000000000100000500000000f15365000000",
                "0002000000070000000100000004000000050000000000000001010000000000",
                "0008000000010000000100000002000000000000000000000000000000",
            ),
        )]
    }
}
