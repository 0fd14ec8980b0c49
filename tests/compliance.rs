//! The last ways a reply could go wrong, over the wire on SQLite and PostgreSQL: an opt-out
//! takes effect when it is committed (inside a coalescing window, during a slow agent turn),
//! every opt-out keyword the README documents works, a status webhook settles only the reply it
//! names (installation, number, recipient), and NUL characters, which PostgreSQL text refuses,
//! are handled the same on both databases.

use crate::common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Waits until no reply of the test's database is still on its way, then returns what the
/// emulator accepted for `to`.
async fn settled_texts(t: &TestGateway, to: &str) -> Vec<String> {
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'sending')",
            0,
            WAIT
        )
        .await,
        "replies still open"
    );
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM inbox WHERE state = 'received'",
            0,
            WAIT
        )
        .await,
        "messages still waiting"
    );
    t.texts_to(to)
}

/// "hello", then STOP 0.4 s later with `coalesce: 2s`: the STOP arrives inside the window that
/// holds "hello" back. Only the confirmation goes out, and the agent is never asked.
async fn stop_inside_a_coalescing_window_sends_only_the_confirmation(db: Db) {
    let agent = RecordingAgent::start().await;
    let opts = Options {
        agents: agent.agents_yaml(),
        extra: "policies:\n  coalesce: 2s\n".into(),
        ..Options::default()
    };
    let Some(mut t) = spawn_gateway_with_agent(db, opts, "rec").await else {
        return;
    };
    let customer = "919870000001";
    t.emu.customer_says(PNID, customer, "C", "hello").await;
    assert!(
        t.wait_count("SELECT COUNT(*) FROM inbox", 1, WAIT).await,
        "hello committed"
    );
    t.emu.customer_says(PNID, customer, "C", "STOP").await;
    assert!(
        t.emu.wait_sent(|s| !s.is_empty(), WAIT).await,
        "the confirmation goes out"
    );
    let texts = settled_texts(&t, customer).await;
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(texts[0].contains("START"), "{texts:?}");
    assert_eq!(agent.count(), 0, "the agent never saw hello");
    assert_eq!(
        t.count(
            "SELECT COUNT(*) FROM inbox WHERE state = 'skipped' AND detail = 'customer opted out'"
        )
        .await,
        1,
        "hello closed by the STOP's commit"
    );
    t.stop().await;
}

/// An `http` agent that holds every call until released, counting the calls it has started.
struct SlowAgent {
    started: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Semaphore>,
    url: String,
}

