//! The command line as a person uses it: `validate` names file:line:column for each kind of
//! mistake, and `schema` prints the JSON Schema. (The README's quick start, `serve` and the
//! commands beside it on the repository's gateway.yaml, is `tests/quick_start.rs`.)

mod common;

use std::path::Path;
use std::process::{Command, Output};

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
