//! Test Connection and `doctor` over real sockets: a standalone emulator (a fresh Meta app), a
//! gateway behind `public_url` whose control loop sets Meta up, the admin API and the real
//! binary. All checks pass on a healthy setup; an expired token fails the first check with
//! the fix and skips the rest; an unsubscribed WABA fails that check; `wa-gateway status`, the
//! API and the gauge agree.

use crate::common;

use common::{PNID, StandaloneConfig, WABA, free_port};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use wa_gateway::app::Gateway;
use wa_gateway::app::ReloadOutcome;
use wa_gateway::emulator::EmulatorHandle;
use wa_gateway::graph::GraphClient;

const TOKEN: &str = "token-one";

struct Env {
    emu: EmulatorHandle,
    dir: tempfile::TempDir,
    config: PathBuf,
    admin: String,
    http: reqwest::Client,
}

impl Env {
    fn write(&self, file: &str, value: &str) {
        std::fs::write(self.dir.path().join(file), value).unwrap();
    }

    async fn post(&self, path: &str) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.admin))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        (
            res.status().as_u16(),
            res.json().await.unwrap_or(Value::Null),
        )
    }

    async fn emulator_post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.emu.url()))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Runs the real binary with `args` and `-c <config>`: (exit code, stdout).
    async fn cli(&self, args: &[&str]) -> (i32, String) {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("WA_GATEWAY_LOG", "warn")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!(
            "$ wa-gateway {}\n{stdout}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), stdout)
    }
}

async fn start() -> (Env, Gateway) {
    let emu = common::start_emulator(common::emulator_config()).await;
    let dir = tempfile::tempdir().unwrap();
    common::write_secret_files(dir.path());
    std::fs::write(dir.path().join("pin"), "123456").unwrap();
    let admin_port = free_port();
    let d = dir.path().display();
    let path = StandaloneConfig::new(dir.path(), &format!("sqlite://{d}/gateway.db"), &emu.url())
        .webhook_port(free_port())
        .admin(&format!("127.0.0.1:{admin_port}"))
        .agents("  echo: { kind: echo, prefix: \"probe answered: \" }\n")
        .number_extra(&format!(", display_name: Acme, pin: {{ file: {d}/pin }}"))
        .write("gateway.yaml");
    let env = Env {
        emu,
        dir,
        config: path.clone(),
        admin: format!("http://127.0.0.1:{admin_port}"),
        http: reqwest::Client::new(),
    };
    let gateway = Gateway::start_from(&path).await.expect("gateway starts");
    (env, gateway)
}

