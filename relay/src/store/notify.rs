//! Push notifications in the store (chatmail.md §6.1, §6.2): the accounts' device tokens and the
//! notifications still to send.
//!
//! **Device tokens** live in the account's metadata, as the value of the INBOX entry
//! [`TOKENS_KEY`]: one line per token, `<unix seconds it was last set> <token>\n`, so they are
//! checkpointed and replayed with the rest of the metadata. Only `Op::SetDeviceToken` and
//! `Op::RemoveDeviceToken` write that value (planned in the writer, so two devices setting their
//! tokens at once both keep theirs); the IMAP handler shows it as the space-separated list of
//! live tokens. A token lives [`TOKEN_LIFETIME`] after it was last set; an account keeps at most
//! [`MAX_TOKENS`] (the least recently set goes first), each at most [`MAX_TOKEN_LEN`] bytes.
//!
//! **Pending notifications** ([`Notifications`]) are one entry per account: "new mail arrived
//! at `at`, tell every device". `Op::Deliver` adds it (record kind 18, in the same commit as the
//! message, so it is as durable as the message and costs the delivery no extra `fdatasync`) for
//! each recipient with a live token, except the local sender itself; a newer delivery replaces
//! the entry (new `seq`). The notifier finishes it with `Op::NotifyDone` (kind 19), which removes
//! the entry only if its `seq` is still the one it sent for: a delivery during the POST leaves a
//! newer entry, so the device is told again. Memory: one small entry per account with undelivered
//! notifications, whatever the traffic.

use std::collections::{BTreeSet, HashMap};

use super::AccountId;

/// The INBOX metadata entry holding an account's device tokens.
pub const TOKENS_KEY: &str = "/private/devicetoken";
/// Tokens kept per account.
pub const MAX_TOKENS: usize = 16;
/// Longest token accepted (Delta Chat's are OpenPGP-encrypted, well under 1 KiB).
pub const MAX_TOKEN_LEN: usize = 3072;
/// How long a token lives after it was last set (the reference's 90 days).
pub const TOKEN_LIFETIME: i64 = 90 * 24 * 3600;
/// Tokens set further than this in the future (a clock jump) count as expired, as at the
/// reference.
pub const FUTURE_SLACK: i64 = 60;

/// One device token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The opaque token.
    pub value: String,
    /// Unix seconds it was last set.
    pub set_at: i64,
}

impl Token {
    /// Whether the token still counts at `now`.
    pub fn live(&self, now: i64) -> bool {
        self.set_at <= now.saturating_add(FUTURE_SLACK)
            && self.set_at.saturating_add(TOKEN_LIFETIME) > now
    }
}

/// Whether `token` can be stored: non-empty UTF-8 without spaces or control characters (GET
/// returns the tokens space-separated), at most [`MAX_TOKEN_LEN`] bytes.
pub fn check_token(token: &[u8]) -> Result<&str, &'static str> {
    if token.is_empty() {
        return Err("empty device token");
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err("device token too long");
    }
    let s = std::str::from_utf8(token).map_err(|_| "device token is not UTF-8")?;
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("device token with spaces or control characters");
    }
    Ok(s)
}

/// The tokens of a stored value, in the order they were set; lines that do not parse are
/// skipped.
pub fn decode(value: &[u8]) -> Vec<Token> {
    let Ok(text) = std::str::from_utf8(value) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (at, token) = line.split_once(' ')?;
            let set_at = at.parse().ok()?;
            check_token(token.as_bytes()).ok()?;
            Some(Token {
                value: token.to_owned(),
                set_at,
            })
        })
        .collect()
}

/// The stored value of `tokens`.
pub fn encode(tokens: &[Token]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in tokens {
        out.extend_from_slice(format!("{} {}\n", t.set_at, t.value).as_bytes());
    }
    out
}

/// The live tokens of a stored value at `now`.
pub fn live(value: Option<&[u8]>, now: i64) -> Vec<String> {
    value
        .map(decode)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.live(now))
        .map(|t| t.value)
        .collect()
}

/// The tokens after `token` was set at `now`: expired ones dropped, `token` moved to the end
/// with its new time, the least recently set dropped beyond [`MAX_TOKENS`].
pub fn with_token(current: Vec<Token>, token: &str, now: i64) -> Vec<Token> {
    let mut v: Vec<Token> = current
        .into_iter()
        .filter(|t| t.live(now) && t.value != token)
        .collect();
    v.push(Token {
        value: token.to_owned(),
        set_at: now,
    });
    v.sort_by_key(|t| t.set_at);
    let excess = v.len().saturating_sub(MAX_TOKENS);
    v.drain(..excess);
    v
}

/// One account's notification still to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingNotify {
    /// The account.
    pub account: AccountId,
    /// Sequence number of the delivery that asked for it.
    pub seq: u64,
    /// Unix seconds of that delivery (the 5-hour deadline counts from it).
    pub at: i64,
}

/// Pending notifications: the index's part (changed only by applying kinds 18 and 19).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notifications {
    /// Next sequence number to hand out.
    next_seq: u64,
    /// Per account: `(seq, at)`.
    pending: HashMap<AccountId, (u64, i64)>,
    /// The same entries by `(seq, account)`, so the notifier reads only what is new.
    by_seq: BTreeSet<(u64, AccountId)>,
}

