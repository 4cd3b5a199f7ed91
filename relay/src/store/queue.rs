//! The outbound queue's part of the index: for every destination (a domain or an address literal)
//! its entries in id order, each a compact [`Entry`] of 24 bytes. The envelope (sender,
//! recipients, creation time) is not kept in memory: it is a prefix of the stored body (see
//! [`queue_add`](super::record::queue_add)) and read from the mmap with the message.
//!
//! # Ids and destinations
//! A [`QueueId`] is a sequence number handed out once per entry (never reused, in commit order)
//! plus the *slot* of its destination: a small number that finds the destination without a map
//! from ids. A destination takes the lowest free slot when its first entry is queued and gives
//! it back when its last entry is done; the sequence number alone identifies the entry, so an
//! old id never finds a later entry of a destination that reused the slot. Slots and sequence
//! numbers are decided when the op is planned and written in the record, so replay rebuilds
//! exactly the same ids.
//!
//! # Memory
//! Entries live in chunks of at most [`CHUNK`] behind `Arc`s: a clone of the index (the writer's
//! planning copy, a checkpoint snapshot) shares them, and a change copies only the chunk it
//! touches (`Arc::make_mut`). After each commit the writer gives its copy the readers' chunks
//! back ([`Queue::share_from`]), so the two copies of the index cost about one queue. A chunk
//! that shrinks below a quarter of [`CHUNK`] is merged into a neighbour that has room, and its
//! allocation shrinks with it, so removals in any order keep the memory near the live entries.
//!
//! This module does no I/O.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

/// Most recipients of one queue entry: an enqueued destination with more is split into several
/// entries (their pending recipients are the bits of a `u32`).
pub const MAX_RECIPIENTS: usize = 32;

/// Most destinations with entries at once (slots are below it): a bound for the memory of
/// the destination table.
pub const MAX_DESTINATIONS: usize = 1 << 20;

/// Entries per chunk (a power of two, so a chunk grown by pushes has no spare capacity when full).
pub(crate) const CHUNK: usize = 512;

/// Identifies a queue entry; ordered by age (commit order).
///
/// A sequence number handed out once per entry (never reused, in commit order) plus the *slot*
/// of its destination: a small number that finds the destination without a map from ids. A
/// destination takes the lowest free slot when its first entry is queued and gives it back
/// when its last entry is done; the sequence number alone identifies the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId {
    /// Sequence number, unique for the life of the store.
    pub(crate) seq: u64,
    /// Slot of the destination (see the module doc).
    pub(crate) slot: u32,
}

impl QueueId {
    /// The sequence number: unique for the life of the store, increasing in commit order.
    pub fn seq(self) -> u64 {
        self.seq
    }
}

/// `<seq>.<slot>`, e.g. `1042.0`; [`str::parse`] reads it back.
impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.seq, self.slot)
    }
}

impl std::str::FromStr for QueueId {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (seq, slot) = s.split_once('.').ok_or("queue id is <seq>.<slot>")?;
        Ok(QueueId {
            seq: seq.parse().map_err(|_| "bad sequence number in queue id")?,
            slot: slot.parse().map_err(|_| "bad slot in queue id")?,
        })
    }
}

/// One queue entry in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Sequence number of its [`QueueId`].
    pub(crate) seq: u64,
    /// Offset of the stored body (envelope + message) in its segment; its length is in the frame
    /// header before it.
    pub(crate) offset: u64,
    /// Segment of the stored body.
    pub(crate) segment: u32,
    /// Bit `i` set: recipient `i` of the entry is still to be delivered. Never 0 (the entry is
    /// removed then).
    pub(crate) remaining: u32,
}

/// The entries of one destination.
#[derive(Debug, Clone)]
pub(crate) struct Destination {
    /// Lowercase domain or address literal.
    pub(crate) name: String,
    /// Non-empty chunks, entries in increasing `seq` across all of them.
    chunks: Vec<Arc<Vec<Entry>>>,
    /// Entries in all chunks.
    len: usize,
}

/// Logical equality: same name and entries, whatever the chunk boundaries.
impl PartialEq for Destination {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Destination {}

impl Destination {
    fn new(name: String) -> Self {
        Destination {
            name,
            chunks: Vec::new(),
            len: 0,
        }
    }

    /// Entries in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn first(&self) -> Option<&Entry> {
        self.chunks.first().and_then(|c| c.first())
    }

    fn last_seq(&self) -> Option<u64> {
        self.chunks.last().and_then(|c| c.last()).map(|e| e.seq)
    }

