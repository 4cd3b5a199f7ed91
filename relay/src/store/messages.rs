//! A mailbox's messages in UID order, the part of the index that grows with the mail stored.
//!
//! # Memory
//! The index exists twice: the readers' copy and the writer's planning copy (see `writer.rs`).
//! Kept as plain vectors, every stored message cost its [`MessageMeta`] twice. Here the
//! messages live in chunks of at most [`CHUNK`] behind `Arc`s, as the queue's entries do
//! (`queue.rs`): a clone of the index shares them, a change copies only the chunk it touches
//! (`Arc::make_mut`), and after each commit the writer takes the readers' chunks back for the
//! mailboxes the commit changed ([`Messages::share_from`]), so the two copies cost about one.
//! A chunk that shrinks below a quarter of [`CHUNK`] is merged into a neighbour that has room,
//! and a chunk that grows past [`CHUNK`] (an insert in the middle, which only replay of an
//! unusual log does) is split.
//!
//! This module does no I/O.

use std::fmt;
use std::sync::Arc;

use super::MessageMeta;

/// Messages per chunk (a power of two, so a chunk grown by appends has no spare capacity when
/// full). 64 entries of 48 bytes: 3 KiB, the most the writer copies for a mailbox a batch
/// changes, against about 1 byte per message of chunk overhead.
pub(crate) const CHUNK: usize = 64;

/// The messages of one mailbox, in increasing UID order.
#[derive(Clone, Default)]
pub struct Messages {
    /// Non-empty chunks, UIDs increasing across all of them.
    chunks: Vec<Arc<Vec<MessageMeta>>>,
    /// Messages in all chunks.
    len: usize,
}

/// Logical equality: the same messages, whatever the chunk boundaries.
impl PartialEq for Messages {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Messages {}

impl fmt::Debug for Messages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Messages {
    /// No messages.
    pub fn new() -> Self {
        Messages::default()
    }

    /// The messages of `v`, which must be in strictly increasing UID order (checked by the
    /// caller, e.g. the checkpoint loader).
    pub(crate) fn from_sorted(v: Vec<MessageMeta>) -> Self {
        let len = v.len();
        let chunks = v.chunks(CHUNK).map(|c| Arc::new(c.to_vec())).collect();
        Messages { chunks, len }
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The messages in UID order.
    pub fn iter(&self) -> Iter<'_> {
        fn chunk(c: &Arc<Vec<MessageMeta>>) -> std::slice::Iter<'_, MessageMeta> {
            c.iter()
        }
        self.chunks.iter().flat_map(chunk as _)
    }

    /// The messages as one vector (a mailbox view's copy).
    pub fn to_vec(&self) -> Vec<MessageMeta> {
        let mut v = Vec::with_capacity(self.len);
        for c in &self.chunks {
            v.extend_from_slice(c);
        }
        v
    }

