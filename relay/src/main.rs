//! The `relay` binary: command line, configuration, start-up and shutdown. anyhow lives only here.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: the binary: start-up

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rand::Rng;
use relay::config::{self, Config, Mode, RawConfig};
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
    let log = relay::io::log::LossyWriter::stderr().ok();
    match &log {
        Some(w) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(w.clone())
            .init(),
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::sink)
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
            let text = match std::fs::read_to_string(&config) {
                Ok(t) => t,
                Err(e) => {
                    report!("error: reading {}: {e}", config.display());
                    return ExitCode::from(2);
                }
            };
            let raw = match RawConfig::parse_ini(&text).and_then(|raw| overrides(raw, &set)) {
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
    let mail_domain = config.mail_domain.clone();
    let data_dir = config.data_dir.clone();
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
    say!(
        "relay for {domain} on {} ({workers} workers)\n{out}",
        running.backend
    );
    if dev {
        let (user, password) = random_credentials(&mut rand::thread_rng());
        let url = dclogin_url(
            &format!("{user}@{domain}"),
            &password,
            &mail_domain,
            port(Kind::Imaps),
            port(Kind::Submissions),
        );
        say!("A fresh account (created on first login) for a Delta Chat app:\n{url}\n");
    }
    let mut echo = if dev {
        start_echo(&data_dir, port(Kind::Imaps), port(Kind::Submissions))
    } else {
        None
    };
    wait_for_signal()?;
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

/// A random 9-character localpart and 12-character password, as the reference's `/new` makes.
fn random_credentials(rng: &mut impl Rng) -> (String, String) {
    const USER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    const PASS: &[u8] =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&()*+,-./:;<=>?@[]^_{|}~";
    let pick = |rng: &mut dyn rand::RngCore, set: &[u8], n: usize| {
        (0..n)
            .map(|_| set[rng.gen_range(0..set.len())] as char)
            .collect::<String>()
    };
    (pick(rng, USER, 9), pick(rng, PASS, 12))
}

/// `dclogin:` URL with full manual settings and `ic=3` (accept the self-signed certificate).
fn dclogin_url(addr: &str, password: &str, host: &str, imaps: u16, submissions: u16) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    format!(
        "dclogin:{addr}?p={}&v=1&ih={host}&ip={imaps}&is=ssl&sh={host}&sp={submissions}&ss=ssl&ic=3",
        enc(password)
    )
}

fn wait_for_signal() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    Ok(())
}
