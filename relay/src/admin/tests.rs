//! Admin protocol tests against a real store in a temp dir, over the real socket where it
//! matters.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use serde_json::{json, Value};

use super::protocol::handle_line;
use super::*;
use crate::config::Config;
use crate::expire::DAY_SECS;
use crate::shared::Shared;
use crate::store::{AccountId, Op, OpResult, Store, StoreConfig};

const NOW: i64 = 1_800_000_000;
const DOMAIN: &str = "[127.0.0.1]";

struct Env {
    _dir: tempfile::TempDir,
    shared: Arc<Shared>,
    store: Store,
}

fn env() -> Env {
    env_with(StoreConfig::default().max_mailbox_size)
}

fn env_with(max_mailbox_size: u64) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::dev(dir.path().to_owned());
    config.max_mailbox_size = max_mailbox_size;
    let store = Store::open(
        &dir.path().join("store"),
        StoreConfig {
            max_mailbox_size,
            max_mailbox_messages: 100_000,
            segment_size: 1 << 20,
            fsync: true,
        },
    )
    .unwrap();
    Env {
        _dir: dir,
        shared: Arc::new(Shared::new(config, Arc::new(store.clone()))),
        store,
    }
}

impl Env {
    fn req(&self, v: Value) -> Value {
        handle_line(&self.shared, &self.store, v.to_string().as_bytes(), NOW)
    }

    fn ok(&self, v: Value) -> Value {
        let r = self.req(v.clone());
        assert_eq!(r["ok"], json!(true), "{v} -> {r}");
        r
    }

    fn err(&self, v: Value, code: &str) -> Value {
        let r = self.req(v.clone());
        assert_eq!(r["ok"], json!(false), "{v} -> {r}");
        assert_eq!(r["code"], json!(code), "{v} -> {r}");
        r
    }

    /// An account created at `created` (its last-login day is the creation day).
    fn account(&self, local: &str, created: i64) -> AccountId {
        match self
            .store
            .commit_blocking(Op::CreateAccount {
                addr: format!("{local}@{DOMAIN}"),
                password_hash: "{SHA512-CRYPT}$6$x".into(),
                now: created,
            })
            .unwrap()
        {
            OpResult::AccountCreated(id) => id,
            r => panic!("{r:?}"),
        }
    }

    /// Delivers a message of `size` bytes, `age` seconds old; returns its UID.
    fn deliver(&self, to: AccountId, age: i64, size: usize) -> u32 {
        match self
            .store
            .commit_blocking(Op::Deliver {
                recipients: vec![to],
                sender: None,
                internal_date: NOW - age,
                body: vec![b'x'; size],
            })
            .unwrap()
        {
            OpResult::Delivered(r) => *r[0].as_ref().unwrap(),
            r => panic!("{r:?}"),
        }
    }

    fn uids(&self, a: AccountId) -> Vec<u32> {
        self.store
            .mailbox_view(a, "INBOX")
            .map(|v| v.messages.iter().map(|m| m.uid).collect())
            .unwrap_or_default()
    }

    fn exists(&self, local: &str) -> bool {
        self.store.account(&format!("{local}@{DOMAIN}")).is_some()
    }
}

#[test]
fn create_account_bypasses_signup_rules_but_not_the_domain() {
    let e = env();
    let r = e.ok(json!({"op":"create_account","name":"echo","password":"0123456789ab"}));
    assert_eq!(r["addr"], json!("echo@[127.0.0.1]"));
    assert_eq!(r["created"], json!(true));
    let acct = e.store.account("echo@[127.0.0.1]").unwrap();
    assert!(crate::accounts::verify_password(
        &acct.password_hash,
        "0123456789ab"
    ));
    // Full address on our domain, any case.
    e.ok(json!({"op":"create_account","name":"Bot2@[127.0.0.1]","password":"0123456789ab"}));
    assert!(e.exists("bot2"));
    e.err(
        json!({"op":"create_account","name":"echo","password":"0123456789ab"}),
        "exists",
    );
    for bad in [
        "",
        "../echo",
        "a/b",
        "a..b",
        "nul\0x",
        "sp ace",
        "echo@example.org",
        "echo@[127.0.0.2]",
        "a@b@[127.0.0.1]",
        "quote\"x",
    ] {
        e.err(
            json!({"op":"create_account","name":bad,"password":"0123456789ab"}),
            "bad_request",
        );
    }
    e.err(
        json!({"op":"create_account","name":"shortpw","password":"123"}),
        "bad_request",
    );
    // Dry run: validated, not created.
    let r =
        e.ok(json!({"op":"create_account","name":"dry","password":"0123456789ab","dry_run":true}));
    assert_eq!(r["created"], json!(false));
    assert!(!e.exists("dry"));
    assert_eq!(e.store.accounts().len(), 2);
}

