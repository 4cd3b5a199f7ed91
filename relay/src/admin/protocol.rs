//! The admin requests, their validation and their execution against the store.
//!
//! [`handle_line`] is the whole protocol for one line: parse, validate, run, answer. It never
//! panics on input; every failure becomes an error response. Deletions go through
//! `store.commit(Op::Expunge | Op::DeleteAccount)` only; what expires is decided by the pure
//! functions of [`crate::expire`].

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::accounts;
use crate::config::Config;
use crate::expire::{self, Decision, Policy, Reason, Victim};
use crate::shared::Shared;
use crate::store::{self, AccountInfo, MailboxId, Op, OpResult, Store};

/// Longest localpart accepted for an admin-created account (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCALPART_LEN: usize = 64;
/// Writes submitted to the store before waiting for their completion; the writer groups them
/// into batches with one `fdatasync` each.
const COMMIT_WINDOW: usize = 4096;

/// One request line. `op` selects the variant; unknown fields are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The relay's domain and retention settings.
    Config {},
    /// Every account with its last-login day, bytes used and message count.
    ListAccounts {},
    /// Create an account, bypassing the sign-up name rules (still on our domain).
    CreateAccount {
        /// Localpart or full address.
        name: String,
        /// Password (at least `password_min_length` characters).
        password: String,
        /// Validate only.
        #[serde(default)]
        dry_run: bool,
    },
    /// Delete an account and all its messages.
    DeleteAccount {
        /// Localpart or full address.
        name: String,
        /// Report only.
        #[serde(default)]
        dry_run: bool,
    },
    /// Expunge messages older than `older_than_days` (and larger than `larger_than` bytes, if
    /// given), in one account or all.
    ExpireMessages {
        /// Age in days.
        older_than_days: u32,
        /// Only messages strictly larger than this many bytes.
        larger_than: Option<u64>,
        /// One account (localpart or address); all if absent.
        account: Option<String>,
        /// Unix seconds; the relay's clock if absent.
        now: Option<i64>,
        /// Report only.
        #[serde(default)]
        dry_run: bool,
        /// List every affected account in the answer.
        #[serde(default)]
        details: bool,
    },
    /// Trim accounts above `target_bytes` (default 70 % of `max_mailbox_size`) oldest first,
    /// never touching messages younger than 24 h.
    TrimMailbox {
        /// Target size in bytes.
        target_bytes: Option<u64>,
        /// One account; all if absent.
        account: Option<String>,
        /// Unix seconds; the relay's clock if absent.
        now: Option<i64>,
        /// Report only.
        #[serde(default)]
        dry_run: bool,
        /// List every affected account.
        #[serde(default)]
        details: bool,
    },
    /// Delete accounts inactive for more than `inactive_days` (default
    /// `delete_inactive_users_after`).
    ExpireInactive {
        /// Days without login.
        inactive_days: Option<u32>,
        /// Unix seconds; the relay's clock if absent.
        now: Option<i64>,
        /// Report only.
        #[serde(default)]
        dry_run: bool,
        /// List every affected account.
        #[serde(default)]
        details: bool,
    },
    /// The daily job: inactive accounts, old messages, large old messages, quota trim. Absent
    /// values come from the relay's configuration.
    Expire {
        /// Days.
        delete_mails_after: Option<u32>,
        /// Days.
        delete_large_after: Option<u32>,
        /// Days.
        delete_inactive_users_after: Option<u32>,
        /// Bytes; default 200000.
        large_message_bytes: Option<u64>,
        /// Bytes; default 70 % of `max_mailbox_size`.
        quota_target_bytes: Option<u64>,
        /// Unix seconds; the relay's clock if absent.
        now: Option<i64>,
        /// Report only.
        #[serde(default)]
        dry_run: bool,
        /// List every affected account.
        #[serde(default)]
        details: bool,
    },
    /// The outbound queue: every entry (id, destination, sender, pending recipients, age, size),
    /// oldest first per destination, at most `limit` (default 1000).
    Queue {
        /// Only this destination.
        destination: Option<String>,
        /// Entries listed at most.
        limit: Option<usize>,
    },
    /// Try queued mail now instead of waiting for its backoff: one destination, or all.
    QueueRetry {
        /// The destination (domain or `[ip]`); all if absent.
        destination: Option<String>,
    },
    /// The running relay: version, uptime, backend, rate-limit mode, connections, accounts,
    /// queue, store size, certificate, last warnings and errors.
    Status {},
    /// Write a consistent copy of the store into `dir` (absolute; must not exist or be empty),
    /// which `relay serve`/`relay dev --data DIR` opens as it is.
    Backup {
        /// The data directory of the copy.
        dir: String,
    },
    /// Drop a queued entry without delivering it (no bounce).
    QueueDrop {
        /// The entry's id as `queue` lists it (`<seq>.<slot>`).
        id: String,
        /// Report only.
        #[serde(default)]
        dry_run: bool,
    },
}

