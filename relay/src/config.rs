//! Configuration: the reference's `chatmail.ini` `[params]` options with their defaults, plus the
//! relay's own keys (listen addresses, ports, data directory).
//!
//! Two phases, as ripgrep does with its flags: [`RawConfig`] is what was written (key → string),
//! [`Config`] is validated and typed. An invalid value is an error naming the key.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

/// The configuration after validation.
#[derive(Debug, Clone)]
pub struct Config {
    /// `mail_domain`: a DNS name, or an IPv4 address (addresses are then `user@[a.b.c.d]`).
    pub mail_domain: String,
    /// `max_user_send_per_minute` (GCRA rate per sender).
    pub max_user_send_per_minute: u32,
    /// `max_user_send_burst_size` (GCRA burst).
    pub max_user_send_burst_size: u32,
    /// `max_mailbox_size` in bytes.
    pub max_mailbox_size: u64,
    /// `max_mailbox_messages`: stored messages per account, all mailboxes together.
    pub max_mailbox_messages: u64,
    /// `max_message_size` in bytes.
    pub max_message_size: u64,
    /// `delete_mails_after` in days.
    pub delete_mails_after: u32,
    /// `delete_large_after` in days.
    pub delete_large_after: u32,
    /// `delete_inactive_users_after` in days.
    pub delete_inactive_users_after: u32,
    /// `username_min_length`.
    pub username_min_length: usize,
    /// `username_max_length`.
    pub username_max_length: usize,
    /// `password_min_length`.
    pub password_min_length: usize,
    /// `max_load_1m`: refuse new accounts above this 1-minute load average.
    pub max_load_1m: f64,
    /// `min_available_memory` in bytes.
    pub min_available_memory: u64,
    /// `min_free_disk_space` in bytes.
    pub min_free_disk_space: u64,
    /// `max_imap_connections`.
    pub max_imap_connections: u32,
    /// `max_smtp_connections` (per port; per client IP: a fifth of it).
    pub max_smtp_connections: u32,
    /// `new_limit_per_second` (default 2, at most 1000): requests a second one source may make
    /// to `/new` on average (the reference's nginx `limit_req`).
    pub new_limit_per_second: u32,
    /// `new_limit_burst` (default 5): requests one source may make to `/new` at once. Load
    /// benchmarks lift the limit with a burst no run exhausts (`tools/http-compare.sh`: 10^9).
    pub new_limit_burst: u32,
    /// `http_head_timeout` in seconds (default 20, as nginx's `client_header_timeout` is in
    /// spirit): an HTTP request head must arrive within it (also closes idle keep-alive
    /// connections and slowloris clients).
    pub http_head_timeout_secs: u64,
    /// `http_body_timeout` in seconds (default 60, the reference's): a request body must arrive
    /// within it, else `408`.
    pub http_body_timeout_secs: u64,
    /// `tls_external_cert_and_key`: certificate and key paths.
    pub tls_external_cert_and_key: Option<(PathBuf, PathBuf)>,
    /// Where the served certificate comes from (derived: chatmail.md §1.9).
    pub tls_mode: TlsMode,
    /// `disable_ipv6`.
    pub disable_ipv6: bool,
    /// `imap_compress`: offer COMPRESS=DEFLATE.
    pub imap_compress: bool,
    /// `privacy_mail` (METADATA `/shared/admin`).
    pub privacy_mail: String,
    /// `iroh_relay`: `None` = unset.
    pub iroh_relay: Option<String>,
    /// `notification_url`: the push notifier's base URL (POST `<url>/notify`); `None` turns
    /// push notifications off (the default of `relay dev`, whose users are not phones).
    pub notification_url: Option<String>,
    /// Relay's own: where the store and keys live.
    pub data_dir: PathBuf,
    /// Relay's own: listen addresses.
    pub listen: Vec<IpAddr>,
    /// Relay's own: ports.
    pub ports: Ports,
    /// Relay's own: file whose existence blocks account creation (`/etc/chatmail-nocreate`).
    pub nocreate_file: PathBuf,
    /// Relay's own `user` (default `chatmail-relay`): the user a `relay serve` started as root
    /// switches to once its ports are bound. `None` = keep whatever identity the relay was
    /// started with: always for `relay dev`, and for `user = root` (on purpose).
    pub user: Option<String>,
    /// Connection rate limiting (`ebpf_interfaces`, `max_new_connections_per_minute`,
    /// `new_connections_burst`, `max_imap_connections_per_source` (default
    /// `max_imap_connections / 5`); the SMTP per-source cap derives from `max_smtp_connections`).
    pub ratelimit: crate::ratelimit::RateLimitConfig,
    /// `dns_server`: `ip:port` of the DNS server to ask instead of the system's resolvers
    /// (tests, small deployments). `None` = the system configuration (`/etc/resolv.conf`).
    pub dns_server: Option<std::net::SocketAddr>,
    /// `dns_timeout` in seconds (default 10): how long one DNS query may take before it is
    /// tried again (`crate::dns::ATTEMPTS` tries); a lookup that runs out of tries is a
    /// temporary failure (SMTP `451`).
    pub dns_timeout_secs: u64,
    /// `dkim_selector` (default `opendkim`, the reference's, so an imported relay keeps its
    /// DNS record); the key is `<data_dir>/dkim/<selector>.private`.
    pub dkim_selector: String,
    /// `maximal_queue_lifetime` in seconds (default `2d`, Postfix's syntax: `s`, `m`, `h`, `d`,
    /// `w` suffixes, plain numbers are days): how long outbound mail is retried before it bounces.
    pub maximal_queue_lifetime_secs: u64,
    /// `www_folder`: a directory whose files override or add to the built-in web pages.
    pub www_folder: Option<PathBuf>,
    /// `acme_directory` (default Let's Encrypt's): the ACME server's directory URL.
    pub acme_directory: String,
    /// `acme_ca_file`: an extra CA certificate (PEM) to trust for the ACME server (tests with
    /// Pebble).
    pub acme_ca_file: Option<PathBuf>,
    /// `acme_email`: contact address given to the ACME server (empty = none).
    pub acme_email: String,
    /// `admin_socket`: the admin socket's path (default `<data_dir>/admin.sock`).
    pub admin_socket: PathBuf,
    /// `delivery_ca_file`: extra CA certificates (PEM) trusted, besides the system's, when
    /// outbound delivery verifies other servers (SMTP STARTTLS, HTTPS `/mxdeliv`) and the push
    /// notifier verifies `notification_url`; tests with a local CA.
    pub delivery_ca_file: Option<PathBuf>,
    /// TURN/STUN on UDP (`turn_port`, `turn_address`, `turn_external_address`,
    /// `turn_relay_ports` and the allocation caps), see [`crate::turn`].
    pub turn: crate::turn::TurnConfig,
    /// `metrics_address` (the reference's `mtail_address` is read as an alias): where the plain
    /// HTTP listener of `GET /metrics` (Prometheus text) listens; `None` (empty, the default)
    /// turns it off. A bare IP listens on [`METRICS_PORT`], the reference's mtail port.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// `log_client_ips` (default false): whether log lines name clients' IP addresses; when
    /// false they say [`crate::redact::HIDDEN`] instead.
    pub log_client_ips: bool,
    /// Every other option as written, for options not interpreted yet (kept so nothing is lost).
    pub extra: BTreeMap<String, String>,
}

/// Where the certificate comes from, as the reference decides it (chatmail.md §1.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// `tls_external_cert_and_key`: files another program maintains (reloaded when they change).
    External {
        /// The certificate chain (PEM).
        cert: PathBuf,
        /// The private key (PEM).
        key: PathBuf,
    },
    /// An IPv4 `mail_domain`, a `_`-prefixed one, or `relay dev`: a self-signed certificate.
    SelfSigned,
    /// Any other domain: certificates from the ACME server (`acme_directory`).
    Acme,
}

/// The public Delta Chat push notifier, the default of `notification_url`.
pub const DELTA_CHAT_NOTIFIER: &str = "https://notifications.delta.chat";

/// A notifier URL: `https://...`, or `http://` to a loopback address (a local stand-in);
/// returned without a trailing `/`.
fn check_notification_url(v: &str) -> Result<String, Error> {
    let bad = |why: &'static str| Error::invalid("notification_url", v, why);
    let uri: hyper::Uri = v.parse().map_err(|_| bad("a URL"))?;
    let host = uri.host().ok_or_else(|| bad("a URL with a host"))?;
    if uri.query().is_some() {
        return Err(bad("a URL without a query"));
    }
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") => {
            let h = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = h == "localhost" || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(bad("https://, or http:// to a loopback address only"));
            }
        }
        _ => return Err(bad("an https:// URL")),
    }
    Ok(v.trim_end_matches('/').to_owned())
}

/// The port of a `metrics_address` given as a bare IP: the reference's mtail port.
pub const METRICS_PORT: u16 = 3903;

