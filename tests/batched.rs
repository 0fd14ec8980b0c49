//! The statements every message pays on PostgreSQL outside the group commit, batched
//! (`store/batches.rs`): the send turns senders ask for at the same time are taken in one
//! statement and still keep a number to its rate across replicas, a customer to its pacing, and
//! read the opt-out when asked (`store/send_slots.rs`); the reads of turns starting together are
//! one statement, and each turn gets its own conversation's answer.

use crate::common;

use common::Db;
use std::time::Duration;
use tokio::time::Instant;
use wa_gateway::store::Store;
use wa_gateway::store::send_slots::{Bucket, SendSlots};

/// Two stores on one fresh database: two replicas.
async fn two_replicas() -> Option<(common::Storage, Store, Store)> {
    let storage = common::storage(Db::Postgres).await?;
    let cfg = wa_gateway::config::Storage {
        url: storage.url.clone(),
        ..Default::default()
    };
    let a = Store::connect(&cfg).await.expect("replica a");
    let b = Store::connect(&cfg).await.expect("replica b");
    Some((storage, a, b))
}

/// `n` number turns asked for at once from `store`, every 5 ms, no customer bucket.
async fn turns_at_once(store: &Store, n: usize) -> Vec<SendSlots> {
    let asks = (0..n).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let number = Bucket {
                key: "n:106540352242922",
                interval: Duration::from_millis(5),
                burst: 1,
            };
            store.take_send_slots(None, number, None).await.unwrap()
        })
    });
    let mut out = Vec::with_capacity(n);
    for ask in asks.collect::<Vec<_>>() {
        out.push(ask.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_asked_together_share_a_statement_and_keep_the_number_to_its_rate() {
    let Some((storage, a, b)) = two_replicas().await else {
        return;
    };
    let started = db_now_us(&storage).await;
    let (from_a, from_b) = tokio::join!(turns_at_once(&a, 100), turns_at_once(&b, 100));
    // One statement answers a whole batch: its answers were all read at one instant.
    for (name, slots) in [("a", &from_a), ("b", &from_b)] {
        let mut statements: Vec<Instant> = slots.iter().map(|s| s.answered).collect();
        statements.sort();
        statements.dedup();
        assert!(
            statements.len() <= 10,
            "replica {name}: 100 turns took {} statements",
            statements.len()
        );
    }
    // The turns one statement handed out are the number's next ones, one interval apart.
    for slots in [&from_a, &from_b] {
        let mut by_statement: std::collections::BTreeMap<Instant, Vec<Instant>> =
            Default::default();
        for s in slots.iter() {
            let turn = s
                .number_at
                .expect("no customer bucket: the number's turn is taken");
            by_statement.entry(s.answered).or_default().push(turn);
        }
        for turns in by_statement.values_mut() {
            turns.sort();
            for pair in turns.windows(2) {
                assert_eq!(pair[1] - pair[0], Duration::from_millis(5), "{turns:?}");
            }
        }
    }
    // And every one of the 200 turns, whichever replica took it, moved the number's bucket on
    // by one interval (on the database's clock: the replicas turn it into their own within the
    // quickest answer each has seen, which differs between them).
    let tat = bucket(&storage, "n:106540352242922").await;
    assert!(
        tat - started >= 200 * 5_000,
        "the bucket moved on by {} µs for 200 turns",
        tat - started
    );
    assert!(
        tat - started < 200 * 5_000 + 1_000_000,
        "the bucket moved on by {} µs",
        tat - started
    );
}

/// The database's clock, in µs.
async fn db_now_us(storage: &common::Storage) -> i64 {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&storage.url).await.unwrap();
    sqlx::query_scalar("SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint")
        .fetch_one(&mut c)
        .await
        .unwrap()
}

/// Bucket `key`'s theoretical arrival time (µs, the database's clock).
async fn bucket(storage: &common::Storage, key: &str) -> i64 {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&storage.url).await.unwrap();
    sqlx::query_scalar("SELECT tat FROM send_limits WHERE key = $1")
        .bind(key)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_asked_twice_at_once_waits_out_its_pacing_and_the_opt_out_is_read() {
    let Some((storage, a, _b)) = two_replicas().await else {
        return;
    };
    let (pnid, customer) = ("106540352242922", "491700000001");
    let ask = |store: &Store, queued_at: i64| {
        let store = store.clone();
        tokio::spawn(async move {
            let key = format!("c:{pnid}:{customer}");
            let paced = Bucket {
                key: &key,
                interval: Duration::from_secs(1),
                burst: 1,
            };
            let number = Bucket {
                key: "n:106540352242922",
                interval: Duration::from_millis(1),
                burst: 1,
            };
            store
                .take_send_slots(Some(paced), number, Some((pnid, customer, queued_at)))
                .await
                .unwrap()
        })
    };
    let started = db_now_us(&storage).await;
    let (first, second) = (ask(&a, 0), ask(&a, 0));
    let mut got = vec![first.await.unwrap(), second.await.unwrap()];
    got.sort_by_key(|s| s.customer_at);
    // The first goes now with the number's turn; the second is the customer's next turn, a
    // second later, and takes no number turn yet.
    assert!(got[0].number_at.is_some(), "{got:?}");
    assert_eq!(got[1].number_at, None, "{got:?}");
    let gap = got[1].customer_at - got[0].customer_at;
    assert!(
        gap >= Duration::from_millis(900) && gap <= Duration::from_millis(1100),
        "the customer's turns {gap:?} apart"
    );
    // Exactly: the customer's bucket moved on by two seconds, one per turn.
    let tat = bucket(&storage, &format!("c:{pnid}:{customer}")).await;
    assert!(
        (2_000_000..3_000_000).contains(&(tat - started)),
        "the customer's bucket moved on by {} µs",
        tat - started
    );
    assert_eq!(got[0].allowed, Some(true));

    // The customer says STOP after a reply was queued: the next turn says it is not taken.
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&storage.url).await.unwrap();
    sqlx::query(
        "INSERT INTO opt_outs (phone_number_id, customer, opted_out, keyword, changed_at, stopped_at) \
         VALUES ($1, $2, 1, 'STOP', 2000, 2000)",
    )
    .bind(pnid)
    .bind(customer)
    .execute(&mut c)
    .await
    .unwrap();
    let after = ask(&a, 1000).await.unwrap();
    assert_eq!(after.allowed, Some(false), "{after:?}");
}

