//! `echo`: a Delta Chat bot that answers every message with the same text and attachment.
//!
//! It is a real Delta Chat client (the core's `deltachat-rpc-server`, driven over JSON-RPC), so
//! everything it sends is end-to-end encrypted and it doubles as a health check of the relay.
//! Its account `echo@<domain>` is ensured through the relay's admin socket with a password kept
//! in the state directory; the core keeps its keys in `<state dir>/accounts`. It accepts contact
//! requests, ignores its own messages, messages from other bots, system messages and messages it
//! could not decrypt (so two bots never loop), prints its invite link and writes it to a file.
//! If the relay or the core goes away it starts over with a backoff; the core itself reconnects
//! after a relay restart.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: clients of the relay

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use rand::Rng;
use relay_bots::admin::{refusal_code, Admin};
use relay_bots::rpc::Rpc;
use serde_json::{json, Value};

/// Echo bot for a chatmail relay.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The relay's admin socket.
    #[arg(long, default_value = "relay-data/admin.sock")]
    socket: PathBuf,
    /// Where the password, the core's accounts (keys) and logs live.
    #[arg(long, default_value = "echo-state")]
    state_dir: PathBuf,
    /// The relay's host name or IP address for IMAP and SMTP.
    #[arg(long, default_value = "127.0.0.1")]
    relay_host: String,
    /// IMAP port (default: the relay's IMAPS port from the admin socket).
    #[arg(long)]
    imap_port: Option<u16>,
    /// SMTP submission port (default: the relay's implicit-TLS submission port).
    #[arg(long)]
    smtp_port: Option<u16>,
    /// Socket security for both IMAP and SMTP: ssl or starttls.
    #[arg(long, default_value = "ssl")]
    security: String,
    /// Accept invalid (self-signed) certificates; the default when the host or the mail domain
    /// is an IP address.
    #[arg(long)]
    accept_invalid_certs: bool,
    /// File to write the invite link to (default: `<state dir>/invite.txt`).
    #[arg(long)]
    invite_file: Option<PathBuf>,
    /// The Delta Chat core RPC server binary.
    #[arg(long, default_value = "deltachat-rpc-server")]
    rpc_server: PathBuf,
    /// Localpart of the bot's account.
    #[arg(long, default_value = "echo")]
    name: String,
    /// Display name.
    #[arg(long, default_value = "Echo Bot")]
    display_name: String,
    /// If the account exists but this state directory has no password for it, delete and
    /// recreate it (its messages are lost).
    #[arg(long)]
    recreate_account: bool,
}

/// Contact ids at or below this are special (self = 1, info = 2, device = 5).
const LAST_SPECIAL_CONTACT_ID: u64 = 9;
/// Core connectivity at or above this means IMAP is working.
const CONNECTIVITY_WORKING: u64 = 3000;
/// How often to sweep fresh messages and check connectivity.
const TICK: Duration = Duration::from_secs(15);
/// How often to check that the relay still has the account (it may have been expired or
/// deleted by an operator).
const ACCOUNT_CHECK: Duration = Duration::from_secs(3600);
/// How long to wait for the core to idle on INBOX before publishing the invite.
const INBOX_WAIT: Duration = Duration::from_secs(60);
/// Longest wait between two starts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Err(e) = std::fs::create_dir_all(&args.state_dir) {
        eprintln!("error: creating {}: {e}", args.state_dir.display());
        return ExitCode::FAILURE;
    }
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        match run(&args) {
            Ok(()) => return ExitCode::SUCCESS,
            Err(e) => tracing::error!("echo bot: {e:#}; starting over in {backoff:?}"),
        }
        if started.elapsed() > MAX_BACKOFF {
            backoff = Duration::from_secs(1);
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// What the relay told us about itself.
struct RelayInfo {
    addr: String,
    password: String,
    ip_domain: bool,
    imaps: u16,
    submissions: u16,
    /// The account was (re)created now: the core must log in anew.
    created: bool,
}

fn random_password() -> String {
    const SET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..24)
        .map(|_| SET[rng.gen_range(0..SET.len())] as char)
        .collect()
}

