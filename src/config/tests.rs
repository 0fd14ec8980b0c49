//! Loading tests: every rule, with the exact line:column and field path it reports.

use super::*;
use std::path::Path;

/// The repository's default gateway.yaml.
const EXAMPLE: &str = r#"version: 1
listen:
  webhook: 127.0.0.1:8080
  admin: 127.0.0.1:9090
public_url: http://127.0.0.1:8080/webhook
storage:
  url: sqlite://data/gateway.db
meta:
  graph_url: emulator
  api_version: v23.0
  app_id: "1000000000000001"
  app_secret: { value: demo-app-secret }
  verify_token: { value: demo-verify-token }
agents:
  echo: { kind: echo, prefix: "echo: " }
numbers:
  - phone_number_id: "106540352242922"
    waba_id: "102290129340398"
    display_name: Acme Demo
    agent: echo
    access_token: { value: demo-access-token }
"#;

fn with(from: &str, to: &str) -> String {
    assert!(EXAMPLE.contains(from), "{from:?} not in the example");
    EXAMPLE.replacen(from, to, 1)
}

/// `line:column path` of every diagnostic, and the whole text.
fn diagnostics(yaml: &str) -> (Vec<String>, String) {
    let err = parse(yaml, Path::new("gateway.yaml")).expect_err("config should be refused");
    let at = err
        .diagnostics
        .iter()
        .map(|d| format!("{}:{} {}", d.line, d.column, d.path))
        .collect();
    (at, err.to_string())
}

#[test]
fn the_repository_example_loads() {
    let config = parse(EXAMPLE, Path::new("gateway.yaml")).unwrap();
    assert_eq!(config.numbers[0].access_token.expose(), "demo-access-token");
    assert_eq!(config.meta.app_secret.expose(), "demo-app-secret");
    assert_eq!(
        summary(&config),
        "1 number (1 enabled), 1 agent, storage sqlite, graph emulator"
    );
}

#[test]
fn defaults_apply_and_secrets_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "file-token\n").unwrap();
    let yaml = format!(
        r#"version: 1
public_url: https://wa.example.com/webhook
meta:
  app_id: "42"
  app_secret: {{ env: PATH }}
  verify_token: {{ file: {token} }}
agents:
  orders: {{ kind: http, url: "http://orders/reply", headers: {{ X-Key: {{ file: {token} }} }} }}
numbers:
  - {{ phone_number_id: "1", waba_id: "2", agent: orders, access_token: {{ file: {token} }} }}
"#,
        token = token.display()
    );
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let loaded = Loaded::from_path(&path).unwrap();
    let c = &loaded.config;
    assert_eq!(loaded.sha256.len(), 64);
    assert_eq!(c.listen.webhook.to_string(), "127.0.0.1:8080");
    assert_eq!(c.listen.max_body_bytes, 3 * 1024 * 1024);
    assert_eq!(c.storage.url, "sqlite://data/gateway.db");
    assert_eq!(c.meta.graph_url, "https://graph.facebook.com");
    assert_eq!(c.meta.api_version, "v23.0");
    assert_eq!(c.policies.delivery.max_attempts, 10);
    assert!(c.policies.mark_read);
    assert!(c.numbers[0].enabled);
    assert_eq!(c.numbers[0].display_name, "");
    assert_eq!(c.numbers[0].access_token.expose(), "file-token");
    assert_eq!(c.meta.verify_token.expose(), "file-token");
    assert_eq!(c.meta.app_secret.expose(), std::env::var("PATH").unwrap());
    match &c.agents["orders"] {
        Agent::Http {
            timeout, headers, ..
        } => {
            assert_eq!(*timeout, Duration::from_secs(20));
            assert_eq!(headers["X-Key"].expose(), "file-token");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        loaded.summary(),
        format!(
            "{}: ok — 1 number (1 enabled), 1 agent, storage sqlite, graph graph.facebook.com",
            path.display()
        )
    );
}

