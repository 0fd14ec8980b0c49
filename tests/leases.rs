//! Conversation leases on PostgreSQL, claimed in the group commit: a conversation another live
//! replica holds is not worked here (its message is committed and acknowledged, nothing is sent)
//! for as long as that lease is held; once it is given back, the leader takes the conversation
//! over and the message is answered once.

mod common;

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
    // Another replica, alive for the next ten minutes, holds the conversation.
    sqlx::query(
        "INSERT INTO replicas (replica, alive_until) \
         VALUES ('elsewhere', (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint + 600000)",
    )
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO conversation_leases (phone_number_id, customer, owner, expires_at) \
         VALUES ($1, $2, 'elsewhere', 0)",
    )
    .bind(PNID)
    .bind(customer)
    .execute(&mut c)
    .await
    .unwrap();

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
