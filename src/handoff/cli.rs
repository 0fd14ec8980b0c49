//! `wa-gateway conversation pause|resume|list`: the admin API of the gateway running the file
//! (at `listen.admin`, with `listen.admin_token`), as `status` reaches it. It changes nothing
//! itself: the running gateway pauses, notifies and holds the pause for every replica.

use crate::reconcile::cli::{admin_base, load_config, table};
use anyhow::Context;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `wa-gateway conversation`.
#[derive(clap::Args, Debug)]
pub struct ConversationArgs {
    /// The configuration file (its `listen.admin` and `listen.admin_token` are used).
    #[arg(
        short,
        long,
        default_value = "gateway.yaml",
        env = "WA_GATEWAY_CONFIG",
        global = true
    )]
    pub config: PathBuf,
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
    let cfg = load_config(&args.config).await?;
    let base = admin_base(&cfg).with_context(|| {
        format!(
            "listen.admin in {} has port 0, so the running gateway cannot be found: give it a \
             fixed port (e.g. 127.0.0.1:9090)",
            args.config.display()
        )
    })?;
    let token = cfg
        .listen
        .admin_token
        .as_ref()
        .map(|t| t.expose().to_owned());
    let client = Client { base, token };
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

async fn list(client: &Client, number: Option<&str>) -> anyhow::Result<u8> {
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

/// The admin API of the running gateway.
struct Client {
    base: String,
    token: Option<String>,
}

/// The answer's JSON, or the exit code of a refusal (already printed).
type Answer = Result<Value, u8>;

impl Client {
    fn http() -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?)
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Answer> {
        let req = Self::http()?
            .post(format!("{}{path}", self.base))
            .json(&body);
        self.send(req).await
    }

    async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        let req = Self::http()?.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn send(&self, mut req: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.with_context(|| {
            format!(
                "no gateway answers at {} (listen.admin): start it with `wa-gateway serve`",
                self.base
            )
        })?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(Ok(body));
        }
        let why = body["error"].as_str().unwrap_or("no reason given");
        eprintln!(
            "error: the gateway answered HTTP {}: {why}",
            status.as_u16()
        );
        Ok(Err(1))
    }
}