    /// Append an entry newer than every other; false (nothing changed) if it is not newer.
    fn push(&mut self, e: Entry) -> bool {
        if self.last_seq().is_some_and(|last| e.seq <= last) {
            return false;
        }
        match self.chunks.last_mut() {
            Some(c) if c.len() < CHUNK => {
                let c = Arc::make_mut(c);
                c.push(e);
                if c.len() == CHUNK {
                    c.shrink_to_fit();
                }
            }
            _ => {
                let mut c = Vec::with_capacity(4);
                c.push(e);
                self.chunks.push(Arc::new(c));
            }
        }
        self.len += 1;
        true
    }

    /// `(chunk, position)` of `seq`.
    fn find(&self, seq: u64) -> Option<(usize, usize)> {
        let ci = self
            .chunks
            .partition_point(|c| c[0].seq <= seq)
            .checked_sub(1)?;
        let i = self.chunks[ci].binary_search_by_key(&seq, |e| e.seq).ok()?;
        Some((ci, i))
    }

    /// Position of the first entry with a sequence number above `seq`.
    fn after(&self, seq: u64) -> (usize, usize) {
        let ci = self.chunks.partition_point(|c| c[0].seq <= seq);
        if ci == 0 {
            return (0, 0);
        }
        let i = self.chunks[ci - 1].partition_point(|e| e.seq <= seq);
        if i == self.chunks[ci - 1].len() {
            (ci, 0)
        } else {
            (ci - 1, i)
        }
    }

    fn get_mut(&mut self, ci: usize, i: usize) -> &mut Entry {
        &mut Arc::make_mut(&mut self.chunks[ci])[i]
    }

    /// Remove the entry at `(ci, i)`; merge a chunk that became small into a neighbour.
    fn remove(&mut self, ci: usize, i: usize) {
        Arc::make_mut(&mut self.chunks[ci]).remove(i);
        self.len -= 1;
        super::chunks::settle_after_remove(&mut self.chunks, ci, CHUNK);
    }
}

/// Summary of one destination of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDestination {
    /// Lowercase domain or address literal, as enqueued.
    pub name: String,
    /// Entries queued for it.
    pub entries: usize,
    /// Its oldest entry.
    pub oldest: QueueId,
}

/// The queue's state in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// Destinations by slot; `None` is a free slot. Never ends in `None`.
    slots: Vec<Option<Destination>>,
    /// Slot of each destination name (derived from `slots`).
    by_name: HashMap<String, u32>,
    /// Free slots below `slots.len()` (derived from `slots`).
    free: BTreeSet<u32>,
    /// Sequence number of the next entry (ids start at 1).
    next_seq: u64,
    /// Entries in all destinations.
    len: u64,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            slots: Vec::new(),
            by_name: HashMap::new(),
            free: BTreeSet::new(),
            next_seq: 1,
            len: 0,
        }
    }
}

/// Bits of the first `n` recipients.
pub(crate) fn all_bits(n: usize) -> u32 {
    if n >= 32 {
        u32::MAX
    } else {
        (1u32 << n) - 1
    }
}

