//! The `plan`, `apply` and `status` commands: load the file, observe Meta through
//! `meta.graph_url` (and `status` asks the running gateway first), print. `test-connection`
//! and `doctor` are in `crate::doctor`.
//! Exit codes follow terraform's -detailed-exitcode for `plan`.

use super::{Desired, NumberState, apply, derive_statuses, observe, plan};
use crate::cli::{AdminClient, admin_base, load_config, table, with_client};
use crate::config::Config;
use crate::graph::GraphClient;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Exit code of `plan` when changes are pending.
pub const EXIT_PENDING: u8 = 2;

async fn load(path: &Path) -> anyhow::Result<(Config, GraphClient)> {
    with_client(load_config(path).await?).await
}

/// Observes and plans; a failed read is an error, since its part cannot be planned.
async fn observe_and_plan(
    client: &GraphClient,
    desired: &Desired,
) -> anyhow::Result<Vec<super::Action>> {
    let observed = observe(client, desired).await;
    let failures = observed.failures();
    if !failures.is_empty() {
        let lines: Vec<String> = failures
            .iter()
            .map(|(what, f)| match f.code {
                Some(190) => format!(
                    "  {what}: token refused as invalid or expired (190): {}",
                    f.message
                ),
                _ => format!("  {what}: {}", f.message),
            })
            .collect();
        anyhow::bail!("cannot read the state at Meta:\n{}", lines.join("\n"));
    }
    Ok(plan(desired, &observed))
}

/// `wa-gateway plan`: 0 when nothing is to do, 2 when changes are pending, 1 on error.
pub async fn run_plan(path: &Path) -> anyhow::Result<u8> {
    let (cfg, client) = load(path).await?;
    let desired = Desired::from_config(&cfg);
    let actions = observe_and_plan(&client, &desired).await?;
    if actions.is_empty() {
        println!(
            "Meta is set up as {} declares: nothing to do.",
            path.display()
        );
        return Ok(0);
    }
    println!("{} change(s) pending:", actions.len());
    for a in &actions {
        println!("  + {}\n      because {}", a.op, a.reason);
    }
    println!("Run `wa-gateway apply` to make them.");
    Ok(EXIT_PENDING)
}

/// `wa-gateway apply`: 0 when everything was done (or nothing was needed), 1 on a refusal.
pub async fn run_apply(path: &Path) -> anyhow::Result<u8> {
    let (cfg, client) = load(path).await?;
    let desired = Desired::from_config(&cfg);
    let actions = observe_and_plan(&client, &desired).await?;
    if actions.is_empty() {
        println!(
            "Meta is set up as {} declares: nothing to do.",
            path.display()
        );
        return Ok(0);
    }
    let result = apply(&client, &desired, actions).await;
    let (done, failed) = match &result {
        Ok(done) => (done.as_slice(), None),
        Err(e) => (e.done.as_slice(), Some(e.to_string())),
    };
    audit_from_cli(&cfg, done, failed.as_deref()).await;
    match result {
        Ok(done) => {
            for a in &done {
                println!("  done: {}", a.op);
            }
            println!("{} change(s) applied.", done.len());
            Ok(0)
        }
        Err(e) => {
            for a in &e.done {
                println!("  done: {}", a.op);
            }
            eprintln!("  failed: {}\nerror: {}", e.action, e.advice);
            Ok(1)
        }
    }
}

/// Records `apply`'s changes in the audit log of the file's storage, when it can be reached
/// (the changes at Meta are made either way; a warning says the entry is missing).
async fn audit_from_cli(cfg: &Config, applied: &[super::Action], error: Option<&str>) {
    // A SQLite file no gateway has made yet is not made for this entry.
    let url = cfg.storage.url.as_str();
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let file = rest
            .trim_start_matches("//")
            .split('?')
            .next()
            .unwrap_or_default();
        if !Path::new(file).exists() {
            tracing::info!(file, "no storage yet: this apply is not in the audit log");
            return;
        }
    }
    match crate::store::Store::connect_for_command(&cfg.storage).await {
        Ok(store) => {
            super::audit_apply(&store, crate::audit::CLI, applied, error).await;
            store.close().await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "storage unreachable: this apply is not in the audit log")
        }
    }
}

/// `GET /api/numbers` from the running gateway: the statuses it serves with (disconnects and
/// refused sends included). `None` when no gateway answers there.
async fn gateway_numbers(cfg: &Config) -> Option<Vec<serde_json::Value>> {
    let admin = AdminClient::for_config(cfg)?;
    match admin.get("/api/numbers").await {
        Ok(Ok(body)) => body["numbers"].as_array().cloned(),
        // The refusal is printed already.
        Ok(Err(_)) => {
            eprintln!("note: showing Meta's view only");
            None
        }
        // No gateway runs the file.
        Err(_) => None,
    }
}

