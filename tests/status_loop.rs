//! The control loop inside `serve`, over real sockets against the in-process emulator: it sets
//! Meta up at start, number statuses follow the token (expired at the emulator, fixed in the
//! file and hot-reloaded), refused sends turn a number to Error, and `apply: false` only
//! reports the drift. `/api/numbers` and the `wa_gateway_number_status` gauge always agree.

use crate::common;

use common::{Db, Options, PNID, PNID2, TestGateway, WABA, wait_until};
use serde_json::{Value, json};
use std::time::Duration;
use wa_gateway::app::ReloadOutcome;
use wa_gateway::emulator::{Fault, FaultKind};

const WAIT: Duration = Duration::from_secs(15);

/// A gateway started from its file (so it reloads) with `edit` applied to the test YAML and a
/// second, disabled number.
async fn spawn(db: Db, edit: impl Fn(String) -> String) -> Option<TestGateway> {
    spawn_with(db, Options::default(), "echo", edit).await
}

/// As `spawn`, with `opts` and the first number answered by `agent`.
async fn spawn_with(
    db: Db,
    opts: Options,
    agent: &str,
    edit: impl Fn(String) -> String,
) -> Option<TestGateway> {
    let storage = common::storage(db).await?;
    let opts = Options {
        second_number: true,
        ..opts
    };
    let yaml = edit(common::config_yaml(&storage.url, &opts, agent)).replace(
        "access_token: { value: token-two }\n",
        "access_token: { value: token-two }\n    enabled: false\n",
    );
    Some(common::start_from_yaml(storage, &yaml).await)
}

fn admin(t: &TestGateway, path: &str) -> String {
    format!("http://{}{path}", t.gw().admin_addr)
}

