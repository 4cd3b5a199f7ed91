//! The HTTPS port (ALPN multiplexing IMAP, submission and HTTP) and the HTTP port, over real
//! sockets on both I/O backends: the onboarding endpoints, the limits on what one client may
//! send, and that nothing here creates an account.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use relay_testkit::{backends, create_account, new_addr, Client, Kind, Relay, PASSWORD};

fn https(relay: &Relay, alpn: &[&[u8]]) -> Client {
    Client::tls_alpn(relay.addr(Kind::Https), alpn)
}

#[test]
fn https_serves_autoconfig_pages_and_new_without_creating_accounts() {
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        let accounts_before = relay.store().accounts().len();
        let mut c = https(&relay, &[b"h2", b"http/1.1"]);
        assert_eq!(c.alpn().as_deref(), Some(&b"http/1.1"[..]));

        // Several requests on one keep-alive connection.
        let r = c.http(
            "GET",
            "/.well-known/autoconfig/mail/config-v1.1.xml",
            "127.0.0.1",
            &[],
            b"",
        );
        assert_eq!(r.status, 200, "{backend:?}");
        assert!(r.header("content-type").unwrap().contains("xml"));
        let xml = r.text();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let ports: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("port"))
            .filter_map(|n| n.text().map(str::to_owned))
            .collect();
        assert!(
            ports.contains(&relay.port(Kind::Imaps).to_string()),
            "autoconfig names the relay's IMAPS port: {ports:?}"
        );

        let r = c.http("GET", "/", "127.0.0.1", &[], b"");
        assert_eq!(r.status, 200);
        assert!(r.text().contains("<svg"), "index.html shows the QR code");
        let r = c.http("GET", "/robots.txt", "127.0.0.1", &[], b"");
        assert_eq!(r.text(), "User-agent: *\nDisallow: /\n");
        let r = c.http("GET", "/.well-known/mta-sts.txt", "127.0.0.1", &[], b"");
        assert!(r.text().contains("version: STSv1"));
        let r = c.http("GET", "/no-such-page", "127.0.0.1", &[], b"");
        assert_eq!(r.status, 404);

        let r = c.http("POST", "/new", "127.0.0.1", &[], b"");
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let email = v["email"].as_str().unwrap();
        let password = v["password"].as_str().unwrap();
        assert!(email.ends_with("@[127.0.0.1]"), "{email}");
        assert_eq!(email.split('@').next().unwrap().len(), 9);
        assert_eq!(password.len(), 12);
        assert!(
            v["dclogin_url"].as_str().unwrap().starts_with("dclogin:"),
            "a self-signed relay adds dclogin_url"
        );
        assert!(relay.shared().store.account(email).is_none());
        assert_eq!(relay.store().accounts().len(), accounts_before);

        // The credentials work (the password has any punctuation, so it goes as a literal):
        // the account appears at the first login.
        let mut imap = Client::tls(relay.addr(Kind::Imaps));
        imap.line();
        imap.send(&format!("a LOGIN \"{email}\" {{{}+}}", password.len()));
        imap.send(password);
        let (_, ok) = imap.until_tag("a");
        assert!(ok.starts_with("a OK"), "{ok}");
        assert!(relay.shared().store.account(email).is_some());
    }
}

#[test]
fn https_port_serves_imap_and_submission_by_alpn() {
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        let addr = new_addr("alpn");
        create_account(relay.store(), &addr, 0);

        let mut imap = https(&relay, &[b"imap"]);
        assert_eq!(imap.alpn().as_deref(), Some(&b"imap"[..]));
        assert!(imap.line().starts_with("* OK"), "{backend:?}");
        let (_, ok) = imap.imap("a", &format!("LOGIN \"{addr}\" \"{PASSWORD}\""));
        assert!(ok.starts_with("a OK"), "{ok}");
        let (_, ok) = imap.imap("b", "SELECT INBOX");
        assert!(ok.starts_with("b OK"), "{ok}");

        let mut smtp = https(&relay, &[b"smtp"]);
        assert_eq!(smtp.alpn().as_deref(), Some(&b"smtp"[..]));
        assert_eq!(smtp.reply().0, 220);
        smtp.smtp_login(&addr, PASSWORD);
        let (code, _) = smtp.smtp(&format!("MAIL FROM:<{addr}>"));
        assert_eq!(code, 250);
    }
}