/// Found by the `config` fuzz target: YAML counts a lone CR as a line break (as editors do), so
/// a file with CR or CRLF line ends gets the same positions as with LF, syntax errors included.
#[test]
fn positions_are_the_same_whatever_the_line_ends() {
    let edits = [
        ("  webhook:", "  webhok:"),
        (
            "  admin: 127.0.0.1:9090",
            "  admin:\n\n\n 127.0.0.1:9090\n' x",
        ),
    ];
    for (from, to) in edits {
        let lf = with(from, to);
        let (at_lf, _) = diagnostics(&lf);
        for ending in ["\r\n", "\r"] {
            let (at, _) = diagnostics(&lf.replace('\n', ending));
            assert_eq!(at, at_lf, "line ends {ending:?}");
        }
    }
}

/// A case of `each_rule_points_at_its_node`: (text of the example to replace, its replacement,
/// "line:column path" the diagnostic must point at, words the message must hold).
type Case = (&'static str, &'static str, &'static str, &'static str);

/// Syntax, then shape: unknown keys, types, required keys, durations.
const SYNTAX_AND_SHAPE_CASES: &[Case] = &[
    // Syntax.
    (
        "  admin: 127.0.0.1:9090",
        "  admin: \"127.0.0.1:9090",
        "4:10 ",
        "YAML syntax error: invalid indentation in quoted scalar",
    ),
    (
        "agents:\n",
        "agents:\n   bad: 1\n  echo2: 2\n",
        "16:8 ",
        "YAML syntax error",
    ),
    // Shape: unknown keys, types, required keys, durations.
    (
        "  webhook:",
        "  webhok:",
        "3:3 listen.webhok",
        "unknown key `webhok`: did you mean `webhook`?",
    ),
    (
        "prefix:",
        "prefx:",
        "15:23 agents.echo.prefx",
        "did you mean `prefix`?",
    ),
    (
        "version: 1\n",
        "version: 1\nversoin: 1\n",
        "2:1 versoin",
        "did you mean `version`?",
    ),
    ("version: 1", "version: x", "1:10 version", "invalid type"),
    (
        "    agent: echo\n",
        "",
        "17:5 numbers[0].agent",
        "required key `agent` is missing",
    ),
    (
        "public_url: http://127.0.0.1:8080/webhook\n",
        "",
        "1:1 public_url",
        "required key",
    ),
    (
        "agents:\n",
        "agents:\n  o: { kind: http }\n",
        "15:6 agents.o.url",
        "required key `url`",
    ),
    (
        "kind: echo,",
        "kind: ech,",
        "15:17 agents.echo.kind",
        "unknown variant `ech`",
    ),
    (
        "  admin: 127.0.0.1:9090\n",
        "  admin: 127.0.0.1:9090\n  header_timeout: 5q\n",
        "5:19 listen.header_timeout",
        "invalid duration \"5q\": write e.g.",
    ),
    (
        "  admin: 127.0.0.1:9090",
        "  admin: localhost",
        "4:10 listen.admin",
        "socket address",
    ),
    (
        "{ value: demo-access-token }",
        "{ vault: x }",
        "21:19 numbers[0].access_token",
        "unknown variant `vault`",
    ),
];

