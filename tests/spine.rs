//! The spine over real sockets, on SQLite and PostgreSQL: a customer's message reaches its agent
//! and the reply reaches the customer, exactly once, in order, whatever Meta and storage do.

use crate::common;

use common::*;
use std::time::Duration;
use wa_gateway::emulator::{Fault, FaultKind};

const WAIT: Duration = Duration::from_secs(20);

async fn end_to_end_reply(db: Db) {
    let Some(mut t) = spawn_gateway(db, Options::default()).await else {
        return;
    };
    let wamid = t
        .emu
        .customer_says(PNID, "919812345678", "Asha", "hello")
        .await;
    assert!(
        t.emu
            .wait_sent(
                |s| s.iter().any(|m| m.text.as_deref() == Some("echo: hello")),
                WAIT
            )
            .await,
        "no reply reached the emulator"
    );
    let sent = t.emu.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, "919812345678");
    assert_eq!(sent[0].phone_number_id, PNID);
    let cb = sent[0]
        .biz_opaque_callback_data
        .clone()
        .expect("callback data");
    assert!(cb.starts_with("wagw:"), "{cb}");
    let emu = t.emu.clone();
    assert!(
        wait_until(WAIT, || async { emu.read_receipts().contains(&wamid) }).await,
        "message not marked read"
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM inbox WHERE state = 'done'")
            .await,
        1
    );
    // The emulator's `delivered` status webhook moves the row forward.
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM outbox WHERE state = 'delivered'",
            1,
            WAIT
        )
        .await,
        "status webhooks did not settle the outbox row"
    );
    t.stop().await;
}

async fn bad_signatures_store_nothing(db: Db) {
    let Some((rec, mut t)) = spawn_gateway_with_recorder(db).await else {
        return;
    };
    let body = serde_json::to_vec(&text_envelope(&[(
        WABA,
        PNID,
        vec![("919800000001", "wamid.SIGTEST1", "hi")],
    )]))
    .unwrap();
    let good = wa_gateway::cloudapi::signature::sign(APP_SECRET.as_bytes(), &body);
    let forged = wa_gateway::cloudapi::signature::sign(b"not-the-app-secret", &body);
    let truncated = good[..good.len() - 8].to_owned();
    let cases: [(&str, Option<String>, Vec<u8>); 4] = [
        ("missing", None, body.clone()),
        ("forged", Some(forged), body.clone()),
        ("truncated", Some(truncated), body.clone()),
        (
            "body altered",
            Some(good.clone()),
            body.iter()
                .map(|b| if *b == b'h' { b'H' } else { *b })
                .collect(),
        ),
    ];
    for (what, sig, payload) in cases {
        let mut req = t
            .http
            .post(t.webhook_url())
            .header("content-type", "application/json")
            .body(payload);
        if let Some(sig) = sig {
            req = req.header("x-hub-signature-256", sig);
        }
        let status = req.send().await.unwrap().status().as_u16();
        assert_eq!(status, 401, "{what} signature must be refused");
    }
    assert_eq!(t.count("SELECT COUNT(*) FROM inbox").await, 0);
    assert_eq!(t.count("SELECT COUNT(*) FROM dead_letters").await, 0);
    assert_eq!(rec.count(), 0, "no agent call on a bad signature");
    // The same body correctly signed goes through, so the refusals above were the signature's.
    assert_eq!(t.post_signed(&body).await, 200);
    assert!(wait_until(WAIT, || async { rec.count() == 1 }).await);
    assert_eq!(t.count("SELECT COUNT(*) FROM inbox").await, 1);
    t.stop().await;
}

