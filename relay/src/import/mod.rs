//! `relay import MAILBOXES_DIR`: moves a reference relay (Postfix + Dovecot, deployed by
//! cmdeploy) onto this one, from its `/home/vmail/mail/<domain>/` tree (or a copy), into a
//! stopped relay's store.
//!
//! Per account directory `<addr>/`: `password` (`{SHA512-CRYPT}` hash kept, so the old password
//! logs in; other schemes are imported disabled and reported; its mtime is the last-login day),
//! `metadata.json` (push device tokens with the time they were set), `enforceE2EEincoming`
//! (this relay refuses incoming cleartext for every account: a missing marker is reported), the
//! Maildir `cur/` and `new/` of INBOX and of each `.Name` folder (`.A.B` is `A/B`), with flags
//! from the file names (keyword letters through `dovecot-keywords`), UIDs and UIDVALIDITY from
//! `dovecot-uidlist`, the date from the file's mtime (else the name's), gzip- or
//! zlib-compressed files inflated. Besides the tree: the DKIM key (kept under selector
//! `opendkim` at `<data_dir>/dkim/opendkim.private`) and the reference's `chatmail.ini`
//! (options we share are printed with the values to set, never written into ours).
//!
//! # Guarantees
//! - Idempotent and resumable: every message keeps (or is given, the same way each run) a
//!   UID, and the store refuses a UID its mailbox holds (`Op::ImportMessage`); a run killed at
//!   any point and run again ends with each message once. Accounts and mailboxes that exist are
//!   continued, not created again.
//! - Messages go through the store's commit path: many in flight, so that the writer's group
//!   commit makes one `fdatasync` per batch; the per-account quota and message cap apply
//!   (what does not fit is reported).
//! - A message is read into memory once (its bytes then move into the op); a file larger than
//!   `max_message_size` is skipped from its size without being read, a compressed one as soon
//!   as its inflated bytes pass the cap.
//! - Symlinks are never followed (entries are classified without following, files opened with
//!   `O_NOFOLLOW`); they are reported.
//! - `--dry-run` opens no store and writes nothing: it reads the tree as an import would and
//!   reports what it would import (without subtracting what an earlier run imported).
//!
//! Parsing and decisions are pure (`maildir.rs`: names, uidlist, keywords, folders, the walk;
//! `reference.rs`: password, metadata.json, chatmail.ini); this file does the I/O.

#[deny(clippy::disallowed_methods, clippy::disallowed_types)] // sans-I/O parsing
pub mod maildir;
#[deny(clippy::disallowed_methods, clippy::disallowed_types)] // sans-I/O parsing
pub mod reference;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use crate::config::{Config, RawConfig};
use crate::store::{self, AccountId, Error as StoreError, Op, OpResult, Store, StoreConfig};
use maildir::{Compression, DomainEntry, EntryKind, Found, MessageEntry};
use reference::{IniAdvice, Password};

/// Where the reference keeps its DKIM key.
pub const DEFAULT_DKIM_KEY: &str = "/etc/dkimkeys/opendkim.private";
/// Where the reference keeps its `chatmail.ini`.
pub const DEFAULT_INI: &str = "/usr/local/lib/chatmaild/chatmail.ini";
/// The selector the reference signs with, kept for the imported key.
pub const DKIM_SELECTOR: &str = "opendkim";
/// Bytes of message bodies in flight to the store writer at most.
const MAX_IN_FLIGHT_BYTES: usize = 64 << 20;
/// Ops in flight to the store writer at most.
const MAX_IN_FLIGHT: usize = 512;
/// Details kept per reason in the report (the count is always complete).
const MAX_DETAILS: usize = 10;

/// What to import and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The reference's mailboxes directory (`/home/vmail/mail/<domain>`).
    pub source: PathBuf,
    /// The DKIM key file; `None`: [`DEFAULT_DKIM_KEY`] if it exists.
    pub dkim_key: Option<PathBuf>,
    /// The reference's `chatmail.ini`; `None`: [`DEFAULT_INI`] if it exists.
    pub ini: Option<PathBuf>,
    /// Read and report, change nothing.
    pub dry_run: bool,
    /// Draw a progress bar (the caller decides: only on a terminal).
    pub progress: bool,
    /// Unix seconds now (token liveness, creation time of accounts).
    pub now: i64,
}

