//! Invariant 7: secret values never appear in logs, metrics, admin responses, error text or a
//! Debug print. A gateway runs with distinctive secrets (from files, as in Kubernetes), goes
//! through ordinary and failing paths, and every output is searched for them.

mod common;

use common::*;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every log line the gateway writes in this test binary, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const SECRETS: [(&str, &str); 5] = [
    ("app_secret", "APPSECRET-7f3a9c"),
    ("verify_token", "VERIFYTOKEN-51be02"),
    ("token", "ACCESSTOKEN-e4d1aa"),
    ("admin_token", "ADMINTOKEN-9c0d3e"),
    ("agent_key", "AGENTKEY-2b7f61"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_anywhere() {
    let logs = Captured::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .init();

    let Some(storage) = storage(Db::Sqlite).await else {
        return;
    };
    let dir = storage.dir.path().to_owned();
    for (name, value) in SECRETS {
        std::fs::write(dir.join(name), value).unwrap();
    }
    // The emulator holds the same values, as Meta would.
    let emu = wa_gateway::emulator::start(
        wa_gateway::emulator::EmulatorConfig {
            app_id: "1000000000000001".into(),
            app_secret: SECRETS[0].1.into(),
            verify_token: SECRETS[1].1.into(),
            numbers: vec![wa_gateway::emulator::EmulatorNumber {
                phone_number_id: PNID.into(),
                waba_id: WABA.into(),
                display_phone_number: "15550001111".into(),
                access_token: SECRETS[2].1.into(),
            }],
            ..Default::default()
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    let agent = RecordingAgent::start().await;
    let port = free_port();
    let d = dir.display();
    let yaml = format!(
        "version: 1\nlisten: {{ webhook: \"127.0.0.1:{port}\", admin: \"127.0.0.1:0\", admin_token: {{ file: {d}/admin_token }} }}\n\
         public_url: http://127.0.0.1:{port}/webhook\nstorage: {{ url: \"{url}\" }}\n\
         meta:\n  graph_url: {graph}\n  app_id: \"1000000000000001\"\n  app_secret: {{ file: {d}/app_secret }}\n  verify_token: {{ file: {d}/verify_token }}\n\
         agents:\n  rec: {{ kind: http, url: \"{agent}\", headers: {{ Authorization: {{ file: {d}/agent_key }} }} }}\n\
         numbers:\n  - {{ phone_number_id: \"{PNID}\", waba_id: \"{WABA}\", agent: rec, access_token: {{ file: {d}/token }} }}\n",
        url = storage.url,
        graph = emu.url(),
        agent = agent.url,
    );
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, &yaml).unwrap();
    emu.set_webhook_url(format!("http://127.0.0.1:{port}/webhook"));
    let gw = wa_gateway::app::Gateway::start_from(&path).await.unwrap();
    let http = reqwest::Client::new();
    let admin = format!("http://{}", gw.admin_addr);
    let mut outputs: Vec<(String, String)> = Vec::new();

    // An ordinary exchange, and a reply Meta refuses with an expired token.
    emu.customer_says(PNID, "919897000001", "S", "hello").await;
    assert!(
        emu.wait_sent(|s| !s.is_empty(), Duration::from_secs(20))
            .await
    );
    assert!(agent.calls()[0].to_string().len() > 2);
    emu.push_fault(wa_gateway::emulator::Fault::once(
        wa_gateway::emulator::FaultKind::TokenExpired190,
    ));
    emu.customer_says(PNID, "919897000001", "S", "again").await;
    let url = storage.url.clone();
    assert!(
        wait_until(Duration::from_secs(20), || async {
            count(&url, "SELECT COUNT(*) FROM outbox WHERE error_code = 190").await == 1
        })
        .await
    );
    // A forged webhook, a wrong handshake token, a wrong admin token.
    let forged = http
        .post(gw.webhook_url())
        .header("x-hub-signature-256", "sha256=00")
        .body("{}")
        .send()
        .await
        .unwrap();
    outputs.push(("forged webhook".into(), forged.text().await.unwrap()));
    let handshake = http
        .get(format!(
            "{}?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1",
            gw.webhook_url()
        ))
        .send()
        .await
        .unwrap();
    outputs.push(("handshake".into(), handshake.text().await.unwrap()));
    let refused = http
        .get(format!("{admin}/api/numbers"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    outputs.push(("wrong admin token".into(), refused.text().await.unwrap()));
    // Everything the admin listener shows.
    for route in [
        "/api/numbers",
        "/api/config",
        "/api/openapi.json",
        "/",
        "/config/status",
    ] {
        let body = http
            .get(format!("{admin}{route}"))
            .bearer_auth(SECRETS[3].1)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        outputs.push((route.into(), body));
    }
    let metrics = http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wa_gateway_meta_errors_total{code=\"190\"} 1"),
        "{metrics}"
    );
    outputs.push(("/metrics".into(), metrics));
    // A reload refused for an error next to a secret, and the errors of a broken file.
    std::fs::write(&path, yaml.replace("agents:", "agentz:")).unwrap();
    let refused = gw.reload_now().await;
    outputs.push(("refused reload".into(), format!("{refused:?}")));
    let broken = wa_gateway::config::load(&path).unwrap_err();
    outputs.push(("config error".into(), broken.to_string()));
    let config = wa_gateway::config::load(&path.with_file_name("missing.yaml")).unwrap_err();
    outputs.push(("missing file".into(), config.to_string()));
    std::fs::write(&path, &yaml).unwrap();
    let cfg = wa_gateway::config::load(&path).unwrap();
    outputs.push(("Debug of the config".into(), format!("{cfg:?}")));
    outputs.push((
        "Serialize of the config".into(),
        serde_json::to_string(&cfg).unwrap(),
    ));
    // The stored rows (an outbox error message, dead letters) are outputs too.
    for (table, columns) in [
        ("outbox", "payload || ' ' || COALESCE(error_message, '')"),
        (
            "inbox",
            "payload || ' ' || COALESCE(text, '') || ' ' || COALESCE(detail, '')",
        ),
        ("dead_letters", "reason || ' ' || body"),
    ] {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&storage.url).await.unwrap();
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT {columns} FROM {table}"))
            .fetch_all(&mut c)
            .await
            .unwrap();
        outputs.push((format!("table {table}"), rows.join("\n")));
    }
    gw.shutdown(Duration::from_secs(5)).await;
    outputs.push((
        "logs".into(),
        String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned(),
    ));

    assert!(
        outputs
            .iter()
            .find(|(what, _)| what == "logs")
            .unwrap()
            .1
            .contains("agent"),
        "logs were captured"
    );
    for (what, text) in &outputs {
        let may_be_empty = what == "handshake" || what.starts_with("table dead");
        assert!(
            !text.is_empty() || may_be_empty,
            "{what} is empty: the search would prove nothing"
        );
        for (name, value) in SECRETS {
            assert!(!text.contains(value), "{name} appears in {what}");
        }
    }
}
