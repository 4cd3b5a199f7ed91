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
    let conn =
        rustls::ClientConnection::new(crate::tls::client_config(), "127.0.0.1".try_into().unwrap())
            .unwrap();
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

/// The `AUTH PLAIN` argument for `user` and `password` (base64 of `\0user\0password`).
pub fn plain_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}
