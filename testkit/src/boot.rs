//! A relay running in this process, on free loopback ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use relay::config::{Config, Mode, RawConfig};
use relay::server::{self, Backend, Kind, Running};
use relay::shared::Shared;
use relay::store::Store;

use crate::{free_ports, free_udp_port};

/// The backends this machine can run: epoll always, io_uring when the kernel allows it (the
/// reason is printed when it does not).
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Epoll];
    match relay::io::uring::available() {
        Ok(()) => v.push(Backend::Uring),
        Err(e) => eprintln!("skipping io_uring backend: {e}"),
    }
    v
}

/// The port keys of the listeners, in the order ports are given to them.
const PORT_KEYS: [&str; 7] = [
    "mx_port",
    "smtp_port",
    "smtps_port",
    "imap_port",
    "imaps_port",
    "https_port",
    "http_port",
];

/// Settings every test relay starts with (overrides come after them and win):
/// tests open many connections from 127.0.0.1 (the per-source limits get their own tests), and
/// the test machine is busy (the load guard must not refuse new accounts).
const TEST_DEFAULTS: [&str; 2] = ["new_connections_burst=100000", "max_load_1m=1000"];

/// How to start a [`Relay`]; from [`Relay::builder`].
#[derive(Debug, Clone)]
pub struct Builder {
    backend: Backend,
    overrides: Vec<String>,
    data_dir: Option<PathBuf>,
    same_ports: bool,
    admin_socket: Option<PathBuf>,
}

impl Builder {
    /// Adds a `KEY=VALUE` configuration override (as `relay dev --set`).
    pub fn set(mut self, key_value: &str) -> Builder {
        self.overrides.push(key_value.to_owned());
        self
    }

    /// Keeps the store in `dir` (default: a temporary directory removed with the relay).
    pub fn data_dir(mut self, dir: &Path) -> Builder {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// Serves `domain` (an IPv4 address for an IP-literal relay, or a name) on `ip` with every
    /// listener on its standard port (25, 587, 465, 143, 993, 443, 80), as relays on the
    /// internet do: other relays deliver to it on ports 25 and 443. Give each relay its own
    /// [`crate::loopback_ip`]. Ports below 1024 need root.
    pub fn standard_ports(mut self, ip: std::net::IpAddr, domain: &str) -> Builder {
        for kv in [
            format!("listen={ip}"),
            format!("mail_domain={domain}"),
            "mx_port=25".into(),
            "smtp_port=587".into(),
            "smtps_port=465".into(),
            "imap_port=143".into(),
            "imaps_port=993".into(),
            "https_port=443".into(),
            "http_port=80".into(),
        ] {
            self.overrides.push(kv);
        }
        self
    }

    /// Listens on the same ports again after [`Relay::restart`] (default: new free ports), so
    /// that clients of the first run reconnect to the second.
    pub fn same_ports_on_restart(mut self) -> Builder {
        self.same_ports = true;
        self
    }

    /// Also serves the admin protocol on `path` while running (for operator tools and bots).
    pub fn admin_socket(mut self, path: &Path) -> Builder {
        self.admin_socket = Some(path.to_owned());
        self
    }

    /// Starts the relay (two worker threads).
    pub fn start(self) -> Relay {
        let (tmp, data_dir) = match &self.data_dir {
            Some(d) => (None, d.clone()),
            None => {
                let tmp = tempfile::tempdir().unwrap();
                let d = tmp.path().to_owned();
                (Some(tmp), d)
            }
        };
        let ports = self.same_ports.then(|| free_ports(PORT_KEYS.len()));
        let turn_port = self.same_ports.then(free_udp_port);
        let mut relay = Relay {
            running: None,
            admin: None,
            data_dir,
            ports,
            turn_port,
            booted: false,
            builder: self,
            _tmp: tmp,
        };
        relay.boot();
        relay
    }
}

/// A relay running in this process; stopped when dropped.
pub struct Relay {
    running: Option<Running>,
    admin: Option<relay::admin::Handle>,
    data_dir: PathBuf,
    ports: Option<Vec<u16>>,
    turn_port: Option<u16>,
    /// Whether it has started once (a restart keeps its ports).
    booted: bool,
    builder: Builder,
    _tmp: Option<tempfile::TempDir>,
}

impl Relay {
    /// How to start a relay on `backend`, for settings beyond [`Relay::start`]'s.
    pub fn builder(backend: Backend) -> Builder {
        Builder {
            backend,
            overrides: Vec::new(),
            data_dir: None,
            same_ports: false,
            admin_socket: None,
        }
    }

