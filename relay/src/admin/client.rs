//! `relay admin ...`: the client side of the admin socket. Builds one request, sends it, prints
//! the answer. It never opens the store itself (the running relay owns it).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::Context as _;
use rand::Rng;
use serde_json::{json, Value};

/// Options shared by the retention commands.
#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    /// Decide and report, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Evaluate at this time (unix seconds) instead of the relay's clock.
    #[arg(long)]
    pub now: Option<i64>,
    /// List every affected account.
    #[arg(long)]
    pub details: bool,
}

/// `relay admin <command>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Print the relay's domain and retention settings.
    Config,
    /// List accounts: address, last-login day, bytes used, message count.
    List {
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Create an account; the sign-up name rules do not apply (e.g. `echo`).
    Create {
        /// Localpart or full address on this relay's domain.
        name: String,
        /// Password; a random one is made and printed if absent.
        #[arg(long)]
        password: Option<String>,
        /// Validate only.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete an account and all its messages.
    Delete {
        /// Localpart or full address.
        name: String,
        /// Report only.
        #[arg(long)]
        dry_run: bool,
    },
    /// Expunge messages older than N days (optionally only those larger than B bytes).
    ExpireMessages {
        /// Age in days.
        #[arg(long)]
        older_than_days: u32,
        /// Only messages larger than this many bytes.
        #[arg(long)]
        larger_than: Option<u64>,
        /// One account only.
        #[arg(long)]
        account: Option<String>,
        /// Dry run, time, details.
        #[command(flatten)]
        job: JobArgs,
    },
    /// Trim mailboxes to a target size, oldest first, never messages younger than 24 h.
    Trim {
        /// Target in bytes (default: 70 % of max_mailbox_size).
        #[arg(long)]
        target_bytes: Option<u64>,
        /// One account only.
        #[arg(long)]
        account: Option<String>,
        /// Dry run, time, details.
        #[command(flatten)]
        job: JobArgs,
    },
    /// Delete accounts without login for more than N days.
    ExpireInactive {
        /// Days (default: delete_inactive_users_after).
        #[arg(long)]
        days: Option<u32>,
        /// Dry run, time, details.
        #[command(flatten)]
        job: JobArgs,
    },
    /// The daily retention job (values default to the relay's configuration).
    Expire {
        /// Days.
        #[arg(long)]
        delete_mails_after: Option<u32>,
        /// Days.
        #[arg(long)]
        delete_large_after: Option<u32>,
        /// Days.
        #[arg(long)]
        delete_inactive_users_after: Option<u32>,
        /// Bytes.
        #[arg(long)]
        quota_target_bytes: Option<u64>,
        /// Dry run, time, details.
        #[command(flatten)]
        job: JobArgs,
    },
    /// The outbound queue: list it, retry it now, or drop an entry.
    Queue {
        /// What to do (default: list).
        #[command(subcommand)]
        action: Option<QueueAction>,
    },
    /// Send one raw JSON request and print the answer.
    Raw {
        /// The request object, e.g. '{"op":"config"}'.
        request: String,
    },
}

/// `relay admin queue <action>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum QueueAction {
    /// List queued mail, oldest first per destination.
    List {
        /// Only this destination (a domain or `[ip]`).
        destination: Option<String>,
        /// Entries listed at most.
        #[arg(long)]
        limit: Option<usize>,
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Try queued mail now instead of waiting for its backoff.
    Retry {
        /// Only this destination; all if absent.
        destination: Option<String>,
    },
    /// Drop a queued entry without delivering it (no bounce).
    Drop {
        /// The entry's id as `list` shows it.
        id: String,
        /// Report only.
        #[arg(long)]
        dry_run: bool,
    },
}

fn with_job(mut v: Value, job: &JobArgs) -> Value {
    v["dry_run"] = json!(job.dry_run);
    v["details"] = json!(job.details);
    if let Some(now) = job.now {
        v["now"] = json!(now);
    }
    v
}

/// Drop `null` fields (the relay then uses its defaults).
fn prune(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|_, x| !x.is_null());
    }
    v
}

fn random_password() -> String {
    const SET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| SET[rng.gen_range(0..SET.len())] as char)
        .collect()
}

/// Sends `request` to the admin socket at `socket` and returns the answer object.
///
/// # Errors
/// Connecting, writing or reading fails, or the answer is not JSON.
pub fn request(socket: &Path, request: &Value) -> anyhow::Result<Value> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to the admin socket {}", socket.display()))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("reading the answer")?;
    serde_json::from_str(&answer).with_context(|| format!("bad answer: {answer:?}"))
}

/// Whether `e` (from [`request`]) means no relay serves the socket: it is missing, or nothing
/// accepts connections on it.
pub fn is_not_running(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            )
        })
}

