//! Retention: which accounts and messages are expired at a given time (chatmail.md §4.5, §4.6).
//!
//! Everything here is a pure decision over an account snapshot ([`AccountInfo`]) and its message
//! metas: the caller passes `now` (unix seconds) and gets back what must go. This module never
//! reads a clock, never touches the store and never deletes anything; the admin socket
//! (`crate::admin`) turns a decision into `store.commit(Op::Expunge / Op::DeleteAccount)`.
//!
//! The rules, as the reference's `expire.py` / `chatmail-quota-expire` apply them:
//! 1. an account whose last login (day granularity) is older than `delete_inactive_users_after`
//!    days is deleted whole; an account that never logged in counts from its creation;
//! 2. otherwise every message whose INTERNALDATE is older than `delete_mails_after` days goes;
//! 3. otherwise a message larger than [`LARGE_MESSAGE_BYTES`] older than `delete_large_after` days
//!    goes (the reference limits this to Maildir `cur/`; the store has no such distinction, so it
//!    applies to every mailbox);
//! 4. then, if the remaining messages still exceed the quota target (70 % of
//!    `max_mailbox_size`), the oldest go first until the account is at or below the target, but
//!    never a message younger than [`TRIM_MIN_AGE_SECS`].
//!
//! Comparisons are strict like the reference's (`mtime < cutoff`): a message exactly
//! `delete_mails_after` days old stays.

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::store::{AccountInfo, MailboxId, MessageMeta};

/// Seconds in a day.
pub const DAY_SECS: i64 = 86_400;
/// Messages strictly larger than this are "large" for `delete_large_after` (chatmail.md §4.5).
pub const LARGE_MESSAGE_BYTES: u64 = 200_000;
/// The quota trim never removes a message younger than this (chatmail.md §4.6).
pub const TRIM_MIN_AGE_SECS: i64 = DAY_SECS;
/// The quota trim target, in percent of `max_mailbox_size` (chatmail.md §4.6).
pub const QUOTA_TARGET_PERCENT: u64 = 70;

/// What the retention job applies. `None` disables a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// `delete_mails_after`, days.
    pub delete_mails_after_days: Option<u32>,
    /// `delete_large_after`, days.
    pub delete_large_after_days: Option<u32>,
    /// Messages strictly larger than this many bytes are large.
    pub large_message_bytes: u64,
    /// `delete_inactive_users_after`, days.
    pub delete_inactive_users_after_days: Option<u32>,
    /// Trim accounts above this many bytes, oldest first.
    pub quota_target_bytes: Option<u64>,
}

impl Policy {
    /// The reference's daily job for this configuration.
    pub fn from_config(config: &Config) -> Policy {
        Policy {
            delete_mails_after_days: Some(config.delete_mails_after),
            delete_large_after_days: Some(config.delete_large_after),
            large_message_bytes: LARGE_MESSAGE_BYTES,
            delete_inactive_users_after_days: Some(config.delete_inactive_users_after),
            quota_target_bytes: Some(quota_target(config.max_mailbox_size)),
        }
    }
}

/// 70 % of `max_mailbox_size`.
pub fn quota_target(max_mailbox_size: u64) -> u64 {
    max_mailbox_size / 100 * QUOTA_TARGET_PERCENT
        + max_mailbox_size % 100 * QUOTA_TARGET_PERCENT / 100
}

/// Why a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Older than `delete_mails_after`.
    Age,
    /// Large and older than `delete_large_after`.
    Large,
    /// Removed by the quota trim.
    Quota,
}

/// One message to expunge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Victim {
    /// Its mailbox.
    pub mailbox: MailboxId,
    /// Its UID.
    pub uid: u32,
    /// Its size in bytes.
    pub size: u64,
    /// Why.
    pub reason: Reason,
}

/// What happens to one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing expires.
    Keep,
    /// The whole account goes (inactive).
    DeleteAccount {
        /// Day of the last activity used: the last login, or the creation day if later.
        last_active_day: i64,
        /// The account holds no messages (an empty leftover).
        empty: bool,
    },
    /// These messages go; the account stays.
    Expunge(Vec<Victim>),
}

/// Cutoff time for "older than `days`": messages strictly before it are expired.
fn cutoff(now: i64, days: u32) -> i64 {
    now.saturating_sub(i64::from(days).saturating_mul(DAY_SECS))
}

