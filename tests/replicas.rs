//! Several gateway processes (the real binary) on one PostgreSQL with a standalone emulator:
//! every message answered exactly once and in order whichever replica received it, with the
//! leader SIGKILLed halfway; the per-number limit holding for the cluster as a whole; SIGTERM
//! under load refusing nothing before /readyz turned 503; every replica serving the same number
//! status; and the SQLite single-process rule.

use crate::common;

use common::*;
use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The tests of this file each start several processes: one at a time, or two cores drown.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One gateway process with its ports and log.
struct Replica {
    id: String,
    process: Option<GatewayProcess>,
    webhook: String,
    admin: String,
    log: std::path::PathBuf,
}

impl Replica {
    /// Starts `wa-gateway serve` as replica `id` on `storage_url`, calling Graph at `graph`.
    fn start(dir: &std::path::Path, id: &str, storage_url: &str, graph: &str, extra: &str) -> Self {
        let cfg = StandaloneConfig::new(dir, storage_url, graph)
            .listen_extra(", shutdown_delay: 2s, shutdown_timeout: 10s")
            .storage_extra(", lease: 2s")
            .agents("  echo: { kind: echo, prefix: \"echo: \", delay: 20ms }\n")
            .extra(extra);
        Self::spawn(dir, id, cfg)
    }

