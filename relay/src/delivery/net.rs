//! TCP connections to a host's addresses and DNS lookups through the process's resolver.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mail_auth::common::cache::NoCache;
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::{DnsError, MessageAuthenticator, RecordSet, MX};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::outbound::mx::MxAnswer;

/// Addresses tried per host at most (Postfix `smtp_mx_address_limit` is 5 for all hosts).
pub const MAX_ADDRS_PER_HOST: usize = 4;
/// Delay before the next address is tried while the previous connect is still pending
/// (RFC 8305 §5 recommends 250 ms).
pub const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Connects to the first of `addrs` (on `port`) that answers: addresses are tried in order, the
/// next one started [`CONNECTION_ATTEMPT_DELAY`] after the previous or as soon as it failed,
/// the first to connect wins (Happy Eyeballs, RFC 8305), all within `limit`.
///
/// # Errors
/// The last error (or the timeout), as text.
pub async fn connect_any(
    addrs: &[IpAddr],
    port: u16,
    limit: Duration,
) -> Result<TcpStream, String> {
    if addrs.is_empty() {
        return Err("no address".into());
    }
    let deadline = tokio::time::Instant::now() + limit;
    let mut pending = JoinSet::new();
    let mut next = 0;
    let mut last_err = String::new();
    loop {
        if pending.is_empty() {
            let Some(&ip) = addrs.get(next) else {
                return Err(last_err);
            };
            let addr = SocketAddr::new(ip, port);
            pending.spawn(async move { (addr, TcpStream::connect(addr).await) });
            next += 1;
        }
        tokio::select! {
            joined = pending.join_next() => match joined {
                Some(Ok((_, Ok(stream)))) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Some(Ok((addr, Err(e)))) => last_err = format!("{addr}: {e}"),
                Some(Err(e)) => last_err = e.to_string(),
                None => {}
            },
            () = tokio::time::sleep(CONNECTION_ATTEMPT_DELAY), if next < addrs.len() => {
                let addr = SocketAddr::new(addrs[next], port);
                pending.spawn(async move { (addr, TcpStream::connect(addr).await) });
                next += 1;
            }
            () = tokio::time::sleep_until(deadline) => {
                let mut e = format!("timed out after {} ms", limit.as_millis());
                if !last_err.is_empty() {
                    e.push_str(&format!(" ({last_err})"));
                }
                return Err(e);
            }
        }
    }
}

/// The MX answer for `domain`, as [`crate::outbound::mx::hosts`] takes it.
pub async fn mx(dns: &MessageAuthenticator, domain: &str) -> MxAnswer {
    let fqdn = format!("{}.", domain.trim_end_matches('.'));
    match dns
        .mx_lookup(fqdn, None::<&NoCache<Box<str>, RecordSet<MX>>>)
        .await
    {
        Ok(set) => {
            let records: Vec<(u16, String)> = set
                .rrset
                .iter()
                .flat_map(|mx| mx.exchanges.iter().map(|e| (mx.preference, e.to_string())))
                .collect();
            if records.is_empty() {
                MxAnswer::NoRecords
            } else {
                MxAnswer::Records(records)
            }
        }
        Err(mail_auth::Error::Dns(DnsError::RecordNotFound(ResponseCode::NXDomain))) => {
            MxAnswer::NxDomain
        }
        Err(mail_auth::Error::Dns(DnsError::RecordNotFound(_))) => MxAnswer::NoRecords,
        Err(e) => MxAnswer::Failed(e.to_string()),
    }
}

/// The addresses of `host`: AAAA and A looked up together, interleaved IPv6 first (RFC 8305
/// §4), at most [`MAX_ADDRS_PER_HOST`]. `ipv6 = false` skips AAAA.
///
/// # Errors
/// No address at all, with the lookup errors.
pub async fn addresses(
    dns: &MessageAuthenticator,
    host: &str,
    ipv6: bool,
) -> Result<Vec<IpAddr>, String> {
    let fqdn = format!("{}.", host.trim_end_matches('.'));
    let v6 = async {
        if ipv6 {
            Some(dns.ipv6_lookup_raw(&fqdn).await)
        } else {
            None
        }
    };
    let (v4, v6) = tokio::join!(dns.ipv4_lookup_raw(&fqdn), v6);
    let mut errors = Vec::new();
    let v4: Vec<IpAddr> = match v4 {
        Ok(e) => e.entry.iter().copied().map(IpAddr::V4).collect(),
        Err(e) => {
            errors.push(describe(&e));
            Vec::new()
        }
    };
    let v6: Vec<IpAddr> = match v6 {
        Some(Ok(e)) => e.entry.iter().copied().map(IpAddr::V6).collect(),
        Some(Err(e)) => {
            errors.push(describe(&e));
            Vec::new()
        }
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for i in 0..v4.len().max(v6.len()) {
        out.extend(v6.get(i));
        out.extend(v4.get(i));
    }
    out.truncate(MAX_ADDRS_PER_HOST);
    if out.is_empty() {
        errors.dedup();
        let why = if errors.is_empty() {
            "no address records".to_owned()
        } else {
            errors.join("; ")
        };
        return Err(format!("{host}: {why}"));
    }
    Ok(out)
}

fn describe(e: &mail_auth::Error) -> String {
    match e {
        mail_auth::Error::Dns(DnsError::RecordNotFound(ResponseCode::NXDomain)) => {
            "host not found".into()
        }
        mail_auth::Error::Dns(DnsError::RecordNotFound(_)) => "no address records".into(),
        other => other.to_string(),
    }
}