/// Option names read as another option when that one is not set: (alias, option).
pub const ALIASES: &[(&str, &str)] = &[("mtail_address", "metrics_address")];

/// `metrics_address`: `ip:port`, or an IP for [`METRICS_PORT`]; empty is off.
fn metrics_address(p: &Parser<'_>) -> Result<Option<std::net::SocketAddr>, Error> {
    let (key, value) = match p.get("metrics_address") {
        Some(v) => ("metrics_address", v),
        // Read without asking: an alias is not an option of its own.
        None => match p.raw.values.get("mtail_address") {
            Some(v) => ("mtail_address", v.clone()),
            None => return Ok(None),
        },
    };
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<std::net::SocketAddr>()
        .or_else(|_| {
            v.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map(|ip| (ip, METRICS_PORT).into())
        })
        .map(Some)
        .map_err(|_| Error::invalid(key, v, "ip:port (or an IP for port 3903), or empty for off"))
}

/// Let's Encrypt's production ACME directory, the default of `acme_directory`.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Parses a Postfix time value (`maximal_queue_lifetime`): a number with an optional unit
/// `s`, `m`, `h`, `d` or `w`; without a unit, days (Postfix's default unit for this option).
pub fn parse_duration_secs(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&v[..i], v[i..].trim()),
        None => (v, "d"),
    };
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Listening ports; 0 disables a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// SMTP from other relays (STARTTLS): option `mx_port`.
    pub smtp: u16,
    /// Submission with STARTTLS: option `smtp_port` (formerly `submission_port`).
    pub submission: u16,
    /// Submission with implicit TLS: option `smtps_port` (formerly `submissions_port`).
    pub submissions: u16,
    /// IMAP with STARTTLS.
    pub imap: u16,
    /// IMAP with implicit TLS.
    pub imaps: u16,
    /// HTTPS, with IMAP and submission multiplexed by ALPN (`https_port`).
    pub https: u16,
    /// Plain HTTP: redirects to HTTPS and answers ACME HTTP-01 (`http_port`).
    pub http: u16,
}

impl Ports {
    /// The standard ports of a production relay.
    pub const STANDARD: Ports = Ports {
        smtp: 25,
        submission: 587,
        submissions: 465,
        imap: 143,
        imaps: 993,
        https: 443,
        http: 80,
    };
    /// The ports of `relay dev`.
    pub const DEV: Ports = Ports {
        smtp: 10025,
        submission: 10587,
        submissions: 10465,
        imap: 10143,
        imaps: 10993,
        https: 10443,
        http: 10080,
    };
}

impl Config {
    /// Whether `mail_domain` is an IPv4 address (IP-only relay).
    pub fn is_ip_domain(&self) -> bool {
        self.mail_domain.parse::<std::net::Ipv4Addr>().is_ok()
    }

    /// The domain part of addresses on this relay: `example.org` or `[1.2.3.4]`.
    pub fn address_domain(&self) -> String {
        if self.is_ip_domain() {
            format!("[{}]", self.mail_domain)
        } else {
            self.mail_domain.clone()
        }
    }

    /// The configuration of `relay dev` with no overrides: an IPv4-only relay for 127.0.0.1 on
    /// the dev ports, data in `data_dir`.
    pub fn dev(data_dir: PathBuf) -> Config {
        Config::build(&RawConfig::default(), Mode::Dev { data_dir })
            .expect("the built-in dev defaults should be valid")
    }

    /// Validates `raw` on top of the defaults of `mode`.
    ///
    /// # Errors
    /// The first invalid value, naming its key.
    pub fn build(raw: &RawConfig, mode: Mode) -> Result<Config, Error> {
        Config::build_reading(raw, mode).0
    }

    /// [`Config::build`], and the keys it asked for (tests hold them against [`OPTIONS`]).
    fn build_reading(raw: &RawConfig, mode: Mode) -> (Result<Config, Error>, BTreeSet<String>) {
        let p = Parser {
            raw,
            asked: Default::default(),
        };
        let config = Config::build_from(&p, mode);
        (config, p.asked.into_inner())
    }

