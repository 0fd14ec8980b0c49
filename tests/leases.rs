//! Conversation leases on PostgreSQL, claimed in the group commit: a conversation another live
//! replica holds is not worked here (its message is committed and acknowledged, nothing is sent)
//! for as long as that lease is held; once it is given back, the leader takes the conversation
//! over and the message is answered once. A reply an operator requeues on a replica that cannot
//! claim its conversation is handed to the holder, which sends it at once.

use crate::common;

use common::*;
use sqlx::Connection;
use std::time::Duration;

/// The latest takeover sweep of the leader that ended, by when it started (ms, database clock).
async fn last_sweep(c: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(MAX(started_at), 0) FROM leader_runs \
         WHERE task = 'takeover' AND ended_at IS NOT NULL",
    )
    .fetch_one(c)
    .await
    .unwrap()
}

/// Waits until a takeover sweep that started after `after` (ms, database clock) has ended.
async fn sweep_after(url: &str, after: i64) -> bool {
    wait_until(Duration::from_secs(20), || async {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        last_sweep(&mut c).await > after
    })
    .await
}

async fn db_now(c: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint")
        .fetch_one(c)
        .await
        .unwrap()
}

/// Another replica, `elsewhere`, alive for the next ten minutes.
async fn another_live_replica(c: &mut sqlx::PgConnection) {
    sqlx::query(
        "INSERT INTO replicas (replica, alive_until) \
         VALUES ('elsewhere', (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint + 600000)",
    )
    .execute(c)
    .await
    .unwrap();
}

/// Another replica, alive for the next ten minutes, holds `customer`'s conversation.
async fn held_elsewhere(c: &mut sqlx::PgConnection, customer: &str) {
    another_live_replica(c).await;
    sqlx::query(
        "INSERT INTO conversation_leases (phone_number_id, customer, owner, expires_at) \
         VALUES ($1, $2, 'elsewhere', 0)",
    )
    .bind(PNID)
    .bind(customer)
    .execute(c)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_another_live_replica_holds_is_answered_only_once_its_lease_is_free() {
    let opts = Options {
        storage_extra: "  lease: 2s\n".into(),
        ..Options::default()
    };
    let Some(t) = spawn_gateway(Db::Postgres, opts).await else {
        return;
    };
    let customer = "491700000088";
    let mut c = sqlx::PgConnection::connect(&t.storage.url).await.unwrap();
    held_elsewhere(&mut c, customer).await;

    t.emu.customer_says(PNID, customer, "Held", "first").await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            t.emu.webhook_stats().delivered >= 1
        })
        .await,
        "the message is acknowledged"
    );
    // The commit found the lease held, bumped the conversation's count and kept it elsewhere.
    let (owner, seq): (String, i64) = sqlx::query_as(
        "SELECT owner, seq FROM conversation_leases WHERE phone_number_id = $1 AND customer = $2",
    )
    .bind(PNID)
    .bind(customer)
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!((owner.as_str(), seq), ("elsewhere", 1));
    // Sweeps that started after the message was old enough to count as orphaned, had no live
    // replica held it, leave it alone: nothing is sent.
    let after = db_now(&mut c).await + 1000;
    assert!(
        sweep_after(&t.storage.url, after).await,
        "the leader sweeps"
    );
    assert!(
        t.texts_to(customer).is_empty(),
        "answered under another replica's lease: {:?}",
        t.texts_to(customer)
    );

    // The holder gives the conversation back: the leader takes it over and answers once.
    sqlx::query("DELETE FROM conversation_leases WHERE owner = 'elsewhere'")
        .execute(&mut c)
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || async {
            !t.texts_to(customer).is_empty()
        })
        .await,
        "answered once the lease is free"
    );
    let answered = db_now(&mut c).await;
    assert!(
        sweep_after(&t.storage.url, answered).await,
        "the leader sweeps"
    );
    assert_eq!(t.texts_to(customer), vec!["echo: first".to_owned()]);
}

/// One commit that brings messages to more conversations another live replica holds than one
/// NOTIFY payload can name tells that replica of every one of them, in payloads PostgreSQL
/// takes (under 8000 bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_tells_the_holder_of_each_conversation_it_holds_in_payloads_under_the_limit() {
    let Some(t) = spawn_gateway(Db::Postgres, Options::default()).await else {
        return;
    };
    let customers: Vec<String> = (0..600).map(|i| format!("4917{i:08}")).collect();
    let mut c = sqlx::PgConnection::connect(&t.storage.url).await.unwrap();
    another_live_replica(&mut c).await;
    sqlx::query(
        "INSERT INTO conversation_leases (phone_number_id, customer, owner, expires_at) \
         SELECT $1, UNNEST($2::text[]), 'elsewhere', 0",
    )
    .bind(PNID)
    .bind(&customers)
    .execute(&mut c)
    .await
    .unwrap();
    let mut listener = sqlx::postgres::PgListener::connect(&t.storage.url)
        .await
        .unwrap();
    listener
        .listen(wa_gateway::store::cluster::WORK_CHANNEL)
        .await
        .unwrap();

    // One webhook, one commit: a message from each customer.
    let wamids: Vec<String> = (0..customers.len())
        .map(|i| format!("wamid.HELD{i}"))
        .collect();
    let messages: Vec<(&str, &str, &str)> = customers
        .iter()
        .zip(&wamids)
        .map(|(c, w)| (c.as_str(), w.as_str(), "hello"))
        .collect();
    t.emu
        .deliver_envelope(text_envelope(&[(WABA, PNID, messages)]));

    let mut told: Vec<String> = Vec::new();
    let mut payloads = 0;
    while told.len() < customers.len() {
        let n = tokio::time::timeout(Duration::from_secs(20), listener.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "told of {} of {} conversations",
                    told.len(),
                    customers.len()
                )
            })
            .unwrap();
        assert!(n.payload().len() < 8000, "{} bytes", n.payload().len());
        payloads += 1;
        for (pnid, customer) in wa_gateway::store::cluster::parse_work_payload(n.payload()) {
            assert_eq!(pnid, PNID);
            told.push(customer);
        }
    }
    told.sort();
    assert_eq!(told, customers, "each held conversation once");
    assert!(
        payloads > 1,
        "the {} lines fit one payload",
        customers.len()
    );
    // Nothing was answered here: every conversation is the other replica's.
    assert!(t.emu.sent().is_empty(), "{:?}", t.emu.sent());
}

