//! `httpbench` against a real relay started in this process (dev configuration, free loopback
//! ports): the accounting of a short load run (every request sent ends as a counted response with
//! its latency, all `200`) and of the idle mode (every connection open and measured). Not speed.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: integration tests
#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use std::process::Command;

use relay_testkit::{backends, run_ok, Backend, Kind, Relay};

fn httpbench(args: &[&str], json: &std::path::Path) -> serde_json::Value {
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_httpbench"))
            .args(args)
            .arg("--json")
            .arg(json),
    );
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

/// Every request sent got a `200`, each response has its latency, nothing failed.
fn assert_all_answered(v: &serde_json::Value, what: &str) {
    let sent = v["sent"].as_u64().unwrap();
    // Some must go out even on a loaded machine, or the rest proves nothing.
    assert!(sent >= 10, "{what}: only {sent} sent: {v}");
    assert_eq!(v["responses"], sent, "{what}: {v}");
    assert_eq!(
        v["statuses"],
        serde_json::json!({ "200": sent }),
        "{what}: {v}"
    );
    assert_eq!(v["latency"]["count"], sent, "{what}: {v}");
    assert_eq!(v["errors_total"], 0, "{what}: {v}");
    assert_eq!(
        v["connections_opened_at_start"], v["connections"],
        "{what}: {v}"
    );
    assert!(
        v["response_bytes_mean"].as_f64().unwrap() > 50.0,
        "{what}: {v}"
    );
}

#[test]
fn every_request_is_answered_and_counted() {
    for backend in backends() {
        // The per-source limit of /new lifted, as tools/http-compare.sh does.
        let relay = Relay::start(backend, &["new_limit_burst=1000000000"]);
        let port = relay.port(Kind::Https).to_string();
        let dir = tempfile::tempdir().unwrap();
        let common = ["--port", &port, "--connections", "4", "--duration", "1"];
        let v = httpbench(&common, &dir.path().join("autoconfig.json"));
        assert_all_answered(&v, &format!("{backend:?} autoconfig"));
        let args: Vec<&str> = common
            .iter()
            .copied()
            .chain(["--method", "POST", "--path", "/new"])
            .collect();
        let v = httpbench(&args, &dir.path().join("new.json"));
        assert_all_answered(&v, &format!("{backend:?} /new"));
        // Fixed rate: the requests of the second go out on schedule.
        let args: Vec<&str> = common.iter().copied().chain(["--rate", "50"]).collect();
        let v = httpbench(&args, &dir.path().join("rate.json"));
        assert_all_answered(&v, &format!("{backend:?} --rate 50"));
        assert!(v["sent"].as_u64().unwrap() <= 50, "{backend:?}: {v}");
    }
}

#[test]
fn the_new_limit_shows_as_429_without_the_option() {
    // The reference's 2 a second, burst 5, per source: the run must count the refusals, not hide
    // them among the successes.
    let relay = Relay::start(Backend::Epoll, &[]);
    let port = relay.port(Kind::Https).to_string();
    let dir = tempfile::tempdir().unwrap();
    let v = httpbench(
        &[
            "--port",
            &port,
            "--connections",
            "2",
            "--requests",
            "20",
            "--method",
            "POST",
            "--path",
            "/new",
        ],
        &dir.path().join("limited.json"),
    );
    assert_eq!(v["sent"], 20, "{v}");
    assert_eq!(v["responses"], 20, "{v}");
    let ok = v["statuses"]["200"].as_u64().unwrap();
    let refused = v["statuses"]["429"].as_u64().unwrap();
    assert_eq!(ok + refused, 20, "{v}");
    // The burst of 5 passes; 20 requests take far less than the 7.5 s that would let all through.
    assert!(ok >= 5 && refused >= 1, "{v}");
}

#[test]
fn idle_connections_are_all_open_when_measured() {
    let relay = Relay::start(Backend::Epoll, &[]);
    let port = relay.port(Kind::Https).to_string();
    let dir = tempfile::tempdir().unwrap();
    let pid = std::process::id().to_string();
    let v = httpbench(
        &[
            "idle",
            "--port",
            &port,
            "--connections",
            "60",
            "--per-source",
            "20",
            "--settle",
            "0.2",
            "--server-pid",
            &pid,
        ],
        &dir.path().join("idle.json"),
    );
    assert_eq!(v["idle"], 60, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(v["closed_by_server"], 0, "{v}");
    assert_eq!(v["statuses"], serde_json::json!({ "200": 60 }), "{v}");
    assert_eq!(v["errors_total"], 0, "{v}");
    assert!(v["server_rss_after_kib"].as_u64().unwrap() > 0, "{v}");
}