impl Queue {
    /// Sequence number the next entry will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Entries in the queue.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The slot of destination `name`, if it has entries.
    pub(crate) fn slot(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The `n` slots new destinations would take, lowest first (planning); some may be at or
    /// above [`MAX_DESTINATIONS`], which planning refuses.
    pub(crate) fn new_slots(&self, n: usize) -> Vec<u32> {
        let end = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.free
            .iter()
            .copied()
            .chain(end..=u32::MAX)
            .take(n)
            .collect()
    }

    pub(crate) fn destination(&self, slot: u32) -> Option<&Destination> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// The entry `id` and its destination's name.
    pub(crate) fn get(&self, id: QueueId) -> Option<(&str, Entry)> {
        let d = self.destination(id.slot)?;
        let (ci, i) = d.find(id.seq)?;
        Some((&d.name, d.chunks[ci][i]))
    }

    /// Queue `e` for the destination in `slot` called `name` (creating it in that slot if the
    /// slot is free). Ignored (false) if the slot holds another destination, lies beyond the
    /// next new slot, or `e` is not newer than the destination's entries, or has no recipient.
    pub(crate) fn add(&mut self, slot: u32, name: &str, e: Entry) -> bool {
        if e.remaining == 0 {
            return false;
        }
        let idx = slot as usize;
        match self.slots.get(idx) {
            Some(Some(d)) if d.name != name => return false,
            Some(Some(_)) => {}
            Some(None) | None => {
                if idx > self.slots.len()
                    || idx >= MAX_DESTINATIONS
                    || self.by_name.contains_key(name)
                {
                    return false;
                }
                if idx == self.slots.len() {
                    self.slots.push(None);
                }
                self.slots[idx] = Some(Destination::new(name.to_owned()));
                self.free.remove(&slot);
                self.by_name.insert(name.to_owned(), slot);
            }
        }
        let Some(d) = self.slots[idx].as_mut() else {
            return false;
        };
        let added = d.push(e);
        if added {
            self.len += 1;
            self.next_seq = self.next_seq.max(e.seq.saturating_add(1));
        } else if d.len == 0 {
            self.free_slot(slot);
        }
        added
    }

    /// Clear the `done` bits of entry `id`; returns the entry's segment if it is gone now.
    pub(crate) fn done(&mut self, id: QueueId, done: u32) -> Option<u32> {
        let d = self.slots.get_mut(id.slot as usize)?.as_mut()?;
        let (ci, i) = d.find(id.seq)?;
        let e = d.get_mut(ci, i);
        e.remaining &= !done;
        if e.remaining != 0 {
            return None;
        }
        let segment = e.segment;
        d.remove(ci, i);
        self.len -= 1;
        if d.len == 0 {
            self.free_slot(id.slot);
        }
        Some(segment)
    }

    fn free_slot(&mut self, slot: u32) {
        let Some(d) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.by_name.remove(&d.name);
        self.free.insert(slot);
        while let Some(None) = self.slots.last() {
            self.slots.pop();
            let end = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
            self.free.remove(&end);
        }
    }

    /// Destinations with entries, by name.
    pub(crate) fn destinations(&self) -> Vec<QueueDestination> {
        let mut v: Vec<QueueDestination> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, d)| {
                let d = d.as_ref()?;
                Some(QueueDestination {
                    name: d.name.clone(),
                    entries: d.len,
                    oldest: QueueId {
                        seq: d.first()?.seq,
                        slot: u32::try_from(slot).ok()?,
                    },
                })
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Up to `limit` ids of `destination`, oldest first, after `after` (by age) if given.
    pub(crate) fn ids(
        &self,
        destination: &str,
        after: Option<QueueId>,
        limit: usize,
    ) -> Vec<QueueId> {
        let Some(slot) = self.slot(destination) else {
            return Vec::new();
        };
        let Some(d) = self.destination(slot) else {
            return Vec::new();
        };
        let (ci, i) = after.map_or((0, 0), |a| d.after(a.seq));
        d.chunks
            .get(ci..)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .flat_map(|(k, c)| c[if k == 0 { i } else { 0 }..].iter())
            .take(limit)
            .map(|e| QueueId { seq: e.seq, slot })
            .collect()
    }

    /// Every destination with its slot (checkpoints).
    pub(crate) fn slots(&self) -> impl Iterator<Item = (u32, &Destination)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(s, d)| Some((u32::try_from(s).ok()?, d.as_ref()?)))
    }

    /// Rebuild from `(slot, name, entries)` (tests; checkpoints use [`QueueBuilder`]).
    #[cfg(test)]
    pub(crate) fn restore<E: IntoIterator<Item = Entry>>(
        next_seq: u64,
        destinations: impl IntoIterator<Item = (u32, String, E)>,
    ) -> Result<Queue, &'static str> {
        let mut b = QueueBuilder::new(next_seq);
        for (slot, name, entries) in destinations {
            b.destination(slot, name)?;
            for e in entries {
                b.entry(e)?;
            }
        }
        b.finish()
    }

    /// Take `other`'s chunks where they hold the same entries as ours: after the writer applied
    /// a batch to both copies of the index, this makes its copy share the readers' memory again.
    pub(crate) fn share_from(&mut self, other: &Queue) {
        for (a, b) in self.slots.iter_mut().zip(&other.slots) {
            let (Some(a), Some(b)) = (a, b) else {
                continue;
            };
            if a.chunks.len() != b.chunks.len() {
                continue;
            }
            for (x, y) in a.chunks.iter_mut().zip(&b.chunks) {
                if !Arc::ptr_eq(x, y) && x == y {
                    *x = y.clone();
                }
            }
        }
    }
}

/// Rebuilds a [`Queue`] from checkpoint data, destination after destination, checking what a
/// queue the planner made always satisfies: distinct slots below [`MAX_DESTINATIONS`] and
/// names, each destination with entries in increasing `seq` below `next_seq`, each with a
/// recipient left.
pub(crate) struct QueueBuilder {
    q: Queue,
    /// Slot of the destination entries go to.
    current: Option<u32>,
}

