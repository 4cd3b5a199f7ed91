//! Pebble, Let's Encrypt's test ACME server (Debian package `pebble`), on loopback ports: its
//! HTTPS directory has a certificate from a test CA made here ([`Pebble::ca_file`], what the
//! relay's `acme_ca_file` names). Stopped (by its PID) when dropped.
//!
//! Pebble validates HTTP-01 by connecting to the name's address on `http_port` (its config's
//! `httpPort`), resolving names through `dns_server`; with `always_valid` it skips validation
//! (`PEBBLE_VA_ALWAYS_VALID=1`). Random sleeps and nonce rejections are off so runs are quick
//! and repeatable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_ports;

/// Where the Debian package puts it.
const PEBBLE: &str = "/usr/bin/pebble";

/// How to start [`Pebble`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The port HTTP-01 validation connects to (`httpPort`).
    pub http_port: u16,
    /// DNS server Pebble resolves names with (`-dnsserver`).
    pub dns_server: Option<SocketAddr>,
    /// Every challenge passes without a validation request (`PEBBLE_VA_ALWAYS_VALID=1`).
    pub always_valid: bool,
    /// Lifetime of issued certificates in seconds (`certificateValidityPeriod`; Pebble's default
    /// is about five years).
    pub validity_secs: Option<u64>,
}

/// A running Pebble.
pub struct Pebble {
    child: Child,
    dir: tempfile::TempDir,
    /// The directory URL (`acme_directory`).
    pub directory: String,
    /// The CA of the directory's HTTPS certificate (`acme_ca_file`).
    pub ca_file: PathBuf,
}

impl Pebble {
    /// Starts Pebble, or returns `None` (printing why) when it is not installed.
    pub fn start(options: &Options) -> Option<Pebble> {
        if !Path::new(PEBBLE).exists() {
            eprintln!("skipping: {PEBBLE} is missing (apt-get install pebble)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, cert_pem, key_pem) = test_ca_and_leaf();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), key_pem).unwrap();
        let ports = free_ports(2);
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{}", ports[0]),
            "managementListenAddress": format!("127.0.0.1:{}", ports[1]),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": options.http_port,
            "tlsPort": 0,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(v) = options.validity_secs {
            config["pebble"]["certificateValidityPeriod"] = v.into();
        }
        let config_path = dir.path().join("pebble-config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("pebble.log")).unwrap();
        let mut cmd = Command::new(PEBBLE);
        cmd.arg("-config").arg(&config_path);
        if let Some(dns) = options.dns_server {
            cmd.arg("-dnsserver").arg(dns.to_string());
        }
        cmd.env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if options.always_valid {
            cmd.env("PEBBLE_VA_ALWAYS_VALID", "1");
        }
        let child = cmd.spawn().unwrap();
        let pebble = Pebble {
            child,
            dir,
            directory: format!("https://127.0.0.1:{}/dir", ports[0]),
            ca_file,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", ports[0])).is_err() {
            assert!(
                Instant::now() < deadline,
                "pebble did not start:\n{}",
                pebble.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(pebble)
    }

    /// What Pebble logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA and a certificate it signed for `127.0.0.1` and `localhost`:
/// `(ca_pem, cert_pem, key_pem)`. Also for other HTTPS stand-ins of the tests.
pub fn test_ca_and_leaf() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "relay test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}