    fn build_from(p: &Parser<'_>, mode: Mode) -> Result<Config, Error> {
        let raw = p.raw;
        let dev = matches!(mode, Mode::Dev { .. });
        let mail_domain = match (p.get("mail_domain"), dev) {
            (Some(d), _) => d.trim().to_ascii_lowercase(),
            (None, true) => "127.0.0.1".to_owned(),
            (None, false) => return Err(Error::missing("mail_domain")),
        };
        if mail_domain.is_empty()
            || mail_domain.contains(|c: char| c.is_whitespace() || c == '/' || c == '@')
        {
            return Err(Error::invalid(
                "mail_domain",
                &mail_domain,
                "a DNS name or an IPv4 address",
            ));
        }
        let default_data = match &mode {
            Mode::Dev { data_dir } => data_dir.clone(),
            Mode::Serve => PathBuf::from("/var/lib/chatmail-relay"),
        };
        let data_dir = p.path("data_dir")?.unwrap_or(default_data);
        let ports_default = if dev { Ports::DEV } else { Ports::STANDARD };
        let ports = port_options(p, ports_default)?;
        let disable_ipv6 = p.boolean("disable_ipv6")?.unwrap_or(dev);
        let listen = match p.get("listen") {
            Some(v) => v
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpAddr>()
                        .map_err(|_| Error::invalid("listen", &v, "comma-separated IP addresses"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None if dev => vec![IpAddr::from([127, 0, 0, 1])],
            None if disable_ipv6 => vec![IpAddr::from([0, 0, 0, 0])],
            None => vec![IpAddr::from([0, 0, 0, 0]), IpAddr::from([0u16; 8])],
        };
        if listen.is_empty() {
            return Err(Error::invalid("listen", "", "at least one IP address"));
        }
        let tls_external_cert_and_key = match p.get("tls_external_cert_and_key") {
            None => None,
            Some(v) if v.trim().is_empty() => None,
            Some(v) => {
                let parts: Vec<&str> = v.split_whitespace().collect();
                match parts.as_slice() {
                    [c, k] => Some((PathBuf::from(c), PathBuf::from(k))),
                    _ => {
                        return Err(Error::invalid(
                            "tls_external_cert_and_key",
                            &v,
                            "two paths: certificate and key",
                        ))
                    }
                }
            }
        };
        let tls_mode = match &tls_external_cert_and_key {
            Some((cert, key)) => TlsMode::External {
                cert: cert.clone(),
                key: key.clone(),
            },
            None if dev
                || mail_domain.starts_with('_')
                || mail_domain.parse::<std::net::Ipv4Addr>().is_ok() =>
            {
                TlsMode::SelfSigned
            }
            None => TlsMode::Acme,
        };
        let username_min_length = p.num("username_min_length")?.unwrap_or(9);
        let username_max_length = p.num("username_max_length")?.unwrap_or(9);
        if username_min_length > username_max_length || username_min_length == 0 {
            return Err(Error::invalid(
                "username_min_length",
                &username_min_length.to_string(),
                "a positive number not above username_max_length",
            ));
        }
        let nocreate_default = if dev {
            data_dir.join("nocreate")
        } else {
            PathBuf::from("/etc/chatmail-nocreate")
        };
        let user = match p.get("user").map(|u| u.trim().to_owned()) {
            Some(u)
                if u.is_empty()
                    || u.starts_with('-')
                    || u.contains(|c: char| c.is_whitespace() || c == ':' || c == '/') =>
            {
                return Err(Error::invalid(
                    "user",
                    &u,
                    "a user name (or `root` to keep running as root)",
                ))
            }
            Some(u) => u,
            None => DEFAULT_USER.to_owned(),
        };
        let user = (!dev && user != "root").then_some(user);
        let max_smtp_connections = positive(p, "max_smtp_connections", 1000)?;
        let max_imap_connections = positive(p, "max_imap_connections", 10_000)?;
        // Like SMTP's per-source share (a fifth); generous because of carrier-grade NAT.
        let max_imap_connections_per_source = positive(
            p,
            "max_imap_connections_per_source",
            (max_imap_connections / 5).max(1),
        )?;
        // The /new limiter counts whole milliseconds: one request a millisecond at most.
        let new_limit_per_second = positive(
            p,
            "new_limit_per_second",
            crate::http::limiter::NEW_PER_SECOND as u32, // 2
        )?;
        if new_limit_per_second > 1000 {
            return Err(Error::invalid(
                "new_limit_per_second",
                &new_limit_per_second.to_string(),
                "1 to 1000 (lift the limit with new_limit_burst)",
            ));
        }
        let ratelimit = crate::ratelimit::RateLimitConfig {
            ebpf_interfaces: p
                .get("ebpf_interfaces")
                .unwrap_or_default()
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            max_new_connections_per_minute: positive(
                p,
                "max_new_connections_per_minute",
                crate::ratelimit::DEFAULT_MAX_NEW_CONNECTIONS_PER_MINUTE,
            )?,
            new_connections_burst: positive(
                p,
                "new_connections_burst",
                crate::ratelimit::DEFAULT_NEW_CONNECTIONS_BURST,
            )?,
            max_smtp_connections,
            max_imap_connections_per_source,
            ports: [
                ports.smtp,
                ports.submission,
                ports.submissions,
                ports.imap,
                ports.imaps,
                ports.https,
                ports.http,
            ]
            .into_iter()
            .filter(|p| *p != 0)
            .collect(),
        };
        let dns_server = match p.get("dns_server").map(|v| v.trim().to_owned()) {
            None => None,
            Some(v) if v.is_empty() => None,
            Some(v) => Some(
                v.parse::<std::net::SocketAddr>()
                    .or_else(|_| v.parse::<IpAddr>().map(|ip| (ip, 53).into()))
                    .map_err(|_| {
                        Error::invalid("dns_server", &v, "ip:port (or an IP for port 53)")
                    })?,
            ),
        };
        let dns_timeout_secs = match p.num::<u64>("dns_timeout")? {
            None => crate::dns::DEFAULT_QUERY_TIMEOUT_SECS,
            Some(0) => return Err(Error::invalid("dns_timeout", "0", "seconds, at least 1")),
            Some(n) => n,
        };
        let dkim_selector = p
            .get("dkim_selector")
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| "opendkim".to_owned());
        if dkim_selector.is_empty()
            || !dkim_selector
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(Error::invalid(
                "dkim_selector",
                &dkim_selector,
                "letters, digits, `-`, `_` and `.`",
            ));
        }
        let maximal_queue_lifetime_secs = match p.get("maximal_queue_lifetime") {
            None => 2 * 86_400,
            Some(v) => parse_duration_secs(&v).filter(|s| *s > 0).ok_or_else(|| {
                Error::invalid(
                    "maximal_queue_lifetime",
                    &v,
                    "a time such as 2d, 36h or 90m",
                )
            })?,
        };
        let notification_url = match p.get("notification_url") {
            None if dev => None,
            None => Some(DELTA_CHAT_NOTIFIER.to_owned()),
            Some(v) if v.trim().is_empty() => None,
            Some(v) => Some(check_notification_url(v.trim())?),
        };
        let turn = turn_config(p, dev)?;
        let config = Config {
            metrics_address: metrics_address(p)?,
            log_client_ips: p.boolean("log_client_ips")?.unwrap_or(false),
            turn,
            notification_url,
            dns_server,
            dns_timeout_secs,
            dkim_selector,
            maximal_queue_lifetime_secs,
            www_folder: p.optional_path("www_folder"),
            acme_directory: p
                .get("acme_directory")
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| LETS_ENCRYPT_DIRECTORY.to_owned()),
            acme_ca_file: p.optional_path("acme_ca_file"),
            acme_email: p.get("acme_email").unwrap_or_default().trim().to_owned(),
            delivery_ca_file: p.optional_path("delivery_ca_file"),
            max_user_send_per_minute: positive(p, "max_user_send_per_minute", 60)?,
            max_user_send_burst_size: positive(p, "max_user_send_burst_size", 10)?,
            max_mailbox_size: p.size("max_mailbox_size")?.unwrap_or(500 * MIB),
            max_message_size: p.size("max_message_size")?.unwrap_or(31_457_280),
            max_mailbox_messages: u64::from(positive(p, "max_mailbox_messages", 100_000)?),
            delete_mails_after: p.num("delete_mails_after")?.unwrap_or(20),
            delete_large_after: p.num("delete_large_after")?.unwrap_or(7),
            delete_inactive_users_after: p.num("delete_inactive_users_after")?.unwrap_or(90),
            username_min_length,
            username_max_length,
            password_min_length: p.num("password_min_length")?.unwrap_or(9),
            // A dev relay runs beside builds and tests on a developer's machine, where the
            // reference's load guard (meant for a dedicated server) would refuse sign-ups.
            max_load_1m: p
                .float("max_load_1m")?
                .unwrap_or(if dev { 1000.0 } else { 5.0 }),
            min_available_memory: p.size("min_available_memory")?.unwrap_or(200 * MIB),
            min_free_disk_space: p.size("min_free_disk_space")?.unwrap_or(1024 * MIB),
            max_imap_connections,
            max_smtp_connections,
            new_limit_per_second,
            new_limit_burst: positive(
                p,
                "new_limit_burst",
                crate::http::limiter::NEW_BURST as u32, // 5
            )?,
            http_head_timeout_secs: positive(p, "http_head_timeout", 20)?.into(),
            http_body_timeout_secs: positive(p, "http_body_timeout", 60)?.into(),
            ratelimit,
            tls_external_cert_and_key,
            tls_mode,
            disable_ipv6,
            imap_compress: p.boolean("imap_compress")?.unwrap_or(false),
            privacy_mail: p.get("privacy_mail").unwrap_or_default().trim().to_owned(),
            iroh_relay: p.get("iroh_relay").map(|s| s.trim().to_owned()),
            nocreate_file: p.path("nocreate_file")?.unwrap_or(nocreate_default),
            admin_socket: p
                .optional_path("admin_socket")
                .unwrap_or_else(|| data_dir.join("admin.sock")),
            user,
            mail_domain,
            data_dir,
            listen,
            ports,
            extra: raw
                .values
                .iter()
                .filter(|(k, _)| !is_interpreted(k) && !is_alias(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        Ok(config)
    }
}

const MIB: u64 = 1024 * 1024;

/// The TURN options; `relay dev` serves on UDP 13478 instead of 3478.
fn turn_config(p: &Parser<'_>, dev: bool) -> Result<crate::turn::TurnConfig, Error> {
    use crate::turn::TurnConfig;
    let defaults = TurnConfig::default();
    let ips = |key: &str| -> Result<Vec<IpAddr>, Error> {
        let v = p.get(key).unwrap_or_default();
        v.split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpAddr>()
                    .map_err(|_| Error::invalid(key, &v, "comma-separated IP addresses"))
            })
            .collect()
    };
    let address = ips("turn_address")?;
    let external_address = match ips("turn_external_address")?.as_slice() {
        [] => None,
        [ip] if !ip.is_unspecified() && !ip.is_multicast() => Some(*ip),
        _ => {
            return Err(Error::invalid(
                "turn_external_address",
                &p.get("turn_external_address").unwrap_or_default(),
                "one IP address (the one clients reach the relay at)",
            ))
        }
    };
    if external_address.is_none() && address.iter().any(IpAddr::is_unspecified) {
        return Err(Error::invalid(
            "turn_address",
            &p.get("turn_address").unwrap_or_default(),
            "addresses of this machine (a wildcard needs turn_external_address, the address \
             announced to clients)",
        ));
    }
    let relay_ports = match p.get("turn_relay_ports") {
        None => defaults.relay_ports,
        Some(v) => parse_port_range(&v).ok_or_else(|| {
            Error::invalid(
                "turn_relay_ports",
                &v,
                "LOW-HIGH, two ports from 1 to 65535 with LOW not above HIGH",
            )
        })?,
    };
    let allocation_bandwidth = match p.size("turn_allocation_bandwidth")? {
        None => defaults.allocation_bandwidth,
        // Below one full-size datagram a second, nothing would ever pass.
        Some(n) if n < 1500 => {
            return Err(Error::invalid(
                "turn_allocation_bandwidth",
                &n.to_string(),
                "bytes a second, at least 1500 (K, M suffixes)",
            ))
        }
        Some(n) => n,
    };
    Ok(TurnConfig {
        port: p.num("turn_port")?.unwrap_or(if dev {
            crate::turn::DEV_PORT
        } else {
            crate::turn::PORT
        }),
        address,
        external_address,
        relay_ports,
        max_allocations_per_username: positive(
            p,
            "turn_max_allocations_per_username",
            defaults.max_allocations_per_username,
        )?,
        max_allocations_per_source: positive(
            p,
            "turn_max_allocations_per_source",
            defaults.max_allocations_per_source,
        )?,
        max_allocations: positive(p, "turn_max_allocations", defaults.max_allocations)?,
        allocation_bandwidth,
        required: !dev,
    })
}

/// `LOW-HIGH` (inclusive, both in 1..=65535, LOW <= HIGH).
pub fn parse_port_range(v: &str) -> Option<(u16, u16)> {
    let (low, high) = v.trim().split_once('-')?;
    let low: u16 = low.trim().parse().ok()?;
    let high: u16 = high.trim().parse().ok()?;
    (low >= 1 && low <= high).then_some((low, high))
}

/// Default of option `user`.
pub const DEFAULT_USER: &str = "chatmail-relay";