#[test]
fn unknown_or_missing_alpn_is_http() {
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        for alpn in [&[b"h2".as_slice()][..], &[], &[b"acme-tls/1".as_slice()]] {
            let mut c = https(&relay, alpn);
            assert_eq!(c.alpn(), None, "{backend:?} {alpn:?}");
            let r = c.http("GET", "/robots.txt", "127.0.0.1", &[], b"");
            assert_eq!(r.status, 200, "{backend:?} {alpn:?}");
        }
    }
}

#[test]
fn http_port_redirects_to_https_and_answers_acme_challenges() {
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        relay
            .shared()
            .acme_challenges
            .insert("tok-123", "tok-123.thumbprint");
        let mut c = Client::plain(relay.addr(Kind::Http));
        let r = c.http("GET", "/info.html?x=1", "127.0.0.1", &[], b"");
        assert_eq!(r.status, 301, "{backend:?}");
        assert_eq!(
            r.header("location").unwrap(),
            format!(
                "https://127.0.0.1:{}/info.html?x=1",
                relay.port(Kind::Https)
            )
        );
        let r = c.http(
            "GET",
            "/.well-known/acme-challenge/tok-123",
            "127.0.0.1",
            &[],
            b"",
        );
        assert_eq!((r.status, r.text().as_str()), (200, "tok-123.thumbprint"));
        let r = c.http(
            "GET",
            "/.well-known/acme-challenge/other",
            "127.0.0.1",
            &[],
            b"",
        );
        assert_eq!(r.status, 404);
    }
}

#[test]
fn new_flood_is_limited_per_source_and_creates_nothing() {
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        let before = relay.store().accounts().len();
        let mut c = https(&relay, &[b"http/1.1"]);
        let statuses: Vec<u16> = (0..30)
            .map(|_| c.http("POST", "/new", "127.0.0.1", &[], b"").status)
            .collect();
        let ok = statuses.iter().filter(|s| **s == 200).count();
        // A burst of 5 plus what refilled during the run (2 a second).
        assert!((5..=12).contains(&ok), "{backend:?}: {statuses:?}");
        assert!(statuses.contains(&429), "{statuses:?}");
        assert_eq!(relay.store().accounts().len(), before);
    }
}

#[test]
fn oversized_and_malformed_requests_get_http_errors_and_others_are_served() {
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        // More header fields than a request may have, and a head larger than the relay reads:
        // 431, or, if the relay closed while the rest was still arriving, a reset before the
        // answer could be read. Never served.
        let many: String = (0..2000).map(|i| format!("X-N{i}: 1\r\n")).collect();
        let big = format!("X-Big: {}\r\n", "a".repeat(100 * 1024));
        for extra in [many, big] {
            let mut c = https(&relay, &[b"http/1.1"]);
            let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                c.send_raw(format!("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n").as_bytes());
                c.http_response(false).status
            }));
            if let Ok(status) = answered {
                assert_eq!(status, 431, "{backend:?}");
            }
        }

        // A declared body over the route's cap: 413 before the body is sent.
        let mut c = https(&relay, &[b"http/1.1"]);
        c.send_raw(b"POST /new HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n");
        assert_eq!(c.http_response(false).status, 413);

        // A body on a route that takes none.
        let mut c = https(&relay, &[b"http/1.1"]);
        let r = c.http("GET", "/", "127.0.0.1", &[], b"surprise");
        assert_eq!(r.status, 413);

        // Garbage instead of a request line.
        let mut c = https(&relay, &[b"http/1.1"]);
        c.send_raw(b"\x01\x02 nonsense\r\n\r\n");
        assert_eq!(c.http_response(false).status, 400);

        // Path traversal.
        let mut c = https(&relay, &[b"http/1.1"]);
        let r = c.http("GET", "/../../etc/passwd", "127.0.0.1", &[], b"");
        assert!(matches!(r.status, 400 | 404), "{}", r.status);

        // Everyone else is still served.
        let mut c = https(&relay, &[b"http/1.1"]);
        assert_eq!(c.http("GET", "/", "127.0.0.1", &[], b"").status, 200);
    }
}

