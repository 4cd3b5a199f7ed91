//! The thread that keeps the served certificate current, by [`TlsMode`]:
//! - external files: their metadata is looked at every [`POLL_INTERVAL`]; when it changed, the
//!   pair is read again and served if it is usable. A bad new file (half written, key and
//!   certificate not matching, unreadable after the relay dropped root) is logged and the
//!   certificate in use keeps serving; the next change is tried again.
//! - ACME: issuance when [`schedule`](super::schedule) says, failures logged with their reason
//!   and retried with backoff while the current certificate (or the self-signed fallback)
//!   keeps serving.
//! - self-signed: nothing to do, no thread.
//!
//! The thread runs a small tokio runtime of its own (the ACME client is async) and stops when
//! the server's stop signal is sent.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::schedule::{Policy, Schedule, Validity};
use super::{acme, CertStore, Certificate, Error};
use crate::config::{Config, TlsMode};
use crate::http::Challenges;

/// How often external certificate files are looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Longest sleep before the ACME schedule is looked at again (a wall clock that jumps, or a
/// machine that slept, is noticed within this).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Starts the thread for `config`'s [`TlsMode`] (none for a self-signed certificate).
///
/// # Errors
/// If the thread or its runtime cannot be made.
pub fn spawn(
    config: &Config,
    certs: Arc<CertStore>,
    challenges: Challenges,
    stop: watch::Receiver<bool>,
) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
    enum Work {
        External(ExternalFiles),
        Acme(Renewer),
    }
    let work = match &config.tls_mode {
        TlsMode::SelfSigned => return Ok(None),
        TlsMode::External { cert, key } => {
            Work::External(ExternalFiles::new(cert.clone(), key.clone()))
        }
        TlsMode::Acme => Work::Acme(Renewer::new(
            acme::Client::new(config, challenges),
            certs.clone(),
            Policy::default(),
        )),
    };
    if matches!(work, Work::Acme(_)) && config.ports.http == 0 {
        tracing::warn!(
            "http_port is 0: nothing answers the ACME server's HTTP-01 challenges, so issuance \
             will fail (set http_port, port 80 reaching the relay)"
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let t = std::thread::Builder::new()
        .name("certificates".into())
        .spawn(move || {
            rt.block_on(async move {
                match work {
                    Work::External(files) => watch_external(files, certs, stop).await,
                    Work::Acme(renewer) => run_acme(renewer, stop).await,
                }
            });
        })?;
    Ok(Some(t))
}

/// Resolves when the stop signal is sent (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn validity(c: &Certificate) -> Validity {
    Validity {
        not_before: c.not_before(),
        not_after: c.not_after(),
    }
}

/// The ACME side of the thread: the schedule, the certificate it issued last, and the store it
/// swaps new ones into.
pub struct Renewer {
    client: acme::Client,
    certs: Arc<CertStore>,
    schedule: Schedule,
    issued: Option<Validity>,
}

impl Renewer {
    /// Starts from the saved ACME certificate (if it covers the names: then it is the one
    /// [`super::setup`] serves).
    pub fn new(client: acme::Client, certs: Arc<CertStore>, policy: Policy) -> Renewer {
        let issued = client
            .saved()
            .filter(|c| c.covers(client.names()))
            .map(|c| validity(&c));
        Renewer {
            client,
            certs,
            schedule: Schedule::new(policy),
            issued,
        }
    }

    /// When the next attempt is due (unix seconds; in the past: now).
    pub fn next_attempt_at(&self, now: i64) -> i64 {
        self.schedule.next_attempt_at(self.issued, now)
    }

    /// One issuance: on success the new certificate serves from the next handshake on; a
    /// failure is logged with its reason and the schedule backs off. Either way the outcome is
    /// returned.
    ///
    /// # Errors
    /// The failed step, from [`acme::Client::issue`].
    pub async fn attempt(&mut self) -> Result<(), acme::Error> {
        match self.client.issue().await {
            Ok(cert) => {
                tracing::info!(
                    names = ?self.client.names(),
                    valid_days = (cert.not_after() - unix_now()) / 86_400,
                    "ACME: certificate issued and serving"
                );
                self.issued = Some(validity(&cert));
                self.certs.swap(cert);
                self.schedule.succeeded();
                Ok(())
            }
            Err(e) => {
                let now = unix_now();
                let next = self.schedule.failed(now);
                tracing::warn!(
                    failures = self.schedule.failures(),
                    "ACME: {e}; next attempt in {} s (the current certificate keeps serving)",
                    next - now
                );
                Err(e)
            }
        }
    }
}

