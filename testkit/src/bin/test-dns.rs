//! `test-dns`: the test DNS server ([`relay_testkit::dns::DnsServer`]) as a process, for test
//! suites that are not written in Rust (the Delta Chat end-to-end tests start relays as
//! processes and point them at it with `--set dns_server=ADDR`).
//!
//! ```text
//! test-dns [COMMAND]...        commands as arguments, then more on standard input, one a line
//!
//!   add NAME A 127.0.0.2       add a record (types A, AAAA, MX PREF HOST, TXT TEXT..., CNAME NAME)
//!   dkim DOMAIN DATA_DIR       publish the DKIM key of the relay for DOMAIN whose data directory
//!                              is DATA_DIR (`opendkim._domainkey.DOMAIN`; the key is created
//!                              there, as the relay does at its first start, when missing)
//!   remove NAME                remove every record of NAME (it answers NXDOMAIN then)
//!   count NAME                 (standard input only) answer how many queries asked for NAME
//! ```
//!
//! It serves UDP and TCP on one free port of 127.0.0.1 and prints `127.0.0.1:PORT` as its first
//! line once the argument commands are in the zone; each standard-input command is answered with
//! a line once applied: `ok` (`count`: the number) or `error: ...`. It stops at the end of
//! standard input (so it never outlives the test process that holds the pipe) or on a signal.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: a test server process

use std::io::{BufRead as _, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::ExitCode;

use relay_testkit::dns::{DnsServer, Record};

/// The DKIM selector the relay uses by default (option `dkim_selector`).
const SELECTOR: &str = "opendkim";

fn main() -> ExitCode {
    let dns = DnsServer::start();
    for arg in std::env::args().skip(1) {
        if let Err(e) = apply(&dns, &arg) {
            let _ = writeln!(std::io::stderr(), "test-dns: {arg:?}: {e}");
            return ExitCode::from(2);
        }
    }
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{}", dns.addr())
        .and_then(|()| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let answer = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["count", name] => dns.queries_for(name).to_string(),
            _ => match apply(&dns, &line) {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("error: {e}"),
            },
        };
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// Applies one command to the zone.
fn apply(dns: &DnsServer, command: &str) -> Result<(), String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.as_slice() {
        ["add", name, kind, rest @ ..] => {
            if kind.eq_ignore_ascii_case("TXT") {
                // One value, split into 255-byte character-strings as DNS requires.
                dns.txt(name, &rest.join(" "));
            } else {
                dns.add(name, record(kind, rest)?);
            }
            Ok(())
        }
        ["dkim", domain, data_dir] => {
            let key = relay::dkim::load_or_create(Path::new(data_dir), SELECTOR)
                .map_err(|e| format!("DKIM key in {data_dir}: {e}"))?;
            dns.txt(
                &relay::dkim::record_name(SELECTOR, domain),
                &key.dns_txt_value(),
            );
            Ok(())
        }
        ["remove", name] => {
            dns.remove(name);
            Ok(())
        }
        _ => Err("expected `add NAME TYPE VALUE`, `dkim DOMAIN DATA_DIR` or `remove NAME`".into()),
    }
}

/// A record of type `kind` (not TXT) from its value words.
fn record(kind: &str, value: &[&str]) -> Result<Record, String> {
    let bad = |what: &str| format!("{kind} wants {what}, got {value:?}");
    match (kind.to_ascii_uppercase().as_str(), value) {
        ("A", [ip]) => ip
            .parse::<Ipv4Addr>()
            .map(Record::A)
            .map_err(|_| bad("an IPv4 address")),
        ("AAAA", [ip]) => ip
            .parse::<Ipv6Addr>()
            .map(Record::Aaaa)
            .map_err(|_| bad("an IPv6 address")),
        ("MX", [pref, host]) => pref
            .parse::<u16>()
            .map(|p| Record::Mx(p, (*host).to_owned()))
            .map_err(|_| bad("a preference and a host")),
        ("CNAME", [target]) => Ok(Record::Cname((*target).to_owned())),
        ("A" | "AAAA" | "MX" | "CNAME", _) => Err(bad("one value (MX: preference and host)")),
        _ => Err(format!("unknown record type {kind}")),
    }
}