    /// `(chunk, position)` of `uid`, or where it would go: `Err` of the chunk that should hold
    /// it and the position in it.
    fn search(&self, uid: u32) -> Result<(usize, usize), (usize, usize)> {
        // The first chunk whose last UID is not below `uid` holds it if anything does.
        let ci = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|m| m.uid < uid));
        if ci == self.chunks.len() {
            // Past every message: the end of the last chunk.
            let ci = ci.saturating_sub(1);
            let i = self.chunks.get(ci).map_or(0, |c| c.len());
            return Err((ci, i));
        }
        match self.chunks[ci].binary_search_by_key(&uid, |m| m.uid) {
            Ok(i) => Ok((ci, i)),
            Err(i) => Err((ci, i)),
        }
    }

    /// The message with `uid`.
    pub fn get(&self, uid: u32) -> Option<&MessageMeta> {
        let (ci, i) = self.search(uid).ok()?;
        Some(&self.chunks[ci][i])
    }

    /// Whether a message has `uid`.
    pub fn contains(&self, uid: u32) -> bool {
        self.search(uid).is_ok()
    }

    /// The message with `uid`, to change (its chunk is copied first if shared).
    pub(crate) fn get_mut(&mut self, uid: u32) -> Option<&mut MessageMeta> {
        let (ci, i) = self.search(uid).ok()?;
        Some(&mut Arc::make_mut(&mut self.chunks[ci])[i])
    }

    /// Add `m` at its UID's place; false (nothing changed) if its UID is there already.
    pub(crate) fn insert(&mut self, m: MessageMeta) -> bool {
        let (ci, i) = match self.search(m.uid) {
            Ok(_) => return false,
            Err(at) => at,
        };
        self.len += 1;
        let Some(chunk) = self.chunks.get_mut(ci) else {
            let mut c = Vec::with_capacity(4);
            c.push(m);
            self.chunks.push(Arc::new(c));
            return true;
        };
        if i == chunk.len() && chunk.len() == CHUNK {
            // An append to a full chunk (the usual case: UIDs grow): start the next one.
            let mut c = Vec::with_capacity(4);
            c.push(m);
            self.chunks.insert(ci + 1, Arc::new(c));
            return true;
        }
        let c = Arc::make_mut(chunk);
        c.insert(i, m);
        if c.len() == CHUNK {
            c.shrink_to_fit();
        } else if c.len() > CHUNK {
            let tail = c.split_off(c.len() / 2);
            c.shrink_to_fit();
            self.chunks.insert(ci + 1, Arc::new(tail));
        }
        true
    }

    /// Remove the message with `uid`; merge a chunk that became small into a neighbour.
    pub(crate) fn remove(&mut self, uid: u32) -> Option<MessageMeta> {
        let (ci, i) = self.search(uid).ok()?;
        let m = Arc::make_mut(&mut self.chunks[ci]).remove(i);
        self.len -= 1;
        super::chunks::settle_after_remove(&mut self.chunks, ci, CHUNK);
        Some(m)
    }

    /// Call `f` on every message `pick` selects; only the chunks holding one are copied.
    pub(crate) fn update_where(
        &mut self,
        pick: impl Fn(&MessageMeta) -> bool,
        mut f: impl FnMut(&mut MessageMeta),
    ) {
        for chunk in &mut self.chunks {
            if chunk.iter().any(&pick) {
                for m in Arc::make_mut(chunk).iter_mut().filter(|m| pick(m)) {
                    f(m);
                }
            }
        }
    }

    /// Take `other`'s chunks, which hold the same messages as ours: the writer calls it after
    /// it applied the same records to both copies, so that they share memory again. (The
    /// contents are not compared outside debug builds: the two copies are equal by
    /// construction, and comparing cost as much as the copy it saves.)
    pub(crate) fn share_from(&mut self, other: &Messages) {
        debug_assert_eq!(self, other, "the index's copies differ");
        self.chunks.clone_from(&other.chunks);
        self.len = other.len;
    }

    /// Chunks not shared with `other` (for tests of the sharing).
    #[cfg(test)]
    pub(crate) fn unshared_chunks(&self, other: &Messages) -> usize {
        self.chunks
            .iter()
            .filter(|x| !other.chunks.iter().any(|y| Arc::ptr_eq(x, y)))
            .count()
    }
}

