//! The command line as a person uses it: `validate` names file:line:column for each kind of
//! mistake (with `--offline`, from the file alone; with `--format json`, as JSON Lines), and
//! `schema` prints the JSON Schema, which accepts every shipped config. (The README's quick start, `serve` and the
//! commands beside it on the repository's gateway.yaml, is `tests/quick_start.rs`.)

use std::path::Path;
use std::process::{Command, Output, Stdio};

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

/// GOOD as production writes it: Meta's Graph API, secrets from the environment and files,
/// TLS on both listeners. None of those exist here.
fn production() -> String {
    GOOD.replace(
        "graph_url: emulator",
        "graph_url: https://graph.facebook.com",
    )
    .replace("{ value: s }", "{ env: WA_GATEWAY_TEST_UNSET }")
    .replace("{ value: v }", "{ file: /nonexistent/verify-token }")
    .replace("{ value: t }", "{ env: WA_GATEWAY_TEST_UNSET }")
    .replace(
        "public_url:",
        "listen:\n  tls: { cert: /nonexistent/tls.crt, key: /nonexistent/tls.key }\n  \
         admin_tls: { cert: /nonexistent/a.crt, key: /nonexistent/a.key }\npublic_url:",
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Done-when of issue 17 (validate): `--offline` passes a file whose secrets and certificates
/// are absent and says what it skipped, and still names file:line:column for an undeclared
/// agent, an unknown key and a bad duration.
#[test]
fn validate_offline_checks_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("prod.yaml"), production()).unwrap();
    let full = wa_gateway(&["validate", "prod.yaml"], dir.path());
    let said = stderr(&full);
    assert_eq!(full.status.code(), Some(1), "{said}");
    for needed in ["WA_GATEWAY_TEST_UNSET", "verify-token", "listen.tls.cert"] {
        assert!(
            said.contains(needed),
            "full validate names {needed}:\n{said}"
        );
    }

    let offline = wa_gateway(&["validate", "--offline", "prod.yaml"], dir.path());
    let out = stdout(&offline);
    assert!(offline.status.success(), "{out}{}", stderr(&offline));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("prod.yaml: ok — 1 number"), "{out}");
    assert_eq!(
        lines[1],
        "not checked (--offline): 2 secrets from the environment, 1 from file, 0 stored in the \
         database (storage not opened); certificate files of listen.tls and listen.admin_tls",
        "{out}"
    );

    let cases = [
        (
            "undeclared agent",
            production().replace("agent: echo", "agent: suport"),
            "broken.yaml:16:12: numbers[0].agent:",
            "\"suport\" is not declared",
        ),
        (
            "unknown key",
            production().replace("public_url:", "publik_url: x\npublic_url:"),
            "broken.yaml:5:1: publik_url:",
            "unknown key",
        ),
        (
            "bad duration",
            production().replace("listen:\n", "listen:\n  idle_timeout: 5 parsecs\n"),
            "broken.yaml:3:17: listen.idle_timeout:",
            "invalid duration \"5 parsecs\"",
        ),
    ];
    for (what, text, position, message) in cases {
        std::fs::write(dir.path().join("broken.yaml"), &text).unwrap();
        let out = wa_gateway(&["validate", "--offline", "broken.yaml"], dir.path());
        let said = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: exit 1\n{said}");
        let line = said
            .lines()
            .find(|l| l.starts_with(position))
            .unwrap_or_else(|| panic!("{what}: no line starting {position:?} in\n{said}\n{text}"));
        assert!(line.contains(message), "{what}: {line}");
        assert!(stdout(&out).is_empty(), "{what}: no summary on failure");
    }
}