/// Semantics: versions, references, ids, URLs.
const SEMANTIC_CASES: &[Case] = &[
    // Semantics.
    (
        "version: 1",
        "version: 2",
        "1:10 version",
        "version 2 is not supported",
    ),
    (
        "agent: echo",
        "agent: suport",
        "20:12 numbers[0].agent",
        "agent \"suport\" is not declared under `agents` (declared: echo)",
    ),
    (
        "\"106540352242922\"",
        "\"10654-0352\"",
        "17:22 numbers[0].phone_number_id",
        "digits only",
    ),
    (
        "\"102290129340398\"",
        "\"x1\"",
        "18:14 numbers[0].waba_id",
        "digits only",
    ),
    (
        "\"1000000000000001\"",
        "\"app\"",
        "11:11 meta.app_id",
        "digits only",
    ),
    (
        "http://127.0.0.1:8080/webhook",
        "ftp://127.0.0.1/webhook",
        "5:13 public_url",
        "not http or https",
    ),
    (
        "http://127.0.0.1:8080/webhook",
        "127.0.0.1:8080/webhook",
        "5:13 public_url",
        "absolute",
    ),
    (
        "http://127.0.0.1:8080/webhook",
        "http://127.0.0.1:8080/hook",
        "5:13 public_url",
        "/webhook",
    ),
    (
        "graph_url: emulator",
        "graph_url: graph.facebook.com",
        "9:14 meta.graph_url",
        "`emulator` or a base URL",
    ),
    (
        "sqlite://data/gateway.db",
        "mysql://db/gw",
        "7:8 storage.url",
        "sqlite://, postgres:// or postgresql://",
    ),
    (
        "sqlite://data/gateway.db",
        "sqlite://",
        "7:8 storage.url",
        "no location",
    ),
    ("v23.0", "23.0", "10:16 meta.api_version", "not like v23.0"),
];

/// Semantics: agent URLs, limits and names.
const LIMIT_CASES: &[Case] = &[
    (
        "agents:\n",
        "agents:\n  orders: { kind: http, url: \"ftp://x\" }\n",
        "15:30 agents.orders.url",
        "http:// or https://",
    ),
    (
        "  admin: 127.0.0.1:9090\n",
        "  admin: 127.0.0.1:9090\n  max_body_bytes: 0\n",
        "5:19 listen.max_body_bytes",
        "at least 1",
    ),
    (
        "  url: sqlite://data/gateway.db\n",
        "  url: sqlite://data/gateway.db\n  batch_max: 0\n",
        "8:14 storage.batch_max",
        "at least 1",
    ),
    (
        "  url: sqlite://data/gateway.db\n",
        "  url: sqlite://data/gateway.db\n  commit_interval: 1s\n",
        "8:20 storage.commit_interval",
        "at most 100ms",
    ),
    (
        "agents:\n",
        "policies:\n  delivery: { max_attempts: 0 }\nagents:\n",
        "15:29 policies.delivery.max_attempts",
        "at least 1",
    ),
    (
        "agents:\n",
        "agents:\n  Orders: { kind: echo }\n",
        "15:3 agents.Orders",
        "lowercase letters, digits",
    ),
];

/// Inside an agent, then secrets.
const AGENT_AND_SECRET_CASES: &[Case] = &[
    // Inside an agent (serde loses the path below `agents`).
    (
        "prefix: \"echo: \" }",
        "prefix: \"echo: \" }\n  zz:\n    kind: http\n    url: http://x\n    timeout: 5q",
        "19:14 agents.zz.timeout",
        "invalid duration \"5q\"",
    ),
    (
        "prefix: \"echo: \" }",
        "prefix: \"echo: \" }\n  zz:\n    kind: http\n    urll: http://x",
        "18:5 agents.zz.urll",
        "did you mean `url`?",
    ),
    (
        "prefix: \"echo: \" }",
        "prefix: \"echo: \" }\n  zz: { kind: http }",
        "16:7 agents.zz.url",
        "required key `url`",
    ),
    // Secrets.
    (
        "{ value: demo-access-token }",
        "{ env: WA_GATEWAY_TEST_SURELY_UNSET }",
        "21:19 numbers[0].access_token",
        "environment variable WA_GATEWAY_TEST_SURELY_UNSET is not set",
    ),
    (
        "{ value: demo-access-token }",
        "{ file: /nonexistent/wa-gateway/token }",
        "21:19 numbers[0].access_token",
        "cannot read secret file /nonexistent/wa-gateway/token",
    ),
    (
        "{ value: demo-access-token }",
        "EAAG-pasted-token",
        "21:19 numbers[0].access_token",
        "not the value itself",
    ),
];

