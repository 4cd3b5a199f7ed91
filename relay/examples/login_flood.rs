//! Login latency of a correct client during a password-guessing flood from another source.
//!
//! Starts a dev relay in this process on loopback ephemeral ports, then measures IMAP LOGIN round
//! trips (a new TLS connection per login, only the LOGIN command timed) from 127.0.0.2: first
//! unloaded, then while `--flooders` connections from 127.0.0.1 guess passwords of the same
//! account without pause (reconnecting when closed after three failures). Prints p50/p99 of both.
//!
//! ```text
//! cargo run --release -p relay --example login_flood -- --logins 300 --flooders 64
//! ```
//!
//! A figure, not a test: on a shared machine the numbers are noisy.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: example
#![allow(
    clippy::unwrap_used,
    reason = "benchmark tool: a failed unwrap is a failed run"
)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay::config::{Config, Mode, RawConfig};
use relay::server::{self, Backend, Kind};

const PASSWORD: &str = "correct-horse-battery";
const ADDR: &str = "floodtest@[127.0.0.1]";

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(source: [u8; 4], to: SocketAddr) -> BufReader<Tls> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    s.connect(&to.into()).unwrap();
    let tcp: TcpStream = s.into();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    tcp.set_nodelay(true).unwrap();
    let conn =
        rustls::ClientConnection::new(tls_config(), "127.0.0.1".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    let mut r = BufReader::new(tls);
    let mut greeting = String::new();
    r.read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("* OK"), "{greeting}");
    r
}

/// Sends a tagged command; `None` if the connection closed before its status line.
fn command(r: &mut BufReader<Tls>, tag: &str, cmd: &str) -> Option<String> {
    r.get_mut()
        .write_all(format!("{tag} {cmd}\r\n").as_bytes())
        .ok()?;
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) if line.starts_with(&format!("{tag} ")) => return Some(line),
            Ok(_) => {}
        }
    }
}

fn measure(imaps: SocketAddr, logins: usize) -> Vec<Duration> {
    (0..logins)
        .map(|_| {
            let mut c = connect([127, 0, 0, 2], imaps);
            let t = Instant::now();
            let status = command(&mut c, "a", &format!("LOGIN \"{ADDR}\" \"{PASSWORD}\""));
            let took = t.elapsed();
            assert!(status.is_some_and(|s| s.starts_with("a OK")));
            took
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let (p50, p99) = (percentile(&v, 0.5), percentile(&v, 0.99));
    println!(
        "{name:>9}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        v.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3
    );
    p99
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().unwrap())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn main() {
    let logins = arg("--logins", 300);
    let flooders = arg("--flooders", 64);
    let dir = tempfile::tempdir().unwrap();
    let mut raw = RawConfig::default();
    for k in [
        "mx_port",
        "smtp_port",
        "smtps_port",
        "imap_port",
        "imaps_port",
    ] {
        raw.set(&format!("{k}={}", free_port())).unwrap();
    }
    raw.set("https_port=0").unwrap();
    raw.set("http_port=0").unwrap();
    // Let the whole flood reach the login path (the connection rate limit would stop most of it
    // at accept): this measures the login throttle and the hashing pool, not admission.
    raw.set("new_connections_burst=100000000").unwrap();
    raw.set("max_new_connections_per_minute=100000000").unwrap();
    let config = Config::build(
        &raw,
        Mode::Dev {
            data_dir: dir.path().to_owned(),
        },
    )
    .unwrap();
    let backend = match relay::io::uring::available() {
        Ok(()) => Backend::Uring,
        Err(_) => Backend::Epoll,
    };
    let running = server::start(config, backend, 2).unwrap();
    let imaps = running
        .bound
        .iter()
        .find(|(k, _)| *k == Kind::Imaps)
        .map(|(_, a)| *a)
        .unwrap();
    println!("backend {backend}, {logins} correct logins from 127.0.0.2, {flooders} guessing connections from 127.0.0.1");
    // Create the account and warm up.
    measure(imaps, 10);
    let unloaded = report("unloaded", measure(imaps, logins));

    let stop = Arc::new(AtomicBool::new(false));
    let guesses = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..flooders)
        .map(|i| {
            let (stop, guesses) = (stop.clone(), guesses.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut c = connect([127, 0, 0, 1], imaps);
                    loop {
                        n += 1;
                        guesses.fetch_add(1, Ordering::Relaxed);
                        let cmd = format!("LOGIN \"{ADDR}\" \"guess-{i}-{n}\"");
                        if command(&mut c, "g", &cmd).is_none() || stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let started = guesses.load(Ordering::Relaxed);
    let t = Instant::now();
    let flooded = report("flooded", measure(imaps, logins));
    let rate = (guesses.load(Ordering::Relaxed) - started) as f64 / t.elapsed().as_secs_f64();
    println!("guesses sent during the flooded run: {rate:.1}/s");
    println!(
        "p99 flooded / unloaded: {:.2}",
        flooded.as_secs_f64() / unloaded.as_secs_f64()
    );
    stop.store(true, Ordering::Relaxed);
    // The guessers wait out their delayed failure replies (up to 15 s).
    for t in threads {
        let _ = t.join();
    }
    running.shutdown();
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    relay_testkit::tls::client_config()
}
