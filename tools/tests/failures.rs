//! A server that refuses, drops or ignores connections gives counted errors within the deadline,
//! never a hang: the clients against small misbehaving TCP servers on loopback, and the `loadgen`
//! binary against a port where nothing listens.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: integration tests
#![allow(clippy::unwrap_used, reason = "test helpers may unwrap")]

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use relay_testkit::{free_port, run_ok};
use relay_tools::{imap, smtp, tls, Error};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// A loopback server that handles each connection with `behaviour`.
async fn server(behaviour: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            match behaviour {
                "close" => drop(s),
                "silent" => held.push(s),
                "garbage" => {
                    let _ = s.write_all(b"hello there\r\n").await;
                    held.push(s);
                }
                _ => unreachable!(),
            }
        }
    });
    addr
}

fn smtp_target(addr: SocketAddr, tls: smtp::TlsMode) -> smtp::Target {
    smtp::Target {
        addr,
        tls,
        server_name: tls::server_name("localhost").unwrap(),
        timeout: Duration::from_millis(500),
    }
}

/// Connects an SMTP client to `addr`, which must fail: the error and how long it took.
async fn smtp_connect_error(addr: SocketAddr, mode: smtp::TlsMode) -> (Error, Duration) {
    let t0 = Instant::now();
    let err = smtp::Client::connect(&smtp_target(addr, mode), &tls::connector(), None)
        .await
        .err()
        .expect("connect should fail");
    (err, t0.elapsed())
}

#[tokio::test]
async fn smtp_against_a_closing_server_is_an_error() {
    let addr = server("close").await;
    for mode in [smtp::TlsMode::Implicit, smtp::TlsMode::Starttls] {
        let (err, took) = smtp_connect_error(addr, mode).await;
        assert!(
            matches!(err, Error::Closed { .. } | Error::Io { .. }),
            "{mode:?}: {err}"
        );
        assert!(took < Duration::from_secs(2));
    }
}

#[tokio::test]
async fn smtp_against_a_silent_server_times_out() {
    let addr = server("silent").await;
    for mode in [smtp::TlsMode::Implicit, smtp::TlsMode::Starttls] {
        let (err, took) = smtp_connect_error(addr, mode).await;
        assert!(matches!(err, Error::Timeout { .. }), "{mode:?}: {err}");
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }
}

#[tokio::test]
async fn smtp_starttls_against_a_garbage_greeting_is_a_protocol_error() {
    let addr = server("garbage").await;
    let (err, _) = smtp_connect_error(addr, smtp::TlsMode::Starttls).await;
    assert_eq!(err.key(), "smtp greeting: protocol error", "{err}");
}

#[tokio::test]
async fn imap_against_a_silent_server_times_out() {
    let addr = server("silent").await;
    let target = imap::Target {
        addr,
        server_name: tls::server_name("localhost").unwrap(),
        timeout: Duration::from_millis(300),
    };
    let t0 = Instant::now();
    let err = imap::Client::connect(&target, &tls::connector(), None, 1024)
        .await
        .err()
        .expect("connect should fail");
    assert_eq!(err.key(), "imap TLS handshake: timeout");
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn loadgen_against_nothing_reports_errors_and_stops_in_time() {
    // Find a free port, then close it: nothing listens there.
    let port = free_port();
    let dir = tempfile_dir();
    let json = dir.join("out.json");
    let t0 = Instant::now();
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args([
                "--smtp-port",
                &port.to_string(),
                "--imap-port",
                &port.to_string(),
            ])
            .args([
                "--senders",
                "2",
                "--receivers",
                "1",
                "--duration",
                "1",
                "--drain",
                "1",
            ])
            .args(["--timeout", "0.3", "--json"])
            .arg(&json),
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["accepted"], 0);
    assert!(v["errors_total"].as_u64().unwrap() > 0);
    assert!(
        v["errors"]["smtp connect: io ConnectionRefused"]["count"]
            .as_u64()
            .unwrap()
            > 0
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("loadgen-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