#[test]
fn each_rule_points_at_its_node() {
    let cases = [
        SYNTAX_AND_SHAPE_CASES,
        SEMANTIC_CASES,
        LIMIT_CASES,
        AGENT_AND_SECRET_CASES,
    ]
    .concat();
    let mut failures = Vec::new();
    for (from, to, want_at, want_text) in &cases {
        let (at, text) = diagnostics(&with(from, to));
        let want_line = format!("gateway.yaml:{}: ", want_at.split(' ').next().unwrap());
        if !at.iter().any(|a| a == want_at)
            || !text.contains(want_text)
            || !text.starts_with(&want_line)
        {
            failures.push(format!(
                "{to:?}: want {want_at:?} {want_text:?}\n  got {at:?} {text}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn duplicate_number_names_both_lines() {
    let yaml = format!(
        "{EXAMPLE}  - {{ phone_number_id: \"106540352242922\", waba_id: \"1\", agent: echo, access_token: {{ value: t }} }}\n"
    );
    let (at, text) = diagnostics(&yaml);
    assert_eq!(at, ["22:24 numbers[1].phone_number_id"], "{text}");
    assert!(
        text.contains("declared twice (also declared at line 17)"),
        "{text}"
    );
}

#[test]
fn inline_secrets_need_the_emulator() {
    let (at, text) = diagnostics(&with(
        "graph_url: emulator",
        "graph_url: https://graph.facebook.com",
    ));
    assert_eq!(
        at,
        [
            "12:15 meta.app_secret",
            "13:17 meta.verify_token",
            "21:19 numbers[0].access_token"
        ],
        "{text}"
    );
    assert!(text.contains(
        "inline secrets are only accepted with the built-in emulator; use { env: NAME } or { file: PATH }"
    ));
}

#[test]
fn every_semantic_error_is_reported_in_file_order() {
    let yaml = with("version: 1", "version: 3")
        .replace("v23.0", "latest")
        .replace("agent: echo", "agent: orders")
        .replace(
            "{ value: demo-access-token }",
            "{ env: WA_GATEWAY_TEST_SURELY_UNSET }",
        );
    let (at, text) = diagnostics(&yaml);
    assert_eq!(
        at,
        [
            "1:10 version",
            "10:16 meta.api_version",
            "20:12 numbers[0].agent",
            "21:19 numbers[0].access_token"
        ],
        "{text}"
    );
    assert_eq!(text.lines().count(), 4);
}

#[test]
fn error_text_never_holds_a_secret_value() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "Zq8-very-distinctive-secret").unwrap();
    let yaml = with(
        "{ value: demo-access-token }",
        &format!("{{ file: {} }}", token.display()),
    )
    .replace("{ value: demo-app-secret }", "{ file: /nonexistent/x }")
    .replace("agent: echo", "agent: nobody");
    let err = parse(&yaml, Path::new("gateway.yaml")).unwrap_err();
    assert_eq!(err.diagnostics.len(), 2, "{err}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("Zq8-very-distinctive"), "{text}");
    }
    // A token pasted where a reference belongs is not echoed either.
    let (_, text) = diagnostics(&with(
        "{ value: demo-access-token }",
        "Zq8-very-distinctive",
    ));
    assert!(!text.contains("Zq8-very-distinctive"), "{text}");
    let (_, text) = diagnostics(&with(
        "{ value: demo-access-token }",
        "{ env: [Zq8-very-distinctive] }",
    ));
    assert!(!text.contains("Zq8-very-distinctive"), "{text}");
}

#[test]
fn an_unreadable_file_is_one_diagnostic_without_position() {
    let err = load(Path::new("/nonexistent/gateway.yaml")).unwrap_err();
    assert_eq!(err.diagnostics.len(), 1);
    assert_eq!(err.diagnostics[0].line, 0);
    assert!(
        err.to_string()
            .starts_with("/nonexistent/gateway.yaml: cannot read the configuration file: "),
        "{err}"
    );
}

#[test]
fn schema_is_generated_from_the_model() {
    let schema = json_schema();
    let defs = &schema["$defs"];
    let secret = &defs["Secret"]["oneOf"];
    let kinds: Vec<&str> = secret
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| v["required"].as_array().unwrap())
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["env", "file", "value", "stored"], "{secret}");
    assert_eq!(defs["Duration"]["type"], "string");
    assert_eq!(
        defs["Number"]["properties"]["phone_number_id"]["pattern"],
        "^[0-9]+$"
    );
    let required = schema["required"].as_array().unwrap();
    for key in ["version", "public_url", "meta", "agents", "numbers"] {
        assert!(required.iter().any(|r| r == key), "{key} not required");
    }
    assert_eq!(schema["additionalProperties"], false);
}

