//! The /metrics exposition of a live gateway: it passes `promtool check metrics` (Prometheus'
//! own lint: naming, units, `_total` counters, help text) and holds the families that the
//! chart's alerts and dashboard use, with values that follow the traffic sent.

use crate::common;
use crate::tools;

use common::{Db, Options, PNID, TestGateway};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;
use wa_gateway::emulator::{Fault, FaultKind};

const ALICE: &str = "15550100001";
const BOB: &str = "15550100002";

/// Starts a gateway on `db` from its config file (as `serve` does: the config hash is
/// exported); `None` when the database is skipped.
async fn start(db: Db) -> Option<TestGateway> {
    let storage = common::storage(db).await?;
    let yaml = common::config_yaml(&storage.url, &Options::default(), "echo");
    Some(common::start_from_yaml(storage, &yaml).await)
}

/// The samples of a text exposition: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn sample(text: &str, series: &str) -> Option<f64> {
    samples(text).get(series).copied()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The backlog and last-activity gauges are read from storage at scrape time: both databases.
async fn a_live_scrape_passes_promtool_and_follows_the_traffic(db: Db) {
    let Some(promtool) = tools::promtool() else {
        return;
    };
    let started = unix_now();
    let Some(mut tg) = start(db).await else {
        return;
    };

    // Meta throttles the first send for a minute: that reply stays queued while we look.
    tg.emu.push_fault(
        Fault::once(FaultKind::RateLimit429 {
            retry_after_secs: Some(60),
        })
        .for_number(PNID),
    );
    tg.emu.customer_says(PNID, ALICE, "Alice", "hello").await;
    tg.emu.customer_says(PNID, BOB, "Bob", "STOP").await;
    let forged = tg
        .http
        .post(tg.webhook_url())
        .header("x-hub-signature-256", "sha256=00")
        .body(r#"{"object":"whatsapp_business_account","entry":[]}"#)
        .send()
        .await
        .expect("forged POST");
    assert_eq!(forged.status().as_u16(), 401);

    let depth = format!("wa_gateway_outbox_depth{{phone_number_id=\"{PNID}\"}}");
    let backlog = |text: &str| {
        sample(text, &depth).is_some_and(|d| d >= 1.0)
            && sample(text, "wa_gateway_outbox_oldest_age_seconds").is_some_and(|a| a > 0.0)
            && sample(
                text,
                &format!("wa_gateway_throttled_total{{phone_number_id=\"{PNID}\"}}"),
            )
            .is_some_and(|n| n >= 1.0)
            && text.contains("wa_gateway_opt_outs_total{action=\"stop\"")
    };
    // A lone replica leads (on PostgreSQL once it has won the election).
    assert!(
        common::wait_until(Duration::from_secs(10), || async {
            tg.gw().state.leadership.is_leader()
        })
        .await,
        "the only replica never became the leader"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut text = tg.metrics().await;
    while !backlog(&text) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = tg.metrics().await;
    }
    let backlog_seen = backlog(&text);
    assert!(
        backlog_seen,
        "the throttled reply never showed as a backlog:\n{text}"
    );

    // Prometheus' own lint: no output and exit 0 means no problem at all.
    let out = tools::run_with_stdin(
        Command::new(&promtool).args(["check", "metrics"]),
        text.as_bytes(),
    );
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics found problems:\n{}\n--- scrape\n{text}",
        tools::said(&out)
    );

    // The families the alerts and the dashboard read.
    for family in [
        "wa_gateway_webhooks_total",
        "wa_gateway_webhook_ack_seconds",
        "wa_gateway_messages_in_total",
        "wa_gateway_agent_seconds",
        "wa_gateway_meta_errors_total",
        "wa_gateway_throttled_total",
        "wa_gateway_send_retries_total",
        "wa_gateway_opt_outs_total",
        "wa_gateway_build_info",
        "wa_gateway_config_info",
        "wa_gateway_config_loaded_timestamp_seconds",
        "wa_gateway_config_last_reload_successful",
        "wa_gateway_outbox_depth",
        "wa_gateway_outbox_oldest_age_seconds",
        "wa_gateway_number_last_activity_timestamp_seconds",
        "wa_gateway_send_throttle_wait_seconds_total",
        "wa_gateway_reconcile_drift",
        "wa_gateway_leader",
        "wa_gateway_store_commit_seconds",
        "wa_gateway_conversation_workers",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} is missing from the scrape:\n{text}"
        );
    }

    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.lines()
            .any(|l| l.starts_with("wa_gateway_build_info{revision=\"")
                && l.contains(&format!("version=\"{version}\""))
                && l.ends_with(" 1")),
        "build info for {version}:\n{text}"
    );
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(&tg.config_path).unwrap(),
        ))
    };
    assert_eq!(
        sample(
            &text,
            &format!("wa_gateway_config_info{{sha256=\"{sha}\"}}")
        ),
        Some(1.0),
        "the loaded file's hash:\n{text}"
    );
    // The default meta.api_version, v23.0, ends 2027-10-08 by Meta's published table.
    assert_eq!(
        sample(
            &text,
            "wa_gateway_graph_api_version_expiry_timestamp_seconds{version=\"v23.0\"}"
        ),
        Some(1_822_953_600.0),
        "the Graph API version's end date:\n{text}"
    );
    assert_eq!(
        sample(&text, "wa_gateway_config_last_reload_successful"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "wa_gateway_webhooks_total{result=\"bad_signature\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!("wa_gateway_messages_in_total{{phone_number_id=\"{PNID}\",type=\"text\"}}")
        ),
        Some(2.0)
    );
    let last = sample(
        &text,
        &format!("wa_gateway_number_last_activity_timestamp_seconds{{phone_number_id=\"{PNID}\"}}"),
    )
    .expect("last activity of the number");
    assert!(
        last >= started.floor() - 1.0 && last <= unix_now() + 1.0,
        "last activity {last} is not the time of the messages just sent (started {started})"
    );
    assert_eq!(sample(&text, "wa_gateway_leader"), Some(1.0));
    assert_eq!(sample(&text, "wa_gateway_reconcile_drift"), Some(0.0));

    // Never a customer identifier in a label (nor anywhere in the exposition).
    for customer in [ALICE, BOB] {
        assert!(
            !text.contains(customer),
            "customer {customer} appears in /metrics:\n{text}"
        );
    }

    tg.stop().await;
}

