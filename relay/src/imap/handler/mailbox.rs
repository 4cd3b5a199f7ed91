//! Mailbox-level commands: LIST/LSUB, STATUS, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, APPEND,
//! GETQUOTAROOT and GETQUOTA (RFC 3501 §6.3, RFC 9208).

use super::super::command::StatusItem;
use super::super::limits::{self, Limit};
use super::super::response;
use super::super::session::Session;
use super::{Commit, Pending};
use crate::store::{AccountId, Flag, MailboxInfo, Op, OpResult};

/// The quota root name (Dovecot's).
const QUOTA_ROOT: &str = "User quota";

impl Session {
    /// `LIST ref pattern` / `LSUB ref pattern`
    pub(in super::super) fn list(
        &mut self,
        account: AccountId,
        tag: &str,
        lsub: bool,
        reference: &str,
        pattern: &str,
    ) {
        self.list_lines(account, lsub, reference, pattern);
        self.finish(
            tag,
            if lsub {
                "OK Lsub completed"
            } else {
                "OK List completed"
            },
            true,
        );
    }

    /// The `* LIST` / `* LSUB` lines. LSUB also lists, with `\Noselect`, an unsubscribed parent
    /// that the pattern matches where it does not match its subscribed child (RFC 3501 §6.3.9:
    /// `LSUB "" %` with only `foo/bar` subscribed returns `foo`).
    fn list_lines(&mut self, account: AccountId, lsub: bool, reference: &str, pattern: &str) {
        if pattern.is_empty() && !lsub {
            self.line("* LIST (\\Noselect) \"/\" \"\"");
            return;
        }
        let full = format!("{reference}{pattern}");
        let boxes = self.shared.store.mailboxes(account);
        let mut o = Vec::new();
        if lsub {
            let subscribed = self.shared.store.subscriptions(account);
            let mut listed: Vec<&str> = Vec::new();
            for name in &subscribed {
                if pattern_matches(&full, name) {
                    list_line(&mut o, "LSUB", &[], name);
                    continue;
                }
                if !full.contains('%') {
                    continue;
                }
                for (i, _) in name.match_indices('/') {
                    let parent = &name[..i];
                    if !parent.is_empty()
                        && !listed.contains(&parent)
                        && !subscribed.iter().any(|s| s == parent)
                        && pattern_matches(&full, parent)
                    {
                        listed.push(parent);
                        list_line(&mut o, "LSUB", &["\\Noselect"], parent);
                    }
                }
            }
        } else {
            // Sorted, a mailbox's children follow it: one binary search per name.
            let mut sorted: Vec<&str> = boxes.iter().map(|b| b.name.as_str()).collect();
            sorted.sort_unstable();
            for b in &boxes {
                let name = &b.name;
                if !pattern_matches(&full, name) {
                    continue;
                }
                let prefix = format!("{name}/");
                let at = sorted.partition_point(|n| *n < prefix.as_str());
                let mut attrs: Vec<&str> = Vec::new();
                if sorted.get(at).is_some_and(|n| n.starts_with(&prefix)) {
                    attrs.push("\\HasChildren");
                } else {
                    attrs.push("\\HasNoChildren");
                }
                if let Some(su) = special_use(name) {
                    attrs.push(su);
                }
                list_line(&mut o, "LIST", &attrs, name);
            }
        }
        self.out.extend_from_slice(&o);
    }

