//! The audit log, on SQLite and PostgreSQL: the reconciler's apply, disconnect and connect,
//! pause and resume, signup, a reload and `wa-gateway secret put` each leave an entry naming
//! who (the admin token's name, `cli`, or the gateway), what, when and how it ended, served at
//! `GET /api/audit` (`since`, `limit`); no entry holds a secret value; entries go after
//! `storage.retention.audit`.

use crate::common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "AUDIT-ADMIN-TOKEN-5d1e";
/// base64 of 32 bytes, the key stored secrets are sealed under.
const KEY: &str = "QVVESVQtS0VZLTAxMjM0NTY3ODlhYmNkZWYtMDEyMzQ=";
const PUT_VALUE: &str = "AUDIT-PUT-SECRET-77aa";

async fn spawn(db: Db) -> Option<TestGateway> {
    let storage = storage(db).await?;
    let yaml = config_yaml(&storage.url, &Options::default(), "echo")
        .replace(
            "  admin: 127.0.0.1:0\n",
            &format!("  admin: 127.0.0.1:0\n  admin_token: {{ value: {TOKEN} }}\n"),
        )
        .replace(
            "  app_id: \"1000000000000001\"\n",
            &format!("  app_id: \"1000000000000001\"\n  encryption_key: {{ value: \"{KEY}\" }}\n"),
        );
    Some(start_from_yaml(storage, &yaml).await)
}

async fn post(t: &TestGateway, path: &str, body: Value) -> (u16, Value) {
    admin_post(t, TOKEN, path, body).await
}

async fn audit(t: &TestGateway, query: &str) -> Vec<Value> {
    let (status, v) = admin_get(t, TOKEN, &format!("/api/audit?{query}")).await;
    assert_eq!(status, 200, "{v}");
    v["entries"].as_array().expect("entries").clone()
}

fn find<'a>(entries: &'a [Value], action: &str) -> Option<&'a Value> {
    entries.iter().find(|e| e["action"] == action)
}

async fn every_change_is_audited_without_a_secret(db: Db) {
    let Some(mut t) = spawn(db).await else {
        return;
    };
    // The reconciler's first pass subscribes the app at the emulator.
    let applied = wait_until(WAIT, || async {
        find(&audit(&t, "since=1h").await, "reconcile.apply").is_some()
    })
    .await;
    assert!(applied, "{:?}", audit(&t, "since=1h").await);

    for action in ["disconnect", "connect"] {
        let (status, v) = post(&t, &format!("/api/numbers/{PNID}/{action}"), json!({})).await;
        assert_eq!(status, 200, "{v}");
    }
    let conv = format!("/api/conversations/{PNID}/15550009001");
    let (status, v) = post(&t, &format!("{conv}/pause"), json!({ "reason": "VIP" })).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = post(&t, &format!("{conv}/resume"), json!({})).await;
    assert_eq!(status, 200, "{v}");
    let code = t.emu.signup_code(WABA).expect("a signup code");
    let (status, v) = post(&t, "/api/signup", json!({ "code": code, "waba_id": WABA })).await;
    assert_eq!(status, 200, "{v}");
    t.reload_with(|y| y.replace("Test One", "Test Uno")).await;
    let out = cli_with_stdin(&["secret", "put", "audited"], &t.config_path, PUT_VALUE);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let entries = audit(&t, "since=1h&limit=1000").await;
    for (action, actor, target) in [
        ("reconcile.apply", "gateway", None),
        ("number.disconnect", "admin_token", Some(PNID.to_owned())),
        ("number.connect", "admin_token", Some(PNID.to_owned())),
        (
            "conversation.pause",
            "admin_token",
            Some(format!("{PNID}/15550009001")),
        ),
        (
            "conversation.resume",
            "admin_token",
            Some(format!("{PNID}/15550009001")),
        ),
        ("signup", "admin_token", Some(WABA.to_owned())),
        ("config.reload", "gateway", None),
        ("secret.put", "cli", Some("audited".to_owned())),
    ] {
        let e = find(&entries, action).unwrap_or_else(|| panic!("no {action} in {entries:?}"));
        assert_eq!(e["actor"], actor, "{e}");
        assert_eq!(e["outcome"], "ok", "{e}");
        assert!(e["at"].as_str().unwrap().ends_with('Z'), "{e}");
        if let Some(target) = target {
            assert_eq!(e["target"], target, "{e}");
        }
    }
    let pause = find(&entries, "conversation.pause").unwrap();
    assert!(pause["detail"].as_str().unwrap().contains("VIP"), "{pause}");

    // `since` and `limit` bound the answer; a bad `since` is refused with what to send.
    assert_eq!(audit(&t, "limit=1").await.len(), 1);
    assert!(audit(&t, "since=2999-01-01T00:00:00Z").await.is_empty());
    assert_eq!(admin_get(&t, TOKEN, "/api/audit?since=soon").await.0, 400);
    assert_eq!(
        admin_get(&t, "wrong", "/api/audit").await.0,
        401,
        "token-guarded"
    );

    // No entry holds a secret value: the tokens, the key, the signup code, the value put.
    let text = serde_json::to_string(&entries).unwrap();
    for secret in [
        TOKEN,
        KEY,
        PUT_VALUE,
        code.as_str(),
        APP_SECRET,
        VERIFY_TOKEN,
        "token-one",
    ] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }
    t.stop().await;
}

async fn the_audit_log_is_pruned_after_its_retention(db: Db) {
    let opts = Options {
        storage_extra: "  retention: { messages: 1h, audit: 2s, interval: 1s }\n".into(),
        ..Options::default()
    };
    let Some(mut t) = spawn_gateway(db, opts).await else {
        return;
    };
    // No token configured: the actor is `open`.
    let (status, v) = admin_post(
        &t,
        "",
        &format!("/api/numbers/{PNID}/disconnect"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = admin_get(&t, "", "/api/audit").await;
    let entry = find(v["entries"].as_array().unwrap(), "number.disconnect").cloned();
    assert_eq!(
        entry.map(|e| e["actor"].clone()),
        Some(json!("open")),
        "{v}"
    );
    assert!(
        t.wait_count("SELECT COUNT(*) FROM audit_log", 0, WAIT)
            .await,
        "entries older than storage.retention.audit are deleted"
    );
    let metrics = t.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wa_gateway_store_pruned_rows_total{table=\"audit_log\"}")),
        "{metrics}"
    );
    t.stop().await;
}

on_both_dbs!(
    every_change_is_audited_without_a_secret,
    the_audit_log_is_pruned_after_its_retention,
);
