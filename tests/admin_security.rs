//! Invariant 10 over real sockets: the admin surface cannot be driven from another site. Every
//! state-changing route, enumerated from the served OpenAPI document, refuses a foreign Host, a
//! foreign Origin, `Sec-Fetch-Site: cross-site` and a non-JSON body, with and without a token,
//! and nothing changes; every route checks Host; the status page signs in with an HttpOnly,
//! SameSite=Strict cookie; the media token opens /media and nothing else.

use crate::common;

use common::{Db, PNID, TestGateway, WABA, wait_until};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use std::time::Duration;

const TOKEN: &str = "admin-token-for-security-tests";
const MEDIA_TOKEN: &str = "media-token-for-agents";
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const WAIT: Duration = Duration::from_secs(10);

fn base_yaml(storage_url: &str) -> String {
    let opts = common::Options::default();
    common::config_yaml(storage_url, &opts, "echo").replace(
        "  verify_token: { value: test-verify-token }\n",
        &format!("  verify_token: {{ value: test-verify-token }}\n  encryption_key: {{ value: \"{KEY}\" }}\n"),
    )
}

fn with_tokens(yaml: &str) -> String {
    yaml.replace(
        "  admin: 127.0.0.1:0\n",
        &format!(
            "  admin: 127.0.0.1:0\n  admin_token: {{ value: {TOKEN} }}\n  media_token: {{ value: {MEDIA_TOKEN} }}\n"
        ),
    )
}

fn url(t: &TestGateway, path: &str) -> String {
    format!("http://{}{path}", t.gw().current_admin_addr())
}

/// Every `(method, path)` the served OpenAPI document lists, path parameters filled in.
async fn operations(t: &TestGateway, auth: &HeaderMap) -> Vec<(reqwest::Method, String)> {
    let out = operations_at(t, &url(t, "/api/openapi.json"), auth).await;
    assert!(out.len() >= 20, "{out:?}");
    out
}

