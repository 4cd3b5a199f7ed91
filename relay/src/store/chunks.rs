//! What the index's `Arc`-shared chunk lists have in common (the queue's entries, `queue.rs`,
//! and a mailbox's messages, `messages.rs`). This module does no I/O.

use std::sync::Arc;

/// After a removal from `chunks[ci]`: drop the chunk if it is empty; if it holds less than a
/// quarter of `cap`, merge it into a neighbour that has room, else shrink its allocation, so
/// that removals in any order keep the memory near the live entries.
pub(crate) fn settle_after_remove<T: Clone>(chunks: &mut Vec<Arc<Vec<T>>>, ci: usize, cap: usize) {
    let n = chunks[ci].len();
    if n == 0 {
        chunks.remove(ci);
        return;
    }
    if n >= cap / 4 {
        return;
    }
    if ci > 0 && chunks[ci - 1].len() + n <= cap {
        let small = chunks.remove(ci);
        Arc::make_mut(&mut chunks[ci - 1]).extend_from_slice(&small);
    } else if ci + 1 < chunks.len() && chunks[ci + 1].len() + n <= cap {
        let next = chunks.remove(ci + 1);
        Arc::make_mut(&mut chunks[ci]).extend_from_slice(&next);
    } else {
        let c = Arc::make_mut(&mut chunks[ci]);
        if c.capacity() > 4 * n.max(4) {
            c.shrink_to(2 * n);
        }
    }
}
