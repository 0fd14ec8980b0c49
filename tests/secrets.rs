//! Invariant 7: secret values never appear in logs, metrics, admin responses, error text or a
//! Debug print. A gateway runs with distinctive secrets (from files, as in Kubernetes, and the
//! number's token stored encrypted under `meta.encryption_key`), goes through ordinary and failing
//! paths (onboarding included), and every output is searched for them.

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

const SECRETS: [(&str, &str); 6] = [
    ("app_secret", "APPSECRET-7f3a9c"),
    ("verify_token", "VERIFYTOKEN-51be02"),
    ("token", "ACCESSTOKEN-e4d1aa"),
    ("admin_token", "ADMINTOKEN-9c0d3e"),
    ("agent_key", "AGENTKEY-2b7f61"),
    // base64 of the 32 bytes `ENCKEY-0123456789abcdef-9f8e7d6c`, searched for in both forms.
    (
        "encryption_key",
        "RU5DS0VZLTAxMjM0NTY3ODlhYmNkZWYtOWY4ZTdkNmM=",
    ),
];
const RAW_KEY: &str = "ENCKEY-0123456789abcdef-9f8e7d6c";

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
    let emu = start_emulator(wa_gateway::emulator::EmulatorConfig {
        app_secret: SECRETS[0].1.into(),
        verify_token: SECRETS[1].1.into(),
        numbers: vec![wa_gateway::emulator::EmulatorNumber {
            access_token: SECRETS[2].1.into(),
            ..emulator_number(PNID)
        }],
        ..emulator_config()
    })
    .await;
    let agent = RecordingAgent::start().await;
    let port = free_port();
    let d = dir.display();
    let config = StandaloneConfig::new(&dir, &storage.url, &emu.url())
        .webhook_port(port)
        .admin_token_file()
        .meta(&format!("  encryption_key: {{ file: {d}/encryption_key }}\n"))
        .agents(&format!(
            "  rec: {{ kind: http, url: \"{}\", headers: {{ Authorization: {{ file: {d}/agent_key }} }} }}\n",
            agent.url
        ))
        .agent("rec")
        .access_token("{ stored: acme }");
    let yaml = config.yaml();
    let path = config.write("gateway.yaml");
    // The number's token is kept encrypted in storage, as `wa-gateway secret put acme` does.
    {
        let cfg = wa_gateway::config::load(&path).unwrap();
        let store = wa_gateway::store::Store::connect(&cfg.storage)
            .await
            .unwrap();
        wa_gateway::secrets::put(&cfg, &store, "acme", SECRETS[2].1)
            .await
            .unwrap();
        store.close().await;
    }
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
    // Onboarding: a signup exchange (its new token is stored encrypted), a code request and its
    // refused resend, a wrong code, a register refused for a missing PIN at Meta's side.
    let code = emu.signup_code(WABA).unwrap();
    let post = |route: String, body: serde_json::Value| {
        let http = http.clone();
        let admin = admin.clone();
        async move {
            let r = http
                .post(format!("{admin}{route}"))
                .bearer_auth(SECRETS[3].1)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, signup) = post(
        "/api/signup".into(),
        serde_json::json!({ "code": code, "waba_id": WABA }),
    )
    .await;
    assert_eq!(status, 200, "{signup}");
    outputs.push(("signup".into(), signup));
    let (_, reused) = post(
        "/api/signup".into(),
        serde_json::json!({ "code": code, "waba_id": WABA }),
    )
    .await;
    outputs.push(("signup with a used code".into(), reused));
    for (route, body) in [
        ("request_code", serde_json::json!({})),
        ("request_code", serde_json::json!({ "method": "voice" })),
        ("verify_code", serde_json::json!({ "code": "000000" })),
        ("verify_code", serde_json::json!({ "code": "12" })),
    ] {
        let (status, text) = post(format!("/api/numbers/{PNID}/{route}"), body).await;
        outputs.push((format!("{route} {status}"), text));
    }
    // Audited operator actions: disconnect and connect, pause and resume, and a secret put by
    // the CLI whose value is one of the secrets searched for.
    for route in [
        format!("/api/numbers/{PNID}/disconnect"),
        format!("/api/numbers/{PNID}/connect"),
        format!("/api/conversations/{PNID}/919897000001/pause"),
        format!("/api/conversations/{PNID}/919897000001/resume"),
    ] {
        let (status, text) = post(route.clone(), serde_json::json!({})).await;
        assert_eq!(status, 200, "{route}: {text}");
        outputs.push((route, text));
    }
    let put = cli_with_stdin(&["secret", "put", "acme-cli"], &path, SECRETS[2].1);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    outputs.push((
        "secret put".into(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&put.stdout),
            String::from_utf8_lossy(&put.stderr)
        ),
    ));
    // Everything the admin listener shows.
    for route in [
        "/api/audit?limit=1000",
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
    let metrics = scrape_metrics(&http, &admin).await;
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
        (
            "stored_secrets",
            "name || ' ' || key_id || ' ' || hex(nonce) || ' ' || hex(ciphertext)",
        ),
        (
            "verification_requests",
            "phone_number_id || ' ' || code_method || ' ' || language",
        ),
        (
            "audit_log",
            "actor || ' ' || action || ' ' || COALESCE(target, '') || ' ' || outcome || ' ' \
             || COALESCE(detail, '')",
        ),
    ] {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&storage.url).await.unwrap();
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT {columns} FROM {table}"))
            .fetch_all(&mut c)
            .await
            .unwrap();
        outputs.push((format!("table {table}"), rows.join("\n")));
    }
    // The token signup obtained is a secret too: read it back with the key, then search for it.
    let signup_token = {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&storage.url).await.unwrap();
        let (key_id, nonce, ciphertext): (String, Vec<u8>, Vec<u8>) =
            sqlx::query_as("SELECT key_id, nonce, ciphertext FROM stored_secrets WHERE name = $1")
                .bind(format!("waba-{WABA}"))
                .fetch_one(&mut c)
                .await
                .unwrap();
        let key = wa_gateway::vault::EncryptionKey::parse(SECRETS[5].1).unwrap();
        let ring = wa_gateway::vault::Keyring::new(key, vec![]);
        let sealed = wa_gateway::vault::Sealed {
            key_id,
            nonce,
            ciphertext,
        };
        ring.open(&format!("waba-{WABA}"), &sealed).unwrap()
    };
    assert!(signup_token.starts_with("EAA"), "a real token was stored");
    // Raw ciphertext bytes hold no plaintext either.
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&storage.url).await.unwrap();
        let blobs: Vec<Vec<u8>> = sqlx::query_scalar("SELECT ciphertext FROM stored_secrets")
            .fetch_all(&mut c)
            .await
            .unwrap();
        assert_eq!(blobs.len(), 3);
        for blob in blobs {
            for value in [SECRETS[2].1, signup_token.as_str()] {
                assert!(!blob.windows(value.len()).any(|w| w == value.as_bytes()));
            }
        }
    }
    gw.shutdown(Duration::from_secs(5)).await;
    // Meta unreachable during Test Connection: a closed port, and a server that drops the
    // connection mid-request. debug_token carries the number's token in its query string.
    let resetting = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reset_url = format!("http://{}", resetting.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = resetting.accept().await {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 64];
            let _ = conn.read(&mut buf).await;
        }
    });
    for (what, graph) in [
        ("closed port", format!("http://127.0.0.1:{}", free_port())),
        ("reset", reset_url),
    ] {
        let broken = dir.join("broken.yaml");
        std::fs::write(&broken, yaml.replace(&emu.url(), &graph)).unwrap();
        let gw = wa_gateway::app::Gateway::start_from(&broken).await.unwrap();
        let res = http
            .post(format!("http://{}/api/numbers/{PNID}/test", gw.admin_addr))
            .bearer_auth(SECRETS[3].1)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "{what}");
        let report = res.text().await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&report).unwrap();
        assert_eq!(v["checks"][0]["outcome"], "fail", "{what}: {report}");
        outputs.push((format!("Test Connection, Meta {what}"), report));
        gw.shutdown(Duration::from_secs(5)).await;
    }
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
    // The audit log holds the actions that handled secrets, as rows and as `audit=true` lines.
    let table = &outputs
        .iter()
        .find(|(w, _)| w == "table audit_log")
        .unwrap()
        .1;
    for action in [
        "number.disconnect",
        "number.connect",
        "conversation.pause",
        "conversation.resume",
        "signup",
        "secret.put",
        "config.reload",
        "number.request_code",
    ] {
        assert!(table.contains(action), "{action} not audited:\n{table}");
    }
    let logs = &outputs.iter().find(|(w, _)| w == "logs").unwrap().1;
    assert!(logs.contains("audit=true"), "audit log lines");
    for (what, text) in &outputs {
        let may_be_empty = what == "handshake" || what.starts_with("table dead");
        assert!(
            !text.is_empty() || may_be_empty,
            "{what} is empty: the search would prove nothing"
        );
        for (name, value) in SECRETS.into_iter().chain([
            ("raw encryption key", RAW_KEY),
            ("signup token", signup_token.as_str()),
        ]) {
            assert!(!text.contains(value), "{name} appears in {what}");
        }
    }
}