on_both_dbs!(a_live_scrape_passes_promtool_and_follows_the_traffic);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_shows_in_the_last_reload_gauge_until_a_good_one() {
    let mut tg = start(Db::Sqlite).await.expect("sqlite storage");
    let good = std::fs::read_to_string(&tg.config_path).unwrap();
    std::fs::write(
        &tg.config_path,
        good.replace("agent: echo", "agent: nobody"),
    )
    .unwrap();
    let refused = tg.gw().reload_now().await;
    assert!(
        matches!(refused, wa_gateway::app::ReloadOutcome::Failed(_)),
        "{refused:?}"
    );
    let text = tg.metrics().await;
    assert_eq!(
        sample(&text, "wa_gateway_config_last_reload_successful"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "wa_gateway_config_reloads_total{result=\"error\"}"),
        Some(1.0)
    );

    // The good file also moves to Graph API v24.0: the end-date gauge follows the reload.
    assert!(good.contains("meta:\n"), "{good}");
    let moved = good.replace("Test One", "Test Uno").replacen(
        "meta:\n",
        "meta:\n  api_version: v24.0\n",
        1,
    );
    std::fs::write(&tg.config_path, moved).unwrap();
    let applied = tg.gw().reload_now().await;
    assert!(
        matches!(applied, wa_gateway::app::ReloadOutcome::Applied { .. }),
        "{applied:?}"
    );
    let text = tg.metrics().await;
    assert_eq!(
        sample(&text, "wa_gateway_config_last_reload_successful"),
        Some(1.0),
        "{text}"
    );
    let gauge = "wa_gateway_graph_api_version_expiry_timestamp_seconds";
    assert_eq!(
        sample(&text, &format!("{gauge}{{version=\"v24.0\"}}")),
        Some(1_834_444_800.0),
        "v24.0 ends 2028-02-18:\n{text}"
    );
    assert_eq!(
        sample(&text, &format!("{gauge}{{version=\"v23.0\"}}")),
        None,
        "only the version in force:\n{text}"
    );
    tg.stop().await;
}

/// Every family defined, with a sample each (labelled families are exported only once used), so
/// that promtool lints the whole catalogue, not only what one scrape happened to touch.
#[test]
fn every_defined_family_passes_promtool() {
    let Some(promtool) = tools::promtool() else {
        return;
    };
    let m = wa_gateway::metrics::Metrics::new();
    m.register_tls();
    m.webhooks.with_label_values(&["ok"]).inc();
    m.messages_in.with_label_values(&[PNID, "text"]).inc();
    m.messages_out.with_label_values(&[PNID, "sent"]).inc();
    m.agent_seconds
        .with_label_values(&["echo", "ok"])
        .observe(0.01);
    m.meta_errors.with_label_values(&["131047"]).inc();
    m.send_retries.with_label_values(&[PNID, "retry"]).inc();
    m.opt_outs.with_label_values(&[PNID, "stop"]).inc();
    m.opt_out_suppressed.with_label_values(&[PNID]).inc();
    m.window_expired.with_label_values(&[PNID]).inc();
    m.throttled.with_label_values(&[PNID]).inc();
    m.agent_breaker_open.with_label_values(&["echo"]).set(0);
    m.number_status.set_all([(PNID, "active")]);
    m.config_reloads.with_label_values(&["ok"]).inc();
    m.config_info.with_label_values(&["0123abcd"]).set(1);
    m.outbox_depth.with_label_values(&[PNID]).set(1);
    m.number_last_activity.with_label_values(&[PNID]).set(1);
    m.throttle_wait_seconds
        .with_label_values(&[PNID])
        .inc_by(0.5);
    m.reconcile_actions.with_label_values(&["ok"]).inc();
    m.http
        .connections_open
        .with_label_values(&["webhook"])
        .set(1);
    m.http
        .connection_timeouts
        .with_label_values(&["webhook", "header"])
        .inc();
    m.reconcile_runs.with_label_values(&["ok"]).inc();
    m.retention
        .pruned_rows
        .with_label_values(&["inbox"])
        .inc_by(3);
    m.retention
        .oldest_row_age
        .with_label_values(&["inbox"])
        .set(1.5);
    m.bounds.reply_truncated.with_label_values(&[PNID]).inc();
    m.handoff_pauses
        .with_label_values(&[PNID, "operator"])
        .inc();
    m.handoff_held.with_label_values(&[PNID]).inc();
    m.handoff_notifications.with_label_values(&["sent"]).inc();
    m.media_files.with_label_values(&[PNID, "uploaded"]).inc();
    m.set_graph_api_version("v23.0");
    let text = m.render();
    for family in m.family_names() {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} has no sample here: give it one in this test\n{text}"
        );
    }
    let out = tools::run_with_stdin(
        Command::new(&promtool).args(["check", "metrics"]),
        text.as_bytes(),
    );
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics found problems:\n{}\n--- exposition\n{text}",
        tools::said(&out)
    );
}