/// How an option's default is written in the template of `relay init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionDefault {
    /// No default: the template writes the value given to `relay init`.
    Required,
    /// The value `relay serve` applies when the option is absent, written as the option's value
    /// would be (`""`: empty). Uncommenting the line changes nothing.
    Value(&'static str),
    /// Absent means something no value says (derived from other options, or "unset" has its own
    /// meaning): the template shows an example value, commented out.
    Example(&'static str),
}

/// One option of `chatmail.ini` [`Config::build`] reads: the one list behind the template of
/// `relay init`, the unknown-key warnings and the README's table.
#[derive(Debug, Clone, Copy)]
pub struct OptionDoc {
    /// The key.
    pub name: &'static str,
    /// Its default.
    pub default: OptionDefault,
    /// What it does (comment lines of the template; `\n` separates lines).
    pub help: &'static str,
}

const fn opt(name: &'static str, default: OptionDefault, help: &'static str) -> OptionDoc {
    OptionDoc {
        name,
        default,
        help,
    }
}

use OptionDefault::{Example, Required, Value};

/// Every option the relay reads, in the template's order, with its `relay serve` default (a
/// test checks that [`Config::build`] reads exactly these and that the defaults written here are
/// the ones it applies).
pub const OPTIONS: &[OptionDoc] = &[
    opt(
        "mail_domain",
        Required,
        "The domain of the addresses (user@DOMAIN); its DNS records point here (`relay dns`).\n\
         An IPv4 address makes an IP-only relay (user@[1.2.3.4]); a domain starting with `_`\n\
         or an IP address gets a self-signed certificate, any other domain one from ACME.",
    ),
    // Sending and storage limits.
    opt(
        "max_user_send_per_minute",
        Value("60"),
        "Messages an account may send per minute, on average.",
    ),
    opt(
        "max_user_send_burst_size",
        Value("10"),
        "Messages an account may send at once before the per-minute rate applies.",
    ),
    opt(
        "max_message_size",
        Value("31457280"),
        "Largest message in bytes (SMTP SIZE).",
    ),
    opt(
        "max_mailbox_size",
        Value("500M"),
        "Storage per account (K, M, G suffixes).",
    ),
    opt(
        "max_mailbox_messages",
        Value("100000"),
        "Messages one account may store, all folders together (each costs the in-memory\n\
         index about 100 bytes whatever its size; over it: 552 5.2.2, NO [OVERQUOTA]).",
    ),
    // Accounts.
    opt(
        "username_min_length",
        Value("9"),
        "Shortest local part accepted when an account is created (at its first login).",
    ),
    opt(
        "username_max_length",
        Value("9"),
        "Longest local part accepted when an account is created; /new makes names this long.",
    ),
    opt(
        "password_min_length",
        Value("9"),
        "Shortest password accepted when an account is created; /new makes passwords 3 longer.",
    ),
    opt(
        "max_load_1m",
        Value("5"),
        "No new accounts while the 1-minute load average is above this.",
    ),
    opt(
        "min_available_memory",
        Value("200M"),
        "No new accounts while less memory than this is available.",
    ),
    opt(
        "min_free_disk_space",
        Value("1G"),
        "No new accounts while the data directory's file system has less free space than this.",
    ),
    opt(
        "nocreate_file",
        Value("/etc/chatmail-nocreate"),
        "While this file exists, no account is created.",
    ),
    // Retention.
    opt(
        "delete_mails_after",
        Value("20"),
        "Days after which any message is deleted.",
    ),
    opt(
        "delete_large_after",
        Value("7"),
        "Days after which messages over 200 kB that were seen are deleted.",
    ),
    opt(
        "delete_inactive_users_after",
        Value("90"),
        "Days without a login after which an account and its mail are deleted.",
    ),
    // Connections.
    opt(
        "max_imap_connections",
        Value("10000"),
        "Concurrent IMAP connections.",
    ),
    opt(
        "max_imap_connections_per_source",
        Value("2000"),
        "Concurrent IMAP connections from one IPv4 address or IPv6 /64\n\
         (default: a fifth of max_imap_connections).",
    ),
    opt(
        "max_smtp_connections",
        Value("1000"),
        "Concurrent SMTP connections per port; from one source, a fifth of it.",
    ),
    opt(
        "max_new_connections_per_minute",
        Value("600"),
        "New connections per minute from one source (after the burst).",
    ),
    opt(
        "new_connections_burst",
        Value("200"),
        "New connections one source may open at once.",
    ),
    opt(
        "ebpf_interfaces",
        Value(""),
        "Network interfaces to attach the XDP connection limiter to (comma-separated; builds\n\
         with feature `ebpf`). Empty: the same limit in the relay itself.",
    ),
    // Network.
    opt(
        "listen",
        Value("0.0.0.0, ::"),
        "Addresses to listen on, comma-separated (with disable_ipv6 the default is 0.0.0.0).",
    ),
    opt("disable_ipv6", Value("false"), "Listen on IPv4 only."),
    opt(
        "mx_port",
        Value("25"),
        "SMTP from other relays (STARTTLS). 0 disables a port.",
    ),
    opt(
        "smtp_port",
        Value("587"),
        "Submission with STARTTLS (formerly submission_port; smtp_port was port 25 then, so an\n\
         ini that sets smtp_port together with submission_port or submissions_port and no\n\
         mx_port is read the old way: its smtp_port is port 25, with a warning to rename it).",
    ),
    opt(
        "smtps_port",
        Value("465"),
        "Submission with implicit TLS (formerly submissions_port).",
    ),
    opt("imap_port", Value("143"), "IMAP with STARTTLS."),
    opt("imaps_port", Value("993"), "IMAP with implicit TLS."),
    opt(
        "https_port",
        Value("443"),
        "HTTPS: web pages, /new, autoconfig, MTA-STS; IMAP and submission by ALPN.",
    ),
    opt(
        "http_port",
        Value("80"),
        "Plain HTTP: redirects to HTTPS and answers ACME HTTP-01 challenges.",
    ),
    opt(
        "turn_port",
        Value("3478"),
        "TURN/STUN for calls (UDP; `relay dev`: 13478). 0 turns it off.",
    ),
    opt(
        "turn_address",
        Value(""),
        "Addresses TURN listens on, comma-separated. Empty: the `listen` addresses, a wildcard\n\
         there standing for every non-loopback, non-link-local address of the machine.",
    ),
    opt(
        "turn_external_address",
        Value(""),
        "Behind NAT: the public IP announced to TURN clients as their relayed address\n\
         (empty: the address TURN listens on).",
    ),
    opt(
        "turn_relay_ports",
        Value("49152-65535"),
        "UDP ports of the relayed addresses (LOW-HIGH), to open in a firewall.",
    ),
    opt(
        "turn_max_allocations_per_username",
        Value("20"),
        "TURN allocations one credential may hold at once (over it: 486).",
    ),
    opt(
        "turn_max_allocations_per_source",
        Value("100"),
        "TURN allocations one IPv4 address or IPv6 /64 may hold at once (over it: 486).",
    ),
    opt(
        "turn_max_allocations",
        Value("1000"),
        "TURN allocations in all (one UDP port each; over it: 508).",
    ),
    opt(
        "turn_allocation_bandwidth",
        Value("1M"),
        "Bytes a second one TURN allocation may relay, both ways together (K, M suffixes);\n\
         datagrams over it are dropped.",
    ),
    opt(
        "dns_server",
        Value(""),
        "ip:port of the one DNS server to ask instead of the system's (/etc/resolv.conf).",
    ),
    opt(
        "dns_timeout",
        Value("10"),
        "Seconds one DNS query may take before it is tried again (2 tries).",
    ),
    // Certificates.
    opt(
        "tls_external_cert_and_key",
        Value(""),
        "Certificate and key files another program maintains (two paths); reloaded when they\n\
         change. Empty: ACME (or self-signed, see mail_domain).",
    ),
    opt(
        "acme_directory",
        Value(LETS_ENCRYPT_DIRECTORY),
        "The ACME server's directory URL.",
    ),
    opt(
        "acme_ca_file",
        Value(""),
        "A CA certificate (PEM) to trust for the ACME server besides the system's (test CAs).",
    ),
    opt(
        "acme_email",
        Value(""),
        "Contact address given to the ACME server (expiry notices).",
    ),
    // Mail.
    opt(
        "imap_compress",
        Value("false"),
        "Offer IMAP COMPRESS=DEFLATE.",
    ),
    opt(
        "dkim_selector",
        Value("opendkim"),
        "DKIM selector; the key is <data_dir>/dkim/<selector>.private.",
    ),
    opt(
        "delivery_ca_file",
        Value(""),
        "CA certificates (PEM) trusted besides the system's when delivering to other servers\n\
         (SMTP STARTTLS, HTTPS /mxdeliv) and posting to notification_url; test CAs.",
    ),
    opt(
        "maximal_queue_lifetime",
        Value("2d"),
        "How long outbound mail is retried before it bounces (s, m, h, d, w).",
    ),
    opt(
        "iroh_relay",
        Example("https://iroh.example.org"),
        "An iroh relay URL to advertise to Delta Chat for realtime apps (IMAP METADATA\n\
         /shared/vendor/deltachat/irohrelay). Unset or empty: none is advertised and Delta Chat\n\
         uses its default relays (this relay does not serve one itself).",
    ),
    opt(
        "notification_url",
        Value(DELTA_CHAT_NOTIFIER),
        "Push notifier: each new message for an account with device tokens is POSTed as\n\
         <url>/notify with the token as body. Empty: no push notifications (the default of\n\
         `relay dev`). http:// is accepted for loopback addresses only.",
    ),
    opt(
        "privacy_mail",
        Value(""),
        "Contact address of the privacy policy (also IMAP METADATA /shared/admin).",
    ),
    opt(
        "www_folder",
        Value(""),
        "A directory whose files override or add to the built-in web pages; a directory that\n\
         does not exist turns the web pages off.",
    ),
    // Operations.
    opt(
        "metrics_address",
        Value(""),
        "Where GET /metrics (Prometheus text, plain HTTP) listens: ip:port, or an IP for port\n\
         3903. Keep it on loopback or a private network. Empty: off. The reference's\n\
         mtail_address is read as this option.",
    ),
    opt(
        "log_client_ips",
        Value("false"),
        "Write clients' IP addresses into log lines (for debugging); otherwise they read\n\
         `hidden`.",
    ),
    // The process.
    opt(
        "data_dir",
        Value("/var/lib/chatmail-relay"),
        "Store, keys and certificates (0700).",
    ),
    opt(
        "user",
        Value(DEFAULT_USER),
        "Started as root, the relay switches to this user once its ports are bound (`root`:\n\
         stay root).",
    ),
    opt(
        "admin_socket",
        Example("/var/lib/chatmail-relay/admin.sock"),
        "The admin socket of `relay admin` and the bots (default: <data_dir>/admin.sock).",
    ),
    opt(
        "new_limit_per_second",
        Value("2"),
        "Requests a second one source (IPv4 address, IPv6 /64) may make to /new (at most 1000;\n\
         over it 429), as the reference's nginx limit_req.",
    ),
    opt(
        "new_limit_burst",
        Value("5"),
        "Requests one source may make to /new at once. Load benchmarks lift the limit with a\n\
         burst no run exhausts.",
    ),
    opt(
        "http_head_timeout",
        Value("20"),
        "Seconds an HTTP request head may take to arrive (also how long an idle keep-alive\n\
         connection stays open).",
    ),
    opt(
        "http_body_timeout",
        Value("60"),
        "Seconds an HTTP request body may take to arrive (over it 408), as the reference's.",
    ),
];

/// Whether `key` is another name of an option [`Config::build`] reads.
fn is_alias(key: &str) -> bool {
    ALIASES.iter().any(|(alias, _)| *alias == key)
}

/// Whether [`Config::build`] reads `key`.
fn is_interpreted(key: &str) -> bool {
    OPTIONS.iter().any(|o| o.name == key)
}

/// Options of the reference that are accepted and kept (in [`Config::extra`]) but not acted on by
/// the relay itself, because they configure parts it replaces or parts that come later.
pub const KNOWN_OTHER: &[&str] = &[
    "imap_rawlog",
    "privacy_postal",
    "privacy_pdo",
    "privacy_supervisor",
    "filtermail_smtp_port",
    "filtermail_smtp_port_incoming",
    "filtermail_http_port_incoming",
    "filtermail_lmtp_port_transport",
    "postfix_reinject_port",
    "postfix_reinject_port_incoming",
    "turn_socket_path",
    "mailboxes_dir",
    "passdb_path",
    "filtermail_host",
    "postfix_host",
];

/// Options the reference removed; setting them has no effect.
const REMOVED: &[&str] = &["passthrough_senders", "passthrough_recipients"];

/// Old names of port options, still read (with a warning): `(old, new)`.
pub const RENAMED_PORTS: &[(&str, &str)] = &[
    ("submission_port", "smtp_port"),
    ("submissions_port", "smtps_port"),
];

/// Whether `raw` is an old-style ini for the port keys: it sets `smtp_port` together with an
/// old name (`submission_port` or `submissions_port`) and no `mx_port`. There `smtp_port` is
/// read as it was meant when it was written: port 25 (SMTP from other relays).
pub fn old_style_ports(raw: &RawConfig) -> bool {
    let has = |k: &str| raw.values.contains_key(k);
    has("smtp_port") && !has("mx_port") && RENAMED_PORTS.iter().any(|(old, _)| has(old))
}

/// The listener ports from the port keys (see [`port_warnings`] for the renames).
fn port_options(p: &Parser<'_>, default: Ports) -> Result<Ports, Error> {
    let old_style = old_style_ports(p.raw);
    // The old names are read straight from the raw values: they are not options of their own.
    let old = |key: &str| -> Result<Option<u16>, Error> {
        p.raw
            .values
            .get(key)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| Error::invalid(key, v, "a non-negative integer"))
            })
            .transpose()
    };
    let mx = p.num::<u16>("mx_port")?;
    let smtp = p.num::<u16>("smtp_port")?;
    let smtps = p.num::<u16>("smtps_port")?;
    let submission = old("submission_port")?;
    let submissions = old("submissions_port")?;
    let (mx, submission) = if old_style {
        (smtp, submission)
    } else {
        (mx, smtp.or(submission))
    };
    Ok(Ports {
        smtp: mx.unwrap_or(default.smtp),
        submission: submission.unwrap_or(default.submission),
        submissions: smtps.or(submissions).unwrap_or(default.submissions),
        imap: p.num("imap_port")?.unwrap_or(default.imap),
        imaps: p.num("imaps_port")?.unwrap_or(default.imaps),
        https: p.num("https_port")?.unwrap_or(default.https),
        http: p.num("http_port")?.unwrap_or(default.http),
    })
}