/// The day of the account's last activity: its last login day, or its creation day if that is
/// later (an account never logged into counts from its creation).
pub fn last_active_day(account: &AccountInfo) -> i64 {
    i64::from(account.last_login_day).max(account.created.div_euclid(DAY_SECS))
}

/// Whether `account` has been inactive for longer than `days` at `now` (chatmail.md §4.5: the last
/// login, rounded down to the day, is older than the cutoff).
pub fn is_inactive_at(now: i64, days: u32, account: &AccountInfo) -> bool {
    last_active_day(account).saturating_mul(DAY_SECS) < cutoff(now, days)
}

/// Messages older than `days` at `now`; with `larger_than`, only those strictly larger.
pub fn old_messages_at(
    now: i64,
    days: u32,
    larger_than: Option<u64>,
    reason: Reason,
    messages: &[(MailboxId, MessageMeta)],
) -> Vec<Victim> {
    let cut = cutoff(now, days);
    messages
        .iter()
        .filter(|(_, m)| m.internal_date < cut)
        .filter(|(_, m)| larger_than.is_none_or(|l| u64::from(m.size) > l))
        .map(|&(mailbox, m)| Victim {
            mailbox,
            uid: m.uid,
            size: u64::from(m.size),
            reason,
        })
        .collect()
}

/// The quota trim: the oldest messages (by INTERNALDATE, then mailbox and UID) until the sum of
/// sizes is at or below `target_bytes`, skipping messages younger than [`TRIM_MIN_AGE_SECS`].
/// Stops short of the target if only young messages remain.
pub fn trim_at(now: i64, target_bytes: u64, messages: &[(MailboxId, MessageMeta)]) -> Vec<Victim> {
    let mut used: u64 = messages.iter().map(|(_, m)| u64::from(m.size)).sum();
    if used <= target_bytes {
        return Vec::new();
    }
    let young = now.saturating_sub(TRIM_MIN_AGE_SECS);
    let mut candidates: Vec<&(MailboxId, MessageMeta)> = messages
        .iter()
        .filter(|(_, m)| m.internal_date <= young)
        .collect();
    candidates.sort_by_key(|(mb, m)| (m.internal_date, *mb, m.uid));
    let mut out = Vec::new();
    for &&(mailbox, m) in &candidates {
        if used <= target_bytes {
            break;
        }
        used -= u64::from(m.size);
        out.push(Victim {
            mailbox,
            uid: m.uid,
            size: u64::from(m.size),
            reason: Reason::Quota,
        });
    }
    out
}

