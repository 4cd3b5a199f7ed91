//! `loadgen` against a real relay started in this process (dev configuration, free loopback
//! ports, both I/O backends where available): every accepted message is fetched by a receiver
//! with its latencies (to the announcing `EXISTS` and to the fetched body) recorded, and
//! `loadgen idle` gets every session into IDLE and wakes the sampled ones.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: integration tests
#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use std::process::Command;

use relay_testkit::{backends, run_ok, Backend, Kind, Relay};

/// A relay on free loopback ports with its store in `dir`, with send limits out of the way.
fn start(backend: Backend, dir: &std::path::Path) -> Relay {
    Relay::builder(backend)
        .data_dir(dir)
        .set("max_user_send_per_minute=100000000")
        .set("max_user_send_burst_size=100000000")
        .start()
}

fn port(r: &Relay, kind: Kind) -> String {
    r.port(kind).to_string()
}

fn loadgen(args: &[&str], json: &std::path::Path) -> serde_json::Value {
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(args)
            .arg("--json")
            .arg(json),
    );
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

#[test]
fn every_accepted_message_is_fetched_with_its_latency() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let relay = start(backend, &dir.path().join("relay"));
        let (smtp, imap) = (port(&relay, Kind::Submissions), port(&relay, Kind::Imaps));
        let v = loadgen(
            &[
                "--smtp-port",
                &smtp,
                "--imap-port",
                &imap,
                "--senders",
                "3",
                "--receivers",
                "2",
                "--rate",
                "200",
                "--duration",
                "1",
                "--drain",
                "10",
                "--size",
                "4096",
            ],
            &dir.path().join("run.json"),
        );
        let accepted = v["accepted"].as_u64().unwrap();
        // This checks the accounting (every accepted message fetched, with its latency), not
        // throughput: on a loaded machine far fewer than the 200 scheduled may go out in the
        // second. Some must, or the rest proves nothing.
        assert!(accepted >= 20, "{backend:?}: only {accepted} accepted: {v}");
        assert_eq!(v["delivered"], accepted, "{backend:?}: {v}");
        assert_eq!(v["delivery_latency"]["count"], accepted, "{backend:?}: {v}");
        assert_eq!(v["notify_latency"]["count"], accepted, "{backend:?}: {v}");
        assert_eq!(v["submit_latency"]["count"], accepted, "{backend:?}: {v}");
        assert_eq!(v["errors_total"], 0, "{backend:?}: {v}");
        assert_eq!(v["stale_fetched"], 0, "{backend:?}: {v}");
        drop(relay);
    }
}

#[test]
fn idle_sessions_are_all_idle_and_sampled_ones_wake_up() {
    let backend = Backend::Epoll;
    let dir = tempfile::tempdir().unwrap();
    let relay = start(backend, &dir.path().join("relay"));
    let (smtp, imap) = (port(&relay, Kind::Submissions), port(&relay, Kind::Imaps));
    let pid = std::process::id().to_string();
    let v = loadgen(
        &[
            "idle",
            "--smtp-port",
            &smtp,
            "--imap-port",
            &imap,
            "--connections",
            "60",
            "--accounts",
            "12",
            "--per-source",
            "20",
            "--sample",
            "6",
            "--settle",
            "0.2",
            "--server-pid",
            &pid,
            "--first",
            "5001",
        ],
        &dir.path().join("idle.json"),
    );
    assert_eq!(v["idle"], 60, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(v["wakeup_latency"]["count"], 6, "{v}");
    assert_eq!(v["errors_total"], 0, "{v}");
    assert!(v["server_rss_after_kib"].as_u64().unwrap() > 0);
    drop(relay);
}
