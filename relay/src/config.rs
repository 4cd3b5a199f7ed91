//! Configuration: the reference's `chatmail.ini` `[params]` options with their defaults, plus the
//! relay's own keys (listen addresses, ports, data directory).
//!
//! Two phases, as ripgrep does with its flags: [`RawConfig`] is what was written (key → string),
//! [`Config`] is validated and typed. An invalid value is an error naming the key.

use std::collections::BTreeMap;
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
    /// `tls_external_cert_and_key`: certificate and key paths.
    pub tls_external_cert_and_key: Option<(PathBuf, PathBuf)>,
    /// `disable_ipv6`.
    pub disable_ipv6: bool,
    /// `imap_compress`: offer COMPRESS=DEFLATE.
    pub imap_compress: bool,
    /// `privacy_mail` (METADATA `/shared/admin`).
    pub privacy_mail: String,
    /// `iroh_relay`: `None` = unset.
    pub iroh_relay: Option<String>,
    /// Relay's own: where the store and keys live.
    pub data_dir: PathBuf,
    /// Relay's own: listen addresses.
    pub listen: Vec<IpAddr>,
    /// Relay's own: ports.
    pub ports: Ports,
    /// Relay's own: file whose existence blocks account creation (`/etc/chatmail-nocreate`).
    pub nocreate_file: PathBuf,
    /// Every other option as written, for options not interpreted yet (kept so nothing is lost).
    pub extra: BTreeMap<String, String>,
}

/// Listening ports; 0 disables a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// SMTP from other relays (STARTTLS).
    pub smtp: u16,
    /// Submission with STARTTLS.
    pub submission: u16,
    /// Submission with implicit TLS.
    pub submissions: u16,
    /// IMAP with STARTTLS.
    pub imap: u16,
    /// IMAP with implicit TLS.
    pub imaps: u16,
}

impl Ports {
    /// The standard ports of a production relay.
    pub const STANDARD: Ports = Ports {
        smtp: 25,
        submission: 587,
        submissions: 465,
        imap: 143,
        imaps: 993,
    };
    /// The ports of `relay dev`.
    pub const DEV: Ports = Ports {
        smtp: 10025,
        submission: 10587,
        submissions: 10465,
        imap: 10143,
        imaps: 10993,
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

    /// The configuration of `relay dev`: IPv4-only relay for 127.0.0.1 on the dev ports.
    pub fn dev(data_dir: PathBuf) -> Config {
        Config {
            mail_domain: "127.0.0.1".into(),
            max_user_send_per_minute: 60,
            max_user_send_burst_size: 10,
            max_mailbox_size: 500 * 1024 * 1024,
            max_message_size: 31_457_280,
            delete_mails_after: 20,
            delete_large_after: 7,
            delete_inactive_users_after: 90,
            username_min_length: 9,
            username_max_length: 9,
            password_min_length: 9,
            max_load_1m: 5.0,
            min_available_memory: 200 * 1024 * 1024,
            min_free_disk_space: 1024 * 1024 * 1024,
            max_imap_connections: 10_000,
            max_smtp_connections: 1000,
            tls_external_cert_and_key: None,
            disable_ipv6: true,
            imap_compress: false,
            privacy_mail: String::new(),
            iroh_relay: None,
            nocreate_file: data_dir.join("nocreate"),
            data_dir,
            listen: vec![IpAddr::from([127, 0, 0, 1])],
            ports: Ports::DEV,
            extra: BTreeMap::new(),
        }
    }
}
