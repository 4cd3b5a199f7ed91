//! GETMETADATA and SETMETADATA (RFC 5464): server entries (mailbox `""`) and per-mailbox ones.
//! Delta Chat stores its push token and reads relay hints here (chatmail.md §6.1):
//!
//! - `/private/devicetoken` (on any mailbox): SET adds or refreshes one token of the account
//!   (several devices, several tokens; `Op::SetDeviceToken`, see `store/notify.rs`), GET answers
//!   the live ones joined by a space; NIL as a value changes nothing (a device cannot know the
//!   others' tokens, and tokens expire by themselves).
//! - Read-only server entries, answered by the relay itself: `/shared/admin`
//!   (`mailto:<privacy_mail>`) and under `/shared/vendor/deltachat/`: `maxsmtprecipients`,
//!   `irohrelay`, `turn`, `appversions` (see [`relay_entry`]). Other entries come from the store
//!   (set by the account itself); unknown ones are NIL.

use std::collections::{HashMap, VecDeque};

use super::super::limits::{self, Limit};
use super::super::response;
use super::super::session::Session;
use super::{Commit, Pending};
use crate::shared::Shared;
use crate::store::notify::{self, TOKENS_KEY};
use crate::store::{AccountId, MailboxId, Op};

/// Prefix of the entries Delta Chat reads from the relay.
const VENDOR: &str = "/shared/vendor/deltachat/";

/// `/shared/vendor/deltachat/turn`: `<domain>:<port>:<expiry>:<password>` while the relay
/// serves TURN (Delta Chat reads the expiry as the username, TURN REST style).
fn turn_entry(shared: &Shared, now: i64) -> Option<Vec<u8>> {
    crate::turn::metadata_value(shared, u64::try_from(now).ok()?).map(String::into_bytes)
}

/// Whether `key` is the device token entry (entry names are case-insensitive, RFC 5464 §3.2).
fn is_token_key(key: &str) -> bool {
    key.eq_ignore_ascii_case(TOKENS_KEY)
}

/// Whether `key` is one of the server entries the relay answers itself.
fn is_relay_entry(key: &str) -> bool {
    key.eq_ignore_ascii_case("/shared/admin")
        || (key.len() > VENDOR.len()
            && key.is_char_boundary(VENDOR.len())
            && key[..VENDOR.len()].eq_ignore_ascii_case(VENDOR))
}

/// The value of a server entry the relay answers itself (`None`: NIL).
pub(crate) fn relay_entry(shared: &Shared, key: &str, now: i64) -> Option<Vec<u8>> {
    let config = &shared.config;
    if key.eq_ignore_ascii_case("/shared/admin") {
        let mail = config.privacy_mail.trim();
        return (!mail.is_empty()).then(|| format!("mailto:{mail}").into_bytes());
    }
    let name = key.get(VENDOR.len()..)?.to_ascii_lowercase();
    match name.as_str() {
        // Delta Chat splits larger recipient lists into several transactions.
        "maxsmtprecipients" => Some(
            crate::smtp::session::MAX_RECIPIENTS
                .to_string()
                .into_bytes(),
        ),
        "irohrelay" => config
            .iroh_relay
            .as_deref()
            .filter(|u| !u.is_empty())
            .map(|u| u.as_bytes().to_vec()),
        "turn" => turn_entry(shared, now),
        "appversions" => shared.appversions.clone(),
        _ => None,
    }
}

impl Session {
    /// The mailbox an entry belongs to: `None` for server entries (`""`), `Err` with the `NO`
    /// text if the mailbox does not exist.
    fn metadata_mailbox(
        &self,
        account: AccountId,
        mailbox: &str,
    ) -> Result<Option<MailboxId>, String> {
        if mailbox.is_empty() {
            return Ok(None);
        }
        match self.mailbox_id(account, mailbox) {
            Some(id) => Ok(Some(id)),
            None => Err(format!("NO [NONEXISTENT] Mailbox doesn't exist: {mailbox}")),
        }
    }

