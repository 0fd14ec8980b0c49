//! The admin API over real sockets: the bearer token, disconnect / connect (at once, across a
//! restart, back again), number statuses, the config view and the OpenAPI document.

use crate::common;

use common::{
    Db, Options, PNID, PNID2, RecordingAgent, TestGateway, WABA, text_envelope, wait_until,
};
use serde_json::Value;
use std::time::Duration;
use wa_gateway::app::Gateway;

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "admin-token-for-tests";
const CUSTOMER: &str = "15551230001";

/// A gateway whose first number is answered by `agent`, with `edit` applied to the YAML.
pub async fn spawn_edited(
    db: Db,
    agent: &RecordingAgent,
    second_number: bool,
    edit: impl Fn(String) -> String,
) -> Option<TestGateway> {
    let storage = common::storage(db).await?;
    let opts = Options {
        agents: agent.agents_yaml(),
        second_number,
        ..Options::default()
    };
    let yaml = edit(common::config_yaml(&storage.url, &opts, "rec"));
    let path = storage.dir.path().join("gateway.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let cfg = wa_gateway::config::load(&path).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let gw = Gateway::start(cfg).await.expect("gateway starts");
    let emu = gw.emulator.clone().unwrap();
    Some(TestGateway {
        config_path: path,
        gw: Some(gw),
        emu,
        storage,
        http: reqwest::Client::new(),
    })
}

fn with_token(yaml: String) -> String {
    yaml.replace(
        "  admin: 127.0.0.1:0\n",
        &format!("  admin: 127.0.0.1:0\n  admin_token: {{ value: {TOKEN} }}\n"),
    )
}

fn admin(t: &TestGateway, path: &str) -> String {
    format!("http://{}{path}", t.gw().admin_addr)
}

async fn get(t: &TestGateway, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = t.http.get(admin(t, path));
    if let Some(tok) = token {
        req = req.bearer_auth(tok);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn post(t: &TestGateway, path: &str) -> (u16, Value) {
    let res = t
        .http
        .post(admin(t, path))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn numbers(t: &TestGateway) -> Vec<Value> {
    let (status, body) = get(t, "/api/numbers", None).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["numbers"].as_array().unwrap().clone()
}

fn number<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter().find(|n| n["phone_number_id"] == id).unwrap()
}

async fn send(t: &TestGateway, pnid: &str, wamid: &str, text: &str) {
    // The emulator opens the customer's window as Meta would on a message it delivered.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    t.emu.record_inbound(pnid, CUSTOMER, wamid, now);
    let env = text_envelope(&[(WABA, pnid, vec![(CUSTOMER, wamid, text)])]);
    assert_eq!(t.post_signed(env.to_string().as_bytes()).await, 200);
}

async fn inbox_state(t: &TestGateway, wamid: &str, state: &str, detail: &str) -> bool {
    let sql = format!(
        "SELECT COUNT(*) FROM inbox WHERE wamid = '{wamid}' AND state = '{state}' \
         AND COALESCE(detail, '') = '{detail}'"
    );
    wait_until(WAIT, || async { t.count(&sql).await == 1 }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_is_required_and_a_wrong_one_refused() {
    let agent = RecordingAgent::start().await;
    let mut t = spawn_edited(Db::Sqlite, &agent, false, with_token)
        .await
        .unwrap();
    for path in [
        "/api/numbers",
        "/api/config",
        "/api/openapi.json",
        "/config/status",
        "/media/106540352242922/123",
    ] {
        for token in [None, Some("wrong"), Some("admin-token-for-test")] {
            let (status, body) = get(&t, path, token).await;
            assert_eq!(status, 401, "{path} {token:?}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert!(
                v["error"]
                    .as_str()
                    .unwrap()
                    .contains("Authorization: Bearer"),
                "{body}"
            );
            assert!(!body.contains(TOKEN), "{body}");
        }
    }
    let res = t
        .http
        .post(admin(&t, &format!("/api/numbers/{PNID}/disconnect")))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer realm=\"wa-gateway admin\""
    );
    for path in [
        "/api/numbers",
        "/api/config",
        "/api/openapi.json",
        "/config/status",
    ] {
        let (status, body) = get(&t, path, Some(TOKEN)).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.contains(TOKEN), "{body}");
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get(&t, path, None).await.0, 200, "{path}");
    }
    // The page without the token is a form that shows nothing about the numbers.
    let (status, page) = get(&t, "/", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"login\""), "{page}");
    assert!(!page.contains(PNID), "{page}");
    // The token in the URL is not a credential (it would end up in logs and history).
    let (_, page) = get(&t, &format!("/?token={TOKEN}"), None).await;
    assert!(page.contains("id=\"login\""), "{page}");
    assert!(!page.contains(PNID), "{page}");
    let (_, page) = get(&t, "/", Some(TOKEN)).await;
    assert!(page.contains(&format!("id=\"card-{PNID}\"")), "{page}");
    assert!(!page.contains(TOKEN), "the page never echoes the token");
    t.stop().await;
}

async fn disconnect_stops_replies_at_once_and_survives_a_restart(db: Db) {
    let agent = RecordingAgent::start().await;
    let Some(mut t) = spawn_edited(db, &agent, false, |y| y).await else {
        return;
    };
    send(&t, PNID, "wamid.before", "one").await;
    assert!(wait_until(WAIT, || async { t.texts_to(CUSTOMER).len() == 1 }).await);
    assert_eq!(agent.count(), 1);

    let (status, view) = post(&t, &format!("/api/numbers/{PNID}/disconnect")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["disconnected"], true);
    assert_eq!(view["status"], "inactive");
    assert_eq!(view["status_reason"], "disconnected");

    send(&t, PNID, "wamid.during", "two").await;
    assert!(inbox_state(&t, "wamid.during", "skipped", "number disconnected").await);
    assert_eq!(agent.count(), 1, "no agent call for a disconnected number");

    t.restart().await;
    assert_eq!(number(&numbers(&t).await, PNID)["disconnected"], true);
    send(&t, PNID, "wamid.after-restart", "three").await;
    assert!(inbox_state(&t, "wamid.after-restart", "skipped", "number disconnected").await);
    assert_eq!(agent.count(), 1, "still disconnected after a restart");

    let (status, view) = post(&t, &format!("/api/numbers/{PNID}/connect")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "active");
    send(&t, PNID, "wamid.connected", "four").await;
    assert!(wait_until(WAIT, || async { agent.count() == 2 }).await);
    assert!(
        wait_until(WAIT, || async {
            t.texts_to(CUSTOMER).contains(&"re: four".to_owned())
        })
        .await
    );
    assert!(inbox_state(&t, "wamid.connected", "done", "").await);
    t.stop().await;
}

on_both_dbs!(disconnect_stops_replies_at_once_and_survives_a_restart);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_show_inactive_when_disabled_or_disconnected() {
    let agent = RecordingAgent::start().await;
    let disable_second = |y: String| {
        y.replace(
            "access_token: { value: token-two }\n",
            "access_token: { value: token-two }\n    enabled: false\n",
        )
    };
    let mut t = spawn_edited(Db::Sqlite, &agent, true, disable_second)
        .await
        .unwrap();
    // A control-loop pass now, so Meta's view is in (the first one runs at start).
    let (status, _) = post(&t, "/api/reconcile").await;
    assert_eq!(status, 200);
    let list = numbers(&t).await;
    assert_eq!(list.len(), 2);
    let first = number(&list, PNID);
    assert_eq!(first["status"], "active");
    assert_eq!(first["display_name"], "Test One");
    assert_eq!(first["agent"], "rec");
    assert_eq!(first["last_activity"], Value::Null);
    assert_eq!(first["status_from_meta"]["status"], "active");
    assert_eq!(first["verified_name"], "Test Number");
    assert_eq!(first["queued_replies"], 0);
    let second = number(&list, PNID2);
    assert_eq!(second["enabled"], false);
    assert_eq!(second["status"], "inactive");
    assert_eq!(second["status_reason"], "disabled in the config");

    send(&t, PNID2, "wamid.to-disabled", "hello").await;
    assert!(inbox_state(&t, "wamid.to-disabled", "skipped", "number disabled").await);
    send(&t, PNID, "wamid.to-first", "hello").await;
    assert!(wait_until(WAIT, || async { agent.count() == 1 }).await);
    let list = numbers(&t).await;
    assert!(number(&list, PNID)["last_activity"].is_string());
    assert!(number(&list, PNID2)["last_activity"].is_string());

    let (status, _) = post(&t, &format!("/api/numbers/{PNID}/disconnect")).await;
    assert_eq!(status, 200);
    let list = numbers(&t).await;
    assert_eq!(number(&list, PNID)["status"], "inactive");
    assert_eq!(number(&list, PNID)["status_reason"], "disconnected");

    let (status, body) = post(&t, "/api/numbers/999/disconnect").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("GET /api/numbers"));
    let (status, body) = post(&t, "/api/numbers/999/test").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("GET /api/numbers"));
    let res = t
        .http
        .post(admin(&t, &format!("/api/numbers/{PNID}/connect")))
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_and_the_config_is_shown() {
    let agent = RecordingAgent::start().await;
    let mut t = spawn_edited(Db::Sqlite, &agent, false, |y| y)
        .await
        .unwrap();
    let (status, body) = get(&t, "/api/openapi.json", None).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).expect("OpenAPI is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = [
        ("/api/numbers", "get"),
        ("/api/numbers/{phone_number_id}/disconnect", "post"),
        ("/api/numbers/{phone_number_id}/connect", "post"),
        ("/api/numbers/{phone_number_id}/test", "post"),
        ("/api/reconcile", "post"),
        ("/api/numbers/{phone_number_id}/request_code", "post"),
        ("/api/numbers/{phone_number_id}/verify_code", "post"),
        ("/api/numbers/{phone_number_id}/register", "post"),
        ("/api/signup", "post"),
        ("/api/config", "get"),
        ("/api/customers/{id}", "delete"),
        ("/api/conversations", "get"),
        (
            "/api/conversations/{phone_number_id}/{customer}/pause",
            "post",
        ),
        (
            "/api/conversations/{phone_number_id}/{customer}/resume",
            "post",
        ),
        ("/api/cluster", "get"),
        ("/api/dead-letters", "get"),
        ("/api/dead-letters/{id}", "get"),
        ("/api/dead-letters/{id}/replay", "post"),
        ("/api/dead-letters/replay", "post"),
        ("/api/replies", "get"),
        ("/api/replies/{id}/retry", "post"),
        ("/api/replies/retry", "post"),
        ("/api/audit", "get"),
        ("/api/openapi.json", "get"),
        ("/api/session", "post"),
        ("/api/session", "delete"),
        ("/config/status", "get"),
        ("/media/{phone_number_id}/{media_id}", "get"),
        ("/", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ];
    for (path, method) in routes {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(operations, routes.len());

    let (status, body) = get(&t, "/api/config", None).await;
    assert_eq!(status, 200);
    let cfg: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(cfg["version"], 1);
    assert!(cfg["summary"].as_str().unwrap().contains("1 number"));
    let (status, body) = get(&t, "/api/nothing", None).await;
    assert_eq!(status, 404);
    assert!(body.contains("/api/openapi.json"), "{body}");
    t.stop().await;
}
