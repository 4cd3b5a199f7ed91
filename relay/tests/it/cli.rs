//! The operator commands of the `relay` binary that need no running relay: `relay init` and
//! `relay dns` (printing; `--check` against a DNS server is in `dns_check.rs`), and the invite
//! QR code `relay dev` prints at start.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::free_port;

/// The relay binary as a command.
pub(crate) fn relay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_relay"))
}

/// Runs `cmd` to its end: exit status, stdout, stderr.
pub(crate) fn run(cmd: &mut Command) -> (i32, String, String) {
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
    // The DKIM key at its one path, private, and its record in the zone.
    let key = relay::dkim::key_path(&data, "opendkim");
    let mode = std::fs::metadata(&key)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(mode, 0o600);
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
    let value = relay::dkim::load_or_create(&data, "opendkim")
        .unwrap()
        .dns_txt_value();
    let dkim_line = zone
        .lines()
        .find(|l| l.starts_with("opendkim._domainkey.chat.example.org."))
        .unwrap();
    let strings: Vec<&str> = dkim_line.split('"').skip(1).step_by(2).collect();
    assert!(
        strings.len() >= 2 && strings.iter().all(|s| s.len() <= 255),
        "{dkim_line}"
    );
    assert_eq!(strings.concat(), value);
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
    // (`--data`: without it the key would go to the default data_dir, /var/lib/chatmail-relay.)
    let (code, _, err) = run(relay()
        .args(["init", "other.example", "--force", "--config"])
        .arg(&ini)
        .arg("--data")
        .arg(&data));
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
        .args(["--set", "mx_port=0", "--set", "smtp_port=0"])
        .args([
            "--set",
            "imap_port=0",
            "--set",
            "https_port=0",
            "--set",
            "http_port=0",
        ])
        .args(["--set", &format!("smtps_port={}", free_port())])
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

/// `relay dns --check` against a real DNS server (the test server on loopback, option
/// `dns_server`): a zone with a wrong DKIM key and no MX is reported record by record with the
/// values to set; once fixed, every required record passes.
#[test]
fn dns_check_names_a_wrong_dkim_record_and_a_missing_mx() {
    use relay_testkit::dns::{DnsServer, Record};
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("chatmail.ini");
    let data = dir.path().join("data");
    let (code, _, err) = run(relay()
        .args(["init", "r1.test", "--config"])
        .arg(&ini)
        .arg("--data")
        .arg(&data));
    assert_eq!(code, 0, "{err}");
    // The key `relay init` made.
    let key = relay::dkim::load_or_create(&data, "opendkim").unwrap();
    let dkim = key.dns_txt_value();
    let dns = DnsServer::start();
    let a = std::net::Ipv4Addr::new(192, 0, 2, 1);
    dns.add("r1.test", Record::A(a));
    dns.txt("r1.test", "v=spf1 a ~all");
    dns.txt("_dmarc.r1.test", "v=DMARC1;p=reject;adkim=s;aspf=s");
    dns.txt("_adsp._domainkey.r1.test", "dkim=discardable");
    dns.txt("_mta-sts.r1.test", "v=STSv1; id=202001010000");
    for sub in ["www", "autoconfig", "mta-sts"] {
        dns.add(&format!("{sub}.r1.test"), Record::Cname("r1.test".into()));
    }
    for (service, port) in [
        ("_submission", 587),
        ("_submissions", 465),
        ("_imap", 143),
        ("_imaps", 993),
    ] {
        dns.add(
            &format!("{service}._tcp.r1.test"),
            Record::Srv(0, 1, port, "r1.test".into()),
        );
    }
    // A key that is not the relay's.
    let wrong = dkim.replacen("p=MII", "p=MIJ", 1);
    assert_ne!(wrong, dkim);
    let dkim_name = "opendkim._domainkey.r1.test";
    dns.set(
        dkim_name,
        vec![Record::Txt(relay::dkim::key::split_txt(&wrong))],
    );
    let check = || {
        run(relay()
            .args(["dns", "--check", "--ip", "192.0.2.1", "--config"])
            .arg(&ini)
            .args(["--set", &dns.relay_option()]))
    };
    let (code, out, err) = check();
    assert_eq!(code, 1, "{out}\n{err}");
    let line = |start: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in:\n{out}"))
            .to_owned()
    };
    let mx = line("MISSING  r1.test. MX");
    assert!(mx.contains("(required)"), "{mx}");
    assert!(
        mx.contains("r1.test.                                 3600 IN MX    10 r1.test."),
        "{mx}"
    );
    let dkim_line = line("WRONG    opendkim._domainkey.r1.test. TXT");
    assert!(
        dkim_line.contains(&format!("{wrong:?}")),
        "what was found: {dkim_line}"
    );
    let set = dkim_line.split("set: ").nth(1).unwrap();
    let joined: String = set.split('"').skip(1).step_by(2).collect();
    assert_eq!(joined, dkim, "the value to set is the key's record");
    for ok in [
        "ok       r1.test. A",
        "ok       www.r1.test. CNAME",
        "ok       _mta-sts.r1.test. TXT",
        "ok       _imaps._tcp.r1.test. SRV",
        "ok       _dmarc.r1.test. TXT",
    ] {
        line(ok);
    }
    // CAA is recommended: reported, not failing.
    assert!(line("MISSING  r1.test. CAA").contains("(recommended)"));
    assert!(
        out.contains("2 required record(s) missing or wrong"),
        "{out}"
    );

    // Fixed: exit status 0.
    dns.add("r1.test", Record::Mx(10, "r1.test".into()));
    dns.set(dkim_name, vec![Record::Txt(key.dns_txt_strings())]);
    let (code, out, err) = check();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("every required record is in place"), "{out}");
    assert!(dns.queries_for(dkim_name) >= 2, "asked the test server");

    // Without the key file nothing can be checked against it: a required record is missing.
    std::fs::remove_file(relay::dkim::key_path(&data, "opendkim")).unwrap();
    let (code, out, err) = check();
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        line_in(&out, "MISSING  DKIM key").contains("relay init"),
        "{out}"
    );
}

fn line_in(out: &str, start: &str) -> String {
    out.lines()
        .find(|l| l.trim_start().starts_with(start))
        .unwrap_or_else(|| panic!("no line {start:?} in:\n{out}"))
        .to_owned()
}