/// What to tell the operator about the port keys of `raw`: old names in use (read, to be
/// renamed), an old-style `smtp_port` read as port 25, and old names a new name overrides.
pub fn port_warnings(raw: &RawConfig) -> Vec<String> {
    let has = |k: &str| raw.values.contains_key(k);
    let mut out = Vec::new();
    if old_style_ports(raw) {
        out.push(
            "option smtp_port is read as port 25 (SMTP from other relays) because this file \
             also sets submission_port or submissions_port and no mx_port: rename smtp_port to \
             mx_port (smtp_port now means submission, port 587)"
                .to_owned(),
        );
    }
    for (old, new) in RENAMED_PORTS {
        if !has(old) {
            continue;
        }
        let overridden = if *new == "smtp_port" {
            has(new) && !old_style_ports(raw)
        } else {
            has(new)
        };
        if overridden {
            out.push(format!(
                "option {old} is ignored: {new} is set (remove {old})"
            ));
        } else {
            out.push(format!("option {old} is an old name: rename it to {new}"));
        }
    }
    out
}

/// Which defaults apply.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `relay dev`: IPv4-only relay for 127.0.0.1, dev ports, data in `data_dir`.
    Dev {
        /// Data directory (`--data`).
        data_dir: PathBuf,
    },
    /// `relay serve`: standard ports, `mail_domain` required.
    Serve,
}

/// A configuration as written: `[params]` of an ini file plus `--set` overrides.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    /// Key → value, as written (keys lowercase).
    pub values: BTreeMap<String, String>,
}

impl RawConfig {
    /// Parses the text of a `chatmail.ini`; only the `[params]` section is read.
    ///
    /// # Errors
    /// A syntax error, with its line.
    pub fn parse_ini(text: &str) -> Result<RawConfig, Error> {
        let mut values = BTreeMap::new();
        let mut in_params = false;
        let mut last_key: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if trimmed.starts_with('[') {
                let name = trimmed
                    .strip_prefix('[')
                    .and_then(|t| t.strip_suffix(']'))
                    .ok_or(Error::Syntax { line: n + 1 })?;
                in_params = name.trim() == "params";
                last_key = None;
                continue;
            }
            if !in_params {
                continue;
            }
            // A continuation line (indented) extends the previous value, as Python's
            // configparser reads it.
            if line.starts_with([' ', '\t']) {
                if let Some(k) = &last_key {
                    if let Some(v) = values.get_mut(k) {
                        let v: &mut String = v;
                        v.push('\n');
                        v.push_str(trimmed);
                        continue;
                    }
                }
            }
            let (k, v) = trimmed
                .split_once(['=', ':'])
                .ok_or(Error::Syntax { line: n + 1 })?;
            let k = k.trim().to_ascii_lowercase();
            values.insert(k.clone(), v.trim().to_owned());
            last_key = Some(k);
        }
        Ok(RawConfig { values })
    }

    /// Applies a `KEY=VALUE` override.
    ///
    /// # Errors
    /// If the text has no `=`.
    pub fn set(&mut self, kv: &str) -> Result<(), Error> {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Error::invalid("--set", kv, "KEY=VALUE"))?;
        self.values
            .insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        Ok(())
    }

    /// Keys that are neither read nor known: to be warned about, not fatal.
    pub fn unknown_keys(&self) -> Vec<&str> {
        self.values
            .keys()
            .map(String::as_str)
            .filter(|k| {
                !is_interpreted(k)
                    && !is_alias(k)
                    && !KNOWN_OTHER.contains(k)
                    && !RENAMED_PORTS.iter().any(|(old, _)| old == k)
            })
            .collect()
    }
}

