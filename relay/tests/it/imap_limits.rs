//! IMAP before login, over real sockets: APPEND with a huge literal is refused before the literal
//! is read (plain on the STARTTLS port, inside TLS on the implicit-TLS port, with and without
//! LITERAL+), the connection stays usable or is closed cleanly, and a thousand such connections
//! from many sources leave the relay's memory bounded (measured on a separate `relay dev`
//! process).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{backends, free_port, Client, Relay, PASSWORD};
use relay::server::Kind;

const RELAY: &str = env!("CARGO_BIN_EXE_relay");
/// The message size cap of `relay dev`: the largest literal an APPEND may announce.
const MAX_LITERAL: u64 = 31_457_280;

/// A client on the implicit-TLS port (`tls`) or the plain port, past the greeting.
fn greeted(relay: &Relay, tls: bool) -> Client {
    let mut c = if tls {
        Client::tls(relay.addr(Kind::Imaps))
    } else {
        Client::plain(relay.addr(Kind::Imap))
    };
    assert!(c.line().starts_with("* OK"));
    c
}

#[test]
fn append_before_login_gets_no_continuation_on_either_port() {
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        for tls in [false, true] {
            let mut c = greeted(&relay, tls);
            c.send(&format!("a APPEND INBOX {{{MAX_LITERAL}}}"));
            // The very next line is the refusal, not a `+` continuation.
            let reply = c.line();
            assert_eq!(reply, "a BAD Please log in first", "{backend:?} tls={tls}");
            // The client gave the command up and the connection goes on.
            let (_, status) = c.imap("b", "NOOP");
            assert!(status.starts_with("b OK"), "{backend:?}: {status}");
            if !tls {
                let (_, status) = c.imap("c", "STARTTLS");
                assert!(status.starts_with("c OK"), "{status}");
                c = c.upgrade();
            }
            let addr = crate::harness::new_addr("il");
            let (_, status) = c.imap("d", &format!("LOGIN \"{addr}\" \"{PASSWORD}\""));
            assert!(status.starts_with("d OK"), "{backend:?}: {status}");
            // After login APPEND gets its continuation.
            c.send("e APPEND INBOX {5}");
            assert!(c.line().starts_with("+ "));
            c.send("hello");
            let (_, status) = c.until_tag("e");
            assert!(status.starts_with("e OK"), "{status}");
        }
    }
}

#[test]
fn literal_plus_append_before_login_is_cut_off_not_read() {
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        for tls in [false, true] {
            let mut c = greeted(&relay, tls);
            c.send(&format!("a APPEND INBOX {{{MAX_LITERAL}+}}"));
            assert_eq!(c.line(), "a BAD Please log in first");
            assert_eq!(c.line(), "* BYE Too much data before login");
            assert!(c.closed(), "{backend:?} tls={tls}: connection still open");
        }
        // A client that pushes the literal right behind its announcement: the relay closes
        // (EOF or reset) and the 30 MB are never all taken.
        let tcp = TcpStream::connect(relay.addr(Kind::Imap)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut writer = tcp.try_clone().unwrap();
        let sent = std::thread::spawn(move || {
            let mut sent = 0u64;
            let header = format!("a APPEND INBOX {{{MAX_LITERAL}+}}\r\n");
            if writer.write_all(header.as_bytes()).is_err() {
                return 0;
            }
            let chunk = vec![b'x'; 64 * 1024];
            while sent < MAX_LITERAL {
                match writer.write(&chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sent += n as u64,
                }
            }
            sent
        });
        let mut reader = tcp;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let sent = sent.join().unwrap();
        assert!(
            sent < MAX_LITERAL,
            "{backend:?}: the relay took all {sent} bytes of the literal"
        );
        let text = String::from_utf8_lossy(&got);
        assert!(!has_continuation(&text), "{backend:?}: {text}");
        assert!(text.starts_with("* OK"), "{backend:?}: {text}");
    }
}

#[test]
fn oversize_login_literal_before_login_is_refused() {
    let relay = Relay::start(relay::server::Backend::Epoll, &[]);
    let mut c = greeted(&relay, true);
    c.send("a LOGIN {100000}");
    assert_eq!(c.line(), "a BAD Literal too large");
    // A long password that fits is fine.
    let addr = crate::harness::new_addr("il");
    c.send(&format!("b LOGIN \"{addr}\" {{{}}}", PASSWORD.len()));
    assert!(c.line().starts_with("+ "));
    c.send(PASSWORD);
    let (_, status) = c.until_tag("b");
    assert!(status.starts_with("b OK"), "{status}");
}

