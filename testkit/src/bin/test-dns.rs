//! `test-dns`: the test DNS server ([`relay_testkit::dns::DnsServer`]) as a process, for test
//! suites that are not written in Rust (the Delta Chat end-to-end tests start relays as
//! processes, point them at it with `--set dns_server=ADDR` and publish what `relay dns` prints).
//!
//! ```text
//! test-dns [COMMAND]...        commands as arguments, then more on standard input, one a line
//!
//!   add NAME TYPE VALUE        add a record: A IP, AAAA IP, MX PREF HOST, TXT TEXT..., CNAME NAME,
//!                              SRV PRIORITY WEIGHT PORT TARGET
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
use std::process::ExitCode;

use relay_testkit::dns::{DnsServer, Record};

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
        ["remove", name] => {
            dns.remove(name);
            Ok(())
        }
        _ => Err("expected `add NAME TYPE VALUE`, `remove NAME` or `count NAME`".into()),
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
        ("SRV", [priority, weight, port, target]) => {
            let num = |s: &str| s.parse::<u16>().map_err(|_| bad("numbers and a target"));
            Ok(Record::Srv(
                num(priority)?,
                num(weight)?,
                num(port)?,
                (*target).to_owned(),
            ))
        }
        ("A" | "AAAA" | "CNAME", _) => Err(bad("one value")),
        ("MX", _) => Err(bad("a preference and a host")),
        ("SRV", _) => Err(bad("priority, weight, port and target")),
        _ => Err(format!("unknown record type {kind}")),
    }
}