/// The messages of a [`Messages`] in UID order.
pub type Iter<'a> = std::iter::FlatMap<
    std::slice::Iter<'a, Arc<Vec<MessageMeta>>>,
    std::slice::Iter<'a, MessageMeta>,
    fn(&'a Arc<Vec<MessageMeta>>) -> std::slice::Iter<'a, MessageMeta>,
>;

impl<'a> IntoIterator for &'a Messages {
    type Item = &'a MessageMeta;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BodyRef;

    fn meta(uid: u32) -> MessageMeta {
        MessageMeta {
            uid,
            flags: 0,
            modseq: u64::from(uid),
            internal_date: 0,
            size: 10,
            body: BodyRef {
                segment: uid % 3,
                offset: u64::from(uid) * 10,
                len: 10,
            },
        }
    }

    /// The chunks keep their invariants: non-empty, at most `CHUNK`, UIDs increasing.
    fn check(m: &Messages) {
        assert_eq!(m.chunks.iter().map(|c| c.len()).sum::<usize>(), m.len);
        assert!(m.chunks.iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
        let uids: Vec<u32> = m.iter().map(|x| x.uid).collect();
        assert!(uids.windows(2).all(|w| w[0] < w[1]), "UIDs out of order");
    }

    /// Inserts and removals in a pseudo-random order against a sorted vector.
    #[test]
    fn matches_a_sorted_vector() {
        let mut m = Messages::new();
        let mut model: Vec<u32> = Vec::new();
        let mut x = 12345u32;
        for step in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let uid = if step < 8_000 {
                step + 1
            } else {
                x % 12_000 + 1
            };
            if x.is_multiple_of(3) || step < 8_000 {
                let added = m.insert(meta(uid));
                match model.binary_search(&uid) {
                    Ok(_) => assert!(!added),
                    Err(p) => {
                        assert!(added);
                        model.insert(p, uid);
                    }
                }
            } else {
                let removed = m.remove(uid).map(|r| r.uid);
                match model.binary_search(&uid) {
                    Ok(p) => {
                        assert_eq!(removed, Some(uid));
                        model.remove(p);
                    }
                    Err(_) => assert_eq!(removed, None),
                }
            }
            assert_eq!(m.contains(uid), model.binary_search(&uid).is_ok());
            if step.is_multiple_of(500) {
                check(&m);
                assert_eq!(m.iter().map(|x| x.uid).collect::<Vec<_>>(), model);
            }
        }
        check(&m);
        assert_eq!(m.to_vec().iter().map(|x| x.uid).collect::<Vec<_>>(), model);
        // Removals in any order keep the chunks reasonably full.
        assert!(m.chunks.len() <= model.len() / (CHUNK / 4) + 2);
    }

    #[test]
    fn a_clone_shares_until_changed_and_shares_again_after() {
        let mut readers = Messages::from_sorted((1..=1000).map(meta).collect());
        check(&readers);
        let mut writer = readers.clone();
        assert_eq!(writer.unshared_chunks(&readers), 0);

        // The writer plans: one flag change and one append.
        writer.get_mut(10).unwrap().flags = 1;
        assert!(writer.insert(meta(1001)));
        assert_eq!(writer.unshared_chunks(&readers), 2);
        // The readers apply the same changes after the commit; then the writer shares again.
        readers.get_mut(10).unwrap().flags = 1;
        assert!(readers.insert(meta(1001)));
        assert_eq!(writer, readers);
        writer.share_from(&readers);
        assert_eq!(writer.unshared_chunks(&readers), 0);
        assert_eq!(readers.get(10).unwrap().flags, 1);
        assert_eq!(readers.get(1001).unwrap().uid, 1001);
        assert!(readers.get(5000).is_none());
    }

    #[test]
    fn update_where_copies_only_the_chunks_it_changes() {
        let readers = Messages::from_sorted((1..=1000).map(meta).collect());
        let mut writer = readers.clone();
        writer.update_where(|m| m.uid == 3 || m.uid == 4, |m| m.size = 99);
        assert_eq!(writer.unshared_chunks(&readers), 1);
        assert_eq!(writer.get(3).unwrap().size, 99);
        assert_eq!(writer.get(5).unwrap().size, 10);
        assert_eq!(readers.get(3).unwrap().size, 10);
    }

    #[test]
    fn inserts_in_the_middle_of_full_chunks_split_them() {
        let mut m = Messages::from_sorted((1..=CHUNK as u32).map(|u| meta(u * 2)).collect());
        for u in 0..CHUNK as u32 {
            assert!(m.insert(meta(u * 2 + 1)));
        }
        check(&m);
        assert_eq!(m.len(), 2 * CHUNK);
        assert!(m.chunks.len() >= 2);
    }
}
