//! The `relay` binary: command line, configuration, start-up and shutdown. anyhow lives only here.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: the binary: start-up

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use relay::config::{self, Config, Mode, RawConfig};
use relay::http::onboarding;
use relay::server::{self, IoChoice, Kind};

/// A chatmail relay in one binary: SMTP submission, IMAP with IDLE, encryption gate.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a relay for 127.0.0.1 with no configuration (self-signed certificate, dev ports).
    Dev {
        /// Data directory (store, certificate).
        #[arg(long, default_value = "relay-data")]
        data: PathBuf,
        /// I/O backend.
        #[arg(long, value_enum, default_value = "auto")]
        io: IoChoice,
        /// Override a configuration option (repeatable), e.g. `--set max_user_send_burst_size=3`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Worker threads (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Talk to a running relay over its admin socket (accounts, retention jobs).
    Admin {
        /// The admin socket: `<data dir>/admin.sock` (`relay dev`: `relay-data/admin.sock`).
        #[arg(long, default_value = "relay-data/admin.sock")]
        socket: PathBuf,
        #[command(subcommand)]
        command: relay::admin::AdminCommand,
    },
    /// Write a commented chatmail.ini for DOMAIN: every option the relay reads, with its
    /// default, commented out.
    Init {
        /// The mail domain (a DNS name, or an IPv4 address for an IP-only relay).
        domain: String,
        /// Where to write it.
        #[arg(long, default_value = "chatmail.ini")]
        config: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
        /// Data directory to write into the file (default: the relay's, /var/lib/chatmail-relay).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Print the DNS records the relay needs (zone-file syntax), or check them with --check.
    Dns {
        /// The chatmail.ini (`[params]` section); the default when neither this nor --data is
        /// given is ./chatmail.ini.
        #[arg(long, conflicts_with = "data")]
        config: Option<PathBuf>,
        /// The data directory of a `relay dev` relay (with --set mail_domain=...).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Override a configuration option (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// The server's public address for the A/AAAA records (repeatable; default: the
        /// `listen` addresses that are not wildcards).
        #[arg(long = "ip", value_name = "ADDRESS")]
        ip: Vec<std::net::IpAddr>,
        /// Look every record up (through option dns_server, else the system's resolver) and
        /// name each missing or wrong one with the value to set; exit status 1 if a required
        /// one is.
        #[arg(long)]
        check: bool,
    },
    /// Show the running relay's state (over its admin socket): version, uptime, backend,
    /// rate limiting, connections, accounts, queue, store size, certificate, last errors.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Have the running relay write a consistent copy of its store into DIR (which must not
    /// exist or be empty); `relay serve`/`relay dev --data DIR` opens the copy as it is.
    Backup {
        /// The data directory of the copy.
        dir: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Verify a stopped relay's store without changing it: every record's checksum, the
    /// checkpoints against the log; exit status 0 when clean, 1 when damaged, 2 when it cannot
    /// be checked (a running relay holds it).
    Check {
        #[command(flatten)]
        target: Target,
    },
    /// Import a reference (cmdeploy) relay's accounts, messages, device tokens, DKIM key and
    /// chatmail.ini options into this relay's data; run it with the relay stopped. A second
    /// run imports nothing twice.
    Import {
        /// The reference's mailboxes directory, /home/vmail/mail/<mail_domain> (or a copy).
        mailboxes_dir: PathBuf,
        /// This relay's chatmail.ini (`[params]` section).
        #[arg(long, conflicts_with = "data", required_unless_present = "data")]
        config: Option<PathBuf>,
        /// The data directory of a `relay dev` relay.
        #[arg(long)]
        data: Option<PathBuf>,
        /// The reference's chatmail.ini, to print the options to carry over
        /// [default: /usr/local/lib/chatmaild/chatmail.ini]
        #[arg(long)]
        ini: Option<PathBuf>,
        /// The reference's DKIM private key [default: /etc/dkimkeys/opendkim.private]
        #[arg(long)]
        dkim_key: Option<PathBuf>,
        /// Read everything and report what would be imported; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Override a configuration option (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Run a production relay from a chatmail.ini.
    Serve {
        /// The chatmail.ini (`[params]` section).
        #[arg(long)]
        config: PathBuf,
        /// I/O backend.
        #[arg(long, value_enum, default_value = "auto")]
        io: IoChoice,
        /// Override a configuration option (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Worker threads (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
    },
}

/// Which relay an operator command is about: its chatmail.ini (as `serve`) or the data
/// directory of a `relay dev` relay.
#[derive(clap::Args)]
struct Target {
    /// The chatmail.ini (`[params]` section); the default when neither this nor --data is
    /// given is ./chatmail.ini.
    #[arg(long, conflicts_with = "data")]
    config: Option<PathBuf>,
    /// The data directory of a `relay dev` relay.
    #[arg(long)]
    data: Option<PathBuf>,
}

impl Target {
    /// The relay's configuration; a failure is reported and becomes exit status 2.
    fn load(self) -> Result<Config, ExitCode> {
        let (raw, mode) = raw_config(self.config, self.data, &[])?;
        Config::build(&raw, mode).map_err(|e| config_error(&e))
    }
}

/// The options of `--config PATH` (as `serve`; default ./chatmail.ini) or `--data DIR` (as
/// `dev`), with the `--set` overrides, and the mode they are read in; a failure is reported and
/// becomes exit status 2.
fn raw_config(
    config: Option<PathBuf>,
    data: Option<PathBuf>,
    set: &[String],
) -> Result<(RawConfig, Mode), ExitCode> {
    let (raw, mode) = match (config, data) {
        (_, Some(data_dir)) => (RawConfig::default(), Mode::Dev { data_dir }),
        (config, None) => {
            let path = config.unwrap_or_else(|| PathBuf::from("chatmail.ini"));
            (read_ini(&path)?, Mode::Serve)
        }
    };
    let raw = overrides(raw, set).map_err(|e| config_error(&e))?;
    Ok((raw, mode))
}

/// Writes a line to stdout; a closed or full stdout loses the line, never the relay
/// (`println!` would panic).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// As [`say!`], to stderr (`eprintln!` would panic).
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Log lines go through a bounded queue to a writer thread: a failing or stalled stderr drops
    // lines (counted) instead of stopping or slowing the relay.
    // Beside the log lines, the last warnings and errors are kept for `relay status`.
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let log = relay::io::log::LossyWriter::stderr().ok();
    let ring = relay::admin::status::RecentEvents;
    // Colours only for a person at a terminal; journald and files get plain lines.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match &log {
        Some(w) => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(w.clone()),
            )
            .with(ring)
            .init(),
        None => tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink))
            .with(ring)
            .init(),
    }
    let code = run_cli();
    if let Some(w) = &log {
        w.drain(std::time::Duration::from_secs(1));
    }
    code
}