#[test]
fn policy_rules_point_at_their_node() {
    let cases = [
        (
            format!("{EXAMPLE}policies:\n  window: 25h\n"),
            "23:11 policies.window",
            "may only be shortened",
        ),
        (
            format!("{EXAMPLE}policies:\n  throughput_per_number: 0\n"),
            "23:26 policies.throughput_per_number",
            "at least 1",
        ),
        (
            format!("{EXAMPLE}policies:\n  max_reply_parts: 0\n"),
            "23:20 policies.max_reply_parts",
            "at least 1",
        ),
        (
            format!("{EXAMPLE}policies:\n  agent: {{ max_concurrency: 0 }}\n"),
            "23:29 policies.agent.max_concurrency",
            "at least 1",
        ),
        (
            format!("{EXAMPLE}policies:\n  handoff: {{ pause_for: 0s }}\n"),
            "23:25 policies.handoff.pause_for",
            "at most 30d",
        ),
        (
            format!("{EXAMPLE}policies:\n  handoff: {{ pause_for: 31d }}\n"),
            "23:25 policies.handoff.pause_for",
            "more than 0s",
        ),
        (
            format!("{EXAMPLE}policies:\n  handoff: {{ echo_pause: 0s }}\n"),
            "23:26 policies.handoff.echo_pause",
            "WhatsApp Business app",
        ),
        (
            format!(
                "{EXAMPLE}policies:\n  handoff: {{ notify: {{ url: helpdesk, secret: {{ value: s }} }} }}\n"
            ),
            "23:29 policies.handoff.notify.url",
            "http:// or https://",
        ),
        (
            format!("{EXAMPLE}policies:\n  media: {{ cache_for: 30d }}\n"),
            "23:23 policies.media.cache_for",
            "under 30d",
        ),
        (
            format!("{EXAMPLE}policies:\n  media: {{ timeout: 0s }}\n"),
            "23:21 policies.media.timeout",
            "more than 0s",
        ),
        (
            format!("{EXAMPLE}policies:\n  fallback_reply: {{ es: Lo siento }}\n"),
            "23:19 policies.fallback_reply",
            "`default`",
        ),
        (
            with(
                "    access_token: { value: demo-access-token }\n",
                "    access_token: { value: demo-access-token }\n    policies: { window: 48h }\n",
            ),
            "22:25 numbers[0].policies.window",
            "may only be shortened",
        ),
    ];
    for (yaml, at, message) in cases {
        let (found, text) = diagnostics(&yaml);
        assert!(
            found.iter().any(|f| f == at),
            "{at} not in {found:?}\n{text}"
        );
        assert!(text.contains(message), "{message} not in {text}");
    }
}