    /// `STATUS mailbox (items)`
    pub(in super::super) fn status(
        &mut self,
        account: AccountId,
        tag: &str,
        name: &str,
        items: &[StatusItem],
    ) {
        let Some(info) = self
            .shared
            .store
            .mailboxes(account)
            .into_iter()
            .find(|m| same_name(&m.name, name))
        else {
            return self.tagged(
                tag,
                &format!("NO [NONEXISTENT] Mailbox doesn't exist: {name}"),
            );
        };
        let vals: Vec<String> = items
            .iter()
            .map(|i| match i {
                StatusItem::Messages => format!("MESSAGES {}", info.messages),
                StatusItem::UidNext => format!("UIDNEXT {}", info.uid_next),
                StatusItem::UidValidity => format!("UIDVALIDITY {}", info.uid_validity),
                StatusItem::Unseen => format!("UNSEEN {}", info.unseen),
                StatusItem::Recent => format!("RECENT {}", self.recent_count(account, &info)),
                StatusItem::HighestModSeq => format!("HIGHESTMODSEQ {}", info.highest_modseq),
                StatusItem::Size => format!("SIZE {}", info.size),
            })
            .collect();
        let mut o = b"* STATUS ".to_vec();
        response::astring(&mut o, &info.name);
        o.extend_from_slice(format!(" ({})\r\n", vals.join(" ")).as_bytes());
        self.out.extend_from_slice(&o);
        self.finish(tag, "OK Status completed", true);
    }

    /// STATUS RECENT: the messages no session has seen yet, and those recent in this session if
    /// it has the mailbox selected. Claims nothing.
    fn recent_count(&self, account: AccountId, info: &MailboxInfo) -> usize {
        let first = self
            .shared
            .recent
            .first_unclaimed(account, info.id, info.uid_validity);
        // Ours that another session has claimed since (an EXAMINE's) are not counted below.
        let own = match self.state.selected() {
            Some(sel) if sel.id == info.id => sel
                .msgs
                .iter()
                .filter(|k| k.recent && k.uid < first)
                .count(),
            _ => 0,
        };
        let unseen_by_all = if first >= info.uid_next {
            0
        } else {
            self.shared
                .store
                .mailbox_view_by_id(account, info.id)
                .map_or(0, |v| v.messages.iter().filter(|m| m.uid >= first).count())
        };
        own + unseen_by_all
    }

    /// `CREATE name`
    pub(in super::super) fn create(&mut self, account: AccountId, tag: String, name: &str) {
        let name = name.trim_end_matches('/').to_owned();
        if name.eq_ignore_ascii_case("INBOX") {
            return self.tagged(&tag, "NO [ALREADYEXISTS] Mailbox already exists");
        }
        if !valid_mailbox_name(&name) {
            return self.tagged(&tag, "NO [CANNOT] Invalid mailbox name");
        }
        let boxes = self.shared.store.mailboxes(account);
        if boxes.iter().any(|m| same_name(&m.name, &name)) {
            return self.tagged(&tag, "NO [ALREADYEXISTS] Mailbox already exists");
        }
        let n = boxes.len() as u64;
        if let Err(text) = limits::check(Limit::Mailboxes, n, n + 1) {
            return self.tagged(&tag, &text);
        }
        self.commit(
            Op::CreateMailbox { account, name },
            Pending::Simple {
                tag,
                text: "OK Create completed",
            },
        );
    }

    /// `DELETE name`; deleting the selected mailbox deselects it.
    pub(in super::super) fn delete(&mut self, account: AccountId, tag: String, name: &str) {
        if name == "INBOX" {
            return self.tagged(&tag, "NO INBOX can't be deleted.");
        }
        let Some(id) = self.mailbox_id(account, name) else {
            return self.tagged(
                &tag,
                &format!("NO [NONEXISTENT] Mailbox doesn't exist: {name}"),
            );
        };
        if self.state.selected().is_some_and(|s| s.id == id) {
            self.state.set_selected(None);
        }
        self.commit(
            Op::DeleteMailbox {
                account,
                mailbox: id,
            },
            Pending::Simple {
                tag,
                text: "OK Delete completed",
            },
        );
    }

    /// `RENAME from to`
    pub(in super::super) fn rename(
        &mut self,
        account: AccountId,
        tag: String,
        from: &str,
        to: &str,
    ) {
        let to = to.trim_end_matches('/').to_owned();
        if from == "INBOX" {
            return self.tagged(&tag, "NO [CANNOT] Renaming INBOX is not supported");
        }
        if to.eq_ignore_ascii_case("INBOX") || !valid_mailbox_name(&to) {
            return self.tagged(&tag, "NO [CANNOT] Invalid mailbox name");
        }
        let Some(id) = self.mailbox_id(account, from) else {
            return self.tagged(
                &tag,
                &format!("NO [NONEXISTENT] Mailbox doesn't exist: {from}"),
            );
        };
        if self.mailbox_id(account, &to).is_some() {
            return self.tagged(&tag, "NO [ALREADYEXISTS] Target mailbox already exists");
        }
        self.commit(
            Op::RenameMailbox {
                account,
                mailbox: id,
                to,
            },
            Pending::Simple {
                tag,
                text: "OK Rename completed",
            },
        );
    }

