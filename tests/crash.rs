//! Crash safety: the gateway process is SIGKILLed with hundreds of messages acknowledged but not
//! answered, or with multi-item replies queued and in flight; after a restart every message and
//! every item is answered exactly once, in order (SQLite and PostgreSQL).

use crate::common;

use common::*;
use std::collections::HashMap;
use std::time::Duration;

/// The binary this test builds.
fn spawn_binary(config: &std::path::Path, log: &std::path::Path) -> GatewayProcess {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_wa-gateway"));
    spawn_gateway_binary(bin, config, log, "info", &[])
}

/// A gateway process on `db` calling a standalone emulator (with slow Graph calls, so replies
/// are in flight when it dies), answered by the agents `agents` (YAML) with `agent`.
struct Crashable {
    storage: Storage,
    emu: wa_gateway::emulator::EmulatorHandle,
    admin: String,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Crashable {
    async fn start(db: Db, agents: Option<(&str, &str)>) -> Option<(Self, GatewayProcess)> {
        let storage = storage(db).await?;
        let dir = storage.dir.path().to_owned();
        let emu = standalone_emulator(&dir, Duration::from_millis(500)).await;
        let (webhook_port, admin_port) = (free_port(), free_port());
        let admin = format!("127.0.0.1:{admin_port}");
        let mut config = StandaloneConfig::new(&dir, &storage.url, &emu.url())
            .webhook_port(webhook_port)
            .admin(&admin)
            .storage_extra(", lease: 2s")
            .extra(
                "policies:\n  delivery: { initial_backoff: 20ms, max_backoff: 200ms, settle_grace: 2s }\n",
            );
        if let Some((yaml, name)) = agents {
            config = config.agents(yaml).agent(name);
        }
        let config = config.write("gateway.yaml");
        emu.set_webhook_url(format!("http://127.0.0.1:{webhook_port}/webhook"));
        emu.set_latency(Duration::from_millis(300));
        let log = dir.join("gateway.log");
        let this = Crashable {
            storage,
            emu,
            admin,
            config,
            log,
        };
        let first = this.spawn().await;
        Some((this, first))
    }

    async fn spawn(&self) -> GatewayProcess {
        let process = spawn_binary(&self.config, &self.log);
        assert!(
            wait_ready(&self.admin, Duration::from_secs(30)).await,
            "gateway did not become ready; log: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        process
    }

    /// SIGKILLs `process` (no graceful shutdown) once `acked` webhooks were acknowledged and
    /// `sent_first` messages reached Meta, checks that work was left unanswered and in
    /// `sending`, and starts the gateway again with Meta answering at once.
    async fn kill_and_restart(
        &self,
        mut process: GatewayProcess,
        (acked, sent_first): (u64, usize),
        total: usize,
    ) -> GatewayProcess {
        let emu = &self.emu;
        let delivered = wait_until(Duration::from_secs(60), || async {
            emu.webhook_stats().delivered >= acked && emu.sent().len() >= sent_first
        })
        .await;
        assert!(
            delivered,
            "{acked} webhooks acknowledged: {:?}",
            emu.webhook_stats()
        );
        process.child.kill().unwrap();
        process.child.wait().unwrap();
        let answered_before = emu.sent().len();
        let url = &self.storage.url;
        let open_in = count(url, "SELECT COUNT(*) FROM inbox WHERE state = 'received'").await;
        let sending = count(url, "SELECT COUNT(*) FROM outbox WHERE state = 'sending'").await;
        eprintln!(
            "killed with {answered_before} answered, {open_in} messages waiting, {sending} replies in `sending`"
        );
        assert!(
            answered_before < total,
            "the kill must leave work unanswered (answered {answered_before})"
        );
        assert!(
            sending > 0,
            "the kill must catch replies mid-send, to exercise settling by status webhooks"
        );
        emu.set_latency(Duration::ZERO);
        self.spawn().await
    }

    /// Waits for `total` messages at Meta and nothing left open.
    async fn wait_drained(&self, total: usize) {
        let all = self
            .emu
            .wait_sent(|s| s.len() >= total, Duration::from_secs(90))
            .await;
        assert!(
            all,
            "only {} of {total} answered after restart; log: {}",
            self.emu.sent().len(),
            self.log.display()
        );
        let url = self.storage.url.clone();
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
    }
}

async fn killed_gateway_answers_everything_once(db: Db) {
    let Some((crash, first)) = Crashable::start(db, None).await else {
        return;
    };
    let emu = &crash.emu;
    let customers: Vec<String> = (0..50).map(|c| format!("9198770{c:05}")).collect();
    for i in 0..10 {
        for wa_id in &customers {
            emu.customer_says(PNID, wa_id, "K", &format!("{wa_id}-{i}"))
                .await;
        }
    }
    let _second = crash.kill_and_restart(first, (500, 0), 500).await;
    crash.wait_drained(500).await;
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

/// Each message is answered with four items (a text, buttons, a location and a reaction); the
/// gateway is SIGKILLed with such replies queued and in flight. After the restart every item
/// reached Meta exactly once, and each customer's items in the order of their messages.
async fn killed_gateway_sends_every_item_of_multi_item_replies_once_in_order(db: Db) {
    use serde_json::{Value, json};
    let agent = RecordingAgent::scripted(std::sync::Arc::new(|turn: &Value| {
        let said = turn["message"]["text"].as_str().unwrap_or_default();
        let replies = json!([
            { "text": format!("t:{said}") },
            { "buttons": { "body": format!("b:{said}"), "buttons": [ { "id": "ok", "title": "OK" } ] } },
            { "location": { "latitude": 1.0, "longitude": 2.0, "name": format!("l:{said}") } },
            { "reaction": { "emoji": "👍" } }
        ]);
        (200, json!({ "replies": replies }))
    }))
    .await;
    let agents = format!(
        "  rec: {{ kind: http, url: \"{}\", timeout: 5s }}\n",
        agent.url
    );
    let Some((crash, first)) = Crashable::start(db, Some((&agents, "rec"))).await else {
        return;
    };
    let emu = &crash.emu;
    let customers: Vec<String> = (0..20).map(|c| format!("9198771{c:05}")).collect();
    let mut wamids: HashMap<String, String> = HashMap::new();
    for i in 0..3 {
        for wa_id in &customers {
            let said = format!("{wa_id}-{i}");
            let wamid = emu.customer_says(PNID, wa_id, "M", &said).await;
            wamids.insert(wamid, said);
        }
    }
    let total = customers.len() * 3 * 4;
    let _second = crash.kill_and_restart(first, (60, 30), total).await;
    crash.wait_drained(total).await;
    // What each message at Meta says, from its item: the text, the body, the name, or the
    // customer message a reaction answers.
    let signature = |body: &Value| -> String {
        match body["type"].as_str().unwrap_or_default() {
            "text" => body["text"]["body"].as_str().unwrap_or_default().to_owned(),
            "interactive" => body["interactive"]["body"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            "location" => body["location"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            "reaction" => {
                let said = &wamids[body["reaction"]["message_id"].as_str().unwrap_or_default()];
                format!("r:{said}")
            }
            other => panic!("unexpected type {other}"),
        }
    };
    let sent = emu.sent();
    assert_eq!(sent.len(), total, "every item once");
    for wa_id in &customers {
        let got: Vec<String> = sent
            .iter()
            .filter(|m| &m.to == wa_id)
            .map(|m| signature(&m.body))
            .collect();
        let want: Vec<String> = (0..3)
            .flat_map(|i| ["t", "b", "l", "r"].map(|k| format!("{k}:{wa_id}-{i}")))
            .collect();
        assert_eq!(got, want, "items of {wa_id}: once each, in order");
    }
}

on_both_dbs!(
    killed_gateway_answers_everything_once,
    killed_gateway_sends_every_item_of_multi_item_replies_once_in_order,
);
