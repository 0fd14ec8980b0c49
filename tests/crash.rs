//! Crash safety: the gateway process is SIGKILLed with hundreds of messages acknowledged but not
//! answered; after a restart every one is answered exactly once (SQLite and PostgreSQL).

mod common;

use common::*;
use std::collections::HashMap;
use std::time::Duration;

/// The binary this test builds.
fn spawn_binary(config: &std::path::Path, log: &std::path::Path) -> GatewayProcess {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_wa-gateway"));
    spawn_gateway_binary(bin, config, log, "info", &[])
}

async fn killed_gateway_answers_everything_once(db: Db) {
    let Some(storage) = storage(db).await else {
        return;
    };
    let dir = storage.dir.path();
    let emu = standalone_emulator(dir, Duration::from_millis(500)).await;
    let (webhook_port, admin_port) = (free_port(), free_port());
    let admin = format!("127.0.0.1:{admin_port}");
    let cfg_path = StandaloneConfig::new(dir, &storage.url, &emu.url())
        .webhook_port(webhook_port)
        .admin(&admin)
        .storage_extra(", lease: 2s")
        .extra(
            "policies:\n  delivery: { initial_backoff: 20ms, max_backoff: 200ms, settle_grace: 2s }\n",
        )
        .write("gateway.yaml");
    let log = dir.join("gateway.log");
    emu.set_webhook_url(format!("http://127.0.0.1:{webhook_port}/webhook"));
    // Slow Graph calls keep replies in flight when the process dies.
    emu.set_latency(Duration::from_millis(300));

    let mut first = spawn_binary(&cfg_path, &log);
    assert!(
        wait_ready(&admin, Duration::from_secs(30)).await,
        "gateway did not become ready; log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let customers: Vec<String> = (0..50).map(|c| format!("9198770{c:05}")).collect();
    for i in 0..10 {
        for wa_id in &customers {
            emu.customer_says(PNID, wa_id, "K", &format!("{wa_id}-{i}"))
                .await;
        }
    }
    let acked = wait_until(Duration::from_secs(60), || async {
        emu.webhook_stats().delivered >= 500
    })
    .await;
    assert!(
        acked,
        "500 webhooks acknowledged: {:?}",
        emu.webhook_stats()
    );
    first.child.kill().unwrap(); // SIGKILL: no graceful shutdown.
    first.child.wait().unwrap();
    let answered_before = emu.sent().len();
    let open_in = count(
        &storage.url,
        "SELECT COUNT(*) FROM inbox WHERE state = 'received'",
    )
    .await;
    let sending = count(
        &storage.url,
        "SELECT COUNT(*) FROM outbox WHERE state = 'sending'",
    )
    .await;
    eprintln!(
        "killed with {answered_before} answered, {open_in} messages waiting, {sending} replies in `sending`"
    );
    assert!(
        answered_before < 500,
        "the kill must leave work unanswered (answered {answered_before})"
    );
    assert!(
        sending > 0,
        "the kill must catch replies mid-send, to exercise settling by status webhooks"
    );

    emu.set_latency(Duration::ZERO);
    let _second = spawn_binary(&cfg_path, &log);
    assert!(
        wait_ready(&admin, Duration::from_secs(30)).await,
        "gateway did not restart"
    );
    let all = emu
        .wait_sent(|s| s.len() >= 500, Duration::from_secs(90))
        .await;
    assert!(
        all,
        "only {} of 500 answered after restart; log: {}",
        emu.sent().len(),
        log.display()
    );
    let url = storage.url.clone();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            count(&url, "SELECT COUNT(*) FROM inbox WHERE state = 'received'").await == 0
                && count(
                    &url,
                    "SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'sending')",
                )
                .await
                    == 0
        })
        .await,
        "work left open after restart"
    );
    let mut per_text: HashMap<String, usize> = HashMap::new();
    for m in emu.sent() {
        *per_text.entry(m.text.unwrap_or_default()).or_default() += 1;
    }
    assert_eq!(per_text.len(), 500, "every message answered");
    let dupes: Vec<_> = per_text.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "answered more than once: {dupes:?}");
    // Per customer, replies leave in the order the customer wrote.
    let sent = emu.sent();
    for wa_id in &customers {
        let got: Vec<String> = sent
            .iter()
            .filter(|m| &m.to == wa_id)
            .filter_map(|m| m.text.clone())
            .collect();
        let want: Vec<String> = (0..10).map(|i| format!("echo: {wa_id}-{i}")).collect();
        assert_eq!(got, want, "order for {wa_id}");
    }
}

on_both_dbs!(killed_gateway_answers_everything_once);
