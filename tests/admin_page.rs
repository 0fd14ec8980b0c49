//! The status page in a real headless Chromium driven through chromedriver (WebDriver): the
//! sign-in form (the token typed once, an HttpOnly cookie no script can read), badges, business
//! name, display number and quality in the DOM, screenshots kept under target/test-artifacts/,
//! and the three-dot menu: Test Connection shows each check, Disconnect and Connect flip the
//! badge. Skips loudly without Chromium, fails in CI (`CI=true`).

mod common;

use common::{Db, Options, PNID, PNID2, TestGateway, wait_until};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use wa_gateway::app::Gateway;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const TOKEN: &str = "page-token";
const WAIT: Duration = Duration::from_secs(20);
const FLAGS: &[&str] = &[
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

/// Whether `path` exists; if not, skips loudly, or fails in CI.
fn have(path: &str, install: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{path} is required in CI: {install}");
    }
    eprintln!("\n*** SKIPPED ({path} is not installed): {install} ***\n");
    false
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A gateway with a token and a second, disabled number.
async fn spawn() -> TestGateway {
    let storage = common::storage(Db::Sqlite).await.unwrap();
    let opts = Options {
        second_number: true,
        ..Options::default()
    };
    let yaml = common::config_yaml(&storage.url, &opts, "echo")
        .replace(
            "  admin: 127.0.0.1:0\n",
            &format!("  admin: 127.0.0.1:0\n  admin_token: {{ value: {TOKEN} }}\n"),
        )
        .replace(
            "access_token: { value: token-two }\n",
            "access_token: { value: token-two }\n    enabled: false\n",
        );
    let path = storage.dir.path().join("gateway.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let gw = Gateway::start(wa_gateway::config::load(&path).unwrap())
        .await
        .unwrap();
    let emu = gw.emulator.clone().unwrap();
    TestGateway {
        config_path: path,
        gw: Some(gw),
        emu,
        storage,
        http: reqwest::Client::new(),
    }
}

fn badge_of(dom: &str, id: &str) -> String {
    let card = dom
        .split(&format!("id=\"card-{id}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no card for {id} in {dom}"));
    let status = card.split("data-status=\"").nth(1).unwrap();
    status[..status.find('"').unwrap()].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_badges_and_its_menu_disconnects_a_number() {
    if !have(CHROMIUM, "apt-get install -y chromium chromium-driver") {
        return;
    }
    if !have(CHROMEDRIVER, "apt-get install -y chromium-driver") {
        return;
    }
    let mut t = spawn().await;
    let base = format!("http://{}", t.gw().admin_addr);
    // A control-loop pass now, so the page shows what Meta says (the first runs at start).
    let res = t
        .http
        .post(format!("{base}/api/reconcile"))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);

    let d = Driver::start().await;
    sign_in(&d, &format!("{base}/")).await;
    let dom = d
        .eval("return document.documentElement.outerHTML")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(badge_of(&dom, PNID), "active", "{dom}");
    assert_eq!(badge_of(&dom, PNID2), "inactive", "{dom}");
    assert!(dom.contains("</span> Active</span>"), "status in words");
    assert!(dom.contains("</span> Inactive</span>"), "status in words");
    assert!(dom.contains("disabled in the config"), "{dom}");
    assert!(dom.contains("Test Connection") && dom.contains(">Disconnect<"));
    let card = dom.split(&format!("id=\"card-{PNID}\"")).nth(1).unwrap();
    let card = &card[..card.find("</article>").unwrap()];
    for shown in [
        "<dd class=\"verified-name\">Test Number</dd>",
        "<dd class=\"display-number\">+1 555-224-2922</dd>",
        "<dd class=\"quality\">GREEN</dd>",
        "<dt>Active since</dt>",
    ] {
        assert!(card.contains(shown), "{shown} in {card}");
    }
    assert!(
        !card.contains("<dd class=\"status-since\">—</dd>"),
        "{card}"
    );
    save_screenshot(&d, "status-page.png").await;
    click_through(&d, &t).await;
    d.stop().await;
    t.stop().await;
}

/// Opens `page`, which shows the sign-in form, types the token and waits for the numbers. The
/// session is a cookie no script can read, and the address never holds the token.
async fn sign_in(d: &Driver, page: &str) {
    d.call(reqwest::Method::POST, "/url", json!({ "url": page }))
        .await;
    assert!(
        d.wait_for("return document.body.dataset.ready || ''", "true")
            .await
    );
    assert_eq!(d.eval("return document.body.dataset.locked").await, "true");
    let field = d.find("#token").await;
    d.call(
        reqwest::Method::POST,
        &format!("/element/{field}/value"),
        json!({ "text": TOKEN }),
    )
    .await;
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
    assert!(!held.as_str().unwrap().contains(TOKEN), "{held}");
}

/// A WebDriver session on a chromedriver of its own, spoken to with reqwest.
struct Driver {
    http: reqwest::Client,
    url: String,
    child: tokio::process::Child,
}

impl Driver {
    async fn start() -> Self {
        let port = common::free_port();
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

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if !body.is_null() {
            req = req.json(&body);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(v["value"]["error"].is_null(), "{path}: {v}");
        v["value"].clone()
    }

    /// The WebDriver id of the element `css` selects.
    async fn find(&self, css: &str) -> String {
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

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    async fn eval(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    async fn wait_for(&self, script: &str, want: &str) -> bool {
        wait_until(WAIT, || async { self.eval(script).await == want }).await
    }

    async fn stop(mut self) {
        let _ = self.http.delete(&self.url).send().await;
        let _ = self.child.kill().await;
    }
}

/// Saves the browser's screenshot as a test artifact.
async fn save_screenshot(d: &Driver, name: &str) {
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

async fn click_through(d: &Driver, t: &TestGateway) {
    let badge = format!("return document.querySelector('#card-{PNID} .badge').dataset.status");
    let msg = format!("return document.querySelector('#card-{PNID} .msg').textContent");

    // Test Connection: six checks, each shown with its outcome.
    d.click(&format!("[data-menu=\"{PNID}\"]")).await;
    d.click(&format!("[data-action=\"test\"][data-number=\"{PNID}\"]"))
        .await;
    let checks = format!(
        "return Array.from(document.querySelectorAll('#card-{PNID} .checks li')).map(li => li.dataset.check + ':' + li.dataset.outcome).join(' ')"
    );
    let all_pass = "token:pass registered:pass waba_subscribed:pass callback:pass webhook_round_trip:pass agent_probe:pass";
    assert!(
        d.wait_for(&checks, all_pass).await,
        "checks shown: {}",
        d.eval(&checks).await
    );
    assert_eq!(d.eval(&msg).await, "Connection OK: every check passed.");
    let shown = d
        .eval(&format!(
            "return document.querySelector('#card-{PNID} .checks').innerText"
        ))
        .await;
    let shown = shown.as_str().unwrap();
    assert!(
        shown.contains("Signed test event comes back") && shown.contains("PASS"),
        "{shown}"
    );
    save_screenshot(d, "status-page-test-connection.png").await;

    d.click(&format!("[data-menu=\"{PNID}\"]")).await;
    d.click(&format!(
        "[data-action=\"disconnect\"][data-number=\"{PNID}\"]"
    ))
    .await;
    assert!(
        d.wait_for(&badge, "inactive").await,
        "badge after Disconnect"
    );
    assert_eq!(d.eval(&msg).await, "Disconnected.");
    assert!(
        t.gw().state.disconnected.contains(PNID),
        "stored and in force"
    );
    save_screenshot(d, "status-page-after-disconnect.png").await;

    d.click(&format!("[data-menu=\"{PNID}\"]")).await;
    d.click(&format!(
        "[data-action=\"connect\"][data-number=\"{PNID}\"]"
    ))
    .await;
    assert!(d.wait_for(&badge, "active").await, "badge after Connect");
    assert!(!t.gw().state.disconnected.contains(PNID));
}