impl SlowAgent {
    async fn start() -> Self {
        use axum::{Json, Router, extract::State, routing::post};
        type Shared = (Arc<AtomicUsize>, Arc<tokio::sync::Semaphore>);
        async fn handle(
            State((started, release)): State<Shared>,
            Json(turn): Json<serde_json::Value>,
        ) -> Json<serde_json::Value> {
            started.fetch_add(1, Ordering::SeqCst);
            release.acquire().await.unwrap().forget();
            let text = turn["message"]["text"].as_str().unwrap_or_default();
            Json(serde_json::json!({ "reply": format!("re: {text}") }))
        }
        let started = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let app = Router::new()
            .route("/reply", post(handle))
            .with_state((started.clone(), release.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/reply", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            started,
            release,
            url,
        }
    }
}

/// STOP while the agent is still thinking about "hello": the turn's answer is dropped when it
/// comes back, and only the confirmation goes out.
async fn stop_during_a_slow_agent_turn_sends_only_the_confirmation(db: Db) {
    let agent = SlowAgent::start().await;
    let opts = Options {
        agents: format!(
            "  slow: {{ kind: http, url: \"{}\", timeout: 30s }}\n  echo: {{ kind: echo }}\n",
            agent.url
        ),
        ..Options::default()
    };
    let Some(mut t) = spawn_gateway_with_agent(db, opts, "slow").await else {
        return;
    };
    let customer = "919870000002";
    t.emu.customer_says(PNID, customer, "C", "hello").await;
    let started = agent.started.clone();
    assert!(
        wait_until(WAIT, || async { started.load(Ordering::SeqCst) == 1 }).await,
        "the agent is working on hello"
    );
    t.emu.customer_says(PNID, customer, "C", "stop").await;
    assert!(
        t.wait_count("SELECT COUNT(*) FROM opt_outs WHERE opted_out = 1", 1, WAIT)
            .await,
        "the opt-out is committed with the STOP"
    );
    agent.release.add_permits(1);
    assert!(t.emu.wait_sent(|s| !s.is_empty(), WAIT).await);
    let texts = settled_texts(&t, customer).await;
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(texts[0].contains("START"), "{texts:?}");
    assert_eq!(agent.started.load(Ordering::SeqCst), 1);
    assert_eq!(
        t.count("SELECT COUNT(*) FROM outbox WHERE kind = 'reply'")
            .await,
        0,
        "the answer to hello was never queued"
    );
    // And opting back in works as before: START is confirmed, then the agent answers again.
    t.emu.customer_says(PNID, customer, "C", "START").await;
    t.emu.customer_says(PNID, customer, "C", "again").await;
    let (release, emu) = (agent.release.clone(), t.emu.clone());
    assert!(
        wait_until(WAIT, || {
            release.add_permits(1);
            let emu = emu.clone();
            async move { emu.sent().iter().filter(|m| m.to == customer).count() == 3 }
        })
        .await
    );
    let texts = t.texts_to(customer);
    assert!(texts[1].contains("Welcome back"), "{texts:?}");
    assert_eq!(texts[2], "re: again");
    t.stop().await;
}

/// The keywords the README lists between `<!-- name -->` markers.
fn readme_keywords(name: &str) -> Vec<String> {
    let readme = include_str!("../README.md");
    let open = format!("<!-- {name} -->");
    let close = format!("<!-- /{name} -->");
    let start = readme.find(&open).expect("README marker") + open.len();
    let end = readme.find(&close).expect("README closing marker");
    readme[start..end]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The README lists exactly the default keywords, and each one (as written and in lower case)
/// is recognised as what it is listed as.
#[test]
fn the_readme_lists_exactly_the_default_keywords() {
    use wa_gateway::config::policy::{DEFAULT_RESUME_KEYWORDS, DEFAULT_STOP_KEYWORDS, OptOut};
    use wa_gateway::policy::{KeywordKind, KeywordMatcher};
    let matcher = KeywordMatcher::new(&OptOut::default());
    for (list, defaults, kind) in [
        (
            "default-stop-keywords",
            DEFAULT_STOP_KEYWORDS,
            KeywordKind::Stop,
        ),
        (
            "default-resume-keywords",
            DEFAULT_RESUME_KEYWORDS,
            KeywordKind::Resume,
        ),
    ] {
        let documented = readme_keywords(list);
        assert_eq!(
            documented, defaults,
            "README list {list} differs from the code"
        );
        for keyword in &documented {
            for said in [keyword.clone(), keyword.to_lowercase()] {
                let hit = matcher.classify(&said).map(|h| h.kind);
                assert_eq!(hit, Some(kind), "README keyword {said:?}");
            }
        }
    }
}

/// Every stop keyword the README documents opts a customer out through the whole path.
async fn every_documented_keyword_opts_out(db: Db) {
    let Some(mut t) = spawn_gateway(db, Options::default()).await else {
        return;
    };
    let keywords = readme_keywords("default-stop-keywords");
    assert!(keywords.len() >= 30, "{keywords:?}");
    for k in ["OPT-OUT", "ايقاف", "إيقاف"] {
        assert!(keywords.iter().any(|w| w == k), "{k} documented");
    }
    for (i, keyword) in keywords.iter().enumerate() {
        // Lower case too, as customers type it.
        let said = if i % 2 == 0 {
            keyword.clone()
        } else {
            keyword.to_lowercase()
        };
        t.emu
            .customer_says(PNID, &format!("91987100{i:04}"), "C", &said)
            .await;
    }
    let n = keywords.len() as i64;
    assert!(
        t.wait_count("SELECT COUNT(*) FROM opt_outs WHERE opted_out = 1", n, WAIT)
            .await,
        "every documented keyword opts out ({n})"
    );
    assert!(t.emu.wait_sent(|s| s.len() == keywords.len(), WAIT).await);
    t.stop().await;
}

/// A status envelope for `wamid` sent to `recipient` with `callback` data.
fn status_envelope(
    status: &str,
    wamid: &str,
    recipient: &str,
    callback: &str,
) -> serde_json::Value {
    let mut st = serde_json::json!({
        "id": wamid, "status": status, "timestamp": now_s().to_string(),
        "recipient_id": recipient, "biz_opaque_callback_data": callback,
    });
    if status == "failed" {
        st["errors"] = serde_json::json!([{ "code": 131026, "title": "Message undeliverable" }]);
    }
    serde_json::json!({ "object": "whatsapp_business_account", "entry": [{ "id": WABA, "changes": [{
        "field": "messages", "value": { "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550001111", "phone_number_id": PNID },
            "statuses": [st] } }] }] })
}

/// `customer` says hello and the echo agent's reply is delivered: its wamid and callback data.
async fn delivered_reply(t: &TestGateway, customer: &str) -> (String, String) {
    t.emu.customer_says(PNID, customer, "C", "hello").await;
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM outbox WHERE state = 'delivered'",
            1,
            WAIT
        )
        .await,
        "the reply is delivered"
    );
    let sent = t.emu.sent();
    let callback = sent[0].biz_opaque_callback_data.clone().unwrap();
    (sent[0].wamid.clone(), callback)
}

