//! The `test-connection` and `doctor` commands: Test Connection for one number or every enabled
//! one, from here against Meta or, with the built-in emulator, inside the running gateway.

use super::connection::{Outcome, Report, Target, test_connection};
use crate::agent::Agent;
use crate::cli::{admin_base, load_config, table, with_client};
use crate::config::Config;
use crate::graph::GraphClient;
use crate::ids::PhoneNumberId;
use crate::reconcile::Desired;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Runs Test Connection for the declared number `pnid` of `cfg` from here: Graph through
/// `meta.graph_url`, the probe webhook through `public_url`, the agent from the file.
async fn check_number(
    cfg: &Config,
    client: &GraphClient,
    desired: &Desired,
    pnid: &PhoneNumberId,
) -> anyhow::Result<Report> {
    let declared = desired.number(pnid).ok_or_else(|| {
        let ids: Vec<String> = desired
            .numbers
            .iter()
            .map(|n| n.phone_number_id.to_string())
            .collect();
        anyhow::anyhow!(
            "number {pnid} is not declared in the file; declared: {}",
            ids.join(", ")
        )
    })?;
    let number = cfg
        .numbers
        .iter()
        .find(|n| &n.phone_number_id == pnid)
        .expect("declared numbers come from the file");
    let agent_cfg = cfg.agents.get(&number.agent).ok_or_else(|| {
        anyhow::anyhow!(
            "numbers[{}].agent {} is not declared",
            declared.index,
            number.agent
        )
    })?;
    let agent = Agent::from_config(agent_cfg)
        .map_err(|e| anyhow::anyhow!("agent {}: {e}", number.agent))?;
    let target = Target {
        client,
        desired,
        number: declared,
        agent_name: &number.agent,
        agent: &agent,
        probe_url: cfg.public_url.clone(),
        app_secret: cfg.meta.app_secret.expose(),
    };
    Ok(test_connection(&target).await)
}

/// A report as people read it: one line per check, the fix under a failure.
pub fn render_report(r: &Report) -> String {
    let name = if r.display_name.is_empty() {
        String::new()
    } else {
        format!(" ({})", r.display_name)
    };
    let mut out = format!(
        "{} {}{name}\n",
        if r.ok { "OK  " } else { "FAIL" },
        r.phone_number_id,
    );
    let width = r.checks.iter().map(|c| c.title.len()).max().unwrap_or(0);
    for c in &r.checks {
        out.push_str(&format!(
            "  {}  {:<width$}  {}\n",
            c.outcome.label(),
            c.title,
            c.detail
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("        {:<width$}  fix: {fix}\n", ""));
        }
    }
    out
}