/// A configuration error; its text names the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A value does not parse or is out of range.
    #[error("invalid value {value:?} for {key}: expected {expected}")]
    Invalid {
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// What is expected.
        expected: &'static str,
    },
    /// A required key is missing.
    #[error("missing required option {0}")]
    Missing(String),
    /// The ini file does not parse.
    #[error("syntax error on line {line}: expected `key = value` or `[section]`")]
    Syntax {
        /// 1-based line number.
        line: usize,
    },
}

impl Error {
    fn invalid(key: &str, value: &str, expected: &'static str) -> Error {
        Error::Invalid {
            key: key.to_owned(),
            value: value.to_owned(),
            expected,
        }
    }
    fn missing(key: &str) -> Error {
        Error::Missing(key.to_owned())
    }
}

/// Typed reads of raw values.
struct Parser<'a> {
    raw: &'a RawConfig,
    /// Every key asked for, so a test can hold them against [`OPTIONS`].
    asked: std::cell::RefCell<BTreeSet<String>>,
}

impl Parser<'_> {
    fn get(&self, key: &str) -> Option<String> {
        self.asked.borrow_mut().insert(key.to_owned());
        self.raw.values.get(key).cloned()
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, Error> {
        self.get(key)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| Error::invalid(key, &v, "a non-negative integer"))
            })
            .transpose()
    }

    fn float(&self, key: &str) -> Result<Option<f64>, Error> {
        self.get(key)
            .map(|v| match v.trim().parse::<f64>() {
                Ok(f) if f.is_finite() && f >= 0.0 => Ok(f),
                _ => Err(Error::invalid(key, &v, "a non-negative number")),
            })
            .transpose()
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, Error> {
        self.get(key)
            .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(true),
                "false" | "no" | "off" | "0" | "" => Ok(false),
                _ => Err(Error::invalid(key, &v, "true or false")),
            })
            .transpose()
    }

    fn path(&self, key: &str) -> Result<Option<PathBuf>, Error> {
        match self.get(key) {
            Some(v) if v.trim().is_empty() => Err(Error::invalid(key, &v, "a path")),
            Some(v) => Ok(Some(PathBuf::from(v.trim()))),
            None => Ok(None),
        }
    }

    /// A path where an empty value means unset (the reference's ini writes `www_folder =`).
    fn optional_path(&self, key: &str) -> Option<PathBuf> {
        self.get(key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }

    /// Sizes as the reference writes them: `500M`, `1G`, `200M`, `31457280`, optional `B`.
    fn size(&self, key: &str) -> Result<Option<u64>, Error> {
        self.get(key)
            .map(|v| {
                parse_size(&v)
                    .ok_or_else(|| Error::invalid(key, &v, "a size like 500M, 1G or 31457280"))
            })
            .transpose()
    }
}