/// A refused or failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Machine-readable: `bad_request`, `not_found`, `exists`, `internal`.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

impl Error {
    fn bad(message: impl Into<String>) -> Self {
        Error {
            code: "bad_request",
            message: message.into(),
        }
    }
    fn not_found(addr: &str) -> Self {
        Error {
            code: "not_found",
            message: format!("no such account: {addr}"),
        }
    }
    fn internal(e: &store::Error) -> Self {
        tracing::error!("admin: store error: {e}");
        Error {
            code: "internal",
            message: format!("store error: {e}"),
        }
    }
}

/// The error line for `e`.
pub fn error_response(e: &Error) -> Value {
    json!({"ok": false, "code": e.code, "error": e.message})
}

/// Runs one request line at `now` (unix seconds, used when the request has no `now`) and returns
/// the response object.
pub fn handle_line(shared: &Shared, store: &Store, line: &[u8], now: i64) -> Value {
    let req: Request = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => return error_response(&Error::bad(format!("invalid request: {e}"))),
    };
    match handle(shared, store, req, now) {
        Ok(mut v) => {
            if let Value::Object(m) = &mut v {
                m.insert("ok".into(), Value::Bool(true));
            }
            v
        }
        Err(e) => error_response(&e),
    }
}

/// Runs one parsed request.
///
/// # Errors
/// Invalid names or values, missing or existing accounts, store failures.
pub fn handle(shared: &Shared, store: &Store, req: Request, now: i64) -> Result<Value, Error> {
    let config = &shared.config;
    match req {
        Request::Config {} => Ok(config_response(config)),
        Request::Status {} => Ok(status_response(shared, store, now)),
        Request::Backup { dir } => backup(shared, store, &dir),
        Request::ListAccounts {} => {
            let accounts: Vec<Value> = store.accounts().iter().map(account_json).collect();
            Ok(json!({ "accounts": accounts }))
        }
        Request::CreateAccount {
            name,
            password,
            dry_run,
        } => create_account(shared, store, &name, &password, dry_run, now),
        Request::DeleteAccount { name, dry_run } => {
            let addr = resolve_name(config, &name)?;
            let acct = store
                .account(&addr)
                .ok_or_else(|| Error::not_found(&addr))?;
            if !dry_run {
                match store.commit_blocking(Op::DeleteAccount { account: acct.id }) {
                    Ok(_) => tracing::info!("admin: deleted account {addr}"),
                    Err(store::Error::NotFound(_)) => return Err(Error::not_found(&addr)),
                    Err(e) => return Err(Error::internal(&e)),
                }
            }
            Ok(json!({
                "addr": addr, "dry_run": dry_run, "deleted": !dry_run,
                "messages": acct.messages, "bytes": acct.bytes_used,
            }))
        }
        Request::ExpireMessages {
            older_than_days,
            larger_than,
            account,
            now: at,
            dry_run,
            details,
        } => {
            let reason = if larger_than.is_some() {
                Reason::Large
            } else {
                Reason::Age
            };
            let now = at.unwrap_or(now);
            let accounts = select(store, config, account.as_deref())?;
            let job = Job::run(store, accounts, dry_run, now, |_, msgs| {
                let v = expire::old_messages_at(now, older_than_days, larger_than, reason, msgs);
                victims_decision(v)
            });
            Ok(job.into_json(details))
        }
        Request::TrimMailbox {
            target_bytes,
            account,
            now: at,
            dry_run,
            details,
        } => {
            let target = target_bytes.unwrap_or(expire::quota_target(config.max_mailbox_size));
            let now = at.unwrap_or(now);
            let accounts = select(store, config, account.as_deref())?;
            let job = Job::run(store, accounts, dry_run, now, |_, msgs| {
                victims_decision(expire::trim_at(now, target, msgs))
            });
            Ok(job.into_json(details))
        }
        Request::ExpireInactive {
            inactive_days,
            now: at,
            dry_run,
            details,
        } => {
            let days = inactive_days.unwrap_or(config.delete_inactive_users_after);
            let now = at.unwrap_or(now);
            let job = Job::run(store, store.accounts(), dry_run, now, |a, msgs| {
                if expire::is_inactive_at(now, days, a) {
                    Decision::DeleteAccount {
                        last_active_day: expire::last_active_day(a),
                        empty: msgs.is_empty(),
                    }
                } else {
                    Decision::Keep
                }
            });
            Ok(job.into_json(details))
        }
        Request::Queue { destination, limit } => Ok(queue_list(
            store,
            destination.as_deref(),
            limit.unwrap_or(QUEUE_LIST_DEFAULT),
            now,
        )),
        Request::QueueRetry { destination } => {
            let dest = destination.unwrap_or_default().to_ascii_lowercase();
            shared.delivery_retry.send_replace(dest.clone());
            Ok(json!({"retry": if dest.is_empty() { "all".to_owned() } else { dest }}))
        }
        Request::QueueDrop { id, dry_run } => {
            let qid: store::QueueId = id.parse().map_err(|e: &str| Error::bad(e.to_owned()))?;
            let entry = store.queue_entry(qid).map_err(|_| Error::not_found(&id))?;
            if !dry_run {
                match store.commit_blocking(Op::queue_drop(qid)) {
                    Ok(_) => tracing::info!(id = %qid, "admin: dropped queued message"),
                    Err(store::Error::NotFound(_)) => return Err(Error::not_found(&id)),
                    Err(e) => return Err(Error::internal(&e)),
                }
            }
            Ok(json!({
                "id": id, "dry_run": dry_run, "dropped": !dry_run,
                "destination": entry.destination, "sender": entry.sender,
            }))
        }
        Request::Expire {
            delete_mails_after,
            delete_large_after,
            delete_inactive_users_after,
            large_message_bytes,
            quota_target_bytes,
            now: at,
            dry_run,
            details,
        } => {
            let base = Policy::from_config(config);
            let policy = Policy {
                delete_mails_after_days: delete_mails_after.or(base.delete_mails_after_days),
                delete_large_after_days: delete_large_after.or(base.delete_large_after_days),
                large_message_bytes: large_message_bytes.unwrap_or(base.large_message_bytes),
                delete_inactive_users_after_days: delete_inactive_users_after
                    .or(base.delete_inactive_users_after_days),
                quota_target_bytes: quota_target_bytes.or(base.quota_target_bytes),
            };
            let now = at.unwrap_or(now);
            let job = Job::run(store, store.accounts(), dry_run, now, |a, msgs| {
                expire::decide_at(now, &policy, a, msgs)
            });
            let mut v = job.into_json(details);
            v["policy"] = serde_json::to_value(policy).unwrap_or(Value::Null);
            Ok(v)
        }
    }
}