#[test]
fn delete_account_and_missing_account_is_an_error() {
    let e = env();
    let a = e.account("alice0001", NOW);
    e.deliver(a, 0, 100);
    e.deliver(a, 0, 50);
    let r = e.ok(json!({"op":"delete_account","name":"alice0001","dry_run":true}));
    assert_eq!(
        (r["messages"].clone(), r["bytes"].clone()),
        (json!(2), json!(150))
    );
    assert!(e.exists("alice0001"));
    e.ok(json!({"op":"delete_account","name":"alice0001@[127.0.0.1]"}));
    assert!(!e.exists("alice0001"));
    e.err(
        json!({"op":"delete_account","name":"alice0001"}),
        "not_found",
    );
    e.err(
        json!({"op":"delete_account","name":"../../etc"}),
        "bad_request",
    );
}

#[test]
fn list_accounts_reports_usage() {
    let e = env();
    let a = e.account("alice0001", NOW - 3 * DAY_SECS);
    e.account("bob000001", NOW);
    e.deliver(a, 0, 1000);
    let r = e.ok(json!({"op":"list_accounts"}));
    let list = r["accounts"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["addr"], json!("alice0001@[127.0.0.1]"));
    assert_eq!(list[0]["bytes_used"], json!(1000));
    assert_eq!(list[0]["messages"], json!(1));
    assert_eq!(list[0]["last_login_day"], json!(NOW / DAY_SECS - 3));
    assert_eq!(list[1]["messages"], json!(0));
}