    /// `GETMETADATA [(MAXSIZE n)] mailbox (entries)`
    pub(in super::super) fn get_metadata(
        &mut self,
        account: AccountId,
        tag: &str,
        mailbox: &str,
        max_size: Option<u64>,
        entries: &[String],
    ) {
        let mbox = match self.metadata_mailbox(account, mailbox) {
            Ok(m) => m,
            Err(text) => return self.tagged(tag, &text),
        };
        let mut o = b"* METADATA ".to_vec();
        response::string(&mut o, mailbox.as_bytes());
        o.extend_from_slice(b" (");
        let mut longest_skipped = 0u64;
        let mut first = true;
        let now = self.now_unix();
        for e in entries {
            let value = if is_token_key(e) {
                let tokens = self.shared.store.device_tokens(account, now);
                (!tokens.is_empty()).then(|| tokens.join(" ").into_bytes())
            } else if mailbox.is_empty() && is_relay_entry(e) {
                relay_entry(&self.shared, e, now)
            } else {
                self.shared.store.metadata(account, mbox, e)
            };
            if let (Some(v), Some(max)) = (&value, max_size) {
                if v.len() as u64 > max {
                    longest_skipped = longest_skipped.max(v.len() as u64);
                    continue;
                }
            }
            if !first {
                o.push(b' ');
            }
            first = false;
            response::astring(&mut o, e);
            o.push(b' ');
            match value.as_deref() {
                // A quoted string would carry `\"` escapes, which Delta Chat core's IMAP parser
                // hands on unescaped (the JSON of `appversions` then does not parse): values
                // with quotes or backslashes go as literals, as Dovecot sends them.
                Some(v) if v.iter().any(|b| matches!(b, b'"' | b'\\')) => {
                    response::literal(&mut o, v)
                }
                v => response::nstring(&mut o, v),
            }
        }
        o.extend_from_slice(b")\r\n");
        if !first {
            self.out.extend_from_slice(&o);
        }
        if longest_skipped > 0 {
            self.sync(true);
            return self.tagged(
                tag,
                &format!("OK [METADATA LONGENTRIES {longest_skipped}] Getmetadata completed"),
            );
        }
        self.finish(tag, "OK Getmetadata completed", true);
    }

    /// `SETMETADATA mailbox (entry value ...)`: one commit per entry, in order.
    pub(in super::super) fn set_metadata(
        &mut self,
        account: AccountId,
        tag: String,
        mailbox: &str,
        entries: Vec<(String, Option<Vec<u8>>)>,
    ) {
        let mbox = match self.metadata_mailbox(account, mailbox) {
            Ok(m) => m,
            Err(text) => return self.tagged(&tag, &text),
        };
        if mailbox.is_empty() && entries.iter().any(|(k, _)| is_relay_entry(k)) {
            return self.tagged(
                &tag,
                "NO [METADATA NOPRIVATE] This entry is the relay's and cannot be changed",
            );
        }
        let (tokens, entries): (Vec<_>, Vec<_>) =
            entries.into_iter().partition(|(k, _)| is_token_key(k));
        for (_, value) in &tokens {
            if let Some(Err(why)) = value.as_deref().map(notify::check_token) {
                return self.tagged(&tag, &format!("NO [CANNOT] Invalid device token: {why}"));
            }
        }
        if let Err(text) = self.metadata_within_limits(account, mbox, &entries) {
            return self.tagged(&tag, &text);
        }
        let now = self.now_unix();
        let token_ops = tokens.into_iter().filter_map(|(_, value)| {
            Some(Op::SetDeviceToken {
                account,
                token: String::from_utf8(value?).ok()?,
                now,
            })
        });
        let mut ops: VecDeque<Op> = token_ops
            .chain(entries.into_iter().map(|(key, value)| Op::SetMetadata {
                account,
                mailbox: mbox,
                key,
                value,
            }))
            .collect();
        match ops.pop_front() {
            Some(op) => self.commit(op, Pending::SetMetadata { tag, rest: ops }),
            None => self.tagged(&tag, "OK Setmetadata completed"),
        }
    }

    /// Whether the account's metadata stays within its caps once `entries` are set (in order,
    /// `None` deleting) on `mbox`.
    fn metadata_within_limits(
        &self,
        account: AccountId,
        mbox: Option<MailboxId>,
        entries: &[(String, Option<Vec<u8>>)],
    ) -> Result<(), String> {
        let store = &self.shared.store;
        let (count, bytes) = store.metadata_usage(account);
        let (count, bytes) = (count as u64, bytes);
        let (mut new_count, mut new_bytes) = (count, bytes);
        // Sizes of the entries as this command leaves them (a key may repeat).
        let mut set: HashMap<&str, Option<u64>> = HashMap::new();
        for (key, value) in entries {
            let old = match set.get(key.as_str()) {
                Some(old) => *old,
                None => store.metadata(account, mbox, key).map(|v| v.len() as u64),
            };
            let new = value.as_ref().map(|v| v.len() as u64);
            // Saturating: a concurrent commit may have changed the store between the reads.
            new_count =
                (new_count + u64::from(new.is_some())).saturating_sub(u64::from(old.is_some()));
            new_bytes = (new_bytes + new.unwrap_or(0)).saturating_sub(old.unwrap_or(0));
            set.insert(key, new);
        }
        limits::check(Limit::MetadataEntries, count, new_count)?;
        limits::check(Limit::MetadataBytes, bytes, new_bytes)
    }

    /// One entry committed: the next, or the answer.
    pub(super) fn set_metadata_done(
        &mut self,
        tag: String,
        mut rest: VecDeque<Op>,
        commit: Commit,
    ) {
        match commit {
            Ok(_) => match rest.pop_front() {
                Some(op) => self.commit(op, Pending::SetMetadata { tag, rest }),
                None => self.finish(&tag, "OK Setmetadata completed", true),
            },
            Err(e) => self.store_error(&tag, &e),
        }
    }
}
