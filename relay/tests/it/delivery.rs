//! Outbound delivery over real sockets on loopback: into a real test relay's port 25 (STARTTLS
//! with its self-signed certificate), to a `/mxdeliv` server written here (hyper over rustls),
//! and against hostile SMTP and HTTP servers written here. Destinations are domain literals
//! (`[127.0.0.1]`) with explicit ports; certificate verification is tested on the SMTP
//! connection itself with a host name and a CA made here.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use relay::delivery::tls::ClientTls;
use relay::delivery::{
    summarize, Attempt, Delivery, DeliveryConfig, Message, Route, SmtpConnection, Timeouts,
};
use relay::outbound::mx::{MxHost, TlsPolicy};
use relay::outbound::schedule::AttemptResult;
use relay::outbound::smtp_client::ConnError;
use relay::outbound::{dsn, Outcome};
use relay::server::{Backend, Kind};
use relay_testkit::tls::TestCa;
use relay_testkit::{create_account, free_port, new_addr, Relay};

use crate::harness::message;

const LOCALHOST: &str = "[127.0.0.1]";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A resolver that is never asked (literals need no DNS); pointed at a dead loopback port so a
/// stray lookup fails instead of leaving the machine.
fn dns() -> mail_auth::MessageAuthenticator {
    let mut config = relay::config::Config::dev(PathBuf::from("/nonexistent"));
    config.dns_server = Some("127.0.0.1:9".parse().unwrap());
    relay::dns::resolver(&config)
}

fn delivery(smtp_port: u16, https_port: u16, timeouts: Timeouts) -> Delivery {
    let config = DeliveryConfig {
        ehlo_name: "sender.test".into(),
        smtp_port,
        https_port,
        ipv6: false,
        extra_ca_file: None,
        timeouts,
    };
    Delivery::new(config, dns()).unwrap()
}

fn short() -> Timeouts {
    Timeouts::uniform(Duration::from_secs(2))
}