#[test]
fn bad_requests_get_error_lines() {
    let e = env();
    for (line, code) in [
        ("not json", "bad_request"),
        ("{}", "bad_request"),
        (r#"{"op":"nope"}"#, "bad_request"),
        (r#"{"op":"list_accounts","extra":1}"#, "bad_request"),
        (r#"{"op":"expire_messages"}"#, "bad_request"),
        (
            r#"{"op":"expire_messages","older_than_days":-1}"#,
            "bad_request",
        ),
        (
            r#"{"op":"trim_mailbox","account":"ghost0001"}"#,
            "not_found",
        ),
        (r#"[1,2]"#, "bad_request"),
    ] {
        let r = handle_line(&e.shared, &e.store, line.as_bytes(), NOW);
        assert_eq!(r["ok"], json!(false), "{line} -> {r}");
        assert_eq!(r["code"], json!(code), "{line} -> {r}");
    }
}

/// The daily job: exactly the expected accounts and messages go; a dry run deletes nothing and
/// reports the same.
#[test]
fn expire_removes_exactly_the_expired() {
    let e = env_with(10_000_000);
    let d = DAY_SECS;
    let active = e.account("active001", NOW - d);
    let old_msgs: Vec<u32> = vec![
        e.deliver(active, 21 * d, 100),
        e.deliver(active, 30 * d, 100),
    ];
    let large_old = e.deliver(active, 8 * d, 200_001);
    let kept: Vec<u32> = vec![
        e.deliver(active, 19 * d, 100),
        e.deliver(active, 8 * d, 200_000),
        e.deliver(active, 6 * d, 300_000),
        e.deliver(active, 0, 10),
    ];
    let inactive = e.account("gone00001", NOW - 91 * d);
    e.deliver(inactive, 0, 10);
    let _never = e.account("never0001", NOW - 100 * d);
    let recent = e.account("recent001", NOW - 89 * d);

    let before = e.store.accounts();
    let dry = e.ok(json!({"op":"expire","dry_run":true,"details":true}));
    assert_eq!(e.store.accounts().len(), before.len());
    assert_eq!(e.uids(active).len(), 7);

    let real = e.ok(json!({"op":"expire","details":true}));
    for r in [&dry, &real] {
        assert_eq!(r["accounts_scanned"], json!(4), "{r}");
        assert_eq!(r["accounts_deleted"], json!(2), "{r}");
        assert_eq!(r["accounts_deleted_empty"], json!(1), "{r}");
        assert_eq!(r["messages_expunged"], json!(3), "{r}");
        assert_eq!(
            r["messages_by_reason"],
            json!({"age": 2, "large": 1}),
            "{r}"
        );
        assert_eq!(r["bytes_freed"], json!(200 + 200_001 + 10), "{r}");
        assert_eq!(r["failed"], json!(0), "{r}");
    }
    assert_eq!(dry["dry_run"], json!(true));
    assert_eq!(real["dry_run"], json!(false));
    assert!(!e.exists("gone00001"));
    assert!(!e.exists("never0001"));
    assert!(e.exists("active001"));
    assert!(e.exists("recent001"));
    assert_eq!(e.uids(active), kept);
    assert!(old_msgs.iter().all(|u| !e.uids(active).contains(u)));
    assert!(!e.uids(active).contains(&large_old));
    assert!(e.uids(recent).is_empty());
    // A second run has nothing left to do.
    let again = e.ok(json!({"op":"expire"}));
    assert_eq!(again["messages_expunged"], json!(0));
    assert_eq!(again["accounts_deleted"], json!(0));
}

#[test]
fn expire_messages_by_age_and_by_size_for_one_or_all_accounts() {
    let e = env();
    let d = DAY_SECS;
    let a = e.account("alice0001", NOW);
    let b = e.account("bob000001", NOW);
    let a_old = e.deliver(a, 10 * d, 100);
    let a_new = e.deliver(a, d, 100);
    let b_old = e.deliver(b, 10 * d, 100);
    let b_big = e.deliver(b, 5 * d, 5000);
    // One account only.
    let r = e.ok(json!({"op":"expire_messages","older_than_days":5,"account":"alice0001"}));
    assert_eq!(r["messages_expunged"], json!(1));
    assert_eq!(e.uids(a), vec![a_new]);
    assert_eq!(e.uids(b), vec![b_old, b_big]);
    assert!(!e.uids(a).contains(&a_old));
    // Size and age, all accounts: only the big one older than 4 days.
    let r = e.ok(json!({"op":"expire_messages","older_than_days":4,"larger_than":1000}));
    assert_eq!(r["messages_by_reason"], json!({"large": 1}));
    assert_eq!(e.uids(b), vec![b_old]);
    // Dry run by age: reports, keeps.
    let r = e.ok(json!({"op":"expire_messages","older_than_days":0,"dry_run":true}));
    assert_eq!(r["messages_expunged"], json!(2));
    assert_eq!(e.uids(a), vec![a_new]);
    assert_eq!(e.uids(b), vec![b_old]);
}

#[test]
fn trim_mailbox_goes_oldest_first_and_spares_the_last_day() {
    let e = env();
    let h = 3600;
    let a = e.account("alice0001", NOW);
    let m1 = e.deliver(a, 72 * h, 400);
    let m2 = e.deliver(a, 48 * h, 400);
    let m3 = e.deliver(a, 30 * h, 400);
    let young: Vec<u32> = vec![e.deliver(a, 23 * h, 400), e.deliver(a, h, 400)];
    // 2000 bytes, target 1000: m1, m2, m3 go (1200 freed -> 800); young ones stay.
    let r =
        e.ok(json!({"op":"trim_mailbox","account":"alice0001","target_bytes":1000,"dry_run":true}));
    assert_eq!(r["messages_expunged"], json!(3));
    assert_eq!(e.uids(a).len(), 5);
    let r = e.ok(json!({"op":"trim_mailbox","account":"alice0001","target_bytes":1000}));
    assert_eq!(r["messages_by_reason"], json!({"quota": 3}));
    assert_eq!(e.uids(a), young);
    // Target 0: nothing else is old enough.
    let r = e.ok(json!({"op":"trim_mailbox","target_bytes":0}));
    assert_eq!(r["messages_expunged"], json!(0));
    assert_eq!(e.uids(a), young);
    assert!(![m1, m2, m3].iter().any(|u| e.uids(a).contains(u)));
}

#[test]
fn expire_inactive_respects_dry_run() {
    let e = env();
    e.account("old000001", NOW - 40 * DAY_SECS);
    e.account("new000001", NOW - 10 * DAY_SECS);
    let r = e.ok(json!({"op":"expire_inactive","inactive_days":30,"dry_run":true,"details":true}));
    assert_eq!(r["accounts_deleted"], json!(1));
    assert_eq!(r["accounts"][0]["addr"], json!("old000001@[127.0.0.1]"));
    assert!(e.exists("old000001"));
    e.ok(json!({"op":"expire_inactive","inactive_days":30}));
    assert!(!e.exists("old000001"));
    assert!(e.exists("new000001"));
}

fn roundtrip(r: &mut BufReader<UnixStream>, line: &str) -> Value {
    r.get_mut().write_all(line.as_bytes()).unwrap();
    r.get_mut().write_all(b"\n").unwrap();
    let mut s = String::new();
    r.read_line(&mut s).unwrap();
    serde_json::from_str(&s).unwrap()
}

#[test]
fn socket_is_private_and_keeps_serving_after_bad_requests() {
    let e = env();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    // A stale socket file from a previous run is replaced.
    drop(UnixListener::bind(&path).unwrap());
    let handle = spawn(e.shared.clone(), e.store.clone(), &path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second server on the same path is refused.
    assert_eq!(
        spawn(e.shared.clone(), e.store.clone(), &path)
            .err()
            .unwrap()
            .kind(),
        std::io::ErrorKind::AddrInUse
    );

    let mut r = BufReader::new(UnixStream::connect(&path).unwrap());
    let bad = roundtrip(&mut r, "{not json");
    assert_eq!(bad["code"], json!("bad_request"));
    let long = "x".repeat(MAX_REQUEST_BYTES + 10);
    let too_long = roundtrip(&mut r, &long);
    assert_eq!(too_long["code"], json!("bad_request"));
    let cfg = roundtrip(&mut r, r#"{"op":"config"}"#);
    assert_eq!(cfg["domain"], json!(DOMAIN));
    assert_eq!(cfg["delete_mails_after"], json!(20));
    let created = roundtrip(
        &mut r,
        r#"{"op":"create_account","name":"echo","password":"0123456789ab"}"#,
    );
    assert_eq!(created["ok"], json!(true), "{created}");
    // Several requests written at once are answered in order.
    r.get_mut()
        .write_all(
            b"{\"op\":\"list_accounts\"}\n\n{\"op\":\"delete_account\",\"name\":\"ghost\"}\n",
        )
        .unwrap();
    let mut s = String::new();
    r.read_line(&mut s).unwrap();
    let list: Value = serde_json::from_str(&s).unwrap();
    assert_eq!(list["accounts"][0]["addr"], json!("echo@[127.0.0.1]"));
    s.clear();
    r.read_line(&mut s).unwrap();
    let missing: Value = serde_json::from_str(&s).unwrap();
    assert_eq!(missing["code"], json!("not_found"));

    // The client of `relay admin` speaks the same protocol.
    let v = client::request(&path, &json!({"op":"list_accounts"})).unwrap();
    assert_eq!(v["accounts"].as_array().unwrap().len(), 1);
    run(
        AdminCommand::Delete {
            name: "echo".into(),
            dry_run: false,
        },
        &path,
    )
    .unwrap();
    assert!(!e.exists("echo"));
    assert!(run(
        AdminCommand::Delete {
            name: "echo".into(),
            dry_run: false,
        },
        &path,
    )
    .is_err());

    drop(handle);
    assert!(!path.exists());
}

#[test]
fn read_line_limits_and_splits() {
    let data = b"abc\n\nxxxxxxxxxx\ndef";
    let mut r = BufReader::with_capacity(3, &data[..]);
    let mut buf = Vec::new();
    assert!(matches!(
        read_line(&mut r, &mut buf, 5).unwrap(),
        Line::Complete
    ));
    assert_eq!(buf, b"abc");
    assert!(matches!(
        read_line(&mut r, &mut buf, 5).unwrap(),
        Line::Complete
    ));
    assert_eq!(buf, b"");
    assert!(matches!(
        read_line(&mut r, &mut buf, 5).unwrap(),
        Line::TooLong
    ));
    assert!(matches!(
        read_line(&mut r, &mut buf, 5).unwrap(),
        Line::Complete
    ));
    assert_eq!(buf, b"def");
    assert!(matches!(read_line(&mut r, &mut buf, 5).unwrap(), Line::Eof));
}

#[test]
fn day_to_date_is_the_civil_date() {
    assert_eq!(client::day_to_date(0), "1970-01-01");
    assert_eq!(client::day_to_date(NOW / DAY_SECS), "2027-01-15");
    assert_eq!(client::day_to_date(11_016), "2000-02-29");
}

#[derive(clap::Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: AdminCommand,
}

#[test]
fn admin_subcommands_parse() {
    use clap::{CommandFactory, Parser};
    Cli::command().debug_assert();
    let c =
        Cli::try_parse_from(["admin", "expire", "--dry-run", "--now", "5", "--details"]).unwrap();
    match c.cmd {
        AdminCommand::Expire { job, .. } => {
            assert!(job.dry_run && job.details);
            assert_eq!(job.now, Some(5));
        }
        other => panic!("{other:?}"),
    }
    let c =
        Cli::try_parse_from(["admin", "trim", "--account", "x", "--target-bytes", "10"]).unwrap();
    assert!(matches!(
        c.cmd,
        AdminCommand::Trim {
            target_bytes: Some(10),
            ..
        }
    ));
    assert!(Cli::try_parse_from(["admin", "expire-messages"]).is_err());
}

#[test]
fn an_idle_admin_client_does_not_keep_the_store_open() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let open = || Store::open(&store_dir, StoreConfig::default());
    let store = open().unwrap();
    let shared = Arc::new(Shared::new(
        Config::dev(dir.path().to_owned()),
        Arc::new(store.clone()),
    ));
    let path = dir.path().join("admin.sock");
    let handle = spawn(shared.clone(), store, &path).unwrap();
    let mut idle = BufReader::new(UnixStream::connect(&path).unwrap());
    assert_eq!(
        roundtrip(&mut idle, r#"{"op":"config"}"#)["ok"],
        json!(true)
    );
    drop(handle);
    drop(shared);
    // The store's lock is free again although the client is still connected.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match open() {
            Ok(_) => break,
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The connection answers nothing more and closes at its next request.
    idle.get_mut().write_all(b"{\"op\":\"config\"}\n").unwrap();
    let mut s = String::new();
    assert_eq!(idle.read_line(&mut s).unwrap(), 0);
}

#[test]
fn queue_lists_retries_and_drops() {
    let e = env();
    let enqueue = |dest: &str, rcpts: &[&str]| match e
        .store
        .commit_blocking(Op::Enqueue {
            sender: format!("alice@{DOMAIN}"),
            created: NOW - 100,
            destinations: vec![(dest.into(), rcpts.iter().map(|r| (*r).to_owned()).collect())],
            body: b"From: alice\r\n\r\nhi\r\n".to_vec(),
        })
        .unwrap()
    {
        OpResult::Enqueued(ids) => ids[0],
        other => panic!("{other:?}"),
    };
    let a = enqueue("a.test", &["x@a.test", "y@a.test"]);
    enqueue("b.test", &["z@b.test"]);

    let all = e.ok(json!({"op":"queue"}));
    assert_eq!(all["queued"], json!(2));
    assert_eq!(all["entries"].as_array().unwrap().len(), 2);
    let first = &all["entries"][0];
    assert_eq!(first["id"], json!(a.to_string()));
    assert_eq!(first["recipients"], json!(["x@a.test", "y@a.test"]));
    assert_eq!(first["age_seconds"], json!(100));
    let only_b = e.ok(json!({"op":"queue","destination":"B.test"}));
    assert_eq!(only_b["entries"].as_array().unwrap().len(), 1);
    assert_eq!(only_b["entries"][0]["destination"], json!("b.test"));

    // Retry tells the delivery engine (a watch channel in Shared).
    let mut rx = e.shared.delivery_retry.subscribe();
    rx.mark_unchanged();
    e.ok(json!({"op":"queue_retry","destination":"A.test"}));
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), "a.test");

    // Drop: dry run first, then for real; a second drop finds nothing.
    let dry = e.ok(json!({"op":"queue_drop","id":a.to_string(),"dry_run":true}));
    assert_eq!(dry["dropped"], json!(false));
    assert_eq!(e.store.queue_len(), 2);
    e.ok(json!({"op":"queue_drop","id":a.to_string()}));
    assert_eq!(e.store.queue_len(), 1);
    e.err(json!({"op":"queue_drop","id":a.to_string()}), "not_found");
    e.err(json!({"op":"queue_drop","id":"nonsense"}), "bad_request");
}

#[test]
fn status_counts_accounts_messages_and_store_size() {
    let e = env();
    let a = e.account("alice", NOW);
    e.account("bob", NOW);
    e.deliver(a, 10, 1000);
    let r = e.ok(json!({"op": "status"}));
    assert_eq!(r["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(r["accounts"], 2);
    assert_eq!(r["store"]["messages"], 1);
    assert_eq!(r["store"]["segments"], 1);
    assert_eq!(
        r["store"]["bytes"],
        1 << 20,
        "the active segment, preallocated"
    );
    assert_eq!(r["queue"]["entries"], 0);
    // Not started by `server::start`: no start time, backend or certificate.
    assert_eq!(r["uptime_seconds"], 0);
    assert!(
        r["io_backend"].is_null() && r["certificate"].is_null(),
        "{r}"
    );
    for listener in crate::metrics::PORT_NAMES {
        assert_eq!(r["connections"][listener], 0, "{r}");
    }
}

#[test]
fn backup_refuses_bad_directories_and_writes_a_copy_that_opens() {
    let e = env();
    let a = e.account("alice", NOW);
    let uid = e.deliver(a, 10, 1000);
    e.err(
        json!({"op": "backup", "dir": "relative/dir"}),
        "bad_request",
    );
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("x"), b"x").unwrap();
    e.err(
        json!({"op": "backup", "dir": full.display().to_string()}),
        "exists",
    );
    assert_eq!(std::fs::read(full.join("x")).unwrap(), b"x", "left alone");
    // An existing empty directory is fine, and so is a new one.
    for copy in [dir.path().join("empty"), dir.path().join("new/deeper")] {
        if copy.ends_with("empty") {
            std::fs::create_dir(&copy).unwrap();
        }
        let r = e.ok(json!({"op": "backup", "dir": copy.display().to_string()}));
        assert_eq!(r["accounts"], 1, "{r}");
        assert_eq!(r["messages"], 1, "{r}");
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let opened = Store::open(&copy.join("store"), StoreConfig::default()).unwrap();
        let acct = opened.account(&format!("alice@{DOMAIN}")).unwrap();
        let view = opened.mailbox_view(acct.id, "INBOX").unwrap();
        assert_eq!(view.messages.len(), 1);
        assert_eq!(view.messages[0].uid, uid);
        assert_eq!(
            &*opened.read(view.messages[0].body).unwrap(),
            &[b'x'; 1000][..]
        );
    }
}