#[test]
fn client_hello_in_single_bytes_still_connects() {
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        let mut tcp = TcpStream::connect(relay.addr(Kind::Https)).unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut config = (*relay_testkit::tls::client_config()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut conn = rustls::ClientConnection::new(
            std::sync::Arc::new(config),
            "127.0.0.1".try_into().unwrap(),
        )
        .unwrap();
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).unwrap();
        for b in &hello {
            tcp.write_all(std::slice::from_ref(b)).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut s = rustls::StreamOwned::new(conn, tcp);
        s.write_all(b"GET /robots.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        let resp = String::from_utf8_lossy(&resp);
        assert!(resp.starts_with("HTTP/1.1 200"), "{backend:?}: {resp}");
        assert!(resp.ends_with("Disallow: /\n"), "{resp}");
    }
}

#[test]
fn slow_request_heads_are_cut_off() {
    // Both backends at once: the timeout is the relay's (`http_head_timeout`, default 20 s,
    // checked in config's tests; 4 s here), the same for every client however it trickles.
    let runs: Vec<_> = backends()
        .into_iter()
        .map(|backend| {
            std::thread::spawn(move || {
                let relay = Relay::start(backend, &["http_head_timeout=4"]);
                let mut c = https(&relay, &[b"http/1.1"]);
                c.send_raw(b"GET / HTTP/1.1\r\n");
                let start = Instant::now();
                // One header byte every half second: never a complete head.
                let mut closed_after = None;
                for _ in 0..30 {
                    std::thread::sleep(Duration::from_millis(500));
                    let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        c.send_raw(b"X");
                    }));
                    if sent.is_err() {
                        closed_after = Some(start.elapsed());
                        break;
                    }
                }
                let closed_after = closed_after.unwrap_or_else(|| {
                    // Writes may still succeed into the socket buffer: the read side tells.
                    assert!(c.closed(), "{backend:?}: still open after 15 s");
                    start.elapsed()
                });
                assert!(
                    closed_after >= Duration::from_millis(3500)
                        && closed_after < Duration::from_secs(12),
                    "{backend:?}: closed after {closed_after:?}"
                );
                // A well-behaved client is served meanwhile and after.
                let mut ok = https(&relay, &[b"http/1.1"]);
                assert_eq!(ok.http("GET", "/", "127.0.0.1", &[], b"").status, 200);
            })
        })
        .collect();
    for r in runs {
        r.join().unwrap();
    }
}

/// A WebSocket client on `/imap` or `/smtp` of the HTTPS port, reading the protocol's lines
/// from the payloads of binary messages.
struct WsLines {
    ws: tungstenite::WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
    buf: Vec<u8>,
}

impl WsLines {
    fn connect(relay: &Relay, path: &str) -> WsLines {
        use tungstenite::client::IntoClientRequest;
        let tcp = TcpStream::connect(relay.addr(Kind::Https)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut config = (*relay_testkit::tls::client_config()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let conn = rustls::ClientConnection::new(
            std::sync::Arc::new(config),
            "127.0.0.1".try_into().unwrap(),
        )
        .unwrap();
        let stream = rustls::StreamOwned::new(conn, tcp);
        let mut req = format!("wss://127.0.0.1:{}{path}", relay.port(Kind::Https))
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "binary".parse().unwrap());
        let (ws, resp) = tungstenite::client::client(req, stream).unwrap();
        assert_eq!(resp.status(), 101);
        assert_eq!(
            resp.headers().get("sec-websocket-protocol").unwrap(),
            "binary"
        );
        WsLines {
            ws,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, line: &str) {
        self.ws
            .send(tungstenite::Message::binary(
                format!("{line}\r\n").into_bytes(),
            ))
            .unwrap();
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_owned();
            }
            match self.ws.read().unwrap() {
                tungstenite::Message::Binary(b) => self.buf.extend_from_slice(&b),
                tungstenite::Message::Text(t) => self.buf.extend_from_slice(t.as_bytes()),
                _ => {}
            }
        }
    }