/// A status whose callback data comes from another installation, names another recipient or
/// number, or is an old `wagw:{id}` from before this database existed, changes nothing; the
/// right one settles the reply.
async fn status_for_another_installation_or_recipient_changes_nothing(db: Db) {
    let Some(mut t) = spawn_gateway(db, Options::default()).await else {
        return;
    };
    let customer = "919872000001";
    let (wamid, callback) = delivered_reply(&t, customer).await;
    let parts: Vec<&str> = callback.split(':').collect();
    assert_eq!(
        parts.len(),
        4,
        "wagw:installation:id:created_at, got {callback}"
    );
    let (installation, id, created) = (parts[1], parts[2], parts[3]);
    let foreign = format!("wagw:{}:{id}:{created}", "f".repeat(installation.len()));
    let forged = [
        status_envelope("failed", "wamid.other1", customer, &foreign),
        status_envelope("failed", "wamid.other2", "919872000999", &callback),
        status_envelope("failed", "wamid.other3", customer, &format!("wagw:{id}")),
        status_envelope(
            "failed",
            "wamid.other4",
            customer,
            &format!(
                "wagw:{installation}:{id}:{}",
                created.parse::<i64>().unwrap() + 1
            ),
        ),
    ];
    let mut other_number = status_envelope("failed", "wamid.other5", customer, &callback);
    other_number["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = PNID2.into();
    for env in forged.into_iter().chain([other_number]) {
        t.emu.deliver_envelope(env);
    }
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM status_events WHERE wamid LIKE 'wamid.other%'",
            5,
            WAIT
        )
        .await,
        "each is recorded"
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM outbox WHERE state = 'delivered' AND error_code IS NULL")
            .await,
        1,
        "none of them failed the reply"
    );
    // The status that names this very reply still settles it.
    t.emu
        .deliver_envelope(status_envelope("read", &wamid, customer, &callback));
    assert!(
        t.wait_count("SELECT COUNT(*) FROM outbox WHERE state = 'read'", 1, WAIT)
            .await
    );
    // A reply queued before the upgrade (its id at most legacy_outbox_max) still settles by
    // the old `wagw:{id}` form, with the right recipient.
    execute(
        &t.storage.url,
        &format!("UPDATE installation SET legacy_outbox_max = {id}"),
    )
    .await;
    t.emu.deliver_envelope(status_envelope(
        "failed",
        &wamid,
        customer,
        &format!("wagw:{id}"),
    ));
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM outbox WHERE state = 'failed' AND error_code = 131026",
            1,
            WAIT
        )
        .await,
        "the old form settles an old reply"
    );
    t.stop().await;
}

/// Runs one statement on a database by URL.
async fn execute(url: &str, sql: &str) {
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.expect(sql);
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.expect(sql);
    }
}

