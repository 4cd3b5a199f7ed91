//! A client of the relay's admin socket: one JSON request line, one JSON answer line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

/// How long to wait for an answer (a retention run over many accounts takes seconds).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

/// An error answer of the relay: `code` is `bad_request`, `not_found`, `exists`, `internal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Machine-readable code.
    pub code: String,
    /// The relay's message.
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "relay refused ({}): {}", self.code, self.message)
    }
}

impl std::error::Error for Refused {}

/// A connection to the admin socket.
pub struct Admin {
    path: PathBuf,
    reader: BufReader<UnixStream>,
}

impl Admin {
    /// Connects to the socket at `path`.
    ///
    /// # Errors
    /// The socket does not exist or nobody listens.
    pub fn connect(path: &Path) -> anyhow::Result<Admin> {
        let stream = UnixStream::connect(path)
            .with_context(|| format!("connecting to the admin socket {}", path.display()))?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(Admin {
            path: path.to_owned(),
            reader: BufReader::new(stream),
        })
    }

    /// Sends `request` and returns the answer object; an `"ok": false` answer is a [`Refused`]
    /// error (downcast to inspect its code).
    ///
    /// # Errors
    /// I/O errors, a malformed answer, or the relay's refusal.
    pub fn call(&mut self, request: &Value) -> anyhow::Result<Value> {
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        self.reader
            .get_mut()
            .write_all(&line)
            .with_context(|| format!("writing to {}", self.path.display()))?;
        let mut answer = String::new();
        let n = self
            .reader
            .read_line(&mut answer)
            .with_context(|| format!("reading from {}", self.path.display()))?;
        if n == 0 {
            anyhow::bail!("the relay closed the admin connection");
        }
        let v: Value =
            serde_json::from_str(&answer).with_context(|| format!("bad answer {answer:?}"))?;
        if v["ok"] != Value::Bool(true) {
            return Err(Refused {
                code: v["code"].as_str().unwrap_or("unknown").to_owned(),
                message: v["error"].as_str().unwrap_or("").to_owned(),
            }
            .into());
        }
        Ok(v)
    }
}

/// The refusal code of an error from [`Admin::call`], if the relay refused.
pub fn refusal_code(e: &anyhow::Error) -> Option<&str> {
    e.downcast_ref::<Refused>().map(|r| r.code.as_str())
}
