//! The local admin socket: account management and retention jobs for operators and bots.
//!
//! A Unix stream socket (mode 0600, `<data dir>/admin.sock` unless the `admin_socket` option is
//! set; only root and the relay's own user are served, checked by `SO_PEERCRED`) speaking JSON lines: each request is one JSON object on one line, each answer is one JSON
//! object on one line, in order. A bad request gets an error line and the connection keeps
//! serving. Blank lines are ignored. Lines longer than [`MAX_REQUEST_BYTES`] are refused.
//!
//! This module is the only way anything outside the relay process removes data: the expire bot
//! and `relay admin` ask here, the relay commits `Op::Expunge` / `Op::DeleteAccount` through the
//! store. It never touches store files itself.
//!
//! # Protocol
//!
//! Every answer has `"ok": true` plus the fields below, or
//! `{"ok": false, "code": "bad_request" | "not_found" | "exists" | "internal", "error": "..."}`.
//! Every mutating request takes `"dry_run": true` (decide and report, write nothing). Retention
//! requests take `"now"` (unix seconds; the relay's clock if absent) and `"details": true` (list
//! every affected account). Names are a localpart (`echo`) or a full address on this relay's
//! domain (`echo@[127.0.0.1]`); `/`, `..`, NUL, whitespace and other domains are refused.
//!
//! | request | answer |
//! |---|---|
//! | `{"op":"config"}` | `domain`, `mail_domain`, `max_mailbox_size`, `delete_mails_after`, `delete_large_after`, `delete_inactive_users_after`, `large_message_bytes`, `quota_target_bytes`, `password_min_length`, `ports{smtp,submission,submissions,imap,imaps}` |
//! | `{"op":"status"}` | `version`, `domain`, `started`, `uptime_seconds`, `io_backend`, `rate_limit`, `connections{mx,submission,submissions,imap,imaps,https,http}` (open now), `accounts`, `queue{entries,destinations}`, `store{bytes,segments,messages,writes_failing}`, `certificate{names,not_after,expires_in_days}`, `last_errors: [{at, level, target, message}]` (the last 16 warnings and errors) |
//! | `{"op":"backup","dir":D}` | `dir`, `position`, `segments`, `bytes`, `accounts`, `messages`, `queued`, `dkim_keys`, `writer_held_ms`, `elapsed_ms`: a consistent copy of the store in `D/store` (and the DKIM keys in `D/dkim`) that `relay serve`/`relay dev --data D` opens as it is; `D` absolute, absent or empty (`exists` error otherwise) |
//! | `{"op":"list_accounts"}` | `accounts: [{addr, created, last_login_day, bytes_used, messages}]` |
//! | `{"op":"create_account","name":N,"password":P}` | `addr`, `created`; `exists` error if it exists. The sign-up name rules do not apply. |
//! | `{"op":"delete_account","name":N}` | `addr`, `deleted`, `messages`, `bytes`; `not_found` error if missing |
//! | `{"op":"expire_messages","older_than_days":D,"larger_than":B?,"account":N?}` | summary |
//! | `{"op":"trim_mailbox","target_bytes":B?,"account":N?}` | summary (oldest first, never < 24 h old; default target 70 % of `max_mailbox_size`) |
//! | `{"op":"expire_inactive","inactive_days":D?}` | summary |
//! | `{"op":"queue","destination":D?,"limit":N?}` | `queued`, `destinations: [{destination, entries}]`, `entries: [{id, destination, sender, recipients (pending), created, age_seconds, size}]`, oldest first per destination, at most `limit` (1000) |
//! | `{"op":"queue_retry","destination":D?}` | `retry`: the delivery engine tries that destination (or all) now, whatever its backoff |
//! | `{"op":"queue_drop","id":ID}` | `id`, `dropped`, `destination`, `sender`: the entry leaves the queue without a bounce; `not_found` error if it is gone |
//! | `{"op":"expire", "delete_mails_after":D?, "delete_large_after":D?, "delete_inactive_users_after":D?, "large_message_bytes":B?, "quota_target_bytes":B?}` | summary + `policy`: the daily job (absent values from the configuration) |
//!
//! A summary is `dry_run`, `now`, `accounts_scanned`, `accounts_deleted`,
//! `accounts_deleted_empty`, `accounts_expunged`, `messages_expunged`, `messages_by_reason`
//! (`age`, `large`, `quota`), `bytes_freed`, `failed`, `elapsed_ms`, and with `details` an
//! `accounts` list of `{addr, action, messages, bytes, by_reason, last_active_day?, error?}`.
//!
//! ```text
//! $ printf '%s\n' '{"op":"delete_account","name":"abc123def","dry_run":true}' | socat - UNIX:admin.sock
//! {"addr":"abc123def@[127.0.0.1]","bytes":5120,"deleted":false,"dry_run":true,"messages":3,"ok":true}
//! ```

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use crate::config::Config;
use crate::shared::Shared;
use crate::store::Store;

pub mod client;
pub mod protocol;
pub mod status;

#[cfg(test)]
mod tests;

pub use client::{run, AdminCommand};

/// Longest request line accepted.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Connections served at once; more are answered with an error and closed.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection idle this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The admin socket path: the `admin_socket` option, else `<data dir>/admin.sock`.
pub fn socket_path(config: &Config) -> PathBuf {
    config.admin_socket.clone()
}

