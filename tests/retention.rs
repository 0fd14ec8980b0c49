//! Storage is bounded in time (DESIGN invariant 11), on SQLite and PostgreSQL: answered messages
//! are pruned after `storage.retention.messages` while their wamids are still recognised, the
//! SQLite file gives space back, a sustained load keeps the database flat; and a customer's
//! erasure leaves no row carrying their id or text, while an opt-out stays in force.

use crate::common;

use common::*;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);
const FAST: &str = "  retention: { messages: 2s, interval: 1s }\n";

fn fast(agents: String) -> Options {
    Options {
        agents,
        storage_extra: FAST.into(),
        ..Options::default()
    }
}

async fn storage_is_bounded_in_time(db: Db) {
    let agent = RecordingAgent::start().await;
    let Some(mut t) = spawn_gateway_with_agent(db, fast(agent.agents_yaml()), "rec").await else {
        return;
    };
    let customer = "15550001001";
    let wamid = t.emu.customer_says(PNID, customer, "Ana", "first").await;
    assert!(
        wait_until(WAIT, || async { agent.count() == 1 }).await,
        "agent called"
    );
    assert!(t.emu.wait_sent(|s| !s.is_empty(), WAIT).await, "reply sent");
    // Every row of the answered message goes within seconds; its wamid is remembered.
    for table in ["inbox", "outbox"] {
        assert!(
            t.wait_count(&format!("SELECT COUNT(*) FROM {table}"), 0, WAIT)
                .await,
            "{table} pruned"
        );
    }
    assert_eq!(t.count("SELECT COUNT(*) FROM seen_wamids").await, 1);
    // The conversation (its 24-hour window) stays.
    assert_eq!(t.count("SELECT COUNT(*) FROM conversations").await, 1);

    // Meta redelivers the pruned message: 200, committed as nothing new, no second agent call.
    let body = text_envelope(&[(WABA, PNID, vec![(customer, wamid.as_str(), "first")])]);
    let status = t.post_signed(body.to_string().as_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(
        t.count("SELECT COUNT(*) FROM inbox").await,
        0,
        "not stored again"
    );
    // A later message is answered, so the pipeline ran past the redelivery without calling.
    t.emu.customer_says(PNID, customer, "Ana", "second").await;
    assert!(
        wait_until(WAIT, || async { agent.count() == 2 }).await,
        "second message answered"
    );
    let texts: Vec<String> = agent
        .calls()
        .iter()
        .map(|c| c["message"]["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        texts,
        ["first", "second"],
        "the redelivery never reached the agent"
    );

    let metrics = t.metrics().await;
    let pruned = metrics
        .lines()
        .find(|l| l.starts_with("wa_gateway_store_pruned_rows_total{table=\"inbox\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(pruned.is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(
        metrics.contains("wa_gateway_store_database_size_bytes "),
        "{metrics}"
    );
    // Each batch held the writer briefly.
    let slow = metrics
        .lines()
        .find(|l| l.starts_with("wa_gateway_store_prune_batch_seconds_bucket{le=\"0.025\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    let all = metrics
        .lines()
        .find(|l| l.starts_with("wa_gateway_store_prune_batch_seconds_count"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(slow, all, "every prune batch under 25 ms:\n{metrics}");
    t.stop().await;
}

/// The database's size: SQLite's pages in use by the file, PostgreSQL's database size.
async fn db_size(t: &TestGateway) -> i64 {
    if t.storage.url.starts_with("sqlite:") {
        t.count(
            "SELECT c.page_count * s.page_size FROM pragma_page_count() c, pragma_page_size() s",
        )
        .await
    } else {
        t.count("SELECT pg_database_size(current_database())").await
    }
}

/// `n` new customers each send one message of `size` bytes (one customer each, so no pacing
/// or coalescing holds a reply back).
async fn burst(t: &TestGateway, round: usize, n: usize, size: usize) {
    let text = "x".repeat(size);
    for i in 0..n {
        let from = format!("1555{round:03}{i:04}");
        t.emu
            .customer_says(PNID, &from, "Load", &format!("{round}-{i} {text}"))
            .await;
    }
}

async fn sqlite_file_shrinks_after_a_load() {
    // Kept an hour while loading; then a reload shortens retention to 2 s.
    let storage = storage(Db::Sqlite).await.expect("SQLite always runs");
    let opts = Options {
        storage_extra: "  retention: { messages: 1h, interval: 1s }\n".into(),
        ..Options::default()
    };
    let yaml = config_yaml(&storage.url, &opts, "echo");
    let mut t = start_from_yaml(storage, &yaml).await;
    let empty = db_size(&t).await;
    burst(&t, 0, 300, 4000).await;
    assert!(
        t.emu
            .wait_sent(|s| s.len() >= 300, Duration::from_secs(60))
            .await,
        "every message answered"
    );
    let loaded = db_size(&t).await;
    assert!(
        loaded > empty + 1_000_000,
        "the load took space: {empty} → {loaded}"
    );
    t.reload_with(|y| y.replace("messages: 1h", "messages: 2s"))
        .await;
    assert!(
        wait_until(WAIT, || async {
            t.count("SELECT COUNT(*) FROM inbox").await == 0
                && db_size(&t).await < empty + (loaded - empty) / 4
        })
        .await,
        "the file gives its space back: {empty} → {loaded} → {}",
        db_size(&t).await
    );
    t.stop().await;
}

async fn a_sustained_load_keeps_the_database_flat(db: Db) {
    let Some(mut t) = spawn_gateway(db, fast(Options::default().agents)).await else {
        return;
    };
    // 30 messages of 2 KB every half second for 14 s; the size is read every half second.
    let started = Instant::now();
    let mut samples: Vec<(Duration, i64)> = Vec::new();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(14) {
        let tick = Instant::now();
        burst(&t, round, 30, 2000).await;
        round += 1;
        samples.push((started.elapsed(), db_size(&t).await));
        if let Some(rest) = Duration::from_millis(500).checked_sub(tick.elapsed()) {
            // Pacing the load generator itself, not waiting on the gateway.
            tokio::time::sleep(rest).await;
        }
    }
    assert!(
        t.emu.wait_sent(|s| s.len() >= round * 30, WAIT).await,
        "the load was answered: {} of {} replies",
        t.emu.sent().len(),
        round * 30
    );
    // After the first prune cycles (retention 2 s, interval 1 s), the size stops growing.
    let warm =
        |(at, _): &&(Duration, i64)| *at >= Duration::from_secs(4) && *at < Duration::from_secs(6);
    let baseline = samples.iter().filter(warm).map(|s| s.1).max().unwrap_or(0);
    let later: Vec<i64> = samples
        .iter()
        .filter(|(at, _)| *at >= Duration::from_secs(6))
        .map(|s| s.1)
        .collect();
    let peak = later.iter().copied().max().unwrap_or(0);
    eprintln!("{db:?}: baseline {baseline} bytes, later peak {peak}, samples {samples:?}");
    assert!(
        peak <= baseline + baseline / 2,
        "the database kept growing under pruning: baseline {baseline}, peak {peak}\n{samples:?}"
    );
    t.stop().await;
}

/// Every `(table, column)` of the database, enumerated from its catalogue so that a table added
/// later is searched too.
async fn all_columns(url: &str) -> Vec<(String, String)> {
    use sqlx::Connection;
    let columns: Vec<(String, String)> = if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_as(
            "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table'",
        )
        .fetch_all(&mut c)
        .await
        .unwrap()
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema()",
        )
        .fetch_all(&mut c)
        .await
        .unwrap()
    };
    assert!(columns.len() > 30, "every table enumerated: {columns:?}");
    columns
}

/// `table.column` of every column, of every table, holding `needle` in some row (read as text).
async fn rows_mentioning(url: &str, needle: &str) -> Vec<String> {
    assert!(
        needle
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    );
    let mut found = Vec::new();
    for (table, column) in all_columns(url).await {
        let sql = format!(
            "SELECT COUNT(*) FROM \"{table}\" WHERE CAST(\"{column}\" AS TEXT) LIKE '%{needle}%'"
        );
        if count(url, &sql).await > 0 {
            found.push(format!("{table}.{column}"));
        }
    }
    found
}

async fn erasure_leaves_no_trace_and_an_opt_out_stays(db: Db) {
    let agent = RecordingAgent::start().await;
    let Some(mut t) = spawn_gateway_with_agent(
        db,
        Options {
            agents: agent.agents_yaml(),
            ..Options::default()
        },
        "rec",
    )
    .await
    else {
        return;
    };
    let (gone, kept) = ("15550002002", "15550003003");
    let secret = "my-address-is-42-elm-street";
    t.emu.customer_says(PNID, gone, "Gone", secret).await;
    t.emu.customer_says(PNID, kept, "Kept", "hello").await;
    assert!(
        wait_until(WAIT, || async { agent.count() == 2 }).await,
        "both answered"
    );
    // A STOP cancels replies not yet sent, so both go out before it.
    assert!(
        t.emu.wait_sent(|s| s.len() >= 2, WAIT).await,
        "both replies sent"
    );
    t.emu.customer_says(PNID, gone, "Gone", "STOP").await;
    assert!(
        t.emu.wait_sent(|s| s.len() >= 3, WAIT).await,
        "replies and the opt-out confirmation sent"
    );
    // A signed body that is no envelope, mentioning the customer: a dead letter of theirs.
    let junk = format!("{{\"note\": \"from {gone}: {secret}\"}}");
    assert_eq!(t.post_signed(junk.as_bytes()).await, 200);
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM outbox WHERE state NOT IN ('pending', 'sending')",
            3,
            WAIT
        )
        .await
    );
    assert!(!rows_mentioning(&t.storage.url, gone).await.is_empty());
    assert!(!rows_mentioning(&t.storage.url, secret).await.is_empty());

    let resp = t
        .http
        .delete(format!("http://{}/api/customers/{gone}", t.gw().admin_addr))
        // Every state-changing admin route takes JSON (no HTML form can send it).
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let report: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(report["deleted"]["inbox"], 2, "{report}");
    assert_eq!(report["deleted"]["outbox"], 2, "{report}");
    assert_eq!(report["deleted"]["dead_letters"], 1, "{report}");
    assert_eq!(report["deleted"]["conversations"], 1, "{report}");
    assert_eq!(report["opt_out_kept"], true, "{report}");

    let traces = rows_mentioning(&t.storage.url, gone).await;
    assert!(
        traces.is_empty(),
        "the customer's id is still in {traces:?}"
    );
    let traces = rows_mentioning(&t.storage.url, secret).await;
    assert!(
        traces.is_empty(),
        "the customer's text is still in {traces:?}"
    );
    assert!(
        !rows_mentioning(&t.storage.url, kept).await.is_empty(),
        "others untouched"
    );

    // They write again: still opted out, across a restart too.
    t.restart().await;
    t.emu
        .customer_says(PNID, gone, "Gone", "are you there?")
        .await;
    assert!(
        t.wait_count(
            &format!(
                "SELECT COUNT(*) FROM inbox WHERE customer = '{gone}' AND state <> 'received'"
            ),
            1,
            WAIT
        )
        .await
    );
    assert_eq!(
        agent.count(),
        2,
        "an opted-out customer does not reach the agent"
    );
    assert!(t.texts_to(gone).is_empty(), "and hears nothing");
    // STOP semantics hold: START opts them back in, and then they are answered.
    t.emu.customer_says(PNID, gone, "Gone", "START").await;
    assert!(
        t.emu.wait_sent(|s| !s.is_empty(), WAIT).await,
        "resume confirmation"
    );
    t.emu.customer_says(PNID, gone, "Gone", "back").await;
    assert!(
        wait_until(WAIT, || async { agent.count() == 3 }).await,
        "answered again"
    );
    t.stop().await;
}

async fn the_erase_command_prints_what_it_deleted(db: Db) {
    let Some(mut t) = spawn_gateway(db, Options::default()).await else {
        return;
    };
    let customer = "15550004004";
    t.emu.customer_says(PNID, customer, "Cli", "erase me").await;
    assert!(t.emu.wait_sent(|s| !s.is_empty(), WAIT).await, "answered");
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM outbox WHERE state = 'sending'",
            0,
            WAIT
        )
        .await
    );
    // While the gateway runs: the command opens storage itself.
    let config = t.config_path.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
            .args(["customer", "erase", customer, "--config"])
            .arg(config)
            .env("WA_GATEWAY_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in ["inbox  1", "outbox  1", "conversations  1"] {
        assert!(said.lines().any(|l| l == line), "{line:?} in:\n{said}");
    }
    assert!(rows_mentioning(&t.storage.url, customer).await.is_empty());
    // A bad id is refused with what to give instead.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
        .args(["customer", "erase", "1555%", "--config"])
        .arg(&t.config_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a wa_id"));
    t.stop().await;
}

on_both_dbs!(
    storage_is_bounded_in_time,
    a_sustained_load_keeps_the_database_flat,
    erasure_leaves_no_trace_and_an_opt_out_stays,
    the_erase_command_prints_what_it_deleted,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_gives_space_back_after_a_load() {
    sqlite_file_shrinks_after_a_load().await
}