    /// `SUBSCRIBE name` / `UNSUBSCRIBE name`
    pub(in super::super) fn subscribe(
        &mut self,
        account: AccountId,
        tag: String,
        name: String,
        subscribed: bool,
    ) {
        if subscribed {
            if name.len() > limits::MAX_SUBSCRIPTION_NAME {
                return self.tagged(&tag, "NO [LIMIT] Mailbox name too long");
            }
            let subs = self.shared.store.subscriptions(account);
            if !subs.contains(&name) {
                let n = subs.len() as u64;
                if let Err(text) = limits::check(Limit::Subscriptions, n, n + 1) {
                    return self.tagged(&tag, &text);
                }
            }
        }
        self.commit(
            Op::Subscribe {
                account,
                name,
                subscribed,
            },
            Pending::Simple {
                tag,
                text: if subscribed {
                    "OK Subscribe completed"
                } else {
                    "OK Unsubscribe completed"
                },
            },
        );
    }

    /// CREATE, DELETE, RENAME, (UN)SUBSCRIBE committed.
    pub(super) fn simple_done(&mut self, tag: &str, text: &str, commit: Commit) {
        match commit {
            Ok(_) => self.finish(tag, text, true),
            Err(e) => self.store_error(tag, &e),
        }
    }

    /// `APPEND mailbox [(flags)] [date] literal`; the internal date defaults to now.
    pub(in super::super) fn append(
        &mut self,
        account: AccountId,
        tag: String,
        mailbox: &str,
        flags: Vec<Flag>,
        date: Option<i64>,
        message: Vec<u8>,
    ) {
        let Some(id) = self.mailbox_id(account, mailbox) else {
            return self.tagged(
                &tag,
                &format!("NO [TRYCREATE] Mailbox doesn't exist: {mailbox}"),
            );
        };
        let internal_date = date.unwrap_or((self.now / 1000) as i64);
        self.commit(
            Op::Append {
                account,
                mailbox: id,
                flags,
                internal_date,
                body: message,
            },
            Pending::Append { tag },
        );
    }

    /// APPEND committed: `APPENDUID` (RFC 4315).
    pub(super) fn append_done(&mut self, tag: &str, commit: Commit) {
        match commit {
            Ok(OpResult::Appended { uid_validity, uid }) => self.finish(
                tag,
                &format!("OK [APPENDUID {uid_validity} {uid}] Append completed"),
                true,
            ),
            Ok(_) => self.finish(tag, "OK Append completed", true),
            Err(e) => self.store_error(tag, &e),
        }
    }

    /// `GETQUOTAROOT mailbox`
    pub(in super::super) fn get_quota_root(
        &mut self,
        account: AccountId,
        tag: &str,
        mailbox: &str,
    ) {
        let mut o = b"* QUOTAROOT ".to_vec();
        response::astring(&mut o, mailbox);
        o.extend_from_slice(format!(" \"{QUOTA_ROOT}\"\r\n").as_bytes());
        self.out.extend_from_slice(&o);
        self.quota_line(account);
        self.finish(tag, "OK Getquotaroot completed", true);
    }

    /// `GETQUOTA root`
    pub(in super::super) fn get_quota(&mut self, account: AccountId, tag: &str, root: &str) {
        if root != QUOTA_ROOT {
            return self.tagged(tag, "NO Quota root does not exist");
        }
        self.quota_line(account);
        self.finish(tag, "OK Getquota completed", true);
    }

