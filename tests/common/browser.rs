//! A real headless Chromium driven through chromedriver (WebDriver, spoken with reqwest), for
//! the status page tests: a session, finding and clicking elements, running scripts, waiting on
//! what the page shows, screenshots under target/test-artifacts/, and the sign-in form. Without
//! Chromium the test fails, or under `.ci/test` is skipped (`super::skip`).

use super::wait_until;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long the page gets to show what a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);
/// Chromium's flags: headless, no sandbox (containers), nothing fetched in the background.
pub const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1200,900",
];

/// Whether `path` exists; if not, the test fails or is skipped (`super::skip`).
pub fn have(path: &str, install: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    super::skip::missing(path, "not installed", install);
    false
}

/// Where screenshots are kept: target/test-artifacts/.
pub fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether Chromium and chromedriver are both installed (if not: failing, or skipped).
pub fn chromium_available() -> bool {
    have(CHROMIUM, "apt-get install -y chromium chromium-driver")
        && have(CHROMEDRIVER, "apt-get install -y chromium-driver")
}

/// Opens `page`, which shows the sign-in form, types the token and waits for the numbers. The
/// session is a cookie no script can read, and the address never holds the token.
pub async fn sign_in(d: &Driver, page: &str, token: &str) {
    d.call(reqwest::Method::POST, "/url", json!({ "url": page }))
        .await;
    assert!(
        d.wait_for("return document.body.dataset.ready || ''", "true")
            .await
    );
    assert_eq!(d.eval("return document.body.dataset.locked").await, "true");
    d.type_into("#token", token).await;
    d.click("#login button[type=submit]").await;
    assert!(
        d.wait_for("return document.body.dataset.locked", "false")
            .await,
        "signed in"
    );
    assert_eq!(d.eval("return location.search").await, "");
    assert_eq!(d.eval("return document.cookie").await, "", "HttpOnly");
    let held = d
        .eval("return JSON.stringify(sessionStorage) + JSON.stringify(localStorage)")
        .await;
    assert!(!held.as_str().unwrap().contains(token), "{held}");
}

/// A WebDriver session on a chromedriver of its own, spoken to with reqwest.
pub struct Driver {
    http: reqwest::Client,
    url: String,
    child: tokio::process::Child,
}

impl Driver {
    pub async fn start() -> Self {
        let port = super::free_port();
        let child = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let up = wait_until(WAIT, || async {
            http.get(format!("{base}/status")).send().await.is_ok()
        })
        .await;
        assert!(up, "chromedriver answers");
        let profile = std::env::temp_dir().join(format!("wagw-chrome-{port}"));
        let mut args: Vec<String> = FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args }
        } } });
        let res: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {res}"));
        Self {
            url: format!("{base}/session/{session}"),
            http,
            child,
        }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if !body.is_null() {
            req = req.json(&body);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(v["value"]["error"].is_null(), "{path}: {v}");
        v["value"].clone()
    }

    /// The WebDriver id of the element `css` selects.
    pub async fn find(&self, css: &str) -> String {
        let el = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        el.as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Types `text` into the field `css` selects.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    pub async fn eval(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    pub async fn wait_for(&self, script: &str, want: &str) -> bool {
        wait_until(WAIT, || async { self.eval(script).await == want }).await
    }

    pub async fn stop(mut self) {
        let _ = self.http.delete(&self.url).send().await;
        let _ = self.child.kill().await;
    }
}

/// Saves the browser's screenshot as a test artifact.
pub async fn save_screenshot(d: &Driver, name: &str) {
    let png = d
        .call(reqwest::Method::GET, "/screenshot", Value::Null)
        .await;
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    assert!(bytes.len() > 1000, "a real screenshot");
    std::fs::write(artifacts().join(name), bytes).unwrap();
}