    /// Starts `wa-gateway serve` as replica `id` with the config `cfg`.
    fn spawn(dir: &std::path::Path, id: &str, cfg: StandaloneConfig) -> Self {
        let (process, webhook, admin, log) = spawn_replica(dir, id, cfg);
        Self {
            id: id.to_owned(),
            process: Some(process),
            webhook,
            admin,
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&self) {
        let ready = wait_ready(&self.admin, Duration::from_secs(30)).await;
        assert!(ready, "{} not ready; log:\n{}", self.id, self.log_text());
    }

    /// The process's pid.
    fn pid(&self) -> u32 {
        self.process.as_ref().expect("running").child.id()
    }

    /// `/api/cluster`, or `None` when the replica does not answer.
    async fn cluster(&self, http: &reqwest::Client) -> Option<serde_json::Value> {
        http.get(format!("http://{}/api/cluster", self.admin))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// SIGKILL: no graceful anything.
    fn kill(&mut self) {
        let mut process = self.process.take().expect("running");
        process.child.kill().unwrap();
        process.child.wait().unwrap();
    }
}

fn customer(c: usize) -> String {
    format!("9197{c:08}")
}

/// Asserts that the emulator got exactly one reply per (customer, message) in `want`, in order
/// per customer.
fn assert_each_answered_once_in_order(
    emu: &wa_gateway::emulator::EmulatorHandle,
    want: &BTreeMap<String, Vec<String>>,
) {
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in emu.sent() {
        got.entry(m.to.clone())
            .or_default()
            .push(m.text.unwrap_or_default());
    }
    let mut missing = 0;
    let mut dupes = Vec::new();
    for (to, texts) in want {
        let replies = got.get(to).cloned().unwrap_or_default();
        let mut count: HashMap<&str, usize> = HashMap::new();
        for r in &replies {
            *count.entry(r.as_str()).or_default() += 1;
        }
        dupes.extend(
            count
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(t, n)| format!("{t} ×{n}")),
        );
        missing += texts
            .iter()
            .filter(|t| !count.contains_key(format!("echo: {t}").as_str()))
            .count();
        if dupes.is_empty() && missing == 0 {
            let wanted: Vec<String> = texts.iter().map(|t| format!("echo: {t}")).collect();
            assert_eq!(replies, wanted, "replies to {to} out of order");
        }
    }
    assert!(dupes.is_empty(), "answered more than once: {dupes:?}");
    assert_eq!(missing, 0, "messages never answered");
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(extra.is_empty(), "replies to no one who wrote: {extra:?}");
}

async fn wait_no_open_work(url: &str) -> bool {
    wait_until(Duration::from_secs(30), || async {
        count(url, "SELECT COUNT(*) FROM inbox WHERE state = 'received'").await == 0
            && count(
                url,
                "SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'sending')",
            )
            .await
                == 0
    })
    .await
}

/// The messages and replies still open, and every lease, for a failure's message.
async fn open_work(url: &str) -> String {
    let text: Option<String> = scalar(
        url,
        "SELECT string_agg(line, E'\\n') FROM ( \
           SELECT format('inbox %s %s %s %s', id, wamid, customer, state) AS line \
             FROM inbox WHERE state = 'received' \
           UNION ALL SELECT format('outbox %s reply to %s: %s, %s attempts', id, inbox_id, state, attempts) \
             FROM outbox WHERE state IN ('pending', 'sending') \
           UNION ALL SELECT format('lease %s %s held by %s until %s (now %s), seq %s claimed %s', \
               phone_number_id, customer, owner, expires_at, \
               (extract(epoch from clock_timestamp()) * 1000)::bigint, seq, claimed_seq) \
             FROM conversation_leases) lines",
    )
    .await;
    text.unwrap_or_default()
}

/// The one replica among `replicas` saying it leads, once exactly one does.
async fn the_leader(http: &reqwest::Client, replicas: &[&Replica]) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut leaders = Vec::new();
        for r in replicas {
            if let Some(c) = r.cluster(http).await
                && c["leader"] == true
            {
                leaders.push(c["replica"].as_str().unwrap_or_default().to_owned());
            }
        }
        if leaders.len() == 1 {
            return leaders.pop().unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no single leader among the replicas: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_answer_every_message_once_in_order_while_the_leader_dies() {
    let _one_at_a_time = SERIAL.lock().await;
    let Some(storage) = storage(Db::Postgres).await else {
        return;
    };
    let dir = storage.dir.path();
    let emu = standalone_emulator(dir, Duration::from_millis(300)).await;
    let extra = "policies:\n  throughput_per_number: 1000\n  delivery: { initial_backoff: 20ms, max_backoff: 200ms, settle_grace: 2s }\n";
    let mut replicas: Vec<Replica> = (0..3)
        .map(|n| {
            Replica::start(
                dir,
                &format!("replica-{n}"),
                &storage.url,
                &emu.url(),
                extra,
            )
        })
        .collect();
    let _logs = LogsOnFailure(replicas.iter().map(|r| r.log.clone()).collect());
    for r in &replicas {
        r.wait_ready().await;
    }
    let http = reqwest::Client::new();
    let leader = the_leader(&http, &replicas.iter().collect::<Vec<_>>()).await;
    let doomed = replicas.iter().position(|r| r.id == leader).unwrap();
    // Status webhooks go to a replica that stays up.
    emu.set_webhook_url(replicas[(doomed + 1) % 3].webhook.clone());

    const CUSTOMERS: usize = 100;
    const PER_CUSTOMER: usize = 20;
    let urls: Arc<Vec<String>> = Arc::new(replicas.iter().map(|r| r.webhook.clone()).collect());
    let acked = Arc::new(AtomicUsize::new(0));
    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut drivers = Vec::new();
    for c in 0..CUSTOMERS {
        let from = customer(c);
        let texts: Vec<String> = (0..PER_CUSTOMER).map(|i| format!("c{c}-m{i}")).collect();
        want.insert(from.clone(), texts.clone());
        let (http, urls, acked, emu) = (http.clone(), urls.clone(), acked.clone(), emu.clone());
        drivers.push(tokio::spawn(async move {
            for (i, text) in texts.iter().enumerate() {
                let wamid = format!("wamid.REPLICAS.{c}.{i}");
                emu.record_inbound(PNID, &from, &wamid, now_ms() / 1000);
                // Each message to the next replica in turn; one that does not answer 200 (the
                // dead one) is skipped, as a load balancer would. The next message goes only
                // once this one is acknowledged, so the customer's order is the arrival order.
                let mut delivered = false;
                for attempt in 0..30 {
                    let url = &urls[(c + i + attempt) % urls.len()];
                    if post_text(&http, url, &from, &wamid, text).await.is_ok() {
                        delivered = true;
                        break;
                    }
                }
                assert!(delivered, "{wamid} refused by every replica");
                acked.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let total = CUSTOMERS * PER_CUSTOMER;
    let halfway = wait_until(Duration::from_secs(120), || async {
        acked.load(Ordering::SeqCst) >= total / 2
    })
    .await;
    assert!(halfway, "half the messages acknowledged");
    // The leader's last moment: it runs nothing once SIGKILL is sent. Read after the kill, the
    // clock could be later than the cycle the next leader starts at once (the test waits for
    // the process to be reaped, and may be scheduled late on a loaded machine).
    let killed_at = now_ms();
    replicas[doomed].kill();
    let held = count(
        &storage.url,
        &format!("SELECT COUNT(*) FROM conversation_leases WHERE owner = '{leader}'"),
    )
    .await;
    eprintln!(
        "killed the leader {leader} holding {held} conversations, with {} of {total} acknowledged, {} answered",
        acked.load(Ordering::SeqCst),
        emu.sent().len()
    );
    assert!(
        held > 0,
        "the killed replica held no conversation to take over"
    );
    for d in drivers {
        d.await.expect("driver");
    }
    let answered = emu
        .wait_sent(|s| s.len() >= total, Duration::from_secs(120))
        .await;
    assert!(
        answered,
        "only {} of {total} answered; logs in {}; open:\n{}",
        emu.sent().len(),
        dir.display(),
        open_work(&storage.url).await
    );
    assert!(
        wait_no_open_work(&storage.url).await,
        "work left open; logs in {}",
        dir.display()
    );
    assert_each_answered_once_in_order(&emu, &want);

    // Leadership moved to a survivor.
    let survivors: Vec<&Replica> = replicas.iter().filter(|r| r.process.is_some()).collect();
    let new_leader = the_leader(&http, &survivors).await;
    assert_ne!(new_leader, leader, "leadership did not move");

    // Leader-only cycles never overlapped across replicas: sorted by start, each began after
    // every earlier cycle of another replica had ended (one replica may run several leader-only
    // tasks at once, e.g. a reconcile pass and a takeover sweep), and they form one block per
    // leader (the killed one's, then its successor's). A cycle the kill interrupted ended, at
    // the latest, when the process died.
    let runs: Vec<(String, i64, Option<i64>)> = {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&storage.url).await.unwrap();
        sqlx::query_as(
            "SELECT replica, started_at, ended_at FROM leader_runs ORDER BY started_at, id",
        )
        .fetch_all(&mut c)
        .await
        .unwrap()
    };
    assert!(runs.len() > 2, "leader cycles recorded: {runs:?}");
    let now = now_ms();
    let mut earlier: Vec<(String, i64)> = Vec::new();
    let mut blocks: Vec<String> = Vec::new();
    for (replica, started, ended) in &runs {
        let ended = ended.unwrap_or(if *replica == leader { killed_at } else { now });
        for (other, other_end) in earlier.iter().filter(|(r, _)| r != replica) {
            assert!(
                *started >= *other_end,
                "{replica}'s cycle started at {started} before {other}'s ended at {other_end}"
            );
        }
        if blocks.last() != Some(replica) {
            blocks.push(replica.clone());
        }
        earlier.push((replica.clone(), ended));
    }
    assert_eq!(
        blocks,
        vec![leader.clone(), new_leader.clone()],
        "leader cycles ran on these replicas, in this order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_number_limit_holds_for_three_replicas_together() {
    let _one_at_a_time = SERIAL.lock().await;
    let Some(storage) = storage(Db::Postgres).await else {
        return;
    };
    let dir = storage.dir.path();
    let emu = standalone_emulator(dir, Duration::from_millis(300)).await;
    const RATE: usize = 20;
    // The cluster grants at most RATE in any second, evenly spaced; measured at the receiver, a
    // window may also catch sends granted up to 100 ms earlier and delayed on the way.
    const DELAYED: usize = 2;
    let extra = format!(
        "policies:\n  throughput_per_number: {RATE}\n  delivery: {{ initial_backoff: 20ms, max_backoff: 200ms, settle_grace: 2s }}\n"
    );
    let replicas: Vec<Replica> = (0..3)
        .map(|n| Replica::start(dir, &format!("limit-{n}"), &storage.url, &emu.url(), &extra))
        .collect();
    let _logs = LogsOnFailure(replicas.iter().map(|r| r.log.clone()).collect());
    for r in &replicas {
        r.wait_ready().await;
    }
    emu.set_webhook_url(replicas[0].webhook.clone());
    let http = reqwest::Client::new();
    const MESSAGES: usize = 200;
    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut posts = Vec::new();
    for m in 0..MESSAGES {
        let from = customer(m);
        let text = format!("limit-{m}");
        want.insert(from.clone(), vec![text.clone()]);
        let wamid = format!("wamid.LIMIT.{m}");
        emu.record_inbound(PNID, &from, &wamid, now_ms() / 1000);
        let url = replicas[m % 3].webhook.clone();
        let http = http.clone();
        posts.push(tokio::spawn(async move {
            post_text(&http, &url, &from, &wamid, &text).await
        }));
    }
    for p in posts {
        p.await.unwrap().expect("every webhook acknowledged");
    }
    assert!(
        emu.wait_sent(|s| s.len() >= MESSAGES, Duration::from_secs(60))
            .await,
        "only {} of {MESSAGES} answered; logs in {}",
        emu.sent().len(),
        dir.display()
    );
    assert_each_answered_once_in_order(&emu, &want);
    let mut at: Vec<i64> = emu.sent().iter().map(|m| m.received_at_ms).collect();
    at.sort_unstable();
    // In any one second, the emulator saw at most the rate plus what the way delayed.
    let mut worst = 0;
    for (i, start) in at.iter().enumerate() {
        let within = at[i..].iter().take_while(|t| **t < start + 1000).count();
        worst = worst.max(within);
    }
    eprintln!(
        "{MESSAGES} replies over {} ms; at most {worst} in one second",
        at[at.len() - 1] - at[0]
    );
    assert!(
        worst <= RATE + DELAYED,
        "{worst} messages in one second: the cluster sent faster than {RATE}/s"
    );
    // And it did not go much slower either: the limit, not something else, set the pace.
    let span = (at[at.len() - 1] - at[0]) as f64 / 1000.0;
    let floor = (MESSAGES - 1) as f64 / RATE as f64;
    assert!(
        span >= floor - 0.1,
        "{MESSAGES} in {span:.2}s is faster than {RATE}/s"
    );
    assert!(
        span < floor * 1.5,
        "{MESSAGES} in {span:.2}s: far slower than {RATE}/s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_refuses_nothing_before_readyz_turns_503_and_loses_nothing() {
    let _one_at_a_time = SERIAL.lock().await;
    let Some(storage) = storage(Db::Postgres).await else {
        return;
    };
    let dir = storage.dir.path();
    let emu = standalone_emulator(dir, Duration::from_millis(300)).await;
    // The driver writes as fast as it is acknowledged: pacing at Meta's default (a message
    // every 6 s after a burst of 45) would hold the replies back for minutes.
    let extra = "policies:\n  throughput_per_number: 1000\n  customer_pacing: { interval: 10ms, burst: 45 }\n  delivery: { initial_backoff: 20ms, max_backoff: 200ms, settle_grace: 2s }\n";
    let mut stopping = Replica::start(dir, "stopping", &storage.url, &emu.url(), extra);
    let other = Replica::start(dir, "other", &storage.url, &emu.url(), extra);
    let _logs = LogsOnFailure(vec![stopping.log.clone(), other.log.clone()]);
    stopping.wait_ready().await;
    other.wait_ready().await;
    emu.set_webhook_url(other.webhook.clone());
    let http = reqwest::Client::new();

    // What the driver saw: (time, customer index, message index, to the stopping replica, result).
    type Seen = (i64, bool, Result<(), String>);
    let seen: Arc<std::sync::Mutex<Vec<Seen>>> = Arc::default();
    let stop_driving = tokio_util::sync::CancellationToken::new();
    let sent_texts: Arc<std::sync::Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let mut drivers = Vec::new();
    for c in 0..10 {
        let (http, seen, stop, sent_texts, emu) = (
            http.clone(),
            seen.clone(),
            stop_driving.clone(),
            sent_texts.clone(),
            emu.clone(),
        );
        let (primary, fallback) = (stopping.webhook.clone(), other.webhook.clone());
        drivers.push(tokio::spawn(async move {
            let from = customer(1000 + c);
            // Like a load balancer: the stopping replica until it refuses, then the other.
            let mut use_fallback = false;
            let mut i = 0;
            while !stop.is_cancelled() {
                let text = format!("term-{c}-{i}");
                let wamid = format!("wamid.TERM.{c}.{i}");
                emu.record_inbound(PNID, &from, &wamid, now_ms() / 1000);
                loop {
                    let url = if use_fallback { &fallback } else { &primary };
                    let result = post_text(&http, url, &from, &wamid, &text).await;
                    let ok = result.is_ok();
                    seen.lock().unwrap().push((now_ms(), !use_fallback, result));
                    if ok {
                        break;
                    }
                    assert!(!use_fallback, "the other replica refused a webhook");
                    use_fallback = true;
                }
                sent_texts
                    .lock()
                    .unwrap()
                    .entry(from.clone())
                    .or_default()
                    .push(text);
                i += 1;
            }
        }));
    }
    // Steady load first.
    assert!(
        wait_until(Duration::from_secs(30), || async { emu.sent().len() >= 50 }).await,
        "load under way"
    );
    let pid = stopping.pid();
    let sigterm_at = now_ms();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // When /readyz first answered 503 (polled as a kubelet would, only faster).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let readyz_503_at = loop {
        let r = http
            .get(format!("http://{}/readyz", stopping.admin))
            .send()
            .await;
        if r.is_ok_and(|r| r.status().as_u16() == 503) {
            break now_ms();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz did not turn 503 after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The process drains and exits by itself, within the delay and the timeout.
    let mut process = stopping.process.take().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = process.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");
    stop_driving.cancel();
    for d in drivers {
        d.await.expect("driver");
    }

    let seen = seen.lock().unwrap().clone();
    let refused: Vec<&Seen> = seen.iter().filter(|s| s.2.is_err()).collect();
    let early: Vec<&&Seen> = refused.iter().filter(|s| s.0 < readyz_503_at).collect();
    assert!(
        early.is_empty(),
        "webhooks refused before /readyz turned 503 at {readyz_503_at}: {early:?}"
    );
    let served_after = seen
        .iter()
        .filter(|s| s.1 && s.2.is_ok() && s.0 > readyz_503_at)
        .count();
    eprintln!(
        "SIGTERM at {sigterm_at}, /readyz 503 at {readyz_503_at}, {served_after} webhooks served after that, {} refused",
        refused.len()
    );
    assert!(
        served_after > 0,
        "no webhook was served during the shutdown delay"
    );
    assert!(!refused.is_empty(), "the listener never closed");
    let leases: i64 = count(
        &storage.url,
        "SELECT COUNT(*) FROM conversation_leases WHERE owner = 'stopping'",
    )
    .await;
    assert_eq!(leases, 0, "the stopped replica's leases were not released");

    let want = sent_texts.lock().unwrap().clone();
    let total: usize = want.values().map(Vec::len).sum();
    assert!(
        emu.wait_sent(|s| s.len() >= total, Duration::from_secs(60))
            .await,
        "only {} of {total} acknowledged messages answered; logs in {}",
        emu.sent().len(),
        dir.display()
    );
    assert!(wait_no_open_work(&storage.url).await, "work left open");
    assert_each_answered_once_in_order(&emu, &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_sqlite_file_is_refused() {
    let _one_at_a_time = SERIAL.lock().await;
    let Some(storage) = storage(Db::Sqlite).await else {
        return;
    };
    let dir = storage.dir.path();
    let emu = standalone_emulator(dir, Duration::from_millis(300)).await;
    let mut first = Replica::start(dir, "first", &storage.url, &emu.url(), "");
    first.wait_ready().await;
    let pid = first.pid();

    let second = Replica::start(dir, "second", &storage.url, &emu.url(), "");
    let mut process = second_process(second);
    let status = process.child.wait().unwrap();
    let log = std::fs::read_to_string(dir.join("second.log")).unwrap();
    assert!(!status.success(), "the second process started; log:\n{log}");
    let db = storage.url.trim_start_matches("sqlite://");
    assert!(
        log.contains(&format!(
            "the SQLite database {db} is already in use by process {pid}"
        )),
        "the error names the file and the other process:\n{log}"
    );
    assert!(
        log.contains("PostgreSQL"),
        "the error says what to do:\n{log}"
    );
    // The first one is unaffected.
    first.wait_ready().await;

    // Once the first is gone (even killed), the file is free again.
    first.kill();
    let third = Replica::start(dir, "third", &storage.url, &emu.url(), "");
    third.wait_ready().await;
}

fn second_process(mut r: Replica) -> GatewayProcess {
    r.process.take().unwrap()
}

/// A message another replica commits late can carry a lower id than one this replica already
/// answered (ids are taken at insert, rows show at commit): the conversation's holder, woken by
/// the commit's NOTIFY, still answers it at once rather than after its idle timeout (10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_with_a_lower_id_is_answered_at_once() {
    use sqlx::Connection;
    let Some(t) = spawn_gateway(Db::Postgres, Options::default()).await else {
        return;
    };
    let customer = "491700000077";
    // Ids start higher, so that one below the first message's is still a valid id.
    let mut c = sqlx::PgConnection::connect(&t.storage.url).await.unwrap();
    sqlx::query("SELECT setval('inbox_id_seq', 1000)")
        .execute(&mut c)
        .await
        .unwrap();
    t.emu.customer_says(PNID, customer, "Late", "first").await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            t.texts_to(customer).len() == 1
        })
        .await,
        "the first message is answered"
    );
    // What another replica's commit looks like: a row below the one just answered, then the
    // NOTIFY its transaction sends.
    let now = now_ms();
    t.emu
        .record_inbound(PNID, customer, "wamid.late", now / 1000);
    sqlx::query(
        "INSERT INTO inbox (id, wamid, phone_number_id, customer, wa_id, user_id, customer_name, \
         msg_type, text, payload, meta_ts, received_at, state) \
         SELECT id - 1, 'wamid.late', phone_number_id, customer, wa_id, user_id, customer_name, \
         msg_type, 'late', payload, meta_ts, $2, 'received' FROM inbox WHERE customer = $1",
    )
    .bind(customer)
    .bind(now)
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query("SELECT pg_notify('wagw_work', $1)")
        .bind(format!("{PNID}\t{customer}\n"))
        .execute(&mut c)
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            t.texts_to(customer).len() == 2
        })
        .await,
        "the late message was not answered within 5 s: {:?}",
        t.texts_to(customer)
    );
    assert!(
        t.texts_to(customer)[1].contains("late"),
        "{:?}",
        t.texts_to(customer)
    );
}

/// `PNID` as `replica` serves it in `/api/numbers`.
async fn served_status(http: &reqwest::Client, replica: &Replica) -> serde_json::Value {
    let res = http
        .get(format!("http://{}/api/numbers", replica.admin))
        .send()
        .await;
    let Ok(res) = res else {
        return serde_json::Value::Null;
    };
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    body["numbers"]
        .as_array()
        .and_then(|l| l.iter().find(|n| n["phone_number_id"] == PNID).cloned())
        .unwrap_or_default()
}

/// What must agree between replicas: the status in force, why, since when, and the stored
/// observation it comes from.
fn agreed(n: &serde_json::Value) -> serde_json::Value {
    serde_json::json!([
        n["status"],
        n["status_reason"],
        n["status_since"],
        n["status_from_meta"],
        n["quality_rating"],
    ])
}

/// Three replicas on one PostgreSQL: the leader stores what it observes, and every replica's
/// `/api/numbers` (and gauge) serves the same Meta-side status, within one status-loop interval
/// (`meta.reconcile.interval`) of the emulator changing it: the leader's next pass, plus the
/// replicas' read of the rows written since (a quarter of the interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_serve_the_same_number_status_within_one_interval() {
    const INTERVAL: Duration = Duration::from_secs(4);
    let _one_at_a_time = SERIAL.lock().await;
    let Some(storage) = storage(Db::Postgres).await else {
        return;
    };
    let dir = storage.dir.path();
    let emu = standalone_emulator(dir, Duration::from_millis(300)).await;
    std::fs::write(dir.join("pin"), "123456").unwrap();
    let replicas: Vec<Replica> = (0..3)
        .map(|n| {
            let cfg = StandaloneConfig::new(dir, &storage.url, &emu.url())
                .meta("  reconcile: { interval: 4s }\n")
                .number_extra(&format!(", pin: {{ file: {}/pin }}", dir.display()));
            Replica::spawn(dir, &format!("status-{n}"), cfg)
        })
        .collect();
    let _logs = LogsOnFailure(replicas.iter().map(|r| r.log.clone()).collect());
    for r in &replicas {
        r.wait_ready().await;
    }
    let http = reqwest::Client::new();
    let all_show = |status: &'static str| {
        let (http, replicas) = (&http, &replicas);
        async move {
            let mut seen = Vec::new();
            for r in replicas {
                seen.push(served_status(http, r).await);
            }
            let ok = seen
                .iter()
                .all(|n| n["status"] == status && n["status_from_meta"]["status"] == status);
            (ok, seen)
        }
    };
    let active = wait_until(Duration::from_secs(30), || async {
        all_show("active").await.0
    })
    .await;
    assert!(active, "{:?}", all_show("active").await.1);

    // Meta expires the number's token, through the emulator's control API.
    let res = http
        .post(format!("{}/_emulator/tokens/expire", emu.url()))
        .json(&serde_json::json!({ "token": "token-one" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    let changed = tokio::time::Instant::now();
    let error = wait_until(INTERVAL * 3, || async { all_show("error").await.0 }).await;
    let took = changed.elapsed();
    let (_, seen) = all_show("error").await;
    assert!(error, "{seen:?}");
    eprintln!("every replica showed Error {took:?} after the token expired");
    // One interval, and the time a loaded two-core machine takes for a pass and a request per
    // replica.
    assert!(
        took <= INTERVAL + Duration::from_secs(2),
        "every replica showed Error only after {took:?}: {seen:?}"
    );
    let first = agreed(&seen[0]);
    for (r, n) in replicas.iter().zip(&seen) {
        assert_eq!(agreed(n), first, "{} disagrees", r.id);
    }
    let reason = seen[0]["status_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("(190)"), "{reason}");
    for r in &replicas {
        let text = scrape_metrics(&http, &format!("http://{}", r.admin)).await;
        let want =
            format!("wa_gateway_number_status{{phone_number_id=\"{PNID}\",status=\"error\"}} 1");
        assert!(text.contains(&want), "{}: {text}", r.id);
    }
}
