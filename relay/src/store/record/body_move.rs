//! Kind 21, BodyMove: message bodies copied out of an old segment into the active one
//! (compaction), each index entry pointing at its copy from then on. Written by `Op::Compact`,
//! which the writer runs in steps after a checkpoint for a segment whose live bodies are a
//! small part of it (`writer.rs`): with no entry left in it, the segment is removed after the
//! following checkpoints like any segment whose messages were all expunged. Without it, one unread message
//! (or one a client never deletes) keeps a whole segment on disk until it expires.
//!
//! Payload: `from_segment u32, vec<from_offset u64, len u32, to_segment u32, to_offset u64>`.
//!
//! Readers are safe without any help: a session takes a fresh view of its mailbox for each
//! FETCH or SEARCH (so it sees the new reference at its next command), a [`Body`] already read
//! holds its segment's map, and the old segment stays on disk (and mapped) until a later checkpoint
//! covers the move. Queued messages are never moved: the writer leaves a segment that holds a queue
//! entry's body alone (the queue empties within days on its own).
//!
//! [`Body`]: crate::store::Body

use std::collections::HashMap;

use super::{Kind, Planner};
use crate::store::format::{DecodeError, Reader, Writer};
use crate::store::index::{unref, Index};
use crate::store::{AccountId, BodyRef, Error, OpResult};

/// Most moves in one record (each is 24 bytes of payload; a record stays below 100 KiB).
pub const MOVES_PER_RECORD: usize = 4096;

/// One body copied: where it was (in the record's `from_segment`) and where its copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// Offset of the body in the old segment.
    pub from_offset: u64,
    /// Its length (the copy has the same).
    pub len: u32,
    /// Segment of the copy.
    pub to_segment: u32,
    /// Offset of the copy.
    pub to_offset: u64,
}

/// Bodies of one old segment moved to their copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyMove {
    /// The segment the bodies were in.
    pub from_segment: u32,
    /// The bodies, by offset in it.
    pub moves: Vec<Move>,
}

impl Kind for BodyMove {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u32(self.from_segment);
        w.len(self.moves.len());
        for m in &self.moves {
            w.u64(m.from_offset);
            w.u32(m.len);
            w.u32(m.to_segment);
            w.u64(m.to_offset);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let from_segment = r.u32()?;
        let n = r.count(24)?;
        let mut moves = Vec::with_capacity(n);
        for _ in 0..n {
            moves.push(Move {
                from_offset: r.u64()?,
                len: r.u32()?,
                to_segment: r.u32()?,
                to_offset: r.u64()?,
            });
        }
        Ok(BodyMove {
            from_segment,
            moves,
        })
    }

    /// Every message entry whose body is one of the moved ones points at the copy; the
    /// segments' reference counts follow. Nothing a client sees changes (no modseq, no wake).
    fn apply(&self, index: &mut Index) -> Option<AccountId> {
        let moved: HashMap<(u64, u32), BodyRef> = self
            .moves
            .iter()
            .map(|m| {
                let to = BodyRef {
                    segment: m.to_segment,
                    offset: m.to_offset,
                    len: m.len,
                };
                ((m.from_offset, m.len), to)
            })
            .collect();
        for acc in index.accounts.values_mut() {
            for mb in acc.mailboxes.values_mut() {
                let from = self.from_segment;
                mb.messages.update_where(
                    |m| m.body.segment == from && moved.contains_key(&(m.body.offset, m.body.len)),
                    |m| {
                        let to = moved[&(m.body.offset, m.body.len)];
                        unref(&mut index.seg_refs, from);
                        *index.seg_refs.entry(to.segment).or_default() += 1;
                        m.body = to;
                    },
                );
            }
        }
        None
    }
}

/// `Op::Compact`: copy the given bodies of `segment` and emit the moves. A body no entry
/// refers to any more (expunged since the writer listed it) is copied all the same: its copy
/// is never referred to and goes with its segment.
pub(crate) fn plan(
    p: &mut impl Planner,
    segment: u32,
    bodies: &[(u64, u32)],
) -> Result<OpResult, Error> {
    let mut moves = Vec::with_capacity(bodies.len());
    for &(offset, len) in bodies {
        let to = p.copy_body(BodyRef {
            segment,
            offset,
            len,
        })?;
        moves.push(Move {
            from_offset: offset,
            len,
            to_segment: to.segment,
            to_offset: to.offset,
        });
    }
    for chunk in moves.chunks(MOVES_PER_RECORD) {
        p.emit(
            BodyMove {
                from_segment: segment,
                moves: chunk.to_vec(),
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
        let one = (any::<u64>(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
            |(from_offset, len, to_segment, to_offset)| Move {
                from_offset,
                len,
                to_segment,
                to_offset,
            },
        );
        (any::<u32>(), proptest::collection::vec(one, 0..4)).prop_map(|(from_segment, moves)| {
            Record::BodyMove(BodyMove {
                from_segment,
                moves,
            })
        })
    }

    /// Fixed records with their frames in hex: the on-disk bytes must never change.
    pub(crate) fn golden() -> Vec<(Record, &'static str)> {
        vec![(
            Record::BodyMove(BodyMove {
                from_segment: 3,
                moves: vec![Move {
                    from_offset: 4096,
                    len: 1200,
                    to_segment: 9,
                    to_offset: 64,
                }],
            }),
            "21000000df7e7b081503000000010000000010000000000000b0040000090000004000000000000000",
        )]
    }
}
