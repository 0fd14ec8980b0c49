//! The status page in a real headless Chromium driven through chromedriver (WebDriver): the
//! sign-in form (the token typed once, an HttpOnly cookie no script can read), badges, business
//! name, display number and quality in the DOM, screenshots kept under target/test-artifacts/,
//! and the three-dot menu: Test Connection shows each check, Disconnect and Connect flip the
//! badge. Skips loudly without Chromium, fails in CI (`CI=true`).

use crate::common;

use common::browser::{Driver, chromium_available, save_screenshot, sign_in};
use common::{Db, Options, PNID, PNID2, TestGateway};
use serde_json::json;
use wa_gateway::app::Gateway;

const TOKEN: &str = "page-token";

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
    if !chromium_available() {
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
    sign_in(&d, &format!("{base}/"), TOKEN).await;
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
