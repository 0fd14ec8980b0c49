//! Onboarding against a standalone emulator (a Meta app that outlives gateway restarts) on SQLite
//! and PostgreSQL: phone verification and registration through the CLI and the admin API with
//! Meta's refusals as sentences, the resend cooldown, the Embedded Signup exchange storing an
//! encrypted token that a gateway then serves with, and encryption key rotation.

use crate::common;

use base64::Engine;
use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use wa_gateway::app::Gateway;
use wa_gateway::emulator::{EmulatorConfig, EmulatorHandle};
use wa_gateway::vault::{EncryptionKey, Keyring, Sealed};

const APP_ID: &str = "1000000000000001";
const TOKEN: &str = "token-one";
const ADMIN: &str = "onboard-admin-token";

fn b64(bytes: [u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

struct Env {
    emu: EmulatorHandle,
    storage: Storage,
    http: reqwest::Client,
}

/// An emulator with two numbers of one WABA (token `token-one`), and the secret files.
async fn env(db: Db) -> Option<Env> {
    let storage = storage(db).await?;
    let emu = start_emulator(EmulatorConfig {
        numbers: vec![emulator_number(PNID), emulator_number(PNID2)],
        ..emulator_config()
    })
    .await;
    let e = Env {
        emu,
        storage,
        http: reqwest::Client::new(),
    };
    write_secret_files(e.dir());
    for (name, value) in [
        ("admin_token", ADMIN),
        ("pin1", "123456"),
        ("pin2", "654321"),
        ("key_a", &b64([1; 32])),
        ("key_b", &hex::encode([2u8; 32])),
        ("key_c", &b64([3; 32])),
    ] {
        e.write(name, value);
    }
    Some(e)
}

impl Env {
    /// A customer writes `text` and the echo agent's reply reaches the emulator (20 s at most).
    async fn echoed(&self, customer: &str, name: &str, text: &str) -> bool {
        self.emu.customer_says(PNID, customer, name, text).await;
        let want = format!("echo: {text}");
        self.emu
            .wait_sent(
                |s| s.iter().any(|m| m.text.as_deref() == Some(want.as_str())),
                Duration::from_secs(20),
            )
            .await
    }

    fn dir(&self) -> &Path {
        self.storage.dir.path()
    }

    fn write(&self, file: &str, value: &str) {
        std::fs::write(self.dir().join(file), value).unwrap();
    }

    /// A config calling the emulator; `meta_extra` lines go under `meta:`, `numbers` is the
    /// whole `numbers:` block.
    fn config(&self, name: &str, meta_extra: &str, numbers: &str) -> PathBuf {
        StandaloneConfig::new(self.dir(), &self.storage.url, &self.emu.url())
            .admin_token_file()
            .meta(meta_extra)
            .numbers(numbers)
            .write(name)
    }

    fn key(&self, file: &str) -> String {
        format!(
            "  encryption_key: {{ file: {}/{file} }}\n",
            self.dir().display()
        )
    }

    /// Both numbers with file tokens and PINs from `pin1` / `pin2`.
    fn numbers_with_files(&self) -> String {
        let d = self.dir().display();
        format!(
            "numbers:\n\
             \x20 - {{ phone_number_id: \"{PNID}\", waba_id: \"{WABA}\", agent: echo, access_token: {{ file: {d}/token }}, pin: {{ file: {d}/pin1 }} }}\n\
             \x20 - {{ phone_number_id: \"{PNID2}\", waba_id: \"{WABA}\", agent: echo, access_token: {{ file: {d}/token }}, pin: {{ file: {d}/pin2 }} }}\n"
        )
    }

    async fn admin_post(&self, gw: &Gateway, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("http://{}{path}", gw.admin_addr))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// The code the emulator "sent", read from its control API as a person would.
    async fn sent_code(&self, pnid: &str) -> String {
        let r: Value = self
            .http
            .get(format!(
                "{}/_emulator/numbers/{pnid}/verification_code",
                self.emu.url()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["code"].as_str().expect("a pending code").to_owned()
    }

    async fn signup_code(&self) -> String {
        let r: Value = self
            .http
            .post(format!("{}/_emulator/signup_codes", self.emu.url()))
            .json(&json!({ "waba_id": WABA }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["code"].as_str().unwrap().to_owned()
    }

    /// The stored row of `name`, as storage holds it.
    async fn row(&self, name: &str) -> Sealed {
        use sqlx::Connection;
        let sql = "SELECT key_id, nonce, ciphertext FROM stored_secrets WHERE name = $1";
        let (key_id, nonce, ciphertext): (String, Vec<u8>, Vec<u8>) =
            if self.storage.url.starts_with("sqlite:") {
                let mut c = sqlx::SqliteConnection::connect(&self.storage.url)
                    .await
                    .unwrap();
                sqlx::query_as(sql)
                    .bind(name)
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
            } else {
                let mut c = sqlx::PgConnection::connect(&self.storage.url)
                    .await
                    .unwrap();
                sqlx::query_as(sql)
                    .bind(name)
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
            };
        Sealed {
            key_id,
            nonce,
            ciphertext,
        }
    }
}

fn cli(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run wa-gateway")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const WRONG_CODE: &str = "The verification code for number";
const WRONG_PIN: &str = "does not match the one set at Meta (Meta error 133005)";

async fn verify_then_register_with_the_pin(db: Db) {
    let Some(env) = env(db).await else { return };
    let cfg = env.config("gateway.yaml", "", &env.numbers_with_files());
    let gw = Gateway::start_from(&cfg).await.expect("gateway starts");

    // The onboarding endpoints are behind the admin token.
    let anonymous = env
        .http
        .post(format!(
            "http://{}/api/numbers/{PNID}/request_code",
            gw.admin_addr
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    // Request a code; a second request within the cooldown is refused locally, by the CLI and
    // by the admin API alike (the cooldown is in storage).
    ok(&cli(
        &[
            "number",
            "request-code",
            PNID,
            "--method",
            "sms",
            "--language",
            "en_US",
        ],
        &cfg,
    ));
    let again = refused(&cli(
        &["number", "request-code", PNID, "--method", "voice"],
        &cfg,
    ));
    assert!(
        again.contains(&format!(
            "a verification code was requested for number {PNID}"
        )) && again.contains("before requesting another"),
        "{again}"
    );
    let (status, body) = env
        .admin_post(&gw, &format!("/api/numbers/{PNID}/request_code"), json!({}))
        .await;
    assert_eq!(status, 429, "{body}");
    let wait = body["retry_after_secs"].as_u64().unwrap();
    assert!((1..=60).contains(&wait), "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(&format!("wait {wait}s")),
        "{body}"
    );
    // Behind the local cooldown Meta enforces its own (the emulator refuses as Meta does).
    let direct =
        wa_gateway::graph::GraphClient::new(&env.emu.url(), "v23.0", Duration::from_secs(5));
    let meta = direct
        .request_code(PNID, TOKEN, wa_gateway::graph::CodeMethod::Sms, "en_US")
        .await
        .unwrap_err();
    assert_eq!(meta.code(), Some(136024), "{meta}");

    // Registering before the code is verified: Meta's 133006, as a sentence.
    let (status, body) = env
        .admin_post(&gw, &format!("/api/numbers/{PNID}/register"), json!({}))
        .await;
    assert_eq!(
        (status, body["meta_code"].as_i64()),
        (422, Some(133006)),
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("must be verified again"),
        "{body}"
    );

    // A wrong code, through the CLI and the admin API.
    let code = env.sent_code(PNID).await;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let cli_wrong = refused(&cli(&["number", "verify-code", PNID, wrong], &cfg));
    assert!(
        cli_wrong.contains(WRONG_CODE)
            && cli_wrong.contains("is wrong or has expired (Meta error 136025)"),
        "{cli_wrong}"
    );
    let (status, body) = env
        .admin_post(
            &gw,
            &format!("/api/numbers/{PNID}/verify_code"),
            json!({ "code": wrong }),
        )
        .await;
    assert_eq!(
        (status, body["meta_code"].as_i64()),
        (422, Some(136025)),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains(WRONG_CODE),
        "{body}"
    );

    // The right code, then registration with the file's PIN.
    ok(&cli(&["number", "verify-code", PNID, &code], &cfg));
    assert!(!env.emu.is_registered(PNID));
    let registered = ok(&cli(&["number", "register", PNID], &cfg));
    assert!(registered.contains("is registered"), "{registered}");
    assert!(env.emu.is_registered(PNID));
    let info = direct
        .number_info(PNID, TOKEN, Some("status,code_verification_status"))
        .await
        .unwrap();
    assert_eq!(info.status.as_deref(), Some("CONNECTED"));
    assert_eq!(info.code_verification_status.as_deref(), Some("VERIFIED"));

    // A wrong PIN: the second number gets its PIN set by a first registration, is deregistered,
    // and the file then holds another PIN.
    let (status, body) = env
        .admin_post(&gw, &format!("/api/numbers/{PNID2}/register"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    direct.deregister(PNID2, TOKEN).await.unwrap();
    env.write("pin2", "111111");
    assert!(matches!(
        gw.reload_now().await,
        wa_gateway::app::ReloadOutcome::Applied { .. }
    ));
    let (status, body) = env
        .admin_post(&gw, &format!("/api/numbers/{PNID2}/register"), json!({}))
        .await;
    assert_eq!(
        (status, body["meta_code"].as_i64()),
        (422, Some(133005)),
        "{body}"
    );
    let sentence = body["error"].as_str().unwrap();
    assert!(
        sentence.contains(WRONG_PIN) && sentence.contains("numbers[1].pin"),
        "{body}"
    );
    let cli_pin = refused(&cli(&["number", "register", PNID2], &cfg));
    assert!(
        cli_pin.contains(WRONG_PIN) && cli_pin.contains("numbers[1].pin"),
        "{cli_pin}"
    );
    assert!(!env.emu.is_registered(PNID2));

    // An undeclared number is named with what to do.
    let (status, body) = env
        .admin_post(
            &gw,
            "/api/numbers/999/verify_code",
            json!({ "code": "123456" }),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("wa-gateway signup"),
        "{body}"
    );
    gw.shutdown(Duration::from_secs(5)).await;
}

async fn signup_stores_an_encrypted_token_that_serves(db: Db) {
    let Some(env) = env(db).await else { return };
    let key = env.key("key_a");
    let empty = env.config("gateway.yaml", &key, "numbers: []\n");

    // Meta's OAuth refusals, with Meta's bodies.
    let oauth = |secret: &str, code: &str| {
        let url = format!(
            "{}/v23.0/oauth/access_token?client_id={APP_ID}&client_secret={secret}&code={code}",
            env.emu.url()
        );
        let http = env.http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let code = env.signup_code().await;
    let (status, body) = oauth("wrong-secret", &code).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "OAuthException");
    assert_eq!(body["error"]["code"], 1);
    assert_eq!(body["error"]["message"], "Error validating client secret.");
    assert!(body["error"]["fbtrace_id"].is_string(), "{body}");
    let (_, body) = oauth(APP_SECRET, "AQnot-a-code").await;
    assert_eq!(body["error"]["code"], 100, "{body}");

    // The CLI exchanges the code, stores the token and prints the YAML to add.
    let out = cli(
        &[
            "signup",
            "--code",
            &code,
            "--waba-id",
            WABA,
            "--phone-number-id",
            PNID,
            "--name",
            "acme",
        ],
        &empty,
    );
    let yaml = ok(&out);
    assert!(
        yaml.contains("access_token: { stored: \"acme\" }"),
        "{yaml}"
    );
    assert!(
        yaml.contains(PNID) && !yaml.contains(PNID2),
        "only the signed-up number: {yaml}"
    );
    // The same code again is refused as Meta refuses a used code.
    let reused = refused(&cli(
        &["signup", "--code", &code, "--waba-id", WABA],
        &empty,
    ));
    assert!(reused.contains("run Embedded Signup again"), "{reused}");

    // The row holds ciphertext under key A; it decrypts to a token Meta accepts for the WABA.
    let row = env.row("acme").await;
    let key_a = EncryptionKey::parse(&b64([1; 32])).unwrap();
    assert_eq!(row.key_id, key_a.id());
    let token = Keyring::new(key_a, vec![]).open("acme", &row).unwrap();
    assert!(token.starts_with("EAA") && token != TOKEN, "a new token");
    // A second signup under the same name is refused before the code is spent; nothing changes.
    let second = env.signup_code().await;
    let exists = refused(&cli(
        &[
            "signup",
            "--code",
            &second,
            "--waba-id",
            WABA,
            "--name",
            "acme",
        ],
        &empty,
    ));
    assert!(
        exists.contains("already stored") && exists.contains("--replace"),
        "{exists}"
    );
    let after = env.row("acme").await;
    assert_eq!(
        (&after.ciphertext, &after.nonce),
        (&row.ciphertext, &row.nonce),
        "the stored token is unchanged"
    );
    for bytes in [
        &row.ciphertext,
        &row.nonce,
        &row.key_id.clone().into_bytes(),
    ] {
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "storage holds the plaintext token"
        );
    }
    let direct =
        wa_gateway::graph::GraphClient::new(&env.emu.url(), "v23.0", Duration::from_secs(5));
    let app_token = format!("{APP_ID}|{APP_SECRET}");
    assert!(
        direct
            .debug_token(&token, &app_token)
            .await
            .unwrap()
            .is_valid
    );

    // The printed entries make a valid file, and a gateway on it answers a customer with the
    // stored token (the file token is expired at Meta, so no other token could do it).
    let with_number = env.config("serve.yaml", &key, &format!("numbers:\n{yaml}"));
    let validated = ok(&Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
        .args(["validate"])
        .arg(&with_number)
        .output()
        .unwrap());
    assert!(validated.contains("ok — 1 number"), "{validated}");
    assert!(env.emu.expire_token(TOKEN));
    let gw = Gateway::start_from(&with_number)
        .await
        .expect("gateway starts");
    env.emu.set_webhook_url(gw.webhook_url());
    assert!(
        env.echoed("15550100001", "Asha", "hello there").await,
        "the stored token served the reply: {:?}",
        env.emu.sent()
    );

    // The admin API runs the same exchange; the default name comes from the WABA id.
    let fresh = env.signup_code().await;
    let (status, body) = env
        .admin_post(
            &gw,
            "/api/signup",
            json!({ "code": fresh, "waba_id": WABA }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], format!("waba-{WABA}"));
    assert_eq!(body["numbers"].as_array().unwrap().len(), 2, "{body}");
    assert!(
        body["yaml"]
            .as_str()
            .unwrap()
            .contains(&format!("stored: \"waba-{WABA}\""))
    );
    let stored = Keyring::new(EncryptionKey::parse(&b64([1; 32])).unwrap(), vec![])
        .open(
            &format!("waba-{WABA}"),
            &env.row(&format!("waba-{WABA}")).await,
        )
        .unwrap();
    assert!(
        !body.to_string().contains(&stored),
        "the answer never holds the token"
    );
    let before = env.row(&format!("waba-{WABA}")).await;
    let (status, body) = env
        .admin_post(
            &gw,
            "/api/signup",
            json!({ "code": env.signup_code().await, "waba_id": WABA }),
        )
        .await;
    assert_eq!(
        status, 409,
        "a second signup under an existing name: {body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("\"replace\": true"),
        "{body}"
    );
    let after = env.row(&format!("waba-{WABA}")).await;
    assert_eq!(
        after.ciphertext, before.ciphertext,
        "nothing was overwritten"
    );
    // Replacing on purpose goes on to Meta, which refuses the used code.
    let (status, body) = env
        .admin_post(
            &gw,
            "/api/signup",
            json!({ "code": fresh, "waba_id": WABA, "replace": true }),
        )
        .await;
    assert_eq!(
        (status, body["meta_code"].as_i64()),
        (422, Some(100)),
        "{body}"
    );
    gw.shutdown(Duration::from_secs(5)).await;
}

async fn key_rotation_re_encrypts_on_start(db: Db) {
    let Some(env) = env(db).await else { return };
    let d = env.dir().display().to_string();
    let numbers = format!(
        "numbers:\n  - {{ phone_number_id: \"{PNID}\", waba_id: \"{WABA}\", agent: echo, access_token: {{ stored: acme }} }}\n"
    );
    let key_a = EncryptionKey::parse(&b64([1; 32])).unwrap();
    let key_b = EncryptionKey::parse(&hex::encode([2u8; 32])).unwrap();

    // A stored name missing from storage stops the start, saying what to run, at its line.
    let under_a = env.config("a.yaml", &env.key("key_a"), &numbers);
    let missing = Gateway::start_from(&under_a)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        missing.contains("a.yaml:14:")
            && missing.contains("numbers[0].access_token")
            && missing.contains("stored secret acme is not in storage")
            && missing.contains("wa-gateway signup"),
        "{missing}"
    );

    // A token put by hand under key A.
    let put = ok(&cli_with_stdin(
        &["secret", "put", "acme"],
        &under_a,
        &format!("{TOKEN}\n"),
    ));
    assert!(put.contains(key_a.id()), "{put}");
    assert_eq!(env.row("acme").await.key_id, key_a.id());

    // Key B with A as previous: the start re-encrypts under B.
    let rotating = env.config(
        "ab.yaml",
        &format!(
            "{}  previous_encryption_keys: [ {{ file: {d}/key_a }} ]\n",
            env.key("key_b")
        ),
        &numbers,
    );
    let gw = Gateway::start_from(&rotating)
        .await
        .expect("starts while rotating");
    let row = env.row("acme").await;
    assert_eq!(row.key_id, key_b.id(), "re-encrypted on start");
    assert_eq!(
        Keyring::new(key_b.clone(), vec![])
            .open("acme", &row)
            .unwrap(),
        TOKEN
    );
    gw.shutdown(Duration::from_secs(5)).await;

    // Key A is no longer needed: B alone serves a customer with the stored token.
    let under_b = env.config("b.yaml", &env.key("key_b"), &numbers);
    let gw = Gateway::start_from(&under_b)
        .await
        .expect("starts on the new key alone");
    env.emu.set_webhook_url(gw.webhook_url());
    assert!(env.echoed("15550100002", "Ravi", "after rotation").await);

    // A reload onto a file whose stored reference is missing is refused; the old one serves.
    let bad = numbers.replace("stored: acme", "stored: nobody");
    std::fs::write(
        &under_b,
        std::fs::read_to_string(env.config("tmp.yaml", &env.key("key_b"), &bad)).unwrap(),
    )
    .unwrap();
    match gw.reload_now().await {
        wa_gateway::app::ReloadOutcome::Failed(why) => assert!(
            why.contains("b.yaml:14:") && why.contains("stored secret nobody is not in storage"),
            "{why}"
        ),
        other => panic!("reload applied: {other:?}"),
    }
    assert!(env.echoed("15550100002", "Ravi", "still served").await);
    gw.shutdown(Duration::from_secs(5)).await;

    // A wrong key is a clear error naming both keys, at start and in the CLI.
    let under_c = env.config("c.yaml", &env.key("key_c"), &numbers);
    let wrong = Gateway::start_from(&under_c)
        .await
        .err()
        .expect("refused")
        .to_string();
    let want = format!("stored secret acme is encrypted under key {}", key_b.id());
    assert!(
        wrong.contains(&want)
            && wrong.contains("meta.previous_encryption_keys")
            && wrong.contains("c.yaml:14:"),
        "{wrong}"
    );
    let plan = refused(&cli(&["plan"], &under_c));
    assert!(plan.contains(&want), "{plan}");
    // A key that is not 32 bytes is refused where it is written, without echoing it.
    env.write("key_short", "c2hvcnQ=");
    let short = env.config("short.yaml", &env.key("key_short"), &numbers);
    let out = Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
        .arg("validate")
        .arg(&short)
        .output()
        .unwrap();
    let stderr = refused(&out);
    assert!(
        stderr.contains("meta.encryption_key") && stderr.contains("decodes to 5 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("c2hvcnQ"), "{stderr}");
}

on_both_dbs!(
    verify_then_register_with_the_pin,
    signup_stores_an_encrypted_token_that_serves,
    key_rotation_re_encrypts_on_start,
);

/// The status page offers "Connect with Facebook" only when `meta.embedded_signup.config_id` is
/// set, and only then lets Facebook's SDK in through its content security policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launcher_shows_only_with_a_config_id() {
    let Some(env) = env(Db::Sqlite).await else {
        return;
    };
    for (extra, shown) in [
        ("", false),
        ("  embedded_signup: { config_id: \"987654321\" }\n", true),
    ] {
        let cfg = env.config("page.yaml", extra, &env.numbers_with_files());
        let gw = Gateway::start_from(&cfg).await.expect("gateway starts");
        let page = env
            .http
            .get(format!("http://{}/", gw.admin_addr))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let csp = page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        let html = page.text().await.unwrap();
        assert_eq!(html.contains("id=\"connect-facebook\""), shown, "{html}");
        assert_eq!(csp.contains("https://connect.facebook.net"), shown, "{csp}");
        if shown {
            for want in [
                "data-config-id=\"987654321\"",
                &format!("data-app-id=\"{APP_ID}\""),
                "response_type: \"code\"",
                "override_default_response_type: true",
                "WA_EMBEDDED_SIGNUP",
                "/api/signup",
                "https://connect.facebook.net/en_US/sdk.js",
            ] {
                assert!(html.contains(want), "{want} missing");
            }
        }
        // Without the admin token the page shows neither numbers nor the launcher.
        let locked = env
            .http
            .get(format!("http://{}/", gw.admin_addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!locked.contains("connect-facebook"));
        gw.shutdown(Duration::from_secs(5)).await;
    }
}