async fn redelivered_webhook_answered_once(db: Db) {
    let Some((rec, mut t)) = spawn_gateway_with_recorder(db).await else {
        return;
    };
    let env = text_envelope(&[(
        WABA,
        PNID,
        vec![("919800000002", "wamid.REDELIVERED", "once please")],
    )]);
    for _ in 0..5 {
        t.emu.deliver_envelope(env.clone());
    }
    let emu = t.emu.clone();
    assert!(
        wait_until(WAIT, || async { emu.webhook_stats().delivered >= 5 }).await,
        "5 deliveries acknowledged"
    );
    assert!(t.emu.wait_sent(|s| !s.is_empty(), WAIT).await);
    // Every delivery is committed before its 200, so the rows below are final for this wamid.
    assert_eq!(t.count("SELECT COUNT(*) FROM inbox").await, 1);
    assert_eq!(t.count("SELECT COUNT(*) FROM outbox").await, 1);
    assert_eq!(rec.count(), 1, "exactly one agent call");
    let texts: Vec<_> = t.emu.sent().into_iter().filter_map(|m| m.text).collect();
    assert_eq!(texts, vec!["re: once please"]);
    t.stop().await;
}

async fn concurrent_customers_keep_their_order(db: Db) {
    let Some(mut t) = spawn_gateway(db, Options::default()).await else {
        return;
    };
    let customers: Vec<String> = (0..20).map(|c| format!("91980000{c:04}")).collect();
    let mut tasks = Vec::new();
    for (c, wa_id) in customers.iter().enumerate() {
        let emu = t.emu.clone();
        let wa_id = wa_id.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                emu.customer_says(PNID, &wa_id, "C", &format!("c{c}-m{i}"))
                    .await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        t.emu
            .wait_sent(|s| s.len() >= 200, Duration::from_secs(60))
            .await,
        "200 replies"
    );
    let sent = t.emu.sent();
    assert_eq!(sent.len(), 200, "no duplicate replies");
    for (c, wa_id) in customers.iter().enumerate() {
        let got: Vec<String> = sent
            .iter()
            .filter(|m| &m.to == wa_id)
            .filter_map(|m| m.text.clone())
            .collect();
        let want: Vec<String> = (0..10).map(|i| format!("echo: c{c}-m{i}")).collect();
        assert_eq!(got, want, "customer {wa_id} replies out of order");
    }
    t.stop().await;
}

async fn one_post_many_entries_routed(db: Db) {
    let opts = Options {
        second_number: true,
        ..Options::default()
    };
    let Some(mut t) = spawn_gateway(db, opts).await else {
        return;
    };
    let env = text_envelope(&[
        (
            WABA,
            PNID,
            vec![
                ("919811110001", "wamid.MULTI1", "to one from a"),
                ("919811110002", "wamid.MULTI2", "to one from b"),
            ],
        ),
        (
            WABA2,
            PNID2,
            vec![("919811110003", "wamid.MULTI3", "to two from c")],
        ),
        (
            "102290129349999",
            "999999999999999",
            vec![("919811110004", "wamid.MULTI4", "to nobody")],
        ),
    ]);
    t.emu.deliver_envelope(env);
    assert!(t.emu.wait_sent(|s| s.len() >= 3, WAIT).await);
    let mut routed: Vec<(String, String, String)> = t
        .emu
        .sent()
        .into_iter()
        .map(|m| (m.phone_number_id, m.to, m.text.unwrap_or_default()))
        .collect();
    routed.sort();
    assert_eq!(
        routed,
        vec![
            (
                PNID.into(),
                "919811110001".into(),
                "echo: to one from a".into()
            ),
            (
                PNID.into(),
                "919811110002".into(),
                "echo: to one from b".into()
            ),
            (
                PNID2.into(),
                "919811110003".into(),
                "echo: to two from c".into()
            ),
        ]
    );
    assert_eq!(t.count("SELECT COUNT(*) FROM inbox WHERE state = 'unrouted' AND phone_number_id = '999999999999999'").await, 1);
    assert_eq!(
        t.count("SELECT COUNT(*) FROM outbox WHERE phone_number_id = '999999999999999'")
            .await,
        0
    );
    t.stop().await;
}