/// Keeps an ACME certificate current until `stop`: attempts issuance whenever `renewer` says.
pub async fn run_acme(mut renewer: Renewer, mut stop: watch::Receiver<bool>) {
    loop {
        let now = unix_now();
        let at = renewer.next_attempt_at(now);
        if at > now {
            let wait = Duration::from_secs((at - now) as u64).min(MAX_SLEEP);
            tokio::select! {
                () = tokio::time::sleep(wait) => continue,
                () = stopped(&mut stop) => return,
            }
        }
        tokio::select! {
            _ = renewer.attempt() => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// Reloads the external files into `certs` when they change, until `stop`.
async fn watch_external(
    mut files: ExternalFiles,
    certs: Arc<CertStore>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            () = stopped(&mut stop) => return,
        }
        match files.check() {
            None => {}
            Some(Ok(cert)) => {
                tracing::info!(
                    path = %files.cert.display(),
                    valid_days = (cert.not_after() - unix_now()) / 86_400,
                    "certificate reloaded"
                );
                certs.swap(cert);
            }
            Some(Err(e)) => {
                let hint = match &e {
                    Error::Io { source, .. }
                        if source.kind() == std::io::ErrorKind::PermissionDenied =>
                    {
                        " (the files must be readable by the user the relay runs as)"
                    }
                    _ => "",
                };
                tracing::warn!(
                    "certificate not reloaded: {e}{hint}; the current one keeps serving"
                );
            }
        }
    }
}

/// What identifies a file's version: inode, modification time (ns), length; `None` if missing.
type Stamp = Option<(u64, i64, u64)>;

fn stamp(path: &std::path::Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec(), m.len()))
}

/// The `tls_external_cert_and_key` files and the version last seen.
#[derive(Debug)]
pub struct ExternalFiles {
    cert: PathBuf,
    key: PathBuf,
    seen: [Stamp; 2],
}

impl ExternalFiles {
    /// Watches `cert` and `key` from their present version on (the one loaded at start).
    pub fn new(cert: PathBuf, key: PathBuf) -> ExternalFiles {
        let seen = [stamp(&cert), stamp(&key)];
        ExternalFiles { cert, key, seen }
    }

    /// `None` while neither file changed; else the pair read again (or why it is unusable).
    /// The version is taken before reading, so a file still being written is read again at the
    /// next check.
    pub fn check(&mut self) -> Option<Result<Certificate, Error>> {
        let now = [stamp(&self.cert), stamp(&self.key)];
        if now == self.seen {
            return None;
        }
        self.seen = now;
        Some(super::load_pair(&self.cert, &self.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = super::super::generate_self_signed(&[name.to_owned()], &key).unwrap();
        (cert, key.serialize_pem())
    }

    #[test]
    fn external_files_reload_on_change_and_a_bad_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let (c1, k1) = pair("one.example");
        std::fs::write(&c, &c1).unwrap();
        std::fs::write(&k, &k1).unwrap();
        let mut files = ExternalFiles::new(c.clone(), k.clone());
        assert!(files.check().is_none(), "unchanged");
        // A new certificate written before its key: the pair does not match yet.
        let (c2, k2) = pair("two.example");
        std::fs::write(&c, &c2).unwrap();
        let half = files.check().expect("changed").unwrap_err();
        assert!(half.to_string().contains("k.pem"), "{half}");
        assert!(files.check().is_none(), "reported once");
        std::fs::write(&k, &k2).unwrap();
        let cert = files.check().expect("changed").unwrap();
        assert_eq!(cert.names(), ["two.example"]);
        std::fs::remove_file(&k).unwrap();
        assert!(matches!(files.check(), Some(Err(Error::Io { .. }))));
    }
}
