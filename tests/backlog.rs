//! A large backlog at start (SQLite): 100,000 messages left waiting in the database file while
//! the gateway was stopped. The gateway, a separate process, starts within its memory bound
//! (peak RSS under 256 MiB, read from /proc), its agent never sees more than
//! `policies.agent.max_concurrency` calls at once, the breaker stays closed, and every message
//! is answered exactly once, in order per customer.
//!
//! `WA_GATEWAY_BACKLOG_BIN` runs another build of the binary (e.g. `target/release/wa-gateway`,
//! much faster than the debug build); `WA_GATEWAY_BACKLOG_MESSAGES` changes the size.

use crate::common;

use common::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const MAX_CONCURRENCY: usize = 16;
const MESSAGES_PER_CUSTOMER: usize = 4;
const RSS_LIMIT_KIB: u64 = 256 * 1024;

/// An `http` agent that answers `re: <text>` after a few milliseconds and records the most
/// calls it ever had in flight.
struct CountingAgent {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    url: String,
}

impl CountingAgent {
    async fn start() -> Self {
        use axum::{Json, Router, extract::State, routing::post};
        type Shared = (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>);
        async fn handle(
            State((now, peak, calls)): State<Shared>,
            Json(turn): Json<serde_json::Value>,
        ) -> Json<serde_json::Value> {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(3)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            let text = turn["message"]["text"].as_str().unwrap_or_default();
            Json(serde_json::json!({ "reply": format!("re: {text}") }))
        }
        let shared: Shared = Default::default();
        let app = Router::new()
            .route("/reply", post(handle))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/reply", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            now: shared.0,
            peak: shared.1,
            calls: shared.2,
            url,
        }
    }
}