/// `POST /api/reconcile`: one pass now; its report and the numbers afterwards.
async fn pass_now(t: &TestGateway) -> Value {
    let res = t
        .http
        .post(admin(t, "/api/reconcile"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    res.json().await.unwrap()
}

async fn numbers(t: &TestGateway) -> Vec<Value> {
    let v: Value = t
        .http
        .get(admin(t, "/api/numbers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["numbers"].as_array().unwrap().clone()
}

fn number<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter().find(|n| n["phone_number_id"] == id).unwrap()
}

/// Whether the gauge says `status` (and only it) for `pnid`: one series for the number, labelled
/// with its status, 1.
async fn gauge_says(t: &TestGateway, pnid: &str, status: &str) -> bool {
    let text = t.metrics().await;
    let prefix = format!("wa_gateway_number_status{{phone_number_id=\"{pnid}\",");
    let series: Vec<&str> = text.lines().filter(|l| l.starts_with(&prefix)).collect();
    series == [format!("{prefix}status=\"{status}\"}} 1")]
}

/// Asks the emulator's control API, as a test harness or a person would.
async fn emulator_post(t: &TestGateway, path: &str, body: Value) -> reqwest::Response {
    t.http
        .post(format!("{}{path}", t.emu.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Meta expires `token` (through the emulator's control API, as a person would); then a pass.
async fn expire_then_pass(t: &TestGateway, token: &str) -> Value {
    let res = emulator_post(t, "/_emulator/tokens/expire", json!({ "token": token })).await;
    assert_eq!(res.status().as_u16(), 204);
    pass_now(t).await
}

async fn status_follows_the_token_through_the_control_loop(db: Db) {
    let Some(mut t) = spawn(db, |y| y).await else {
        return;
    };
    // The first pass set Meta up (the in-process emulator is a fresh app).
    let v = pass_now(&t).await;
    assert!(v["report"]["error"].is_null(), "{v}");
    assert_eq!(v["report"]["mode"], "apply");
    assert_eq!(v["report"]["pending"], json!([]), "{v}");
    assert!(t.emu.waba_subscribed(WABA));
    assert_eq!(
        t.emu.app_callback_url().as_deref(),
        Some("http://127.0.0.1:8080/webhook")
    );
    let list = numbers(&t).await;
    let one = number(&list, PNID);
    assert_eq!(one["status"], "active", "{one}");
    assert_eq!(one["status_from_meta"]["status"], "active");
    assert_eq!(one["verified_name"], "Test Number");
    assert_eq!(one["display_phone_number"], "+1 555-224-2922");
    assert_eq!(one["quality_rating"], "GREEN");
    assert!(one["status_since"].is_string(), "{one}");
    let two = number(&list, PNID2);
    assert_eq!(two["status"], "inactive");
    assert_eq!(two["status_reason"], "disabled in the config");
    assert!(gauge_says(&t, PNID, "active").await);
    assert!(gauge_says(&t, PNID2, "inactive").await);

    // Meta expires the token: the next pass sees 190 and says what to fix.
    let v = expire_then_pass(&t, "token-one").await;
    assert!(
        !v["report"]["read_failures"].as_array().unwrap().is_empty(),
        "{v}"
    );
    let one = number(v["numbers"].as_array().unwrap(), PNID).clone();
    assert_eq!(one["status"], "error", "{one}");
    let reason = one["status_reason"].as_str().unwrap();
    assert!(
        reason.contains("(190)") && reason.contains("numbers[0].access_token"),
        "{reason}"
    );
    assert!(one["status_since"].is_string());
    assert_eq!(number(&numbers(&t).await, PNID)["status"], "error");
    assert!(gauge_says(&t, PNID, "error").await);
    let text = t.metrics().await;
    assert!(
        text.contains("wa_gateway_reconcile_runs_total{result=\"error\"}"),
        "{text}"
    );

    // A new token goes into the file; the reload alone brings the number back.
    let res = emulator_post(&t, "/_emulator/tokens", json!({ "phone_number_id": PNID })).await;
    let fresh: Value = res.json().await.unwrap();
    let fresh = fresh["token"].as_str().unwrap().to_owned();
    let text = std::fs::read_to_string(&t.config_path).unwrap();
    std::fs::write(
        &t.config_path,
        text.replacen("{ value: token-one }", &format!("{{ value: {fresh} }}"), 1),
    )
    .unwrap();
    assert!(matches!(
        t.gw().reload_now().await,
        ReloadOutcome::Applied { .. }
    ));
    let back = wait_until(WAIT, || async {
        number(&numbers(&t).await, PNID)["status"] == "active"
    })
    .await;
    assert!(back, "{}", number(&numbers(&t).await, PNID));
    assert!(gauge_says(&t, PNID, "active").await);
    t.stop().await;
}

/// A gateway whose first number is answered by a recording agent, with `reconcile` as
/// `meta.reconcile`; the agent comes back too, as its server lives as long as it does.
async fn spawn_recording(db: Db, reconcile: &str) -> Option<(common::RecordingAgent, TestGateway)> {
    let agent = common::RecordingAgent::start().await;
    let opts = Options {
        agents: agent.agents_yaml(),
        ..Options::default()
    };
    let line = format!("  reconcile: {reconcile}\n  emulator: {{");
    let t = spawn_with(db, opts, "rec", |y| y.replace("  emulator: {", &line)).await?;
    Some((agent, t))
}

async fn refused_sends_turn_a_number_to_error_until_one_is_accepted(db: Db) {
    let Some((_agent, mut t)) = spawn_recording(db, "{ failed_sends: 2 }").await else {
        return;
    };
    pass_now(&t).await;
    assert_eq!(number(&numbers(&t).await, PNID)["status"], "active");
    // Meta refuses the next two sends for good (190 on the send only: Meta's view stays fine).
    t.emu
        .push_fault(Fault::once(FaultKind::TokenExpired190).times(2));
    for i in 0..2 {
        t.emu
            .customer_says(PNID, "15551230001", "Asha", &format!("hi {i}"))
            .await;
        let failed = t
            .wait_count(
                "SELECT COUNT(*) FROM outbox WHERE state = 'failed'",
                i as i64 + 1,
                WAIT,
            )
            .await;
        assert!(failed, "send {} refused and failed", i + 1);
    }
    let v = pass_now(&t).await;
    let one = number(v["numbers"].as_array().unwrap(), PNID);
    assert_eq!(one["status"], "error", "{one}");
    assert_eq!(
        one["status_from_meta"]["status"], "active",
        "Meta itself is fine"
    );
    let reason = one["status_reason"].as_str().unwrap();
    assert!(
        reason.contains("last 2 sends") && reason.contains("(190)"),
        "{reason}"
    );
    assert!(gauge_says(&t, PNID, "error").await);

    // The next accepted send clears it.
    t.emu
        .customer_says(PNID, "15551230001", "Asha", "again")
        .await;
    assert!(
        t.emu
            .wait_sent(
                |s| s.iter().any(|m| m.text.as_deref() == Some("re: again")),
                WAIT
            )
            .await
    );
    let cleared = wait_until(WAIT, || async {
        number(&numbers(&t).await, PNID)["status"] == "active"
    })
    .await;
    assert!(cleared, "{}", number(&numbers(&t).await, PNID));
    assert!(gauge_says(&t, PNID, "active").await);
    t.stop().await;
}

async fn plan_only_mode_reports_the_drift_and_changes_nothing(db: Db) {
    let Some(mut t) = spawn(db, |y| {
        y.replace(
            "  emulator: {",
            "  reconcile: { apply: false }\n  emulator: {",
        )
    })
    .await
    else {
        return;
    };
    let v = pass_now(&t).await;
    assert_eq!(v["report"]["mode"], "plan");
    let ops: Vec<&str> = v["report"]["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["op"].as_str().unwrap())
        .collect();
    // The disabled number's WABA is declared too: it stays subscribed for when it is enabled.
    assert_eq!(
        ops,
        ["subscribe_app", "subscribe_waba", "subscribe_waba"],
        "{v}"
    );
    assert!(v["report"]["error"].is_null());
    assert_eq!(t.emu.app_callback_url(), None, "nothing applied");
    assert!(!t.emu.waba_subscribed(WABA));
    let one = number(v["numbers"].as_array().unwrap(), PNID);
    assert_eq!(one["status"], "error");
    assert!(
        one["status_reason"]
            .as_str()
            .unwrap()
            .contains("not subscribed to the app"),
        "{one}"
    );
    let text = t.metrics().await;
    assert!(text.contains("wa_gateway_reconcile_drift 3\n"), "{text}");
    let (status, cfg) = {
        let res = t.http.get(admin(&t, "/api/config")).send().await.unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200);
    assert_eq!(cfg["reconcile"]["mode"], "plan");
    assert_eq!(cfg["reconcile"]["pending"], 3);
    t.stop().await;
}

/// With the built-in emulator the checks run inside the gateway: `doctor`, `test-connection`
/// and `status` ask it over its admin listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_asks_the_gateway_when_the_emulator_stands_in_for_meta() {
    let port = common::free_port();
    let mut t = spawn(Db::Sqlite, |y| {
        y.replace(
            "  admin: 127.0.0.1:0\n",
            &format!("  admin: 127.0.0.1:{port}\n"),
        )
    })
    .await
    .unwrap();
    pass_now(&t).await;
    let cli = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wa-gateway"));
        cmd.args(args)
            .arg("--config")
            .arg(&t.config_path)
            .env("WA_GATEWAY_LOG", "warn");
        async move {
            let out = cmd.output().await.unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.code(), text)
        }
    };
    let (code, out) = cli(&["doctor"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("not tested: enabled: false"), "{out}");
    let (code, out) = cli(&["test-connection", PNID]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.matches("  PASS  ").count(), 6, "{out}");
    let (code, out) = cli(&["status"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("inactive") && out.contains("Test Number"),
        "{out}"
    );

    t.emu.expire_token("token-one");
    pass_now(&t).await;
    let (code, out) = cli(&["doctor"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Access token valid"), "{out}");
    let (code, out) = cli(&["status"]).await;
    assert_eq!(code, Some(1), "{out}");
    t.stop().await;
}

/// Every `wa_gateway_number_status` series of a scrape, as exported.
async fn status_series(t: &TestGateway) -> Vec<String> {
    let text = t.metrics().await;
    text.lines()
        .filter(|l| l.starts_with("wa_gateway_number_status{"))
        .map(str::to_owned)
        .collect()
}

/// The gauge's series for (number, status) pairs, in the exposition's order (by number).
fn series_of(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .map(|(id, s)| {
            format!("wa_gateway_number_status{{phone_number_id=\"{id}\",status=\"{s}\"}} 1")
        })
        .collect()
}

/// Several numbers: the status gauge has exactly one series per declared number, labelled with
/// its status, and a change of status (an operator's disconnect, Meta's token refusal, the
/// number removed from the file) moves or ends that number's series alone.
async fn the_status_gauge_has_one_series_per_number_and_a_change_moves_it(db: Db) {
    let third = third_number();
    let Some(mut t) = spawn(db, |y| {
        y.replace(
            "access_token: { value: token-two }\n",
            &format!("access_token: {{ value: token-two }}\n{third}"),
        )
    })
    .await
    else {
        return;
    };
    let v = pass_now(&t).await;
    assert!(v["report"]["error"].is_null(), "{v}");
    assert_eq!(
        status_series(&t).await,
        series_of(&[(PNID, "active"), (PNID2, "inactive"), (PNID3, "active")])
    );

    // An operator disconnects the third number: its one series moves to inactive.
    let res = t
        .http
        .post(admin(&t, &format!("/api/numbers/{PNID3}/disconnect")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        status_series(&t).await,
        series_of(&[(PNID, "active"), (PNID2, "inactive"), (PNID3, "inactive")])
    );

    // Meta refuses the first number's token: its series moves to error, the others stay.
    t.emu.expire_token("token-one");
    pass_now(&t).await;
    assert_eq!(
        status_series(&t).await,
        series_of(&[(PNID, "error"), (PNID2, "inactive"), (PNID3, "inactive")])
    );

    // The third number leaves the file: its series ends.
    assert_eq!(stored_statuses(&t).await, (3, 1));
    let text = std::fs::read_to_string(&t.config_path).unwrap();
    std::fs::write(&t.config_path, text.replace(&third, "")).unwrap();
    assert!(matches!(
        t.gw().reload_now().await,
        ReloadOutcome::Applied { .. }
    ));
    assert_eq!(
        status_series(&t).await,
        series_of(&[(PNID, "error"), (PNID2, "inactive")])
    );
    // And the pass that follows the reload forgets its stored status: no replica reads it back.
    assert!(
        wait_until(WAIT, || async { stored_statuses(&t).await == (2, 0) }).await,
        "stored statuses (all, the third's): {:?}",
        stored_statuses(&t).await
    );
    t.stop().await;
}

/// How many numbers have a row in `number_status`, and whether the third does, read from the
/// gateway's storage itself.
async fn stored_statuses(t: &TestGateway) -> (i64, i64) {
    let url = &t.storage.url;
    let third = format!("SELECT COUNT(*) FROM number_status WHERE phone_number_id = '{PNID3}'");
    (
        common::count(url, "SELECT COUNT(*) FROM number_status").await,
        common::count(url, &third).await,
    )
}

/// A third number, on the first number's WABA, with a token of its own.
const PNID3: &str = "106540352242955";

fn third_number() -> String {
    format!(
        "  - phone_number_id: \"{PNID3}\"\n    waba_id: \"{WABA}\"\n    display_name: Test Three\n    agent: echo\n    access_token: {{ value: token-three }}\n"
    )
}

/// Two numbers on one WABA, each with its own token: Meta refusing the first number's token
/// puts that number in Error and leaves the other Active. The WABA's subscriptions are read
/// with the first token that works (the first number's is tried first, as it comes first in
/// the file), so the WABA is not charged to anyone; with no working token left, each number is
/// in Error for its own token and the WABA's problem is shown on both.
async fn one_numbers_expired_token_leaves_its_waba_neighbour_active(db: Db) {
    let Some(mut t) = spawn(db, |y| {
        y.replace(
            "access_token: { value: token-two }\n",
            &format!("access_token: {{ value: token-two }}\n{}", third_number()),
        )
    })
    .await
    else {
        return;
    };
    let v = pass_now(&t).await;
    assert!(v["report"]["error"].is_null(), "{v}");
    let list = numbers(&t).await;
    assert_eq!(number(&list, PNID)["status"], "active");
    assert_eq!(number(&list, PNID3)["status"], "active");

    let v = expire_then_pass(&t, "token-one").await;
    let list = v["numbers"].as_array().unwrap();
    let one = number(list, PNID);
    assert_eq!(one["status"], "error", "{one}");
    let reason = one["status_reason"].as_str().unwrap();
    assert!(
        reason.contains("(190)") && reason.contains("numbers[0].access_token"),
        "{reason}"
    );
    let three = number(list, PNID3);
    assert_eq!(three["status"], "active", "{three}");
    assert_eq!(three["status_from_meta"]["status"], "active", "{three}");
    assert!(three["waba_problem"].is_null(), "{three}");
    assert!(
        one["waba_problem"].is_null(),
        "the WABA read with token-three: {one}"
    );
    assert!(gauge_says(&t, PNID, "error").await);
    assert!(gauge_says(&t, PNID3, "active").await);
    // The WABA's subscription stays as it is: nothing to apply for it.
    assert!(t.emu.waba_subscribed(WABA));
    assert!(
        !v["report"]["pending"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["op"] == "subscribe_waba"),
        "{v}"
    );

    // No token of the WABA works any more: each number is in Error for its own token, and
    // the WABA's problem is shown beside it.
    let v = expire_then_pass(&t, "token-three").await;
    let list = v["numbers"].as_array().unwrap();
    let three = number(list, PNID3);
    assert_eq!(three["status"], "error", "{three}");
    let reason = three["status_reason"].as_str().unwrap();
    assert!(reason.contains("numbers[2].access_token"), "{reason}");
    let problem = three["waba_problem"].as_str().unwrap_or_default();
    assert!(problem.contains(WABA), "{three}");
    t.stop().await;
}

/// A send Meta refuses with 190 turns its number to Error at once (stored, so every replica
/// serves it), not at the next pass minutes later; the next pass, which finds the number fine
/// at Meta (the refusal was the send's alone), brings it back.
async fn a_send_refused_with_190_turns_the_number_to_error_at_once(db: Db) {
    // Passes far apart: only the refused send can bring the Error within the test.
    let Some((_agent, mut t)) = spawn_recording(db, "{ interval: 10m }").await else {
        return;
    };
    pass_now(&t).await;
    assert_eq!(number(&numbers(&t).await, PNID)["status"], "active");
    t.emu.push_fault(Fault::once(FaultKind::TokenExpired190));
    t.emu.customer_says(PNID, "15551230001", "Asha", "hi").await;
    let refused = t
        .wait_count(
            "SELECT COUNT(*) FROM outbox WHERE state = 'failed'",
            1,
            WAIT,
        )
        .await;
    assert!(refused, "the send was refused and failed");
    // Not the sender's run of refusals (5 by default): one 190 is enough.
    let one = number(&numbers(&t).await, PNID).clone();
    assert_eq!(one["status"], "error", "{one}");
    assert_eq!(one["status_from_meta"]["status"], "error", "{one}");
    let reason = one["status_reason"].as_str().unwrap();
    assert!(
        reason.contains("(190)") && reason.contains("numbers[0].access_token"),
        "{reason}"
    );
    assert!(gauge_says(&t, PNID, "error").await);
    let stored = t
        .scalar(&format!(
            "SELECT status FROM number_status WHERE phone_number_id = '{PNID}'"
        ))
        .await;
    assert_eq!(stored, "error", "stored for every replica");

    let v = pass_now(&t).await;
    let one = number(v["numbers"].as_array().unwrap(), PNID);
    assert_eq!(one["status"], "active", "{one}");
    t.stop().await;
}

on_both_dbs!(
    the_status_gauge_has_one_series_per_number_and_a_change_moves_it,
    status_follows_the_token_through_the_control_loop,
    refused_sends_turn_a_number_to_error_until_one_is_accepted,
    plan_only_mode_reports_the_drift_and_changes_nothing,
    one_numbers_expired_token_leaves_its_waba_neighbour_active,
    a_send_refused_with_190_turns_the_number_to_error_at_once,
);
