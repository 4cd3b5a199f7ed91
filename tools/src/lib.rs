//! Developer tools that drive a running relay (or the Postfix + Dovecot baseline, or nginx) over the
//! network: the `loadgen` load generator (SMTP, IMAP), `httpbench` (HTTPS) and their building
//! blocks — minimal SMTP and IMAP clients with TLS, test accounts, messages that pass the
//! encryption gate, latency statistics, server memory from `/proc`.
//!
//! Everything here is a client on loopback. Nothing here opens, reads or writes a store's files,
//! and nothing verifies certificates: never point these tools at a server you do not run.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: network clients

pub mod account;
pub mod imap;
pub mod mail;
pub mod notifier;
pub mod smtp;
pub mod stats;
pub mod tls;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// Why a client operation failed. Every variant names the step (`what`), so errors can be counted
/// by [`Error::key`] without keeping per-message text.
#[derive(Debug)]
pub enum Error {
    /// The step did not finish before its deadline.
    Timeout {
        /// The step, e.g. `smtp DATA`.
        what: &'static str,
    },
    /// A socket or TLS error.
    Io {
        /// The step.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The server closed the connection.
    Closed {
        /// The step.
        what: &'static str,
    },
    /// The server answered with a refusal (SMTP code, or 0 with IMAP `NO`/`BAD`).
    Reply {
        /// The step.
        what: &'static str,
        /// SMTP reply code; 0 for IMAP.
        code: u16,
        /// The reply text.
        text: String,
    },
    /// The server sent something this client cannot parse.
    Protocol {
        /// The step.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl Error {
    /// A short key for counting errors of the same kind, e.g. `smtp MAIL: reply 450`.
    pub fn key(&self) -> String {
        match self {
            Error::Timeout { what } => format!("{what}: timeout"),
            Error::Io { what, source } => format!("{what}: io {:?}", source.kind()),
            Error::Closed { what } => format!("{what}: connection closed"),
            Error::Reply {
                what,
                code: 0,
                text,
            } => {
                let word = text.split_whitespace().next().unwrap_or("");
                format!("{what}: {word}")
            }
            Error::Reply { what, code, .. } => format!("{what}: reply {code}"),
            Error::Protocol { what, .. } => format!("{what}: protocol error"),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Timeout { what } => write!(f, "{what}: timed out"),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Closed { what } => write!(f, "{what}: connection closed by server"),
            Error::Reply {
                what,
                code: 0,
                text,
            } => write!(f, "{what}: {text}"),
            Error::Reply { what, code, text } => write!(f, "{what}: {code} {text}"),
            Error::Protocol { what, detail } => write!(f, "{what}: {detail}"),
        }
    }
}

impl std::error::Error for Error {}

/// Runs `fut` with a deadline, mapping the I/O error and the timeout to [`Error`].
pub async fn within<T>(
    what: &'static str,
    limit: Duration,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) if source.kind() == io::ErrorKind::UnexpectedEof => {
            Err(Error::Closed { what })
        }
        Ok(Err(source)) => Err(Error::Io { what, source }),
        Err(_) => Err(Error::Timeout { what }),
    }
}

/// Opens a TCP connection to `dst`, from `src` if given (`bind` before `connect`, so many
/// loopback source addresses can be used), with `TCP_NODELAY`.
///
/// # Errors
/// Socket errors, or `Timeout` after `limit`.
pub async fn connect_tcp(
    what: &'static str,
    dst: SocketAddr,
    src: Option<IpAddr>,
    limit: Duration,
) -> Result<TcpStream, Error> {
    within(what, limit, async {
        let socket = if dst.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = src {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(dst).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
    .await
}

/// Raises the soft `RLIMIT_NOFILE` to at least `want` (and the hard limit too when allowed).
/// Returns the soft limit in force afterwards.
///
/// # Errors
/// The `getrlimit`/`setrlimit` error if even the soft limit cannot be raised to the hard one.
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let cur = lim.current.unwrap_or(u64::MAX);
    if cur >= want {
        return Ok(cur);
    }
    let max = lim.maximum.unwrap_or(u64::MAX);
    let raised = Rlimit {
        current: Some(want),
        maximum: Some(want.max(max)),
    };
    if setrlimit(Resource::Nofile, raised).is_ok() {
        return Ok(want);
    }
    // Not allowed to raise the hard limit: take what the hard limit gives.
    let fallback = Rlimit {
        current: lim.maximum,
        maximum: lim.maximum,
    };
    setrlimit(Resource::Nofile, fallback)?;
    Ok(max)
}

/// `VmRSS` of a process in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Sum of VmRSS (KiB) of `pids` and of every process named in `names` (`/proc/<pid>/comm`), and
/// the sum of their Pss (`smaps_rollup`; shared pages divided among the processes sharing them).
pub fn server_memory(pids: &[u32], names: &[String]) -> (u64, u64) {
    let mut all: Vec<u32> = pids.to_vec();
    if !names.is_empty() {
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if names.iter().any(|n| n == comm.trim()) && !all.contains(&pid) {
                    all.push(pid);
                }
            }
        }
    }
    let pss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Pss:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    };
    all.iter().fold((0, 0), |(r, p), &pid| {
        (r + rss_kib(pid).unwrap_or(0), p + pss(pid))
    })
}

/// The `i`-th loopback source address: 127.0.0.1, 127.0.0.2, … 127.0.0.254, 127.0.1.1, …
pub fn loopback_source(i: usize) -> IpAddr {
    let x = (i / 254) % 256;
    let y = 1 + i % 254;
    IpAddr::from([127, 0, x as u8, y as u8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_sources_stay_in_127_0() {
        assert_eq!(loopback_source(0), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(loopback_source(253), IpAddr::from([127, 0, 0, 254]));
        assert_eq!(loopback_source(254), IpAddr::from([127, 0, 1, 1]));
        for i in 0..70_000 {
            let IpAddr::V4(v4) = loopback_source(i) else {
                panic!("v6")
            };
            assert!(v4.is_loopback());
            assert_ne!(v4.octets()[3], 0);
            assert_ne!(v4.octets()[3], 255);
        }
    }

    #[test]
    fn own_rss_is_readable() {
        let kib = rss_kib(std::process::id()).expect("own /proc status should be readable");
        assert!(kib > 100, "rss {kib} KiB");
    }

    #[test]
    fn nofile_limit_can_reach_the_current_soft_limit() {
        let now = raise_nofile(0).unwrap();
        assert!(raise_nofile(now).unwrap() >= now);
    }

    #[tokio::test]
    async fn refused_connection_is_an_error_not_a_hang() {
        // Port 1 on loopback: nothing listens there.
        let dst: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let err = connect_tcp("test connect", dst, None, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(err.key().starts_with("test connect: io"), "{}", err.key());
    }
}