#[test]
fn policy_defaults_cover_ten_languages_of_opt_out() {
    let cfg = parse(EXAMPLE, Path::new("gateway.yaml")).unwrap();
    let p = &cfg.policies;
    assert_eq!(p.window.get(), std::time::Duration::from_secs(86_400));
    assert_eq!(p.throughput_per_number, 80);
    assert_eq!(p.max_reply_parts, 10);
    assert_eq!(p.agent.max_concurrency, 64);
    assert_eq!(
        p.handoff.pause_for.get(),
        std::time::Duration::from_secs(86_400)
    );
    assert!(p.handoff.notify.is_none());
    for keyword in [
        "STOP",
        "BAJA",
        "SAIR",
        "ARRET",
        "STOPP",
        "रोकें",
        "توقف",
        "退订",
        "BERHENTI",
        "СТОП",
    ] {
        assert!(p.opt_out.keywords.iter().any(|k| k == keyword), "{keyword}");
    }
}

#[test]
fn plain_http_off_loopback_needs_tls_or_an_explicit_choice() {
    let open = with("webhook: 127.0.0.1:8080", "webhook: 0.0.0.0:8080");
    let (at, text) = diagnostics(&open);
    assert_eq!(at, ["3:12 listen.webhook"], "{text}");
    assert!(
        text.contains("listen.tls") && text.contains("plain_http"),
        "{text}"
    );
    let behind_ingress = with(
        "webhook: 127.0.0.1:8080",
        "webhook: \"[::]:8080\"\n  plain_http: true",
    );
    parse(&behind_ingress, Path::new("gateway.yaml")).unwrap();
    let v6_loopback = with("webhook: 127.0.0.1:8080", "webhook: \"[::1]:8080\"");
    parse(&v6_loopback, Path::new("gateway.yaml")).unwrap();
}

#[test]
fn tls_files_must_load_and_match() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["wa.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (crt, pem) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&pem, key.serialize_pem()).unwrap();
    let tls = |cert: &Path, key: &Path| {
        with(
            "webhook: 127.0.0.1:8080",
            &format!(
                "webhook: 0.0.0.0:8443\n  tls:\n    cert: {}\n    key: {}",
                cert.display(),
                key.display()
            ),
        )
    };
    parse(&tls(&crt, &pem), Path::new("gateway.yaml")).unwrap();

    let (at, text) = diagnostics(&tls(&crt, &dir.path().join("nope.key")));
    assert_eq!(at, ["6:10 listen.tls.key"], "{text}");
    assert!(text.contains("nope.key"), "{text}");
    let (at, text) = diagnostics(&tls(&pem, &pem));
    assert_eq!(at, ["5:11 listen.tls.cert"], "{text}");
    assert!(!text.contains("PRIVATE KEY-----\n"), "{text}");
}