async fn reconcile_runs(t: &TestGateway) -> f64 {
    t.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("wa_gateway_reconcile_runs_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A body the route would act on if it were let through.
fn body_for(t: &TestGateway, path: &str) -> Value {
    if path.ends_with("/signup") {
        json!({ "code": t.emu.signup_code(WABA).unwrap(), "waba_id": WABA, "name": "attacker" })
    } else if path.ends_with("/verify_code") {
        json!({ "code": "123456" })
    } else if path == "/api/session" {
        json!({ "token": TOKEN })
    } else {
        json!({ "reason": "cross-site" })
    }
}

/// Everything a change through the admin API could touch: storage rows, the numbers as shown,
/// control-loop passes, what the emulator was asked to do.
async fn observed(t: &TestGateway, auth: &HeaderMap) -> Value {
    let numbers = get_json(t, &url(t, "/api/numbers"), auth).await;
    let runs = reconcile_runs(t).await;
    json!({
        "numbers": numbers,
        "overrides": t.count("SELECT COUNT(*) FROM number_overrides").await,
        "pauses": t.count("SELECT COUNT(*) FROM paused_conversations").await,
        "secrets": t.count("SELECT COUNT(*) FROM stored_secrets").await,
        "verifications": t.count("SELECT COUNT(*) FROM verification_requests").await,
        "reconcile_runs": runs,
        "code_sent": t.emu.verification_code(PNID),
        "sent": t.emu.sent().len(),
    })
}

/// The four ways a page on another site could reach a change, each alone.
fn attacks(auth: &HeaderMap) -> Vec<(&'static str, HeaderMap, &'static str)> {
    let json_ct = ("content-type", "application/json");
    let make = |pairs: &[(&'static str, &'static str)]| {
        let mut h = auth.clone();
        for (k, v) in pairs {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    };
    vec![
        (
            "foreign Host",
            make(&[json_ct, ("host", "evil.example")]),
            "421",
        ),
        (
            "foreign Origin",
            make(&[json_ct, ("origin", "https://evil.example")]),
            "403",
        ),
        (
            "Sec-Fetch-Site: cross-site",
            make(&[json_ct, ("sec-fetch-site", "cross-site")]),
            "403",
        ),
        (
            "text/plain body",
            make(&[("content-type", "text/plain")]),
            "415",
        ),
    ]
}

async fn every_change_refuses_each_attack(t: &TestGateway, auth: &HeaderMap) {
    let ops = operations(t, auth).await;
    let changes: Vec<_> = ops
        .iter()
        .filter(|(m, _)| *m != reqwest::Method::GET)
        .collect();
    assert!(changes.len() >= 10, "{changes:?}");
    let before = observed(t, auth).await;
    for (method, path) in &changes {
        let body = body_for(t, path).to_string();
        for (what, headers, status) in attacks(auth) {
            let res = t
                .http
                .request(method.clone(), url(t, path))
                .headers(headers)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(
                res.status().as_str(),
                status,
                "{method} {path} with a {what}"
            );
            assert!(
                res.headers().get("set-cookie").is_none(),
                "{method} {path} with a {what} set a cookie"
            );
            let text = res.text().await.unwrap();
            assert!(!text.contains(TOKEN), "{text}");
        }
    }
    assert_eq!(
        observed(t, auth).await,
        before,
        "an attack changed something"
    );
    // The same requests from the gateway's own origin get past the defences, so the refusals
    // above were theirs.
    for (method, path) in &changes {
        let res = t
            .http
            .request(method.clone(), url(t, path))
            .headers(auth.clone())
            .header("content-type", "application/json")
            .header("origin", format!("http://{}", t.gw().current_admin_addr()))
            .header("sec-fetch-site", "same-origin")
            .body(body_for(t, path).to_string())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        assert!(
            ![421, 403, 415, 401].contains(&status),
            "{method} {path} from the same origin: {status} {}",
            res.text().await.unwrap()
        );
    }
    assert_ne!(
        observed(t, auth).await,
        before,
        "the control requests changed nothing"
    );
}

async fn cross_site_requests_change_nothing_with_or_without_a_token(db: Db) {
    let Some(storage) = common::storage(db).await else {
        return;
    };
    let yaml = base_yaml(&storage.url);
    let mut t = common::start_from_yaml(storage, &yaml).await;
    // Wait for the first control-loop pass, so none starts during the attacks.
    assert!(wait_until(WAIT, || async { t.gw().state.reconcile.last().is_some() }).await);
    every_change_refuses_each_attack(&t, &HeaderMap::new()).await;

    // With a token, and a browser signed in: the cookie alone must not be enough. The reload
    // triggers a control-loop pass; wait for it, so none runs during the attacks.
    let runs = reconcile_runs(&t).await;
    t.reload_with(|y| with_tokens(&y)).await;
    assert!(wait_until(WAIT, || async { reconcile_runs(&t).await > runs }).await);
    let cookie = sign_in(&t).await;
    let mut auth = HeaderMap::new();
    auth.insert("cookie", HeaderValue::from_str(&cookie).unwrap());
    every_change_refuses_each_attack(&t, &auth).await;
    t.stop().await;
}

on_both_dbs!(cross_site_requests_change_nothing_with_or_without_a_token);

/// Signs in through `POST /api/session` and returns the `Cookie` header value.
async fn sign_in(t: &TestGateway) -> String {
    let res = t
        .http
        .post(url(t, "/api/session"))
        .json(&json!({ "token": TOKEN }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    let set = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains("Secure"), "no TLS, no Secure: {set}");
    assert!(!set.contains(TOKEN), "the cookie is not the token: {set}");
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_signs_in_with_a_strict_http_only_cookie_and_never_a_url_token() {
    let storage = common::storage(Db::Sqlite).await.unwrap();
    let yaml = with_tokens(&base_yaml(&storage.url));
    let mut t = common::start_from_yaml(storage, &yaml).await;
    let get = |path: &str, cookie: Option<&str>| {
        let mut req = t.http.get(url(&t, path));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (_, page) = get(&format!("/?token={TOKEN}"), None).await;
    assert!(
        page.contains("id=\"login\"") && !page.contains(PNID),
        "{page}"
    );
    assert!(
        !page.contains("?action") && !page.contains("sessionStorage"),
        "{page}"
    );

    let wrong = t
        .http
        .post(url(&t, "/api/session"))
        .json(&json!({ "token": "wrong" }))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    let cookie = sign_in(&t).await;
    let (_, page) = get("/", Some(&cookie)).await;
    assert!(page.contains(&format!("id=\"card-{PNID}\"")), "{page}");
    for path in ["/api/numbers", "/api/config", "/config/status"] {
        assert_eq!(get(path, Some(&cookie)).await.0, 200, "{path}");
        assert_eq!(get(path, None).await.0, 401, "{path}");
    }
    let forged = format!("{}0", cookie);
    assert_eq!(get("/api/numbers", Some(&forged)).await.0, 401);

    // A changed token ends every session.
    t.reload_with(|y| y.replace(TOKEN, "a-new-admin-token"))
        .await;
    assert_eq!(get("/api/numbers", Some(&cookie)).await.0, 401);

    let out = t
        .http
        .delete(url(&t, "/api/session"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status().as_u16(), 204);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_host_and_probes_by_pod_ip_still_work() {
    // Listening on every interface (as in Kubernetes): IP literals are accepted, names only
    // when listed.
    let storage = common::storage(Db::Sqlite).await.unwrap();
    let yaml = with_tokens(&base_yaml(&storage.url)).replace(
        "  admin: 127.0.0.1:0\n",
        "  admin: 0.0.0.0:0\n  admin_hosts: [wa-gateway-admin.wa.svc]\n",
    );
    let mut t = common::start_from_yaml(storage, &yaml).await;
    let port = t.gw().current_admin_addr().port();
    let at = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let mut auth = HeaderMap::new();
    auth.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
    );
    for (method, path) in operations_at(&t, &at("/api/openapi.json"), &auth).await {
        let res = t
            .http
            .request(method.clone(), at(&path))
            .headers(auth.clone())
            .header("host", "evil.example")
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 421, "{method} {path}");
    }
    for host in [
        format!("10.42.0.17:{port}"),
        format!("[fd00::17]:{port}"),
        format!("wa-gateway-admin.wa.svc:{port}"),
        format!("localhost:{port}"),
    ] {
        for path in ["/healthz", "/readyz", "/metrics"] {
            let res = t
                .http
                .get(at(path))
                .header("host", &host)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status().as_u16(), 200, "{path} as {host}");
        }
    }
    // The media token opens /media and nothing else.
    let id = t.emu.add_media("image/jpeg", vec![0xFF, 0xD8, 1, 2, 3]);
    let media = t
        .http
        .get(at(&format!("/media/{PNID}/{id}")))
        .bearer_auth(MEDIA_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(media.status().as_u16(), 200);
    assert_eq!(
        media.bytes().await.unwrap().as_ref(),
        &[0xFF, 0xD8, 1, 2, 3]
    );
    for path in ["/api/numbers", "/api/config", "/config/status"] {
        let res = t
            .http
            .get(at(path))
            .bearer_auth(MEDIA_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 401, "{path}");
    }
    let res = t
        .http
        .get(at(&format!("/media/{PNID}/..%2Fapp")))
        .bearer_auth(MEDIA_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400, "ids are digits only");
    t.stop().await;
}

async fn operations_at(
    t: &TestGateway,
    doc_url: &str,
    auth: &HeaderMap,
) -> Vec<(reqwest::Method, String)> {
    let doc = get_json(t, doc_url, auth).await;
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            let path = path
                .replace("{phone_number_id}", PNID)
                .replace("{customer}", "15550009999")
                .replace("{media_id}", "1");
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase().parse().unwrap(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn get_json(t: &TestGateway, url: &str, auth: &HeaderMap) -> Value {
    let res = t.http.get(url).headers(auth.clone()).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200, "GET {url}");
    res.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_is_not_fetched_from_a_host_off_the_allow_list() {
    // Talking to a Graph endpoint that is not the built-in emulator: its download URLs (plain
    // HTTP on 127.0.0.1) are not Meta's CDN, so the number's token is not sent there.
    let storage = common::storage(Db::Sqlite).await.unwrap();
    let dir = storage.dir.path().to_owned();
    let emu = common::standalone_emulator(&dir, Duration::from_millis(500)).await;
    let path = common::StandaloneConfig::new(&dir, &storage.url, &emu.url())
        .meta("  media_hosts: [lookaside.fbsbx.com, \"127.0.0.1\"]\n")
        .agents("  echo: { kind: echo }\n")
        .write("gateway.yaml");
    let gw = wa_gateway::app::Gateway::start_from(&path).await.unwrap();
    let id = emu.add_media("image/jpeg", vec![1, 2, 3]);
    let res = reqwest::Client::new()
        .get(format!("http://{}/media/{PNID}/{id}", gw.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 502);
    let body: Value = res.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("127.0.0.1") && message.contains("meta.media_hosts (HTTPS only)"),
        "{message}"
    );
    gw.shutdown(Duration::from_secs(5)).await;
}