/// The running admin socket. Dropping it stops accepting and removes the socket file;
/// connections already open finish their current request.
pub struct Handle {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Handle {
    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; if that fails the thread stays blocked, so do not wait.
        if UnixStream::connect(&self.path).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the admin socket at `path` and serves it on a thread, one thread per connection;
/// `store` is the store behind `shared.store` (the admin requests need its concrete API).
///
/// The socket is bound inside a fresh `0700` directory beside `path`, set to `0600` there and only
/// then renamed into place, so no other user can reach it, not even for an instant. Every
/// accepted connection's peer credentials are checked as well: only root and the relay's own
/// user are served ([`crate::privilege::is_trusted_peer`]).
///
/// # Errors
/// `AddrInUse` if another process serves `path`, `AlreadyExists` if `path` is not a socket, or
/// the mkdir/bind/chmod/rename error.
pub fn spawn(shared: Arc<Shared>, store: Store, path: &Path) -> std::io::Result<Handle> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        if !parent.exists() {
            crate::privilege::private_dir(parent)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is served by another process", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(_) => {}
    }
    let mut private = path.as_os_str().to_owned();
    private.push(format!(".{}.d", std::process::id()));
    let private = PathBuf::from(private);
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let tmp = private.join("admin.sock");
    let placed = std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))
        .and_then(|()| UnixListener::bind(&tmp))
        .and_then(|listener| {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&tmp, path)?;
            Ok(listener)
        });
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&private);
    let listener = placed?;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(Served { shared, store });
    let thread = {
        let stop = stop.clone();
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || accept_loop(&listener, &served, &stop, &path))?
    };
    tracing::info!("admin socket on {}", path.display());
    Ok(Handle {
        path: path.to_owned(),
        stop,
        thread: Some(thread),
    })
}

/// What the connections serve: the shared state and the concrete store (retention jobs read
/// every message of an account, which sessions never do).
struct Served {
    shared: Arc<Shared>,
    store: Store,
}

fn accept_loop(listener: &UnixListener, served: &Arc<Served>, stop: &AtomicBool, path: &Path) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("admin socket {}: accept: {e}", path.display());
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let trusted = crate::privilege::is_trusted_peer(&stream).unwrap_or(false);
        if !trusted {
            tracing::warn!(
                "admin socket {}: refused a connection from another user",
                path.display()
            );
        }
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = writeln!(
                stream,
                r#"{{"ok":false,"code":"busy","error":"too many admin connections"}}"#
            );
            continue;
        }
        // Connections hold the shared state weakly: an idle admin client must not keep the store
        // open after the relay shut down.
        let served = Arc::downgrade(served);
        let active2 = active.clone();
        let spawned = std::thread::Builder::new()
            .name("admin-conn".into())
            .spawn(move || {
                if !trusted {
                    refuse(stream);
                } else if let Err(e) = serve(stream, &served) {
                    tracing::debug!("admin connection ended: {e}");
                }
                active2.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("admin socket: cannot spawn a connection thread: {e}");
        }
    }
}

/// What [`read_line`] found.
enum Line {
    /// A complete line in the buffer (without the newline).
    Complete,
    /// The line was longer than the limit; its bytes were skipped.
    TooLong,
    /// End of input and nothing pending.
    Eof,
}

/// Reads one `\n`-terminated line into `buf`, at most `max` bytes; a longer line is read to its
/// end and discarded.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            return Ok(if too_long {
                Line::TooLong
            } else if buf.is_empty() {
                Line::Eof
            } else {
                Line::Complete
            });
        }
        let (chunk, used, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (&avail[..i], i + 1, true),
            None => (avail, avail.len(), false),
        };
        if !too_long && buf.len() + chunk.len() <= max {
            buf.extend_from_slice(chunk);
        } else {
            too_long = true;
            buf.clear();
        }
        r.consume(used);
        if done {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

/// Serves one connection until EOF, an I/O error or the idle timeout.
/// Answers a peer that is neither root nor the relay's user: reads its first request (so that
/// its write does not fail before it sees the answer), answers `forbidden` and closes. Nothing
/// it sends is interpreted.
fn refuse(stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    let _ = read_line(&mut reader, &mut buf, MAX_REQUEST_BYTES);
    let _ = writeln!(
        writer,
        r#"{{"ok":false,"code":"forbidden","error":"only root and the relay's user may use the admin socket"}}"#
    );
}

fn serve(stream: UnixStream, served: &Weak<Served>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        let response = match read_line(&mut reader, &mut buf, MAX_REQUEST_BYTES)? {
            Line::Eof => return Ok(()),
            Line::TooLong => protocol::error_response(&protocol::Error {
                code: "bad_request",
                message: format!("request longer than {MAX_REQUEST_BYTES} bytes"),
            }),
            Line::Complete => {
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let Some(s) = served.upgrade() else {
                    return Ok(());
                };
                protocol::handle_line(&s.shared, &s.store, &buf, unix_now())
            }
        };
        let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
        out.push(b'\n');
        writer.write_all(&out)?;
        writer.flush()?;
    }
}

/// The wall clock in unix seconds: the default `now` of retention requests.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread (store commit futures need no runtime).
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