fn msg(id: &str, sender: &str, rcpts: &[&str], body: Vec<u8>) -> Message {
    Message {
        id: id.into(),
        sender: sender.into(),
        recipients: rcpts.iter().map(|r| r.to_string()).collect(),
        body: Bytes::from(body),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A recipient account on `relay` and an encrypted message to it from a foreign sender.
fn local_recipient(relay: &Relay, tag: &str) -> (String, Vec<u8>) {
    let rcpt = new_addr(tag);
    create_account(relay.store(), &rcpt, unix_now());
    let body = message("encrypted.eml.tmpl", "someone@[127.0.0.2]", &rcpt);
    (rcpt, body)
}

fn inbox_count(relay: &Relay, addr: &str) -> usize {
    let id = relay.shared().store.account(addr).unwrap().id;
    let view = relay.shared().store.mailbox_view(id, "INBOX");
    view.map(|v| v.messages.len()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Certificates and TLS servers

// ---------------------------------------------------------------------------------------------
// A scripted SMTP server (blocking threads)

enum PeerStream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

/// The server side of one connection, for scripts.
struct Peer {
    stream: PeerStream,
    buf: Vec<u8>,
}

impl Peer {
    fn send(&mut self, s: &str) {
        let r = match &mut self.stream {
            PeerStream::Plain(t) => t.write_all(s.as_bytes()),
            PeerStream::Tls(t) => t.write_all(s.as_bytes()).and_then(|()| t.flush()),
        };
        let _ = r;
    }

    /// The next line without CRLF; `None` at EOF or error.
    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            let mut chunk = [0u8; 4096];
            let n = match &mut self.stream {
                PeerStream::Plain(t) => t.read(&mut chunk),
                PeerStream::Tls(t) => t.read(&mut chunk),
            }
            .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn starttls(&mut self, config: Arc<rustls::ServerConfig>) -> Option<()> {
        let PeerStream::Plain(tcp) = &self.stream else {
            return None;
        };
        let tcp = tcp.try_clone().ok()?;
        let conn = rustls::ServerConnection::new(config).ok()?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).ok()?;
        }
        self.stream = PeerStream::Tls(Box::new(tls));
        Some(())
    }

    /// Greeting, EHLO (with `extensions`), STARTTLS, handshake, EHLO: ready for MAIL.
    fn open(&mut self, tls: Arc<rustls::ServerConfig>) -> Option<()> {
        self.send("220 hostile.test ESMTP\r\n");
        self.expect("EHLO")?;
        self.send("250-hostile.test\r\n250-SIZE 1000000\r\n250 STARTTLS\r\n");
        self.expect("STARTTLS")?;
        self.send("220 2.0.0 go ahead\r\n");
        self.starttls(tls)?;
        self.expect("EHLO")?;
        self.send("250-hostile.test\r\n250 SIZE 1000000\r\n");
        Some(())
    }

    fn expect(&mut self, prefix: &str) -> Option<String> {
        let line = self.line()?;
        line.starts_with(prefix).then_some(line)
    }
}

/// A listener on loopback running `script` for each connection on its own thread; stops
/// accepting when dropped.
struct ScriptServer {
    addr: std::net::SocketAddr,
    port: u16,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl ScriptServer {
    fn start(script: impl Fn(Peer) + Send + Sync + 'static) -> ScriptServer {
        ScriptServer::on(TcpListener::bind("127.0.0.1:0").unwrap(), script)
    }

    fn on(listener: TcpListener, script: impl Fn(Peer) + Send + Sync + 'static) -> ScriptServer {
        let addr = listener.local_addr().unwrap();
        let port = addr.port();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (connections.clone(), stop.clone());
        let script = Arc::new(script);
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = tcp else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(20)));
                let script = script.clone();
                std::thread::spawn(move || {
                    script(Peer {
                        stream: PeerStream::Plain(tcp),
                        buf: Vec::new(),
                    })
                });
            }
        });
        ScriptServer {
            addr,
            port,
            connections,
            stop,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// A well-behaved server that accepts every message and records each DATA.
fn accepting_server(tls: Arc<rustls::ServerConfig>) -> (ScriptServer, Arc<Mutex<Vec<String>>>) {
    accepting_server_on(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        tls,
        "250 2.1.5 Ok",
    )
}

/// [`accepting_server`] on `listener`, answering RCPT with `rcpt_reply`.
fn accepting_server_on(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    rcpt_reply: &'static str,
) -> (ScriptServer, Arc<Mutex<Vec<String>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let r = received.clone();
    let server = ScriptServer::on(listener, move |mut p| {
        if p.open(tls.clone()).is_none() {
            return;
        }
        loop {
            let Some(line) = p.line() else { return };
            match line.split(':').next().unwrap_or("") {
                "MAIL FROM" => p.send("250 2.1.0 Ok\r\n"),
                "RCPT TO" => p.send(&format!("{rcpt_reply}\r\n")),
                "DATA" => {
                    p.send("354 go\r\n");
                    let mut data = String::new();
                    loop {
                        let Some(l) = p.line() else { return };
                        if l == "." {
                            break;
                        }
                        data.push_str(&l);
                        data.push_str("\r\n");
                    }
                    r.lock().unwrap().push(data);
                    p.send("250 2.0.0 Ok: queued\r\n");
                }
                "RSET" => p.send("250 2.0.0 Ok\r\n"),
                "QUIT" => {
                    p.send("221 2.0.0 Bye\r\n");
                    return;
                }
                _ => p.send("500 5.5.2 what\r\n"),
            }
        }
    });
    (server, received)
}

// ---------------------------------------------------------------------------------------------
// A /mxdeliv server (hyper over rustls on its own runtime thread)

#[derive(Debug, Clone)]
struct Posted {
    path: String,
    from: Vec<String>,
    to: Vec<String>,
    body: Vec<u8>,
}

#[derive(Clone, Copy)]
enum Answer {
    /// This status with this body.
    Status(u16, &'static str),
    /// 200 after a delay.
    Slow(Duration),
    /// 200 with a body of this many bytes.
    Huge(usize),
}

struct MxdelivServer {
    port: u16,
    posted: Arc<Mutex<Vec<Posted>>>,
    connections: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MxdelivServer {
    fn start(tls: Arc<rustls::ServerConfig>, answer: Answer) -> MxdelivServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let posted = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (p, c) = (posted.clone(), connections.clone());
        std::thread::spawn(move || {
            rt().block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                loop {
                    let tcp = tokio::select! {
                        r = listener.accept() => match r { Ok((tcp, _)) => tcp, Err(_) => continue },
                        _ = &mut stopped => return,
                    };
                    c.fetch_add(1, Ordering::SeqCst);
                    let (acceptor, p) = (acceptor.clone(), p.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else { return };
                        let service = hyper::service::service_fn(move |req| {
                            let p = p.clone();
                            async move { respond(req, p, answer).await }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
        });
        MxdelivServer {
            port,
            posted,
            connections,
            stop: Some(stop),
        }
    }

    fn posted(&self) -> Vec<Posted> {
        self.posted.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for MxdelivServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn respond(
    req: hyper::Request<hyper::body::Incoming>,
    posted: Arc<Mutex<Vec<Posted>>>,
    answer: Answer,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let values = |name: &str| -> Vec<String> {
        req.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    let (path, from, to) = (
        req.uri().path().to_owned(),
        values("x-mail-from"),
        values("x-mail-to"),
    );
    let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
    posted.lock().unwrap().push(Posted {
        path,
        from,
        to,
        body,
    });
    let (status, body) = match answer {
        Answer::Status(s, b) => (s, Bytes::from_static(b.as_bytes())),
        Answer::Slow(d) => {
            tokio::time::sleep(d).await;
            (200, Bytes::from_static(b"250 OK"))
        }
        Answer::Huge(n) => (200, Bytes::from(vec![b'x'; n])),
    };
    Ok(hyper::Response::builder()
        .status(status)
        .body(Full::new(body))
        .unwrap())
}

// ---------------------------------------------------------------------------------------------
// Log capture

std::thread_local! {
    /// Where this thread's log lines go while [`logged`] runs.
    static CAPTURE: std::cell::RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { std::cell::RefCell::new(None) };
}

/// Writes to the current thread's capture buffer, if any.
struct ThreadSink(Option<Arc<Mutex<Vec<u8>>>>);

impl Write for ThreadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(b) = &self.0 {
            b.lock().unwrap().extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` on a fresh runtime on this thread with its info logs captured. One global
/// subscriber routes each event to the emitting thread's buffer (a scoped subscriber can miss
/// events while other tests register callsites concurrently).
fn logged<T>(f: impl std::future::Future<Output = T>) -> (T, String) {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| ThreadSink(CAPTURE.with(|c| c.borrow().clone())))
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
    let buf = Arc::new(Mutex::new(Vec::new()));
    CAPTURE.with(|c| *c.borrow_mut() = Some(buf.clone()));
    let out = rt().block_on(f);
    CAPTURE.with(|c| *c.borrow_mut() = None);
    let text = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    (out, text)
}

fn temporary_text(a: &Attempt) -> String {
    match &a.outcomes[..] {
        [Outcome::Temporary(r), ..] => relay::outbound::reply_text(r),
        other => panic!("expected a temporary failure, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Into a real relay

#[test]
fn delivers_into_a_real_relay_by_smtp_and_reuses_the_connection() {
    let relay = Relay::start(Backend::Epoll, &[]);
    let (a, body_a) = local_recipient(&relay, "da");
    let (b, body_b) = local_recipient(&relay, "db");
    // Nothing listens on the HTTPS port: /mxdeliv fails, SMTP takes over.
    let d = delivery(relay.port(Kind::Mx), free_port(), Timeouts::default());
    let messages = [
        msg("q1", "someone@[127.0.0.2]", &[&a], body_a.clone()),
        msg(
            "q2",
            "someone@[127.0.0.2]",
            &[&b, "nobody@[127.0.0.1]"],
            body_b,
        ),
        msg("q3", "someone@[127.0.0.2]", &[&a], body_a),
    ];
    let attempts = rt().block_on(d.attempt(LOCALHOST, &messages, 0));
    assert_eq!(attempts[0].outcomes, [Outcome::Delivered]);
    assert_eq!(attempts[0].route, Some(Route::Smtp));
    assert_eq!(attempts[0].host.as_deref(), Some("127.0.0.1"));
    assert_eq!(attempts[1].outcomes[0], Outcome::Delivered);
    match &attempts[1].outcomes[1] {
        Outcome::Permanent(r) => assert!(r.code == 550 && r.lines[0].starts_with("5.1.1"), "{r:?}"),
        other => panic!("unknown user must be permanent: {other:?}"),
    }
    assert_eq!(attempts[2].outcomes, [Outcome::Delivered]);
    assert_eq!(summarize(&attempts), AttemptResult::Done);
    assert_eq!(inbox_count(&relay, &a), 2);
    assert_eq!(inbox_count(&relay, &b), 1);
    // SMTP worked: /mxdeliv is skipped for this host from now on; the session is kept idle.
    assert!(d.is_mxdeliv_unsupported("127.0.0.1"));
    assert_eq!(d.idle_connections(), (1, 0));
}

#[test]
fn the_remotes_rejection_is_the_answer() {
    let relay = Relay::start(Backend::Epoll, &[]);
    let (a, _) = local_recipient(&relay, "dr");
    let cleartext = message("cleartext.eml.tmpl", "someone@[127.0.0.2]", &a);
    let d = delivery(relay.port(Kind::Mx), free_port(), Timeouts::default());
    let attempts = rt().block_on(d.attempt(
        LOCALHOST,
        &[msg("q", "someone@[127.0.0.2]", &[&a], cleartext)],
        0,
    ));
    match &attempts[0].outcomes[..] {
        [Outcome::Permanent(r)] => assert_eq!(r.code, 523, "{r:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(summarize(&attempts), AttemptResult::Done);
    assert_eq!(inbox_count(&relay, &a), 0);
}

#[test]
fn a_dsn_is_delivered_with_an_empty_sender_and_passes_the_gate() {
    let relay = Relay::start(Backend::Epoll, &[]);
    let (a, original) = local_recipient(&relay, "dn");
    let failed = [dsn::FailedRecipient {
        recipient: "bob@example.org".into(),
        reply: relay::smtp::reply::Reply::new(550, "5.1.1 <bob@example.org>: User unknown"),
        remote_mta: Some("mx.example.org".into()),
        expired: false,
    }];
    let report = dsn::build(&dsn::Bounce {
        domain: LOCALHOST,
        sender: &a,
        failed: &failed,
        original: &original,
        date_unix: unix_now(),
        message_id: "dsn-test@[127.0.0.1]",
        arrival_unix: None,
    })
    .unwrap();
    let d = delivery(relay.port(Kind::Mx), free_port(), Timeouts::default());
    let attempts = rt().block_on(d.attempt(LOCALHOST, &[msg("b", "", &[&a], report)], 0));
    assert_eq!(attempts[0].outcomes, [Outcome::Delivered]);
    assert_eq!(inbox_count(&relay, &a), 1);
}

// ---------------------------------------------------------------------------------------------
// /mxdeliv first, SMTP as the fallback

#[test]
fn mxdeliv_2xx_delivers_to_every_recipient_over_one_kept_alive_connection() {
    let ca = TestCa::new();
    for answer in [Answer::Status(200, "250 OK"), Answer::Status(200, "")] {
        let http = MxdelivServer::start(ca.server(&["127.0.0.1"], &[b"http/1.1"]), answer);
        let d = delivery(free_port(), http.port, short());
        let m1 = msg(
            "m1",
            "a@sender.test",
            &["x@[127.0.0.1]", "y@[127.0.0.1]"],
            b"raw\r\n.dot\r\n".to_vec(),
        );
        let m2 = msg("m2", "", &["z@[127.0.0.1]"], b"bounce\r\n".to_vec());
        let attempts = rt().block_on(async {
            let first = d.attempt(LOCALHOST, &[m1], 0).await;
            let second = d.attempt(LOCALHOST, &[m2], 0).await;
            [first, second].concat()
        });
        for a in &attempts {
            assert!(a.outcomes.iter().all(|o| *o == Outcome::Delivered), "{a:?}");
            assert_eq!(a.route, Some(Route::Https));
        }
        let posted = http.posted();
        assert_eq!(posted.len(), 2);
        assert_eq!(posted[0].path, "/mxdeliv");
        assert_eq!(posted[0].from, ["a@sender.test"]);
        assert_eq!(posted[0].to, ["x@[127.0.0.1]", "y@[127.0.0.1]"]);
        // The body is the message as stored: not dot-stuffed.
        assert_eq!(posted[0].body, b"raw\r\n.dot\r\n");
        // A bounce has no sender header.
        assert!(posted[1].from.is_empty());
        assert_eq!(http.connections(), 1, "keep-alive");
        assert!(!d.is_mxdeliv_unsupported("127.0.0.1"));
    }
}

#[test]
fn mxdeliv_refusals_fall_through_to_smtp_and_smtp_success_skips_mxdeliv_next_time() {
    let ca = TestCa::new();
    let relay = Relay::start(Backend::Epoll, &[]);
    for answer in [
        Answer::Status(400, "554 5.7.1 No DKIM signature found"),
        Answer::Status(500, ""),
        Answer::Status(302, ""),
        Answer::Slow(Duration::from_secs(5)),
    ] {
        let http = MxdelivServer::start(ca.server(&["127.0.0.1"], &[b"http/1.1"]), answer);
        let (a, body) = local_recipient(&relay, "df");
        let d = delivery(relay.port(Kind::Mx), http.port, short());
        let m = msg("m", "someone@[127.0.0.2]", &[&a], body);
        let attempts = rt().block_on(d.attempt(LOCALHOST, std::slice::from_ref(&m), 0));
        assert_eq!(attempts[0].outcomes, [Outcome::Delivered]);
        assert_eq!(attempts[0].route, Some(Route::Smtp));
        assert_eq!(http.posted().len(), 1);
        assert!(d.is_mxdeliv_unsupported("127.0.0.1"));
        // The next attempt goes straight to SMTP.
        let attempts = rt().block_on(d.attempt(LOCALHOST, &[m], 0));
        assert_eq!(attempts[0].route, Some(Route::Smtp));
        assert_eq!(http.posted().len(), 1, "/mxdeliv skipped for a marked host");
        assert_eq!(inbox_count(&relay, &a), 2);
    }
}

#[test]
fn an_oversized_mxdeliv_response_still_counts_but_the_connection_is_dropped() {
    let ca = TestCa::new();
    let http = MxdelivServer::start(
        ca.server(&["127.0.0.1"], &[b"http/1.1"]),
        Answer::Huge(4 * 1024 * 1024),
    );
    let d = delivery(free_port(), http.port, short());
    let m = msg(
        "m",
        "a@sender.test",
        &["x@[127.0.0.1]"],
        b"raw\r\n".to_vec(),
    );
    let attempts = rt().block_on(async {
        let first = d.attempt(LOCALHOST, std::slice::from_ref(&m), 0).await;
        let second = d.attempt(LOCALHOST, &[m], 0).await;
        [first, second].concat()
    });
    assert!(attempts.iter().all(|a| a.outcomes == [Outcome::Delivered]));
    assert_eq!(
        d.idle_connections().1,
        0,
        "a connection with an unread body is not kept"
    );
    assert_eq!(http.connections(), 2);
}

// ---------------------------------------------------------------------------------------------
// Hostile and broken SMTP servers

#[test]
fn a_server_that_stalls_after_its_greeting_times_out() {
    let server = ScriptServer::start(|mut p| {
        p.send("220 slow.test ESMTP\r\n");
        std::thread::sleep(Duration::from_secs(6));
    });
    let d = delivery(server.port, free_port(), short());
    let m = msg(
        "stall1",
        "a@sender.test",
        &["x@[127.0.0.1]"],
        b"x\r\n".to_vec(),
    );
    let started = std::time::Instant::now();
    let (attempts, logs) = logged(d.attempt(LOCALHOST, &[m], 0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let text = temporary_text(&attempts[0]);
    assert!(
        text.starts_with("421 4.4.1 Failed to connect to any mail server; last attempt to 127.0.0.1: timed out waiting for a reply"),
        "{text}"
    );
    assert_eq!(summarize(&attempts), AttemptResult::Unreachable);
    assert!(
        logs.contains("deferred")
            && logs.contains("[127.0.0.1]")
            && logs.contains("stall1")
            && logs.contains("timed out"),
        "{logs}"
    );
}

#[test]
fn broken_servers_are_connection_failures() {
    let ca = TestCa::new();
    let tls = ca.server(&["127.0.0.1"], &[]);
    type Script = Box<dyn Fn(Peer) + Send + Sync>;
    let t1 = tls.clone();
    let t2 = tls.clone();
    // Each case: the script and what the failure must say (one of the alternatives: a close
    // with unread data may reach the client as a reset).
    let cases: Vec<(&str, Script, &[&str])> = vec![
        (
            "garbage",
            Box::new(|mut p: Peer| p.send("HTTP/1.1 200 OK\r\n\r\n")),
            &["protocol error: not an SMTP reply"],
        ),
        (
            "no STARTTLS",
            Box::new(|mut p: Peer| {
                p.send("220 plain.test ESMTP\r\n");
                p.line();
                p.send("250-plain.test\r\n250 SIZE 1000\r\n");
                p.line();
            }),
            &["TLS: STARTTLS not offered"],
        ),
        (
            "refused greeting",
            Box::new(|mut p: Peer| p.send("554 5.3.2 no service\r\n")),
            &["refused: 554 5.3.2 no service"],
        ),
        (
            "close mid-DATA",
            Box::new(move |mut p: Peer| {
                if p.open(t1.clone()).is_none() {
                    return;
                }
                p.line();
                p.send("250 ok\r\n");
                p.line();
                p.send("250 ok\r\n");
                p.line();
                p.send("354 go\r\n");
                p.line();
            }),
            &[
                "connection closed by the server",
                "reset by peer",
                "Broken pipe",
            ],
        ),
        (
            "endless reply",
            Box::new(move |mut p: Peer| {
                if p.open(t2.clone()).is_none() {
                    return;
                }
                p.line();
                for _ in 0..10_000 {
                    p.send("250-more\r\n");
                }
            }),
            &["protocol error: reply has too many lines"],
        ),
    ];
    for (name, script, expected) in cases {
        let server = ScriptServer::start(script);
        let d = delivery(server.port, free_port(), short());
        let big = vec![b'x'; 200_000];
        let m = msg("b", "a@sender.test", &["x@[127.0.0.1]"], big);
        let attempts = rt().block_on(d.attempt(LOCALHOST, &[m], 0));
        let text = temporary_text(&attempts[0]);
        assert!(expected.iter().any(|e| text.contains(e)), "{name}: {text}");
        assert_eq!(summarize(&attempts), AttemptResult::Unreachable, "{name}");
        assert!(!d.is_mxdeliv_unsupported("127.0.0.1"), "{name}");
    }
}

#[test]
fn an_smtp_connection_error_clears_the_mxdeliv_mark() {
    let relay = Relay::start(Backend::Epoll, &[]);
    let (a, body) = local_recipient(&relay, "dm");
    let d = delivery(relay.port(Kind::Mx), free_port(), short());
    let m = msg("m", "someone@[127.0.0.2]", &[&a], body);
    let attempts = rt().block_on(d.attempt(LOCALHOST, std::slice::from_ref(&m), 0));
    assert_eq!(attempts[0].outcomes, [Outcome::Delivered]);
    assert!(d.is_mxdeliv_unsupported("127.0.0.1"));
    assert_eq!(d.idle_connections().0, 1);
    // The relay goes away: the kept session is found dead, a new one cannot connect.
    drop(relay);
    let attempts = rt().block_on(d.attempt(LOCALHOST, &[m], 0));
    assert!(
        temporary_text(&attempts[0]).contains("connect:"),
        "{attempts:?}"
    );
    assert!(!d.is_mxdeliv_unsupported("127.0.0.1"));
    assert_eq!(d.idle_connections().0, 0);
}

#[test]
fn every_message_of_an_attempt_goes_over_one_smtp_session() {
    let ca = TestCa::new();
    let (server, received) = accepting_server(ca.server(&["127.0.0.1"], &[]));
    let d = delivery(server.port, free_port(), short());
    let messages: Vec<Message> = (0..5)
        .map(|i| {
            msg(
                &format!("m{i}"),
                "a@sender.test",
                &["x@[127.0.0.1]"],
                format!("Subject: {i}\n\n.line\n").into_bytes(),
            )
        })
        .collect();
    let attempts = rt().block_on(d.attempt(LOCALHOST, &messages, 0));
    assert!(
        attempts.iter().all(|a| a.outcomes == [Outcome::Delivered]),
        "{attempts:?}"
    );
    assert_eq!(server.connections(), 1);
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 5);
    // CRLF line ends and dot-stuffing on the wire.
    assert_eq!(received[3], "Subject: 3\r\n\r\n..line\r\n");
}

// ---------------------------------------------------------------------------------------------
// Certificate verification (host names, on the SMTP connection itself)

fn host(name: &str, tls: TlsPolicy) -> MxHost {
    MxHost {
        name: name.into(),
        literal: None,
        tls,
    }
}

fn open(server: &ScriptServer, h: &MxHost, tls: &ClientTls) -> Result<SmtpConnection, ConnError> {
    let addrs = ["127.0.0.1".parse().unwrap()];
    let config = tls.smtp(h.tls);
    rt().block_on(SmtpConnection::open(
        h,
        &addrs,
        server.port,
        "sender.test",
        config,
        short(),
    ))
}

#[test]
fn certificates_are_verified_against_the_host_name() {
    let ca = TestCa::new();
    let (server, _) = accepting_server(ca.server(&["mx.example.test"], &[]));
    let with_ca = ClientTls::new(Some(&ca.file())).unwrap();
    // Right name, trusted CA.
    open(
        &server,
        &host("mx.example.test", TlsPolicy::Verify),
        &with_ca,
    )
    .unwrap();
    // Wrong name.
    let e = open(
        &server,
        &host("other.example.test", TlsPolicy::Verify),
        &with_ca,
    )
    .err()
    .unwrap();
    assert!(
        matches!(&e, ConnError::Tls(t) if t.contains("not valid for name")),
        "{e:?}"
    );
    // Unknown CA (only the system store).
    let system = ClientTls::new(None).unwrap();
    let e = open(
        &server,
        &host("mx.example.test", TlsPolicy::Verify),
        &system,
    )
    .err()
    .unwrap();
    assert!(
        matches!(&e, ConnError::Tls(t) if t.contains("UnknownIssuer") || t.contains("unknown issuer")),
        "{e:?}"
    );
    // `_` domains and literals accept any certificate.
    open(
        &server,
        &host("other.example.test", TlsPolicy::AcceptAny),
        &system,
    )
    .unwrap();
    // A broken extra CA file is a setup error naming the file.
    let bad = ca.file().with_file_name("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let e = ClientTls::new(Some(&bad)).err().unwrap();
    assert!(e.to_string().contains("bad.pem"), "{e}");
}

#[test]
fn mxdeliv_to_a_literal_accepts_any_certificate() {
    let ca = TestCa::new();
    let http = MxdelivServer::start(
        ca.server(&["elsewhere.test"], &[b"http/1.1"]),
        Answer::Status(200, "250 OK"),
    );
    let d = delivery(free_port(), http.port, short());
    let m = msg(
        "m",
        "a@sender.test",
        &["x@[127.0.0.1]"],
        b"raw\r\n".to_vec(),
    );
    let attempts = rt().block_on(d.attempt(LOCALHOST, &[m], 0));
    assert_eq!(attempts[0].route, Some(Route::Https));
}

// ---------------------------------------------------------------------------------------------
// Several MX hosts (resolved already: two loopback addresses on the same port)

/// Listeners on 127.0.0.1 and 127.0.0.2 with the same free port.
fn two_hosts() -> (TcpListener, TcpListener) {
    for _ in 0..20 {
        let second = TcpListener::bind("127.0.0.2:0").unwrap();
        let port = second.local_addr().unwrap().port();
        if let Ok(first) = TcpListener::bind(("127.0.0.1", port)) {
            return (first, second);
        }
    }
    panic!("no port free on both loopback addresses");
}

fn mx_host(name: &str, ip: &str) -> MxHost {
    MxHost {
        name: name.into(),
        literal: Some(ip.parse().unwrap()),
        tls: TlsPolicy::AcceptAny,
    }
}

#[test]
fn the_next_mx_is_tried_after_a_connection_failure_and_a_dead_host_is_skipped() {
    let ca = TestCa::new();
    let (first, second) = two_hosts();
    let port = first.local_addr().unwrap().port();
    let broken = ScriptServer::on(first, |mut p| p.send("garbage\r\n"));
    let (good, received) =
        accepting_server_on(second, ca.server(&["mx2.test"], &[]), "250 2.1.5 Ok");
    let d = delivery(port, free_port(), short());
    let hosts = [
        mx_host("mx1.test", "127.0.0.1"),
        mx_host("mx2.test", "127.0.0.2"),
    ];
    let messages = [
        msg(
            "n1",
            "a@sender.test",
            &["x@example.test"],
            b"one\r\n".to_vec(),
        ),
        msg(
            "n2",
            "a@sender.test",
            &["x@example.test"],
            b"two\r\n".to_vec(),
        ),
    ];
    let (attempts, logs) = logged(d.attempt_hosts("example.test", &hosts, &messages));
    for a in &attempts {
        assert_eq!(a.outcomes, [Outcome::Delivered]);
        assert_eq!(a.host.as_deref(), Some("mx2.test"));
    }
    assert_eq!(
        broken.connections(),
        1,
        "a host that failed is not tried again in the attempt"
    );
    assert_eq!(good.connections(), 1);
    assert_eq!(received.lock().unwrap().len(), 2);
    assert!(d.is_mxdeliv_unsupported("mx2.test"));
    assert!(!d.is_mxdeliv_unsupported("mx1.test"));
    assert!(!logs.contains("deferred"), "{logs}");
}

#[test]
fn an_smtp_rejection_is_the_answer_and_ends_the_walk() {
    let ca = TestCa::new();
    for (reply, permanent) in [
        ("550 5.1.1 <x@example.test>: no such user", true),
        ("452 4.2.2 mailbox full", false),
    ] {
        let (first, second) = two_hosts();
        let port = first.local_addr().unwrap().port();
        let (rejecting, _) = accepting_server_on(first, ca.server(&["mx1.test"], &[]), reply);
        let (other, received) =
            accepting_server_on(second, ca.server(&["mx2.test"], &[]), "250 ok");
        let d = delivery(port, free_port(), short());
        let hosts = [
            mx_host("mx1.test", "127.0.0.1"),
            mx_host("mx2.test", "127.0.0.2"),
        ];
        let m = msg(
            "r1",
            "a@sender.test",
            &["x@example.test"],
            b"x\r\n".to_vec(),
        );
        let (attempts, logs) = logged(d.attempt_hosts("example.test", &hosts, &[m]));
        let text = match (&attempts[0].outcomes[..], permanent) {
            ([Outcome::Permanent(r)], true) | ([Outcome::Temporary(r)], false) => {
                relay::outbound::reply_text(r)
            }
            (other, _) => panic!("{reply}: {other:?}"),
        };
        assert_eq!(text, reply);
        assert_eq!(rejecting.connections(), 1);
        assert_eq!(
            other.connections(),
            0,
            "a rejection is not retried elsewhere"
        );
        assert!(received.lock().unwrap().is_empty());
        let expected = if permanent {
            AttemptResult::Done
        } else {
            AttemptResult::Deferred
        };
        assert_eq!(summarize(&attempts), expected);
        if permanent {
            assert!(
                logs.contains("rejected") && logs.contains("5.1.1"),
                "{logs}"
            );
        } else {
            assert!(
                logs.contains("deferred") && logs.contains("example.test"),
                "{logs}"
            );
        }
    }
}

#[test]
fn all_hosts_failing_names_the_last_one() {
    let (first, second) = two_hosts();
    let port = first.local_addr().unwrap().port();
    drop(first);
    let _refusing = ScriptServer::on(second, |mut p| p.send("421 4.3.2 shutting down\r\n"));
    let d = delivery(port, free_port(), short());
    let hosts = [
        mx_host("mx1.test", "127.0.0.1"),
        mx_host("mx2.test", "127.0.0.2"),
    ];
    let m = msg(
        "f1",
        "a@sender.test",
        &["x@example.test"],
        b"x\r\n".to_vec(),
    );
    let (attempts, logs) = logged(d.attempt_hosts("example.test", &hosts, &[m]));
    let text = temporary_text(&attempts[0]);
    assert_eq!(
        text,
        "421 4.4.1 Failed to connect to any mail server; last attempt to mx2.test: \
         refused: 421 4.3.2 shutting down"
    );
    assert_eq!(summarize(&attempts), AttemptResult::Unreachable);
    assert_eq!(logs.matches("deferred").count(), 1, "{logs}");
}

#[test]
fn the_next_address_of_a_host_is_tried() {
    let ca = TestCa::new();
    let (server, _) = accepting_server(ca.server(&["mx.example.test"], &[]));
    let tls = ClientTls::new(None).unwrap();
    // 127.0.0.2 refuses (nothing listens there on this port); 127.0.0.1 answers.
    let addrs = ["127.0.0.2".parse().unwrap(), "127.0.0.1".parse().unwrap()];
    let h = host("mx.example.test", TlsPolicy::AcceptAny);
    let conn = rt().block_on(SmtpConnection::open(
        &h,
        &addrs,
        server.port,
        "sender.test",
        tls.smtp(h.tls),
        short(),
    ));
    assert!(conn.is_ok());
    assert_eq!(server.connections(), 1);
}

// ---------------------------------------------------------------------------------------------
// Names through the test DNS server on loopback (`relay_testkit::dns`)

use relay_testkit::dns::{DnsServer, Fault, Record as Rr};

/// The test zone: `mxs.test` has two MX hosts (127.0.0.1 and 127.0.0.2), `nomx.test` none (its
/// own address is 127.0.0.2), `null.test` a null MX, `nx.test` does not exist,
/// `servfail.test` fails, `_self.test` and `wrongcert.test` point at `mx.self.test` and
/// `mx.wrongcert.test` (127.0.0.1).
fn zone() -> DnsServer {
    let dns = DnsServer::start();
    let ip = |s: &str| Rr::A(s.parse().unwrap());
    dns.add("mxs.test", Rr::Mx(20, "mx2.mxs.test".into()));
    dns.add("mxs.test", Rr::Mx(10, "mx1.mxs.test".into()));
    dns.add("mx1.mxs.test", ip("127.0.0.1"));
    dns.add("mx2.mxs.test", ip("127.0.0.2"));
    dns.add("nomx.test", ip("127.0.0.2"));
    dns.add("null.test", Rr::Mx(0, ".".into()));
    dns.add("_self.test", Rr::Mx(10, "mx.self.test".into()));
    dns.add("wrongcert.test", Rr::Mx(10, "mx.wrongcert.test".into()));
    dns.add("mx.self.test", ip("127.0.0.1"));
    dns.add("mx.wrongcert.test", ip("127.0.0.1"));
    dns.fault("servfail.test", Fault::ServFail);
    dns
}

/// A resolver asking only `dns`.
fn resolver(dns: &DnsServer) -> mail_auth::MessageAuthenticator {
    let mut config = relay::config::Config::dev(PathBuf::from("/nonexistent"));
    config.dns_server = Some(dns.addr());
    relay::dns::resolver(&config)
}

fn named_delivery(
    dns: &DnsServer,
    smtp_port: u16,
    https_port: u16,
    ca: Option<PathBuf>,
) -> Delivery {
    let config = DeliveryConfig {
        ehlo_name: "sender.test".into(),
        smtp_port,
        https_port,
        ipv6: false,
        extra_ca_file: ca,
        timeouts: short(),
    };
    Delivery::new(config, resolver(dns)).unwrap()
}

#[test]
fn mx_hosts_come_from_dns_in_preference_order_and_are_verified_by_name() {
    let ca = TestCa::new();
    let dns = zone();
    let (first, second) = two_hosts();
    let port = first.local_addr().unwrap().port();
    // mx1 (preference 10) answers garbage; mx2 has a certificate for its name from our CA.
    let broken = ScriptServer::on(first, |mut p| p.send("garbage\r\n"));
    let (good, received) =
        accepting_server_on(second, ca.server(&["mx2.mxs.test"], &[]), "250 2.1.5 Ok");
    let d = named_delivery(&dns, port, free_port(), Some(ca.file()));
    let m = msg("d1", "a@sender.test", &["x@mxs.test"], b"x\r\n".to_vec());
    let attempts = rt().block_on(d.attempt("mxs.test", &[m], 7));
    assert_eq!(attempts[0].outcomes, [Outcome::Delivered], "{attempts:?}");
    assert_eq!(attempts[0].host.as_deref(), Some("mx2.mxs.test"));
    assert_eq!((broken.connections(), good.connections()), (1, 1));
    assert_eq!(received.lock().unwrap().len(), 1);
    // No MX records: the domain itself (127.0.0.2, the same server; its certificate does not
    // name nomx.test, so verification fails: a temporary TLS failure).
    let m = msg("d2", "a@sender.test", &["x@nomx.test"], b"x\r\n".to_vec());
    let attempts = rt().block_on(d.attempt("nomx.test", &[m], 0));
    let text = temporary_text(&attempts[0]);
    assert!(text.contains("last attempt to nomx.test: TLS:"), "{text}");
    assert!(text.contains("not valid for name"), "{text}");
    assert_eq!(good.connections(), 2);
}

#[test]
fn dns_answers_decide_bounces_and_deferrals() {
    let dns = zone();
    let d = named_delivery(&dns, free_port(), free_port(), None);
    let cases = [
        (
            "null.test",
            true,
            "556 5.1.10 Domain null.test does not accept mail (null MX)",
        ),
        ("nx.test", true, "550 5.1.2 Domain nx.test does not exist"),
        (
            "servfail.test",
            false,
            "451 4.4.3 DNS lookup of MX records for servfail.test failed",
        ),
    ];
    for (domain, permanent, expected) in cases {
        let m = msg(
            "n",
            "a@sender.test",
            &[&format!("x@{domain}")],
            b"x\r\n".to_vec(),
        );
        let (attempts, logs) = logged(d.attempt(domain, &[m], 0));
        let (is_perm, text) = match &attempts[0].outcomes[..] {
            [Outcome::Permanent(r)] => (true, relay::outbound::reply_text(r)),
            [Outcome::Temporary(r)] => (false, relay::outbound::reply_text(r)),
            other => panic!("{domain}: {other:?}"),
        };
        assert_eq!(is_perm, permanent, "{domain}: {text}");
        assert!(text.starts_with(expected), "{domain}: {text}");
        if !permanent {
            assert_eq!(summarize(&attempts), AttemptResult::Unreachable);
            assert!(logs.contains("deferred") && logs.contains(domain), "{logs}");
        }
    }
}

#[test]
fn underscore_domains_accept_any_certificate_and_others_do_not() {
    let ca = TestCa::new();
    let dns = zone();
    // One server on 127.0.0.1 for both names, with a certificate for neither.
    let (smtp, received) = accepting_server(ca.server(&["unrelated.test"], &[]));
    let http = MxdelivServer::start(
        ca.server(&["unrelated.test"], &[b"http/1.1"]),
        Answer::Status(200, "250 OK"),
    );
    let d = named_delivery(&dns, smtp.port, http.port, Some(ca.file()));
    let m = msg("u1", "a@sender.test", &["x@_self.test"], b"x\r\n".to_vec());
    let attempts = rt().block_on(d.attempt("_self.test", &[m], 0));
    assert_eq!(attempts[0].outcomes, [Outcome::Delivered]);
    assert_eq!(attempts[0].route, Some(Route::Https));
    let m = msg(
        "u2",
        "a@sender.test",
        &["x@wrongcert.test"],
        b"x\r\n".to_vec(),
    );
    let attempts = rt().block_on(d.attempt("wrongcert.test", &[m], 0));
    let text = temporary_text(&attempts[0]);
    assert!(
        text.contains("last attempt to mx.wrongcert.test: TLS:"),
        "{text}"
    );
    // Neither /mxdeliv nor SMTP got the message for the verified name.
    assert_eq!(http.posted().len(), 1);
    assert!(received.lock().unwrap().is_empty());
}

#[test]
fn delivery_is_shared_and_its_attempts_are_send() {
    fn shared<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let d = delivery(free_port(), free_port(), short());
    shared(&d);
    let attempt = d.attempt(LOCALHOST, &[], 0);
    send(&attempt);
    assert!(rt().block_on(attempt).is_empty());
}