fn positive(p: &Parser<'_>, key: &str, default: u32) -> Result<u32, Error> {
    match p.num::<u32>(key)? {
        Some(0) => Err(Error::invalid(key, "0", "a positive integer")),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

/// Parses `500M`, `1G`, `200MB`, `31457280`, `512K` (binary multiples, as Dovecot reads them).
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_uppercase();
    let v = v.strip_suffix('B').unwrap_or(&v);
    let (num, mult) = match v.chars().last()? {
        'K' => (&v[..v.len() - 1], 1024),
        'M' => (&v[..v.len() - 1], MIB),
        'G' => (&v[..v.len() - 1], 1024 * MIB),
        'T' => (&v[..v.len() - 1], 1024 * 1024 * MIB),
        _ => (v, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// Warns about keys that are unknown, removed or renamed (not fatal).
pub fn warn_unknown(raw: &RawConfig) {
    for w in port_warnings(raw) {
        tracing::warn!("{w}");
    }
    for k in raw.unknown_keys() {
        if REMOVED.contains(&k) {
            tracing::warn!("option {k} has no effect (removed in the reference relay 1.11)");
        } else {
            tracing::warn!("unknown option {k} ignored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_table_is_exactly_what_build_reads() {
        let mut raw = RawConfig::default();
        raw.set("mail_domain=chat.example.org").unwrap();
        for mode in [
            Mode::Serve,
            Mode::Dev {
                data_dir: "d".into(),
            },
        ] {
            let (config, asked) = Config::build_reading(&raw, mode);
            config.unwrap();
            let documented: BTreeSet<String> = OPTIONS.iter().map(|o| o.name.to_owned()).collect();
            assert_eq!(asked, documented, "read by build vs listed in OPTIONS");
        }
        assert_eq!(
            OPTIONS.len(),
            documented_once(),
            "an option is listed twice"
        );
        for k in KNOWN_OTHER
            .iter()
            .chain(REMOVED)
            .chain(RENAMED_PORTS.iter().map(|(old, _)| old))
        {
            assert!(!is_interpreted(k), "{k} is both read and ignored");
        }
    }

    fn ports_of(ini: &str) -> (Ports, Vec<String>, Vec<String>) {
        let raw = RawConfig::parse_ini(&format!("[params]\nmail_domain = x.org\n{ini}")).unwrap();
        let c = Config::build(&raw, Mode::Serve).unwrap();
        let unknown = raw.unknown_keys().into_iter().map(str::to_owned).collect();
        (c.ports, port_warnings(&raw), unknown)
    }

    #[test]
    fn port_keys_new_names() {
        let (p, warnings, unknown) = ports_of(
            "mx_port = 2525\nsmtp_port = 2587\nsmtps_port = 2465\nimap_port = 2143\n\
             imaps_port = 2993\n",
        );
        assert_eq!(
            (p.smtp, p.submission, p.submissions, p.imap, p.imaps),
            (2525, 2587, 2465, 2143, 2993)
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(unknown.is_empty(), "{unknown:?}");
        // smtp_port alone is the new meaning: submission.
        let (p, warnings, _) = ports_of("smtp_port = 2587\n");
        assert_eq!((p.smtp, p.submission), (25, 2587));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn port_keys_old_names_are_read_with_a_warning() {
        let (p, warnings, unknown) = ports_of("submission_port = 2587\nsubmissions_port = 2465\n");
        assert_eq!((p.smtp, p.submission, p.submissions), (25, 2587, 2465));
        assert_eq!(
            warnings,
            vec![
                "option submission_port is an old name: rename it to smtp_port",
                "option submissions_port is an old name: rename it to smtps_port",
            ]
        );
        assert!(unknown.is_empty(), "old names are not unknown: {unknown:?}");
        // A new name wins over its old one, and says so.
        let (p, warnings, _) = ports_of("smtps_port = 3465\nsubmissions_port = 2465\n");
        assert_eq!(p.submissions, 3465);
        assert_eq!(
            warnings,
            vec!["option submissions_port is ignored: smtps_port is set (remove submissions_port)"]
        );
        // A bad value under an old name names the old key.
        let raw =
            RawConfig::parse_ini("[params]\nmail_domain = x.org\nsubmission_port = x\n").unwrap();
        let e = Config::build(&raw, Mode::Serve).unwrap_err();
        assert!(e.to_string().contains("submission_port"), "{e}");
    }

    #[test]
    fn port_keys_old_style_smtp_port_is_port_25() {
        // Written before the rename: smtp_port with an old name and no mx_port means port 25.
        let (p, warnings, _) = ports_of("smtp_port = 2525\nsubmission_port = 2587\n");
        assert_eq!((p.smtp, p.submission, p.submissions), (2525, 2587, 465));
        assert!(
            warnings[0].starts_with("option smtp_port is read as port 25")
                && warnings[0].contains("rename smtp_port to mx_port"),
            "{warnings:?}"
        );
        assert_eq!(
            warnings[1],
            "option submission_port is an old name: rename it to smtp_port"
        );
        let (p, _, _) = ports_of("smtp_port = 2525\nsubmissions_port = 2465\n");
        assert_eq!((p.smtp, p.submission, p.submissions), (2525, 587, 2465));
        // With mx_port the file is new-style: smtp_port is submission, the old name yields.
        let (p, warnings, _) =
            ports_of("mx_port = 2525\nsmtp_port = 3587\nsubmission_port = 2587\n");
        assert_eq!((p.smtp, p.submission), (2525, 3587));
        assert_eq!(
            warnings,
            vec!["option submission_port is ignored: smtp_port is set (remove submission_port)"]
        );
    }

    fn documented_once() -> usize {
        OPTIONS
            .iter()
            .map(|o| o.name)
            .collect::<BTreeSet<_>>()
            .len()
    }

    #[test]
    fn reference_ini_with_defaults() {
        let raw = RawConfig::parse_ini(
            "[params]\nmail_domain = chat.example.org\n# comment\nmax_mailbox_size = 1G\n\
             passthrough_senders =\nfrobnicate = 3\n[other]\nmail_domain = ignored\n",
        )
        .unwrap();
        let c = Config::build(&raw, Mode::Serve).unwrap();
        assert_eq!(c.mail_domain, "chat.example.org");
        assert_eq!(c.address_domain(), "chat.example.org");
        assert_eq!(c.max_mailbox_size, 1024 * MIB);
        assert_eq!(c.max_message_size, 31_457_280);
        assert_eq!(c.max_user_send_per_minute, 60);
        assert_eq!(c.max_mailbox_messages, 100_000);
        assert_eq!(c.max_user_send_burst_size, 10);
        assert_eq!(c.username_min_length, 9);
        assert_eq!(c.password_min_length, 9);
        assert_eq!(c.ports, Ports::STANDARD);
        assert_eq!(c.nocreate_file, PathBuf::from("/etc/chatmail-nocreate"));
        assert_eq!(
            raw.unknown_keys(),
            vec!["frobnicate", "passthrough_senders"]
        );
    }

    #[test]
    fn invalid_values_name_their_key() {
        let mut raw = RawConfig::default();
        raw.set("mail_domain=x.org").unwrap();
        raw.set("max_mailbox_size=lots").unwrap();
        let e = Config::build(&raw, Mode::Serve).unwrap_err();
        assert!(e.to_string().contains("max_mailbox_size"), "{e}");
        let mut raw = RawConfig::default();
        raw.set("max_user_send_per_minute=0").unwrap();
        let e = Config::build(
            &raw,
            Mode::Dev {
                data_dir: "d".into(),
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("max_user_send_per_minute"), "{e}");
        assert_eq!(
            Config::build(&RawConfig::default(), Mode::Serve).unwrap_err(),
            Error::Missing("mail_domain".into())
        );
        assert_eq!(
            RawConfig::parse_ini("[params]\nnonsense\n").unwrap_err(),
            Error::Syntax { line: 2 }
        );
    }

    #[test]
    fn dev_defaults_and_overrides() {
        let c = Config::dev("d".into());
        assert_eq!(c.address_domain(), "[127.0.0.1]");
        assert!(c.is_ip_domain());
        assert_eq!(c.ports, Ports::DEV);
        let mut raw = RawConfig::default();
        raw.set("imap_port = 20143").unwrap();
        raw.set("max_user_send_burst_size=3").unwrap();
        let c = Config::build(
            &raw,
            Mode::Dev {
                data_dir: "d".into(),
            },
        )
        .unwrap();
        assert_eq!(c.ports.imap, 20143);
        assert_eq!(c.max_user_send_burst_size, 3);
    }

    #[test]
    fn http_timeouts_default_to_20_and_60_seconds() {
        let dev = || Mode::Dev {
            data_dir: "d".into(),
        };
        let c = Config::dev("d".into());
        assert_eq!(
            (c.http_head_timeout_secs, c.http_body_timeout_secs),
            (20, 60)
        );
        let mut raw = RawConfig::default();
        raw.set("http_head_timeout=4").unwrap();
        raw.set("http_body_timeout=3").unwrap();
        let c = Config::build(&raw, dev()).unwrap();
        assert_eq!((c.http_head_timeout_secs, c.http_body_timeout_secs), (4, 3));
        assert!(raw.unknown_keys().is_empty());
        for bad in ["http_head_timeout=0", "http_body_timeout=x"] {
            let mut raw = RawConfig::default();
            raw.set(bad).unwrap();
            let e = Config::build(&raw, dev()).unwrap_err();
            assert!(
                e.to_string().contains(bad.split('=').next().unwrap()),
                "{e}"
            );
        }
    }

    #[test]
    fn new_limit_defaults_to_the_reference_and_can_be_lifted() {
        let dev = || Mode::Dev {
            data_dir: "d".into(),
        };
        let c = Config::dev("d".into());
        assert_eq!((c.new_limit_per_second, c.new_limit_burst), (2, 5));
        let mut raw = RawConfig::default();
        raw.set("new_limit_per_second=1000").unwrap();
        raw.set("new_limit_burst=1000000000").unwrap();
        let c = Config::build(&raw, dev()).unwrap();
        assert_eq!(
            (c.new_limit_per_second, c.new_limit_burst),
            (1000, 1_000_000_000)
        );
        assert!(raw.unknown_keys().is_empty());
        for bad in ["new_limit_per_second=1001", "new_limit_burst=0"] {
            let mut raw = RawConfig::default();
            raw.set(bad).unwrap();
            let e = Config::build(&raw, dev()).unwrap_err();
            let key = bad.split('=').next().unwrap();
            assert!(e.to_string().contains(key), "{e}");
        }
    }

    #[test]
    fn user_defaults_to_chatmail_relay_for_serve_only() {
        let mut raw = RawConfig::default();
        raw.set("mail_domain=x.org").unwrap();
        let c = Config::build(&raw, Mode::Serve).unwrap();
        assert_eq!(c.user.as_deref(), Some(DEFAULT_USER));
        raw.set("user=root").unwrap();
        assert_eq!(Config::build(&raw, Mode::Serve).unwrap().user, None);
        raw.set("user=mailer").unwrap();
        assert_eq!(
            Config::build(&raw, Mode::Serve).unwrap().user.as_deref(),
            Some("mailer")
        );
        // `relay dev` never switches users.
        let dev = Mode::Dev {
            data_dir: "d".into(),
        };
        assert_eq!(Config::build(&raw, dev.clone()).unwrap().user, None);
        raw.set("user=a b").unwrap();
        let e = Config::build(&raw, dev).unwrap_err();
        assert!(e.to_string().contains("user"), "{e}");
    }

    #[test]
    fn imap_per_source_cap_defaults_to_a_fifth() {
        let dev = || Mode::Dev {
            data_dir: "d".into(),
        };
        let c = Config::dev("d".into());
        assert_eq!(c.ratelimit.max_imap_connections_per_source, 2_000);
        let mut raw = RawConfig::default();
        raw.set("max_imap_connections=50").unwrap();
        let c = Config::build(&raw, dev()).unwrap();
        assert_eq!(c.ratelimit.max_imap_connections_per_source, 10);
        raw.set("max_imap_connections=3").unwrap();
        let c = Config::build(&raw, dev()).unwrap();
        assert_eq!(c.ratelimit.max_imap_connections_per_source, 1);
        raw.set("max_imap_connections_per_source=7").unwrap();
        let c = Config::build(&raw, dev()).unwrap();
        assert_eq!(c.ratelimit.max_imap_connections_per_source, 7);
        assert!(raw.unknown_keys().is_empty());
        raw.set("max_imap_connections_per_source=0").unwrap();
        let e = Config::build(&raw, dev()).unwrap_err();
        assert!(
            e.to_string().contains("max_imap_connections_per_source"),
            "{e}"
        );
    }

    #[test]
    fn sizes_parse_like_the_reference() {
        assert_eq!(parse_size("500M"), Some(500 * MIB));
        assert_eq!(parse_size("500MB"), Some(500 * MIB));
        assert_eq!(parse_size("1G"), Some(1024 * MIB));
        assert_eq!(parse_size("31457280"), Some(31_457_280));
        assert_eq!(parse_size("12X"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn federation_and_web_options() {
        let raw = RawConfig::parse_ini(
            "[params]\nmail_domain = _r1.test\ndns_server = 127.0.0.1:5353\n\
             maximal_queue_lifetime = 36h\nwww_folder =\ndkim_selector = dkim1\n",
        )
        .unwrap();
        let c = Config::build(&raw, Mode::Serve).unwrap();
        assert_eq!(c.dns_server, Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(c.maximal_queue_lifetime_secs, 36 * 3600);
        assert_eq!(c.www_folder, None);
        assert_eq!(c.dkim_selector, "dkim1");
        assert_eq!((c.ports.https, c.ports.http), (443, 80));
        assert_eq!(c.acme_directory, LETS_ENCRYPT_DIRECTORY);
        let dev = Config::dev(PathBuf::from("/tmp/x"));
        assert_eq!((dev.ports.https, dev.ports.http), (10443, 10080));
        assert_eq!(dev.dkim_selector, "opendkim");
        assert_eq!(dev.maximal_queue_lifetime_secs, 2 * 86_400);
        assert_eq!(dev.dns_server, None);
        assert_eq!(parse_duration_secs("5"), Some(5 * 86_400));
        assert_eq!(parse_duration_secs("90m"), Some(5400));
        assert_eq!(parse_duration_secs("1w"), Some(7 * 86_400));
        assert_eq!(parse_duration_secs("2x"), None);
        assert_eq!(parse_duration_secs(""), None);
        let mut bad = raw.clone();
        bad.set("dns_server=localhost").unwrap();
        assert!(Config::build(&bad, Mode::Serve).is_err());
        let mut ip_only = raw.clone();
        ip_only.set("dns_server=127.0.0.53").unwrap();
        let c = Config::build(&ip_only, Mode::Serve).unwrap();
        assert_eq!(c.dns_server, Some("127.0.0.53:53".parse().unwrap()));
    }

    #[test]
    fn metrics_address_is_off_by_default_and_mtail_address_is_its_alias() {
        let build = |pairs: &[&str]| {
            let mut r = RawConfig::default();
            r.set("mail_domain=chat.example.org").unwrap();
            for kv in pairs {
                r.set(kv).unwrap();
            }
            Config::build(&r, Mode::Serve)
        };
        let c = build(&[]).unwrap();
        assert_eq!(c.metrics_address, None);
        assert!(!c.log_client_ips);
        let addr = |pairs: &[&str]| build(pairs).unwrap().metrics_address.map(|a| a.to_string());
        assert_eq!(addr(&["metrics_address="]), None);
        assert_eq!(
            addr(&["metrics_address=127.0.0.1:9090"]).as_deref(),
            Some("127.0.0.1:9090")
        );
        assert_eq!(
            addr(&["metrics_address=127.0.0.1"]).as_deref(),
            Some("127.0.0.1:3903")
        );
        assert_eq!(
            addr(&["metrics_address=::1"]).as_deref(),
            Some("[::1]:3903")
        );
        // The reference's key, and the relay's own winning over it.
        assert_eq!(
            addr(&["mtail_address=10.0.0.2"]).as_deref(),
            Some("10.0.0.2:3903")
        );
        assert_eq!(
            addr(&["mtail_address=10.0.0.2", "metrics_address=127.0.0.1:9100"]).as_deref(),
            Some("127.0.0.1:9100")
        );
        let e = build(&["mtail_address=nowhere"]).unwrap_err().to_string();
        assert!(e.contains("mtail_address"), "{e}");
        let e = build(&["metrics_address=1.2.3.4:99999"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics_address"), "{e}");
        let mut r = RawConfig::default();
        r.set("mtail_address=127.0.0.1").unwrap();
        assert!(r.unknown_keys().is_empty(), "{:?}", r.unknown_keys());
        assert!(build(&["log_client_ips=true"]).unwrap().log_client_ips);
    }

    #[test]
    fn notification_url_defaults_and_checks() {
        let raw = RawConfig::parse_ini("[params]\nmail_domain = x.org\n").unwrap();
        let c = Config::build(&raw, Mode::Serve).unwrap();
        assert_eq!(c.notification_url.as_deref(), Some(DELTA_CHAT_NOTIFIER));
        assert_eq!(Config::dev(PathBuf::from("/tmp/x")).notification_url, None);
        for (v, want) in [
            ("", None),
            ("https://push.example/", Some("https://push.example")),
            ("http://127.0.0.1:9000", Some("http://127.0.0.1:9000")),
            ("http://[::1]:9000/base", Some("http://[::1]:9000/base")),
            ("http://localhost:1", Some("http://localhost:1")),
        ] {
            let mut r = raw.clone();
            r.set(&format!("notification_url={v}")).unwrap();
            let c = Config::build(&r, Mode::Serve).unwrap();
            assert_eq!(c.notification_url.as_deref(), want, "{v}");
        }
        for bad in [
            "http://push.example",
            "http://10.0.0.1",
            "ftp://x",
            "notaurl",
            "https://x/?q=1",
        ] {
            let mut r = raw.clone();
            r.set(&format!("notification_url={bad}")).unwrap();
            let e = Config::build(&r, Mode::Serve).unwrap_err().to_string();
            assert!(e.contains("notification_url"), "{bad}: {e}");
        }
    }

    #[test]
    fn turn_options_defaults_and_overrides() {
        let mut raw = RawConfig::default();
        raw.set("mail_domain=chat.example.org").unwrap();
        let c = Config::build(&raw, Mode::Serve).unwrap();
        assert_eq!(c.turn, crate::turn::TurnConfig::default());
        assert_eq!(c.turn.port, 3478);
        assert_eq!(c.turn.relay_ports, (49152, 65535));
        assert_eq!(c.turn.external_address, None);
        assert!(c.turn.address.is_empty() && c.turn.required);
        let dev = Config::dev("d".into());
        assert_eq!(dev.turn.port, 13478);
        assert!(
            !dev.turn.required,
            "a dev relay runs on without TURN if 13478 is taken"
        );
        for kv in [
            "turn_port=0",
            "turn_address=10.0.0.5, 2001:db8::5",
            "turn_external_address=203.0.113.7",
            "turn_relay_ports=40000-40099",
            "turn_max_allocations_per_username=3",
            "turn_max_allocations_per_source=7",
            "turn_max_allocations=50",
            "turn_allocation_bandwidth=256K",
        ] {
            raw.set(kv).unwrap();
        }
        assert!(raw.unknown_keys().is_empty());
        let c = Config::build(&raw, Mode::Serve).unwrap();
        let t = c.turn;
        assert_eq!(t.port, 0);
        assert_eq!(
            t.address,
            [
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "2001:db8::5".parse().unwrap()
            ]
        );
        assert_eq!(t.external_address, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(t.relay_ports, (40000, 40099));
        assert_eq!(
            (
                t.max_allocations_per_username,
                t.max_allocations_per_source,
                t.max_allocations
            ),
            (3, 7, 50)
        );
        assert_eq!(t.allocation_bandwidth, 256 * 1024);
        // A wildcard listening address is fine once the announced address is given.
        raw.set("turn_address=0.0.0.0").unwrap();
        assert!(Config::build(&raw, Mode::Serve).is_ok());
    }

    #[test]
    fn bad_turn_values_are_errors_naming_their_key() {
        for (kv, key) in [
            ("turn_port=65536", "turn_port"),
            ("turn_port=udp", "turn_port"),
            ("turn_address=turn.example.org", "turn_address"),
            ("turn_address=0.0.0.0", "turn_address"),
            (
                "turn_external_address=1.2.3.4, 5.6.7.8",
                "turn_external_address",
            ),
            ("turn_external_address=0.0.0.0", "turn_external_address"),
            (
                "turn_external_address=nat.example.org",
                "turn_external_address",
            ),
            ("turn_relay_ports=50000", "turn_relay_ports"),
            ("turn_relay_ports=60000-50000", "turn_relay_ports"),
            ("turn_relay_ports=0-100", "turn_relay_ports"),
            ("turn_relay_ports=50000-70000", "turn_relay_ports"),
            (
                "turn_max_allocations_per_username=0",
                "turn_max_allocations_per_username",
            ),
            ("turn_max_allocations=-1", "turn_max_allocations"),
            (
                "turn_max_allocations_per_source=0",
                "turn_max_allocations_per_source",
            ),
            ("turn_allocation_bandwidth=100", "turn_allocation_bandwidth"),
            (
                "turn_allocation_bandwidth=fast",
                "turn_allocation_bandwidth",
            ),
        ] {
            let mut raw = RawConfig::default();
            raw.set("mail_domain=chat.example.org").unwrap();
            raw.set(kv).unwrap();
            let e = Config::build(&raw, Mode::Serve).unwrap_err();
            assert!(
                matches!(&e, Error::Invalid { key: k, .. } if k == key),
                "{kv}: {e}"
            );
        }
        assert_eq!(parse_port_range(" 3-3 "), Some((3, 3)));
        assert_eq!(parse_port_range("1-65535"), Some((1, 65535)));
        assert_eq!(parse_port_range("-5"), None);
    }

    #[test]
    fn delivery_ca_file_is_an_optional_path() {
        let mut raw = RawConfig::default();
        let dev = Config::build(
            &raw,
            Mode::Dev {
                data_dir: PathBuf::from("/tmp/x"),
            },
        )
        .unwrap();
        assert_eq!(dev.delivery_ca_file, None);
        assert!(dev.extra.is_empty(), "an interpreted key: {:?}", dev.extra);
        raw.set("delivery_ca_file=/etc/relay/test-ca.pem").unwrap();
        let c = Config::build(
            &raw,
            Mode::Dev {
                data_dir: PathBuf::from("/tmp/x"),
            },
        )
        .unwrap();
        assert_eq!(
            c.delivery_ca_file,
            Some(PathBuf::from("/etc/relay/test-ca.pem"))
        );
        assert!(!c.extra.contains_key("delivery_ca_file"));
    }
}