/// Entries listed by `queue` when no limit is given.
const QUEUE_LIST_DEFAULT: usize = 1000;

fn queue_list(store: &Store, destination: Option<&str>, limit: usize, now: i64) -> Value {
    let dests = store.queue_destinations();
    let mut entries = Vec::new();
    let mut destinations = Vec::new();
    for d in &dests {
        if destination.is_some_and(|x| !x.eq_ignore_ascii_case(&d.name)) {
            continue;
        }
        destinations.push(json!({"destination": d.name, "entries": d.entries}));
        let mut after = None;
        while entries.len() < limit {
            let ids = store.queue_ids(&d.name, after, (limit - entries.len()).min(256));
            let Some(last) = ids.last() else {
                break;
            };
            after = Some(*last);
            for id in ids {
                let Ok(e) = store.queue_entry(id) else {
                    continue;
                };
                let pending: Vec<&str> = e.pending().map(|(_, a)| a).collect();
                entries.push(json!({
                    "id": id.to_string(),
                    "destination": e.destination,
                    "sender": e.sender,
                    "recipients": pending,
                    "created": e.created,
                    "age_seconds": now.saturating_sub(e.created),
                    "size": e.size(),
                }));
            }
        }
    }
    json!({
        "queued": store.queue_len(),
        "destinations": destinations,
        "entries": entries,
    })
}

