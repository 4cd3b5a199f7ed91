//! The relay in a container runtime's default sandbox: Docker's (and Podman's) default seccomp
//! profile refuses `io_uring_setup` with `EPERM`. `relay dev --io auto` must notice at start,
//! say so, pick epoll and serve. (Podman cannot start containers on the test machines, so the
//! part that matters is reproduced: the same filter on the relay process.)
//!
//! The filter is installed by this test binary on itself, in a child run of this same test
//! (`RELAY_TEST_SECCOMP_EXEC` set), which then executes the relay: a seccomp filter stays across
//! `execve`, so the relay starts under it exactly as under a container runtime.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relay_testkit::free_port;

use crate::harness::{message, new_addr, Client, PASSWORD};

const EXEC_VAR: &str = "RELAY_TEST_SECCOMP_EXEC";
const TEST_NAME: &str = "container::io_auto_under_a_seccomp_profile_without_io_uring_picks_epoll";

/// In the child run: refuse `io_uring_setup` with `EPERM` (as Docker's default profile does),
/// allow everything else, and become the relay with the arguments in [`EXEC_VAR`].
fn exec_relay_under_filter(args: &str) -> ! {
    let rules = BTreeMap::from([(libc::SYS_io_uring_setup, vec![])]);
    let filter = seccompiler::SeccompFilter::new(
        rules,
        seccompiler::SeccompAction::Allow,
        seccompiler::SeccompAction::Errno(libc::EPERM as u32),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap();
    let program: seccompiler::BpfProgram = filter.try_into().unwrap();
    // Every thread of this test process (libtest runs the test on a thread of its own); the
    // exec below replaces them all with the relay, which keeps the filter.
    seccompiler::apply_filter_all_threads(&program).unwrap();
    let mut args = args.split('\u{1f}');
    let bin = args.next().unwrap();
    let err = Command::new(bin).args(args).exec();
    panic!("exec {bin}: {err}");
}

/// The log line without terminal colour codes (`ESC [ ... m`), should there be any.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn io_auto_under_a_seccomp_profile_without_io_uring_picks_epoll() {
    if let Ok(args) = std::env::var(EXEC_VAR) {
        exec_relay_under_filter(&args);
    }
    let dir = tempfile::tempdir().unwrap();
    let (submissions, imaps) = (free_port(), free_port());
    let data = dir.path().to_str().unwrap().to_owned();
    let sets = [
        "mx_port=0".to_owned(),
        "smtp_port=0".to_owned(),
        "imap_port=0".to_owned(),
        "https_port=0".to_owned(),
        "http_port=0".to_owned(),
        "turn_port=0".to_owned(),
        format!("smtps_port={submissions}"),
        format!("imaps_port={imaps}"),
    ];
    let mut relay_args = vec![
        env!("CARGO_BIN_EXE_relay").to_owned(),
        "dev".into(),
        "--io".into(),
        "auto".into(),
        "--data".into(),
        data,
    ];
    for s in sets {
        relay_args.extend(["--set".to_owned(), s]);
    }
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads", "1"])
            .env(EXEC_VAR, relay_args.join("\u{1f}"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The start-up log: the refusal noticed and epoll chosen.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = Vec::new();
    let started = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            panic!("no start line within 30 s:\n{}", log.join("\n"));
        };
        let line = strip_ansi(&line);
        let done = line.contains("relay started");
        log.push(line);
        if done {
            break log.last().unwrap().clone();
        }
    };
    let refusal = log
        .iter()
        .find(|l| l.contains("io_uring unavailable"))
        .unwrap_or_else(|| panic!("the refusal is not logged:\n{}", log.join("\n")));
    assert!(
        refusal.contains("using epoll") && refusal.contains("Operation not permitted"),
        "{refusal}"
    );
    assert!(started.contains("backend=epoll"), "{started}");

    // And it serves: an account made by its first login, a message submitted and fetched.
    let addr = new_addr("sec");
    let at = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut imap = Client::tls(at(imaps));
    assert!(imap.line().starts_with("* OK"));
    let (_, status) = imap.imap("a", &format!("LOGIN \"{addr}\" \"{PASSWORD}\""));
    assert!(status.starts_with("a OK"), "{status}");
    let mut smtp = Client::tls(at(submissions));
    assert_eq!(smtp.reply().0, 220);
    smtp.smtp_login(&addr, PASSWORD);
    let (code, text) = smtp.submit(
        &addr,
        &[&addr],
        &message("encrypted.eml.tmpl", &addr, &addr),
    );
    assert_eq!(code, 250, "{text}");
    let (_, status) = imap.imap("s", "SELECT INBOX");
    assert!(status.starts_with("s OK"), "{status}");
    let (lines, status) = imap.imap("f", "FETCH 1:* (FLAGS)");
    assert!(status.starts_with("f OK"), "{status}");
    assert_eq!(lines.len(), 1, "{lines:?}");

    // The filter was really there: the relay process runs under seccomp filter mode.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["Seccomp:", "2"])),
        "{status}"
    );
}

/// The relay, killed and reaped however the test ends (a failed assertion included).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
