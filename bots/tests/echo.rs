//! End-to-end: the echo bot and a user, both real Delta Chat cores (`deltachat-rpc-server`),
//! against a real relay started in this process on loopback. Skipped, with the reason printed,
//! when `deltachat-rpc-server` is not found (`DELTACHAT_RPC_SERVER`, `PATH`, or the workspace's
//! `target/bots-venv`: `python3 -m venv target/bots-venv && target/bots-venv/bin/pip install
//! deltachat-rpc-server`).

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: integration tests
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use relay_bots::rpc::Rpc;
use relay_testkit::{Backend, Kind, Relay};
use serde_json::{json, Value};

fn rpc_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DELTACHAT_RPC_SERVER") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("deltachat-rpc-server"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/bots-venv/bin/deltachat-rpc-server");
        venv.is_file().then_some(venv)
    })
}

macro_rules! require_rpc_server {
    () => {
        match rpc_server() {
            Some(p) => p,
            None => {
                eprintln!(
                    "SKIPPED: deltachat-rpc-server not found (set DELTACHAT_RPC_SERVER, put it on \
                     PATH, or pip install deltachat-rpc-server into target/bots-venv)"
                );
                return;
            }
        }
    };
}

fn wait_event(
    events: &Receiver<Value>,
    timeout: Duration,
    what: &str,
    mut pred: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(ev) => {
                if ev["event"]["kind"] == "Warning" || ev["event"]["kind"] == "Error" {
                    eprintln!("user core: {}", ev["event"]);
                }
                if pred(&ev["event"]) {
                    return ev["event"].clone();
                }
            }
            Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
        }
    }
}

#[test]
fn rpc_client_drives_the_core() {
    let server = require_rpc_server!();
    let dir = tempfile::tempdir().unwrap();
    let rpc = Rpc::start(
        &server,
        &dir.path().join("accounts"),
        &dir.path().join("rpc.log"),
    )
    .unwrap();
    let acc = rpc.call("add_account", json!([])).unwrap();
    let ids = rpc.call("get_all_account_ids", json!([])).unwrap();
    assert_eq!(ids, json!([acc]));
    rpc.call("set_config", json!([acc, "displayname", "Tester"]))
        .unwrap();
    assert_eq!(
        rpc.call("get_config", json!([acc, "displayname"])).unwrap(),
        json!("Tester")
    );
    assert_eq!(
        rpc.call("is_configured", json!([acc])).unwrap(),
        json!(false)
    );
    // An error answer is an error, and the connection keeps working.
    assert!(rpc.call("no_such_method", json!([])).is_err());
    assert!(rpc.call("get_message", json!([acc, 999_999])).is_err());
    assert!(rpc.call("get_system_info", json!([])).is_ok());
}

struct Bot(Child);

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `data` in `chat` and waits for the echo (an incoming message in the same chat).
fn ping(user: &Rpc, events: &Receiver<Value>, acc: &Value, chat: &Value, data: Value) -> Value {
    user.call("send_msg", json!([acc, chat, data])).unwrap();
    let ev = wait_event(events, Duration::from_secs(120), "the echo", |e| {
        e["kind"] == "IncomingMsg" && e["chatId"] == *chat
    });
    user.call("get_message", json!([acc, ev["msgId"]])).unwrap()
}

#[test]
fn echo_bot_answers_encrypted_messages_and_survives_a_relay_restart() {
    let server = require_rpc_server!();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    // The relay restarts on the same ports below, so that both cores reconnect to it.
    let mut relay = Relay::builder(Backend::Epoll)
        .data_dir(&data)
        .same_ports_on_restart()
        .admin_socket(&data.join("test-admin.sock"))
        .start();
    let imaps = relay.port(Kind::Imaps);
    let submissions = relay.port(Kind::Submissions);

    let state = dir.path().join("echo-state");
    let invite_file = dir.path().join("invite.txt");
    let bot = Bot(Command::new(env!("CARGO_BIN_EXE_echo"))
        .arg("--socket")
        .arg(data.join("test-admin.sock"))
        .arg("--state-dir")
        .arg(&state)
        .args(["--relay-host", "127.0.0.1"])
        .args(["--imap-port", &imaps.to_string()])
        .args(["--smtp-port", &submissions.to_string()])
        .arg("--rpc-server")
        .arg(&server)
        .arg("--invite-file")
        .arg(&invite_file)
        .stdout(Stdio::null())
        .spawn()
        .unwrap());
    let deadline = Instant::now() + Duration::from_secs(90);
    let invite = loop {
        if let Ok(s) = std::fs::read_to_string(&invite_file) {
            break s.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "the bot wrote no invite link");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(invite.starts_with("https://i.delta.chat/"), "{invite}");
    assert!(relay.shared().store.account("echo@[127.0.0.1]").is_some());

    // The user: a fresh account created on first login.
    let mut user = Rpc::start(
        &server,
        &dir.path().join("user-accounts"),
        &dir.path().join("user-rpc.log"),
    )
    .unwrap();
    let events = user.take_events().unwrap();
    let acc = user.call("add_account", json!([])).unwrap();
    user.call(
        "add_or_update_transport",
        json!([acc, {
            "addr": "user12345@[127.0.0.1]", "password": "user-password-123",
            "imapServer": "127.0.0.1", "imapPort": imaps, "imapSecurity": "ssl",
            "smtpServer": "127.0.0.1", "smtpPort": submissions, "smtpSecurity": "ssl",
            "certificateChecks": "acceptInvalidCertificates",
        }]),
    )
    .unwrap();
    user.call("start_io", json!([acc])).unwrap();
    // The core ignores what is in INBOX before its first SELECT (chatmail.md §12.8, gotcha 3).
    wait_event(&events, Duration::from_secs(60), "user inbox idle", |e| {
        e["kind"] == "ImapInboxIdle"
    });
    let chat = user.call("secure_join", json!([acc, invite])).unwrap();
    wait_event(&events, Duration::from_secs(90), "secure join", |e| {
        e["kind"] == "SecurejoinJoinerProgress" && e["progress"] == 1000
    });

    let m = ping(&user, &events, &acc, &chat, json!({"text": "ping 1"}));
    assert_eq!(m["text"], "ping 1");
    assert_eq!(m["showPadlock"], true, "{m}");
    assert_eq!(m["isBot"], true);

    let file = dir.path().join("hello.txt");
    std::fs::write(&file, b"attachment bytes\n").unwrap();
    let m = ping(
        &user,
        &events,
        &acc,
        &chat,
        json!({"text": "with file", "file": file, "filename": "hello.txt", "viewtype": "File"}),
    );
    assert_eq!(m["text"], "with file");
    assert_eq!(m["fileName"], "hello.txt");
    let echoed = std::fs::read(m["file"].as_str().unwrap()).unwrap();
    assert_eq!(echoed, b"attachment bytes\n");

    // The relay restarts on the same ports; both cores reconnect and the bot still answers.
    relay.stop();
    std::thread::sleep(Duration::from_secs(1));
    relay.boot();
    let m = ping(
        &user,
        &events,
        &acc,
        &chat,
        json!({"text": "after restart"}),
    );
    assert_eq!(m["text"], "after restart");
    assert_eq!(m["showPadlock"], true);
    drop(bot);
}