/// Writes `data` to `path` atomically with mode `mode`.
fn write_file(path: &Path, data: &str, mode: u32) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Makes sure `echo@<domain>` exists with the password stored in the state directory.
fn ensure_account(args: &Args) -> anyhow::Result<RelayInfo> {
    let mut admin = Admin::connect(&args.socket)?;
    let cfg = admin.call(&json!({"op": "config"}))?;
    let domain = cfg["domain"].as_str().context("no domain in config")?;
    let addr = format!("{}@{domain}", args.name);
    let pw_path = args.state_dir.join("password");
    let (password, fresh) = match std::fs::read_to_string(&pw_path) {
        Ok(p) if !p.trim().is_empty() => (p.trim().to_owned(), false),
        Ok(_) | Err(_) => {
            let p = random_password();
            write_file(&pw_path, &p, 0o600)?;
            (p, true)
        }
    };
    let create = json!({"op": "create_account", "name": addr, "password": password});
    let created = match admin.call(&create) {
        Ok(_) => {
            tracing::info!("created {addr}");
            true
        }
        Err(e) if refusal_code(&e) == Some("exists") => {
            if fresh && args.recreate_account {
                admin.call(&json!({"op": "delete_account", "name": addr}))?;
                admin.call(&create)?;
                tracing::warn!("recreated {addr} with a new password");
                true
            } else if fresh {
                anyhow::bail!(
                    "{addr} exists but {} was just made: put the account's password there, \
                     or run with --recreate-account",
                    pw_path.display()
                );
            } else {
                false
            }
        }
        Err(e) => return Err(e),
    };
    let port = |k: &str| cfg["ports"][k].as_u64().and_then(|p| u16::try_from(p).ok());
    Ok(RelayInfo {
        addr,
        password,
        ip_domain: domain.starts_with('['),
        imaps: port("imaps").unwrap_or(993),
        submissions: port("submissions").unwrap_or(465),
        created,
    })
}

fn run(args: &Args) -> anyhow::Result<()> {
    let info = ensure_account(args)?;
    let mut rpc = Rpc::start(
        &args.rpc_server,
        &args.state_dir.join("accounts"),
        &args.state_dir.join("rpc-server.log"),
    )?;
    let events = rpc.take_events().context("event stream")?;
    let ids = rpc.call("get_all_account_ids", json!([]))?;
    let acc = match ids
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_u64)
    {
        Some(id) => id,
        None => rpc
            .call("add_account", json!([]))?
            .as_u64()
            .context("add_account returned no id")?,
    };
    rpc.call(
        "batch_set_config",
        json!([acc, {"bot": "1", "displayname": args.display_name, "mdns_enabled": "0",
                     "bcc_self": "0"}]),
    )?;
    // Never add public relays behind our back (chatmail.md §12.4); unknown on some cores.
    let _ = rpc.call("set_config", json!([acc, "autorelay", "0"]));
    let configured = rpc.call("is_configured", json!([acc]))? == json!(true);
    let configured_addr = rpc.call("get_config", json!([acc, "configured_addr"]))?;
    if !configured || configured_addr != json!(info.addr) || info.created {
        let ip_host = args.relay_host.parse::<std::net::IpAddr>().is_ok();
        let checks = if args.accept_invalid_certs || ip_host || info.ip_domain {
            "acceptInvalidCertificates"
        } else {
            "automatic"
        };
        let params = json!({
            "addr": info.addr, "password": info.password,
            "imapServer": args.relay_host, "imapPort": args.imap_port.unwrap_or(info.imaps),
            "imapSecurity": args.security,
            "smtpServer": args.relay_host, "smtpPort": args.smtp_port.unwrap_or(info.submissions),
            "smtpSecurity": args.security,
            "certificateChecks": checks,
        });
        tracing::info!("configuring {} on {}", info.addr, args.relay_host);
        rpc.call("add_or_update_transport", json!([acc, params]))
            .context("configuring the account (see Warning lines in rpc-server.log)")?;
    }
    rpc.call("start_io", json!([acc]))?;
    let mut answered = HashSet::new();
    // The core ignores what is already in INBOX the first time it selects it, so publish the
    // invite only once the inbox is watched (chatmail.md §12.8, gotcha 3).
    let deadline = Instant::now() + INBOX_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(ev) => {
                let idle =
                    ev["contextId"].as_u64() == Some(acc) && ev["event"]["kind"] == "ImapInboxIdle";
                handle_event(&rpc, acc, &ev, &mut answered);
                if idle {
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!("the core is not idling on INBOX after {INBOX_WAIT:?}; going on");
                break;
            }
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!("the rpc server exited"),
        }
    }
    let invite = rpc.call("get_chat_securejoin_qr_code", json!([acc, null]))?;
    let invite = invite.as_str().context("no invite link")?;
    let invite_file = args
        .invite_file
        .clone()
        .unwrap_or_else(|| args.state_dir.join("invite.txt"));
    write_file(&invite_file, &format!("{invite}\n"), 0o644)?;
    println!("echo bot {} ready; invite link:\n{invite}", info.addr);
    let _ = std::io::stdout().flush();

    let mut last_tick = Instant::now();
    let mut not_working_since: Option<Instant> = None;
    let mut last_account_check = Instant::now();
    loop {
        match events.recv_timeout(TICK) {
            Ok(ev) => handle_event(&rpc, acc, &ev, &mut answered),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!("the rpc server exited"),
        }
        if last_tick.elapsed() < TICK {
            continue;
        }
        last_tick = Instant::now();
        if !rpc.is_alive() {
            anyhow::bail!("the rpc server exited");
        }
        // Safety net: answer anything fresh an event was missed for.
        if let Ok(fresh) = rpc.call("get_fresh_msgs", json!([acc])) {
            for id in fresh
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64)
            {
                answer(&rpc, acc, id, &mut answered);
            }
        }
        if last_account_check.elapsed() >= ACCOUNT_CHECK {
            last_account_check = Instant::now();
            if account_was_recreated(args, &info) {
                // Same address and password: the core only has to log in again.
                tracing::warn!("{} was gone on the relay and is recreated", info.addr);
                let _ = rpc.call("maybe_network", json!([]));
            }
        }
        // After a relay restart the core retries with its own backoff; nudge it.
        let conn = rpc
            .call("get_connectivity", json!([acc]))
            .ok()
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if conn >= CONNECTIVITY_WORKING {
            not_working_since = None;
        } else if not_working_since.get_or_insert_with(Instant::now).elapsed() >= TICK {
            tracing::info!("not connected (connectivity {conn}); asking the core to reconnect");
            let _ = rpc.call("maybe_network", json!([]));
        }
    }
}