const TOKEN: &str = "leases-admin-token";

/// The customer writes; both send attempts fail (HTTP 500). Returns the failed reply's id.
async fn a_failed_reply(t: &TestGateway, customer: &str) -> i64 {
    use wa_gateway::emulator::{Fault, FaultKind};
    t.emu
        .push_fault(Fault::once(FaultKind::Http500).times(2).for_number(PNID));
    t.emu.customer_says(PNID, customer, "C", "first").await;
    let failed = format!("FROM outbox WHERE customer = '{customer}' AND state = 'failed'");
    assert!(
        wait_until(Duration::from_secs(20), || async {
            t.scalar(&format!("SELECT CAST(COUNT(*) AS TEXT) {failed}"))
                .await
                == "1"
        })
        .await,
        "the reply fails"
    );
    t.scalar(&format!("SELECT CAST(id AS TEXT) {failed}"))
        .await
        .parse()
        .unwrap()
}

/// An operator retries a failed reply on a replica that cannot claim its conversation (another
/// live replica holds it): the reply is not sent there, and the holder is told, by its id, on
/// the requeue channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_requeued_where_another_replica_holds_the_conversation_is_handed_to_it() {
    let Some(t) = spawn_retrying(Db::Postgres, Options::default(), "echo", TOKEN).await else {
        return;
    };
    let customer = "491700000066";
    let id = a_failed_reply(&t, customer).await;
    let mut c = sqlx::PgConnection::connect(&t.storage.url).await.unwrap();
    // This replica's worker gives the conversation back after its idle time (10 s); then
    // another live replica takes it.
    let leases = format!(
        "SELECT CAST(COUNT(*) AS TEXT) FROM conversation_leases WHERE customer = '{customer}'"
    );
    assert!(
        wait_until(Duration::from_secs(30), || async {
            t.scalar(&leases).await == "0"
        })
        .await,
        "the idle conversation is given back"
    );
    held_elsewhere(&mut c, customer).await;
    let mut listener = sqlx::postgres::PgListener::connect(&t.storage.url)
        .await
        .unwrap();
    listener
        .listen(wa_gateway::store::cluster::REQUEUED_CHANNEL)
        .await
        .unwrap();

    let (status, body) = admin_post(
        &t,
        TOKEN,
        &format!("/api/replies/{id}/retry"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let told = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("the holder is told within 10 s")
        .unwrap();
    assert_eq!(
        wa_gateway::store::cluster::parse_requeued_payload(told.payload()),
        Some(((PNID.to_owned(), customer.to_owned()), id))
    );
    assert!(
        t.texts_to(customer).is_empty(),
        "{:?}",
        t.texts_to(customer)
    );
}

/// The replica holding a conversation, told that another replica requeued one of its replies,
/// sends it at once: not after its idle time (10 s), when the leader would take the
/// conversation over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_sends_a_reply_another_replica_requeued_at_once() {
    let Some(t) = spawn_retrying(Db::Postgres, Options::default(), "echo", TOKEN).await else {
        return;
    };
    let customer = "491700000055";
    let id = a_failed_reply(&t, customer).await;
    let mut c = sqlx::PgConnection::connect(&t.storage.url).await.unwrap();
    // What the other replica's retry commits, then what it says when it cannot claim the
    // conversation (this replica's worker holds it, idle).
    sqlx::query(
        "UPDATE outbox SET state = 'pending', state_rank = 0, attempts = 0, \
         sending_since = NULL WHERE id = $1 AND state = 'failed'",
    )
    .bind(id)
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(wa_gateway::store::cluster::REQUEUED_CHANNEL)
        .bind(format!("{PNID}\t{customer}\t{id}"))
        .execute(&mut c)
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            !t.texts_to(customer).is_empty()
        })
        .await,
        "the requeued reply was not sent within 5 s"
    );
    assert_eq!(t.texts_to(customer), vec!["echo: first".to_owned()]);
    let state = t
        .scalar(&format!("SELECT state FROM outbox WHERE id = {id}"))
        .await;
    assert_ne!(state, "failed");
}