fn run_cli() -> ExitCode {
    let cli = Cli::parse();
    let (raw, mode, io, workers, dev) = match cli.command {
        Command::Init {
            domain,
            config,
            force,
            data,
        } => return init(&domain, &config, force, data.as_deref()),
        Command::Dns {
            config,
            data,
            set,
            ip,
            check,
        } => {
            let config = match raw_config(config, data, &set) {
                Ok((raw, mode)) => match Config::build(&raw, mode) {
                    Ok(c) => c,
                    Err(e) => return config_error(&e),
                },
                Err(code) => return code,
            };
            return dns(&config, &ip, check);
        }
        Command::Status { target, json } => {
            return match target.load() {
                Ok(config) => status(&config, json),
                Err(code) => code,
            }
        }
        Command::Backup { dir, target } => {
            return match target.load() {
                Ok(config) => backup(&config, &dir),
                Err(code) => code,
            }
        }
        Command::Check { target } => {
            return match target.load() {
                Ok(config) => check(&config),
                Err(code) => code,
            }
        }
        Command::Import {
            mailboxes_dir,
            config,
            data,
            ini,
            dkim_key,
            dry_run,
            set,
        } => {
            let (raw, mode) = match raw_config(config, data, &set) {
                Ok(x) => x,
                Err(code) => return code,
            };
            let config = match Config::build(&raw, mode) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            let opts = relay::import::Options {
                source: mailboxes_dir,
                dkim_key,
                ini,
                dry_run,
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                now: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64),
            };
            return match relay::import::run(&config, &raw, &opts) {
                Ok(summary) => {
                    say!("{}", summary.render().trim_end());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    report!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Admin { socket, command } => {
            return match relay::admin::run(command, &socket) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    report!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Dev {
            data,
            io,
            set,
            workers,
        } => match overrides(RawConfig::default(), &set) {
            Ok(raw) => (raw, Mode::Dev { data_dir: data }, io, workers, true),
            Err(e) => return config_error(&e),
        },
        Command::Serve {
            config,
            io,
            set,
            workers,
        } => {
            let raw = match read_ini(&config) {
                Ok(raw) => raw,
                Err(code) => return code,
            };
            let raw = match overrides(raw, &set) {
                Ok(raw) => raw,
                Err(e) => return config_error(&e),
            };
            (raw, Mode::Serve, io, workers, false)
        }
    };
    config::warn_unknown(&raw);
    let config = match Config::build(&raw, mode) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    match run(config, io, workers, dev) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Reads and parses a chatmail.ini; a failure is reported and becomes exit status 2.
fn read_ini(path: &std::path::Path) -> Result<RawConfig, ExitCode> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        report!("error: reading {}: {e}", path.display());
        ExitCode::from(2)
    })?;
    RawConfig::parse_ini(&text).map_err(|e| config_error(&e))
}

/// `relay init`: writes the template (refusing to overwrite without `--force`).
fn init(
    domain: &str,
    path: &std::path::Path,
    force: bool,
    data: Option<&std::path::Path>,
) -> ExitCode {
    let text = relay::ini::template(domain.trim(), data);
    // The file must load as it is written.
    let config = match RawConfig::parse_ini(&text).and_then(|raw| Config::build(&raw, Mode::Serve))
    {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    if !force && path.exists() {
        report!("error: {} exists (--force overwrites it)", path.display());
        return ExitCode::FAILURE;
    }
    let tmp = path.with_extension("ini.tmp");
    if let Err(e) = std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, path)) {
        report!("error: writing {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    say!(
        "wrote {} for {} (every option with its default, commented out)",
        path.display(),
        config.mail_domain
    );
    if !config.is_ip_domain() {
        // The DKIM key at its one path (decisions.md), so `relay dns` can print its record now.
        match relay::dkim::load_or_create(&config.data_dir, &config.dkim_selector) {
            Ok(_) => say!(
                "DKIM key: {}",
                relay::dkim::key_path(&config.data_dir, &config.dkim_selector).display()
            ),
            Err(e) => {
                report!(
                    "error: DKIM key: {e} ({} is written; the first `relay serve` makes the key)",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
        }
        say!(
            "next: create the DNS records `relay dns --config {}` prints, then check them \
             with `relay dns --config {} --check`",
            path.display(),
            path.display()
        );
    }
    ExitCode::SUCCESS
}

/// `relay dns`: prints the zone, or checks it.
fn dns(config: &Config, ip: &[std::net::IpAddr], check: bool) -> ExitCode {
    use relay::zone::{self, Need, Verdict};
    if config.is_ip_domain() {
        say!(
            "{} is an IP-only relay: it needs no DNS records (addresses are user@[{}]).",
            config.mail_domain,
            config.mail_domain
        );
        return ExitCode::SUCCESS;
    }
    let addresses = if ip.is_empty() {
        config
            .listen
            .iter()
            .copied()
            .filter(|a| !a.is_unspecified())
            .collect()
    } else {
        ip.to_vec()
    };
    // Only read: `relay init` or the first `relay serve` makes the key.
    let key_path = relay::dkim::key_path(&config.data_dir, &config.dkim_selector);
    let dkim = match std::fs::read_to_string(&key_path) {
        Ok(pem) => match relay::dkim::DkimKey::from_pem(&pem) {
            Ok(key) => Some(key.dns_txt_value()),
            Err(e) => {
                report!("error: {}: {e}", key_path.display());
                return ExitCode::FAILURE;
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            report!("error: reading {}: {e}", key_path.display());
            return ExitCode::FAILURE;
        }
    };
    let inputs = zone::Inputs {
        addresses,
        dkim,
        acme_account: relay::tls::acme::account_url(config),
        now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    };
    let records = zone::records(config, &inputs);
    if !check {
        say!("{}", zone::zone_file(config, &records, &inputs));
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let checked = rt.block_on(relay::dns::check_zone(config, &records));
    let through = config
        .dns_server
        .map_or_else(|| "the system's resolver".to_owned(), |a| a.to_string());
    say!(
        "DNS records of {} as {through} answers:",
        config.mail_domain
    );
    let mut failed = 0;
    for c in &checked {
        let r = &c.record;
        let what = format!("{} {}", r.name, r.kind.as_str());
        let need = match r.need {
            Need::Required => "required",
            Need::Recommended => "recommended",
        };
        let set = if r.kind == zone::Kind::Address {
            format!(
                "an A (or AAAA) record for {} with this server's address",
                r.name
            )
        } else {
            r.zone_line()
        };
        match &c.verdict {
            Ok(Verdict::Ok) => say!("  ok       {what}"),
            Ok(Verdict::Missing) => say!("  MISSING  {what} ({need}); set: {set}"),
            Ok(Verdict::Wrong(found)) => say!(
                "  WRONG    {what} ({need}): found {}; set: {set}",
                found
                    .iter()
                    .map(|f| format!("{f:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(e) => say!("  UNKNOWN  {what} ({need}): lookup failed: {e}"),
        }
        if r.need == Need::Required && c.verdict != Ok(Verdict::Ok) {
            failed += 1;
        }
    }
    if inputs.dkim.is_none() && !config.is_ip_domain() {
        // Without the key its record cannot be checked, and mail from this relay would be
        // refused by every chatmail relay: a required record is missing.
        say!(
            "  MISSING  DKIM key {} (required): run `relay init` or start the relay once, then \
             publish the record `relay dns` prints",
            key_path.display()
        );
        failed += 1;
    }
    if failed == 0 {
        say!("every required record is in place");
        ExitCode::SUCCESS
    } else {
        say!("{failed} required record(s) missing or wrong");
        ExitCode::FAILURE
    }
}

/// Sends one request to the running relay of `config`; a relay that is not running (no socket,
/// or nothing accepting on it) is a one-line message and exit status 1, as is a refusal.
fn ask(config: &Config, request: &serde_json::Value) -> Result<serde_json::Value, ExitCode> {
    let socket = relay::admin::socket_path(config);
    match relay::admin::client::request(&socket, request) {
        Ok(answer) if answer["ok"] == serde_json::json!(true) => Ok(answer),
        Ok(answer) => {
            report!(
                "error: the relay refused ({}): {}",
                answer["code"].as_str().unwrap_or("?"),
                answer["error"].as_str().unwrap_or("no message")
            );
            Err(ExitCode::FAILURE)
        }
        Err(e) if relay::admin::client::is_not_running(&e) => {
            report!(
                "error: the relay is not running (nothing serves its admin socket {}: {})",
                socket.display(),
                e.root_cause()
            );
            Err(ExitCode::FAILURE)
        }
        Err(e) => {
            report!("error: {e:#}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of unix seconds.
fn utc(secs: i64) -> String {
    let day = secs.div_euclid(86_400);
    let s = secs.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        relay::admin::client::day_to_date(day),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `relay status`.
fn status(config: &Config, json: bool) -> ExitCode {
    let a = match ask(config, &serde_json::json!({"op": "status"})) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if json {
        say!("{}", serde_json::to_string_pretty(&a).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    let up = n(&a["uptime_seconds"]);
    say!(
        "relay {} for {}: running for {}d {:02}:{:02}:{:02} (since {})",
        s(&a["version"]),
        s(&a["domain"]),
        up / 86_400,
        up / 3600 % 24,
        up / 60 % 60,
        up % 60,
        utc(a["started"].as_i64().unwrap_or(0))
    );
    say!(
        "I/O backend: {}; rate limiting: {}",
        s(&a["io_backend"]),
        s(&a["rate_limit"])
    );
    let mut total = 0;
    let mut by_port = Vec::new();
    for k in relay::metrics::PORT_NAMES {
        let v = &a["connections"][k];
        total += n(v);
        by_port.push(format!("{k} {}", n(v)));
    }
    say!("connections: {total} open ({})", by_port.join(", "));
    say!("accounts: {}", n(&a["accounts"]));
    say!(
        "outbound queue: {} entries for {} destinations",
        n(&a["queue"]["entries"]),
        n(&a["queue"]["destinations"])
    );
    let st = &a["store"];
    say!(
        "store: {} bytes in {} segments, {} messages{}",
        n(&st["bytes"]),
        n(&st["segments"]),
        n(&st["messages"]),
        if st["writes_failing"] == serde_json::json!(true) {
            " (WRITES FAILING: see the log)"
        } else {
            ""
        }
    );
    let cert = &a["certificate"];
    if cert.is_null() {
        say!("certificate: none");
    } else {
        let names: Vec<String> = cert["names"]
            .as_array()
            .map(|v| v.iter().map(&s).collect())
            .unwrap_or_default();
        say!(
            "certificate: {} expires {} (in {} days)",
            names.join(", "),
            utc(cert["not_after"].as_i64().unwrap_or(0)),
            cert["expires_in_days"].as_i64().unwrap_or(0)
        );
    }
    let empty = Vec::new();
    let events = a["last_errors"].as_array().unwrap_or(&empty);
    if events.is_empty() {
        say!("last errors: none");
    } else {
        say!("last errors ({}, oldest first):", events.len());
        for e in events {
            say!(
                "  {} {:5} {}: {}",
                utc(e["at"].as_i64().unwrap_or(0)),
                s(&e["level"]),
                s(&e["target"]),
                s(&e["message"])
            );
        }
    }
    ExitCode::SUCCESS
}

/// `relay backup DIR`: the running relay writes the copy.
fn backup(config: &Config, dir: &std::path::Path) -> ExitCode {
    let dir = match std::path::absolute(dir) {
        Ok(d) => d,
        Err(e) => {
            report!("error: {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        report!(
            "error: {} is not empty (the backup goes into a new or empty directory)",
            dir.display()
        );
        return ExitCode::FAILURE;
    }
    let a = match ask(
        config,
        &serde_json::json!({"op": "backup", "dir": dir.display().to_string()}),
    ) {
        Ok(a) => a,
        Err(code) => return code,
    };
    say!(
        "backup in {}: {} accounts, {} messages, {} queued; {} segments, {} bytes, up to log \
         position {}; {:.0} ms ({:.1} ms of it in the store's writer)",
        dir.display(),
        a["accounts"],
        a["messages"],
        a["queued"],
        a["segments"],
        a["bytes"],
        a["position"].as_str().unwrap_or("?"),
        a["elapsed_ms"].as_f64().unwrap_or(0.0),
        a["writer_held_ms"].as_f64().unwrap_or(0.0)
    );
    say!(
        "start a relay on it with `relay dev --data {}` (or data_dir in a chatmail.ini); check \
         it with `relay check --data {}`",
        dir.display(),
        dir.display()
    );
    ExitCode::SUCCESS
}

/// `relay check`: verifies the stopped store; 0 clean, 1 damaged, 2 not checked.
fn check(config: &Config) -> ExitCode {
    let dir = config.data_dir.join("store");
    let r = match relay::store::check::verify(&dir) {
        Ok(r) => r,
        Err(relay::store::Error::Locked(_)) => {
            report!(
                "error: the store {} is in use by a running relay: stop it first (or check a \
                 copy made with `relay backup`)",
                dir.display()
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            report!("error: cannot check {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    say!("store {}", dir.display());
    say!(
        "  log: {} segments ({} sealed), {} bytes, {} frames with valid checksums ({} records, \
         {} message bodies)",
        r.segments,
        r.sealed,
        r.bytes,
        r.frames,
        r.records,
        r.bodies
    );
    say!(
        "  checkpoints: {} ({} readable); index from {}, compared with {}",
        r.checkpoints,
        r.checkpoints_ok,
        r.checkpoint.map_or_else(
            || "a full replay".to_owned(),
            |p| format!(
                "the checkpoint at {}:{} and the log after it",
                p.segment, p.offset
            )
        ),
        r.compared_with
    );
    say!(
        "  index: {} accounts, {} messages, {} queued",
        r.accounts,
        r.messages,
        r.queued
    );
    for n in &r.notes {
        say!("  note: {n}");
    }
    for p in &r.problems {
        say!("  PROBLEM: {p}");
    }
    if r.problems.is_empty() {
        say!("clean");
        ExitCode::SUCCESS
    } else {
        say!("{} problem(s)", r.problems.len());
        ExitCode::FAILURE
    }
}

fn overrides(mut raw: RawConfig, set: &[String]) -> Result<RawConfig, config::Error> {
    for kv in set {
        raw.set(kv)?;
    }
    Ok(raw)
}

fn config_error(e: &config::Error) -> ExitCode {
    report!("error: configuration: {e}");
    ExitCode::from(2)
}

fn run(config: Config, io: IoChoice, workers: Option<usize>, dev: bool) -> anyhow::Result<()> {
    let backend = server::choose_backend(io)?;
    let workers = workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let domain = config.address_domain();
    let data_dir = config.data_dir.clone();
    let stop = StopSignals::install()?;
    let running = server::start(config, backend, workers)?;
    tracing::info!(backend = %running.backend, workers, "relay started for {domain}");
    let port = |k: Kind| {
        running
            .bound
            .iter()
            .find(|(kind, _)| *kind == k)
            .map_or(0, |(_, a)| a.port())
    };
    let mut out = String::new();
    for (kind, addr) in &running.bound {
        out.push_str(&format!("  {kind:?}: {addr}\n"));
    }
    for addr in running.turn_addrs() {
        out.push_str(&format!("  Turn (UDP, also STUN): {addr}\n"));
    }
    if let Some(addr) = running.metrics_addr() {
        out.push_str(&format!("  Metrics: http://{addr}/metrics\n"));
    }
    say!(
        "relay for {domain} on {} ({workers} workers)\n{out}",
        running.backend
    );
    // The invite as a link and a QR code to scan with the Delta Chat app.
    let config = &running.shared().config;
    let (what, url) = if onboarding::self_signed(config) {
        let (addr, password) = onboarding::new_credentials(config, &mut rand::thread_rng());
        let url = onboarding::dclogin_url(
            &addr,
            &password,
            &config.mail_domain,
            port(Kind::Imaps),
            port(Kind::Submissions),
        );
        (
            "A fresh account (created on first login) for a Delta Chat app",
            url,
        )
    } else {
        (
            "Invite link: the Delta Chat app makes an account on this relay from it",
            onboarding::dcaccount_url(config),
        )
    };
    say!("{what}:\n{}\n{url}\n", onboarding::qr_terminal(&url));
    let mut echo = if dev {
        start_echo(&data_dir, port(Kind::Imaps), port(Kind::Submissions))
    } else {
        None
    };
    stop.wait();
    if let Some(child) = echo.as_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    tracing::info!("stopping");
    running.shutdown();
    Ok(())
}

/// Starts the echo bot for `echo@<domain>` when `deltachat-rpc-server` is on PATH and the `echo`
/// binary (package `relay-bots`) sits beside this one; says which of them is missing otherwise.
fn start_echo(data: &std::path::Path, imaps: u16, submissions: u16) -> Option<std::process::Child> {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    if !on_path("deltachat-rpc-server") {
        say!("echo bot not started: deltachat-rpc-server is not on PATH (pip install deltachat-rpc-server)");
        return None;
    }
    let echo = std::env::current_exe().ok()?.with_file_name("echo");
    if !echo.is_file() {
        say!(
            "echo bot not started: {} is missing (cargo build -p relay-bots)",
            echo.display()
        );
        return None;
    }
    let invite = data.join("echo-invite.txt");
    let child = std::process::Command::new(&echo)
        .arg("--socket")
        .arg(data.join("admin.sock"))
        .arg("--state-dir")
        .arg(data.join("echo"))
        .args(["--relay-host", "127.0.0.1"])
        .args(["--imap-port", &imaps.to_string()])
        .args(["--smtp-port", &submissions.to_string()])
        .arg("--invite-file")
        .arg(&invite)
        .stdin(std::process::Stdio::null())
        .spawn();
    match child {
        Ok(c) => {
            say!(
                "echo bot starting: its invite link will be in {} (message it to try the relay)",
                invite.display()
            );
            Some(c)
        }
        Err(e) => {
            say!("echo bot not started: {e}");
            None
        }
    }
}

/// SIGTERM and SIGINT, caught from before the listeners open: a stop signal that comes while
/// the relay is still printing its invite (or starting the echo bot) shuts it down cleanly
/// instead of killing it with the store unchecked.
struct StopSignals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (term, int) = {
            let _in_rt = rt.enter();
            (
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            )
        };
        Ok(StopSignals { rt, term, int })
    }

    /// Waits for either (one that came already counts).
    fn wait(mut self) {
        self.rt.block_on(async {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
        });
    }
}
