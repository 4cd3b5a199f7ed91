//! `relay import`: a cmdeploy-shaped tree (real `{SHA512-CRYPT}` hashes, Maildir `cur/` and
//! `new/` with flags, a gzip-compressed message, folders, device tokens, bad input of every
//! kind the issue lists) imported with the real binary, then served by a real relay: the old
//! passwords log in over IMAP and see the same UIDs, flags and tokens.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use relay::server::Kind;
use relay::store::{Store, StoreConfig};

use crate::harness::{backends, Client, Relay};

const RELAY: &str = env!("CARGO_BIN_EXE_relay");
/// `relay dev`'s domain: addresses are `<local>@[127.0.0.1]`.
const DOMAIN: &str = "[127.0.0.1]";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn set_mtime(path: &Path, unix: i64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(unix as u64))
        .unwrap();
}

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: a@{DOMAIN}\r\nTo: b@{DOMAIN}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@x>\r\n\r\nbody of {subject}\r\n"
    )
    .into_bytes()
}

/// Writes a message file named for Dovecot (`<time>.M<n>.host,S=<size>,W=<size>[:2,<flags>]`)
/// and returns its base name.
fn put(dir: &Path, sub: &str, time: i64, n: u32, body: &[u8], flags: Option<&str>) -> String {
    let base = format!("{time}.M{n}P1.host,S={},W={}", body.len(), body.len() + 2);
    let name = match flags {
        Some(f) => format!("{base}:2,{f}"),
        None => base.clone(),
    };
    std::fs::create_dir_all(dir.join(sub)).unwrap();
    let path = dir.join(sub).join(name);
    std::fs::write(&path, body).unwrap();
    set_mtime(&path, time);
    base
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

/// An account directory with its password file (mtime = last login day) and the marker.
fn account(root: &Path, local: &str, password_text: &str, login_day: i64) -> PathBuf {
    let dir = root.join(format!("{local}@{DOMAIN}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("password"), password_text).unwrap();
    set_mtime(&dir.join("password"), login_day * 86_400 + 3_600);
    std::fs::write(dir.join("enforceE2EEincoming"), b"").unwrap();
    dir
}

fn import(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(RELAY)
        .arg("import")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn login(relay: &Relay, addr: &str, password: &str) -> Client {
    let mut c = Client::tls(relay.addr(Kind::Imaps));
    assert!(c.line().starts_with("* OK"));
    let (_, status) = c.imap("l1", &format!("LOGIN \"{addr}\" \"{password}\""));
    assert!(status.starts_with("l1 OK"), "{addr}: {status}");
    c
}

/// `(uid, flags)` of every message of the selected mailbox, flags sorted.
fn uids_and_flags(c: &mut Client) -> Vec<(u32, Vec<String>)> {
    let (lines, status) = c.imap("f1", "UID FETCH 1:* (UID FLAGS)");
    assert!(status.starts_with("f1 OK"), "{status}");
    let mut v: Vec<(u32, Vec<String>)> = lines
        .iter()
        .filter(|l| l.contains(" FETCH ("))
        .map(|l| {
            let uid = l.split("UID ").nth(1).unwrap();
            let uid: u32 = uid
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let flags = l.split("FLAGS (").nth(1).unwrap();
            let flags = flags.split(')').next().unwrap();
            let mut flags: Vec<String> = flags
                .split_whitespace()
                .filter(|f| *f != "\\Recent")
                .map(str::to_owned)
                .collect();
            flags.sort();
            (uid, flags)
        })
        .collect();
    v.sort();
    v
}

fn flags(f: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = f.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

#[test]
fn cmdeploy_tree_imports_once_and_old_passwords_see_their_mail() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mail").join(DOMAIN);
    let outside = tmp.path().join("outside-secret");
    std::fs::write(&outside, message("secret")).unwrap();
    let data = tmp.path().join("data");
    let now = now();
    let today = now / 86_400;

    // alice: INBOX with a uidlist (UIDs 2, 5, 9 listed; one file in new/ Dovecot had not
    // listed yet), keywords, a gzip-compressed message, two folders, device tokens.
    let alice = format!("alice@{DOMAIN}");
    let alice_pw = "alice-old-password";
    let hash = relay::accounts::hash_password(alice_pw).unwrap();
    let a = account(&root, "alice", &format!("{hash}\n"), today - 3);
    let b2 = put(&a, "cur", 1_700_000_002, 1, &message("two"), Some("S"));
    let b5 = put(&a, "cur", 1_700_000_005, 2, &message("five"), Some("RSa"));
    let gz = gzip(&message("nine-compressed"));
    let b9 = put(&a, "cur", 1_700_000_009, 3, &gz, Some("F"));
    put(&a, "new", 1_700_000_010, 4, &message("new-one"), None);
    std::fs::write(
        a.join("dovecot-uidlist"),
        format!("3 V1600000000 N20 G0123456789abcdef\n2 :{b2}\n5 W300 :{b5}\n9 :{b9}\n"),
    )
    .unwrap();
    std::fs::write(a.join("dovecot-keywords"), "0 $MDNSent\n").unwrap();
    put(
        &a.join(".DeltaChat"),
        "cur",
        1_700_000_100,
        5,
        &message("dc"),
        Some("S"),
    );
    put(
        &a.join(".A.B"),
        "new",
        1_700_000_200,
        6,
        &message("nested"),
        None,
    );
    std::fs::write(
        a.join("metadata.json"),
        format!(
            r#"{{"devicetoken": {{"openpgp:alice-phone": {}, "stale": {}}}}}"#,
            now - 86_400,
            now - 100 * 86_400
        ),
    )
    .unwrap();
    // Symlinks pointing outside the tree: a message and a folder's file.
    std::os::unix::fs::symlink(&outside, a.join("cur").join("1700000300.M7P1.host:2,S")).unwrap();
    std::os::unix::fs::symlink(tmp.path(), root.join(format!("link@{DOMAIN}"))).unwrap();

    // bob: a hash of another scheme (imported disabled), no marker.
    let b = account(
        &root,
        "bob",
        "{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuuXyZ\n",
        today,
    );
    std::fs::remove_file(b.join("enforceE2EEincoming")).unwrap();
    put(&b, "cur", 1_700_000_001, 1, &message("bob"), Some("S"));

    // carol: broken metadata.json, an unparsable name, zero-byte and oversized messages.
    let carol = format!("carol@{DOMAIN}");
    let carol_pw = "carol-old-password";
    let hash = relay::accounts::hash_password(carol_pw).unwrap();
    let c = account(&root, "carol", &hash, today - 1);
    std::fs::write(c.join("metadata.json"), b"{\"devicetoken\": {").unwrap();
    std::fs::create_dir_all(c.join("cur")).unwrap();
    std::fs::write(
        c.join("cur").join("1700000001.M1.host:2,S!?"),
        message("odd-name"),
    )
    .unwrap();
    std::fs::write(c.join("cur").join("1700000002.M2.host,S=0:2,S"), b"").unwrap();
    // 100 MB: a sparse file (skipped by its size, never read) and a gzip file that inflates
    // past max_message_size (skipped as soon as it does).
    let big = std::fs::File::create(c.join("cur").join("1700000003.M3.host:2,S")).unwrap();
    big.set_len(100 << 20).unwrap();
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![b'a'; 1 << 20];
    for _ in 0..40 {
        bomb.write_all(&zeros).unwrap();
    }
    std::fs::write(
        c.join("cur").join("1700000004.M4.host:2,S"),
        bomb.finish().unwrap(),
    )
    .unwrap();
    put(&c, "new", 1_700_000_005, 5, &message("carol-ok"), None);

    // The reference's ini and DKIM key.
    let ini = tmp.path().join("reference.ini");
    std::fs::write(
        &ini,
        "[params]\nmail_domain = 127.0.0.1\nmax_message_size = 31457280\ndelete_mails_after = 40\nmailboxes_dir = /home/vmail/mail/x\n",
    )
    .unwrap();
    let key = relay::dkim::DkimKey::generate(&mut rand::rngs::OsRng).unwrap();
    let key_file = tmp.path().join("opendkim.private");
    std::fs::write(&key_file, key.to_pkcs1_pem().unwrap()).unwrap();

    let mail_root = tmp.path().join("mail");
    let src = mail_root.to_str().unwrap();
    let d = data.to_str().unwrap();
    let extra = [
        "--ini",
        ini.to_str().unwrap(),
        "--dkim-key",
        key_file.to_str().unwrap(),
    ];

    // A dry run reports and changes nothing.
    let (ok, out, err) = import(&[&[src, "--data", d, "--dry-run"][..], &extra].concat());
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("would import: 3 accounts (1 disabled)"),
        "{out}"
    );
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    assert!(!data.join("store").exists(), "dry run made a store");
    assert!(!data.join("dkim").exists(), "dry run wrote the key");

    let (ok, out, err) = import(&[&[src, "--data", d][..], &extra].concat());
    assert!(ok, "{out}\n{err}");
    // alice 4 + 1 + 1, bob 1, carol: the odd name and the one in new/.
    assert!(
        out.contains("imported: 3 accounts (1 disabled), 2 mailboxes besides INBOX, 9 messages"),
        "{out}"
    );
    assert!(out.contains("device tokens"), "{out}");
    for reported in [
        "2 × symlinks not followed (skipped)",
        "1 × unparsable Maildir file names (imported with no flags)",
        "1 × zero-byte message files",
        "2 × messages larger than max_message_size (skipped)",
        "1 × unreadable metadata.json",
        "accounts with a password hash other than {SHA512-CRYPT}",
        "bob@[127.0.0.1] ({BLF-CRYPT})",
        "1 × accounts without enforceE2EEincoming",
        "token expired",
        "delete_mails_after = 40",
        "not carried over (not options of this relay, or with another meaning here): mailboxes_dir",
        "copied to",
    ] {
        assert!(out.contains(reported), "missing {reported:?} in\n{out}");
    }
    assert!(!out.contains("secret"), "{out}");
    let imported_key = std::fs::read_to_string(data.join("dkim/opendkim.private")).unwrap();
    assert_eq!(
        relay::dkim::DkimKey::from_pem(&imported_key)
            .unwrap()
            .dns_txt_value(),
        key.dns_txt_value()
    );

    // Again: nothing twice.
    let (ok, out, err) = import(&[&[src, "--data", d][..], &extra].concat());
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("imported: 0 accounts (0 disabled), 0 mailboxes besides INBOX, 0 messages"),
        "{out}"
    );
    assert!(
        out.contains("already there from an earlier run: 3 accounts, 9 messages"),
        "{out}"
    );
    assert!(out.contains("holds this key already"), "{out}");

    let relay = Relay::builder(backends()[0]).data_dir(&data).start();
    // The store is in use: a clear refusal.
    let (ok, _, err) = import(&[src, "--data", d]);
    assert!(!ok);
    assert!(err.contains("in use by a running relay"), "{err}");
    let (ok, _, err) = import(&[src, "--data", d, "--dry-run"]);
    assert!(!ok);
    assert!(err.contains("in use by a running relay"), "{err}");

    // The last login day as the password file's mtime said (before a login moves it).
    let info = relay.store().account(&alice).unwrap();
    assert_eq!(i64::from(info.last_login_day), today - 3);

    let mut c = login(&relay, &alice, alice_pw);
    let (lines, status) = c.imap("s1", "SELECT INBOX");
    assert!(status.starts_with("s1 OK"), "{status}");
    let all = lines.join("\n");
    assert!(all.contains("[UIDVALIDITY 1600000000]"), "{all}");
    assert!(all.contains("[UIDNEXT 21]"), "{all}");
    assert_eq!(
        uids_and_flags(&mut c),
        vec![
            (2, flags(&["\\Seen"])),
            (5, flags(&["\\Answered", "\\Seen", "$MDNSent"])),
            (9, flags(&["\\Flagged"])),
            (20, flags(&[])),
        ]
    );
    let (lines, _) = c.imap("b1", "UID FETCH 9 BODY.PEEK[]");
    assert!(lines.join("\n").contains("body of nine-compressed"));
    let (lines, _) = c.imap("d1", "UID FETCH 2 INTERNALDATE");
    assert!(lines.join("\n").contains("14-Nov-2023"), "{lines:?}");
    let (lines, _) = c.imap("l2", "LIST \"\" *");
    let list = lines.join("\n");
    assert!(list.contains("DeltaChat") && list.contains("A/B"), "{list}");
    let (_, status) = c.imap("s2", "SELECT DeltaChat");
    assert!(status.starts_with("s2 OK"));
    assert_eq!(uids_and_flags(&mut c), vec![(1, flags(&["\\Seen"]))]);
    let (_, status) = c.imap("s3", "SELECT A/B");
    assert!(status.starts_with("s3 OK"));
    assert_eq!(uids_and_flags(&mut c), vec![(1, flags(&[]))]);
    let (lines, status) = c.imap("m1", "GETMETADATA INBOX /private/devicetoken");
    assert!(status.starts_with("m1 OK"), "{status}");
    let meta = lines.join("\n");
    assert!(
        meta.contains("openpgp:alice-phone") && !meta.contains("stale"),
        "{meta}"
    );

    let mut c = login(&relay, &carol, carol_pw);
    let (_, status) = c.imap("s1", "SELECT INBOX");
    assert!(status.starts_with("s1 OK"));
    let got = uids_and_flags(&mut c);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].1, flags(&[]), "the unparsable name's flags");

    let store = relay.store();
    let bob = store.account(&format!("bob@{DOMAIN}")).unwrap();
    assert!(bob
        .password_hash
        .starts_with("{IMPORT-DISABLED}{BLF-CRYPT}"));
    assert!(store.account(&format!("link@{DOMAIN}")).is_none());
}

