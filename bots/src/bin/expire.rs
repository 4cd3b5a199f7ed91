//! `expire`: the daily retention job (chatmail.md §4.5, §4.6), run against a live relay.
//!
//! It asks the relay over its admin socket to apply `delete_mails_after`, `delete_large_after`
//! (messages > 200000 bytes), `delete_inactive_users_after` (accounts never logged into count
//! from their creation; empty leftovers go with them) and the quota trim to 70 % of
//! `max_mailbox_size`. The values come from the relay's configuration unless given as flags. The
//! relay decides and deletes; this program only asks and prints the summary. It never opens the
//! store.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: clients of the relay

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use relay_bots::admin::Admin;
use relay_bots::time::parse_rfc3339;
use serde_json::{json, Value};

/// Expire old messages, large old messages, inactive accounts and trim full mailboxes.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The relay's admin socket.
    #[arg(long, default_value = "/var/lib/chatmail-relay/admin.sock")]
    socket: PathBuf,
    /// Decide and report only; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Evaluate as if it were this time (RFC 3339, e.g. 2026-11-26T00:02:00Z).
    #[arg(long, value_parser = parse_rfc3339)]
    now: Option<i64>,
    /// Days after which every message is deleted (default: the relay's delete_mails_after).
    #[arg(long)]
    delete_mails_after: Option<u32>,
    /// Days after which messages over 200000 bytes are deleted.
    #[arg(long)]
    delete_large_after: Option<u32>,
    /// Days without login after which an account is deleted.
    #[arg(long)]
    delete_inactive_users_after: Option<u32>,
    /// Quota in bytes; mailboxes are trimmed to 70 % of it.
    #[arg(long)]
    max_mailbox_size: Option<u64>,
    /// List every affected account.
    #[arg(long)]
    details: bool,
    /// Print the relay's JSON answer instead of the summary.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("expire: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let mut admin = Admin::connect(&args.socket)?;
    let mut req = json!({
        "op": "expire",
        "dry_run": args.dry_run,
        "details": args.details,
    });
    let set = |req: &mut Value, k: &str, v: Option<u64>| {
        if let Some(v) = v {
            req[k] = json!(v);
        }
    };
    if let Some(now) = args.now {
        req["now"] = json!(now);
    }
    set(
        &mut req,
        "delete_mails_after",
        args.delete_mails_after.map(u64::from),
    );
    set(
        &mut req,
        "delete_large_after",
        args.delete_large_after.map(u64::from),
    );
    set(
        &mut req,
        "delete_inactive_users_after",
        args.delete_inactive_users_after.map(u64::from),
    );
    set(
        &mut req,
        "quota_target_bytes",
        args.max_mailbox_size
            .map(|m| m / 100 * 70 + m % 100 * 70 / 100),
    );
    let answer = admin.call(&req).context("running the expiry job")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    print!("{}", summary(&answer));
    Ok(())
}

/// The human summary of an `expire` answer.
fn summary(a: &Value) -> String {
    let n = |k: &str| a[k].as_u64().unwrap_or(0);
    let reason = |k: &str| a["messages_by_reason"][k].as_u64().unwrap_or(0);
    let p = &a["policy"];
    let mut out = format!(
        "{}expiry at {}: policy mails>{}d large(>{}B)>{}d inactive>{}d quota-target={}B\n",
        if a["dry_run"] == json!(true) {
            "DRY RUN: "
        } else {
            ""
        },
        a["now"],
        p["delete_mails_after_days"],
        p["large_message_bytes"],
        p["delete_large_after_days"],
        p["delete_inactive_users_after_days"],
        p["quota_target_bytes"],
    );
    out.push_str(&format!(
        "accounts scanned {}, deleted {} (of which empty {}), trimmed or expunged {}\n\
         messages expunged {} (age {}, large {}, quota {}), {} bytes freed, {} failed, {} ms\n",
        n("accounts_scanned"),
        n("accounts_deleted"),
        n("accounts_deleted_empty"),
        n("accounts_expunged"),
        n("messages_expunged"),
        reason("age"),
        reason("large"),
        reason("quota"),
        n("bytes_freed"),
        n("failed"),
        n("elapsed_ms"),
    ));
    for acct in a["accounts"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {} {} messages={} bytes={}{}\n",
            acct["action"].as_str().unwrap_or("?"),
            acct["addr"].as_str().unwrap_or("?"),
            acct["messages"],
            acct["bytes"],
            acct["error"]
                .as_str()
                .map(|e| format!(" error: {e}"))
                .unwrap_or_default(),
        ));
    }
    out
}