/// A send whose number turn came late takes a later one (`outbox::last_checks`), and only the
/// number's: retaking the customer's too spent their pacing burst at every late wake, and on a
/// starved replica then held each of their replies for the interval per retake (the three-replica
/// test, run beside the others, had hundreds of replies stuck behind 6-second turns).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_turn_is_retaken_from_the_number_alone() {
    let Some((storage, a, _b)) = two_replicas().await else {
        return;
    };
    use wa_gateway::config::{CustomerPacing, Duration as ConfigDuration};
    use wa_gateway::policy::limits::{SendLimiter, Turns};
    let (pnid, customer) = ("106540352242922", "491700000002");
    let pacing = CustomerPacing {
        interval: ConfigDuration::from_secs(6),
        burst: 1,
    };
    let limiter = SendLimiter::new(1000, Default::default(), &pacing).shared(a);
    limiter.acquire_asking(pnid, customer, None).await;
    let customer_tat = bucket(&storage, &format!("c:{pnid}:{customer}")).await;
    let number_tat = bucket(&storage, &format!("n:{pnid}")).await;
    for _ in 0..3 {
        let paced = limiter.take(pnid, customer, Some(0), Turns::Number).await;
        assert_eq!(paced.allowed, Some(true), "a retake still asks");
    }
    assert_eq!(
        bucket(&storage, &format!("c:{pnid}:{customer}")).await,
        customer_tat,
        "the customer's bucket is where the first turn left it"
    );
    let moved = bucket(&storage, &format!("n:{pnid}")).await - number_tat;
    assert!(
        moved >= 3_000,
        "the number's bucket moved on by three turns of 1 ms, not {moved} µs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_reads_made_together_each_get_their_own_conversation() {
    let Some((storage, a, _b)) = two_replicas().await else {
        return;
    };
    use sqlx::Connection;
    let pnid = "106540352242922";
    let customer = |i: usize| format!("4917000{i:05}");
    let mut c = sqlx::PgConnection::connect(&storage.url).await.unwrap();
    // Every third customer opted out (one of them only by its erasure digest), every fifth
    // conversation paused.
    for i in (0..60).step_by(3) {
        let who = if i == 9 {
            format!("digest-{i}")
        } else {
            customer(i)
        };
        sqlx::query(
            "INSERT INTO opt_outs (phone_number_id, customer, opted_out, keyword, changed_at) \
             VALUES ($1, $2, 1, 'STOP', 1)",
        )
        .bind(pnid)
        .bind(who)
        .execute(&mut c)
        .await
        .unwrap();
    }
    for i in (0..60).step_by(5) {
        sqlx::query(
            "INSERT INTO paused_conversations (phone_number_id, customer, paused_at, paused_until, \
             reason, paused_by) VALUES ($1, $2, 1, $3, 'help', 'operator')",
        )
        .bind(pnid)
        .bind(customer(i))
        .bind(1_000 + i as i64)
        .execute(&mut c)
        .await
        .unwrap();
    }
    let reads: Vec<_> = (0..60)
        .map(|i| {
            let store = a.clone();
            tokio::spawn(async move {
                let got = store
                    .turn_state(pnid, &customer(i), &format!("digest-{i}"))
                    .await
                    .unwrap();
                (i, got)
            })
        })
        .collect();
    for read in reads {
        let (i, ((opted_out, erased), pause)) = read.await.unwrap();
        assert_eq!(opted_out, i % 3 == 0, "customer {i}");
        assert_eq!(erased, i == 9, "customer {i}");
        match pause {
            Some(p) => {
                assert_eq!(i % 5, 0, "customer {i} is not paused");
                assert_eq!(p.customer, customer(i));
                assert_eq!(p.paused_until, 1_000 + i as i64, "customer {i}");
            }
            None => assert_ne!(i % 5, 0, "customer {i} is paused"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_out_reads_before_sends_made_together_each_get_their_own_answer() {
    let Some((storage, a, _b)) = two_replicas().await else {
        return;
    };
    use sqlx::Connection;
    let pnid = "106540352242922";
    let customer = |i: usize| format!("4917100{i:05}");
    let mut c = sqlx::PgConnection::connect(&storage.url).await.unwrap();
    // Customers 0, 4, 8, … are opted out; the others opted in again at 5,000 ms (a STOP then a
    // START: replies queued before the START stay refused); 40 to 49 never opted out.
    for i in 0..40 {
        sqlx::query(
            "INSERT INTO opt_outs (phone_number_id, customer, opted_out, keyword, changed_at, \
             stopped_at) VALUES ($1, $2, $3, 'STOP', 1, 5000)",
        )
        .bind(pnid)
        .bind(customer(i))
        .bind(i64::from(i % 4 == 0))
        .execute(&mut c)
        .await
        .unwrap();
    }
    let reads: Vec<_> = (0..50)
        .map(|i| {
            let store = a.clone();
            // Every third reply was queued after the START, the others before it.
            let queued_at = if i % 3 == 0 { 6_000 } else { 4_000 };
            tokio::spawn(async move {
                let allowed = store
                    .reply_allowed(pnid, &customer(i), queued_at)
                    .await
                    .unwrap();
                (i, allowed)
            })
        })
        .collect();
    for read in reads {
        let (i, allowed) = read.await.unwrap();
        let want = i >= 40 || (i % 4 != 0 && i % 3 == 0);
        assert_eq!(allowed, want, "customer {i}");
    }
}