fn status_response(shared: &Shared, store: &Store, now: i64) -> Value {
    let live = &shared.live;
    let started = live.started.load(std::sync::atomic::Ordering::Relaxed);
    let connections: serde_json::Map<String, Value> = shared
        .metrics
        .open_connections()
        .into_iter()
        .map(|(k, n)| (k.to_owned(), json!(n)))
        .collect();
    let size = store.size();
    let certificate = live.certs.get().map(|c| {
        let cert = c.current();
        json!({
            "names": cert.names(),
            "not_after": cert.not_after(),
            "expires_in_days": (cert.not_after() - now).div_euclid(86_400),
        })
    });
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "domain": shared.config.address_domain(),
        "started": started,
        "uptime_seconds": if started > 0 { now.saturating_sub(started).max(0) } else { 0 },
        "io_backend": live.backend.get(),
        "rate_limit": live.rate_limit.get(),
        "connections": connections,
        "accounts": size.accounts,
        "queue": {
            "entries": store.queue_len(),
            "destinations": store.queue_destinations().len(),
        },
        "store": {
            "bytes": size.bytes,
            "segments": size.segments,
            "messages": size.messages,
            "writes_failing": store.writes_failing(),
        },
        "certificate": certificate,
        "last_errors": super::status::recent_events(),
    })
}

/// `backup`: checks `dir` (absolute; absent, or an empty directory), makes it `0700`, has the
/// store write its copy into `dir/store` and copies the DKIM keys into `dir/dkim`.
fn backup(shared: &Shared, store: &Store, dir: &str) -> Result<Value, Error> {
    let dir = std::path::Path::new(dir);
    if !dir.is_absolute() {
        return Err(Error::bad(format!(
            "backup directory {} is not an absolute path",
            dir.display()
        )));
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error {
                    code: "exists",
                    message: format!("backup directory {} is not empty", dir.display()),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::bad(format!(
                "backup directory {}: {e}",
                dir.display()
            )))
        }
    }
    let internal = |e: &dyn std::fmt::Display| Error {
        code: "internal",
        message: format!("backup into {}: {e}", dir.display()),
    };
    crate::privilege::private_dir(dir).map_err(|e| internal(&e))?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| internal(&e))?;
    }
    let started = Instant::now();
    let report = store.backup(&dir.join("store")).map_err(|e| Error {
        code: "internal",
        message: format!(
            "backup into {}: {e} (what was written there is incomplete: remove it)",
            dir.display()
        ),
    })?;
    let dkim = copy_private_files(&shared.config.data_dir.join("dkim"), &dir.join("dkim"))
        .map_err(|e| internal(&e))?;
    let elapsed = started.elapsed();
    tracing::info!(
        dir = %dir.display(),
        bytes = report.bytes,
        segments = report.segments,
        ms = elapsed.as_millis() as u64,
        "admin: backup written"
    );
    Ok(json!({
        "dir": dir.display().to_string(),
        "position": format!("{}:{}", report.position.segment, report.position.offset),
        "segments": report.segments,
        "bytes": report.bytes,
        "accounts": report.accounts,
        "messages": report.messages,
        "queued": report.queued,
        "dkim_keys": dkim,
        "writer_held_ms": report.writer_held.as_secs_f64() * 1000.0,
        "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
    }))
}

/// Copies the regular files of `from` (if it exists) into `to` (`0700`), each `0600` and
/// fsynced; returns how many.
fn copy_private_files(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(from) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    crate::privilege::private_dir(to)?;
    let mut n = 0;
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path())?;
        let path = to.join(entry.file_name());
        let mut f = crate::privilege::open_private(
            std::fs::File::options().write(true).create_new(true),
            &path,
        )?;
        std::io::Write::write_all(&mut f, &bytes)?;
        f.sync_all()?;
        n += 1;
    }
    std::fs::File::open(to)?.sync_all()?;
    Ok(n)
}

fn config_response(config: &Config) -> Value {
    let p = config.ports;
    json!({
        "domain": config.address_domain(),
        "mail_domain": config.mail_domain,
        "max_mailbox_size": config.max_mailbox_size,
        "max_message_size": config.max_message_size,
        "delete_mails_after": config.delete_mails_after,
        "delete_large_after": config.delete_large_after,
        "delete_inactive_users_after": config.delete_inactive_users_after,
        "large_message_bytes": expire::LARGE_MESSAGE_BYTES,
        "quota_target_bytes": expire::quota_target(config.max_mailbox_size),
        "password_min_length": config.password_min_length,
        "ports": {
            "smtp": p.smtp, "submission": p.submission, "submissions": p.submissions,
            "imap": p.imap, "imaps": p.imaps,
        },
    })
}

fn account_json(a: &AccountInfo) -> Value {
    json!({
        "addr": a.addr,
        "created": a.created,
        "last_login_day": a.last_login_day,
        "bytes_used": a.bytes_used,
        "messages": a.messages,
    })
}