/// Runs one `relay admin` command against the socket at `socket` and prints the result.
///
/// # Errors
/// The socket is unreachable or the relay refused the request (its message is the error).
pub fn run(cmd: AdminCommand, socket: &Path) -> anyhow::Result<()> {
    let mut generated = None;
    let req = match &cmd {
        AdminCommand::Config => json!({"op": "config"}),
        AdminCommand::List { .. } => json!({"op": "list_accounts"}),
        AdminCommand::Create {
            name,
            password,
            dry_run,
        } => {
            let password = match password {
                Some(p) => p.clone(),
                None => generated.insert(random_password()).clone(),
            };
            json!({"op": "create_account", "name": name, "password": password, "dry_run": dry_run})
        }
        AdminCommand::Delete { name, dry_run } => {
            json!({"op": "delete_account", "name": name, "dry_run": dry_run})
        }
        AdminCommand::ExpireMessages {
            older_than_days,
            larger_than,
            account,
            job,
        } => with_job(
            json!({"op": "expire_messages", "older_than_days": older_than_days,
                   "larger_than": larger_than, "account": account}),
            job,
        ),
        AdminCommand::Trim {
            target_bytes,
            account,
            job,
        } => with_job(
            json!({"op": "trim_mailbox", "target_bytes": target_bytes, "account": account}),
            job,
        ),
        AdminCommand::ExpireInactive { days, job } => {
            with_job(json!({"op": "expire_inactive", "inactive_days": days}), job)
        }
        AdminCommand::Expire {
            delete_mails_after,
            delete_large_after,
            delete_inactive_users_after,
            quota_target_bytes,
            job,
        } => with_job(
            json!({"op": "expire", "delete_mails_after": delete_mails_after,
                   "delete_large_after": delete_large_after,
                   "delete_inactive_users_after": delete_inactive_users_after,
                   "quota_target_bytes": quota_target_bytes}),
            job,
        ),
        AdminCommand::Queue { action } => match action {
            None => json!({"op": "queue"}),
            Some(QueueAction::List {
                destination, limit, ..
            }) => json!({"op": "queue", "destination": destination, "limit": limit}),
            Some(QueueAction::Retry { destination }) => {
                json!({"op": "queue_retry", "destination": destination})
            }
            Some(QueueAction::Drop { id, dry_run }) => {
                json!({"op": "queue_drop", "id": id, "dry_run": dry_run})
            }
        },
        AdminCommand::Raw { request } => {
            serde_json::from_str(request).context("the request is not valid JSON")?
        }
    };
    let answer = request(socket, &prune(req))?;
    if answer["ok"] != json!(true) {
        anyhow::bail!(
            "relay refused ({}): {}",
            answer["code"].as_str().unwrap_or("?"),
            answer["error"].as_str().unwrap_or("no message")
        );
    }
    match cmd {
        AdminCommand::List { json: false } => print_accounts(&answer),
        AdminCommand::Queue { action: None }
        | AdminCommand::Queue {
            action: Some(QueueAction::List { json: false, .. }),
        } => print_queue(&answer),
        AdminCommand::Create { .. } => {
            println!("{}", serde_json::to_string_pretty(&answer)?);
            if let Some(p) = generated {
                println!("password: {p}");
            }
        }
        _ => println!("{}", serde_json::to_string_pretty(&answer)?),
    }
    Ok(())
}

fn print_accounts(answer: &Value) {
    let empty = Vec::new();
    let accounts = answer["accounts"].as_array().unwrap_or(&empty);
    println!(
        "{:<40} {:>10} {:>14} {:>9}",
        "address", "last login", "bytes used", "messages"
    );
    for a in accounts {
        let day = a["last_login_day"].as_i64().unwrap_or(0);
        println!(
            "{:<40} {:>10} {:>14} {:>9}",
            a["addr"].as_str().unwrap_or("?"),
            day_to_date(day),
            a["bytes_used"].as_u64().unwrap_or(0),
            a["messages"].as_u64().unwrap_or(0)
        );
    }
    println!("{} accounts", accounts.len());
}

fn print_queue(answer: &Value) {
    let empty = Vec::new();
    let entries = answer["entries"].as_array().unwrap_or(&empty);
    println!(
        "{:<14} {:<28} {:>9} {:>9}  sender -> recipients",
        "id", "destination", "age", "size"
    );
    for e in entries {
        let recipients: Vec<&str> = e["recipients"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let sender = e["sender"].as_str().unwrap_or("");
        println!(
            "{:<14} {:<28} {:>8}s {:>9}  <{}> -> {}",
            e["id"].as_str().unwrap_or("?"),
            e["destination"].as_str().unwrap_or("?"),
            e["age_seconds"].as_i64().unwrap_or(0),
            e["size"].as_u64().unwrap_or(0),
            sender,
            recipients.join(", ")
        );
    }
    println!(
        "{} queued in {} destinations",
        answer["queued"].as_u64().unwrap_or(0),
        answer["destinations"].as_array().map_or(0, Vec::len)
    );
}

/// `YYYY-MM-DD` of a unix day (proleptic Gregorian).
pub fn day_to_date(days: i64) -> String {
    let (y, m, d) = relay_civil::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}