/// A text and a profile name with U+0000 are answered 200 and handled on both databases (the
/// NUL is dropped, see the README), and an agent whose reply or error carries one is handled
/// once, not retried forever.
async fn nul_characters_are_answered_on_both_databases(db: Db) {
    use axum::{Json, Router, http::StatusCode, response::IntoResponse, routing::post};
    async fn handle(Json(turn): Json<serde_json::Value>) -> axum::response::Response {
        let text = turn["message"]["text"].as_str().unwrap_or_default();
        if text.contains("fail") {
            (StatusCode::BAD_REQUEST, "bad\0request").into_response()
        } else {
            Json(serde_json::json!({ "reply": format!("re:\u{0} {text}") })).into_response()
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/reply", listener.local_addr().unwrap());
    let app = Router::new().route("/reply", post(handle));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let opts = Options {
        agents: format!("  nul: {{ kind: http, url: \"{url}\", timeout: 5s }}\n"),
        extra: "policies:\n  agent: { retries: 0 }\n  fallback_reply: \"Sorry.\"\n".into(),
        ..Options::default()
    };
    let Some(mut t) = spawn_gateway_with_agent(db, opts, "nul").await else {
        return;
    };
    let customer = "919873000001";
    let mut env = text_envelope(&[(WABA, PNID, vec![(customer, "wamid.NUL1", "he\u{0}llo")])]);
    env["entry"][0]["changes"][0]["value"]["contacts"][0]["profile"]["name"] = "As\u{0}ha".into();
    t.emu.record_inbound(PNID, customer, "wamid.NUL1", now_s());
    let body = serde_json::to_vec(&env).unwrap();
    assert_eq!(t.post_signed(&body).await, 200, "a NUL in a text or a name");
    assert!(t.emu.wait_sent(|s| s.len() == 1, WAIT).await);
    assert_eq!(t.texts_to(customer), ["re: hello"]);
    assert_eq!(
        t.count("SELECT COUNT(*) FROM inbox WHERE text = 'hello' AND customer_name = 'Asha'")
            .await,
        1
    );
    let fail = text_envelope(&[(WABA, PNID, vec![(customer, "wamid.NUL2", "fail\u{0}")])]);
    t.emu.record_inbound(PNID, customer, "wamid.NUL2", now_s());
    assert_eq!(
        t.post_signed(&serde_json::to_vec(&fail).unwrap()).await,
        200
    );
    assert!(t.emu.wait_sent(|s| s.len() == 2, WAIT).await);
    assert_eq!(t.texts_to(customer)[1], "Sorry.");
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM inbox WHERE state = 'failed' AND detail LIKE '%badrequest%'",
            1,
            WAIT
        )
        .await,
        "the agent's error is stored without its NUL"
    );
    let metrics = t.metrics().await;
    // Exported at 0 from the first scrape: no webhook hit a storage error while it stays 0.
    assert!(
        metrics.contains("wa_gateway_webhooks_total{result=\"storage_error\"} 0\n"),
        "no webhook hit a storage error: {metrics}"
    );
    t.stop().await;
}

/// On PostgreSQL a status that leaves a reply closed rewrites none of the outbox's indexes: the
/// row is updated in place (a heap-only tuple), which needs every index to name only columns
/// that such a status leaves as they are, and room on the row's page.
#[tokio::test]
async fn a_status_updates_its_reply_in_place_on_postgres() {
    let Some(mut t) = spawn_gateway(Db::Postgres, Options::default()).await else {
        return;
    };
    let customer = "919872000002";
    let (wamid, callback) = delivered_reply(&t, customer).await;
    t.emu
        .deliver_envelope(status_envelope("read", &wamid, customer, &callback));
    assert!(
        t.wait_count("SELECT COUNT(*) FROM outbox WHERE state = 'read'", 1, WAIT)
            .await
    );
    let url = &t.storage.url;
    execute(url, "CREATE EXTENSION IF NOT EXISTS pageinspect").await;
    // The flag PostgreSQL sets on a row version no index points at (HEAP_ONLY_TUPLE).
    let heap_only: i64 = count(
        url,
        "SELECT COUNT(*) FROM outbox o, \
           heap_page_items(get_raw_page('outbox', (o.ctid::text::point)[0]::int)) h \
         WHERE o.state = 'read' AND h.lp = (o.ctid::text::point)[1]::int \
           AND h.t_infomask2 & 32768 <> 0",
    )
    .await;
    assert_eq!(heap_only, 1, "the status updated the reply in place");
    t.stop().await;
}

on_both_dbs!(
    stop_inside_a_coalescing_window_sends_only_the_confirmation,
    stop_during_a_slow_agent_turn_sends_only_the_confirmation,
    every_documented_keyword_opts_out,
    status_for_another_installation_or_recipient_changes_nothing,
    nul_characters_are_answered_on_both_databases,
);