impl QueueBuilder {
    pub(crate) fn new(next_seq: u64) -> Self {
        QueueBuilder {
            q: Queue {
                next_seq,
                ..Queue::default()
            },
            current: None,
        }
    }

    /// Start the destination in `slot`; the entries that follow are its.
    pub(crate) fn destination(&mut self, slot: u32, name: String) -> Result<(), &'static str> {
        self.end_destination()?;
        if name.is_empty() {
            return Err("empty queue destination name");
        }
        let idx = slot as usize;
        if idx >= MAX_DESTINATIONS {
            return Err("queue slot out of range");
        }
        let q = &mut self.q;
        if idx >= q.slots.len() {
            q.slots.resize_with(idx + 1, || None);
        }
        if q.slots[idx].is_some() || q.by_name.insert(name.clone(), slot).is_some() {
            return Err("duplicate queue destination");
        }
        q.slots[idx] = Some(Destination::new(name));
        self.current = Some(slot);
        Ok(())
    }

    /// An entry of the current destination, newer than the one before.
    pub(crate) fn entry(&mut self, e: Entry) -> Result<(), &'static str> {
        let d = self
            .current
            .and_then(|s| self.q.slots[s as usize].as_mut())
            .ok_or("queue entry without destination")?;
        if e.remaining == 0 || e.seq >= self.q.next_seq || !d.push(e) {
            return Err("queue entries out of order");
        }
        self.q.len += 1;
        Ok(())
    }

    fn end_destination(&mut self) -> Result<(), &'static str> {
        if let Some(s) = self.current.take() {
            if self.q.slots[s as usize].as_ref().is_none_or(|d| d.len == 0) {
                return Err("queue destination without entries");
            }
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<Queue, &'static str> {
        self.end_destination()?;
        let q = &mut self.q;
        for (s, d) in q.slots.iter().enumerate() {
            if d.is_none() {
                q.free
                    .insert(u32::try_from(s).map_err(|_| "queue slot out of range")?);
            }
        }
        if matches!(q.slots.last(), Some(None)) {
            return Err("queue slots end in a free one");
        }
        Ok(self.q)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn entry(seq: u64, remaining: u32) -> Entry {
        Entry {
            seq,
            offset: seq * 10,
            segment: (seq / 100) as u32,
            remaining,
        }
    }

    /// The queue against a map from id to (destination, remaining); ops: add to one of 3
    /// destinations, done of bits of a random live entry. Chunk structure, derived fields and
    /// sharing stay consistent.
    fn run(ops: Vec<(bool, u8, u32, usize)>) {
        let names = ["a.example", "b.example", "[127.0.0.1]"];
        let mut q = Queue::default();
        let mut model: BTreeMap<u64, (String, u32)> = BTreeMap::new();
        let mut ids: BTreeMap<u64, QueueId> = BTreeMap::new();
        let mut writer = q.clone();
        for (add, dest, bits, pick) in ops {
            if add || model.is_empty() {
                let name = names[usize::from(dest) % 3];
                let slot = q.slot(name).unwrap_or_else(|| q.new_slots(1)[0]);
                let seq = q.next_seq();
                let bits = bits.max(1);
                assert!(q.add(slot, name, entry(seq, bits)));
                assert!(writer.add(slot, name, entry(seq, bits)));
                model.insert(seq, (name.to_owned(), bits));
                ids.insert(seq, QueueId { seq, slot });
            } else {
                let seq = *model.keys().nth(pick % model.len()).unwrap();
                let id = ids[&seq];
                let gone = q.done(id, bits);
                assert_eq!(writer.done(id, bits), gone);
                let rem = &mut model.get_mut(&seq).unwrap().1;
                *rem &= !bits;
                assert_eq!(gone.is_some(), *rem == 0);
                if *rem == 0 {
                    model.remove(&seq);
                    ids.remove(&seq);
                }
            }
            writer.share_from(&q);
            assert_eq!(writer, q);
            // The two copies share every chunk again.
            for ((_, a), (_, b)) in writer.slots().zip(q.slots()) {
                assert_eq!(a.chunks.len(), b.chunks.len());
                assert!(a
                    .chunks
                    .iter()
                    .zip(&b.chunks)
                    .all(|(x, y)| Arc::ptr_eq(x, y)));
            }
            assert_eq!(q.len() as usize, model.len());
            for (seq, (name, rem)) in &model {
                let (n, e) = q.get(ids[seq]).unwrap();
                assert_eq!((n, e.remaining), (name.as_str(), *rem));
            }
            for d in q.destinations() {
                let want: Vec<u64> = model
                    .iter()
                    .filter(|(_, (n, _))| *n == d.name)
                    .map(|(s, _)| *s)
                    .collect();
                let got: Vec<u64> = q
                    .ids(&d.name, None, usize::MAX)
                    .iter()
                    .map(|i| i.seq)
                    .collect();
                assert_eq!(got, want);
                assert_eq!(d.entries, want.len());
                assert_eq!(d.oldest.seq, want[0]);
                // Paging from any entry gives the rest.
                for (k, id) in q.ids(&d.name, None, usize::MAX).iter().enumerate() {
                    let rest: Vec<u64> =
                        q.ids(&d.name, Some(*id), 3).iter().map(|i| i.seq).collect();
                    let end = (k + 4).min(want.len());
                    assert_eq!(rest, want[k + 1..end]);
                }
                let slot = q.slot(&d.name).unwrap();
                let dest = q.destination(slot).unwrap();
                assert!(dest
                    .chunks
                    .iter()
                    .all(|c| !c.is_empty() && c.len() <= CHUNK));
            }
            let restored = Queue::restore(
                q.next_seq(),
                q.slots()
                    .map(|(s, d)| (s, d.name.clone(), d.iter().copied().collect::<Vec<_>>()))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            assert_eq!(restored, q);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn queue_matches_a_map(ops in proptest::collection::vec(
            (proptest::bool::weighted(0.6), any::<u8>(), any::<u32>(), any::<usize>()), 1..300)) {
            run(ops);
        }
    }

    #[test]
    fn many_entries_fill_chunks_and_removal_merges_them() {
        let mut q = Queue::default();
        for seq in 1..=5000u64 {
            assert!(q.add(0, "dead.example", entry(seq, 1)));
        }
        let d = q.destination(0).unwrap();
        assert_eq!(d.chunks.len(), 5000usize.div_ceil(CHUNK));
        assert!(d.chunks[..d.chunks.len() - 1]
            .iter()
            .all(|c| c.len() == CHUNK && c.capacity() == CHUNK));
        // Remove all but every 64th: chunks merge, so few chunks remain.
        for seq in 1..=5000u64 {
            if seq % 64 != 0 {
                assert_eq!(
                    q.done(QueueId { seq, slot: 0 }, 1),
                    Some((seq / 100) as u32)
                );
            }
        }
        let d = q.destination(0).unwrap();
        assert_eq!(d.len, 5000 / 64);
        assert!(d.chunks.len() <= 2, "{} chunks", d.chunks.len());
        // A clone shares every chunk; a change copies one.
        let mut c = q.clone();
        assert!(c.done(QueueId { seq: 64, slot: 0 }, 1).is_some());
        assert_eq!(q.len(), c.len() + 1);
        // Not an entry: nothing happens.
        assert_eq!(q.done(QueueId { seq: 65, slot: 0 }, 1), None);
        assert_eq!(q.done(QueueId { seq: 64, slot: 7 }, 1), None);
        // Emptying the destination frees its slot.
        for seq in (64..=5000u64).step_by(64) {
            q.done(QueueId { seq, slot: 0 }, u32::MAX);
        }
        assert_eq!(q.len(), 0);
        assert!(q.destinations().is_empty());
        assert_eq!(q.new_slots(2), vec![0, 1]);
        assert_eq!(
            q,
            Queue {
                next_seq: 5001,
                ..Queue::default()
            }
        );
    }

    #[test]
    fn slots_are_reused_lowest_first_and_ids_parse() {
        let mut q = Queue::default();
        assert!(q.add(0, "a", entry(1, 1)));
        assert!(q.add(1, "b", entry(2, 1)));
        assert!(q.add(2, "c", entry(3, 1)));
        // Wrong name for the slot, a slot beyond the next one, a name in another slot, an entry
        // not newer: ignored.
        assert!(!q.add(0, "x", entry(4, 1)));
        assert!(!q.add(9, "x", entry(4, 1)));
        assert!(!q.add(3, "a", entry(4, 1)));
        assert!(!q.add(0, "a", entry(1, 1)));
        assert!(!q.add(0, "a", entry(4, 0)));
        q.done(QueueId { seq: 2, slot: 1 }, 1);
        assert_eq!(q.new_slots(3), vec![1, 3, 4]);
        q.done(QueueId { seq: 3, slot: 2 }, 1);
        assert_eq!(q.new_slots(2), vec![1, 2]);
        let id = QueueId { seq: 1, slot: 0 };
        assert_eq!(id.to_string(), "1.0");
        assert_eq!("1.0".parse::<QueueId>(), Ok(id));
        assert!("1".parse::<QueueId>().is_err());
        assert!("x.0".parse::<QueueId>().is_err());
    }
}