/// Re-creates the account if the relay lost it; true if it did. An unreachable relay is not
/// an error here (it may be restarting; the core reconnects by itself).
fn account_was_recreated(args: &Args, info: &RelayInfo) -> bool {
    let mut admin = match Admin::connect(&args.socket) {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!("account check skipped: {e:#}");
            return false;
        }
    };
    let create = json!({"op": "create_account", "name": info.addr, "password": info.password});
    match admin.call(&create) {
        Ok(_) => true,
        Err(e) if refusal_code(&e) == Some("exists") => false,
        Err(e) => {
            tracing::warn!("account check failed: {e:#}");
            false
        }
    }
}

fn handle_event(rpc: &Rpc, acc: u64, ev: &Value, answered: &mut HashSet<u64>) {
    if ev["contextId"].as_u64() != Some(acc) {
        return;
    }
    let e = &ev["event"];
    match e["kind"].as_str().unwrap_or("") {
        "IncomingMsg" => {
            if let Some(id) = e["msgId"].as_u64() {
                answer(rpc, acc, id, answered);
            }
        }
        "ImapInboxIdle" => tracing::debug!("IMAP inbox idle"),
        "SecurejoinInviterProgress" => {
            tracing::info!("secure join progress {}", e["progress"]);
        }
        "Info" => tracing::trace!("core: {}", e["msg"].as_str().unwrap_or("")),
        "Warning" => tracing::debug!("core warning: {}", e["msg"].as_str().unwrap_or("")),
        "Error" => tracing::warn!("core error: {}", e["msg"].as_str().unwrap_or("")),
        _ => {}
    }
}

/// Answers message `id` in its chat with the same text and attachment, unless it must be ignored.
fn answer(rpc: &Rpc, acc: u64, id: u64, answered: &mut HashSet<u64>) {
    if answered.contains(&id) {
        return;
    }
    match try_answer(rpc, acc, id) {
        Ok(Some(why)) => {
            tracing::debug!("message {id} ignored: {why}");
            answered.insert(id);
            let _ = rpc.call("markseen_msgs", json!([acc, [id]]));
        }
        Ok(None) => {
            answered.insert(id);
            let _ = rpc.call("markseen_msgs", json!([acc, [id]]));
        }
        Err(e) => tracing::warn!("answering message {id}: {e:#}"),
    }
    if answered.len() > 100_000 {
        answered.clear();
    }
}

/// `Ok(Some(reason))` if the message is ignored, `Ok(None)` once answered.
fn try_answer(rpc: &Rpc, acc: u64, id: u64) -> anyhow::Result<Option<&'static str>> {
    let m = rpc.call("get_message", json!([acc, id]))?;
    let from = m["fromId"].as_u64().unwrap_or(0);
    if from <= LAST_SPECIAL_CONTACT_ID {
        return Ok(Some("own or special sender"));
    }
    if m["isInfo"] == json!(true)
        || m["systemMessageType"].as_str().unwrap_or("Unknown") != "Unknown"
    {
        return Ok(Some("system message"));
    }
    if m["isBot"] == json!(true) {
        return Ok(Some("from a bot"));
    }
    if m["showPadlock"] != json!(true) || !m["error"].is_null() {
        return Ok(Some("not decrypted"));
    }
    if m["downloadState"].as_str().unwrap_or("Done") != "Done" {
        let _ = rpc.call("download_full_message", json!([acc, id]));
        anyhow::bail!("not fully downloaded yet");
    }
    let chat_id = m["chatId"].as_u64().context("message without chat")?;
    let chat = rpc.call("get_basic_chat_info", json!([acc, chat_id]))?;
    if chat["isDeviceChat"] == json!(true) || chat["isSelfTalk"] == json!(true) {
        return Ok(Some("device or self chat"));
    }
    if chat["isContactRequest"] == json!(true) {
        rpc.call("accept_chat", json!([acc, chat_id]))?;
    }
    let mut data = json!({"text": m["text"]});
    if m["file"].is_string() {
        data["file"] = m["file"].clone();
        data["filename"] = m["fileName"].clone();
        data["viewtype"] = m["viewType"].clone();
    }
    rpc.call("send_msg", json!([acc, chat_id, data]))?;
    tracing::info!("echoed message {id} in chat {chat_id}");
    Ok(None)
}