/// The whole daily job for one account at `now`: inactivity first, then age, large-and-age, and
/// the quota trim over what is left.
pub fn decide_at(
    now: i64,
    policy: &Policy,
    account: &AccountInfo,
    messages: &[(MailboxId, MessageMeta)],
) -> Decision {
    if let Some(days) = policy.delete_inactive_users_after_days {
        if is_inactive_at(now, days, account) {
            return Decision::DeleteAccount {
                last_active_day: last_active_day(account),
                empty: messages.is_empty(),
            };
        }
    }
    let mut victims = Vec::new();
    let mut rest: Vec<(MailboxId, MessageMeta)> = Vec::with_capacity(messages.len());
    let age_cut = policy.delete_mails_after_days.map(|d| cutoff(now, d));
    let large_cut = policy.delete_large_after_days.map(|d| cutoff(now, d));
    for &(mailbox, m) in messages {
        let size = u64::from(m.size);
        let reason = if age_cut.is_some_and(|c| m.internal_date < c) {
            Some(Reason::Age)
        } else if large_cut.is_some_and(|c| m.internal_date < c)
            && size > policy.large_message_bytes
        {
            Some(Reason::Large)
        } else {
            None
        };
        match reason {
            Some(reason) => victims.push(Victim {
                mailbox,
                uid: m.uid,
                size,
                reason,
            }),
            None => rest.push((mailbox, m)),
        }
    }
    if let Some(target) = policy.quota_target_bytes {
        victims.extend(trim_at(now, target, &rest));
    }
    if victims.is_empty() {
        Decision::Keep
    } else {
        Decision::Expunge(victims)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::BodyRef;

    const NOW: i64 = 1_800_000_000;

    fn acct(last_login_day: u32, created: i64) -> AccountInfo {
        AccountInfo {
            id: 7,
            addr: "abc123def@[127.0.0.1]".into(),
            password_hash: String::new(),
            created,
            last_login_day,
            bytes_used: 0,
            messages: 0,
            enforce_e2ee_incoming: true,
        }
    }

    fn today() -> u32 {
        (NOW / DAY_SECS) as u32
    }

    fn msg(mailbox: MailboxId, uid: u32, age_secs: i64, size: u32) -> (MailboxId, MessageMeta) {
        (
            mailbox,
            MessageMeta {
                uid,
                flags: 0,
                modseq: 1,
                internal_date: NOW - age_secs,
                size,
                body: BodyRef {
                    segment: 0,
                    offset: 0,
                    len: size,
                },
            },
        )
    }

    fn uids(v: &[Victim]) -> Vec<(MailboxId, u32, Reason)> {
        let mut out: Vec<_> = v.iter().map(|x| (x.mailbox, x.uid, x.reason)).collect();
        out.sort();
        out
    }

    fn policy() -> Policy {
        Policy::from_config(&Config::dev("/nonexistent".into()))
    }

    #[test]
    fn policy_defaults_match_the_reference() {
        let p = policy();
        assert_eq!(p.delete_mails_after_days, Some(20));
        assert_eq!(p.delete_large_after_days, Some(7));
        assert_eq!(p.delete_inactive_users_after_days, Some(90));
        assert_eq!(p.large_message_bytes, 200_000);
        assert_eq!(p.quota_target_bytes, Some(500 * 1024 * 1024 * 7 / 10));
        assert_eq!(quota_target(1000), 700);
        assert_eq!(quota_target(u64::MAX), u64::MAX / 100 * 70 + 10);
    }

    #[test]
    fn messages_of_known_ages_and_sizes() {
        let p = Policy {
            quota_target_bytes: None,
            ..policy()
        };
        let d = DAY_SECS;
        let messages = [
            msg(1, 1, 21 * d, 100),        // old: age
            msg(1, 2, 20 * d, 100),        // exactly 20 days: stays (strict)
            msg(1, 3, 20 * d + 1, 100),    // one second past: age
            msg(1, 4, 8 * d, 200_001),     // large and older than 7 days: large
            msg(1, 5, 8 * d, 200_000),     // exactly the limit is not large
            msg(1, 6, 6 * d, 5_000_000),   // large but young
            msg(2, 1, 30 * d, 300_000),    // old and large: age wins
            msg(2, 2, 0, 10),              // fresh
            msg(2, 3, 7 * d + 1, 250_000), // just past 7 days: large
        ];
        let Decision::Expunge(v) = decide_at(NOW, &p, &acct(today(), NOW - 40 * d), &messages)
        else {
            panic!("expected expunges");
        };
        assert_eq!(
            uids(&v),
            vec![
                (1, 1, Reason::Age),
                (1, 3, Reason::Age),
                (1, 4, Reason::Large),
                (2, 1, Reason::Age),
                (2, 3, Reason::Large),
            ]
        );
        // The same through the single-rule helpers the admin socket uses.
        assert_eq!(
            uids(&old_messages_at(NOW, 20, None, Reason::Age, &messages)),
            vec![
                (1, 1, Reason::Age),
                (1, 3, Reason::Age),
                (2, 1, Reason::Age)
            ]
        );
        assert_eq!(
            uids(&old_messages_at(
                NOW,
                7,
                Some(200_000),
                Reason::Large,
                &messages
            )),
            vec![
                (1, 4, Reason::Large),
                (2, 1, Reason::Large),
                (2, 3, Reason::Large)
            ]
        );
    }

    #[test]
    fn nothing_to_do_is_keep() {
        let messages = [msg(1, 1, DAY_SECS, 100)];
        assert_eq!(
            decide_at(NOW, &policy(), &acct(today(), NOW), &messages),
            Decision::Keep
        );
        assert_eq!(
            decide_at(NOW, &policy(), &acct(today(), NOW), &[]),
            Decision::Keep
        );
    }

    #[test]
    fn inactive_accounts_go_whole() {
        let p = policy();
        let messages = [msg(1, 1, 0, 100)];
        // Last login 91 days ago (day granularity): gone, even with fresh messages.
        let a = acct(today() - 91, NOW - 200 * DAY_SECS);
        assert_eq!(
            decide_at(NOW, &p, &a, &messages),
            Decision::DeleteAccount {
                last_active_day: i64::from(today() - 91),
                empty: false
            }
        );
        // 90 days ago: the day start is before the cutoff only if now is later in the day.
        let day_start = i64::from(today()) * DAY_SECS;
        let a90 = acct(today() - 90, 0);
        assert!(is_inactive_at(day_start + 1, 90, &a90));
        assert!(!is_inactive_at(day_start, 90, &a90));
        // 89 days ago: kept.
        assert!(!is_inactive_at(NOW, 90, &acct(today() - 89, 0)));
        // Rule disabled: kept.
        let off = Policy {
            delete_inactive_users_after_days: None,
            ..p
        };
        assert_eq!(decide_at(NOW, &off, &a, &messages), Decision::Keep);
    }

    #[test]
    fn never_logged_in_accounts_count_from_creation() {
        // last_login_day 0 (never recorded): the creation time decides.
        let old = acct(0, NOW - 100 * DAY_SECS);
        assert_eq!(
            decide_at(NOW, &policy(), &old, &[]),
            Decision::DeleteAccount {
                last_active_day: (NOW - 100 * DAY_SECS).div_euclid(DAY_SECS),
                empty: true
            }
        );
        let young = acct(0, NOW - 10 * DAY_SECS);
        assert_eq!(decide_at(NOW, &policy(), &young, &[]), Decision::Keep);
    }

    #[test]
    fn trim_goes_oldest_first_to_the_target() {
        let h = 3600;
        let messages = [
            msg(1, 1, 50 * h, 400),
            msg(1, 2, 48 * h, 300),
            msg(2, 1, 49 * h, 300),
            msg(1, 3, 30 * h, 200),
            msg(1, 4, h, 100),
        ];
        // 1300 bytes; target 700: oldest first (1/1: 400, 2/1: 300) -> 600.
        assert_eq!(
            uids(&trim_at(NOW, 700, &messages)),
            vec![(1, 1, Reason::Quota), (2, 1, Reason::Quota)]
        );
        // At or below target: nothing.
        assert!(trim_at(NOW, 1300, &messages).is_empty());
        // Tie on date: mailbox then UID order decides, deterministically.
        let tie = [msg(2, 9, 30 * h, 10), msg(1, 9, 30 * h, 10)];
        assert_eq!(uids(&trim_at(NOW, 10, &tie)), vec![(1, 9, Reason::Quota)]);
    }

    #[test]
    fn trim_never_touches_messages_younger_than_a_day() {
        let h = 3600;
        let messages = [
            msg(1, 1, 25 * h, 100),
            msg(1, 2, 23 * h, 10_000),
            msg(1, 3, 0, 10_000),
            msg(1, 4, DAY_SECS - 1, 10_000),
            msg(1, 5, DAY_SECS, 50), // exactly 24 h: old enough
        ];
        let v = trim_at(NOW, 0, &messages);
        assert_eq!(uids(&v), vec![(1, 1, Reason::Quota), (1, 5, Reason::Quota)]);
        // Also through the daily job with the age rules off.
        let p = Policy {
            delete_mails_after_days: None,
            delete_large_after_days: None,
            quota_target_bytes: Some(0),
            ..policy()
        };
        let Decision::Expunge(v) = decide_at(NOW, &p, &acct(today(), NOW), &messages) else {
            panic!("expected expunges");
        };
        assert!(v.iter().all(|x| x.uid == 1 || x.uid == 5), "{v:?}");
    }

    #[test]
    fn trim_counts_only_what_the_age_rules_left() {
        let d = DAY_SECS;
        // 30-day-old 1000 bytes goes by age; the remaining 600 are under the 700 target.
        let messages = [msg(1, 1, 30 * d, 1000), msg(1, 2, 2 * d, 600)];
        let p = Policy {
            quota_target_bytes: Some(700),
            ..policy()
        };
        let Decision::Expunge(v) = decide_at(NOW, &p, &acct(today(), NOW), &messages) else {
            panic!("expected expunges");
        };
        assert_eq!(uids(&v), vec![(1, 1, Reason::Age)]);
    }
}
