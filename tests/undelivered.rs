//! Dead letters and undelivered replies, on SQLite and PostgreSQL, through the CLI and the admin
//! API of a running gateway: a dead letter replayed after the parser learned its shape makes one
//! agent turn, and a second replay none; a failed reply retried inside the customer's 24-hour
//! window is sent once, and refused outside it (or after an opt-out); each change is audited.

use crate::common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "undelivered-admin-token";

/// A gateway answered by `agent` whose admin listener has a fixed port and a token, so the
/// CLI finds it; a reply is given up after two failed attempts.
async fn spawn(db: Db, agent: &RecordingAgent) -> Option<TestGateway> {
    let opts = Options {
        agents: agent.agents_yaml(),
        ..Options::default()
    };
    spawn_retrying(db, opts, "rec", TOKEN).await
}

async fn post(t: &TestGateway, path: &str, body: Value) -> (u16, Value) {
    admin_post(t, TOKEN, path, body).await
}

async fn get(t: &TestGateway, path: &str) -> Value {
    let (status, v) = admin_get(t, TOKEN, path).await;
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

/// Runs `wa-gateway <args> --config path`: exit code, stdout, stderr.
async fn cli(t: &TestGateway, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
        .args(args)
        .arg("--config")
        .arg(&t.config_path)
        .output()
        .await
        .expect("run wa-gateway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Stores a dead letter as the gateway's ingress does, returning its id.
async fn insert_dead_letter(url: &str, reason: &str, body: &str) -> i64 {
    use sqlx::Connection;
    let sql = "INSERT INTO dead_letters (received_at, reason, body) VALUES ($1, $2, $3)";
    let now = wa_gateway::store::now_ms();
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        let done = sqlx::query(sql)
            .bind(now)
            .bind(reason)
            .bind(body)
            .execute(&mut c)
            .await
            .unwrap();
        done.last_insert_rowid()
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(&format!("{sql} RETURNING id"))
            .bind(now)
            .bind(reason)
            .bind(body)
            .fetch_one(&mut c)
            .await
            .unwrap()
    }
}

/// The audit log's entries for `action`, as `GET /api/audit` shows them.
async fn audited(t: &TestGateway, action: &str) -> Vec<Value> {
    let v = get(t, "/api/audit?since=1h&limit=1000").await;
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

async fn a_dead_letter_replayed_after_the_parser_learns_its_shape_is_answered_once(db: Db) {
    let agent = RecordingAgent::start().await;
    let Some(mut t) = spawn(db, &agent).await else {
        return;
    };
    let customer = "15550008001";
    // How to have a body the parser refuses today and reads after "learning" it: the gateway
    // cannot be made to forget a message type, so the dead letter is stored as an older,
    // stricter parser left it: a body this version reads, with the reason that version gave
    // (the same row ingress writes, `dead_letters (received_at, reason, body)`). Replaying it
    // is then exactly the case of an upgrade that understands a new type.
    let body = text_envelope(&[(WABA, PNID, vec![(customer, "wamid.DEADLETTER1", "learned")])]);
    let id = insert_dead_letter(
        &t.storage.url,
        "unknown variant `text_v0`, expected one of `text`, `image`",
        &body.to_string(),
    )
    .await;
    let garbage = insert_dead_letter(&t.storage.url, "expected value", "not json at all").await;
    // Meta saw the customer write (it sent the webhook), so its window is open there too.
    let now = wa_gateway::store::now_ms() / 1000;
    t.emu
        .record_inbound(PNID, customer, "wamid.DEADLETTER1", now);

    let (code, out, err) = cli(&t, &["dead-letters", "list", "--pending"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&id.to_string()) && out.contains("text_v0"),
        "{out}"
    );
    let shown = get(&t, &format!("/api/dead-letters/{id}")).await;
    assert_eq!(shown["body"], body.to_string(), "{shown}");

    let (code, out, err) = cli(&t, &["dead-letters", "replay", &id.to_string()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ingested") && out.contains("1 new message"),
        "{out}"
    );
    assert!(
        wait_until(WAIT, || async { agent.count() == 1 }).await,
        "one turn"
    );
    assert!(
        wait_until(WAIT, || async { t.texts_to(customer).len() == 1 }).await,
        "its reply was sent"
    );

    // A second replay finds the message stored already: no new row, so no turn.
    let (status, again) = post(&t, &format!("/api/dead-letters/{id}/replay"), json!({})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["outcome"], "ingested", "{again}");
    assert_eq!(again["new_messages"], 0, "{again}");
    // The customer's next message is the conversation's next turn: had the replay queued
    // anything, its turn would come first, in order.
    t.emu.customer_says(PNID, customer, "C", "next").await;
    assert!(wait_until(WAIT, || async { agent.count() >= 2 }).await);
    let calls = agent.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[1].to_string().contains("next"), "{}", calls[1]);
    assert_eq!(
        t.count("SELECT COUNT(*) FROM inbox WHERE wamid = 'wamid.DEADLETTER1'")
            .await,
        1
    );
    let row = get(&t, &format!("/api/dead-letters/{id}")).await;
    assert_eq!(row["replays"], 2, "{row}");
    assert_eq!(row["replay_outcome"], "ingested", "{row}");
    assert!(row["replayed_at"].is_string(), "{row}");

    // `replay --all` takes what is left: the garbage stays unreadable and pending.
    let (code, out, err) = cli(&t, &["dead-letters", "replay", "--all"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("Dead letter {garbage}: unreadable")),
        "{out}"
    );
    let pending = get(&t, "/api/dead-letters?pending=true").await;
    let ids: Vec<i64> = pending["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![garbage]);

    let entries = audited(&t, "dead_letter.replay").await;
    let actors: Vec<&str> = entries
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, vec!["cli", "admin_token", "cli"], "{entries:?}");
    assert_eq!(entries[2]["target"], format!("dead_letter/{id}"));
    assert_eq!(entries[2]["outcome"], "ok");
    t.stop().await;
}

async fn retrying_a_failed_reply_sends_it_once_inside_the_window_and_refuses_outside(db: Db) {
    use wa_gateway::emulator::{Fault, FaultKind};
    let agent = RecordingAgent::start().await;
    let Some(mut t) = spawn(db, &agent).await else {
        return;
    };
    let failing = |n| Fault::once(FaultKind::Http500).times(n).for_number(PNID);
    let (inside, outside, opted) = ("15550008101", "15550008102", "15550008103");
    // Two 500s in a row exhaust the delivery's two attempts: the reply fails.
    for customer in [inside, outside, opted] {
        t.emu.push_fault(failing(2));
        t.emu.customer_says(PNID, customer, "C", "hello").await;
        let url = t.storage.url.clone();
        let sql = format!(
            "SELECT COUNT(*) FROM outbox WHERE customer = '{customer}' AND state = 'failed'"
        );
        assert!(
            wait_until(WAIT, || async { count(&url, &sql).await == 1 }).await,
            "{customer}"
        );
    }
    assert!(t.emu.sent().is_empty());
    let id_of = |customer: &str| {
        format!("SELECT CAST(id AS TEXT) FROM outbox WHERE customer = '{customer}'")
    };
    let inside_id = t.scalar(&id_of(inside)).await;
    let outside_id = t.scalar(&id_of(outside)).await;
    let opted_id = t.scalar(&id_of(opted)).await;

    let (code, out, err) = cli(
        &t,
        &["replies", "list", "--state", "failed", "--since", "1h"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    for id in [&inside_id, &outside_id, &opted_id] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{id} "))),
            "{id} in {out}"
        );
    }

    // Inside the window: sent once.
    let (code, out, err) = cli(&t, &["replies", "retry", &inside_id]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        wait_until(WAIT, || async { t.texts_to(inside).len() == 1 }).await,
        "sent"
    );
    let sent = format!("SELECT COUNT(*) FROM outbox WHERE id = {inside_id} AND state <> 'failed'");
    assert!(t.wait_count(&sent, 1, WAIT).await);
    // A second retry finds it no longer failed.
    let (status, again) = post(&t, &format!("/api/replies/{inside_id}/retry"), json!({})).await;
    assert_eq!(status, 409, "{again}");
    assert!(
        again["error"]
            .as_str()
            .unwrap()
            .contains("not failed or expired"),
        "{again}"
    );

    // Outside the window: the customer's last message as if 25 hours ago.
    let day_ago = "UPDATE conversations SET last_inbound_ts = last_inbound_ts - 90000 \
                   WHERE customer = '15550008102'";
    exec(&t.storage.url, day_ago).await;
    let (status, refused) = post(&t, &format!("/api/replies/{outside_id}/retry"), json!({})).await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("24-hour window is closed"),
        "{refused}"
    );

    // Opted out since it was written: STOP is answered with its confirmation only.
    t.emu.customer_says(PNID, opted, "C", "STOP").await;
    assert!(
        wait_until(WAIT, || async { t.texts_to(opted).len() == 1 }).await,
        "confirmed"
    );
    let (code, out, err) = cli(&t, &["replies", "retry", "--failed-since", "1h"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("Reply {outside_id}: refused")),
        "{out}"
    );
    assert!(
        out.contains(&format!("Reply {opted_id}: refused")) && out.contains("opted out"),
        "{out}"
    );

    // Nothing else left: the first customer got the one reply, the others none but STOP's.
    t.emu.customer_says(PNID, inside, "C", "later").await;
    assert!(wait_until(WAIT, || async { t.texts_to(inside).len() == 2 }).await);
    let first = t.texts_to(inside)[0].clone();
    assert!(first.contains("hello"), "{first}");
    assert!(t.texts_to(outside).is_empty());
    assert_eq!(t.texts_to(opted).len(), 1);
    for id in [&outside_id, &opted_id] {
        let sql = format!("SELECT state FROM outbox WHERE id = {id}");
        assert_eq!(t.scalar(&sql).await, "failed");
    }

    let entries = audited(&t, "reply.retry").await;
    let outcomes: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert!(outcomes.contains(&("cli", "ok")), "{entries:?}");
    assert!(
        outcomes.contains(&("admin_token", "refused")),
        "{entries:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|(_, o)| *o == "ok").count(),
        1,
        "{entries:?}"
    );
    t.stop().await;
}

/// Runs one statement on the test's database.
async fn exec(url: &str, sql: &str) {
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
    }
}

on_both_dbs!(
    a_dead_letter_replayed_after_the_parser_learns_its_shape_is_answered_once,
    retrying_a_failed_reply_sends_it_once_inside_the_window_and_refuses_outside,
);