async fn meta_500_then_200_delivers_once(db: Db) {
    let Some(mut t) = spawn_gateway(db, Options::default()).await else {
        return;
    };
    t.emu.push_fault(Fault::once(FaultKind::Http500).times(2));
    t.emu
        .customer_says(PNID, "919822220001", "R", "retry me")
        .await;
    assert!(t.emu.wait_sent(|s| !s.is_empty(), WAIT).await);
    // The gateway records Meta's answer just after the emulator recorded the send.
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM outbox WHERE attempts = 3 AND wamid IS NOT NULL",
            1,
            WAIT
        )
        .await,
        "two failed attempts, then one accepted"
    );
    assert_eq!(t.emu.sent().len(), 1);
    t.stop().await;
}

async fn outside_window_is_not_retried(db: Db) {
    let Some(mut t) = spawn_gateway(db, Options::default()).await else {
        return;
    };
    t.emu
        .push_fault(Fault::once(FaultKind::OutsideWindow131047));
    t.emu
        .customer_says(PNID, "919833330001", "W", "too late")
        .await;
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM outbox WHERE state = 'expired'",
            1,
            WAIT
        )
        .await,
        "131047 must end the row"
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM outbox WHERE attempts = 1 AND error_code = 131047")
            .await,
        1
    );
    // A second message proves the sender moved on and nothing was retried in between.
    t.emu.customer_says(PNID, "919833330001", "W", "next").await;
    assert!(t.emu.wait_sent(|s| !s.is_empty(), WAIT).await);
    let texts: Vec<_> = t.emu.sent().into_iter().filter_map(|m| m.text).collect();
    assert_eq!(texts, vec!["echo: next"]);
    t.stop().await;
}

async fn storage_outage_answers_503_then_redelivery_lands(db: Db) {
    let opts = Options {
        busy_timeout: "300ms",
        ..Options::default()
    };
    let Some(mut t) = spawn_gateway(db, opts).await else {
        return;
    };
    // Another session takes the write lock: the gateway cannot commit while it is held.
    let lock = StorageLock::take(&t.storage.url).await;
    t.emu
        .customer_says(PNID, "919844440001", "S", "during outage")
        .await;
    let emu = t.emu.clone();
    assert!(
        wait_until(WAIT, || async { emu.webhook_stats().failed_attempts >= 1 }).await,
        "webhook refused while storage is down"
    );
    let metrics = t.metrics().await;
    assert!(
        metrics.contains("wa_gateway_webhooks_total{result=\"storage_error\"}"),
        "{metrics}"
    );
    assert_eq!(t.emu.sent().len(), 0);
    lock.release().await;
    assert!(
        t.emu.wait_sent(|s| !s.is_empty(), WAIT).await,
        "Meta's redelivery is processed once storage is back"
    );
    let texts: Vec<_> = t.emu.sent().into_iter().filter_map(|m| m.text).collect();
    assert_eq!(texts, vec!["echo: during outage"]);
    t.stop().await;
}

/// A write lock held by another database session.
enum StorageLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl StorageLock {
    async fn take(url: &str) -> Self {
        use sqlx::Connection;
        if url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut c)
                .await
                .unwrap();
            StorageLock::Sqlite(c)
        } else {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut c).await.unwrap();
            sqlx::query("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
                .execute(&mut c)
                .await
                .unwrap();
            StorageLock::Postgres(c)
        }
    }

    async fn release(self) {
        match self {
            StorageLock::Sqlite(mut c) => {
                sqlx::query("COMMIT").execute(&mut c).await.unwrap();
            }
            StorageLock::Postgres(mut c) => {
                sqlx::query("COMMIT").execute(&mut c).await.unwrap();
            }
        }
    }
}

on_both_dbs!(
    end_to_end_reply,
    bad_signatures_store_nothing,
    redelivered_webhook_answered_once,
    concurrent_customers_keep_their_order,
    one_post_many_entries_routed,
    meta_500_then_200_delivers_once,
    outside_window_is_not_retried,
    storage_outage_answers_503_then_redelivery_lands,
);
