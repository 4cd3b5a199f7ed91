//! Per-account caps: how much one account may make the relay keep in its in-memory index, beyond
//! the storage quota. With open sign-up anyone can make an account, so every per-account
//! collection that a client grows by command has a cap here, checked by the handler against the
//! account's current state before the write is committed, and refused with a `NO` naming the
//! cap.
//!
//! | limit | cap | refused with |
//! |---|---|---|
//! | mailboxes (INBOX included) | [`MAX_MAILBOXES`] | `NO [LIMIT]` (RFC 5530) |
//! | subscriptions | [`MAX_SUBSCRIPTIONS`] | `NO [LIMIT]` |
//! | METADATA entries (server and mailbox ones) | [`MAX_METADATA_ENTRIES`] | `NO [METADATA TOOMANY]` (RFC 5464 §4.3) |
//! | METADATA value bytes in all | [`MAX_METADATA_BYTES`] | `NO [METADATA MAXSIZE n]`, `n` what would still fit |
//!
//! Adding a limit (e.g. push device tokens): a variant of [`Limit`] with its cap in
//! [`Limit::max`] and its reply in [`Limit::refusal`], and a [`check`] call in the handler that
//! grows the collection. The check runs against the store's view when the command starts, so two
//! sessions of one account writing at the same moment can overshoot a cap by one command each;
//! the growth stays bounded.

/// Mailboxes per account, INBOX included.
pub const MAX_MAILBOXES: u64 = 1000;
/// Subscribed names per account (they need not exist).
pub const MAX_SUBSCRIPTIONS: u64 = 1000;
/// METADATA entries per account (RFC 5464 server entries and all mailboxes' entries together).
pub const MAX_METADATA_ENTRIES: u64 = 100;
/// Sum of the sizes of an account's METADATA values.
pub const MAX_METADATA_BYTES: u64 = 64 * 1024;
/// Longest name a subscription may have (as for mailboxes we create).
pub const MAX_SUBSCRIPTION_NAME: usize = 255;

/// A capped per-account resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`MAX_MAILBOXES`]
    Mailboxes,
    /// [`MAX_SUBSCRIPTIONS`]
    Subscriptions,
    /// [`MAX_METADATA_ENTRIES`]
    MetadataEntries,
    /// [`MAX_METADATA_BYTES`]
    MetadataBytes,
}

impl Limit {
    /// The cap.
    pub const fn max(self) -> u64 {
        match self {
            Limit::Mailboxes => MAX_MAILBOXES,
            Limit::Subscriptions => MAX_SUBSCRIPTIONS,
            Limit::MetadataEntries => MAX_METADATA_ENTRIES,
            Limit::MetadataBytes => MAX_METADATA_BYTES,
        }
    }

    /// The tagged reply text (after the tag) refusing a command that would take usage from
    /// `before` past the cap.
    pub fn refusal(self, before: u64) -> String {
        let max = self.max();
        match self {
            Limit::Mailboxes => format!("NO [LIMIT] Too many mailboxes (at most {max})"),
            Limit::Subscriptions => format!("NO [LIMIT] Too many subscriptions (at most {max})"),
            Limit::MetadataEntries => {
                format!("NO [METADATA TOOMANY] Too many metadata entries (at most {max})")
            }
            Limit::MetadataBytes => format!(
                "NO [METADATA MAXSIZE {}] Metadata too large (at most {max} bytes in all)",
                max.saturating_sub(before)
            ),
        }
    }
}

/// `Ok` if usage may go from `before` to `after`; else the refusal. Shrinking is always allowed
/// (an account over a lowered cap can still clean up).
pub fn check(limit: Limit, before: u64, after: u64) -> Result<(), String> {
    if after <= before || after <= limit.max() {
        Ok(())
    } else {
        Err(limit.refusal(before))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_past_the_cap_is_refused_shrinking_is_not() {
        assert_eq!(check(Limit::Mailboxes, 999, 1000), Ok(()));
        assert_eq!(
            check(Limit::Mailboxes, 1000, 1001),
            Err("NO [LIMIT] Too many mailboxes (at most 1000)".to_owned())
        );
        assert_eq!(check(Limit::Subscriptions, 1500, 1499), Ok(()));
        assert_eq!(
            check(Limit::MetadataBytes, 60 * 1024, 70 * 1024),
            Err(
                "NO [METADATA MAXSIZE 4096] Metadata too large (at most 65536 bytes in all)"
                    .to_owned()
            )
        );
        assert!(check(Limit::MetadataEntries, 100, 101)
            .unwrap_err()
            .starts_with("NO [METADATA TOOMANY]"));
    }
}
