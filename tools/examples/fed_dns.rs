//! The DNS server of `tools/fed-bench.sh`: testkit's [`DnsServer`] on an ephemeral port of
//! 127.0.0.1, serving for each relay given its `A` and `MX 10` records and its DKIM key
//! (`opendkim._domainkey.<domain>` TXT). A relay that has no key yet gets one here, in its data
//! directory, before it starts (the relay then loads it), so the zone is complete from the first
//! message on.
//!
//! ```text
//! cargo run --release -p relay-tools --example fed_dns -- \
//!     --relay _fa.test=127.79.0.1=/tmp/fed/a --relay _fb.test=127.79.0.2=/tmp/fed/b
//! ```
//!
//! Prints `dns_server=127.0.0.1:PORT` (the relays' option) on stdout once it answers, then runs
//! until it is killed. Records carry `--ttl` seconds (default 3600, what `relay dns` prints), so
//! the relays cache the answers as they would on the internet; the test zone's default of 0
//! would make every message look its sender's key up again.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: a server for benchmarks

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Parser;
use relay_testkit::dns::{DnsServer, Record};

/// DNS for relays on loopback: A, MX and DKIM key records.
#[derive(Parser)]
struct Cli {
    /// `DOMAIN=IPV4=DATA_DIR` of one relay (repeatable).
    #[arg(long = "relay", value_name = "DOMAIN=IPV4=DATA_DIR", required = true)]
    relays: Vec<String>,
    /// TTL of every record, in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u32,
    /// DKIM selector (the relay's `dkim_selector`).
    #[arg(long, default_value = "opendkim")]
    selector: String,
}

fn parse(spec: &str) -> anyhow::Result<(String, Ipv4Addr, PathBuf)> {
    let mut parts = spec.splitn(3, '=');
    let (Some(domain), Some(ip), Some(dir)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("--relay {spec:?}: expected DOMAIN=IPV4=DATA_DIR");
    };
    if domain.is_empty() || domain.parse::<Ipv4Addr>().is_ok() {
        bail!("--relay {spec:?}: the domain must be a name (IP-literal relays need no DNS)");
    }
    let ip = ip
        .parse()
        .with_context(|| format!("--relay {spec:?}: not an IPv4 address"))?;
    Ok((domain.to_owned(), ip, PathBuf::from(dir)))
}

fn serve(cli: &Cli) -> anyhow::Result<DnsServer> {
    let dns = DnsServer::start();
    dns.set_ttl(cli.ttl);
    for spec in &cli.relays {
        let (domain, ip, dir) = parse(spec)?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = relay::dkim::load_or_create(&dir, &cli.selector)
            .with_context(|| format!("the DKIM key in {}", dir.display()))?;
        dns.add(&domain, Record::A(ip));
        dns.add(&domain, Record::Mx(10, domain.clone()));
        dns.txt(
            &relay::dkim::record_name(&cli.selector, &domain),
            &key.dns_txt_value(),
        );
    }
    Ok(dns)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match serve(&cli) {
        Ok(dns) => {
            let mut out = std::io::stdout();
            if writeln!(out, "{}", dns.relay_option())
                .and_then(|()| out.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            // Serves from its own threads until the process is killed.
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("fed_dns: {e:#}");
            ExitCode::FAILURE
        }
    }
}