/// With the built-in emulator (it lives inside `serve`), Test Connection runs in the gateway:
/// `POST /api/numbers/{pnid}/test` on its admin listener.
async fn check_in_gateway(cfg: &Config, pnid: &str) -> anyhow::Result<Report> {
    let Some(base) = admin_base(cfg) else {
        anyhow::bail!(
            "meta.graph_url is `emulator` and listen.admin has port 0: the checks run inside the \
             gateway, so give listen.admin a fixed port and start `wa-gateway serve`"
        );
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()?;
    // The admin API takes changes as JSON only (its cross-site defence): `{}` for no arguments.
    let mut req = http
        .post(format!("{base}/api/numbers/{pnid}/test"))
        .json(&serde_json::json!({}));
    if let Some(token) = &cfg.listen.admin_token {
        req = req.bearer_auth(token.expose());
    }
    let res = req.send().await.map_err(|e| {
        anyhow::anyhow!(
            "meta.graph_url is `emulator`, so the checks run inside the gateway, but none answers at {base}: start `wa-gateway serve` ({})",
            e.without_url()
        )
    })?;
    if !res.status().is_success() {
        let status = res.status().as_u16();
        let body: serde_json::Value = res.json().await.unwrap_or_default();
        anyhow::bail!(
            "the gateway at {base} answered HTTP {status}: {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(res.json().await?)
}

/// Test Connection for `pnid`: from here against Meta, or in the gateway with the emulator.
async fn check(cfg: &Config, pnid: &PhoneNumberId) -> anyhow::Result<Report> {
    if cfg.uses_emulator() {
        return check_in_gateway(cfg, pnid.as_str()).await;
    }
    let (cfg, client) = with_client(cfg.clone()).await?;
    let desired = Desired::from_config(&cfg);
    check_number(&cfg, &client, &desired, pnid).await
}

/// `wa-gateway test-connection ID`: 0 when every check passed, 1 otherwise.
pub async fn run_test_connection(path: &Path, pnid: &str) -> anyhow::Result<u8> {
    let cfg = load_config(path).await?;
    let report = check(&cfg, &PhoneNumberId::from(pnid)).await?;
    print!("{}", render_report(&report));
    Ok(u8::from(!report.ok))
}

/// How early `doctor` warns that the Graph API version in the file ends: a quarter ahead, time
/// enough to test a newer version and roll it out.
const API_VERSION_HORIZON: Duration = Duration::from_secs(90 * 86_400);

/// The warning `doctor` prints about `version` at `now`: expired or ending within 90 days.
pub fn api_version_warning(version: &str, now: SystemTime) -> Option<String> {
    crate::cloudapi::versions::expiry_warning(version, now, API_VERSION_HORIZON)
}

/// `wa-gateway doctor`: Test Connection for every enabled number, a summary table, then each
/// failing number's checks; 0 when all passed, 1 otherwise.
pub async fn run_doctor(path: &Path) -> anyhow::Result<u8> {
    let cfg = load_config(path).await?;
    let desired = Desired::from_config(&cfg);
    let mut reports = Vec::new();
    let mut rows = Vec::new();
    for n in &desired.numbers {
        if !n.enabled {
            rows.push([
                n.phone_number_id.to_string(),
                n.display_name.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "not tested: enabled: false".into(),
            ]);
            continue;
        }
        let r = check(&cfg, &n.phone_number_id).await?;
        let count = |o: Outcome| {
            r.checks
                .iter()
                .filter(|c| c.outcome == o)
                .count()
                .to_string()
        };
        let first_fail = r
            .checks
            .iter()
            .find(|c| c.outcome == Outcome::Fail)
            .map_or_else(
                || "all checks passed".to_owned(),
                |c| format!("{}: {}", c.title, c.detail),
            );
        rows.push([
            r.phone_number_id.clone(),
            r.display_name.clone(),
            count(Outcome::Pass),
            count(Outcome::Fail),
            count(Outcome::Skip),
            first_fail,
        ]);
        reports.push(r);
    }
    print!(
        "{}",
        table(
            ["NUMBER", "NAME", "PASS", "FAIL", "SKIP", "FIRST PROBLEM"],
            &rows
        )
    );
    let failing: Vec<&Report> = reports.iter().filter(|r| !r.ok).collect();
    for r in &failing {
        print!("\n{}", render_report(r));
    }
    if failing.is_empty() {
        println!("\nEvery number passed Test Connection.");
    } else {
        println!("\n{} of {} number(s) failed.", failing.len(), reports.len());
    }
    if let Some(warning) = api_version_warning(&cfg.meta.api_version, SystemTime::now()) {
        println!("\nwarning: meta.api_version: {warning}");
    }
    Ok(u8::from(!failing.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_the_number_and_shows_no_empty_parentheses() {
        let report = |display_name: &str| Report {
            phone_number_id: "106540352242922".into(),
            display_name: display_name.into(),
            ok: true,
            checks: Vec::new(),
        };
        assert_eq!(
            render_report(&report("Acme")).lines().next(),
            Some("OK   106540352242922 (Acme)")
        );
        assert_eq!(
            render_report(&report("")).lines().next(),
            Some("OK   106540352242922")
        );
    }

    #[test]
    fn doctor_warns_a_quarter_before_the_graph_api_version_ends() {
        let at = |day: &str| humantime::parse_rfc3339(&format!("{day}T00:00:00Z")).unwrap();
        // v23.0 ends 2027-10-08: quiet until 90 days before, then a warning naming the date.
        assert_eq!(api_version_warning("v23.0", at("2027-07-09")), None);
        let soon = api_version_warning("v23.0", at("2027-07-10")).unwrap();
        assert!(soon.contains("expires on 2027-10-08, in 90 days"), "{soon}");
        let gone = api_version_warning("v23.0", at("2027-10-08")).unwrap();
        assert!(gone.contains("expired on 2027-10-08"), "{gone}");
        assert_eq!(api_version_warning("v26.0", at("2027-10-08")), None);
    }
}
