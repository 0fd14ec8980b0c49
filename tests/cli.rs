//! The command line as a person uses it: `validate` names file:line:column for each kind of
//! mistake, `schema` prints the JSON Schema, and `serve` on the repository's gateway.yaml answers
//! `chat` for two customers at once.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn wa_gateway(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
        .args(args)
        .current_dir(dir)
        .env_remove("WA_GATEWAY_TEST_UNSET")
        .output()
        .expect("run wa-gateway")
}

const GOOD: &str = r#"version: 1
public_url: http://127.0.0.1:8080/webhook
meta:
  graph_url: emulator
  app_id: "1000000000000001"
  app_secret: { value: s }
  verify_token: { value: v }
agents:
  echo: { kind: echo }
numbers:
  - phone_number_id: "106540352242922"
    waba_id: "102290129340398"
    agent: echo
    access_token: { value: t }
"#;

#[test]
fn validate_accepts_the_repository_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = wa_gateway(&["validate", "gateway.yaml"], root);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("gateway.yaml: ok"), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "one-line summary: {stdout}");
}

#[test]
fn validate_points_at_each_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "bad YAML",
            GOOD.replace("agent: echo\n", "agent: [echo\n"),
            "broken.yaml:15:1:",
            "YAML",
        ),
        (
            "unknown key",
            GOOD.replace("public_url:", "publik_url: x\npublic_url:"),
            "broken.yaml:2:1: publik_url",
            "unknown key",
        ),
        (
            "undeclared agent",
            GOOD.replace("agent: echo", "agent: suport"),
            "broken.yaml:13:12: numbers[0].agent",
            "\"suport\" is not declared",
        ),
        (
            "missing env secret",
            GOOD.replace(
                "graph_url: emulator",
                "graph_url: https://graph.facebook.com",
            )
            .replace("{ value: s }", "{ env: WA_GATEWAY_TEST_UNSET }")
            .replace("{ value: v }", "{ env: WA_GATEWAY_TEST_UNSET }")
            .replace("{ value: t }", "{ env: WA_GATEWAY_TEST_UNSET }"),
            "broken.yaml:6:15: meta.app_secret",
            "WA_GATEWAY_TEST_UNSET is not set",
        ),
    ];
    for (what, text, position, message) in cases {
        std::fs::write(dir.path().join("broken.yaml"), &text).unwrap();
        let out = wa_gateway(&["validate", "broken.yaml"], dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: exit 1\n{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with(position))
            .unwrap_or_else(|| panic!("{what}: no line starting {position:?} in\n{stderr}"));
        assert!(line.contains(message), "{what}: {line}");
    }
}

#[test]
fn schema_is_json_schema_of_the_config() {
    let out = wa_gateway(&["schema"], Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("schema is JSON");
    assert!(
        schema["$schema"]
            .as_str()
            .unwrap_or_default()
            .contains("json-schema.org")
    );
    let props = schema["properties"].as_object().expect("properties");
    for key in [
        "version",
        "listen",
        "public_url",
        "storage",
        "meta",
        "agents",
        "numbers",
        "policies",
    ] {
        assert!(props.contains_key(key), "schema lacks {key}");
    }
}

/// The Done-when of the spine: `serve` on the repository's gateway.yaml, then `chat` for two
/// customers at the same time, each getting its echo. Uses the file's own ports (8080, 9090, 8089).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_repository_config_and_chat() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
        .args(["serve", "--config"])
        .arg(root.join("gateway.yaml"))
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let ready = common::wait_until(Duration::from_secs(30), || {
        let http = http.clone();
        async move {
            http.get("http://127.0.0.1:9090/readyz")
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    if !ready {
        let _ = serve.kill();
        let out = serve.wait_with_output().unwrap();
        panic!(
            "gateway not ready:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let chat = |from: &'static str, text: &'static str| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
                .args([
                    "chat",
                    "--number",
                    "106540352242922",
                    "--from",
                    from,
                    "--message",
                    text,
                ])
                .output()
                .unwrap()
        })
    };
    let (a, b) = (chat("15550100001", "hello"), chat("15550100002", "hola"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let _ = serve.kill();
    let _ = serve.wait();
    for (out, want) in [(a, "< echo: hello"), (b, "< echo: hola")] {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "chat failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.lines().any(|l| l == want),
            "expected {want:?} in {stdout:?}"
        );
    }
    assert!(
        dir.path().join("data/gateway.db").exists(),
        "SQLite under ./data"
    );
}

#[test]
fn examples_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
        .args(["validate", "examples/multi-number.yaml"])
        .current_dir(root)
        .envs([
            ("WA_APP_SECRET", "s"),
            ("WA_VERIFY_TOKEN", "v"),
            ("WA_TOKEN_SUPPORT", "t1"),
            ("WA_TOKEN_ORDERS", "t2"),
            ("LLM_KEY", "k"),
            ("ORDERS_BOT_TOKEN", "Bearer o"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 numbers"), "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
        .args(["validate", "examples/bench.yaml"])
        .current_dir(root)
        .envs([
            ("WA_BENCH_APP_SECRET", "s"),
            ("WA_BENCH_VERIFY_TOKEN", "v"),
            ("WA_BENCH_TOKEN", "t"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