#[test]
fn stored_secrets_need_an_encryption_key_that_parses() {
    // A stored token without meta.encryption_key is refused at the reference.
    let (at, text) = diagnostics(&with(
        "access_token: { value: demo-access-token }",
        "access_token: { stored: acme }",
    ));
    assert_eq!(at, ["21:19 numbers[0].access_token"], "{text}");
    assert!(
        text.contains("meta.encryption_key is not set") && text.contains("openssl rand -base64 32"),
        "{text}"
    );

    // With a key (inline, emulator only) the stored reference parses and waits for storage.
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let keyed = with(
        "  verify_token: { value: demo-verify-token }\n",
        &format!(
            "  verify_token: {{ value: demo-verify-token }}\n  encryption_key: {{ value: \"{key}\" }}\n"
        ),
    );
    let stored = keyed.replacen(
        "access_token: { value: demo-access-token }",
        "access_token: { stored: acme }",
        1,
    );
    let config = parse(&stored, Path::new("gateway.yaml")).unwrap();
    assert_eq!(config.numbers[0].access_token.stored_name(), Some("acme"));
    assert_eq!(config.numbers[0].access_token.expose(), "");

    // A key of the wrong length, a key that is itself stored, a bad name: each at its node.
    let short = keyed.replacen(key, "c2hvcnQ=", 1);
    let (at, text) = diagnostics(&short);
    assert_eq!(at, ["14:19 meta.encryption_key"], "{text}");
    assert!(text.contains("decodes to 5 bytes"), "{text}");
    assert!(!text.contains("c2hvcnQ"), "the key is never echoed: {text}");
    let (at, text) = diagnostics(&with(
        "  verify_token: { value: demo-verify-token }\n",
        "  verify_token: { value: demo-verify-token }\n  encryption_key: { stored: key }\n",
    ));
    assert_eq!(at, ["14:19 meta.encryption_key"], "{text}");
    assert!(text.contains("cannot itself be a stored secret"), "{text}");
    let (at, text) = diagnostics(&stored.replacen("stored: acme", "stored: \"a b\"", 1));
    assert_eq!(at, ["22:19 numbers[0].access_token"], "{text}");
    assert!(text.contains("not a stored secret name"), "{text}");

    // The launcher's config id is digits.
    let (at, _) = diagnostics(&with(
        "  verify_token: { value: demo-verify-token }\n",
        "  verify_token: { value: demo-verify-token }\n  embedded_signup: { config_id: abc }\n",
    ));
    assert_eq!(at, ["14:33 meta.embedded_signup.config_id"]);
}

