//! Config hot reload over real files and sockets: reloads under load lose nothing, an invalid
//! edit changes nothing and is reported, and a Kubernetes ConfigMap `..data` swap is picked up.

use crate::common;

use common::{Db, Options, PNID, TestGateway, wait_until};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn options(prefix: &str, second_number: bool) -> Options {
    Options {
        agents: format!("  echo: {{ kind: echo, prefix: \"{prefix}\" }}\n"),
        second_number,
        ..Options::default()
    }
}

fn sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Starts a gateway from `file` (which may be a symlink) with the watcher running.
async fn start_from(storage: common::Storage, file: PathBuf) -> TestGateway {
    common::start_from_file(storage, file).await
}

/// Replaces `path` the way editors save: write a temporary file, rename it over.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits until the gateway serves the file whose text is `text`.
async fn wait_in_force(tg: &TestGateway, text: &str) -> bool {
    let want = sha(text);
    wait_until(Duration::from_secs(10), || async {
        tg.gw().state.config_status().sha256.as_deref() == Some(want.as_str())
    })
    .await
}

fn reloads(tg: &TestGateway, result: &str) -> u64 {
    tg.gw()
        .state
        .metrics
        .config_reloads
        .with_label_values(&[result])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_drop_and_duplicate_nothing() {
    let storage = common::storage(Db::Sqlite).await.unwrap();
    let path = storage.dir.path().join("gateway.yaml");
    let yaml = |prefix: &str, second: bool| {
        common::config_yaml(&storage.url, &options(prefix, second), "echo")
    };
    let (a, b) = (yaml("A: ", true), yaml("B: ", false));
    std::fs::write(&path, &a).unwrap();
    let tg = start_from(storage, path.clone()).await;
    let customers: Vec<String> = (0..20).map(|i| format!("4917000000{i:02}")).collect();

    // Steady load: customers take turns writing until the reloads are done.
    let stop = tokio_util::sync::CancellationToken::new();
    let load = tokio::spawn({
        let (emu, stop, customers) = (tg.emu.clone(), stop.clone(), customers.clone());
        async move {
            let mut sent: Vec<(String, String)> = Vec::new();
            for i in 0.. {
                if stop.is_cancelled() {
                    break;
                }
                let customer = &customers[i % customers.len()];
                let text = format!("m{i}");
                emu.customer_says(PNID, customer, "Load", &text).await;
                sent.push((customer.clone(), text));
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            sent
        }
    });

    for round in 0..50 {
        let (text, numbers) = if round % 2 == 0 { (&b, 1) } else { (&a, 2) };
        save(&path, text);
        assert!(wait_in_force(&tg, text).await, "reload {round} not applied");
        assert_eq!(tg.gw().state.snapshot.load().numbers.len(), numbers);
    }
    stop.cancel();
    let sent = load.await.unwrap();
    assert!(sent.len() > 100, "only {} messages under load", sent.len());
    assert_eq!(reloads(&tg, "ok"), 50);
    assert_eq!(reloads(&tg, "error"), 0);

    let answered = wait_until(Duration::from_secs(60), || async {
        tg.emu.sent().len() >= sent.len()
    })
    .await;
    let replies = tg.emu.sent();
    assert!(
        answered,
        "{} replies for {} messages",
        replies.len(),
        sent.len()
    );
    // Every message answered once, by whichever agent prefix was in force.
    let mut by_message: HashMap<(String, String), usize> = HashMap::new();
    let mut prefixes: HashMap<&str, usize> = HashMap::new();
    for r in &replies {
        let text = r.text.clone().unwrap_or_default();
        let (prefix, body) = text.split_at(3);
        assert!(
            prefix == "A: " || prefix == "B: ",
            "unexpected reply {text:?}"
        );
        *prefixes
            .entry(if prefix == "A: " { "A" } else { "B" })
            .or_default() += 1;
        *by_message
            .entry((r.to.clone(), body.to_owned()))
            .or_default() += 1;
    }
    for (customer, text) in &sent {
        let n = by_message.get(&(customer.clone(), text.clone())).copied();
        assert_eq!(n, Some(1), "{customer} {text}: replies {n:?}");
    }
    assert_eq!(replies.len(), sent.len(), "no extra replies");
    assert!(prefixes.len() == 2, "both prefixes served: {prefixes:?}");
    let stats = tg.emu.webhook_stats();
    assert_eq!(stats.failed_attempts, 0, "a webhook was refused: {stats:?}");
    drop(tg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_edit_changes_nothing_and_is_reported() {
    let storage = common::storage(Db::Sqlite).await.unwrap();
    let path = storage.dir.path().join("gateway.yaml");
    let good = common::config_yaml(&storage.url, &options("old: ", false), "echo");
    std::fs::write(&path, &good).unwrap();
    let mut tg = start_from(storage, path.clone()).await;
    let admin = format!("http://{}", tg.gw().admin_addr);

    let bad = good.replace("prefix: \"old: \"", "prefix: \"new: \", prefixx: 1");
    save(&path, &bad);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            reloads(&tg, "error") == 1
        })
        .await,
        "the invalid edit was not reported"
    );
    let status: serde_json::Value = tg
        .http
        .get(format!("{admin}/config/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let error = status["last_reload_error"].as_str().unwrap();
    assert!(
        error.contains("gateway.yaml:") && error.contains("unknown key `prefixx`"),
        "{error}"
    );
    assert_eq!(status["sha256"], sha(&good));
    // One format for the load time: RFC 3339 here, in /api/config and on the status page.
    let loaded = status["loaded_at"].as_str().expect("loaded_at as RFC 3339");
    assert!(humantime::parse_rfc3339(loaded).is_ok(), "{loaded}");
    let get = |path: &str| tg.http.get(format!("{admin}{path}")).send();
    let config: serde_json::Value = get("/api/config").await.unwrap().json().await.unwrap();
    assert_eq!(config["loaded_at"], status["loaded_at"]);
    let page = get("/").await.unwrap().text().await.unwrap();
    assert!(
        page.contains(&format!("<dd id=\"config-loaded\">{loaded}</dd>")),
        "the page shows when the file was loaded"
    );
    let metrics = tg.metrics().await;
    assert!(metrics.contains("wa_gateway_config_reloads_total{result=\"error\"} 1"));
    assert!(metrics.contains(&format!(
        "wa_gateway_config_info{{sha256=\"{}\"}} 1",
        sha(&good)
    )));

    // The old config keeps serving.
    tg.emu
        .customer_says(PNID, "491700000001", "Ann", "hi")
        .await;
    assert!(
        tg.emu
            .wait_sent(|s| !s.is_empty(), Duration::from_secs(10))
            .await
    );
    let sent = tg.emu.sent();
    assert_eq!(sent[0].text.as_deref(), Some("old: hi"));

    // A reload of an unchanged file swaps nothing; fixing the file applies it and clears the error.
    let fixed = good.replace("old: ", "new: ");
    save(&path, &fixed);
    assert!(wait_in_force(&tg, &fixed).await);
    assert_eq!(tg.gw().state.config_status().last_reload_error, None);
    assert_eq!(
        tg.gw().reload_now().await,
        wa_gateway::app::ReloadOutcome::Unchanged
    );
    assert_eq!(reloads(&tg, "ok"), 1);
    tg.emu
        .customer_says(PNID, "491700000001", "Ann", "again")
        .await;
    assert!(
        tg.emu
            .wait_sent(|s| s.len() >= 2, Duration::from_secs(10))
            .await
    );
    let sent = tg.emu.sent();
    assert_eq!(sent[1].text.as_deref(), Some("new: again"));
    tg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_data_swap_is_picked_up() {
    let storage = common::storage(Db::Sqlite).await.unwrap();
    let dir = storage.dir.path().join("config");
    std::fs::create_dir_all(dir.join("..2026_11_25")).unwrap();
    let first = common::config_yaml(&storage.url, &options("v1: ", false), "echo");
    std::fs::write(dir.join("..2026_11_25/gateway.yaml"), &first).unwrap();
    std::os::unix::fs::symlink("..2026_11_25", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/gateway.yaml", dir.join("gateway.yaml")).unwrap();
    let mut tg = start_from(storage, dir.join("gateway.yaml")).await;

    // What kubelet does: a new timestamped directory, a temporary link, renamed over `..data`.
    let second = first.replace("v1: ", "v2: ");
    std::fs::create_dir(dir.join("..2026_11_26")).unwrap();
    std::fs::write(dir.join("..2026_11_26/gateway.yaml"), &second).unwrap();
    std::os::unix::fs::symlink("..2026_11_26", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..2026_11_25")).unwrap();

    assert!(wait_in_force(&tg, &second).await, "the swap was not seen");
    tg.emu
        .customer_says(PNID, "491700000002", "Bo", "hello")
        .await;
    assert!(
        tg.emu
            .wait_sent(|s| !s.is_empty(), Duration::from_secs(10))
            .await
    );
    let sent = tg.emu.sent();
    assert_eq!(sent[0].text.as_deref(), Some("v2: hello"));
    tg.stop().await;
}

/// Posts signed text messages straight to `addr` on a fresh connection each, from 20 customers
/// in turn, until `stop` or until the address refuses connections; returns the wamids
/// acknowledged and every outcome that was neither a 200 nor a refused connection.
async fn post_until_refused(
    emu: wa_gateway::emulator::EmulatorHandle,
    addr: std::net::SocketAddr,
    stop: tokio_util::sync::CancellationToken,
) -> (Vec<String>, Vec<String>) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let (mut acked, mut failures) = (Vec::new(), Vec::new());
    for i in 0.. {
        if stop.is_cancelled() {
            break;
        }
        let customer = &format!("4917000001{:02}", i % 20);
        let wamid = format!("wamid.direct.{customer}.{i}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        emu.record_inbound(PNID, customer, &wamid, now);
        let body = common::text_envelope(&[(
            common::WABA,
            PNID,
            vec![(customer, &wamid, &format!("d{i}"))],
        )])
        .to_string();
        let sig =
            wa_gateway::cloudapi::signature::sign(common::APP_SECRET.as_bytes(), body.as_bytes());
        let r = http
            .post(format!("http://{addr}/webhook"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(body)
            .send()
            .await;
        match r {
            Ok(resp) if resp.status() == 200 => acked.push(wamid),
            Ok(resp) => failures.push(format!("{wamid}: HTTP {}", resp.status())),
            Err(e) if e.is_connect() => break,
            Err(e) => failures.push(format!("{wamid}: {e:?}")),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (acked, failures)
}

/// A reload moves the webhook and admin listeners to new ports: the new ones serve at once, the
/// old webhook address keeps answering until it closes, no request that reached the gateway
/// fails, and every message is answered once. A port already taken refuses the file whole; a
/// changed body limit applies in place on the same socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_and_reconfigures_the_listeners_without_failing_a_request() {
    let storage = common::storage(Db::Sqlite).await.unwrap();
    let path = storage.dir.path().join("gateway.yaml");
    let (a, b, c, d) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let url = storage.url.clone();
    let yaml = |webhook: u16, admin: u16, extra: &str| {
        common::config_yaml(&url, &options("", false), "echo")
            .replace(
                "webhook: 127.0.0.1:0",
                &format!("webhook: 127.0.0.1:{webhook}{extra}"),
            )
            .replace("admin: 127.0.0.1:0", &format!("admin: 127.0.0.1:{admin}"))
    };
    let first = yaml(a, c, "");
    save(&path, &first);
    let tg = start_from(storage, path.clone()).await;
    let old_addr: std::net::SocketAddr = format!("127.0.0.1:{a}").parse().unwrap();
    assert_eq!(tg.gw().current_webhook_addr(), old_addr);

    // Two loads: the emulator's deliveries (which follow the gateway) and direct posts to the
    // old address until it closes.
    let stop = tokio_util::sync::CancellationToken::new();
    let direct = tokio::spawn(post_until_refused(tg.emu.clone(), old_addr, stop.clone()));
    let via_emulator = tokio::spawn({
        let (emu, stop) = (tg.emu.clone(), stop.clone());
        async move {
            let mut n = 0;
            while !stop.is_cancelled() {
                let customer = format!("4917000002{:02}", n % 20);
                emu.customer_says(PNID, &customer, "Load", &format!("e{n}"))
                    .await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            n
        }
    });
    assert!(
        wait_until(Duration::from_secs(10), || async {
            tg.emu.sent().len() >= 10
        })
        .await,
        "the load is answered before the move"
    );

    let moved = yaml(b, d, "");
    save(&path, &moved);
    assert!(wait_in_force(&tg, &moved).await, "the move was not applied");
    assert_eq!(tg.gw().current_webhook_addr().port(), b);
    assert_eq!(tg.gw().current_admin_addr().port(), d);
    let health = tg
        .http
        .get(format!("http://127.0.0.1:{d}/healthz"))
        .send()
        .await
        .expect("the moved admin endpoint answers");
    assert_eq!(health.status(), 200);

    // The old address closes after its linger; the direct load stops on the refusal.
    let (acked, failures) = tokio::time::timeout(Duration::from_secs(20), direct)
        .await
        .expect("the old webhook address closes")
        .unwrap();
    assert!(failures.is_empty(), "requests failed: {failures:?}");
    assert!(
        acked.len() > 20,
        "only {} direct messages acked",
        acked.len()
    );
    stop.cancel();
    let emulated = via_emulator.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(old_addr).await.is_err(),
        "the old address still accepts"
    );
    assert_eq!(reloads(&tg, "ok"), 1);

    let total = acked.len() + emulated;
    assert!(
        wait_until(Duration::from_secs(30), || async {
            tg.emu.sent().len() >= total
        })
        .await,
        "{} replies for {total} messages",
        tg.emu.sent().len()
    );
    assert_eq!(tg.emu.sent().len(), total, "no extra replies");
    let stats = tg.emu.webhook_stats();
    assert_eq!(stats.failed_attempts, 0, "a webhook was refused: {stats:?}");

    // A port in use refuses the whole file; the running listeners stay.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = yaml(taken.local_addr().unwrap().port(), d, "");
    save(&path, &busy);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            reloads(&tg, "error") == 1
        })
        .await,
        "a taken port was not refused"
    );
    let why = tg.gw().state.config_status().last_reload_error.unwrap();
    assert!(why.contains("cannot listen on"), "{why}");
    assert_eq!(tg.gw().current_webhook_addr().port(), b);

    // A smaller body limit applies on the same socket.
    let limited = yaml(b, d, "\n  max_body_bytes: 2048");
    save(&path, &limited);
    assert!(
        wait_in_force(&tg, &limited).await,
        "the body limit was not applied"
    );
    assert_eq!(tg.gw().current_webhook_addr().port(), b);
    let big = vec![b'x'; 4096];
    let sig = wa_gateway::cloudapi::signature::sign(common::APP_SECRET.as_bytes(), &big);
    let status = tg
        .http
        .post(tg.webhook_url())
        .header("x-hub-signature-256", sig)
        .body(big)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 413);
    drop(tg);
}