/// Why the import could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store is locked: a relay is running on it.
    #[error(
        "the store {0} is in use by a running relay: stop the relay first (import runs on a \
         stopped relay's data)"
    )]
    Running(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The source cannot be read.
    #[error("reading {path}: {source}")]
    Source {
        /// What.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The source holds no account directory.
    #[error(
        "{0} holds no account directory (`<addr>/` with a `password` file): give the \
         reference's mailboxes directory, /home/vmail/mail/<mail_domain>"
    )]
    NoAccounts(String),
}

/// What an import did (or, with `--dry-run`, would do).
#[derive(Debug, Default)]
pub struct Summary {
    /// Dry run.
    pub dry_run: bool,
    /// Accounts created.
    pub accounts: u64,
    /// Accounts that existed (an earlier run): continued.
    pub accounts_existing: u64,
    /// Accounts imported disabled (a hash this relay cannot check).
    pub accounts_disabled: u64,
    /// Messages imported.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Messages an earlier run imported.
    pub messages_existing: u64,
    /// Mailboxes other than INBOX created.
    pub mailboxes: u64,
    /// Device tokens set.
    pub tokens: u64,
    /// Notes by reason: count and the first few details.
    pub notes: BTreeMap<&'static str, (u64, Vec<String>)>,
    /// Lines about the DKIM key and `chatmail.ini`.
    pub advice: Vec<String>,
}

impl Summary {
    fn note(&mut self, reason: &'static str, detail: impl FnOnce() -> String) {
        let e = self.notes.entry(reason).or_default();
        e.0 += 1;
        if e.1.len() < MAX_DETAILS {
            e.1.push(detail());
        }
    }

    /// The report, one line per item.
    pub fn render(&self) -> String {
        let verb = if self.dry_run {
            "would import"
        } else {
            "imported"
        };
        let mut out = format!(
            "{verb}: {} accounts ({} disabled), {} mailboxes besides INBOX, {} messages ({} bytes), {} device tokens\n",
            self.accounts, self.accounts_disabled, self.mailboxes, self.messages, self.bytes, self.tokens
        );
        if self.accounts_existing > 0 || self.messages_existing > 0 {
            out.push_str(&format!(
                "already there from an earlier run: {} accounts, {} messages\n",
                self.accounts_existing, self.messages_existing
            ));
        }
        if self.dry_run {
            out.push_str("dry run: nothing was changed\n");
        }
        for (reason, (n, details)) in &self.notes {
            out.push_str(&format!("{n} × {reason}\n"));
            for d in details {
                out.push_str(&format!("    {d}\n"));
            }
            if *n > details.len() as u64 {
                out.push_str(&format!("    ... and {} more\n", *n - details.len() as u64));
            }
        }
        for a in &self.advice {
            out.push_str(a);
            out.push('\n');
        }
        out
    }
}

/// Reasons (keys of [`Summary::notes`]).
mod reason {
    pub(super) const SYMLINK: &str = "symlinks not followed (skipped)";
    pub(super) const NOT_MESSAGE: &str =
        "entries in cur/ or new/ that are no message file (skipped)";
    pub(super) const BAD_NAME: &str = "unparsable Maildir file names (imported with no flags)";
    pub(super) const EMPTY: &str = "zero-byte message files (skipped: no message)";
    pub(super) const TOO_LARGE: &str = "messages larger than max_message_size (skipped)";
    pub(super) const UNREADABLE: &str = "message files that could not be read (skipped)";
    pub(super) const OVER_QUOTA: &str =
        "messages over the account's quota or message cap (skipped)";
    pub(super) const REFUSED: &str = "messages the store refused (skipped)";
    pub(super) const DISABLED: &str =
        "accounts with a password hash other than {SHA512-CRYPT} (imported disabled: no password logs in, the messages are kept)";
    pub(super) const NO_PASSWORD: &str =
        "directories with an @ but no readable password file (skipped: not an account)";
    pub(super) const OTHER_DOMAIN: &str = "accounts of another domain than this relay's (skipped)";
    pub(super) const NO_E2EE_MARKER: &str = "accounts without enforceE2EEincoming (this relay refuses incoming cleartext for every account)";
    pub(super) const BAD_METADATA: &str = "unreadable metadata.json (no device tokens imported)";
    pub(super) const TOKEN_SKIPPED: &str = "device tokens left out";
    pub(super) const BAD_UIDLIST: &str =
        "unreadable dovecot-uidlist (the folder's messages get new UIDs)";
    pub(super) const BAD_FOLDER: &str = "folders not imported";
}