/// The full address for an admin-given `name` (a localpart or `localpart@<our domain>`),
/// lowercased.
///
/// # Errors
/// `bad_request` for an empty name, `/`, `..`, NUL or other control characters, whitespace,
/// more than one `@`, another domain, or a localpart with characters outside `[a-z0-9._+-]`.
pub fn resolve_name(config: &Config, name: &str) -> Result<String, Error> {
    if name.is_empty() {
        return Err(Error::bad("empty name"));
    }
    if name.contains('/')
        || name.contains("..")
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(Error::bad(format!("invalid name: {name:?}")));
    }
    let name = name.to_ascii_lowercase();
    let domain = config.address_domain();
    let local = match name.split_once('@') {
        None => name.as_str(),
        Some((local, d)) => {
            if d != domain {
                return Err(Error::bad(format!(
                    "{name} is not on this relay's domain {domain}"
                )));
            }
            local
        }
    };
    if local.is_empty() || local.len() > MAX_LOCALPART_LEN {
        return Err(Error::bad(format!("invalid localpart length in {name:?}")));
    }
    if !local
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._+-".contains(&b))
    {
        return Err(Error::bad(format!("invalid characters in {name:?}")));
    }
    Ok(format!("{local}@{domain}"))
}

fn create_account(
    shared: &Shared,
    store: &Store,
    name: &str,
    password: &str,
    dry_run: bool,
    now: i64,
) -> Result<Value, Error> {
    let addr = resolve_name(&shared.config, name)?;
    if password.chars().count() < shared.config.password_min_length {
        return Err(Error::bad(format!(
            "password shorter than {} characters",
            shared.config.password_min_length
        )));
    }
    if password.chars().any(char::is_control) {
        return Err(Error::bad("password contains control characters"));
    }
    if store.account(&addr).is_some() {
        return Err(Error {
            code: "exists",
            message: format!("account exists: {addr}"),
        });
    }
    if dry_run {
        return Ok(json!({"addr": addr, "dry_run": true, "created": false}));
    }
    let hash = accounts::hash_password(password).map_err(|e| Error {
        code: "internal",
        message: e.to_string(),
    })?;
    match store.commit_blocking(Op::CreateAccount {
        addr: addr.clone(),
        password_hash: hash,
        now,
    }) {
        Ok(_) => {
            tracing::info!("admin: created account {addr}");
            Ok(json!({"addr": addr, "dry_run": false, "created": true}))
        }
        Err(store::Error::Exists(_)) => Err(Error {
            code: "exists",
            message: format!("account exists: {addr}"),
        }),
        Err(e) => Err(Error::internal(&e)),
    }
}

/// One account by name, or all.
fn select(store: &Store, config: &Config, name: Option<&str>) -> Result<Vec<AccountInfo>, Error> {
    match name {
        None => Ok(store.accounts()),
        Some(n) => {
            let addr = resolve_name(config, n)?;
            Ok(vec![store
                .account(&addr)
                .ok_or_else(|| Error::not_found(&addr))?])
        }
    }
}

fn victims_decision(v: Vec<Victim>) -> Decision {
    if v.is_empty() {
        Decision::Keep
    } else {
        Decision::Expunge(v)
    }
}

