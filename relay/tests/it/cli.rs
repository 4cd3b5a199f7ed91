//! The operator commands of the `relay` binary that need no running relay: `relay init` and
//! `relay dns` (printing; `--check` against a DNS server is in `dns_check.rs`), and the invite
//! QR code `relay dev` prints at start.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::free_port;

fn relay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_relay"))
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn init_writes_a_loadable_config_and_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("chatmail.ini");
    let data = dir.path().join("data");
    let (code, out, err) = run(relay()
        .args(["init", "chat.example.org", "--config"])
        .arg(&ini)
        .arg("--data")
        .arg(&data));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("wrote"), "{out}");
    let text = std::fs::read_to_string(&ini).unwrap();
    assert!(
        text.contains("\nmail_domain = chat.example.org\n"),
        "{text}"
    );
    assert!(text.contains("\n# max_mailbox_size = 500M\n"), "{text}");
    // What it wrote is what `relay dns` (and `relay serve`) load.
    let (code, zone, err) = run(relay()
        .args(["dns", "--ip", "203.0.113.9", "--config"])
        .arg(&ini));
    assert_eq!(code, 0, "{err}");
    assert!(zone.contains("chat.example.org.                        3600 IN A     203.0.113.9"));
    assert!(
        zone.contains("3600 IN MX    10 chat.example.org."),
        "{zone}"
    );
    assert!(err.is_empty(), "no unknown-option warnings: {err}");

    // A second init is refused and leaves the file alone; --force overwrites.
    std::fs::write(&ini, "[params]\nmail_domain = kept.example\n").unwrap();
    let (code, _, err) = run(relay()
        .args(["init", "other.example", "--config"])
        .arg(&ini));
    assert_eq!(code, 1);
    assert!(err.contains("--force"), "{err}");
    assert!(std::fs::read_to_string(&ini)
        .unwrap()
        .contains("kept.example"));
    let (code, _, err) = run(relay()
        .args(["init", "other.example", "--force", "--config"])
        .arg(&ini));
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read_to_string(&ini)
        .unwrap()
        .contains("mail_domain = other.example"));
    // A domain the configuration refuses is refused before anything is written.
    let bad = dir.path().join("bad.ini");
    let (code, _, err) = run(relay().args(["init", "a b", "--config"]).arg(&bad));
    assert_eq!(code, 2);
    assert!(err.contains("mail_domain"), "{err}");
    assert!(!bad.exists());
}

#[test]
fn dns_for_an_ip_relay_needs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(relay().args(["dns", "--data"]).arg(dir.path()));
    assert_eq!(code, 0);
    assert!(out.contains("needs no DNS records"), "{out}");
}

#[test]
fn dev_prints_the_invite_link_and_its_qr_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = relay()
        .args(["dev", "--io", "epoll", "--data"])
        .arg(dir.path())
        .args(["--set", "smtp_port=0", "--set", "submission_port=0"])
        .args([
            "--set",
            "imap_port=0",
            "--set",
            "https_port=0",
            "--set",
            "http_port=0",
        ])
        .args(["--set", &format!("submissions_port={}", free_port())])
        .args(["--set", &format!("imaps_port={}", free_port())])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    let url = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("no dclogin link printed");
        if line.starts_with("dclogin:") {
            break line;
        }
        lines.push(line);
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(url.contains("&ic=3"), "{url}");
    // The QR code before the link: rows of half blocks, as wide as each other.
    let qr: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains('\u{2580}') || l.contains('\u{2584}') || l.contains('\u{2588}'))
        .collect();
    assert!(qr.len() > 10, "{lines:#?}");
    let width = qr[0].chars().count();
    assert!(qr.iter().all(|l| l.chars().count() == width), "{qr:#?}");
    assert_eq!(read_qr(&qr), url, "the QR code holds the link");
}

/// Decodes a QR code printed with half blocks (two modules per character cell; a block is a
/// light module, as printed for dark terminals).
fn read_qr(rows: &[&String]) -> String {
    const SCALE: usize = 4;
    let cells: Vec<Vec<char>> = rows.iter().map(|l| l.chars().collect()).collect();
    let (w, h) = (cells[0].len(), cells.len() * 2);
    let light = |x: usize, y: usize| {
        let c = cells[y / 2][x];
        matches!(
            (c, y % 2),
            ('\u{2588}', _) | ('\u{2580}', 0) | ('\u{2584}', 1)
        )
    };
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w * SCALE, h * SCALE, |x, y| {
        if light(x / SCALE, y / SCALE) {
            255
        } else {
            0
        }
    });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code");
    grids[0].decode().unwrap().1
}