/// A label and the values the README lists for it (`None`: open-ended, e.g. `phone_number_id`).
type Listed = (String, Option<Vec<String>>);

/// The README's metrics table: each row's metric names and its labels.
fn readme_metrics() -> Vec<(Vec<String>, Vec<Listed>)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme
        .split("### Metrics\n")
        .nth(1)
        .expect("a Metrics section")
        .split("\n\n")
        .next()
        .unwrap();
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    table
        .lines()
        .skip(2)
        .map(|row| {
            let cells: Vec<&str> = row.split(" | ").collect();
            let names = ticked(cells[0]);
            // "`a`, `b` = x, y (why), z": `b`'s values are x, y, z.
            let mut labels = Vec::new();
            for part in cells[1].split('`').collect::<Vec<_>>().chunks(2) {
                let [before, name] = [part[0], part.get(1).copied().unwrap_or("")];
                if let Some(values) = before.trim_start().strip_prefix("= ")
                    && let Some((_, last)) = labels.last_mut()
                {
                    let mut list = Vec::new();
                    let mut depth = 0;
                    let mut word = String::new();
                    for c in values.chars().chain([',']) {
                        match c {
                            '(' => depth += 1,
                            ')' => depth -= 1,
                            ',' if depth == 0 => {
                                let w = word.trim().trim_end_matches(',').to_owned();
                                if !w.is_empty() {
                                    list.push(w);
                                }
                                word.clear();
                            }
                            _ if depth == 0 => word.push(c),
                            _ => {}
                        }
                    }
                    *last = Some(list);
                }
                if !name.is_empty() {
                    labels.push((name.to_owned(), None));
                }
            }
            (names, labels)
        })
        .collect()
}

/// Every counter and histogram of the README's table whose label values are all listed (or are
/// the declared agents) is exported from the first scrape, for every listed value (at 0 until
/// it happens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_series_is_there_from_the_first_scrape() {
    let Some(tg) = start(Db::Sqlite).await else {
        return;
    };
    let text = tg.metrics().await;
    let all = samples(&text);
    let kind = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("# TYPE {name} ")))
            .map(str::to_owned)
    };
    let mut checked = 0;
    for (names, labels) in readme_metrics() {
        let values: Option<Vec<(String, Vec<String>)>> = labels
            .iter()
            .map(|(label, values)| match (label.as_str(), values) {
                (_, Some(v)) => Some((label.clone(), v.clone())),
                ("agent", None) => Some((label.clone(), vec!["echo".to_owned()])),
                _ => None,
            })
            .collect();
        let Some(values) = values else { continue };
        for name in names {
            let series = match kind(&name).as_deref() {
                Some("counter") => name.clone(),
                Some("histogram") => format!("{name}_count"),
                _ if values.is_empty() => continue,
                Some(_) => name.clone(),
                None => panic!("{name} is in the README's table but not in the first scrape"),
            };
            let mut combos = vec![Vec::<String>::new()];
            for (label, vs) in &values {
                combos = combos
                    .iter()
                    .flat_map(|c| {
                        vs.iter()
                            .map(move |v| [c.clone(), vec![format!("{label}=\"{v}\"")]].concat())
                    })
                    .collect();
            }
            for combo in combos {
                let key = if combo.is_empty() {
                    series.clone()
                } else {
                    format!("{series}{{{}}}", combo.join(","))
                };
                // Present (at 0 unless it happened already, as commits at start do).
                assert!(all.contains_key(&key), "{key} in the first scrape:\n{text}");
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 40,
        "only {checked} series checked: is the table parsed?"
    );
}
