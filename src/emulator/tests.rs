//! The emulator over real sockets: a Graph client (reqwest) on one side, a tiny axum receiver
//! standing in for the gateway's /webhook on the other.

use super::*;
use crate::cloudapi::signature;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::watch;

const PNID: &str = "106540352242922";
const WABA: &str = "102290129340398";
const TOKEN: &str = "tok-1";
const SECRET: &str = "app-secret";
const CUSTOMER: &str = "919812345678";
const WAIT: Duration = Duration::from_secs(5);

struct Emu {
    handle: EmulatorHandle,
    stop: CancellationToken,
    http: reqwest::Client,
}

impl Drop for Emu {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn emulator(webhook_url: Option<String>, statuses: bool) -> Emu {
    let cfg = EmulatorConfig {
        app_secret: SECRET.into(),
        webhook_url,
        statuses,
        numbers: vec![EmulatorNumber {
            phone_number_id: PNID.into(),
            waba_id: WABA.into(),
            display_phone_number: "15550001111".into(),
            access_token: TOKEN.into(),
        }],
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        ..EmulatorConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = CancellationToken::new();
    let handle = start(cfg, listener, stop.clone()).await.unwrap();
    Emu {
        handle,
        stop,
        http: reqwest::Client::new(),
    }
}

impl Emu {
    async fn post(&self, pnid: &str, token: &str, body: Value) -> (StatusCode, HeaderMap, Value) {
        let r = self
            .http
            .post(format!("{}/v23.0/{pnid}/messages", self.handle.url()))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        let headers = r.headers().clone();
        (status, headers, r.json().await.unwrap())
    }

