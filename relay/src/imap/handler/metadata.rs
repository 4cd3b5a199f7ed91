//! GETMETADATA and SETMETADATA (RFC 5464): server entries (mailbox `""`) and per-mailbox ones.
//! Delta Chat stores its push token and relay hints here.

use std::collections::VecDeque;

use super::super::response;
use super::super::session::Session;
use super::{Commit, Pending};
use crate::store::{AccountId, MailboxId, Op};

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
        for e in entries {
            let value = self.shared.store.metadata(account, mbox, e);
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
            response::nstring(&mut o, value.as_deref());
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
        let mut ops: VecDeque<Op> = entries
            .into_iter()
            .map(|(key, value)| Op::SetMetadata {
                account,
                mailbox: mbox,
                key,
                value,
            })
            .collect();
        match ops.pop_front() {
            Some(op) => self.commit(op, Pending::SetMetadata { tag, rest: ops }),
            None => self.tagged(&tag, "OK Setmetadata completed"),
        }
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