/// Peak resident set size of process `pid`, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Writes `customers × MESSAGES_PER_CUSTOMER` waiting messages straight into the database file,
/// interleaved across customers as a busy number would receive them.
async fn seed(url: &str, customers: &[String], ts: i64) {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
    let mut tx = c.begin().await.unwrap();
    let rows: Vec<(String, String, String)> = (0..MESSAGES_PER_CUSTOMER)
        .flat_map(|i| {
            customers
                .iter()
                .map(move |c| (c.clone(), format!("wamid.BL{c}-{i}"), format!("{c}-{i}")))
        })
        .collect();
    for chunk in rows.chunks(500) {
        let mut sql = String::from(
            "INSERT INTO inbox (wamid, phone_number_id, customer, wa_id, customer_name, msg_type, \
             text, payload, meta_ts, received_at, state) VALUES ",
        );
        for (i, _) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str("(?, ?, ?, ?, 'Backlog', 'text', ?, ?, ?, ?, 'received')");
        }
        let mut q = sqlx::query(&sql);
        for (customer, wamid, text) in chunk {
            let payload = serde_json::json!({ "from": customer, "id": wamid,
                "timestamp": ts.to_string(), "type": "text", "text": { "body": text } });
            q = q
                .bind(wamid)
                .bind(PNID)
                .bind(customer)
                .bind(customer)
                .bind(text)
                .bind(payload.to_string())
                .bind(ts)
                .bind(ts * 1000);
        }
        q.execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_100k_messages_starts_in_bounded_memory_and_drains_once() {
    let total: usize = std::env::var("WA_GATEWAY_BACKLOG_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let bin = std::env::var("WA_GATEWAY_BACKLOG_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_wa-gateway").to_owned());
    let storage = storage(Db::Sqlite).await.unwrap();
    let dir = storage.dir.path().to_owned();
    let agent = CountingAgent::start().await;

    let emu = start_emulator(wa_gateway::emulator::EmulatorConfig {
        // Status webhooks are not what this test is about; they would only slow it down.
        statuses: false,
        ..emulator_config()
    })
    .await;
    // Inline secrets are accepted only with the built-in emulator: point at files instead.
    write_secret_files(&dir);
    let (webhook_port, admin_port) = (free_port(), free_port());
    let admin = format!("127.0.0.1:{admin_port}");
    let cfg_path = StandaloneConfig::new(&dir, &storage.url, &emu.url())
        .webhook_port(webhook_port)
        .admin(&admin)
        .meta("  reconcile: { interval: 1h }\n")
        .agents(&format!(
            "  counted: {{ kind: http, url: \"{}\", timeout: 20s, history_turns: 0 }}\n",
            agent.url
        ))
        .agent("counted")
        .extra(&format!(
            "policies:\n  mark_read: false\n  throughput_per_number: 1000000\n  \
             agent: {{ max_concurrency: {MAX_CONCURRENCY}, retries: 0, breaker_failures: 5 }}\n"
        ))
        .write("gateway.yaml");

    // The schema, then the backlog, written with no gateway running.
    let cfg = wa_gateway::config::load(&cfg_path).expect("config valid");
    wa_gateway::store::Store::connect(&cfg.storage)
        .await
        .unwrap()
        .close()
        .await;
    let customers: Vec<String> = (0..total / MESSAGES_PER_CUSTOMER)
        .map(|c| format!("9190{c:08}"))
        .collect();
    let total = customers.len() * MESSAGES_PER_CUSTOMER;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let seeding = Instant::now();
    seed(&storage.url, &customers, ts).await;
    for c in &customers {
        emu.record_inbound(PNID, c, &format!("wamid.BL{c}-0"), ts);
    }
    eprintln!("seeded {total} messages in {:?}", seeding.elapsed());

    let log = dir.join("gateway.log");
    let started = Instant::now();
    let gateway = spawn_gateway_binary(bin.as_ref(), &cfg_path, &log, "warn", &[]);
    let pid = gateway.child.id();
    let ready = wait_ready(&admin, Duration::from_secs(60)).await;
    assert!(
        ready,
        "gateway not ready: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    eprintln!(
        "ready after {:?}, peak RSS so far {} KiB",
        started.elapsed(),
        peak_rss_kib(pid)
    );

    let drain = Duration::from_secs(
        std::env::var("WA_GATEWAY_BACKLOG_DEADLINE_S")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(900),
    );
    let mut last_report = Instant::now();
    let drained = wait_until(drain, || {
        let sent = emu.sent_count();
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "{sent} answered after {:?}, peak RSS {} KiB, agent peak {}",
                started.elapsed(),
                peak_rss_kib(pid),
                agent.peak.load(Ordering::SeqCst)
            );
            last_report = Instant::now();
        }
        std::future::ready(sent >= total)
    })
    .await;
    let rss = peak_rss_kib(pid);
    let elapsed = started.elapsed();
    eprintln!(
        "drained {} of {total} in {elapsed:?}; peak RSS {rss} KiB; agent peak in flight {}",
        emu.sent_count(),
        agent.peak.load(Ordering::SeqCst)
    );
    assert!(
        drained,
        "only {} of {total} answered in {drain:?}",
        emu.sent_count()
    );
    assert!(
        rss > 0 && rss < RSS_LIMIT_KIB,
        "peak RSS {rss} KiB, limit {RSS_LIMIT_KIB}"
    );
    let peak = agent.peak.load(Ordering::SeqCst);
    assert!(
        (2..=MAX_CONCURRENCY).contains(&peak),
        "agent calls in flight peaked at {peak} (limit {MAX_CONCURRENCY})"
    );
    assert_eq!(agent.calls.load(Ordering::SeqCst), total, "one call each");
    assert_eq!(agent.now.load(Ordering::SeqCst), 0);

    // Every message answered once, by the agent (no fallback: the breaker never opened), and
    // each customer's answers in the order the customer wrote.
    let sent = emu.sent();
    assert_eq!(sent.len(), total, "nothing answered twice");
    let mut by_customer: HashMap<&str, Vec<&str>> = HashMap::new();
    for m in &sent {
        by_customer
            .entry(m.to.as_str())
            .or_default()
            .push(m.text.as_deref().unwrap_or_default());
    }
    assert_eq!(by_customer.len(), customers.len());
    for c in &customers {
        let expected: Vec<String> = (0..MESSAGES_PER_CUSTOMER)
            .map(|i| format!("re: {c}-{i}"))
            .collect();
        assert_eq!(by_customer[c.as_str()], expected, "answers to {c}");
    }
    let metrics = scrape_metrics(&reqwest::Client::new(), &format!("http://{admin}")).await;
    assert!(
        metrics.contains("wa_gateway_agent_breaker_open{agent=\"counted\"} 0"),
        "the breaker stayed closed"
    );
    assert_eq!(
        count(
            &storage.url,
            "SELECT COUNT(*) FROM inbox WHERE state = 'done'"
        )
        .await,
        total as i64
    );
    drop(gateway);
}