    async fn send_text(&self, text: &str) -> (StatusCode, HeaderMap, Value) {
        self.post(PNID, TOKEN, text_to(CUSTOMER, text)).await
    }
}

fn text_to(to: &str, text: &str) -> Value {
    json!({ "messaging_product": "whatsapp", "recipient_type": "individual", "to": to,
            "type": "text", "text": { "body": text } })
}

fn assert_meta_error(body: &Value, code: u64) {
    let e = &body["error"];
    assert_eq!(e["code"], code, "{body}");
    assert!(e["message"].is_string(), "{body}");
    assert!(e["type"].is_string(), "{body}");
    assert!(e["fbtrace_id"].is_string(), "{body}");
}

/// A stand-in for the gateway's /webhook: answers 500 to the first `fail_first` POSTs.
struct FakeGateway {
    url: String,
    received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    count: watch::Receiver<usize>,
}

async fn fake_gateway(fail_first: usize) -> FakeGateway {
    let received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
    let (count_tx, count) = watch::channel(0);
    let seen = Arc::new(AtomicUsize::new(0));
    let store = received.clone();
    let app = axum::Router::new().route(
        "/webhook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| async move {
            store.lock().unwrap().push((headers, body));
            count_tx.send_modify(|c| *c += 1);
            if seen.fetch_add(1, Ordering::SeqCst) < fail_first {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    FakeGateway {
        url,
        received,
        count,
    }
}

impl FakeGateway {
    async fn wait_for(&self, n: usize) {
        let mut count = self.count.clone();
        tokio::time::timeout(WAIT, count.wait_for(|c| *c >= n))
            .await
            .expect("webhooks did not arrive in time")
            .unwrap();
    }

    fn bodies(&self) -> Vec<Value> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .map(|(_, b)| serde_json::from_slice(b).unwrap())
            .collect()
    }
}

/// Waits (with a deadline) for a condition nothing notifies about.
async fn eventually(cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_sent_text_is_recorded_and_answered_in_metas_shape() {
    let emu = emulator(None, false).await;
    let inbound = emu.handle.customer_says(PNID, CUSTOMER, "Asha", "hi").await;
    let mut body = text_to(CUSTOMER, "hello *there*");
    body["context"] = json!({ "message_id": inbound });
    body["biz_opaque_callback_data"] = json!("outbox-1");
    let (status, _, answer) = emu.post(PNID, TOKEN, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["messaging_product"], "whatsapp");
    assert_eq!(
        answer["contacts"],
        json!([{ "input": CUSTOMER, "wa_id": CUSTOMER }])
    );
    let wamid = answer["messages"][0]["id"].as_str().unwrap();
    assert!(wamid.starts_with("wamid."));
    let sent = emu.handle.sent();
    assert_eq!(sent.len(), 1);
    let m = &sent[0];
    assert_eq!(
        (m.seq, m.phone_number_id.as_str(), m.to.as_str()),
        (1, PNID, CUSTOMER)
    );
    assert_eq!(m.wamid, wamid);
    assert_eq!(m.text.as_deref(), Some("hello *there*"));
    assert_eq!(m.context_message_id.as_deref(), Some(inbound.as_str()));
    assert_eq!(m.biz_opaque_callback_data.as_deref(), Some("outbox-1"));
    assert_eq!(m.body, body);
}

#[tokio::test]
async fn a_wrong_token_is_401_code_190() {
    let emu = emulator(None, false).await;
    emu.handle.customer_says(PNID, CUSTOMER, "Asha", "hi").await;
    let (status, _, body) = emu.post(PNID, "nope", text_to(CUSTOMER, "x")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_meta_error(&body, 190);
    assert_eq!(body["error"]["type"], "OAuthException");
    // A good token for an id that does not exist: Meta's "does not exist" (100, subcode 33).
    let (status, _, body) = emu.post("999", TOKEN, text_to(CUSTOMER, "x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_meta_error(&body, 100);
    assert_eq!(body["error"]["error_subcode"], 33);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Object with ID '999' does not exist")
    );
    assert!(emu.handle.sent().is_empty());
}

#[tokio::test]
async fn invalid_sends_are_code_100_with_details() {
    let emu = emulator(None, false).await;
    emu.handle.customer_says(PNID, CUSTOMER, "Asha", "hi").await;
    let long = "é".repeat(4097);
    let mut big_callback = text_to(CUSTOMER, "x");
    big_callback["biz_opaque_callback_data"] = json!("c".repeat(513));
    let cases = [
        text_to(CUSTOMER, &long),
        text_to(CUSTOMER, ""),
        big_callback,
        json!({ "messaging_product": "whatsapp", "type": "text", "text": { "body": "x" } }),
        json!({ "to": CUSTOMER, "type": "text", "text": { "body": "x" } }),
        json!({ "messaging_product": "whatsapp", "to": CUSTOMER, "text": { "body": "x" } }),
        json!({ "messaging_product": "whatsapp", "to": CUSTOMER, "type": "text" }),
    ];
    for case in cases {
        let (status, _, body) = emu.post(PNID, TOKEN, case.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}");
        assert_meta_error(&body, 100);
        assert_eq!(body["error"]["error_data"]["messaging_product"], "whatsapp");
        assert!(body["error"]["error_data"]["details"].is_string(), "{body}");
    }
    let (status, _, _) = emu.send_text(&"é".repeat(4096)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "4096 characters is the limit, not 4096 bytes"
    );
    assert_eq!(emu.handle.sent().len(), 1);
}

#[tokio::test]
async fn rich_sends_are_checked_against_metas_limits() {
    let emu = emulator(None, false).await;
    emu.handle.customer_says(PNID, CUSTOMER, "Asha", "hi").await;
    let send = |kind: &str, object: Value| {
        let mut m = json!({ "messaging_product": "whatsapp", "to": CUSTOMER, "type": kind });
        m[kind] = object;
        m
    };
    let buttons = |n: usize, title: &str| {
        let b: Vec<Value> = (0..n)
            .map(|i| json!({ "type": "reply", "reply": { "id": format!("b{i}"), "title": format!("{title}{i}") } }))
            .collect();
        send(
            "interactive",
            json!({ "type": "button", "body": { "text": "Pick" }, "action": { "buttons": b } }),
        )
    };
    for (case, code) in [
        (buttons(4, "B"), 131009),
        (buttons(1, &"a".repeat(20)), 131009),
        (send("image", json!({ "link": "not a url" })), 131009),
        (send("location", json!({ "latitude": "north" })), 100),
        (
            send(
                "interactive",
                json!({ "type": "carousel", "body": { "text": "x" } }),
            ),
            100,
        ),
    ] {
        let (status, _, body) = emu.post(PNID, TOKEN, case.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}");
        assert_meta_error(&body, code);
        assert!(body["error"]["error_data"]["details"].is_string(), "{body}");
    }
    assert!(emu.handle.sent().is_empty(), "nothing refused was sent");
    for ok in [
        buttons(3, "B"),
        send(
            "image",
            json!({ "link": "https://x.example/a.jpg", "caption": "c" }),
        ),
        send("location", json!({ "latitude": 1.5, "longitude": 2.5 })),
    ] {
        let (status, _, body) = emu.post(PNID, TOKEN, ok.clone()).await;
        assert_eq!(status, StatusCode::OK, "{ok}: {body}");
    }
    assert_eq!(emu.handle.sent().len(), 3);
}

#[tokio::test]
async fn sends_outside_the_window_are_131047() {
    let emu = emulator(None, false).await;
    let (status, _, body) = emu.send_text("hello?").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_meta_error(&body, 131047);
    // The customer wrote 25 hours ago: still closed.
    let old = (clock::now_ms() / 1000 - 25 * 3600).to_string();
    let number = &emu.handle.state.cfg.numbers[0];
    let env = envelope::customer_text(
        number,
        CUSTOMER,
        "Asha",
        "wamid.old",
        old.parse().unwrap(),
        "hi",
    );
    emu.handle.deliver_envelope(env);
    let (_, _, body) = emu.send_text("hello?").await;
    assert_meta_error(&body, 131047);
    // Templates may go anyway.
    let template = json!({ "messaging_product": "whatsapp", "to": CUSTOMER, "type": "template",
                           "template": { "name": "hello_world", "language": { "code": "en_US" } } });
    let (status, _, _) = emu.post(PNID, TOKEN, template).await;
    assert_eq!(status, StatusCode::OK);
    // A fresh message opens it.
    emu.handle
        .customer_says(PNID, CUSTOMER, "Asha", "hi again")
        .await;
    let (status, _, _) = emu.send_text("welcome back").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn webhooks_arrive_signed_and_are_redelivered_after_500_until_200() {
    let gw = fake_gateway(2).await;
    let emu = emulator(Some(gw.url.clone()), false).await;
    let wamid = emu.handle.customer_says(PNID, CUSTOMER, "Asha", "hi").await;
    gw.wait_for(3).await;
    let received = gw.received.lock().unwrap().clone();
    for (headers, body) in &received {
        assert_eq!(headers["content-type"], "application/json");
        let sig = headers.get("x-hub-signature-256").map(|v| v.as_bytes());
        assert_eq!(signature::verify(SECRET.as_bytes(), sig, body), Ok(()));
    }
    assert!(
        received.windows(2).all(|w| w[0].1 == w[1].1),
        "redeliveries carry the same bytes"
    );
    let env: Value = serde_json::from_slice(&received[0].1).unwrap();
    assert_eq!(
        env["entry"][0]["changes"][0]["value"]["messages"][0]["id"],
        wamid.as_str()
    );
    // The receiver counts a POST before the emulator sees its answer.
    let want = WebhookStats {
        attempts: 3,
        delivered: 1,
        failed_attempts: 2,
        pending: 0,
    };
    eventually(|| emu.handle.webhook_stats() == want).await;
}

#[tokio::test]
async fn webhooks_wait_for_a_url_and_keep_one_customers_order() {
    let gw = fake_gateway(0).await;
    let emu = emulator(None, false).await;
    let mut wamids = Vec::new();
    for i in 0..20 {
        wamids.push(
            emu.handle
                .customer_says(PNID, CUSTOMER, "Asha", &format!("m{i}"))
                .await,
        );
    }
    assert_eq!(emu.handle.webhook_stats().pending, 20);
    emu.handle.set_webhook_url(gw.url.clone());
    gw.wait_for(20).await;
    let order: Vec<String> = gw
        .bodies()
        .iter()
        .map(|b| {
            b["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(order, wamids);
}

/// Meta posts many webhooks at once, not one customer's after another's: a server that answers
/// only once more requests than the old limit (64) are open gets them all.
#[tokio::test]
async fn webhooks_to_many_customers_are_open_at_once() {
    let open_at_once = 100;
    assert!(open_at_once <= webhooks::MAX_IN_FLIGHT);
    // Every POST waits until `open_at_once` are open together, then all are answered.
    let all_open = Arc::new(tokio::sync::Barrier::new(open_at_once));
    let app = axum::Router::new().route(
        "/webhook",
        axum::routing::post(move || {
            let all_open = all_open.clone();
            async move {
                all_open.wait().await;
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let emu = emulator(Some(url), false).await;
    for i in 0..open_at_once {
        emu.handle
            .customer_says(PNID, &format!("9198{i:08}"), "Asha", "hi")
            .await;
    }
    let stats = || emu.handle.webhook_stats();
    eventually(|| stats().delivered == open_at_once as u64).await;
    assert_eq!(stats().failed_attempts, 0, "{:?}", stats());
}

#[tokio::test]
async fn spread_webhooks_take_the_urls_in_turn() {
    let (a, b) = (fake_gateway(0).await, fake_gateway(0).await);
    let cfg = EmulatorConfig {
        app_secret: SECRET.into(),
        webhook_spread: vec![a.url.clone(), b.url.clone()],
        statuses: false,
        numbers: vec![EmulatorNumber {
            phone_number_id: PNID.into(),
            waba_id: WABA.into(),
            display_phone_number: "15550001111".into(),
            access_token: TOKEN.into(),
        }],
        ..EmulatorConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = CancellationToken::new();
    let handle = start(cfg, listener, stop.clone()).await.unwrap();
    for i in 0..10 {
        handle
            .customer_says(PNID, &format!("9198{i:08}"), "Asha", "hi")
            .await;
    }
    a.wait_for(5).await;
    b.wait_for(5).await;
    eventually(|| handle.webhook_stats().delivered == 10).await;
    stop.cancel();
}

#[tokio::test]
async fn statuses_echo_biz_opaque_callback_data() {
    let gw = fake_gateway(0).await;
    let emu = emulator(Some(gw.url.clone()), true).await;
    emu.handle.customer_says(PNID, CUSTOMER, "Asha", "hi").await;
    let mut body = text_to(CUSTOMER, "hello");
    body["biz_opaque_callback_data"] = json!("outbox-42");
    let (_, _, answer) = emu.post(PNID, TOKEN, body).await;
    let wamid = answer["messages"][0]["id"].clone();
    gw.wait_for(3).await;
    let statuses: Vec<Value> = gw
        .bodies()
        .iter()
        .filter_map(|b| {
            b["entry"][0]["changes"][0]["value"]["statuses"]
                .get(0)
                .cloned()
        })
        .collect();
    let names: Vec<&str> = statuses
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sent", "delivered"]);
    for s in &statuses {
        assert_eq!(s["id"], wamid);
        assert_eq!(s["recipient_id"], CUSTOMER);
        assert_eq!(s["biz_opaque_callback_data"], "outbox-42");
        assert!(s["timestamp"].is_string());
        assert_eq!(s["conversation"]["origin"]["type"], "service");
        assert_eq!(s["pricing"]["category"], "service");
    }
}

#[tokio::test]
async fn faults_apply_to_exactly_count_calls() {
    let emu = emulator(None, false).await;
    emu.handle.customer_says(PNID, CUSTOMER, "Asha", "hi").await;
    emu.handle
        .push_fault(Fault::once(FaultKind::Http500).times(2));
    for _ in 0..2 {
        let (status, _, body) = emu.send_text("x").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_meta_error(&body, 1);
    }
    assert_eq!(emu.send_text("x").await.0, StatusCode::OK);

    emu.handle.push_fault(Fault::once(FaultKind::RateLimit429 {
        retry_after_secs: Some(7),
    }));
    let (status, headers, body) = emu.send_text("x").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "7");
    assert_meta_error(&body, 80007);

    emu.handle
        .push_fault(Fault::once(FaultKind::TokenExpired190).for_number("other"));
    assert_eq!(
        emu.send_text("x").await.0,
        StatusCode::OK,
        "the fault is for another number"
    );

    let cases = [
        (FaultKind::Throughput130429, StatusCode::BAD_REQUEST, 130429),
        (
            FaultKind::OutsideWindow131047,
            StatusCode::BAD_REQUEST,
            131047,
        ),
    ];
    for (kind, want_status, code) in cases {
        emu.handle.push_fault(Fault::once(kind).for_number(PNID));
        let (status, _, body) = emu.send_text("x").await;
        assert_eq!(status, want_status);
        assert_meta_error(&body, code);
    }
    assert_eq!(emu.handle.sent().len(), 2, "faulted calls are not recorded");
}

#[tokio::test]
async fn mark_read_records_known_messages_and_refuses_unknown_ones() {
    let emu = emulator(None, false).await;
    let wamid = emu.handle.customer_says(PNID, CUSTOMER, "Asha", "hi").await;
    let read = |id: &str| {
        json!({ "messaging_product": "whatsapp", "status": "read", "message_id": id,
                "typing_indicator": { "type": "text" } })
    };
    let (status, _, body) = emu.post(PNID, TOKEN, read("wamid.nope")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_meta_error(&body, 100);
    let (status, _, body) = emu.post(PNID, TOKEN, read(&wamid)).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "success": true })));
    assert_eq!(emu.handle.read_receipts(), vec![wamid]);
}

#[tokio::test]
async fn long_poll_returns_as_soon_as_a_message_arrives() {
    let emu = emulator(None, false).await;
    emu.handle.customer_says(PNID, CUSTOMER, "Asha", "hi").await;
    let client = ControlClient::new(emu.handle.url());
    let empty = client
        .sent_after(Some(PNID), None, 0, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(empty.is_empty());
    let poll = {
        let client = client.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let got = client
                .sent_after(Some(PNID), Some(CUSTOMER), 0, Duration::from_secs(30))
                .await;
            (got, started.elapsed())
        })
    };
    // Let the poll reach the server before the message exists.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(emu.send_text("now").await.0, StatusCode::OK);
    let (got, elapsed) = poll.await.unwrap();
    let got = got.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text.as_deref(), Some("now"));
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(emu.handle.wait_sent(|s| s.len() == 1, WAIT).await);
    assert!(
        !emu.handle
            .wait_sent(|s| s.len() == 2, Duration::from_millis(20))
            .await
    );
}

#[tokio::test]
async fn control_api_drives_customers_faults_and_stats() {
    let gw = fake_gateway(0).await;
    let emu = emulator(Some(gw.url.clone()), false).await;
    let client = ControlClient::new(emu.handle.url());
    let wamid = client
        .customer_says(PNID, CUSTOMER, Some("Asha"), "hi")
        .await
        .unwrap();
    assert!(wamid.starts_with("wamid."));
    let refused = client.customer_says("404", CUSTOMER, None, "hi").await;
    assert!(refused.unwrap_err().to_string().contains("not served"));
    client
        .push_fault(&Fault::once(FaultKind::Throughput130429).times(1))
        .await
        .unwrap();
    assert_eq!(emu.send_text("x").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(emu.send_text("x").await.0, StatusCode::OK);
    gw.wait_for(1).await;
    let stats = client.stats().await.unwrap();
    assert_eq!((stats.sent, stats.webhooks.delivered), (1, 1));
    client
        .set_latency(Duration::from_millis(200))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    emu.send_text("slow").await;
    assert!(started.elapsed() >= Duration::from_millis(200));
}

/// A gateway that answers each customer text with two parts, through the emulator's Graph API.
async fn echo_gateway(graph_url: String) -> String {
    let http = reqwest::Client::new();
    let app = axum::Router::new().route(
        "/webhook",
        axum::routing::post(move |body: Bytes| {
            let (http, graph_url) = (http.clone(), graph_url.clone());
            async move {
                let env: Value = serde_json::from_slice(&body).unwrap();
                let value = &env["entry"][0]["changes"][0]["value"];
                if let Some(m) = value["messages"].get(0) {
                    let (from, text) = (
                        m["from"].as_str().unwrap(),
                        m["text"]["body"].as_str().unwrap(),
                    );
                    for part in [format!("echo: {text}"), "part 2".to_owned()] {
                        http.post(format!("{graph_url}/v23.0/{PNID}/messages"))
                            .bearer_auth(TOKEN)
                            .json(&text_to(from, &part))
                            .send()
                            .await
                            .unwrap();
                    }
                }
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn chat_prints_every_part_of_the_reply_or_fails_on_silence() {
    let emu = emulator(None, false).await;
    let client = ControlClient::new(emu.handle.url());
    let mut out = Vec::new();
    let code = chat::one_shot(
        &client,
        PNID,
        CUSTOMER,
        "Asha",
        "hi",
        Duration::from_millis(300),
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(
        (code, out.as_slice()),
        (1, &b""[..]),
        "nobody answers: exit 1"
    );

    emu.handle
        .set_webhook_url(echo_gateway(emu.handle.url()).await);
    // Another customer, so that the replies to the first "hi" (queued while no URL was set)
    // cannot be mistaken for the replies to this one.
    let mut out = Vec::new();
    let code = chat::one_shot(&client, PNID, "15550002222", "Ben", "yo", WAIT, &mut out)
        .await
        .unwrap();
    assert_eq!(code, 0);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text, "< echo: yo\n< part 2\n");
}

#[tokio::test]
async fn shutdown_stops_the_listener_and_pending_deliveries() {
    // Nothing listens at this URL: the delivery retries until shutdown.
    let emu = emulator(Some("http://127.0.0.1:9/webhook".into()), false).await;
    emu.handle.customer_says(PNID, CUSTOMER, "Asha", "hi").await;
    eventually(|| emu.handle.webhook_stats().failed_attempts >= 2).await;
    emu.stop.cancel();
    tokio::time::timeout(WAIT, emu.handle.stopped())
        .await
        .expect("emulator did not stop");
    assert_eq!(emu.handle.webhook_stats().pending, 1);
}

#[test]
fn display_numbers_are_made_up_from_the_ids_last_digits() {
    assert_eq!(display_number_for("106540352242922"), "15552242922");
    assert_eq!(display_number_for("42"), "15550000042");
}

#[test]
fn from_gateway_takes_numbers_tokens_and_secrets() {
    let mut cfg: crate::config::Config = serde_json::from_value(json!({
        "version": 1,
        "public_url": "http://127.0.0.1:8080/webhook",
        "meta": { "graph_url": "emulator", "app_id": "77",
                  "app_secret": { "value": "s3cret" }, "verify_token": { "value": "vt" } },
        "agents": { "echo": { "kind": "echo" } },
        "numbers": [{ "phone_number_id": "106540352242922", "waba_id": "102290129340398",
                      "agent": "echo", "access_token": { "value": "tok" } }],
    }))
    .unwrap();
    cfg.meta.app_secret.resolve().unwrap();
    cfg.meta.verify_token.resolve().unwrap();
    cfg.numbers[0].access_token.resolve().unwrap();
    let emu = EmulatorConfig::from_gateway(&cfg);
    assert_eq!(
        (
            emu.app_id.as_str(),
            emu.app_secret.as_str(),
            emu.verify_token.as_str()
        ),
        ("77", "s3cret", "vt")
    );
    assert_eq!(
        emu.webhook_url.as_deref(),
        Some("http://127.0.0.1:8080/webhook")
    );
    assert_eq!(
        emu.numbers,
        vec![EmulatorNumber {
            phone_number_id: "106540352242922".into(),
            waba_id: "102290129340398".into(),
            display_phone_number: "15552242922".into(),
            access_token: "tok".into(),
        }]
    );
    assert!(emu.statuses);
}

#[tokio::test]
async fn business_app_messages_and_echoes_of_sends_arrive_as_message_echoes() {
    use crate::cloudapi::envelope::{self, ChangeValue};
    let gw = fake_gateway(0).await;
    let emu = emulator(Some(gw.url.clone()), false).await;
    emu.handle.customer_says(PNID, CUSTOMER, "Asha", "hi").await;
    let from_app = emu
        .handle
        .business_app_says(PNID, CUSTOMER, "A person here");
    let (_, _, answer) = emu.send_text("from the gateway").await;
    let sent = answer["messages"][0]["id"].as_str().unwrap().to_owned();
    assert!(emu.handle.echo_sent(&sent));
    assert!(
        !emu.handle.echo_sent("wamid.never"),
        "only sent messages echo"
    );
    gw.wait_for(3).await;
    let echoes: Vec<(String, String, Option<String>)> = gw
        .bodies()
        .iter()
        .filter_map(|b| {
            let env = envelope::parse(&serde_json::to_vec(b).unwrap()).unwrap();
            let change = env.entry.into_iter().next()?.changes.into_iter().next()?;
            match change.value {
                ChangeValue::Echoes(v) => v.message_echoes.into_iter().next().map(|e| {
                    let text = crate::cloudapi::content::render_text(&e.message);
                    (e.message.id.to_string(), e.to.unwrap().to_string(), text)
                }),
                _ => None,
            }
        })
        .collect();
    assert_eq!(
        echoes,
        [
            (
                from_app,
                CUSTOMER.to_owned(),
                Some("A person here".to_owned())
            ),
            (
                sent,
                CUSTOMER.to_owned(),
                Some("from the gateway".to_owned())
            ),
        ]
    );
    // An echo is the business speaking: it opens no window for a customer who never wrote.
    let stranger = "15550009999";
    emu.handle
        .business_app_says(PNID, stranger, "hello from the app");
    let (status, _, body) = emu
        .post(PNID, TOKEN, text_to(stranger, "and the API"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_meta_error(&body, 131047);
}

impl Emu {
    /// `POST /v23.0/{PNID}/media` as Meta's docs show it: the file part with its own type.
    async fn upload(
        &self,
        fields: &[(&str, &str)],
        file: Option<(&str, Vec<u8>)>,
    ) -> (StatusCode, Value) {
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in fields {
            form = form.text(name.to_string(), value.to_string());
        }
        if let Some((mime, bytes)) = file {
            let part = reqwest::multipart::Part::bytes(bytes)
                .file_name("photo.jpg")
                .mime_str(mime)
                .unwrap();
            form = form.part("file", part);
        }
        let r = self
            .http
            .post(format!("{}/v23.0/{PNID}/media", self.handle.url()))
            .bearer_auth(TOKEN)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        (status, r.json().await.unwrap())
    }
}

const JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0, 1,
];

#[tokio::test]
async fn uploads_are_checked_as_meta_checks_them_and_sends_name_known_ids() {
    let emu = emulator(None, false).await;
    emu.handle.customer_says(PNID, CUSTOMER, "Asha", "hi").await;
    let product = [("messaging_product", "whatsapp"), ("type", "image/jpeg")];
    let (status, body) = emu
        .upload(&product, Some(("image/jpeg", JPEG.to_vec())))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["id"].as_str().expect("an id").to_owned();
    let uploads = emu.handle.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].id, id);
    assert_eq!(uploads[0].phone_number_id, PNID);
    assert_eq!(uploads[0].mime_type, "image/jpeg");
    assert_eq!(uploads[0].filename.as_deref(), Some("photo.jpg"));
    assert_eq!(uploads[0].bytes, JPEG);
    // The upload is served like any media.
    let info: Value = emu
        .http
        .get(format!("{}/v23.0/{id}", emu.handle.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["file_size"], JPEG.len());

    let mut big = JPEG.to_vec();
    big.resize(5 * 1024 * 1024 + 1, 0);
    for (fields, file, code, says) in [
        (
            &product[..],
            Some(("text/html", b"<html></html>".to_vec())),
            100,
            "Param file must be a file with one of the following types: image/jpeg, image/png",
        ),
        (
            &product[..],
            Some(("image/jpeg", big)),
            131053,
            "Media upload error",
        ),
        (
            &product[..],
            Some(("image/jpeg", b"<html></html>".to_vec())),
            131053,
            "Media upload error",
        ),
        (
            &[("type", "image/jpeg")][..],
            Some(("image/jpeg", JPEG.to_vec())),
            100,
            "(#100) The parameter messaging_product is required.",
        ),
        (
            &product[..],
            None,
            100,
            "(#100) The parameter file is required.",
        ),
    ] {
        let (status, body) = emu.upload(fields, file).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_meta_error(&body, code);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{says}: {body}");
    }
    let (_, body) = emu
        .upload(&product, Some(("text/html", b"<html>".to_vec())))
        .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("Received file of type 'text/html'."),
        "{body}"
    );
    assert_eq!(
        emu.handle.uploads().len(),
        1,
        "refused uploads store nothing"
    );

    let image = |id: &str| {
        json!({ "messaging_product": "whatsapp", "to": CUSTOMER, "type": "image",
                "image": { "id": id, "caption": "c" } })
    };
    let (status, _, body) = emu.post(PNID, TOKEN, image(&id)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A customer's media id is not the number's upload, and an unknown one is nobody's.
    let inbound = emu.handle.add_media("image/jpeg", JPEG.to_vec());
    for unknown in ["1234567890123456", inbound.as_str()] {
        let (status, _, body) = emu.post(PNID, TOKEN, image(unknown)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_meta_error(&body, 100);
        assert_eq!(
            body["error"]["message"],
            "(#100) Param image['id'] is not a valid whatsapp business account media attachment ID"
        );
    }
    assert_eq!(emu.handle.sent().len(), 1);
}

#[tokio::test]
async fn an_upload_needs_the_numbers_token() {
    let emu = emulator(None, false).await;
    let r = emu
        .http
        .post(format!("{}/v23.0/{PNID}/media", emu.handle.url()))
        .bearer_auth("not-a-token")
        .multipart(reqwest::multipart::Form::new().text("messaging_product", "whatsapp"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_meta_error(&r.json().await.unwrap(), 190);
}
