//! A stand-in for the Delta Chat push notifier (chatmail.md §6.2) on loopback: HTTP/1.1 with
//! keep-alive, plain (`notification_url = http://127.0.0.1:<port>`) or over TLS with a
//! certificate the test chose (`https://127.0.0.1:<port>`, as the real notifier is reached).
//! It records every request (method, path, body) and answers what the test says per token:
//! a status, or nothing at all (a hanging notifier). Stops with the value.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the stand-in answers a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// This status, with an empty body.
    Status(u16),
    /// No answer; the connection stays open until the stand-in stops.
    Hang,
}

/// One request the stand-in received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `POST`, ...
    pub method: String,
    /// `/notify`, ...
    pub path: String,
    /// The body: the token.
    pub body: String,
    /// When it arrived.
    pub at: Instant,
}

type Rule = Box<dyn Fn(&str) -> Answer + Send + Sync>;

struct Inner {
    requests: Mutex<Vec<Request>>,
    rule: Mutex<Rule>,
    stop: AtomicBool,
    connections: AtomicUsize,
}

/// The running stand-in.
pub struct Notifier {
    addr: SocketAddr,
    tls: bool,
    inner: Arc<Inner>,
}

impl Notifier {
    /// Listens on a free loopback port over plain HTTP; answers `200` to everything until told
    /// otherwise.
    pub fn start() -> Notifier {
        Notifier::listen(None)
    }

    /// As [`Notifier::start`], over TLS with `config` (a certificate for `127.0.0.1`).
    pub fn start_tls(config: Arc<rustls::ServerConfig>) -> Notifier {
        Notifier::listen(Some(config))
    }

    fn listen(tls: Option<Arc<rustls::ServerConfig>>) -> Notifier {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            requests: Mutex::default(),
            rule: Mutex::new(Box::new(|_| Answer::Status(200))),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
        });
        let i = inner.clone();
        let is_tls = tls.is_some();
        std::thread::spawn(move || {
            while !i.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        i.connections.fetch_add(1, Ordering::SeqCst);
                        let i = i.clone();
                        let tls = tls.clone();
                        std::thread::spawn(move || {
                            s.set_nonblocking(false).unwrap();
                            s.set_read_timeout(Some(Duration::from_millis(100)))
                                .unwrap();
                            match tls {
                                None => serve(s, &i),
                                Some(config) => {
                                    // A handshake that fails (an untrusted certificate) ends
                                    // the connection at the first read.
                                    let conn = rustls::ServerConnection::new(config).unwrap();
                                    serve(rustls::StreamOwned::new(conn, s), &i);
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Notifier {
            addr,
            tls: is_tls,
            inner,
        }
    }

    /// The relay option that points at this stand-in.
    pub fn relay_option(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("notification_url={scheme}://{}", self.addr)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answer each token as `rule` says from now on.
    pub fn answer(&self, rule: impl Fn(&str) -> Answer + Send + Sync + 'static) {
        *self.inner.rule.lock().unwrap() = Box::new(rule);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// The bodies (tokens) of the `POST /notify` requests so far.
    pub fn tokens(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == "/notify")
            .map(|r| r.body)
            .collect()
    }

    /// Waits until `n` POSTs arrived (or `timeout` passed); the tokens then.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        loop {
            let t = self.tokens();
            if t.len() >= n || Instant::now() > end {
                return t;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Connections accepted so far (a failed TLS handshake counts, but sends no request).
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// Forget the requests so far.
    pub fn clear(&self) {
        self.inner.requests.lock().unwrap().clear();
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
    }
}

/// One keep-alive connection (its reads time out every 100 ms, to notice a stop): requests
/// until the client closes or the stand-in stops.
fn serve(stream: impl Read + Write, inner: &Inner) {
    let mut r = BufReader::new(stream);
    'requests: loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line == "\r\n" || line == "\n" {
                        break;
                    }
                    head.push(line.trim_end().to_owned());
                }
                Err(_) if inner.stop.load(Ordering::Relaxed) => return,
                Err(e) if !timed_out(&e) => return,
                Err(_) if head.is_empty() => continue 'requests,
                Err(_) => continue,
            }
        }
        let mut parts = head.first().map(|l| l.split(' ')).into_iter().flatten();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let len: usize = head
            .iter()
            .filter_map(|h| h.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match r.read(&mut body[got..]) {
                Ok(0) => return,
                Ok(n) => got += n,
                Err(_) if inner.stop.load(Ordering::Relaxed) => return,
                Err(e) if !timed_out(&e) => return,
                Err(_) => {}
            }
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let answer = (inner.rule.lock().unwrap())(&body);
        inner.requests.lock().unwrap().push(Request {
            method,
            path,
            body,
            at: Instant::now(),
        });
        match answer {
            Answer::Status(code) => {
                let reply = format!(
                    "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
                );
                let w = r.get_mut();
                if w.write_all(reply.as_bytes())
                    .and_then(|()| w.flush())
                    .is_err()
                {
                    return;
                }
            }
            Answer::Hang => {
                while !inner.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
        }
    }
}

/// Whether `e` is the read timeout (as opposed to a closed or failed connection).
fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
