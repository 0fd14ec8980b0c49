//! `wa-gateway conversation pause|resume|list`: the admin API of the gateway running the file
//! (at `listen.admin`, with `listen.admin_token`), as `status` reaches it. It changes nothing
//! itself: the running gateway pauses, notifies and holds the pause for every replica.

use crate::cli::{AdminClient, ConfigFile, table};
use serde_json::{Value, json};

/// Arguments of `wa-gateway conversation`.
#[derive(clap::Args, Debug)]
pub struct ConversationArgs {
    #[command(flatten)]
    pub config: ConfigFile,
    #[command(subcommand)]
    pub command: ConversationCommand,
}

/// What can be done to one conversation (number, customer).
#[derive(clap::Subcommand, Debug)]
pub enum ConversationCommand {
    /// Hand the conversation to a person: its messages are stored and marked read, the agent is
    /// not called until it is resumed or the pause ends.
    Pause {
        /// The number's phone_number_id.
        number: String,
        /// The customer's wa_id or business-scoped user id.
        customer: String,
        /// How long (e.g. 30m, 2h); default policies.handoff.pause_for.
        #[arg(long = "for")]
        for_: Option<String>,
        /// Why, for the helpdesk and the status page.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Give the conversation back to the agent now.
    Resume {
        /// The number's phone_number_id.
        number: String,
        /// The customer's wa_id or business-scoped user id.
        customer: String,
    },
    /// The paused conversations, of one number or all.
    List {
        /// Only this number's.
        #[arg(long)]
        number: Option<String>,
    },
}

/// `wa-gateway conversation …`: 0 when done, 1 when the gateway refused.
pub async fn run(args: ConversationArgs) -> anyhow::Result<u8> {
    let client = AdminClient::for_file(&args.config.config).await?;
    match args.command {
        ConversationCommand::Pause {
            number,
            customer,
            for_,
            reason,
        } => {
            let path = conversation_path(&number, &customer, "pause");
            let body = json!({ "for": for_, "reason": reason, "by": "cli" });
            let v = match client.post(&path, body).await? {
                Ok(v) => v,
                Err(refused) => return Ok(refused),
            };
            println!(
                "Paused {customer} on {number} until {} (the agent is not called until then).",
                v["paused_until"].as_str().unwrap_or("?")
            );
            Ok(0)
        }
        ConversationCommand::Resume { number, customer } => {
            let path = conversation_path(&number, &customer, "resume");
            let v = match client.post(&path, json!({})).await? {
                Ok(v) => v,
                Err(refused) => return Ok(refused),
            };
            if v["was_paused"] == true {
                println!("Resumed {customer} on {number}: the agent answers the next message.");
            } else {
                println!("{customer} on {number} was not paused; nothing changed.");
            }
            Ok(0)
        }
        ConversationCommand::List { number } => list(&client, number.as_deref()).await,
    }
}

fn conversation_path(number: &str, customer: &str, action: &str) -> String {
    format!("/api/conversations/{number}/{customer}/{action}")
}

async fn list(client: &AdminClient, number: Option<&str>) -> anyhow::Result<u8> {
    let mut path = "/api/conversations?paused=true".to_owned();
    if let Some(n) = number {
        path.push_str(&format!("&number={n}"));
    }
    let v = match client.get(&path).await? {
        Ok(v) => v,
        Err(refused) => return Ok(refused),
    };
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let rows: Vec<[String; 5]> = v["conversations"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| {
            [
                text(&c["phone_number_id"]),
                text(&c["customer"]),
                text(&c["paused_until"]),
                text(&c["by"]),
                text(&c["reason"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("No conversation is paused.");
    } else {
        print!(
            "{}",
            table(["NUMBER", "CUSTOMER", "UNTIL", "BY", "REASON"], &rows)
        );
    }
    Ok(0)
}
