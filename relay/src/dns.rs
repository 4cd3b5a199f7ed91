//! The process's one DNS resolver: hickory (through mail-auth, whose DKIM verification and MX
//! lookups use it), configured from the system (`/etc/resolv.conf`) or, with option
//! `dns_server`, a single given server (tests run a real DNS server on loopback; small
//! deployments can name their local resolver).
//!
//! Bounds: every query times out after option `dns_timeout` (default
//! [`DEFAULT_QUERY_TIMEOUT_SECS`]) and is tried [`ATTEMPTS`] times per server; hickory's answer
//! cache holds at most [`CACHE_ENTRIES`] names. A lookup that fails for
//! any reason other than an authoritative "no such name / no such record" is a *temporary*
//! failure for the callers (SMTP `451`, queue retry), never a rejection.

use std::time::Duration;

use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::MessageAuthenticator;

use crate::config::Config;
use crate::zone;

/// Default per-query timeout in seconds (option `dns_timeout`). The reference waits up to 60 s
/// for DKIM keys; a session waiting that long holds its connection, so we give up sooner and
/// answer `451` (the sender retries).
pub const DEFAULT_QUERY_TIMEOUT_SECS: u64 = 10;
/// Tries per name server.
pub const ATTEMPTS: usize = 2;
/// Names kept in the resolver's answer cache at most.
pub const CACHE_ENTRIES: u64 = 4096;

/// The resolver `config` asks for: the `dns_server` if set, else the system's configuration.
/// A system without a readable `resolv.conf` gets a resolver without servers (every lookup is a
/// temporary failure, logged), so the relay still starts and serves local mail.
pub fn resolver(config: &Config) -> MessageAuthenticator {
    let (resolver_config, mut opts) = match config.dns_server {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            (
                ResolverConfig::from_parts(None, Vec::new(), vec![server]),
                ResolverOpts::default(),
            )
        }
        None => match mail_auth::hickory_resolver::system_conf::read_system_conf() {
            Ok(parts) => parts,
            Err(e) => {
                tracing::warn!("no system DNS configuration ({e}): remote lookups will fail");
                (
                    ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
                    ResolverOpts::default(),
                )
            }
        },
    };
    opts.timeout = Duration::from_secs(config.dns_timeout_secs);
    opts.attempts = ATTEMPTS;
    opts.cache_size = CACHE_ENTRIES;
    // Names are fully qualified mail domains: never try search suffixes.
    opts.ndots = 0;
    match MessageAuthenticator::new(resolver_config, opts) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("DNS resolver not usable ({e}): remote lookups will fail");
            MessageAuthenticator::new(
                ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
                ResolverOpts::default(),
            )
            .expect("a resolver without servers builds")
        }
    }
}

/// The answers at `name` for `kind`, in the form [`zone::verdict`] compares: addresses and names
/// as text, TXT strings joined, MX/SRV/CAA in presentation form. No record of the type (or no
/// such name) is an empty list.
///
/// # Errors
/// A lookup that failed otherwise (timeout, refused, server failure), as text.
pub async fn answers(
    resolver: &mail_auth::hickory_resolver::TokioResolver,
    name: &str,
    kind: zone::Kind,
) -> Result<Vec<String>, String> {
    use mail_auth::hickory_resolver::proto::rr::{RData, RecordType};
    use zone::Kind;
    let types: &[RecordType] = match kind {
        Kind::A => &[RecordType::A],
        Kind::Aaaa => &[RecordType::AAAA],
        Kind::Address => &[RecordType::A, RecordType::AAAA],
        Kind::Mx => &[RecordType::MX],
        Kind::Txt => &[RecordType::TXT],
        Kind::Cname => &[RecordType::CNAME],
        Kind::Srv => &[RecordType::SRV],
        Kind::Caa => &[RecordType::CAA],
    };
    let mut out = Vec::new();
    for t in types {
        let lookup = match resolver.lookup(name, *t).await {
            Ok(l) => l,
            Err(e) if e.is_no_records_found() => continue,
            Err(e) => return Err(e.to_string()),
        };
        for r in lookup.answers() {
            // A CNAME on the way to the answer is not one of the answers.
            let text = match (&r.data, *t) {
                (RData::A(a), RecordType::A) => a.0.to_string(),
                (RData::AAAA(a), RecordType::AAAA) => a.0.to_string(),
                (RData::MX(mx), RecordType::MX) => format!("{} {}", mx.preference, mx.exchange),
                (RData::TXT(txt), RecordType::TXT) => txt
                    .txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s))
                    .collect(),
                (RData::CNAME(c), RecordType::CNAME) => c.0.to_string(),
                (RData::SRV(srv), RecordType::SRV) => format!(
                    "{} {} {} {}",
                    srv.priority, srv.weight, srv.port, srv.target
                ),
                (RData::CAA(caa), RecordType::CAA) => caa.to_string(),
                _ => continue,
            };
            out.push(text);
        }
    }
    Ok(out)
}

/// One checked record: what a lookup found and how it compares.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The record asked for.
    pub record: zone::Record,
    /// The comparison, or why the lookup failed.
    pub verdict: Result<zone::Verdict, String>,
}

/// Looks every record of `records` up through the relay's resolver (option `dns_server`, else
/// the system's) and compares the answers.
pub async fn check_zone(config: &Config, records: &[zone::Record]) -> Vec<Checked> {
    let resolver = resolver(config);
    let mut out = Vec::new();
    for record in records {
        let verdict = answers(resolver.resolver(), &record.name, record.kind)
            .await
            .map(|found| zone::verdict(record, &found));
        out.push(Checked {
            record: record.clone(),
            verdict,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_server_option_sends_queries_to_that_server() {
        // A UDP socket on loopback stands for the server: the query must arrive there.
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut config = Config::dev(std::path::PathBuf::from("/nonexistent"));
        config.dns_server = Some(sock.local_addr().unwrap());
        let r = resolver(&config);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let lookup = std::thread::spawn(move || {
            rt.block_on(async {
                let _ = tokio::time::timeout(
                    Duration::from_secs(3),
                    r.resolver().mx_lookup("_r1.test."),
                )
                .await;
            })
        });
        let mut buf = [0u8; 512];
        let (n, _) = sock
            .recv_from(&mut buf)
            .expect("the query reaches dns_server");
        // The question section names the domain (labels "_r1" "test").
        assert!(n > 12);
        assert!(
            buf[12..n].windows(4).any(|w| w == b"\x03_r1"),
            "{:?}",
            &buf[..n]
        );
        lookup.join().unwrap();
    }
}