    fn quota_line(&mut self, account: AccountId) {
        let (used, limit) = self.shared.store.quota(account);
        self.line(&format!(
            "* QUOTA \"{QUOTA_ROOT}\" (STORAGE {} {})",
            used / 1024,
            limit / 1024
        ));
    }
}

/// `* LIST (attrs) "/" name` (or `LSUB`).
fn list_line(o: &mut Vec<u8>, kind: &str, attrs: &[&str], name: &str) {
    o.extend_from_slice(format!("* {kind} (").as_bytes());
    o.extend_from_slice(attrs.join(" ").as_bytes());
    o.extend_from_slice(b") \"/\" ");
    response::astring(o, name);
    o.extend_from_slice(b"\r\n");
}

/// A name we let clients create: `/`-separated non-empty components, no wildcards or controls.
fn valid_mailbox_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|c| !c.is_empty())
        && !name.chars().any(|c| c.is_control() || c == '*' || c == '%')
}

/// Whether two mailbox names are the same (`INBOX` in any case).
pub(super) fn same_name(a: &str, b: &str) -> bool {
    a == b || (a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"))
}

/// RFC 6154 attribute for the conventional names.
fn special_use(name: &str) -> Option<&'static str> {
    match name.to_ascii_lowercase().as_str() {
        "sent" | "sent messages" => Some("\\Sent"),
        "drafts" => Some("\\Drafts"),
        "trash" => Some("\\Trash"),
        "junk" | "spam" => Some("\\Junk"),
        _ => None,
    }
}

/// LIST pattern match: `*` matches anything, `%` anything but the delimiter. `INBOX` is
/// case-insensitive. Dynamic programming: O(pattern × name), no recursion.
fn pattern_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = if pattern.len() >= 5
        && pattern.is_char_boundary(5)
        && pattern[..5].eq_ignore_ascii_case("INBOX")
        && name.len() >= 5
        && name.is_char_boundary(5)
        && name[..5].eq_ignore_ascii_case("INBOX")
    {
        (&pattern.as_bytes()[5..], &name.as_bytes()[5..])
    } else {
        (pattern.as_bytes(), name.as_bytes())
    };
    // m[j]: pattern prefix so far matches name prefix of length j.
    let mut m = vec![false; n.len() + 1];
    m[0] = true;
    for &pc in p {
        let mut next = vec![false; n.len() + 1];
        match pc {
            b'*' | b'%' => {
                for j in 0..=n.len() {
                    next[j] = m[j] || (j > 0 && next[j - 1] && (pc == b'*' || n[j - 1] != b'/'));
                }
            }
            c => {
                for j in 1..=n.len() {
                    next[j] = m[j - 1] && n[j - 1] == c;
                }
            }
        }
        m = next;
    }
    m[n.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_patterns() {
        assert!(pattern_matches("*", "a/b"));
        assert!(pattern_matches("%", "a"));
        assert!(!pattern_matches("%", "a/b"));
        assert!(pattern_matches("a/%", "a/b"));
        assert!(pattern_matches("inbox", "INBOX"));
        assert!(!pattern_matches("x*", "INBOX"));
        assert!(pattern_matches(&"*".repeat(60), &"ab".repeat(60)));
        assert!(!pattern_matches(&"*a".repeat(60), &"b".repeat(60)));
        assert!(pattern_matches("%/%", "a/b"));
        assert!(!pattern_matches("%b", "a/b"));
    }

    #[test]
    #[allow(clippy::disallowed_methods, clippy::disallowed_types)] // test: bounds the time taken
    fn many_wildcards_against_deep_names_stay_cheap() {
        // A backtracking matcher takes exponential time here; the table is pattern × name.
        let deep = "a/".repeat(120) + "b";
        let many: String = "*%".repeat(200);
        let start = std::time::Instant::now();
        for _ in 0..50 {
            assert!(pattern_matches(&(many.clone() + "b"), &deep));
            assert!(!pattern_matches(&(many.clone() + "c"), &deep));
            assert!(!pattern_matches(&"%/".repeat(200), &deep));
            assert!(pattern_matches(&("%/".repeat(120) + "%"), &deep));
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}