fn outcomes(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn expect(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_connection_and_doctor_report_each_check() {
    let (env, gateway) = start().await;
    // The control loop set the fresh app up at start; a pass now waits for it deterministically.
    let (status, v) = env.post("/api/reconcile").await;
    assert_eq!(status, 200, "{v}");
    assert!(v["report"]["error"].is_null(), "{v}");
    assert_eq!(v["report"]["pending"], json!([]), "converged: {v}");
    assert!(env.emu.is_registered(PNID) && env.emu.waba_subscribed(WABA));

    // Healthy: every check passes, in order.
    let (status, report) = env.post(&format!("/api/numbers/{PNID}/test")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(
        outcomes(&report),
        expect(&[
            ("token", "pass"),
            ("registered", "pass"),
            ("waba_subscribed", "pass"),
            ("callback", "pass"),
            ("webhook_round_trip", "pass"),
            ("agent_probe", "pass"),
        ])
    );
    let detail = |r: &Value, i: usize| r["checks"][i]["detail"].as_str().unwrap().to_owned();
    assert!(
        detail(&report, 4).contains("/webhook was verified and seen by the gateway"),
        "{report:#}"
    );
    assert!(
        detail(&report, 5).contains("probe answered: "),
        "{report:#}"
    );
    assert!(detail(&report, 1).contains("Test Number"), "{report:#}");
    assert_eq!(env.emu.sent().len(), 0, "a probe never reaches a customer");

    let (code, out) = env.cli(&["test-connection", PNID]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("  PASS  ").count(), 6, "{out}");
    let (code, out) = env.cli(&["doctor"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Every number passed Test Connection."),
        "{out}"
    );
    let (code, out) = env.cli(&["status"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("As served by the gateway") && out.contains("active"),
        "{out}"
    );

    // An expired token fails the first check with the fix and skips the rest.
    let res = env
        .emulator_post("/_emulator/tokens/expire", json!({ "token": TOKEN }))
        .await;
    assert_eq!(res.status().as_u16(), 204);
    let (_, report) = env.post(&format!("/api/numbers/{PNID}/test")).await;
    assert_eq!(report["ok"], false);
    assert_eq!(
        outcomes(&report),
        expect(&[
            ("token", "fail"),
            ("registered", "skip"),
            ("waba_subscribed", "skip"),
            ("callback", "skip"),
            ("webhook_round_trip", "skip"),
            ("agent_probe", "skip"),
        ])
    );
    let fix = report["checks"][0]["fix"].as_str().unwrap();
    assert!(fix.contains("numbers[0].access_token"), "{fix}");
    assert!(
        !report.to_string().contains(TOKEN),
        "no secret in the report"
    );
    let (code, out) = env.cli(&["doctor"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL") && out.contains("Access token valid") && out.contains("fix: "),
        "{out}"
    );
    assert!(out.contains("1 of 1 number(s) failed."), "{out}");

    // The status agrees everywhere once the loop has looked.
    env.post("/api/reconcile").await;
    let (code, out) = env.cli(&["status"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("error") && out.contains("(190)"), "{out}");
    let numbers: Value = env
        .http
        .get(format!("{}/api/numbers", env.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(numbers["numbers"][0]["status"], "error");
    let metrics = common::scrape_metrics(&env.http, &env.admin).await;
    assert!(
        metrics.contains(&format!(
            "wa_gateway_number_status{{phone_number_id=\"{PNID}\",status=\"error\"}} 1"
        )),
        "{metrics}"
    );

    // A fresh token in the secret file, reloaded; then the WABA loses its app subscription.
    let res = env
        .emulator_post("/_emulator/tokens", json!({ "phone_number_id": PNID }))
        .await;
    let fresh: Value = res.json().await.unwrap();
    let fresh = fresh["token"].as_str().unwrap().to_owned();
    env.write("token", &fresh);
    assert!(matches!(
        gateway.reload_now().await,
        ReloadOutcome::Applied { .. }
    ));
    // The reload's own pass and this one are done before the WABA is unsubscribed.
    let (_, v) = env.post("/api/reconcile").await;
    assert_eq!(v["numbers"][0]["status"], "active", "{v}");
    GraphClient::new(&env.emu.url(), "v23.0", Duration::from_secs(10))
        .unsubscribe_waba(WABA, &fresh)
        .await
        .unwrap();
    let (_, report) = env.post(&format!("/api/numbers/{PNID}/test")).await;
    assert_eq!(
        outcomes(&report),
        expect(&[
            ("token", "pass"),
            ("registered", "pass"),
            ("waba_subscribed", "fail"),
            ("callback", "skip"),
            ("webhook_round_trip", "skip"),
            ("agent_probe", "pass"),
        ]),
        "{report:#}"
    );
    assert!(
        report["checks"][2]["fix"]
            .as_str()
            .unwrap()
            .contains("wa-gateway apply"),
        "{report:#}"
    );
    let (code, out) = env.cli(&["test-connection", PNID]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  WABA subscribed to the app"), "{out}");

    let (status, body) = env.post("/api/numbers/999/test").await;
    assert_eq!(status, 404, "{body}");
    gateway.shutdown(Duration::from_secs(5)).await;
}
