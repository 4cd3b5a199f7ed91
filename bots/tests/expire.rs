//! The `expire` binary against a real store served by the relay's admin socket in this process.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: integration tests
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;

use relay::config::Config;
use relay::shared::Shared;
use relay::store::{AccountId, Op, Store, StoreConfig};
use relay_testkit::{create_account, run_ok};

const DAY: i64 = 86_400;
/// 2027-01-15T08:00:00Z.
const NOW: i64 = 1_800_000_000;

fn account(s: &Store, local: &str, created: i64) -> AccountId {
    create_account(s, &format!("{local}@[127.0.0.1]"), created)
}

fn deliver(s: &Store, to: AccountId, age: i64, size: usize) {
    s.commit_blocking(Op::Deliver {
        recipients: vec![to],
        sender: None,
        internal_date: NOW - age,
        body: vec![b'x'; size],
    })
    .unwrap();
}

fn expire(socket: &std::path::Path, extra: &[&str]) -> String {
    let out = run_ok(
        Command::new(env!("CARGO_BIN_EXE_expire"))
            .arg("--socket")
            .arg(socket)
            .args(["--now", "2027-01-15T08:00:00Z"])
            .args(extra),
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn expire_job_through_the_admin_socket() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), StoreConfig::default()).unwrap();
    let shared = Arc::new(Shared::new(
        Config::dev(dir.path().to_owned()),
        Arc::new(store.clone()),
    ));
    let s = &store;
    let active = account(s, "active001", NOW - DAY);
    deliver(s, active, 25 * DAY, 100); // age
    deliver(s, active, 10 * DAY, 300_000); // large
    deliver(s, active, DAY, 100); // kept
    let gone = account(s, "gone00001", NOW - 200 * DAY);
    deliver(s, gone, DAY, 100);
    account(s, "empty0001", NOW - 120 * DAY);
    let socket = dir.path().join("admin.sock");
    let _admin = relay::admin::spawn(shared.clone(), store.clone(), &socket).unwrap();

    let dry = expire(&socket, &["--dry-run", "--details"]);
    assert!(dry.starts_with("DRY RUN: expiry at 1800000000"), "{dry}");
    assert!(
        dry.contains("accounts scanned 3, deleted 2 (of which empty 1)"),
        "{dry}"
    );
    assert!(
        dry.contains("messages expunged 2 (age 1, large 1, quota 0)"),
        "{dry}"
    );
    assert!(
        dry.contains("delete_account gone00001@[127.0.0.1]"),
        "{dry}"
    );
    assert!(
        dry.contains("delete_empty_account empty0001@[127.0.0.1]"),
        "{dry}"
    );
    assert_eq!(s.accounts().len(), 3);
    assert_eq!(s.account_by_id(active).unwrap().messages, 3);

    let real = expire(&socket, &[]);
    assert!(real.starts_with("expiry at"), "{real}");
    assert!(real.contains("bytes freed"), "{real}");
    let left: Vec<String> = s.accounts().into_iter().map(|a| a.addr).collect();
    assert_eq!(left, vec!["active001@[127.0.0.1]".to_owned()]);
    assert_eq!(s.account_by_id(active).unwrap().messages, 1);
    assert_eq!(s.account_by_id(active).unwrap().bytes_used, 100);

    // Flags override the relay's configuration: everything older than 0 days goes.
    let json = expire(&socket, &["--delete-mails-after", "0", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["messages_expunged"], 1);
    assert_eq!(v["policy"]["delete_mails_after_days"], 0);
    assert_eq!(s.account_by_id(active).unwrap().messages, 0);
}

#[test]
fn expire_reports_an_unreachable_relay() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_expire"))
        .arg("--socket")
        .arg(dir.path().join("nothing.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin socket"), "{err}");
    let bad_time = Command::new(env!("CARGO_BIN_EXE_expire"))
        .args(["--now", "yesterday"])
        .output()
        .unwrap();
    assert_eq!(bad_time.status.code(), Some(2));
}