/// `wa-gateway status`: a table of the declared numbers; 0 when none is in Error, else 1. It
/// shows what the running gateway (at `listen.admin`) serves with, so it agrees with
/// `/api/numbers` and the gauge; with no gateway running, what Meta says.
pub async fn run_status(path: &Path) -> anyhow::Result<u8> {
    let cfg = load_config(path).await?;
    let str_of = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let rows: Vec<[String; 6]> = match gateway_numbers(&cfg).await {
        Some(numbers) => {
            println!(
                "As served by the gateway at {}:",
                admin_base(&cfg).unwrap_or_default()
            );
            numbers
                .iter()
                .map(|n| {
                    row(
                        str_of(&n["phone_number_id"]).unwrap_or_default(),
                        str_of(&n["display_phone_number"]),
                        str_of(&n["verified_name"]).or_else(|| str_of(&n["display_name"])),
                        str_of(&n["status"]).unwrap_or_default(),
                        str_of(&n["status_since"]),
                        str_of(&n["status_reason"]),
                        str_of(&n["quality_rating"]),
                    )
                })
                .collect()
        }
        None if cfg.uses_emulator() => stored_rows(&cfg).await?,
        None => {
            let (cfg, client) = with_client(cfg).await?;
            println!("As Meta reports it (no gateway answers at listen.admin):");
            let desired = Desired::from_config(&cfg);
            let observed = observe(&client, &desired).await;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            derive_statuses(&desired, &observed, &Default::default(), now)
                .into_iter()
                .map(|s| {
                    row(
                        s.phone_number_id.to_string(),
                        s.display_phone_number,
                        s.verified_name.or(Some(s.display_name)),
                        s.status.as_str().to_owned(),
                        None,
                        s.reason,
                        s.quality_rating,
                    )
                })
                .collect()
        }
    };
    print!(
        "{}",
        table(
            ["NUMBER", "NAME", "STATUS", "SINCE", "QUALITY", "REASON"],
            &rows
        )
    );
    let errors = rows.iter().any(|r| r[2] == NumberState::Error.as_str());
    Ok(u8::from(errors))
}

/// With the built-in emulator and no gateway running there is no Meta to ask: the statuses the
/// gateway stored when it last ran (`number_status`), for the declared numbers.
async fn stored_rows(cfg: &Config) -> anyhow::Result<Vec<[String; 6]>> {
    let store = crate::store::Store::connect_for_command(&cfg.storage)
        .await
        .map_err(|e| anyhow::anyhow!("opening storage: {e}"))?;
    let stored = store.number_statuses_after(0).await;
    store.close().await;
    let stored = stored?;
    let declared: std::collections::HashMap<&str, &str> = cfg
        .numbers
        .iter()
        .map(|n| (n.phone_number_id.as_str(), n.display_name.as_str()))
        .collect();
    let rows: Vec<[String; 6]> = stored
        .into_iter()
        .filter_map(|s| {
            let name = declared.get(s.phone_number_id.as_str())?.to_string();
            let since = UNIX_EPOCH + Duration::from_secs(u64::try_from(s.since).unwrap_or(0));
            Some(row(
                s.phone_number_id,
                s.display_phone_number,
                s.verified_name.or(Some(name)),
                s.status,
                Some(humantime::format_rfc3339_seconds(since).to_string()),
                s.reason.or(s.waba_problem),
                s.quality_rating,
            ))
        })
        .collect();
    if rows.is_empty() {
        anyhow::bail!(
            "no gateway answers at listen.admin, and none has stored a number's status yet: with \
             meta.graph_url `emulator` the emulator runs inside `serve`, so start \
             `wa-gateway serve -c FILE` first"
        );
    }
    println!(
        "As the gateway stored it when it last ran (none answers at listen.admin; the built-in \
         emulator runs inside it):"
    );
    Ok(rows)
}

fn row(
    pnid: String,
    display: Option<String>,
    name: Option<String>,
    status: String,
    since: Option<String>,
    reason: Option<String>,
    quality: Option<String>,
) -> [String; 6] {
    let number = match display {
        Some(d) => format!("{pnid} ({d})"),
        None => pnid,
    };
    [
        number,
        name.unwrap_or_default(),
        status,
        since.unwrap_or_else(|| "-".into()),
        quality.unwrap_or_else(|| "-".into()),
        reason.unwrap_or_default(),
    ]
}