/// One message read from its file.
enum Read {
    Ok(Vec<u8>),
    Skip(&'static str, String),
}

/// A commit in flight and what to count when it resolves.
struct InFlight {
    name: String,
    size: usize,
    rx: store::Commit,
}

/// Where messages go: the store, or nowhere (dry run).
struct Sink {
    store: Option<Store>,
    rt: tokio::runtime::Runtime,
    in_flight: VecDeque<InFlight>,
    bytes_in_flight: usize,
}

impl Sink {
    fn commit(&self, op: Op) -> Result<OpResult, StoreError> {
        match &self.store {
            Some(s) => s.commit_blocking(op),
            None => Err(StoreError::Closed),
        }
    }

    /// Waits for the oldest commit in flight and counts it.
    fn settle_one(&mut self, sum: &mut Summary, progress: &indicatif::ProgressBar) {
        let Some(f) = self.in_flight.pop_front() else {
            return;
        };
        self.bytes_in_flight -= f.size;
        match self.rt.block_on(f.rx) {
            Ok(_) => {
                sum.messages += 1;
                sum.bytes += f.size as u64;
            }
            Err(StoreError::Exists(_)) => sum.messages_existing += 1,
            Err(StoreError::OverQuota) => sum.note(reason::OVER_QUOTA, || f.name),
            Err(e) => sum.note(reason::REFUSED, || format!("{}: {e}", f.name)),
        }
        progress.inc(1);
    }

    fn settle_all(&mut self, sum: &mut Summary, progress: &indicatif::ProgressBar) {
        while !self.in_flight.is_empty() {
            self.settle_one(sum, progress);
        }
    }
}

/// Runs an import into `config`'s data directory (`ours`: the relay's own ini values, for the
/// `chatmail.ini` comparison).
///
/// # Errors
/// The store is in use or fails, the source cannot be listed or holds no account.
pub fn run(config: &Config, ours: &RawConfig, opts: &Options) -> Result<Summary, Error> {
    let mut sum = Summary {
        dry_run: opts.dry_run,
        ..Summary::default()
    };
    let accounts = list_accounts(&opts.source, config, &mut sum)?;
    let store_dir = config.data_dir.join("store");
    let store = if opts.dry_run {
        refuse_if_locked(&store_dir)?;
        None
    } else {
        let s = Store::open(
            &store_dir,
            StoreConfig {
                max_mailbox_size: config.max_mailbox_size,
                max_mailbox_messages: config.max_mailbox_messages,
                ..StoreConfig::default()
            },
        )
        .map_err(|e| match e {
            StoreError::Locked(d) => Error::Running(d),
            e => Error::Store(e),
        })?;
        Some(s)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|source| Error::Source {
            path: "tokio runtime".into(),
            source,
        })?;
    let mut sink = Sink {
        store,
        rt,
        in_flight: VecDeque::new(),
        bytes_in_flight: 0,
    };
    let progress = if opts.progress {
        let total: u64 = accounts.iter().map(|(_, dir)| count_messages(dir)).sum();
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} messages {per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let result = (|| {
        for (addr, dir) in &accounts {
            progress.set_message(addr.clone());
            import_account(addr, dir, config, opts, &mut sink, &mut sum, &progress)?;
            sink.settle_all(&mut sum, &progress);
            tracing::debug!(account = %addr, "account imported");
        }
        Ok::<(), Error>(())
    })();
    sink.settle_all(&mut sum, &progress);
    progress.finish_and_clear();
    if let Some(s) = &sink.store {
        s.close();
    }
    result?;
    import_dkim(config, opts, &mut sum);
    compare_ini(ours, opts, &mut sum);
    Ok(sum)
}

/// `--dry-run` opens no store, but still refuses a running relay's data.
fn refuse_if_locked(store_dir: &Path) -> Result<(), Error> {
    let lock = store_dir.join("lock");
    let file = match File::options().read(true).write(true).open(&lock) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Source {
                path: lock.display().to_string(),
                source,
            })
        }
    };
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(Error::Running(store_dir.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(source)) => Err(Error::Source {
            path: lock.display().to_string(),
            source,
        }),
    }
}

