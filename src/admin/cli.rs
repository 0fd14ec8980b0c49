//! `wa-gateway dead-letters list|show|replay` and `wa-gateway replies list|retry`: clients of
//! the running gateway's admin API (`/api/dead-letters`, `/api/replies`), as `conversation`
//! reaches it. They change nothing themselves: the gateway replays and requeues, through its
//! writer and pipeline, and audits each change as `cli`.

use crate::cli::{AdminClient, ConfigFile, table};
use serde_json::{Value, json};

/// Arguments of `wa-gateway dead-letters`.
#[derive(clap::Args, Debug)]
pub struct DeadLettersArgs {
    #[command(flatten)]
    pub config: ConfigFile,
    #[command(subcommand)]
    pub command: DeadLettersCommand,
}

/// What can be done with dead letters (signed bodies that were not a Cloud API envelope).
#[derive(clap::Subcommand, Debug)]
pub enum DeadLettersCommand {
    /// The stored dead letters, newest first.
    List {
        /// Only those never ingested (not replayed, or still unreadable).
        #[arg(long)]
        pending: bool,
        /// At most this many (1..1000).
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// One dead letter with its body.
    Show {
        /// Its id (from `list`).
        id: i64,
    },
    /// Parse a dead letter again and ingest what it holds, once (a second replay adds nothing).
    Replay {
        /// Its id (from `list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every dead letter not yet ingested, oldest first.
        #[arg(long)]
        all: bool,
    },
}

/// Arguments of `wa-gateway replies`.
#[derive(clap::Args, Debug)]
pub struct RepliesArgs {
    #[command(flatten)]
    pub config: ConfigFile,
    #[command(subcommand)]
    pub command: RepliesCommand,
}

/// Which undelivered replies to list.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum EndedState {
    Failed,
    Expired,
}

/// What can be done with replies that ended undelivered.
#[derive(clap::Subcommand, Debug)]
pub enum RepliesCommand {
    /// Replies that failed or expired, the most recently ended first.
    List {
        /// Only this state (both when absent).
        #[arg(long, value_enum)]
        state: Option<EndedState>,
        /// Only those that ended within this long (e.g. 1h, 30m) or since an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only this number's.
        #[arg(long)]
        number: Option<String>,
    },
    /// Send a reply again, once, if the customer's 24-hour window is open and they have not
    /// opted out; refused with the reason otherwise.
    Retry {
        /// Its id (from `list`).
        #[arg(
            required_unless_present = "failed_since",
            conflicts_with = "failed_since"
        )]
        id: Option<i64>,
        /// Every reply that failed within this long (e.g. 1h), each checked on its own.
        #[arg(long)]
        failed_since: Option<String>,
        /// With --failed-since: only this number's.
        #[arg(long, requires = "failed_since")]
        number: Option<String>,
    },
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// `wa-gateway dead-letters …`: 0 when done, 1 when the gateway refused.
pub async fn run_dead_letters(args: DeadLettersArgs) -> anyhow::Result<u8> {
    let client = AdminClient::for_file(&args.config.config).await?;
    let answer = match &args.command {
        DeadLettersCommand::List { pending, limit } => {
            let path = format!("/api/dead-letters?pending={pending}&limit={limit}");
            client.get(&path).await?
        }
        DeadLettersCommand::Show { id } => client.get(&format!("/api/dead-letters/{id}")).await?,
        DeadLettersCommand::Replay { id: Some(id), .. } => {
            let path = format!("/api/dead-letters/{id}/replay");
            client.post(&path, json!({})).await?
        }
        DeadLettersCommand::Replay { id: None, .. } => {
            client.post("/api/dead-letters/replay", json!({})).await?
        }
    };
    let v = match answer {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    match args.command {
        DeadLettersCommand::List { .. } => {
            let fields = ["id", "received_at", "replay_outcome", "replays", "reason"];
            let rows = columns(&v, "dead_letters", fields);
            print_table(["ID", "RECEIVED", "REPLAY", "REPLAYS", "REASON"], &rows);
        }
        DeadLettersCommand::Show { .. } => {
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        DeadLettersCommand::Replay { id: Some(_), .. } => print_replayed(&v),
        DeadLettersCommand::Replay { id: None, .. } => {
            let all: Vec<&Value> = items(&v, "replayed").collect();
            if all.is_empty() {
                println!("No dead letter waits to be ingested.");
            }
            for r in all {
                print_replayed(r);
            }
        }
    }
    Ok(0)
}

fn items<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v[key]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
}

/// The `fields` of each item of the list `key`, as table cells.
fn columns<const N: usize>(v: &Value, key: &str, fields: [&str; N]) -> Vec<[String; N]> {
    items(v, key)
        .map(|item| fields.map(|f| text(&item[f])))
        .collect()
}

fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    if rows.is_empty() {
        println!("None.");
    } else {
        print!("{}", table(header, rows));
    }
}

fn print_replayed(r: &Value) {
    println!(
        "Dead letter {}: {} ({}); {} new message(s).",
        text(&r["id"]),
        text(&r["outcome"]),
        text(&r["detail"]),
        text(&r["new_messages"])
    );
}

/// `wa-gateway replies …`: 0 when done, 1 when the gateway refused (or refused one of a batch).
pub async fn run_replies(args: RepliesArgs) -> anyhow::Result<u8> {
    let client = AdminClient::for_file(&args.config.config).await?;
    match args.command {
        RepliesCommand::List {
            state,
            since,
            number,
        } => {
            // Encoded: an RFC 3339 `since` may hold `+`.
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("limit", "1000");
            if let Some(s) = state {
                query.append_pair("state", &format!("{s:?}").to_lowercase());
            }
            if let Some(s) = &since {
                query.append_pair("since", s);
            }
            if let Some(n) = &number {
                query.append_pair("number", n);
            }
            let v = match client
                .get(&format!("/api/replies?{}", query.finish()))
                .await?
            {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            let fields = [
                "id",
                "phone_number_id",
                "customer",
                "state",
                "ended_at",
                "error_message",
            ];
            let rows = columns(&v, "replies", fields);
            print_table(
                ["ID", "NUMBER", "CUSTOMER", "STATE", "ENDED", "ERROR"],
                &rows,
            );
            Ok(0)
        }
        RepliesCommand::Retry { id: Some(id), .. } => {
            let path = format!("/api/replies/{id}/retry");
            match client.post(&path, json!({})).await? {
                Ok(_) => {
                    println!("Reply {id} is queued again; it is sent once, in its conversation.");
                    Ok(0)
                }
                Err(code) => Ok(code),
            }
        }
        RepliesCommand::Retry {
            id: None,
            failed_since,
            number,
        } => {
            let body = json!({ "failed_since": failed_since, "number": number });
            let v = match client.post("/api/replies/retry", body).await? {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            let mut refused = 0;
            for r in items(&v, "replies") {
                if r["requeued"] == true {
                    println!("Reply {}: queued again.", text(&r["id"]));
                } else {
                    refused += 1;
                    println!("Reply {}: refused: {}", text(&r["id"]), text(&r["reason"]));
                }
            }
            Ok(u8::from(refused > 0))
        }
    }
}
