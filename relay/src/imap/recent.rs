//! `\Recent` (RFC 3501 §2.3.2): a message is recent for the first session that sees it after it
//! arrived, and for no other.
//!
//! Kept in memory for the process, like Dovecot's "first recent UID", and never written to the
//! store: per mailbox the highest UID some session has claimed. A read-write session that sees
//! new messages (SELECT, or a later sync) claims them in one step under a lock; whoever claims a
//! UID first holds it as recent. EXAMINE and STATUS only look. Nothing is done per delivery, and
//! a sync takes the lock only when it sees new messages. After a restart nothing is claimed, so
//! the first session to select a mailbox sees all of it as recent.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::store::{AccountId, MailboxId};

/// The claimed UIDs of every mailbox seen since the process started.
#[derive(Debug, Default)]
pub struct RecentUids {
    claimed: Mutex<HashMap<(AccountId, MailboxId), Claimed>>,
}

#[derive(Debug, Clone, Copy)]
struct Claimed {
    uid_validity: u32,
    /// Every UID up to this one was seen by some session.
    up_to: u32,
}

impl RecentUids {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Claim the UIDs up to `max_uid` of a mailbox: returns the first UID that is recent for
    /// the caller (those from it up to `max_uid`; none if it is above `max_uid`).
    pub fn claim(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uid_validity: u32,
        max_uid: u32,
    ) -> u32 {
        let mut map = self.claimed.lock().unwrap_or_else(PoisonError::into_inner);
        let c = map.entry((account, mailbox)).or_insert(Claimed {
            uid_validity,
            up_to: 0,
        });
        if c.uid_validity != uid_validity {
            *c = Claimed {
                uid_validity,
                up_to: 0,
            };
        }
        let first = c.up_to.saturating_add(1);
        c.up_to = c.up_to.max(max_uid);
        first
    }

    /// The first UID no session has claimed yet (EXAMINE, STATUS): claims nothing.
    pub fn first_unclaimed(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uid_validity: u32,
    ) -> u32 {
        let map = self.claimed.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(&(account, mailbox)) {
            Some(c) if c.uid_validity == uid_validity => c.up_to.saturating_add(1),
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_claim_wins() {
        let r = RecentUids::new();
        assert_eq!(r.first_unclaimed(1, 1, 7), 1);
        assert_eq!(r.claim(1, 1, 7, 3), 1);
        assert_eq!(r.claim(1, 1, 7, 3), 4);
        assert_eq!(r.first_unclaimed(1, 1, 7), 4);
        // Another mailbox and another account are separate.
        assert_eq!(r.claim(1, 2, 7, 3), 1);
        assert_eq!(r.claim(2, 1, 7, 3), 1);
        // A new UIDVALIDITY starts over.
        assert_eq!(r.first_unclaimed(1, 1, 8), 1);
        assert_eq!(r.claim(1, 1, 8, 2), 1);
        // A claim below what was claimed gets nothing.
        assert_eq!(r.claim(1, 1, 8, 1), 3);
        assert_eq!(r.first_unclaimed(1, 1, 8), 3);
    }
}