    /// Starts a dev relay on free ports over a temporary store, with `overrides` (`KEY=VALUE`).
    pub fn start(backend: Backend, overrides: &[&str]) -> Relay {
        overrides
            .iter()
            .fold(Relay::builder(backend), |b, o| b.set(o))
            .start()
    }

    /// Starts the relay again after [`Relay::stop`], on the same data directory.
    ///
    /// # Panics
    /// If it is running.
    pub fn boot(&mut self) {
        assert!(self.running.is_none(), "the relay is running");
        // `free_ports` picks ports that were free a moment ago; another process (tests run
        // beside each other) may take one before the relay binds it. The first start then
        // picks again; a restart keeps its ports, as clients expect.
        let mut attempts = 0;
        let running = loop {
            let config = self.config();
            match server::start(config, self.builder.backend, 2) {
                Ok(running) => break running,
                Err(e) if !self.booted && attempts < 5 && format!("{e:#}").contains("in use") => {
                    attempts += 1;
                    if self.ports.is_some() {
                        self.ports = Some(free_ports(PORT_KEYS.len()));
                        self.turn_port = Some(free_udp_port());
                    }
                }
                Err(e) => panic!("starting the relay: {e:#}"),
            }
        };
        self.booted = true;
        if let Some(path) = &self.builder.admin_socket {
            self.admin = Some(
                relay::admin::spawn(running.shared().clone(), running.store().clone(), path)
                    .unwrap(),
            );
        }
        self.running = Some(running);
    }

    /// The configuration of the next boot: the ports (the fixed ones, or free ones picked
    /// now), the test defaults, then the builder's overrides.
    fn config(&self) -> Config {
        let mut raw = RawConfig::default();
        let ports = self
            .ports
            .clone()
            .unwrap_or_else(|| free_ports(PORT_KEYS.len()));
        for (k, p) in PORT_KEYS.iter().zip(ports) {
            raw.set(&format!("{k}={p}")).unwrap();
        }
        // TURN is UDP: a free UDP port of its own (an override of turn_port wins).
        let turn_port = self.turn_port.unwrap_or_else(free_udp_port);
        raw.set(&format!("turn_port={turn_port}")).unwrap();
        for o in TEST_DEFAULTS
            .iter()
            .copied()
            .chain(self.builder.overrides.iter().map(String::as_str))
        {
            raw.set(o).unwrap();
        }
        let mode = Mode::Dev {
            data_dir: self.data_dir.clone(),
        };
        Config::build(&raw, mode).unwrap()
    }

    /// Stops the relay (its admin socket first); a no-op if it is not running.
    pub fn stop(&mut self) {
        self.admin.take();
        if let Some(r) = self.running.take() {
            r.shutdown();
        }
    }

    /// Stops and starts the relay again on the same data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.boot();
    }

    fn running(&self) -> &Running {
        self.running.as_ref().expect("the relay is not running")
    }

    /// The loopback address of the listener of `kind`.
    pub fn addr(&self, kind: Kind) -> SocketAddr {
        self.running()
            .bound
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, a)| *a)
            .unwrap()
    }

    /// Where `GET /metrics` is served (`None` without option `metrics_address`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.running().metrics_addr()
    }

    /// The UDP address TURN/STUN listens on.
    ///
    /// # Panics
    /// If TURN is off.
    pub fn turn_addr(&self) -> SocketAddr {
        *self
            .running()
            .turn_addrs()
            .first()
            .expect("TURN is off (turn_port=0)")
    }

    /// The port of the listener of `kind`.
    pub fn port(&self, kind: Kind) -> u16 {
        self.addr(kind).port()
    }

    /// The relay's shared state (store, configuration).
    pub fn shared(&self) -> &Arc<Shared> {
        self.running().shared()
    }

    /// The certificate its TLS listeners serve (tests swap it as a renewal would).
    pub fn certs(&self) -> &Arc<relay::tls::CertStore> {
        self.running().certs()
    }

    /// The relay's store, for helpers such as [`create_account`](crate::create_account).
    pub fn store(&self) -> &Store {
        self.running().store()
    }

    /// The backend it runs on.
    pub fn backend(&self) -> Backend {
        self.builder.backend
    }

    /// Where its store lives.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}
