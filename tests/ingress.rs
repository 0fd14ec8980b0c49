//! Webhook ingress over the wire: the verification handshake, body limits, envelopes that are
//! not envelopes, numbers the gateway does not serve, and the admin endpoints.

use crate::common;

use common::*;
use std::time::Duration;

async fn handshake(db: Db) {
    let Some(mut t) = spawn_gateway(db, Options::default()).await else {
        return;
    };
    let url = t.webhook_url();
    let ok = t
        .http
        .get(format!(
            "{url}?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        &format!("hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"),
        "hub.mode=subscribe&hub.challenge=1",
    ] {
        let r = t.http.get(format!("{url}?{query}")).send().await.unwrap();
        assert_eq!(r.status(), 403, "{query}");
    }
    t.stop().await;
}

async fn oversized_body_is_413(db: Db) {
    let Some(mut t) = spawn_gateway(db, Options::default()).await else {
        return;
    };
    // One byte past the default listen.max_body_bytes (3 MiB, Meta's documented maximum).
    let body = vec![b' '; 3 * 1024 * 1024 + 1];
    assert_eq!(t.post_signed(&body).await, 413);
    assert_eq!(t.count("SELECT COUNT(*) FROM dead_letters").await, 0);
    t.stop().await;
}

async fn signed_garbage_is_dead_lettered(db: Db) {
    let Some(mut t) = spawn_gateway(db, Options::default()).await else {
        return;
    };
    assert_eq!(t.post_signed(b"{\"not\": \"an envelope\"}").await, 200);
    assert_eq!(t.post_signed(b"not json at all").await, 200);
    assert_eq!(t.count("SELECT COUNT(*) FROM dead_letters").await, 2);
    assert_eq!(t.count("SELECT COUNT(*) FROM inbox").await, 0);
    t.stop().await;
}

async fn undeclared_number_recorded_not_answered(db: Db) {
    let Some((rec, mut t)) = spawn_gateway_with_recorder(db).await else {
        return;
    };
    let env = text_envelope(&[(
        WABA,
        "555555555555555",
        vec![("919800000009", "wamid.UNROUTED", "hello?")],
    )]);
    assert_eq!(t.post_signed(&serde_json::to_vec(&env).unwrap()).await, 200);
    assert_eq!(
        t.count("SELECT COUNT(*) FROM inbox WHERE state = 'unrouted'")
            .await,
        1
    );
    // A declared number's message right after it is answered, so the agent was reachable.
    t.emu
        .customer_says(PNID, "919800000010", "D", "declared")
        .await;
    assert!(
        t.emu
            .wait_sent(|s| !s.is_empty(), Duration::from_secs(20))
            .await
    );
    assert_eq!(
        rec.count(),
        1,
        "only the declared number's message reached the agent"
    );
    t.stop().await;
}

async fn health_and_metrics(db: Db) {
    let Some(mut t) = spawn_gateway(db, Options::default()).await else {
        return;
    };
    let admin = t.gw().admin_addr;
    for path in ["/healthz", "/readyz"] {
        let r = t
            .http
            .get(format!("http://{admin}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    t.emu
        .customer_says(PNID, "919800000011", "M", "count me")
        .await;
    assert!(
        t.emu
            .wait_sent(|s| !s.is_empty(), Duration::from_secs(20))
            .await
    );
    let text = t.metrics().await;
    for needle in [
        "wa_gateway_webhooks_total{result=\"ok\"}",
        &format!("wa_gateway_messages_in_total{{phone_number_id=\"{PNID}\",type=\"text\"}} 1"),
        "wa_gateway_agent_seconds_count{agent=\"echo\",result=\"ok\"} 1",
        "wa_gateway_webhook_ack_seconds_bucket",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    t.stop().await;
}

on_both_dbs!(
    handshake,
    oversized_body_is_413,
    signed_garbage_is_dead_lettered,
    undeclared_number_recorded_not_answered,
    health_and_metrics,
);