/// Whether the server asked for literal data.
fn has_continuation(text: &str) -> bool {
    text.lines().any(|l| l.starts_with('+'))
}

/// A `relay dev` process, stopped by its pid.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `VmRSS` or `VmHWM` of a process, in bytes.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// Connects from `source` (a 127.0.0.x address).
fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    s.connect(&to.into()).unwrap();
    let tcp: TcpStream = s.into();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    tcp
}

/// Reads up to and including the next LF.
fn read_line(tcp: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while tcp.read(&mut b).is_ok_and(|n| n == 1) {
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

#[test]
fn a_thousand_unauthenticated_huge_appends_keep_the_relay_small() {
    let dir = tempfile::tempdir().unwrap();
    let (imap, imaps) = (free_port(), free_port());
    let mut args: Vec<String> = vec![
        "dev".into(),
        "--io".into(),
        "epoll".into(),
        "--workers".into(),
        "2".into(),
        "--data".into(),
        dir.path().display().to_string(),
    ];
    for s in [
        format!("mx_port={}", free_port()),
        format!("smtp_port={}", free_port()),
        format!("smtps_port={}", free_port()),
        format!("imap_port={imap}"),
        format!("imaps_port={imaps}"),
        "https_port=0".into(),
        "http_port=0".into(),
        "new_connections_burst=100000".into(),
    ] {
        args.push("--set".into());
        args.push(s);
    }
    let child = Command::new(RELAY)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc { child };
    let pid = proc.child.id();
    let to = SocketAddr::from(([127, 0, 0, 1], imap));
    let end = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(to).is_err() {
        assert!(Instant::now() < end, "relay not listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Warm up (thread stacks, allocator arenas), then measure from there.
    for i in 0..20u8 {
        let mut c = connect_from([127, 0, 1, i + 1], to);
        read_line(&mut c);
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = status_kib(pid, "VmRSS");

    // Half announce a synchronizing literal and stay connected; half push a LITERAL+ literal
    // right behind its announcement and are cut off.
    let mut open = Vec::new();
    let chunk = vec![b'x'; 64 * 1024];
    for i in 0..1000u32 {
        let source = [127, 0, 2 + (i / 250) as u8, (i % 250) as u8 + 1];
        let mut c = connect_from(source, to);
        assert!(read_line(&mut c).starts_with("* OK"), "connection {i}");
        if i % 2 == 0 {
            c.write_all(format!("a APPEND INBOX {{{MAX_LITERAL}}}\r\n").as_bytes())
                .unwrap();
            assert_eq!(read_line(&mut c), "a BAD Please log in first\r\n", "{i}");
            open.push(c);
        } else {
            let _ = c.write_all(format!("a APPEND INBOX {{{MAX_LITERAL}+}}\r\n").as_bytes());
            let _ = c.write_all(&chunk);
            // Whatever arrives is no continuation, and the connection ends.
            let mut rest = Vec::new();
            let _ = c.read_to_end(&mut rest);
            assert!(!has_continuation(&String::from_utf8_lossy(&rest)), "{i}");
        }
    }
    // And 100 more inside TLS on the implicit-TLS port.
    let mut open_tls = Vec::new();
    for i in 0..100 {
        let mut c = Client::tls(SocketAddr::from(([127, 0, 0, 1], imaps)));
        assert!(c.line().starts_with("* OK"));
        if i % 2 == 0 {
            c.send(&format!("a APPEND INBOX {{{MAX_LITERAL}}}"));
            assert_eq!(c.line(), "a BAD Please log in first");
            open_tls.push(c);
        } else {
            c.send(&format!("a APPEND INBOX {{{MAX_LITERAL}+}}"));
            assert_eq!(c.line(), "a BAD Please log in first");
            assert_eq!(c.line(), "* BYE Too much data before login");
            assert!(c.closed());
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = status_kib(pid, "VmRSS");
    let peak = status_kib(pid, "VmHWM");
    // The sessions left open are still served.
    for (i, c) in open.iter_mut().enumerate().step_by(50) {
        c.write_all(b"b NOOP\r\n").unwrap();
        assert_eq!(read_line(c), "b OK NOOP completed\r\n", "{i}");
    }
    let growth = peak
        .saturating_sub(before)
        .max(after.saturating_sub(before));
    eprintln!(
        "relay RSS before {} KiB, after {} KiB, peak {} KiB: growth {} KiB",
        before / 1024,
        after / 1024,
        peak / 1024,
        growth / 1024
    );
    assert!(
        growth <= 64 * 1024 * 1024,
        "relay RSS grew by {} MiB",
        growth >> 20
    );
    drop(open);
    drop(open_tls);
    drop(proc);
}