impl Notifications {
    /// The next sequence number (changes with every `NotifyAdd`: the notifier's wake-up).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Number of accounts with a pending notification.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The pending notification of `account`.
    pub fn get(&self, account: AccountId) -> Option<PendingNotify> {
        self.pending
            .get(&account)
            .map(|&(seq, at)| PendingNotify { account, seq, at })
    }

    /// Every pending notification, in `seq` order.
    pub fn all(&self) -> Vec<PendingNotify> {
        self.since(0, usize::MAX)
    }

    /// Up to `limit` pending notifications with `seq >= from`, in `seq` order.
    pub fn since(&self, from: u64, limit: usize) -> Vec<PendingNotify> {
        self.by_seq
            .range((from, 0)..)
            .take(limit)
            .filter_map(|&(_, account)| self.get(account))
            .collect()
    }

    /// A delivery at `at` asks to notify `account` (record kind 18).
    pub(crate) fn add(&mut self, account: AccountId, seq: u64, at: i64) {
        if let Some((old, _)) = self.pending.insert(account, (seq, at)) {
            self.by_seq.remove(&(old, account));
        }
        self.by_seq.insert((seq, account));
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
    }

    /// The notification `seq` of `account` was sent (kind 19): removed if it is still the
    /// pending one.
    pub(crate) fn done(&mut self, account: AccountId, seq: u64) {
        if self.pending.get(&account).is_some_and(|p| p.0 == seq) {
            self.pending.remove(&account);
            self.by_seq.remove(&(seq, account));
        }
    }

    /// The state a checkpoint holds: `(next_seq, pending)`.
    pub(crate) fn parts(&self) -> (u64, Vec<PendingNotify>) {
        (self.next_seq, self.all())
    }

    /// The state from a checkpoint's parts.
    pub(crate) fn from_parts(
        next_seq: u64,
        pending: impl IntoIterator<Item = PendingNotify>,
    ) -> Self {
        let mut n = Notifications {
            next_seq,
            ..Notifications::default()
        };
        for p in pending {
            n.add(p.account, p.seq, p.at);
        }
        n
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_expire_and_stay_bounded() {
        let now = 1_800_000_000;
        let mut v = Vec::new();
        for i in 0..(MAX_TOKENS as i64 + 4) {
            v = with_token(v, &format!("tok{i}"), now + i);
        }
        assert_eq!(v.len(), MAX_TOKENS);
        assert_eq!(v[0].value, "tok4", "the least recently set go first");
        // Setting an old token again moves it to the end instead of adding a second copy.
        v = with_token(v, "tok4", now + 100);
        assert_eq!(v.len(), MAX_TOKENS);
        assert_eq!(v.last().unwrap().value, "tok4");
        assert_eq!(v.iter().filter(|t| t.value == "tok4").count(), 1);
        let stored = encode(&v);
        assert_eq!(decode(&stored), v);
        let all = live(Some(&stored), now + 100);
        assert_eq!(all.len(), MAX_TOKENS);
        // 90 days after the last set, a token is gone.
        let later = now + 100 + TOKEN_LIFETIME;
        assert_eq!(live(Some(&stored), later), Vec::<String>::new());
        assert!(with_token(v.clone(), "new", later).len() == 1);
        // Set more than a minute in the future: not live.
        let future = vec![Token {
            value: "f".into(),
            set_at: now + 61,
        }];
        assert!(live(Some(&encode(&future)), now).is_empty());
        // Damaged lines are skipped, the rest kept.
        let mut damaged = b"garbage\n12 \n-5 ok\nx y\n".to_vec();
        damaged.extend_from_slice(&stored[..20]);
        let d = decode(&damaged);
        assert_eq!(d[0].value, "ok");
        assert!(decode(&[0xff, 0xfe]).is_empty());
    }

    #[test]
    fn token_checks() {
        assert_eq!(check_token(b"openpgp:abc"), Ok("openpgp:abc"));
        for bad in [
            &b""[..],
            b"a b",
            b"a\nb",
            b"\0",
            &[0xc3, 0x28],
            &[b'x'; MAX_TOKEN_LEN + 1],
        ] {
            assert!(check_token(bad).is_err(), "{bad:?}");
        }
        assert!(check_token(&[b'x'; MAX_TOKEN_LEN]).is_ok());
    }

    #[test]
    fn done_removes_only_the_notification_it_sent_for() {
        let mut n = Notifications::default();
        n.add(7, 0, 100);
        n.add(8, 0, 100);
        n.add(7, 1, 101);
        assert_eq!(n.next_seq(), 2);
        assert_eq!(
            n.since(1, 10).iter().map(|p| p.account).collect::<Vec<_>>(),
            [7]
        );
        assert_eq!(n.since(0, 10).len(), 2);
        n.done(8, 0);
        n.done(7, 0);
        assert_eq!(
            n.get(7).map(|p| p.seq),
            Some(1),
            "a newer delivery stays pending"
        );
        n.done(7, 1);
        assert!(n.is_empty());
        let (next, all) = n.parts();
        assert_eq!(Notifications::from_parts(next, all), n);
    }
}
