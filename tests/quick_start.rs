//! The README followed literally on the repository's own gateway.yaml: `serve`, then `chat` for
//! two customers at once, `plan` → `apply` → `status`, Embedded Signup and phone verification
//! through the built-in emulator's control API, `secret list` and `doctor`, each with the exit
//! code the README gives. Uses the file's own ports (8080, 9090, 8089).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const NUMBER: &str = "106540352242922";
const WABA: &str = "102290129340398";
const EMULATOR: &str = "http://127.0.0.1:8089";

/// `wa-gateway ARGS` in `dir` on the repository's gateway.yaml: exit code, stdout, stderr.
fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
        .args(args)
        .args(["--config".as_ref(), config().as_os_str()])
        .current_dir(dir)
        .env_remove("WA_GATEWAY_CONFIG")
        .env_remove("WA_GATEWAY_EMULATOR")
        .output()
        .expect("run wa-gateway");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

fn config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.yaml")
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn serve(dir: &Path) -> Serve {
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
        .args(["serve", "--config"])
        .arg(config())
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let serve = Serve(child);
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
    assert!(
        ready,
        "gateway not ready:\n{}",
        std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
    );
    serve
}

/// A control-API answer's `field` (the emulator's conveniences; Meta has no such endpoints).
async fn control(req: reqwest::RequestBuilder, field: &str) -> String {
    let body: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {body}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quick_start_works_on_the_repository_config() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    // Before `serve`, the built-in emulator is not there, and the error says what to do.
    let (code, _, err) = run(dir, &["plan"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Start the gateway on this file first"),
        "{err}"
    );
    let (code, _, err) = run(dir, &["status"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("start `wa-gateway serve -c FILE` first"),
        "{err}"
    );

    let serve = serve(dir).await;
    chat_two_customers_at_once(dir).await;

    for (args, want) in [
        (&["plan"][..], 0),
        (&["apply"], 0),
        (&["plan"], 0),
        (&["status"], 0),
    ] {
        let (code, out, err) = run(dir, args);
        assert_eq!(code, want, "{args:?}: {out}{err}");
    }
    let (_, status, _) = run(dir, &["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with(NUMBER) && l.contains("active")),
        "{status}"
    );

    // Embedded Signup: the emulator mints the code the popup would hand the browser.
    let http = reqwest::Client::new();
    let signup_code = control(
        http.post(format!("{EMULATOR}/_emulator/signup_codes"))
            .json(&serde_json::json!({ "waba_id": WABA })),
        "code",
    )
    .await;
    let (code, out, err) = run(
        dir,
        &[
            "signup",
            "--code",
            &signup_code,
            "--waba-id",
            WABA,
            "--name",
            "demo",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("access_token: { stored: \"demo\" }"), "{out}");
    let (code, list, err) = run(dir, &["secret", "list"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert_eq!(
        lines[0].find("UPDATED"),
        lines[1].find("20"),
        "columns aligned:\n{list}"
    );

    // Phone verification, with the code the emulator's "SMS" carries.
    let (code, out, err) = run(dir, &["number", "request-code", NUMBER]);
    assert_eq!(code, 0, "{out}{err}");
    let sms = control(
        http.get(format!(
            "{EMULATOR}/_emulator/numbers/{NUMBER}/verification_code"
        )),
        "code",
    )
    .await;
    for args in [
        &["number", "verify-code", NUMBER, &sms][..],
        &["number", "register", NUMBER],
    ] {
        let (code, out, err) = run(dir, args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    }
    let (code, out, err) = run(dir, &["doctor"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Every number passed Test Connection."),
        "{out}"
    );

    // With the gateway stopped, `status` shows what it stored when it last ran.
    drop(serve);
    let (code, out, err) = run(dir, &["status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("As the gateway stored it when it last ran"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(NUMBER) && l.contains("active")),
        "{out}"
    );
}

/// `chat` for two customers at the same time, each getting its echo; one names the config
/// (`--config` gives the emulator's address), the other relies on the default address.
async fn chat_two_customers_at_once(dir: &Path) {
    let chat = |from: &'static str, text: &'static str, with_config: bool| {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_wa-gateway"));
            cmd.args([
                "chat",
                "--number",
                NUMBER,
                "--from",
                from,
                "--message",
                text,
            ])
            .current_dir(dir)
            .env_remove("WA_GATEWAY_EMULATOR");
            if with_config {
                cmd.arg("--config").arg(config());
            }
            cmd.output().unwrap()
        })
    };
    let (a, b) = (
        chat("15550100001", "hello", true),
        chat("15550100002", "hola", false),
    );
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
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
    assert!(dir.join("data/gateway.db").exists(), "SQLite under ./data");
}
