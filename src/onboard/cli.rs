//! The onboarding commands: `signup`, `number request-code | verify-code | register`, and
//! `secret put | list`. Each loads the file, opens its storage and calls Meta at
//! `meta.graph_url`; a refusal is printed as the sentence from `messages` and exits 1.

use super::{OnboardError, Onboarding, SignupRequest};
use crate::audit::{AuditAction, AuditOutcome};
use crate::config::Config;
use crate::graph::CodeMethod;
use crate::store::Store;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `wa-gateway signup`.
#[derive(clap::Args, Debug)]
pub struct SignupArgs {
    /// The configuration file (its app, storage and meta.encryption_key are used).
    #[arg(short, long, default_value = "gateway.yaml", env = "WA_GATEWAY_CONFIG")]
    pub config: PathBuf,
    /// The authorization code Embedded Signup returned (FB.login's `code`).
    #[arg(long)]
    pub code: String,
    /// The WhatsApp Business Account id from the signup event.
    #[arg(long)]
    pub waba_id: String,
    /// Only this phone number id goes into the printed YAML.
    #[arg(long)]
    pub phone_number_id: Option<String>,
    /// Name to store the token under (`{ stored: NAME }`); default `waba-<WABA id>`.
    #[arg(long)]
    pub name: Option<String>,
    /// Overwrite a secret already stored under that name (refused otherwise).
    #[arg(long)]
    pub replace: bool,
}

/// Arguments of `wa-gateway number`.
#[derive(clap::Args, Debug)]
pub struct NumberArgs {
    #[command(flatten)]
    pub config: crate::cli::ConfigFile,
    #[command(subcommand)]
    pub command: NumberCommand,
}

/// How Meta sends the verification code.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Method {
    Sms,
    Voice,
}

/// Phone verification and registration of a declared number.
#[derive(clap::Subcommand, Debug)]
pub enum NumberCommand {
    /// Ask Meta to send a 6-digit verification code to the number (once a minute at most).
    RequestCode {
        /// The phone number id.
        id: String,
        #[arg(long, value_enum, default_value = "sms")]
        method: Method,
        /// The language of the message or call, e.g. en_US, es, pt_BR.
        #[arg(long, default_value = "en_US")]
        language: String,
    },
    /// Submit the code Meta sent.
    VerifyCode {
        /// The phone number id.
        id: String,
        /// The 6 digits received by SMS or voice call.
        code: String,
    },
    /// Register the number with the Cloud API using its two-step PIN (`numbers[].pin`).
    Register {
        /// The phone number id.
        id: String,
    },
}

/// Arguments of `wa-gateway secret`.
#[derive(clap::Args, Debug)]
pub struct SecretArgs {
    #[command(flatten)]
    pub config: crate::cli::ConfigFile,
    #[command(subcommand)]
    pub command: SecretCommand,
}

/// Secrets kept encrypted in storage.
#[derive(clap::Subcommand, Debug)]
pub enum SecretCommand {
    /// Store the value read from standard input (one line) encrypted as NAME, for
    /// `{ stored: NAME }` (e.g. a system-user token created by hand).
    Put {
        /// The name the config refers to.
        name: String,
    },
    /// List stored secrets: name, key id, and whether the configured keys can read it.
    List,
}

/// The file and its storage; with `resolve`, stored references filled (read only, no rotation).
async fn open(path: &Path, resolve: bool) -> anyhow::Result<(Config, Store)> {
    let mut config = crate::config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = Store::connect_for_command(&config.storage)
        .await
        .map_err(|e| anyhow::anyhow!("opening storage: {e}"))?;
    if resolve && let Err(e) = crate::secrets::resolve_stored(&mut config, &store, false).await {
        store.close().await;
        anyhow::bail!("{}", e.located(path));
    }
    Ok((config, store))
}

/// Records a command's change in the audit log, as `cli`.
async fn audit(store: &Store, action: AuditAction, target: &str, result: Result<String, String>) {
    let entry = crate::audit::entry(crate::audit::CLI, action, Some(target));
    let ended = match result {
        Ok(detail) => crate::audit::ended(entry, AuditOutcome::Ok, detail),
        Err(why) => crate::audit::ended(entry, AuditOutcome::Failed, why),
    };
    crate::audit::record(store, ended).await;
}

