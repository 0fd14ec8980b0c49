//! The `plan`, `apply` and `status` commands: load the file, observe Meta through
//! `meta.graph_url`, print. Exit codes follow terraform's -detailed-exitcode for `plan`.

use super::{Desired, apply, derive_statuses, observe, plan};
use crate::config::Config;
use crate::graph::GraphClient;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Exit code of `plan` when changes are pending.
pub const EXIT_PENDING: u8 = 2;

async fn load(path: &Path) -> anyhow::Result<(Config, GraphClient)> {
    let cfg = crate::secrets::load_resolved(path).await?;
    if cfg.uses_emulator() {
        anyhow::bail!(
            "meta.graph_url is `emulator`: the built-in emulator lives inside `serve` and cannot be \
             reached from here; run `wa-gateway emulator` and set meta.graph_url to its URL \
             (http://127.0.0.1:8089), or point it at https://graph.facebook.com"
        );
    }
    let client = GraphClient::new(
        &cfg.meta.graph_url,
        &cfg.meta.api_version,
        Duration::from_secs(30),
    );
    Ok((cfg, client))
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
    match apply(&client, &desired, actions).await {
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

/// `wa-gateway status`: a table of the declared numbers; 0 when none is in Error, else 1.
pub async fn run_status(path: &Path) -> anyhow::Result<u8> {
    let (cfg, client) = load(path).await?;
    let desired = Desired::from_config(&cfg);
    let observed = observe(&client, &desired).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let statuses = derive_statuses(&desired, &observed, &[], now);
    let rows: Vec<[String; 5]> = statuses
        .iter()
        .map(|s| {
            let name = s
                .verified_name
                .clone()
                .unwrap_or_else(|| s.display_name.clone());
            let number = match &s.display_phone_number {
                Some(d) => format!("{} ({d})", s.phone_number_id),
                None => s.phone_number_id.to_string(),
            };
            [
                number,
                name,
                s.status.as_str().to_owned(),
                s.reason.clone().unwrap_or_default(),
                s.quality_rating.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print!(
        "{}",
        table(["NUMBER", "NAME", "STATUS", "REASON", "QUALITY"], &rows)
    );
    let errors = statuses
        .iter()
        .any(|s| s.status == super::NumberState::Error);
    Ok(u8::from(errors))
}

/// Left-aligned columns, two spaces apart.
fn table(header: [&str; 5], rows: &[[String; 5]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
    }
    out
}
