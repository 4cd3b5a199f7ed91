//! Starts a real relay in-process on loopback ephemeral ports (real TLS, real store, real fsync)
//! and talks to it with a small blocking client. Every read has a deadline so a broken server
//! fails a test instead of hanging it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use relay::config::{Config, Mode, RawConfig};
use relay::server::{self, Backend, Kind, Running};

/// How long any single read may wait.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// The backends this machine can run: epoll always, io_uring when the kernel allows it.
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Epoll];
    match relay::io::uring::available() {
        Ok(()) => v.push(Backend::Uring),
        Err(e) => eprintln!("skipping io_uring backend: {e}"),
    }
    v
}

/// A free loopback port (the relay treats port 0 as "listener disabled").
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A relay running in this process.
pub struct Relay {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    pub overrides: Vec<String>,
}

impl Relay {
    /// Starts a dev relay on ephemeral ports with `overrides` (`KEY=VALUE`).
    pub fn start(backend: Backend, overrides: &[&str]) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let running = Self::boot(backend, dir.path(), &overrides);
        Relay {
            running: Some(running),
            dir,
            backend,
            overrides,
        }
    }

    fn boot(backend: Backend, dir: &std::path::Path, overrides: &[String]) -> Running {
        let mut raw = RawConfig::default();
        for k in [
            "smtp_port",
            "submission_port",
            "submissions_port",
            "imap_port",
            "imaps_port",
        ] {
            raw.set(&format!("{k}={}", free_port())).unwrap();
        }
        // Tests open many connections from 127.0.0.1; the per-source limits get their own test.
        raw.set("new_connections_burst=100000").unwrap();
        for o in overrides {
            raw.set(o).unwrap();
        }
        let config = Config::build(
            &raw,
            Mode::Dev {
                data_dir: dir.to_owned(),
            },
        )
        .unwrap();
        server::start(config, backend, 2).unwrap()
    }

    /// Stops and starts the relay again on the same data directory (new ports).
    pub fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
        }
        self.running = Some(Self::boot(self.backend, self.dir.path(), &self.overrides));
    }

    pub fn addr(&self, kind: Kind) -> SocketAddr {
        self.running
            .as_ref()
            .unwrap()
            .bound
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, a)| *a)
            .unwrap()
    }

    pub fn shared(&self) -> &Arc<relay::shared::Shared> {
        self.running.as_ref().unwrap().shared()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
        }
    }
}

/// A fresh address on the dev relay that satisfies the creation rules.
pub fn new_addr(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let local = format!("{tag}{n:06}{}", std::process::id() % 1000);
    format!("{}@[127.0.0.1]", &local[..9])
}

pub const PASSWORD: &str = "correct-horse-battery";

/// A test message from a template in `tests/it/data`, with `{from}`, `{to}`, `{id}` replaced.
pub fn message(template: &str, from: &str, to: &str) -> Vec<u8> {
    let path = format!("{}/tests/it/data/{template}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    use std::sync::atomic::{AtomicU32, Ordering};
    static ID: AtomicU32 = AtomicU32::new(0);
    text.replace("{from}", from)
        .replace("{to}", to)
        .replace("{id}", &ID.fetch_add(1, Ordering::Relaxed).to_string())
        .into_bytes()
}

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

fn tls_config() -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth(),
    )
}

fn tls_wrap(tcp: TcpStream) -> Stream {
    let conn =
        rustls::ClientConnection::new(tls_config(), "127.0.0.1".try_into().unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // Complete the handshake now so handshake errors show up here.
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).unwrap();
    }
    Stream::Tls(Box::new(s))
}

impl Client {
    pub fn plain(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        Client {
            reader: BufReader::new(Stream::Plain(tcp)),
        }
    }

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

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

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

pub fn plain_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

/// The relay under test uses a self-signed certificate; the client side trusts anything.
#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