/// What one job did to one account.
#[derive(Debug, Clone, Serialize)]
struct AccountReport {
    addr: String,
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_active_day: Option<i64>,
    messages: u64,
    bytes: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    by_reason: BTreeMap<Reason, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The outcome of a retention job.
#[derive(Debug, Default, Serialize)]
struct Summary {
    dry_run: bool,
    now: i64,
    accounts_scanned: u64,
    accounts_deleted: u64,
    accounts_deleted_empty: u64,
    accounts_expunged: u64,
    messages_expunged: u64,
    messages_by_reason: BTreeMap<Reason, u64>,
    /// Bytes of the expunged messages and of the deleted accounts' messages.
    bytes_freed: u64,
    /// Store writes that failed (e.g. the account vanished meanwhile).
    failed: u64,
    elapsed_ms: u64,
}

struct Job {
    summary: Summary,
    reports: Vec<AccountReport>,
}

/// A planned write with what it accounts for.
struct Planned {
    report: usize,
    op: Op,
    /// For expunges: the victims of this mailbox.
    victims: Vec<Victim>,
}

impl Job {
    /// Decides every account with `decide`, then (unless `dry_run`) commits the writes in
    /// windows so the store groups them.
    fn run(
        store: &Store,
        accounts: Vec<AccountInfo>,
        dry_run: bool,
        now: i64,
        mut decide: impl FnMut(&AccountInfo, &[(MailboxId, store::MessageMeta)]) -> Decision,
    ) -> Job {
        let started = Instant::now();
        let mut summary = Summary {
            dry_run,
            now,
            ..Summary::default()
        };
        let mut reports = Vec::new();
        let mut planned = Vec::new();
        for a in accounts {
            summary.accounts_scanned += 1;
            let msgs = store.messages(a.id);
            match decide(&a, &msgs) {
                Decision::Keep => {}
                Decision::DeleteAccount {
                    last_active_day,
                    empty,
                } => {
                    let bytes = msgs.iter().map(|(_, m)| u64::from(m.size)).sum();
                    reports.push(AccountReport {
                        addr: a.addr.clone(),
                        action: if empty {
                            "delete_empty_account"
                        } else {
                            "delete_account"
                        },
                        last_active_day: Some(last_active_day),
                        messages: msgs.len() as u64,
                        bytes,
                        by_reason: BTreeMap::new(),
                        error: None,
                    });
                    planned.push(Planned {
                        report: reports.len() - 1,
                        op: Op::DeleteAccount { account: a.id },
                        victims: Vec::new(),
                    });
                }
                Decision::Expunge(victims) => {
                    reports.push(AccountReport {
                        addr: a.addr.clone(),
                        action: "expunge",
                        last_active_day: None,
                        messages: 0,
                        bytes: 0,
                        by_reason: BTreeMap::new(),
                        error: None,
                    });
                    let report = reports.len() - 1;
                    let mut by_mailbox: BTreeMap<MailboxId, Vec<Victim>> = BTreeMap::new();
                    for v in victims {
                        by_mailbox.entry(v.mailbox).or_default().push(v);
                    }
                    for (mailbox, victims) in by_mailbox {
                        planned.push(Planned {
                            report,
                            op: Op::Expunge {
                                account: a.id,
                                mailbox,
                                uids: victims.iter().map(|v| v.uid).collect(),
                            },
                            victims,
                        });
                    }
                }
            }
        }
        let mut job = Job { summary, reports };
        if dry_run {
            for p in planned {
                job.count(&p, None);
            }
        } else {
            let mut rest = planned.into_iter().peekable();
            while rest.peek().is_some() {
                let window: Vec<Planned> = rest.by_ref().take(COMMIT_WINDOW).collect();
                // `commit` submits at once; waiting afterwards lets the writer batch the window.
                let pending: Vec<_> = window.iter().map(|p| store.commit(p.op.clone())).collect();
                for (p, fut) in window.iter().zip(pending) {
                    let res = super::block_on(fut);
                    job.count(p, Some(res));
                }
            }
        }
        job.summary.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        job
    }

    /// Adds a planned write to the summary: always in a dry run, else only what it did.
    fn count(&mut self, p: &Planned, result: Option<Result<OpResult, store::Error>>) {
        let report = &mut self.reports[p.report];
        let s = &mut self.summary;
        let done: Vec<&Victim> = match (&p.op, result) {
            (_, Some(Err(e))) => {
                s.failed += 1;
                report.error = Some(e.to_string());
                return;
            }
            (Op::DeleteAccount { .. }, _) => {
                s.accounts_deleted += 1;
                if report.action == "delete_empty_account" {
                    s.accounts_deleted_empty += 1;
                }
                s.bytes_freed += report.bytes;
                return;
            }
            (_, Some(Ok(OpResult::Expunged(uids)))) => p
                .victims
                .iter()
                .filter(|v| uids.binary_search(&v.uid).is_ok())
                .collect(),
            (_, Some(Ok(_))) => Vec::new(),
            (_, None) => p.victims.iter().collect(),
        };
        if done.is_empty() {
            return;
        }
        if report.messages == 0 {
            s.accounts_expunged += 1;
        }
        for v in done {
            report.messages += 1;
            report.bytes += v.size;
            *report.by_reason.entry(v.reason).or_default() += 1;
            s.messages_expunged += 1;
            s.bytes_freed += v.size;
            *s.messages_by_reason.entry(v.reason).or_default() += 1;
        }
    }

    fn into_json(self, details: bool) -> Value {
        let mut v = serde_json::to_value(&self.summary).unwrap_or_else(|_| json!({}));
        if details {
            v["accounts"] = serde_json::to_value(&self.reports).unwrap_or(Value::Null);
        }
        v
    }
}