#[test]
fn listen_limits_default_and_refuse_zero_with_their_position() {
    let l = parse(EXAMPLE, Path::new("gateway.yaml")).unwrap().listen;
    assert_eq!(l.max_body_bytes, 3 * 1024 * 1024, "Meta sends up to 3 MB");
    assert_eq!(l.header_timeout, Duration::from_secs(5));
    assert_eq!(l.idle_timeout, Duration::from_secs(75));
    assert_eq!(l.body_timeout, Duration::from_secs(10));
    assert_eq!(
        (l.h2_max_streams, l.max_connections, l.max_inflight_bodies),
        (32, 4096, 256)
    );
    // (line added under `listen:`, "line:column path", words the message must hold)
    let cases: &[(&str, &str, &str)] = &[
        (
            "header_timeout: 0s",
            "5:19 listen.header_timeout",
            "more than 0s",
        ),
        (
            "body_timeout: 0ms",
            "5:17 listen.body_timeout",
            "more than 0s",
        ),
        (
            "idle_timeout: 0s",
            "5:17 listen.idle_timeout",
            "more than 0s",
        ),
        (
            "idle_timeout: 2d",
            "5:17 listen.idle_timeout",
            "at most 24h",
        ),
        (
            "h2_max_streams: 0",
            "5:19 listen.h2_max_streams",
            "at least 1",
        ),
        (
            "max_connections: 0",
            "5:20 listen.max_connections",
            "at least 1",
        ),
        (
            "max_inflight_bodies: 0",
            "5:24 listen.max_inflight_bodies",
            "at least 1",
        ),
        (
            "h2_max_streams: -1",
            "5:19 listen.h2_max_streams",
            "expected u32",
        ),
    ];
    let mut failures = Vec::new();
    for (line, want_at, want_text) in cases {
        let yaml = with(
            "  admin: 127.0.0.1:9090\n",
            &format!("  admin: 127.0.0.1:9090\n  {line}\n"),
        );
        let (at, text) = diagnostics(&yaml);
        if at != [*want_at] || !text.contains(want_text) {
            failures.push(format!(
                "{line:?}: want {want_at:?} {want_text:?}\n  got {at:?} {text}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    let open = with("admin: 127.0.0.1:9090", "admin: 0.0.0.0:9090");
    let (at, text) = diagnostics(&open);
    assert_eq!(at, ["4:10 listen.admin"], "{text}");
    assert!(text.contains("listen.admin_token"), "{text}");
    let with_token = with(
        "admin: 127.0.0.1:9090",
        "admin: 0.0.0.0:9090\n  admin_token: { value: s3cret }\n  admin_hosts: [wa-admin.wa.svc]",
    );
    parse(&with_token, Path::new("gateway.yaml")).unwrap();
    let v6_loopback = with("admin: 127.0.0.1:9090", "admin: \"[::1]:9090\"");
    parse(&v6_loopback, Path::new("gateway.yaml")).unwrap();

    let (at, text) = diagnostics(&with(
        "admin: 127.0.0.1:9090",
        "admin: 127.0.0.1:9090\n  admin_hosts: [\"https://x.example\"]\n  media_token: { value: m }",
    ));
    assert_eq!(
        at,
        ["5:17 listen.admin_hosts[0]", "6:16 listen.media_token"],
        "{text}"
    );
}

#[test]
fn openai_tools_are_named_from_a_fixed_set() {
    let gpt =
        "  gpt: { kind: openai, url: \"http://llm/v1\", model: m, tools: [buttons, handoff] }\n";
    let ok = with("  echo: { kind: echo, prefix: \"echo: \" }\n", gpt)
        .replace("agent: echo", "agent: gpt");
    let cfg = parse(&ok, Path::new("gateway.yaml")).expect("valid");
    let Agent::Openai { tools, .. } = &cfg.agents["gpt"] else {
        panic!("an openai agent")
    };
    assert_eq!(tools, &[AgentTool::Buttons, AgentTool::Handoff]);
    let (places, text) = diagnostics(&ok.replace("[buttons, handoff]", "[buttons, carousel]"));
    assert_eq!(places, ["15:8 agents.gpt"], "{text}");
    assert!(
        text.contains(
            "unknown variant `carousel`, expected one of `buttons`, `list`, `media`, `handoff`"
        ),
        "{text}"
    );
}

#[test]
fn the_defaults_serialized_by_the_model_pass_the_schema() {
    let config = parse(EXAMPLE, Path::new("gateway.yaml")).unwrap();
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(
        json["policies"]["window"], "1day",
        "the default that used to fail"
    );
    let errors: Vec<String> = jsonschema::validator_for(&json_schema())
        .expect("the schema compiles")
        .iter_errors(&json)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{json:#}");
}

#[test]
fn telemetry_is_off_by_default_and_its_rules_point_at_their_node() {
    let config = parse(EXAMPLE, Path::new("gateway.yaml")).expect("the example loads");
    assert!(config.telemetry.otlp.is_none() && !config.telemetry.include_customer);
    let on = format!(
        "{EXAMPLE}telemetry:\n  otlp: {{ endpoint: \"http://collector:4318\", headers: {{ x-key: {{ value: k }} }} }}\n"
    );
    let config = parse(&on, Path::new("gateway.yaml")).expect("telemetry loads");
    let otlp = config.telemetry.otlp.expect("otlp set");
    assert_eq!(otlp.protocol, telemetry::OtlpProtocol::Http);
    assert_eq!(otlp.sample_ratio, 1.0);
    assert_eq!(otlp.headers["x-key"].expose(), "k");
    let bad = format!(
        "{EXAMPLE}telemetry:\n  otlp:\n    endpoint: collector:4318\n    sample_ratio: 1.5\n"
    );
    let (at, text) = diagnostics(&bad);
    assert_eq!(
        at,
        [
            "24:15 telemetry.otlp.endpoint",
            "25:19 telemetry.otlp.sample_ratio"
        ],
        "{text}"
    );
    assert!(text.contains("1.5 is not between 0 and 1"), "{text}");
    let (at, text) = diagnostics(&format!(
        "{EXAMPLE}telemetry:\n  otlp: {{ endpoint: \"http://c:4318\", protocol: udp }}\n"
    ));
    assert_eq!(at.len(), 1, "{text}");
    assert!(
        at[0].starts_with("23:") && text.contains("protocol"),
        "{text}"
    );
}