/// `kill -9` in the middle of an import, then the import again: every message exactly once.
#[test]
fn import_killed_and_run_again_ends_with_each_message_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mail");
    let data = tmp.path().join("data");
    let hash = relay::accounts::hash_password("pw-pw-pw-pw").unwrap();
    // A small first account, whose end is the signal to kill; the others take a while longer.
    let accounts = [("k1", 50), ("k2", 800), ("k3", 800)];
    let filler = "x".repeat(16 << 10);
    for (local, n) in accounts {
        let dir = account(&root, local, &hash, 20_000);
        for i in 0..n {
            let flags = if i % 2 == 0 { Some("S") } else { None };
            let sub = if flags.is_some() { "cur" } else { "new" };
            let mut body = message(&format!("{local}-{i}"));
            body.extend_from_slice(filler.as_bytes());
            put(&dir, sub, 1_700_000_000 + i64::from(i), i, &body, flags);
        }
    }
    let mut child = Command::new(RELAY)
        .args([
            "import",
            root.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ])
        .env("RUST_LOG", "relay::import=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().contains("account imported") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // `(messages, of which \Seen)` of each account, UIDs checked distinct.
    let count = |data: &Path| {
        let s = Store::open(&data.join("store"), StoreConfig::default()).unwrap();
        let mut v = Vec::new();
        for (local, _) in accounts {
            let Some(a) = s.account(&format!("{local}@{DOMAIN}")) else {
                v.push((0, 0));
                continue;
            };
            let inbox = s.mailbox_view(a.id, "INBOX").unwrap();
            let mut uids: Vec<u32> = inbox.messages.iter().map(|m| m.uid).collect();
            let n = uids.len();
            uids.dedup();
            assert_eq!(uids.len(), n, "a UID twice");
            let seen = inbox
                .messages
                .iter()
                .filter(|m| m.flags & relay::store::flag_bits::SEEN != 0)
                .count();
            v.push((n, seen));
        }
        s.close();
        v
    };
    let partial = count(&data);
    let total: usize = accounts.iter().map(|(_, n)| *n as usize).sum();
    let got: usize = partial.iter().map(|(n, _)| n).sum();
    assert!(
        partial[0].0 == 50 && got < total,
        "killed after the first account: {partial:?}"
    );
    let (ok, out, err) = import(&[root.to_str().unwrap(), "--data", data.to_str().unwrap()]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains(&format!("{} messages", total - got)), "{out}");
    let want: Vec<(usize, usize)> = accounts
        .iter()
        .map(|(_, n)| (*n as usize, (*n as usize).div_ceil(2)))
        .collect();
    assert_eq!(count(&data), want);
}

/// Messages beyond an account's caps are reported, the rest imported; a run with the caps
/// raised imports the rest.
#[test]
fn messages_over_the_account_caps_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mail");
    let data = tmp.path().join("data");
    let hash = relay::accounts::hash_password("pw-pw-pw-pw").unwrap();
    let dir = account(&root, "full", &hash, 20_000);
    for i in 0..5 {
        put(
            &dir,
            "cur",
            1_700_000_000 + i64::from(i),
            i,
            &message(&format!("m{i}")),
            Some("S"),
        );
    }
    let (src, d) = (root.to_str().unwrap(), data.to_str().unwrap());
    let (ok, out, err) = import(&[src, "--data", d, "--set", "max_mailbox_messages=3"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains(", 3 messages"), "{out}");
    assert!(
        out.contains("2 × messages over the account's quota or message cap (skipped)"),
        "{out}"
    );
    let (ok, out, err) = import(&[src, "--data", d]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains(", 2 messages"), "{out}");
    assert!(out.contains("earlier run: 1 accounts, 3 messages"), "{out}");
}
