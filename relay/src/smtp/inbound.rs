//! The checks of mail from other servers, in one place for both ways it arrives: SMTP on port 25
//! ([`super::Session`] in [`super::Mode::Mx`]) and HTTPS `POST /mxdeliv` ([`crate::http::mxdeliv`]).
//! The reference runs "the same checks as SMTP MAIL FROM / RCPT TO / DATA" on both (chatmail.md
//! §3.5, §3.7); so do we, by calling these.
//!
//! Order: each recipient ([`check_recipient`]), then the message's encryption rules
//! ([`check_message`], no DNS work for cleartext), then — in the driver, it needs DNS — the
//! origin ([`crate::dkim::verify_origin`] unless the `From` domain is an address literal), then
//! the durable write, whose result [`delivery_reply`] turns into the reply.

use super::reply::{self, Reply};
use crate::policy::{self, Envelope, Incoming};
use crate::shared::Shared;
use crate::store::{self, AccountId, AccountInfo, DeliverError, OpResult};

/// The account of a local address; `user+tag@domain` falls back to `user@domain` (Postfix
/// `recipient_delimiter = +`).
pub fn local_account(shared: &Shared, addr: &str) -> Option<AccountInfo> {
    let store = &shared.store;
    store.account(addr).or_else(|| {
        let (local, domain) = addr.rsplit_once('@')?;
        let (user, _tag) = local.split_once('+')?;
        store.account(&format!("{user}@{domain}"))
    })
}

/// A recipient of incoming mail: on our domain (`554 5.7.1` relay access denied otherwise), an
/// existing account (`550 5.1.1`), not over quota (`552`). `to` as the client wrote it (for the
/// reply text).
///
/// # Errors
/// The reply refusing the recipient.
pub fn check_recipient(shared: &Shared, to: &str) -> Result<AccountInfo, Reply> {
    let addr = to.to_ascii_lowercase();
    let Some((_, domain)) = addr.rsplit_once('@') else {
        return Err(reply::bad_recipient_syntax());
    };
    if !domain.eq_ignore_ascii_case(&shared.config.address_domain()) {
        return Err(reply::relay_denied(to));
    }
    let Some(account) = local_account(shared, &addr) else {
        return Err(reply::user_unknown(to));
    };
    let (used, limit) = shared.store.quota(account.id);
    if used >= limit || account.messages >= shared.config.max_mailbox_messages {
        shared.metrics.quota_exceeded();
        return Err(reply::recipient_over_quota(to));
    }
    Ok(account)
}

/// The encryption rules of incoming mail (chatmail.md §3.5 steps 1–5) for a message to the
/// accounts whose addresses are `envelope.rcpt_to`.
///
/// # Errors
/// `523` for cleartext to an account that refuses it, `500` for a bad `From`.
pub fn check_message(
    shared: &Shared,
    envelope: &Envelope<'_>,
    raw: &[u8],
) -> Result<Incoming, Reply> {
    let store = &shared.store;
    let enforces_e2ee = |rcpt: &str| store.account(rcpt).is_some_and(|a| a.enforce_e2ee_incoming);
    policy::check_incoming_from(envelope, raw, &enforces_e2ee)
        .map_err(|reject| Reply::new(reject.code, reject.text))
}

/// Whether the origin of a message from `incoming` must be verified (DKIM): every `From` domain
/// but an address literal (chatmail.md §1.9).
pub fn needs_origin_check(incoming: &Incoming) -> bool {
    !crate::dkim::is_domain_literal(incoming.from_domain())
}

/// The reply to a delivery to `recipients` that the store answered with `result`: `250` with an
/// id if any copy was written, else why not.
pub fn delivery_reply(recipients: &[AccountId], result: Result<OpResult, store::Error>) -> Reply {
    match result {
        Ok(OpResult::Delivered(results)) => {
            let delivered = recipients
                .iter()
                .zip(&results)
                .find_map(|(account, r)| r.as_ref().ok().map(|uid| (account, uid)));
            match delivered {
                // Account and INBOX UID of the first copy: unique within the store.
                Some((account, uid)) => reply::queued(&format!("{account:X}.{uid:X}")),
                None if results.contains(&Err(DeliverError::NoSuchAccount))
                    && !results.contains(&Err(DeliverError::OverQuota)) =>
                {
                    reply::users_unknown()
                }
                None => reply::quota_exceeded(),
            }
        }
        Err(store::Error::OverQuota) => reply::quota_exceeded(),
        Err(store::Error::NoSpace { .. }) => reply::insufficient_storage(),
        Ok(other) => {
            tracing::error!(?other, "unexpected store result for Deliver");
            reply::store_failed()
        }
        Err(error) => {
            tracing::error!(%error, "delivery failed");
            reply::store_failed()
        }
    }
}