    fn until(&mut self, tag: &str) -> String {
        loop {
            let l = self.line();
            if l.starts_with(tag) {
                return l;
            }
        }
    }
}

#[test]
fn imap_and_submission_over_websocket() {
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        let (a, b) = (new_addr("wsa"), new_addr("wsb"));
        create_account(relay.store(), &a, 0);
        create_account(relay.store(), &b, 0);

        let mut imap = WsLines::connect(&relay, "/imap");
        assert!(imap.line().starts_with("* OK"), "{backend:?}");
        imap.send(&format!("a LOGIN \"{b}\" \"{PASSWORD}\""));
        assert!(imap.until("a ").starts_with("a OK"));
        imap.send("b SELECT INBOX");
        assert!(imap.until("b ").starts_with("b OK"));
        imap.send("c IDLE");
        assert!(imap.line().starts_with('+'));

        // Submission over the other path: the outer TLS counts, AUTH is offered at once.
        let mut smtp = WsLines::connect(&relay, "/smtp");
        assert!(smtp.line().starts_with("220"));
        smtp.send("EHLO client.test");
        let mut ehlo = Vec::new();
        loop {
            let l = smtp.line();
            let last = l.starts_with("250 ");
            ehlo.push(l);
            if last {
                break;
            }
        }
        assert!(ehlo.iter().any(|l| l.contains("AUTH")), "{ehlo:?}");
        assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")), "{ehlo:?}");
        smtp.send(&format!(
            "AUTH PLAIN {}",
            relay_testkit::plain_auth(&a, PASSWORD)
        ));
        assert!(smtp.line().starts_with("235"), "{backend:?}");
        smtp.send(&format!("MAIL FROM:<{a}>"));
        assert!(smtp.line().starts_with("250"));
        smtp.send(&format!("RCPT TO:<{b}>"));
        assert!(smtp.line().starts_with("250"));
        smtp.send("DATA");
        assert!(smtp.line().starts_with("354"));
        let msg = crate::harness::message("encrypted.eml.tmpl", &a, &b);
        let mut data = String::from_utf8(msg)
            .unwrap()
            .replace("\r\n", "\n")
            .replace('\n', "\r\n");
        if !data.ends_with("\r\n") {
            data.push_str("\r\n");
        }
        data.push('.');
        smtp.send(&data);
        let done = smtp.line();
        assert!(done.starts_with("250"), "{done}");

        // The IDLE session over WebSocket hears of it.
        assert_eq!(imap.line(), "* 1 EXISTS", "{backend:?}");
        imap.send("DONE");
        assert!(imap.until("c ").starts_with("c OK"));
    }
}

#[test]
fn websocket_paths_refuse_plain_requests() {
    for backend in backends() {
        let relay = Relay::start(backend, &[]);
        let mut c = https(&relay, &[b"http/1.1"]);
        let r = c.http("GET", "/imap", "127.0.0.1", &[], b"");
        assert_eq!(r.status, 426, "{backend:?}");
        assert_eq!(r.header("upgrade"), Some("websocket"));
        // Not on the plain HTTP port: redirected like everything there.
        let mut c = Client::plain(relay.addr(Kind::Http));
        let r = c.http(
            "GET",
            "/imap",
            "127.0.0.1",
            &["Upgrade: websocket", "Connection: Upgrade"],
            b"",
        );
        assert_eq!(r.status, 301);
    }
}
