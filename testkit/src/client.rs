//! A blocking line-oriented client for SMTP and IMAP, plain or TLS, with a read deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long any single read may wait.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// The connection under a [`Client`]: plain TCP, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A blocking line-oriented client with optional TLS.
pub struct Client {
    reader: BufReader<Stream>,
}

fn tls_wrap(tcp: TcpStream) -> Stream {
    tls_wrap_with(tcp, crate::tls::client_config())
}

fn tls_wrap_with(tcp: TcpStream, config: std::sync::Arc<rustls::ClientConfig>) -> Stream {
    let conn = rustls::ClientConnection::new(config, "127.0.0.1".try_into().unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // Complete the handshake now so handshake errors show up here.
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).unwrap();
    }
    Stream::Tls(Box::new(s))
}

impl Client {
    /// Connects without TLS.
    pub fn plain(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        Client {
            reader: BufReader::new(Stream::Plain(tcp)),
        }
    }

    /// Connects with TLS from the first byte (ports 465, 993), accepting the self-signed certificate.
    pub fn tls(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        Client {
            reader: BufReader::new(tls_wrap(tcp)),
        }
    }

    /// TLS from the first byte over a TCP connection the caller made (e.g. bound to a chosen
    /// source address), accepting the self-signed certificate.
    pub fn tls_over(tcp: TcpStream) -> Client {
        tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        Client {
            reader: BufReader::new(tls_wrap(tcp)),
        }
    }

    /// Connects with TLS offering the ALPN protocols `alpn` (the HTTPS port picks IMAP,
    /// submission or HTTP by them); the negotiated one is [`Client::alpn`].
    pub fn tls_alpn(addr: SocketAddr, alpn: &[&[u8]]) -> Client {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut config = (*crate::tls::client_config()).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Client {
            reader: BufReader::new(tls_wrap_with(tcp, std::sync::Arc::new(config))),
        }
    }

    /// The ALPN protocol the server chose (TLS connections).
    pub fn alpn(&self) -> Option<Vec<u8>> {
        match self.reader.get_ref() {
            Stream::Tls(s) => s.conn.alpn_protocol().map(<[u8]>::to_vec),
            Stream::Plain(_) => None,
        }
    }

    /// Sends an HTTP/1.1 request (`Host` and, with a body, `Content-Length` added; `headers` as
    /// `Name: value` lines) and reads the response.
    pub fn http(
        &mut self,
        method: &str,
        path: &str,
        host: &str,
        headers: &[&str],
        body: &[u8],
    ) -> HttpResponse {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut raw = req.into_bytes();
        raw.extend_from_slice(body);
        self.send_raw(&raw);
        self.http_response(method == "HEAD")
    }

    /// Reads one HTTP/1.1 response (a body by `Content-Length` or chunked; none for `HEAD`).
    pub fn http_response(&mut self, head: bool) -> HttpResponse {
        let status_line = self.line();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let l = self.line();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let mut body = Vec::new();
        if head {
        } else if let Some(len) = get("content-length") {
            body.resize(len.parse().unwrap(), 0);
            self.reader.read_exact(&mut body).unwrap();
        } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let size = usize::from_str_radix(self.line().trim(), 16).unwrap();
                let mut chunk = vec![0; size];
                self.reader.read_exact(&mut chunk).unwrap();
                let _ = self.line();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk);
            }
        }
        HttpResponse {
            status,
            headers,
            body,
        }
    }

    /// Switches a plaintext connection to TLS (after the server said yes to STARTTLS).
    pub fn upgrade(self) -> Client {
        assert!(
            self.reader.buffer().is_empty(),
            "server sent bytes after its STARTTLS reply"
        );
        let Stream::Plain(tcp) = self.reader.into_inner() else {
            panic!("already TLS");
        };
        Client {
            reader: BufReader::new(tls_wrap(tcp)),
        }
    }

    /// Sends `line` and CRLF.
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    /// Sends `data` as it is.
    pub fn send_raw(&mut self, data: &[u8]) {
        let s = self.reader.get_mut();
        s.write_all(data).unwrap();
        s.flush().unwrap();
    }

    /// One line without CRLF; panics on timeout or EOF.
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let n = self.reader.read_until(b'\n', &mut buf).unwrap();
        assert!(n > 0, "connection closed by the server");
        String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_string()
    }

    /// Whether the server closed the connection (EOF or reset) within the read timeout.
    pub fn closed(&mut self) -> bool {
        let mut buf = Vec::new();
        matches!(self.reader.read_until(b'\n', &mut buf), Ok(0) | Err(_))
    }

    /// An SMTP reply: `(code, all lines)`.
    pub fn reply(&mut self) -> (u16, Vec<String>) {
        let mut lines = Vec::new();
        loop {
            let l = self.line();
            let done = l.as_bytes().get(3) != Some(&b'-');
            lines.push(l);
            if done {
                break;
            }
        }
        let code = lines[0][..3].parse().unwrap();
        (code, lines)
    }

    /// Sends an SMTP command and returns the reply code and text.
    pub fn smtp(&mut self, cmd: &str) -> (u16, String) {
        self.send(cmd);
        let (code, lines) = self.reply();
        (code, lines.join("\n"))
    }

    /// Sends a tagged IMAP command; returns the untagged lines and the tagged status line.
    pub fn imap(&mut self, tag: &str, cmd: &str) -> (Vec<String>, String) {
        self.send(&format!("{tag} {cmd}"));
        self.until_tag(tag)
    }

    /// Reads until the line tagged `tag`; returns the untagged lines and that line.
    pub fn until_tag(&mut self, tag: &str) -> (Vec<String>, String) {
        let mut untagged = Vec::new();
        loop {
            let l = self.line();
            if l.starts_with(&format!("{tag} ")) {
                return (untagged, l);
            }
            untagged.push(l);
        }
    }

    /// SMTP login over an established TLS connection (EHLO + AUTH PLAIN); asserts success.
    pub fn smtp_login(&mut self, addr: &str, password: &str) {
        let (code, _) = self.smtp("EHLO client.test");
        assert_eq!(code, 250);
        let (code, text) = self.smtp(&format!("AUTH PLAIN {}", plain_auth(addr, password)));
        assert_eq!(code, 235, "{text}");
    }

    /// Submits one message; returns the final reply after DATA.
    pub fn submit(&mut self, from: &str, to: &[&str], body: &[u8]) -> (u16, String) {
        let (code, text) = self.smtp(&format!("MAIL FROM:<{from}>"));
        if code != 250 {
            return (code, text);
        }
        for rcpt in to {
            let (code, text) = self.smtp(&format!("RCPT TO:<{rcpt}>"));
            if code != 250 {
                return (code, text);
            }
        }
        let (code, text) = self.smtp("DATA");
        if code != 354 {
            return (code, text);
        }
        let mut data = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                data.push(b'.');
            }
            data.extend_from_slice(line);
        }
        if !data.ends_with(b"\r\n") {
            data.extend_from_slice(b"\r\n");
        }
        data.extend_from_slice(b".\r\n");
        self.send_raw(&data);
        let (code, lines) = self.reply();
        (code, lines.join("\n"))
    }
}

/// An HTTP response as [`Client::http`] read it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header fields, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The `AUTH PLAIN` argument for `user` and `password` (base64 of `\0user\0password`).
pub fn plain_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}