/// `--format json`: one object per problem per line on stdout (JSON Lines), with file, line,
/// column, path, message and severity; errors exit 1, a warning alone exits 0.
#[test]
fn validate_format_json_prints_one_object_per_problem() {
    let dir = tempfile::tempdir().unwrap();
    let text = production()
        .replace("agent: echo", "agent: suport")
        .replace("app_id: \"1000000000000001\"", "app_id: \"12ab\"");
    std::fs::write(dir.path().join("broken.yaml"), text).unwrap();
    let out = wa_gateway(
        &["validate", "--offline", "--format", "json", "broken.yaml"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let problems: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(
        problems,
        vec![
            serde_json::json!({
                "file": "broken.yaml", "line": 8, "column": 11, "path": "meta.app_id",
                "message": "app id \"12ab\" must be digits only, as Meta shows it in the app dashboard",
                "severity": "error",
            }),
            serde_json::json!({
                "file": "broken.yaml", "line": 16, "column": 12, "path": "numbers[0].agent",
                "message": "agent \"suport\" is not declared under `agents` (declared: echo)",
                "severity": "error",
            }),
        ]
    );

    // An expired Graph API version is a warning: reported, exit 0.
    let text = GOOD.replace(
        "graph_url: emulator",
        "graph_url: emulator\n  api_version: v19.0",
    );
    std::fs::write(dir.path().join("old.yaml"), text).unwrap();
    let out = wa_gateway(&["validate", "--format", "json", "old.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let warning: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(warning["severity"], "warning");
    assert_eq!(warning["path"], "meta.api_version");
    assert_eq!(
        (&warning["line"], &warning["column"]),
        (&5.into(), &16.into())
    );
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("expired on 2026-05-21"),
        "{warning}"
    );
    assert!(stderr(&out).starts_with("old.yaml: ok"), "{}", stderr(&out));
    let text_out = wa_gateway(&["validate", "old.yaml"], dir.path());
    assert!(text_out.status.success());
    assert!(
        stderr(&text_out).starts_with("old.yaml:5:16: meta.api_version: warning: Graph API v19.0"),
        "{}",
        stderr(&text_out)
    );
}

/// `validate` takes the file as the other commands do: `-c`, `--config`, `$WA_GATEWAY_CONFIG`,
/// and still as `validate FILE`.
#[test]
fn validate_follows_the_config_conventions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mine.yaml"), GOOD).unwrap();
    let run = |args: &[&str], env: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wa-gateway"));
        cmd.args(args).current_dir(dir.path());
        match env {
            Some(v) => cmd.env("WA_GATEWAY_CONFIG", v),
            None => cmd.env_remove("WA_GATEWAY_CONFIG"),
        };
        cmd.output().unwrap()
    };
    for (args, env) in [
        (&["validate", "mine.yaml"][..], None),
        (&["validate", "-c", "mine.yaml"][..], None),
        (&["validate", "--config", "mine.yaml"][..], None),
        (&["validate"][..], Some("mine.yaml")),
        (&["validate", "--offline"][..], Some("mine.yaml")),
    ] {
        let out = run(args, env);
        assert!(
            out.status.success() && stdout(&out).starts_with("mine.yaml: ok"),
            "{args:?} {env:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    let out = run(&["validate"], None);
    assert!(
        stderr(&out).starts_with("gateway.yaml: cannot read"),
        "the default file: {}",
        stderr(&out)
    );
}

/// What `serve` refuses, `validate` refuses: an in-memory SQLite database, and a stored secret
/// that storage does not hold (unless `--offline`, which opens no storage).
#[test]
fn validate_refuses_what_serve_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let memory = GOOD.replace(
        "public_url:",
        "storage: { url: \"sqlite://:memory:\" }\npublic_url:",
    );
    std::fs::write(dir.path().join("memory.yaml"), memory).unwrap();
    for args in [
        &["validate", "memory.yaml"][..],
        &["validate", "--offline", "memory.yaml"],
    ] {
        let out = wa_gateway(args, dir.path());
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).starts_with("memory.yaml:2:17: storage.url: an in-memory SQLite"),
            "{}",
            stderr(&out)
        );
    }

    let key = "0123456789abcdef".repeat(4);
    let stored = GOOD
        .replace(
            "public_url:",
            "storage: { url: \"sqlite://data/gw.db\" }\npublic_url:",
        )
        .replace(
            "  verify_token: { value: v }\n",
            &format!("  verify_token: {{ value: v }}\n  encryption_key: {{ value: \"{key}\" }}\n"),
        )
        .replace(
            "access_token: { value: t }",
            "access_token: { stored: acme }",
        );
    std::fs::write(dir.path().join("stored.yaml"), stored).unwrap();
    let out = wa_gateway(&["validate", "stored.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).starts_with("stored.yaml:16:19: numbers[0].access_token: stored secret acme is not in storage (sqlite)"),
        "{}",
        stderr(&out)
    );
    assert!(
        !dir.path().join("data/gw.db").exists(),
        "validate creates no database"
    );
    let offline = wa_gateway(&["validate", "--offline", "stored.yaml"], dir.path());
    assert!(offline.status.success(), "{}", stderr(&offline));
    assert!(stdout(&offline).contains("1 stored in the database"));

    let mut put = Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
        .args(["secret", "put", "acme", "--config", "stored.yaml"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    put.stdin
        .take()
        .unwrap()
        .write_all(b"EAAG-token\n")
        .unwrap();
    let put = put.wait_with_output().unwrap();
    assert!(put.status.success(), "{}", stderr(&put));
    let out = wa_gateway(&["validate", "stored.yaml"], dir.path());
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    // Storage that cannot be reached: the lookup is skipped with a warning, not a refusal.
    let unreachable = std::fs::read_to_string(dir.path().join("stored.yaml"))
        .unwrap()
        .replace("sqlite://data/gw.db", "postgres://wa@127.0.0.1:1/wa");
    std::fs::write(dir.path().join("unreachable.yaml"), unreachable).unwrap();
    let out = wa_gateway(&["validate", "unreachable.yaml"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(
            "unreachable.yaml:2:17: storage.url: warning: stored secrets were not looked up"
        ),
        "{}",
        stderr(&out)
    );
}

/// Converts a YAML document to the JSON a JSON Schema validator reads.
fn yaml_to_json(text: &str) -> serde_json::Value {
    let value: serde_norway::Value = serde_norway::from_str(text).expect("YAML");
    serde_json::to_value(value).expect("JSON")
}

fn schema_errors(schema: &jsonschema::Validator, doc: &serde_json::Value) -> Vec<String> {
    schema
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

/// The JSON Schema (`wa-gateway schema`) accepts the README's example config and every shipped
/// config file, checked by a real JSON Schema validator.
#[test]
fn the_readme_and_shipped_examples_pass_the_json_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = wa_gateway(&["schema"], root);
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let schema = jsonschema::validator_for(&schema).expect("the schema compiles");
    let mut docs: Vec<(String, String)> = vec![(
        "gateway.yaml".into(),
        std::fs::read_to_string(root.join("gateway.yaml")).unwrap(),
    )];
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            docs.push((
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut blocks = readme.split("```yaml\n").skip(1);
    let mut from_readme = 0;
    for block in blocks.by_ref() {
        let body = block.split("```").next().unwrap();
        if body.starts_with("version: 1") {
            docs.push((format!("README block {from_readme}"), body.to_owned()));
            from_readme += 1;
        }
    }
    assert_eq!(from_readme, 1, "the README's example config");
    assert!(
        docs.len() >= 4,
        "{:?}",
        docs.iter().map(|d| &d.0).collect::<Vec<_>>()
    );
    for (name, text) in docs {
        let errors = schema_errors(&schema, &yaml_to_json(&text));
        assert!(errors.is_empty(), "{name}: {errors:#?}");
    }
}

/// The pre-commit hook (`.pre-commit-hooks.yaml`) runs `validate --offline` on the files it
/// matches, several at once; one broken file fails the run and is named.
#[test]
fn the_pre_commit_hook_validates_the_files_it_is_given() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let hooks: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(root.join(".pre-commit-hooks.yaml")).unwrap(),
    )
    .unwrap();
    let hook = &hooks[0];
    assert_eq!(hook["id"].as_str(), Some("wa-gateway-validate"));
    assert_eq!(hook["pass_filenames"].as_bool(), Some(true));
    let files = hook["files"].as_str().unwrap();
    let matches = jsonschema::validator_for(&serde_json::json!({ "pattern": files })).unwrap();
    for (name, want) in [
        ("gateway.yaml", true),
        ("deploy/gateway-prod.yml", true),
        ("charts/wa-gateway/values.yaml", false),
        ("gateway.yaml.bak", false),
    ] {
        assert_eq!(matches.is_valid(&serde_json::json!(name)), want, "{name}");
    }
    let entry: Vec<&str> = hook["entry"].as_str().unwrap().split(' ').collect();
    assert_eq!(entry[..2], ["wa-gateway", "validate"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root.join("gateway.yaml"), dir.path().join("gateway.yaml")).unwrap();
    std::fs::write(dir.path().join("gateway-prod.yaml"), production()).unwrap();
    let ok = wa_gateway(
        &[&entry[1..], &["gateway.yaml", "gateway-prod.yaml"]].concat(),
        dir.path(),
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(stdout(&ok).matches(": ok — ").count(), 2, "{}", stdout(&ok));
    std::fs::write(
        dir.path().join("gateway-broken.yaml"),
        production().replace("agent: echo", "agent: suport"),
    )
    .unwrap();
    let out = wa_gateway(
        &[&entry[1..], &["gateway.yaml", "gateway-broken.yaml"]].concat(),
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("gateway-broken.yaml:16:12: numbers[0].agent"),
        "{}",
        stderr(&out)
    );
}
