//! A small JSON-RPC 2.0 client for `deltachat-rpc-server` (Delta Chat core over stdio).
//!
//! Requests are one JSON object per line on the server's stdin; answers come back one per line
//! on its stdout, matched by `id`. A reader thread dispatches answers; an event thread long-polls
//! `get_next_event_batch` and forwards events on a channel. The server's stderr goes to a file so
//! a full pipe can never block it (chatmail.md §12.8, gotcha 1).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};

/// An error answer of the server, or the server went away.
#[derive(Debug, Clone)]
pub struct RpcError(pub String);

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rpc: {}", self.0)
    }
}

impl std::error::Error for RpcError {}

type Pending = Arc<Mutex<HashMap<u64, mpsc::Sender<Result<Value, RpcError>>>>>;

struct Inner {
    stdin: Mutex<ChildStdin>,
    pending: Pending,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
}

impl Inner {
    fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, RpcError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(RpcError("server closed".into()));
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        self.pending
            .lock()
            .map_err(|_| RpcError("poisoned".into()))?
            .insert(id, tx);
        let mut line =
            json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id}).to_string();
        line.push('\n');
        let written = self
            .stdin
            .lock()
            .map_err(|_| RpcError("poisoned".into()))
            .and_then(|mut w| {
                w.write_all(line.as_bytes())
                    .and_then(|()| w.flush())
                    .map_err(|e| RpcError(format!("writing to the server: {e}")))
            });
        if let Err(e) = written {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&id);
            }
            return Err(e);
        }
        let answer = match timeout {
            Some(t) => rx.recv_timeout(t).map_err(|_| {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&id);
                }
                RpcError(format!("{method}: no answer within {t:?}"))
            })?,
            None => rx.recv().map_err(|_| RpcError("server closed".into()))?,
        };
        answer.map_err(|e| RpcError(format!("{method}: {}", e.0)))
    }
}

/// A running `deltachat-rpc-server`. Dropping it kills the server.
pub struct Rpc {
    inner: Arc<Inner>,
    child: Child,
    events: Option<mpsc::Receiver<Value>>,
}

/// Default timeout of [`Rpc::call`]: configuring an account can take a while on a slow relay.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

impl Rpc {
    /// Starts `server` with its accounts in `accounts_dir` and its stderr appended to
    /// `stderr_log`, and checks it answers.
    ///
    /// # Errors
    /// The server cannot be started or does not answer `get_system_info`.
    pub fn start(server: &Path, accounts_dir: &Path, stderr_log: &Path) -> anyhow::Result<Rpc> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr_log)
            .with_context(|| format!("opening {}", stderr_log.display()))?;
        let mut child = Command::new(server)
            .env("DC_ACCOUNTS_PATH", accounts_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", server.display()))?;
        let stdin = child.stdin.take().context("server stdin")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        {
            let pending = pending.clone();
            let closed = closed.clone();
            std::thread::Builder::new()
                .name("rpc-reader".into())
                .spawn(move || read_answers(BufReader::new(stdout), &pending, &closed))?;
        }
        let inner = Arc::new(Inner {
            stdin: Mutex::new(stdin),
            pending,
            next_id: AtomicU64::new(1),
            closed,
        });
        let (tx, rx) = mpsc::channel();
        {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("rpc-events".into())
                .spawn(move || {
                    while let Ok(batch) = inner.call("get_next_event_batch", json!([]), None) {
                        for ev in batch.as_array().into_iter().flatten() {
                            if tx.send(ev.clone()).is_err() {
                                return;
                            }
                        }
                    }
                })?;
        }
        let rpc = Rpc {
            inner,
            child,
            events: Some(rx),
        };
        let info = rpc
            .call("get_system_info", json!([]))
            .context("the rpc server did not start")?;
        tracing::info!(
            "deltachat-rpc-server ready, core {}",
            info["deltachat_core_version"].as_str().unwrap_or("?")
        );
        Ok(rpc)
    }

    /// Calls `method` with positional `params`, waiting at most [`CALL_TIMEOUT`].
    ///
    /// # Errors
    /// The server's error answer, a timeout, or the server went away.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        self.inner.call(method, params, Some(CALL_TIMEOUT))
    }

    /// The event stream (`{"contextId": n, "event": {"kind": ..., ...}}`); can be taken once.
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<Value>> {
        self.events.take()
    }

    /// Whether the server process is still running.
    pub fn is_alive(&mut self) -> bool {
        !self.inner.closed.load(Ordering::SeqCst) && matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Rpc {
    fn drop(&mut self) {
        let _ = self.inner.call(
            "stop_io_for_all_accounts",
            json!([]),
            Some(Duration::from_secs(5)),
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_answers(mut r: impl BufRead, pending: &Pending, closed: &AtomicBool) {
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            tracing::warn!("rpc: unparsable line from the server: {line:?}");
            continue;
        };
        let Some(id) = v["id"].as_u64() else {
            continue;
        };
        let tx = pending.lock().ok().and_then(|mut p| p.remove(&id));
        if let Some(tx) = tx {
            let res = match v.get("error") {
                Some(e) => Err(RpcError(
                    e["message"]
                        .as_str()
                        .map_or_else(|| e.to_string(), str::to_owned),
                )),
                None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
            };
            let _ = tx.send(res);
        }
    }
    closed.store(true, Ordering::SeqCst);
    // Waiters see a closed channel.
    if let Ok(mut p) = pending.lock() {
        p.clear();
    }
}
