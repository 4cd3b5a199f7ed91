//! Kind 17, QueueDone: recipients of a queue entry are finished (delivered, bounced or
//! dropped). Written by `Op::QueueDone` when it finishes a recipient still pending. The entry is
//! removed when none is left, and its stored body stops being live for segment removal when no
//! entry refers to it any more.
//!
//! Payload: `seq u64, slot u32, done u32` (bit `i`: recipient `i` of the entry).

use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::{unref, Index};
use crate::store::queue::{QueueId, MAX_RECIPIENTS};
use crate::store::{AccountId, Error, OpResult};

/// Recipients of a queue entry finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDone {
    /// Sequence number of the entry's id.
    pub seq: u64,
    /// Slot of the entry's id.
    pub slot: u32,
    /// The finished recipients: bit `i` is recipient `i` of the entry.
    pub done: u32,
}

impl Kind for QueueDone {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u64(self.seq);
        w.u32(self.slot);
        w.u32(self.done);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(QueueDone {
            seq: r.u64()?,
            slot: r.u32()?,
            done: r.u32()?,
        })
    }

    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        let id = QueueId {
            seq: self.seq,
            slot: self.slot,
        };
        if let Some(segment) = index.queue.done(id, self.done) {
            unref(&mut index.seg_refs, segment);
        }
        None
    }
}

/// `Op::QueueDone`: recipients that are not pending (finished before, or beyond the entry's
/// list) are ignored; nothing is written if none is pending.
pub(crate) fn plan(
    p: &mut impl Planner,
    id: QueueId,
    recipients: &[u32],
) -> Result<OpResult, Error> {
    let (_, entry) = p
        .index()
        .queue
        .get(id)
        .ok_or(Error::NotFound("queue entry"))?;
    let mut bits = 0u32;
    for &r in recipients {
        if r as usize >= MAX_RECIPIENTS {
            return Err(Error::Invalid("recipient index beyond the queue entry"));
        }
        bits |= 1 << r;
    }
    let done = bits & entry.remaining;
    if done != 0 {
        p.emit(
            QueueDone {
                seq: id.seq,
                slot: id.slot,
                done,
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
        (any::<u64>(), any::<u32>(), any::<u32>())
            .prop_map(|(seq, slot, done)| Record::QueueDone(QueueDone { seq, slot, done }))
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::QueueDone(QueueDone {
                seq: 1 << 33,
                slot: 2,
                done: 0b101,
            }),
            "1100000016dee53f1100000000020000000200000005000000",
        )]
    }
}