fn fail(e: OnboardError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// `wa-gateway signup`: prints the YAML to add; 0 when the token is stored.
pub async fn run_signup(args: SignupArgs) -> anyhow::Result<u8> {
    let (config, store) = open(&args.config, false).await?;
    let client = crate::cli::graph_for_command(&config).await?;
    let req = SignupRequest {
        code: args.code,
        waba_id: args.waba_id,
        phone_number_id: args.phone_number_id,
        name: args.name,
        replace: args.replace,
    };
    let done = Onboarding {
        config: &config,
        graph: &client,
        store: &store,
    }
    .signup(&req)
    .await;
    let detail = done
        .as_ref()
        .map(|o| format!("token stored as `{}` (key {})", o.name, o.key_id));
    audit(
        &store,
        AuditAction::Signup,
        &req.waba_id,
        detail.map_err(|e| e.to_string()),
    )
    .await;
    store.close().await;
    let done = done.map_err(fail)?;
    eprintln!(
        "Token stored encrypted as `{}` (key {}). Next: add the entries below to {}, set each PIN, \
         then run `wa-gateway apply` (it subscribes the app to the WABA and registers the numbers).",
        done.name,
        done.key_id,
        args.config.display()
    );
    print!("{}", done.yaml);
    Ok(0)
}

/// `wa-gateway number …`.
pub async fn run_number(args: NumberArgs) -> anyhow::Result<u8> {
    let (config, store) = open(&args.config.config, true).await?;
    let client = crate::cli::graph_for_command(&config).await?;
    let ob = Onboarding {
        config: &config,
        graph: &client,
        store: &store,
    };
    let (action, id) = match &args.command {
        NumberCommand::RequestCode { id, .. } => (AuditAction::NumberRequestCode, id),
        NumberCommand::VerifyCode { id, .. } => (AuditAction::NumberVerifyCode, id),
        NumberCommand::Register { id } => (AuditAction::NumberRegister, id),
    };
    let result = match &args.command {
        NumberCommand::RequestCode {
            id,
            method,
            language,
        } => {
            let m = match method {
                Method::Sms => CodeMethod::Sms,
                Method::Voice => CodeMethod::Voice,
            };
            ob.request_code(id, m, language).await.map(|()| {
                format!(
                    "Meta is sending a verification code to number {id} by {}. Submit it with \
                     `wa-gateway number verify-code {id} CODE`.",
                    match method {
                        Method::Sms => "SMS",
                        Method::Voice => "voice call",
                    }
                )
            })
        }
        NumberCommand::VerifyCode { id, code } => ob.verify_code(id, code).await.map(|()| {
            format!("Number {id} is verified. Register it with `wa-gateway number register {id}`.")
        }),
        NumberCommand::Register { id } => ob
            .register(id)
            .await
            .map(|()| format!("Number {id} is registered with the Cloud API.")),
    };
    let detail = result.as_ref().map(|_| "done".to_owned());
    audit(&store, action, id, detail.map_err(|e| e.to_string())).await;
    store.close().await;
    println!("{}", result.map_err(fail)?);
    Ok(0)
}

/// `wa-gateway secret …`.
pub async fn run_secret(args: SecretArgs) -> anyhow::Result<u8> {
    let (config, store) = open(&args.config.config, false).await?;
    let result = match &args.command {
        SecretCommand::Put { name } => {
            let mut value = String::new();
            std::io::stdin().read_to_string(&mut value)?;
            let value = value.trim_end_matches(['\r', '\n']);
            if value.is_empty() || value.contains('\n') {
                anyhow::bail!("write the secret as one line on standard input");
            }
            let put = crate::secrets::put(&config, &store, name, value).await;
            // The name and the key id only: never the value.
            let detail = put
                .as_ref()
                .map(|key| format!("stored encrypted (key {key})"))
                .map_err(|e| e.to_string());
            audit(&store, AuditAction::SecretPut, name, detail).await;
            put.map(|key| {
                format!(
                    "Stored `{name}` encrypted (key {key}); refer to it as {{ stored: {name} }}."
                )
            })
            .map_err(|e| anyhow::anyhow!("{}", e.located(&args.config.config)))
        }
        SecretCommand::List => list(&config, &store).await,
    };
    store.close().await;
    println!("{}", result?);
    Ok(0)
}

async fn list(config: &Config, store: &Store) -> anyhow::Result<String> {
    let ring = crate::secrets::keyring_of(config)
        .map_err(|e| anyhow::anyhow!("{}", crate::secrets::StoredSecretError::Issues(e)))?;
    let rows = store.stored_secrets().await?;
    let rows: Vec<[String; 3]> = rows
        .into_iter()
        .map(|r| {
            let key = match &ring {
                Some(ring) if ring.current().id() == r.key_id => "current",
                Some(_) => "previous or unknown: start `serve` to re-encrypt",
                None => "meta.encryption_key not set",
            };
            let updated = std::time::UNIX_EPOCH + Duration::from_millis(r.updated_at.max(0) as u64);
            [
                r.name,
                format!("{} ({key})", r.key_id),
                humantime::format_rfc3339_seconds(updated).to_string(),
            ]
        })
        .collect();
    let out = crate::cli::table(["NAME", "KEY", "UPDATED"], &rows);
    Ok(out.trim_end().to_owned())
}