fn entry_kind(ft: std::fs::FileType) -> EntryKind {
    if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

/// `(name, kind)` of a directory's entries, sorted by name; symlinks are reported as such.
fn list_dir(dir: &Path) -> std::io::Result<Vec<(String, EntryKind)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        v.push((name, entry_kind(e.file_type()?)));
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// The account directories of the source, by address. The source may also be the directory
/// above (`/home/vmail/mail`) holding one directory per domain: then this relay's domain.
fn list_accounts(
    source: &Path,
    config: &Config,
    sum: &mut Summary,
) -> Result<Vec<(String, PathBuf)>, Error> {
    let entries = list_dir(source).map_err(|e| Error::Source {
        path: source.display().to_string(),
        source: e,
    })?;
    let domain = config.address_domain();
    let mut accounts = Vec::new();
    for (name, kind) in &entries {
        match maildir::classify_domain_entry(name, *kind) {
            DomainEntry::Account(addr) => {
                if addr.rsplit_once('@').map(|(_, d)| d) != Some(domain.as_str()) {
                    sum.note(reason::OTHER_DOMAIN, || {
                        format!("{addr} (this relay is {domain})")
                    });
                    continue;
                }
                accounts.push((addr, source.join(name)));
            }
            DomainEntry::Symlink => {
                sum.note(reason::SYMLINK, || source.join(name).display().to_string())
            }
            DomainEntry::Other => {}
        }
    }
    if accounts.is_empty() && !sum.notes.contains_key(reason::OTHER_DOMAIN) {
        // `/home/vmail/mail` given: descend into this relay's domain.
        let below = source.join(&domain);
        if entries
            .iter()
            .any(|(n, k)| *n == domain && *k == EntryKind::Dir)
        {
            return list_accounts(&below, config, sum);
        }
        return Err(Error::NoAccounts(source.display().to_string()));
    }
    Ok(accounts)
}

/// Message files of an account (all folders), for the progress bar.
fn count_messages(account: &Path) -> u64 {
    let mut dirs = vec![account.to_owned()];
    if let Ok(entries) = list_dir(account) {
        dirs.extend(
            entries
                .iter()
                .filter(|(n, k)| *k == EntryKind::Dir && maildir::folder_name(n).is_some())
                .map(|(n, _)| account.join(n)),
        );
    }
    dirs.iter()
        .flat_map(|d| ["cur", "new"].map(|s| d.join(s)))
        .filter_map(|d| list_dir(&d).ok())
        .map(|v| v.len() as u64)
        .sum()
}

/// Opens a file of the tree without following a symlink.
fn open_nofollow(path: &Path) -> std::io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Reads a small file of the tree (password, uidlist, metadata): `None` if it is missing.
fn read_small(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match open_nofollow(path) {
        Ok(f) => {
            let mut v = Vec::new();
            f.take(16 << 20).read_to_end(&mut v)?;
            Ok(Some(v))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[allow(clippy::too_many_arguments)] // the walk's state, passed down once
fn import_account(
    addr: &str,
    dir: &Path,
    config: &Config,
    opts: &Options,
    sink: &mut Sink,
    sum: &mut Summary,
    progress: &indicatif::ProgressBar,
) -> Result<(), Error> {
    let pw_path = dir.join("password");
    let (text, mtime) = match open_nofollow(&pw_path).and_then(|mut f| {
        let mtime = f.metadata()?.mtime();
        let mut s = String::new();
        f.read_to_string(&mut s)?;
        Ok((s, mtime))
    }) {
        Ok(v) => v,
        Err(e) => {
            sum.note(reason::NO_PASSWORD, || format!("{}: {e}", dir.display()));
            return Ok(());
        }
    };
    let (hash, mut disabled) = match reference::parse_password(&text) {
        Password::Usable(h) => (h, None),
        Password::Disabled { stored, scheme } => (stored, Some(scheme)),
    };
    let mut created = |sum: &mut Summary| {
        sum.accounts += 1;
        if let Some(scheme) = disabled.take() {
            sum.accounts_disabled += 1;
            sum.note(reason::DISABLED, || format!("{addr} ({scheme})"));
        }
    };
    match std::fs::symlink_metadata(dir.join("enforceE2EEincoming")) {
        Ok(_) => {}
        Err(_) => sum.note(reason::NO_E2EE_MARKER, || addr.to_owned()),
    }
    // The account, with its INBOX's UIDVALIDITY (the folder import reports a broken uidlist).
    let inbox_uid_validity = read_small(&dir.join("dovecot-uidlist"))
        .ok()
        .flatten()
        .and_then(|b| maildir::parse_uidlist(&String::from_utf8_lossy(&b)).ok())
        .map_or(0, |l| l.uid_validity);
    let account: Option<AccountId> = if opts.dry_run {
        created(sum);
        None
    } else {
        let r = sink.commit(Op::ImportAccount {
            addr: addr.to_owned(),
            password_hash: hash,
            created: opts.now,
            inbox_uid_validity,
            last_login_day: reference::last_login_day(mtime),
        });
        match r {
            Ok(OpResult::AccountCreated(id)) => {
                created(sum);
                Some(id)
            }
            Err(StoreError::Exists(_)) => {
                sum.accounts_existing += 1;
                sink.store
                    .as_ref()
                    .and_then(|s| s.account(addr))
                    .map(|a| a.id)
            }
            Ok(other) => {
                return Err(Error::Store(StoreError::Corrupt(format!(
                    "unexpected answer to an account import: {other:?}"
                ))))
            }
            Err(e) => return Err(Error::Store(e)),
        }
    };
    // Its device tokens.
    match read_small(&dir.join("metadata.json")) {
        Ok(None) => {}
        Ok(Some(bytes)) => match reference::parse_metadata(&bytes, opts.now) {
            Ok(tokens) => {
                for why in tokens.skipped {
                    sum.note(reason::TOKEN_SKIPPED, || format!("{addr}: {why}"));
                }
                let n = tokens.live.len();
                if n > store::notify::MAX_TOKENS {
                    sum.note(reason::TOKEN_SKIPPED, || {
                        format!(
                            "{addr}: {} beyond the cap of {} per account (oldest dropped)",
                            n - store::notify::MAX_TOKENS,
                            store::notify::MAX_TOKENS
                        )
                    });
                }
                let had = match (account, &sink.store) {
                    (Some(a), Some(s)) => s.device_tokens(a, opts.now),
                    _ => Vec::new(),
                };
                for (token, time) in tokens.live {
                    if had.contains(&token) {
                        continue;
                    }
                    if let Some(account) = account {
                        match sink.commit(Op::SetDeviceToken {
                            account,
                            token,
                            now: time,
                        }) {
                            Ok(_) => sum.tokens += 1,
                            Err(e) => sum.note(reason::TOKEN_SKIPPED, || format!("{addr}: {e}")),
                        }
                    } else {
                        sum.tokens += 1;
                    }
                }
            }
            Err(e) => sum.note(reason::BAD_METADATA, || format!("{addr}: {e}")),
        },
        Err(e) => sum.note(reason::BAD_METADATA, || format!("{addr}: {e}")),
    }
    // INBOX, then the folders.
    let mut folders = vec![("INBOX".to_owned(), dir.to_owned())];
    let entries = list_dir(dir).map_err(|source| Error::Source {
        path: dir.display().to_string(),
        source,
    })?;
    for (name, kind) in entries {
        if !name.starts_with('.') || name == "." || name == ".." {
            continue;
        }
        match (kind, maildir::folder_name(&name)) {
            (EntryKind::Symlink, _) => {
                sum.note(reason::SYMLINK, || dir.join(&name).display().to_string());
            }
            (EntryKind::Dir, Some(mailbox)) => folders.push((mailbox, dir.join(&name))),
            (EntryKind::Dir, None) => sum.note(reason::BAD_FOLDER, || {
                format!("{}: not a Maildir++ folder name", dir.join(&name).display())
            }),
            _ => {}
        }
    }
    for (mailbox, fdir) in folders {
        import_folder(
            addr, account, &mailbox, &fdir, config, opts, sink, sum, progress,
        )?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // the walk's state, passed down once
fn import_folder(
    addr: &str,
    account: Option<AccountId>,
    mailbox: &str,
    dir: &Path,
    config: &Config,
    opts: &Options,
    sink: &mut Sink,
    sum: &mut Summary,
    progress: &indicatif::ProgressBar,
) -> Result<(), Error> {
    let list = match read_small(&dir.join("dovecot-uidlist")) {
        Ok(Some(bytes)) => match maildir::parse_uidlist(&String::from_utf8_lossy(&bytes)) {
            Ok(l) => Some(l),
            Err(e) => {
                sum.note(reason::BAD_UIDLIST, || format!("{addr} {mailbox}: {e}"));
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            sum.note(reason::BAD_UIDLIST, || format!("{addr} {mailbox}: {e}"));
            None
        }
    };
    let keywords = match read_small(&dir.join("dovecot-keywords")) {
        Ok(Some(bytes)) => maildir::parse_keywords(&String::from_utf8_lossy(&bytes)),
        _ => HashMap::new(),
    };
    let mut found = Vec::new();
    for (sub, in_new) in [("cur", false), ("new", true)] {
        let d = dir.join(sub);
        let entries = match list_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::Source {
                    path: d.display().to_string(),
                    source,
                })
            }
        };
        for (name, kind) in entries {
            match maildir::classify_message_entry(&name, kind) {
                MessageEntry::Message => found.push(Found { name, in_new }),
                MessageEntry::Symlink => {
                    progress.inc(1);
                    sum.note(reason::SYMLINK, || d.join(&name).display().to_string());
                }
                MessageEntry::NotMessage => {
                    progress.inc(1);
                    sum.note(reason::NOT_MESSAGE, || d.join(&name).display().to_string());
                }
            }
        }
    }
    let placed = maildir::place(found, list.as_ref());
    let uid_next = list.as_ref().map_or(1, |l| l.next_uid);
    // The mailbox, and the UIDs an earlier run imported.
    let (mailbox_id, existing): (Option<u32>, BTreeSet<u32>) = match account {
        None => {
            if mailbox != "INBOX" {
                sum.mailboxes += 1;
            }
            (None, BTreeSet::new())
        }
        Some(account) => {
            let existed = sink
                .store
                .as_ref()
                .and_then(|s| s.mailbox_view(account, mailbox))
                .is_some();
            let r = sink.commit(Op::ImportMailbox {
                account,
                name: mailbox.to_owned(),
                uid_validity: list.as_ref().map_or(0, |l| l.uid_validity),
                uid_next,
            });
            let id = match r {
                Ok(OpResult::MailboxCreated(id)) => id,
                Ok(_) => return Ok(()),
                Err(e) => {
                    progress.inc(placed.len() as u64);
                    sum.note(reason::BAD_FOLDER, || format!("{addr} {mailbox}: {e}"));
                    return Ok(());
                }
            };
            if !existed && mailbox != "INBOX" {
                sum.mailboxes += 1;
            }
            let existing = sink
                .store
                .as_ref()
                .and_then(|s| s.mailbox_view_by_id(account, id))
                .map(|v| v.messages.iter().map(|m| m.uid).collect())
                .unwrap_or_default();
            (Some(id), existing)
        }
    };
    let max = config.max_message_size;
    for p in placed {
        if existing.contains(&p.uid) {
            sum.messages_existing += 1;
            progress.inc(1);
            continue;
        }
        let path = dir.join(if p.in_new { "new" } else { "cur" }).join(&p.name);
        let shown = || path.display().to_string();
        let parsed = maildir::parse_file_name(&p.name);
        let flags = match &parsed {
            Ok(n) => maildir::flags_of(n, &keywords),
            Err(why) => {
                sum.note(reason::BAD_NAME, || format!("{} ({why})", shown()));
                Vec::new()
            }
        };
        let (body, mtime) = match read_message(&path, max) {
            Ok((Read::Ok(body), mtime)) => (body, mtime),
            Ok((Read::Skip(why, detail), _)) => {
                progress.inc(1);
                sum.note(why, || format!("{}{detail}", shown()));
                continue;
            }
            Err(e) => {
                progress.inc(1);
                sum.note(reason::UNREADABLE, || format!("{}: {e}", shown()));
                continue;
            }
        };
        let internal_date = if mtime > 0 {
            mtime
        } else {
            parsed.ok().and_then(|n| n.time).unwrap_or(opts.now)
        };
        let (Some(account), Some(mailbox)) = (account, mailbox_id) else {
            // Dry run.
            sum.messages += 1;
            sum.bytes += body.len() as u64;
            progress.inc(1);
            continue;
        };
        let size = body.len();
        while !sink.in_flight.is_empty()
            && (sink.in_flight.len() >= MAX_IN_FLIGHT
                || sink.bytes_in_flight + size > MAX_IN_FLIGHT_BYTES)
        {
            sink.settle_one(sum, progress);
        }
        let Some(store) = &sink.store else {
            return Ok(());
        };
        let rx: store::Commit = Box::pin(store.commit(Op::ImportMessage {
            account,
            mailbox,
            uid: p.uid,
            flags,
            internal_date,
            body,
        }));
        sink.bytes_in_flight += size;
        sink.in_flight.push_back(InFlight {
            name: format!("{addr} {}", p.name),
            size,
            rx,
        });
    }
    Ok(())
}

/// Reads one message file (inflating gzip or zlib) with its mtime; skips it, with why, if it is
/// empty or larger than `max` bytes (a plain file by its size without reading it, a
/// compressed one as soon as its inflated bytes pass `max`).
fn read_message(path: &Path, max: u64) -> std::io::Result<(Read, i64)> {
    let file = open_nofollow(path)?;
    let meta = file.metadata()?;
    let mtime = meta.mtime();
    if meta.len() == 0 {
        return Ok((Read::Skip(reason::EMPTY, String::new()), mtime));
    }
    let mut r = BufReader::new(file);
    let kind = maildir::compression_of(r.fill_buf()?);
    if kind == Compression::None && meta.len() > max {
        return Ok((
            Read::Skip(
                reason::TOO_LARGE,
                format!(" ({} bytes, max_message_size {max})", meta.len()),
            ),
            mtime,
        ));
    }
    let mut body = Vec::with_capacity(meta.len().min(max) as usize);
    let limit = max + 1;
    let read = match kind {
        Compression::None => r.take(limit).read_to_end(&mut body),
        Compression::Gzip => flate2::bufread::MultiGzDecoder::new(r)
            .take(limit)
            .read_to_end(&mut body),
        Compression::Zlib => flate2::bufread::ZlibDecoder::new(r)
            .take(limit)
            .read_to_end(&mut body),
    };
    read?;
    if body.len() as u64 > max {
        return Ok((
            Read::Skip(
                reason::TOO_LARGE,
                format!(" (inflates past max_message_size {max})"),
            ),
            mtime,
        ));
    }
    if body.is_empty() {
        return Ok((Read::Skip(reason::EMPTY, String::new()), mtime));
    }
    Ok((Read::Ok(body), mtime))
}

/// The DKIM key: copied to `<data_dir>/dkim/opendkim.private` unless a key is there.
fn import_dkim(config: &Config, opts: &Options, sum: &mut Summary) {
    let (src, explicit) = match &opts.dkim_key {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_DKIM_KEY), false),
    };
    let pem = match read_small(&src) {
        Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        Ok(None) if !explicit => {
            sum.advice.push(format!(
                "DKIM: no key at {} (give --dkim-key): the relay makes a new one; publish its \
                 record (`relay dns`) before mail goes out",
                src.display()
            ));
            return;
        }
        Ok(None) => {
            sum.advice.push(format!(
                "DKIM: {} does not exist: no key imported",
                src.display()
            ));
            return;
        }
        Err(e) => {
            sum.advice.push(format!(
                "DKIM: reading {}: {e} (run as root, or copy it and give --dkim-key)",
                src.display()
            ));
            return;
        }
    };
    let key = match crate::dkim::DkimKey::from_pem(&pem) {
        Ok(k) => k,
        Err(e) => {
            sum.advice.push(format!(
                "DKIM: {} is not an RSA private key: {e}; no key imported",
                src.display()
            ));
            return;
        }
    };
    if config.dkim_selector != DKIM_SELECTOR {
        sum.advice.push(format!(
            "DKIM: the key is kept under selector {DKIM_SELECTOR} (the published \
             {DKIM_SELECTOR}._domainkey record); set dkim_selector = {DKIM_SELECTOR} (it is {})",
            config.dkim_selector
        ));
    }
    let dest = crate::dkim::key_path(&config.data_dir, DKIM_SELECTOR);
    match read_small(&dest) {
        Ok(Some(existing)) => {
            let same = crate::dkim::DkimKey::from_pem(&String::from_utf8_lossy(&existing))
                .is_ok_and(|k| k.dns_txt_value() == key.dns_txt_value());
            sum.advice.push(if same {
                format!("DKIM: {} holds this key already", dest.display())
            } else {
                format!(
                    "DKIM: {} holds another key: left as is (remove it and import again to use \
                     the reference's key)",
                    dest.display()
                )
            });
            return;
        }
        Ok(None) => {}
        Err(e) => {
            sum.advice
                .push(format!("DKIM: reading {}: {e}", dest.display()));
            return;
        }
    }
    if opts.dry_run {
        sum.advice.push(format!(
            "DKIM: would copy {} to {}",
            src.display(),
            dest.display()
        ));
        return;
    }
    let pem = match key.to_pkcs1_pem() {
        Ok(p) => p,
        Err(e) => {
            sum.advice.push(format!("DKIM: encoding the key: {e}"));
            return;
        }
    };
    let written = dest
        .parent()
        .map_or(Ok(()), crate::privilege::private_dir)
        .and_then(|()| crate::privilege::create_private_once(&dest, pem.as_bytes()));
    sum.advice.push(match written {
        Ok(_) => format!(
            "DKIM: {} copied to {} (selector {DKIM_SELECTOR})",
            src.display(),
            dest.display()
        ),
        Err(e) => format!("DKIM: writing {}: {e}", dest.display()),
    });
}

/// The reference's `chatmail.ini`: what to set in ours.
fn compare_ini(ours: &RawConfig, opts: &Options, sum: &mut Summary) {
    let (path, explicit) = match &opts.ini {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_INI), false),
    };
    let text = match read_small(&path) {
        Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        Ok(None) if !explicit => {
            sum.advice.push(format!(
                "chatmail.ini: none at {} (give --ini to compare the reference's options)",
                path.display()
            ));
            return;
        }
        Ok(None) => {
            sum.advice
                .push(format!("chatmail.ini: {} does not exist", path.display()));
            return;
        }
        Err(e) => {
            sum.advice
                .push(format!("chatmail.ini: reading {}: {e}", path.display()));
            return;
        }
    };
    let reference = match RawConfig::parse_ini(&text) {
        Ok(r) => r,
        Err(e) => {
            sum.advice
                .push(format!("chatmail.ini: {}: {e}", path.display()));
            return;
        }
    };
    let known = |k: &str| crate::config::OPTIONS.iter().any(|o| o.name == k);
    // Ours as in effect: what is written, else the default `relay serve` applies.
    let mut effective = ours.values.clone();
    for o in crate::config::OPTIONS {
        if let crate::config::OptionDefault::Value(v) = o.default {
            effective
                .entry(o.name.to_owned())
                .or_insert_with(|| v.to_owned());
        }
    }
    let advice = reference::compare_ini(&reference.values, &effective, known);
    let mut set = Vec::new();
    let mut not_ours = Vec::new();
    let mut same = 0;
    for a in advice {
        match a {
            IniAdvice::Same(_) => same += 1,
            IniAdvice::Set(k, v) => set.push(format!("    {k} = {v}")),
            IniAdvice::NotOurs(k) => not_ours.push(k),
        }
    }
    sum.advice.push(format!(
        "chatmail.ini ({}): {same} shared options already the same here",
        path.display()
    ));
    if !set.is_empty() {
        sum.advice.push(format!(
            "chatmail.ini: set these in this relay's chatmail.ini ([params]) to keep the \
             reference's behaviour:\n{}",
            set.join("\n")
        ));
    }
    if !not_ours.is_empty() {
        sum.advice.push(format!(
            "chatmail.ini: not carried over (not options of this relay, or with another meaning \
             here): {}",
            not_ours.join(", ")
        ));
    }
}
