//! Handing a conversation to a person, on SQLite and PostgreSQL: paused through the admin API,
//! the CLI and the status page (headless Chromium), its messages are stored and marked read but
//! no agent is called; after the pause (resumed, or ended by itself) the next turn has them as
//! history; STOP still opts out; the helpdesk hears of every pause, signed, retried after a 500;
//! and with three replicas on PostgreSQL a pause made through one holds for messages received by
//! another.

use crate::common;

use common::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const CUSTOMER: &str = "15550007001";
const HELD: &str = "SELECT COUNT(*) FROM inbox WHERE detail = 'conversation paused'";
/// The admin token of the gateways that set one (the others ignore it).
const TOKEN: &str = "handoff-admin-token";

/// The default test policies with `handoff` set to `handoff` (YAML flow mapping).
fn options(agent: &RecordingAgent, handoff: &str) -> Options {
    Options {
        agents: agent.agents_yaml(),
        extra: format!("{}  handoff: {handoff}\n", Options::default().extra),
        ..Options::default()
    }
}

/// A gateway whose first number is answered by a fresh recording agent.
async fn spawn(db: Db, handoff: &str) -> Option<(RecordingAgent, TestGateway)> {
    let agent = RecordingAgent::start().await;
    let t = spawn_gateway_with_agent(db, options(&agent, handoff), "rec").await?;
    Some((agent, t))
}

fn admin(t: &TestGateway) -> String {
    format!("http://{}", t.gw().admin_addr)
}

/// POSTs `body` to the admin API; the status and the JSON answer.
async fn post(t: &TestGateway, path: &str, body: Value) -> (u16, Value) {
    let res = t
        .http
        .post(format!("{}{path}", admin(t)))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("admin POST");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The customers of the pauses in force that `GET /api/conversations` lists with `query`.
async fn paused_customers(t: &TestGateway, query: &str) -> Vec<String> {
    paused_at(&t.http, &admin(t), query).await
}

/// As [`paused_customers`], from the admin listener at `admin` (`http://host:port`).
async fn paused_at(http: &reqwest::Client, admin: &str, query: &str) -> Vec<String> {
    conversations_at(http, admin, query)
        .await
        .iter()
        .map(|c| c["customer"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The pauses in force that `GET /api/conversations` lists with `query`, at `admin`.
async fn conversations_at(http: &reqwest::Client, admin: &str, query: &str) -> Vec<Value> {
    let v: Value = http
        .get(format!("{admin}/api/conversations?{query}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("admin GET")
        .json()
        .await
        .expect("JSON");
    v["conversations"]
        .as_array()
        .unwrap_or_else(|| panic!("no list: {v}"))
        .clone()
}

fn pause_path(customer: &str, action: &str) -> String {
    format!("/api/conversations/{PNID}/{customer}/{action}")
}

/// The texts of the history the agent was given in `call`.
fn history(call: &Value) -> Vec<String> {
    call["history"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|h| h["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn paused_through_the_api_its_messages_wait_for_the_next_turn_after_resume(db: Db) {
    let Some((agent, mut t)) = spawn(db, "{}").await else {
        return;
    };
    t.emu.customer_says(PNID, CUSTOMER, "Ana", "hello").await;
    assert!(t.emu.wait_sent(|s| s.len() == 1, WAIT).await, "answered");
    assert_eq!(agent.count(), 1);

    let (status, v) = post(
        &t,
        &pause_path(CUSTOMER, "pause"),
        json!({ "for": "1h", "reason": "wants a refund" }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["paused"], true, "{v}");
    assert_eq!(v["by"], "operator", "{v}");
    assert_eq!(v["reason"], "wants a refund", "{v}");
    assert_eq!(paused_customers(&t, "paused=true").await, [CUSTOMER]);
    assert_eq!(
        paused_customers(&t, &format!("paused=true&number={PNID}")).await,
        [CUSTOMER]
    );
    assert!(
        paused_customers(&t, &format!("number={PNID2}"))
            .await
            .is_empty()
    );

    // While paused: stored, closed as the conversation's history, marked read, never answered.
    let first = t
        .emu
        .customer_says(PNID, CUSTOMER, "Ana", "I need a person")
        .await;
    let second = t
        .emu
        .customer_says(PNID, CUSTOMER, "Ana", "are you there?")
        .await;
    assert!(t.wait_count(HELD, 2, WAIT).await, "both held");
    assert!(
        wait_until(WAIT, || async {
            let read = t.emu.read_receipts();
            read.contains(&first) && read.contains(&second)
        })
        .await,
        "marked read: {:?}",
        t.emu.read_receipts()
    );
    assert_eq!(agent.count(), 1, "no agent call while paused");
    assert_eq!(t.emu.sent().len(), 1, "nothing sent while paused");

    // A pause survives a restart (it lives in the database).
    t.restart().await;
    let third = t.emu.customer_says(PNID, CUSTOMER, "Ana", "hello?").await;
    assert!(t.wait_count(HELD, 3, WAIT).await, "held after a restart");
    assert_eq!(agent.count(), 1);
    assert!(!third.is_empty());

    let (status, v) = post(&t, &pause_path(CUSTOMER, "resume"), json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["was_paused"], true, "{v}");
    assert!(paused_customers(&t, "paused=true").await.is_empty());

    t.emu
        .customer_says(PNID, CUSTOMER, "Ana", "thanks, back to the bot")
        .await;
    assert!(
        wait_until(WAIT, || async { agent.count() == 2 }).await,
        "answered after resume"
    );
    let seen = history(&agent.calls()[1]);
    for held in ["I need a person", "are you there?", "hello?"] {
        assert!(
            seen.iter().any(|h| h == held),
            "{held:?} in the history {seen:?}"
        );
    }
    // The emulator started afresh with the gateway: this is the first reply it sees.
    assert!(t.emu.wait_sent(|s| s.len() == 1, WAIT).await, "reply sent");
    t.stop().await;
}

async fn a_refused_pause_changes_nothing(db: Db) {
    let Some((_agent, mut t)) = spawn(db, "{}").await else {
        return;
    };
    let cases = [
        (
            format!("/api/conversations/999/{CUSTOMER}/pause"),
            json!({}),
            404,
        ),
        (pause_path("not a customer", "pause"), json!({}), 400),
        (pause_path(CUSTOMER, "pause"), json!({ "for": "0s" }), 400),
        (pause_path(CUSTOMER, "pause"), json!({ "for": "90d" }), 400),
        (pause_path(CUSTOMER, "pause"), json!({ "for": "soon" }), 400),
        (pause_path(CUSTOMER, "pause"), json!({ "by": "agent" }), 400),
        (pause_path(CUSTOMER, "pause"), json!({ "until": "1h" }), 400),
    ];
    for (path, body, want) in cases {
        let (status, v) = post(&t, &path, body.clone()).await;
        assert_eq!(status, want, "{path} {body}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    assert_eq!(
        t.count("SELECT COUNT(*) FROM paused_conversations").await,
        0
    );
    let res = t
        .http
        .get(format!("{}/api/conversations?paused=false", admin(&t)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    t.stop().await;
}

async fn stop_during_a_pause_still_opts_out_and_is_confirmed(db: Db) {
    let Some((agent, mut t)) = spawn(db, "{}").await else {
        return;
    };
    let (status, v) = post(&t, &pause_path(CUSTOMER, "pause"), json!({})).await;
    assert_eq!(status, 200, "{v}");
    t.emu.customer_says(PNID, CUSTOMER, "Ana", "STOP").await;
    assert!(
        t.emu
            .wait_sent(
                |s| s.iter().any(|m| m
                    .text
                    .as_deref()
                    .is_some_and(|x| x.starts_with("You will not receive more messages"))),
                WAIT
            )
            .await,
        "confirmed: {:?}",
        t.texts_to(CUSTOMER)
    );
    assert_eq!(
        t.count(&format!(
            "SELECT COUNT(*) FROM opt_outs WHERE customer = '{CUSTOMER}' AND opted_out = 1"
        ))
        .await,
        1
    );
    assert_eq!(agent.count(), 0);
    assert_eq!(t.texts_to(CUSTOMER).len(), 1, "only the confirmation");
    t.stop().await;
}

async fn a_pause_ends_by_itself_after_its_time(db: Db) {
    // No `for`: the setting's 1s applies.
    let Some((agent, mut t)) = spawn(db, "{ pause_for: 1s }").await else {
        return;
    };
    let (status, v) = post(&t, &pause_path(CUSTOMER, "pause"), json!({})).await;
    assert_eq!(status, 200, "{v}");
    let at = humantime::parse_rfc3339(v["paused_at"].as_str().unwrap()).unwrap();
    let until = humantime::parse_rfc3339(v["paused_until"].as_str().unwrap()).unwrap();
    assert!(
        until.duration_since(at).unwrap() <= Duration::from_secs(2),
        "{v}"
    );
    t.emu.customer_says(PNID, CUSTOMER, "Ana", "anyone?").await;
    assert!(t.wait_count(HELD, 1, WAIT).await, "held while paused");
    assert!(
        wait_until(WAIT, || async {
            paused_customers(&t, "paused=true").await.is_empty()
        })
        .await,
        "the pause ended by itself"
    );
    assert_eq!(
        agent.count(),
        0,
        "the end of a pause calls no agent by itself"
    );
    t.emu
        .customer_says(PNID, CUSTOMER, "Ana", "hello again")
        .await;
    assert!(
        wait_until(WAIT, || async { agent.count() == 1 }).await,
        "answered once the pause ended"
    );
    assert!(history(&agent.calls()[0]).contains(&"anyone?".to_owned()));
    t.stop().await;
}

/// One POST as the helpdesk got it: its headers and raw body.
type Received = (axum::http::HeaderMap, Vec<u8>);

/// A helpdesk that records each POST and answers 500 to the first.
#[derive(Clone, Default)]
struct Helpdesk {
    got: Arc<Mutex<Vec<Received>>>,
}

impl Helpdesk {
    async fn start(&self) -> String {
        use axum::{Router, extract::State, http::StatusCode, routing::post};
        async fn hook(
            State(h): State<Helpdesk>,
            headers: axum::http::HeaderMap,
            body: axum::body::Bytes,
        ) -> StatusCode {
            let mut got = h.got.lock().unwrap();
            got.push((headers, body.to_vec()));
            if got.len() == 1 {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/hook")
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

/// HMAC-SHA256 of `body` keyed with `secret`, as `sha256=<hex>`.
fn signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn the_helpdesk_hears_of_a_pause_signed_and_again_after_a_500(db: Db) {
    let helpdesk = Helpdesk::default();
    let url = helpdesk.start().await;
    let secret = "helpdesk-shared-secret";
    let handoff = format!("{{ notify: {{ url: \"{url}\", secret: {{ value: {secret} }} }} }}");
    let Some((agent, mut t)) = spawn(db, &handoff).await else {
        return;
    };
    t.emu.customer_says(PNID, CUSTOMER, "Ana", "hello").await;
    // The reply is history once its row records that Meta accepted it.
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM outbox WHERE state_rank BETWEEN 2 AND 4",
            1,
            WAIT
        )
        .await,
        "answered"
    );
    let (status, v) = post(
        &t,
        &pause_path(CUSTOMER, "pause"),
        json!({ "for": "2h", "reason": "refund" }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(
        wait_until(WAIT, || async { helpdesk.count() >= 2 }).await,
        "retried after the 500: {} POSTs",
        helpdesk.count()
    );
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM handoff_notifications WHERE state = 'sent' AND attempts = 2",
            1,
            WAIT
        )
        .await,
        "recorded as sent on the second attempt"
    );
    let got = helpdesk.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "nothing more once accepted");
    let (headers, body) = &got[1];
    assert_eq!(got[0].1, *body, "the same body each time");
    let sig = headers["x-wa-gateway-signature-256"].to_str().unwrap();
    assert_eq!(sig, signature(secret, body), "signed with the secret");
    assert_ne!(sig, signature("another secret", body));
    assert_eq!(
        got[0].0["x-wa-gateway-delivery"],
        headers["x-wa-gateway-delivery"]
    );
    let v: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["number"], PNID, "{v}");
    assert_eq!(v["customer"], CUSTOMER, "{v}");
    assert_eq!(v["reason"], "refund", "{v}");
    assert_eq!(v["by"], "operator", "{v}");
    assert!(
        v["paused_until"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{v}"
    );
    let last: Vec<&str> = v["last_messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(last, ["hello", "re: hello"], "{v}");
    assert!(
        t.metrics()
            .await
            .contains("wa_gateway_handoff_notifications_total{result=\"retry\"} 1"),
        "counted"
    );

    // Erasing the customer takes the pause and the notification with the rest.
    let res = t
        .http
        .delete(format!("{}/api/customers/{CUSTOMER}", admin(&t)))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let report: Value = res.json().await.unwrap();
    assert_eq!(report["deleted"]["paused_conversations"], 1, "{report}");
    assert_eq!(report["deleted"]["handoff_notifications"], 1, "{report}");
    t.emu
        .customer_says(PNID, CUSTOMER, "Ana", "hello again")
        .await;
    assert!(
        wait_until(WAIT, || async { agent.count() == 2 }).await,
        "no longer paused once erased"
    );
    t.stop().await;
}

async fn standby_messages_are_history_and_never_answered(db: Db) {
    let Some((agent, mut t)) = spawn(db, "{}").await else {
        return;
    };
    // Conversation routing gave the conversation to another app: this one gets a copy of each
    // customer message on `standby`, STOP included, and answers none of them.
    t.emu
        .customer_says_on_standby(PNID, CUSTOMER, "Ana", "I asked the other bot");
    let mut env = text_envelope(&[(WABA, PNID, vec![(CUSTOMER, "wamid.STANDBY.2", "STOP")])]);
    env["entry"][0]["changes"][0]["field"] = json!("standby");
    assert_eq!(t.post_signed(env.to_string().as_bytes()).await, 200);
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM inbox WHERE state = 'done' AND detail LIKE 'standby%'",
            2,
            WAIT
        )
        .await,
        "stored as history"
    );
    assert_eq!(t.count("SELECT COUNT(*) FROM opt_outs").await, 0);
    // Once the conversation comes back on `messages`, the agent answers with the copy as
    // history; nothing was ever sent for the standby messages.
    t.emu
        .customer_says(PNID, CUSTOMER, "Ana", "now you, please")
        .await;
    assert!(
        wait_until(WAIT, || async { agent.count() == 1 }).await,
        "answered on messages"
    );
    assert!(history(&agent.calls()[0]).contains(&"I asked the other bot".to_owned()));
    assert!(t.emu.wait_sent(|s| !s.is_empty(), WAIT).await);
    assert_eq!(t.texts_to(CUSTOMER), ["re: now you, please"]);
    t.stop().await;
}

/// A `messaging_handovers` notification of `kind` about [`CUSTOMER`] on [`PNID`].
fn handover(kind: &str) -> Vec<u8> {
    let mut value = json!({
        "messaging_product": "whatsapp",
        "type": kind,
        "sender": { "phone_number": CUSTOMER },
        "recipient": { "phone_number_id": PNID, "display_phone_number": "15550001111" },
    });
    value[kind] = json!({ "previous_owner_app_role": "primary" });
    let env = json!({ "object": "whatsapp_business_account", "entry": [{ "id": WABA,
        "changes": [{ "field": "messaging_handovers", "value": value }] }] });
    env.to_string().into_bytes()
}

async fn handovers_pause_and_resume_the_conversation(db: Db) {
    let Some((agent, mut t)) = spawn(db, "{}").await else {
        return;
    };
    let by_handover = "SELECT COUNT(*) FROM paused_conversations WHERE paused_by = 'handover'";
    // Another app took the conversation: paused; passed back: resumed.
    assert_eq!(t.post_signed(&handover("control_taken")).await, 200);
    assert_eq!(t.count(by_handover).await, 1);
    assert_eq!(paused_customers(&t, "paused=true").await, [CUSTOMER]);
    assert_eq!(t.post_signed(&handover("control_passed")).await, 200);
    assert!(paused_customers(&t, "paused=true").await.is_empty());

    // Taken again, then released (which Meta does not announce): the customer's next message
    // comes on `messages`, so the conversation is this app's again and is answered.
    assert_eq!(t.post_signed(&handover("control_taken")).await, 200);
    assert_eq!(t.post_signed(&handover("control_taken")).await, 200);
    assert_eq!(t.count(by_handover).await, 1, "a redelivery pauses once");
    t.emu.customer_says(PNID, CUSTOMER, "Ana", "hello?").await;
    assert!(
        wait_until(WAIT, || async { agent.count() == 1 }).await,
        "answered once routed here again"
    );
    assert!(paused_customers(&t, "paused=true").await.is_empty());

    // A person's pause is theirs: passing the conversation to this app leaves it in force.
    let (status, _) = post(&t, &pause_path(CUSTOMER, "pause"), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(t.post_signed(&handover("control_passed")).await, 200);
    assert_eq!(t.post_signed(&handover("control_taken")).await, 200);
    assert_eq!(paused_customers(&t, "paused=true").await, [CUSTOMER]);
    assert_eq!(
        t.count("SELECT COUNT(*) FROM paused_conversations WHERE paused_by = 'operator'")
            .await,
        1
    );
    t.stop().await;
}

/// An http agent answers with a reply and a `handoff`: the reply goes out, the conversation is
/// paused (by the agent, with its reason and length), and the customer's next message is held.
async fn an_agents_handoff_pauses_after_its_reply(db: Db) {
    let agent = RecordingAgent::scripted(Arc::new(|_: &Value| {
        (
            200,
            json!({ "replies": [ { "text": "A colleague will take over." } ],
                      "handoff": { "reason": "asked for a refund", "for": "2h" } }),
        )
    }))
    .await;
    let Some(mut t) = spawn_gateway_with_agent(db, options(&agent, "{}"), "rec").await else {
        return;
    };
    t.emu
        .customer_says(PNID, CUSTOMER, "Ana", "I want a refund")
        .await;
    assert!(
        t.emu.wait_sent(|s| s.len() == 1, WAIT).await,
        "the reply goes out"
    );
    assert_eq!(t.texts_to(CUSTOMER), ["A colleague will take over."]);
    assert!(
        wait_until(WAIT, || async {
            paused_customers(&t, "paused=true").await == [CUSTOMER]
        })
        .await,
        "paused"
    );
    let listed = conversations_at(&t.http, &admin(&t), "paused=true").await;
    let pause = &listed[0];
    assert_eq!(pause["by"], "agent", "{pause}");
    assert_eq!(pause["reason"], "asked for a refund", "{pause}");
    let at = |key: &str| {
        let text = pause[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: {pause}"));
        humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{key} {text}: {e}"))
    };
    let length = at("paused_until").duration_since(at("paused_at")).unwrap();
    assert_eq!(length, Duration::from_secs(2 * 3600), "{pause}");
    t.emu.customer_says(PNID, CUSTOMER, "Ana", "hello?").await;
    assert!(t.wait_count(HELD, 1, WAIT).await, "held");
    assert_eq!(agent.count(), 1, "no agent call while paused");
    t.stop().await;
}

/// An `openai` agent offered `tools: [handoff]` calls `hand_off`: the conversation is paused.
async fn an_openai_agent_calls_the_handoff_tool(db: Db) {
    let opts = emulated_llm_options("model: m, tools: [handoff]");
    let Some(mut t) = spawn_gateway_with_agent(db, opts, "gpt").await else {
        return;
    };
    t.emu
        .customer_says(
            PNID,
            CUSTOMER,
            "Ana",
            r#"call hand_off {"reason": "wants a person"}"#,
        )
        .await;
    assert!(
        wait_until(WAIT, || async {
            paused_customers(&t, "paused=true").await == [CUSTOMER]
        })
        .await,
        "paused by the model's call"
    );
    t.emu
        .customer_says(PNID, CUSTOMER, "Ana", "still there?")
        .await;
    assert!(t.wait_count(HELD, 1, WAIT).await, "held");
    assert_eq!(
        t.emu.llm_requests().len(),
        1,
        "the model is not asked again"
    );
    assert!(t.emu.sent().is_empty(), "a call without text sends nothing");
    t.stop().await;
}

/// Coexistence: a person answers from the WhatsApp Business app on the same number. Its echo is
/// kept as the business's turn and pauses the agent for `echo_pause`; after the pause the agent
/// sees it in the history. The echo of the gateway's own reply changes nothing. A status without
/// callback data settles the person's message, and not a reply of the gateway's.
async fn an_answer_from_the_business_app_pauses_the_agent_and_an_echo_of_our_own_does_not(db: Db) {
    let Some((agent, mut t)) = spawn(db, "{ echo_pause: 1h }").await else {
        return;
    };
    let other = "15550007002";
    t.emu.customer_says(PNID, CUSTOMER, "Ana", "hello").await;
    t.emu.customer_says(PNID, other, "Ben", "hi").await;
    assert!(
        t.emu.wait_sent(|s| s.len() == 2, WAIT).await,
        "both answered"
    );

    let person = t
        .emu
        .business_app_says(PNID, CUSTOMER, "Hi Ana, Maria here. Let me check.");
    let own = t.emu.sent().into_iter().find(|m| m.to == other).unwrap();
    // The gateway knows a wamid as its own once Meta's answer to the send is committed; the
    // echo is sent after that, not merely after the emulator has answered.
    let recorded = format!("SELECT COUNT(*) FROM outbox WHERE wamid = '{}'", own.wamid);
    assert!(t.wait_count(&recorded, 1, WAIT).await, "own reply recorded");
    assert!(t.emu.echo_sent(&own.wamid));
    assert!(
        wait_until(WAIT, || async {
            paused_customers(&t, "paused=true").await == [CUSTOMER]
        })
        .await,
        "the person's answer pauses that conversation"
    );
    let listed = conversations_at(&t.http, &admin(&t), "paused=true").await;
    assert_eq!(listed[0]["by"], "business_app", "{listed:?}");
    // Both echoes are acknowledged (each only after what it does is durable).
    assert!(
        wait_until(WAIT, || async { t.emu.webhook_stats().pending == 0 }).await,
        "echoes delivered"
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM outbox WHERE kind = 'business_app'")
            .await,
        1,
        "only the person's message is kept as theirs"
    );
    // A status without callback data (the app's sends carry none) settles the person's message
    // by its wamid; it names no reply of the gateway's (theirs carry their callback data).
    let own_state = format!("SELECT state FROM outbox WHERE wamid = '{}'", own.wamid);
    let own_before = t.scalar(&own_state).await;
    for (wamid, to) in [(person.as_str(), CUSTOMER), (own.wamid.as_str(), other)] {
        t.emu.deliver_envelope(
            json!({ "object": "whatsapp_business_account", "entry": [{ "id": WABA,
            "changes": [{ "field": "messages", "value": { "messaging_product": "whatsapp",
                "metadata": { "display_phone_number": "15550001111", "phone_number_id": PNID },
                "statuses": [{ "id": wamid, "status": "read", "timestamp": "1700000001",
                               "recipient_id": to }] } }] }] }),
        );
    }
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM outbox WHERE kind = 'business_app' AND state = 'read'",
            1,
            WAIT
        )
        .await,
        "the person's message is read"
    );
    assert!(
        wait_until(WAIT, || async { t.emu.webhook_stats().pending == 0 }).await,
        "statuses delivered"
    );
    assert_eq!(
        t.scalar(&own_state).await,
        own_before,
        "our reply as it was"
    );

    // Coexistence's sync of past chats is acknowledged and never answered.
    t.emu.deliver_envelope(json!({ "object": "whatsapp_business_account", "entry": [{ "id": WABA,
        "changes": [{ "field": "history", "value": { "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550001111", "phone_number_id": PNID },
            "history": [{ "metadata": { "phase": 0, "chunk_order": 1, "progress": 100 },
                          "threads": [{ "id": CUSTOMER, "messages": [{ "from": CUSTOMER, "id": "wamid.OLD",
                              "timestamp": "1700000000", "type": "text", "text": { "body": "old chat" } }] }] }] } }] }] }));
    assert!(
        wait_until(WAIT, || async { t.emu.webhook_stats().pending == 0 }).await,
        "the history sync is acknowledged"
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM dead_letters").await,
        0,
        "understood, not a dead letter"
    );
    t.emu
        .customer_says(PNID, CUSTOMER, "Ana", "thanks Maria")
        .await;
    assert!(
        t.wait_count(HELD, 1, WAIT).await,
        "held while a person answers"
    );
    t.emu
        .customer_says(PNID, other, "Ben", "still there?")
        .await;
    assert!(
        wait_until(WAIT, || async { agent.count() == 3 }).await,
        "the other conversation is answered: an echo of our own reply pauses nothing"
    );

    let (status, _) = post(&t, &pause_path(CUSTOMER, "resume"), json!({})).await;
    assert_eq!(status, 200);
    t.emu
        .customer_says(PNID, CUSTOMER, "Ana", "ok, and now?")
        .await;
    assert!(wait_until(WAIT, || async { agent.count() == 4 }).await);
    let last = agent.calls().pop().unwrap();
    let turns: Vec<(String, String)> = last["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["role"].as_str().unwrap().to_owned(),
                h["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let person = (
        "agent".to_owned(),
        "Hi Ana, Maria here. Let me check.".to_owned(),
    );
    let held = ("customer".to_owned(), "thanks Maria".to_owned());
    let (p, h) = (
        turns.iter().position(|x| *x == person),
        turns.iter().position(|x| *x == held),
    );
    assert!(matches!((p, h), (Some(p), Some(h)) if p < h), "{turns:?}");
    t.stop().await;
}

on_both_dbs!(
    an_answer_from_the_business_app_pauses_the_agent_and_an_echo_of_our_own_does_not,
    an_agents_handoff_pauses_after_its_reply,
    an_openai_agent_calls_the_handoff_tool,
    paused_through_the_api_its_messages_wait_for_the_next_turn_after_resume,
    a_refused_pause_changes_nothing,
    stop_during_a_pause_still_opts_out_and_is_confirmed,
    a_pause_ends_by_itself_after_its_time,
    the_helpdesk_hears_of_a_pause_signed_and_again_after_a_500,
    the_cli_pauses_lists_and_resumes,
    standby_messages_are_history_and_never_answered,
    handovers_pause_and_resume_the_conversation,
);

/// Runs `wa-gateway conversation …args --config path`: exit code, stdout, stderr.
async fn conversation(path: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
        .arg("conversation")
        .args(args)
        .arg("--config")
        .arg(path)
        .output()
        .await
        .expect("run wa-gateway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn the_cli_pauses_lists_and_resumes(db: Db) {
    let agent = RecordingAgent::start().await;
    let Some(storage) = storage(db).await else {
        return;
    };
    // The CLI finds the gateway at its configured admin address, so it needs a fixed port.
    let port = free_port();
    let yaml = config_yaml(&storage.url, &options(&agent, "{}"), "rec").replace(
        "  admin: 127.0.0.1:0\n",
        &format!("  admin: 127.0.0.1:{port}\n  admin_token: {{ value: {TOKEN} }}\n"),
    );
    let mut t = start_from_yaml(storage, &yaml).await;
    let path = t.config_path.clone();

    let (code, out, err) = conversation(
        &path,
        &["pause", PNID, CUSTOMER, "--for", "2h", "--reason", "VIP"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("Paused {CUSTOMER} on {PNID} until")),
        "{out}"
    );
    assert_eq!(
        t.count("SELECT COUNT(*) FROM paused_conversations WHERE paused_by = 'cli'")
            .await,
        1
    );
    let (code, out, err) = conversation(&path, &["list"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(CUSTOMER) && out.contains("VIP") && out.contains("cli"),
        "{out}"
    );

    t.emu.customer_says(PNID, CUSTOMER, "Ana", "hello").await;
    assert!(t.wait_count(HELD, 1, WAIT).await, "held");
    assert_eq!(agent.count(), 0);

    let (code, out, err) = conversation(&path, &["pause", "999", CUSTOMER]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not served by this gateway"), "{err}");

    let (code, out, err) = conversation(&path, &["resume", PNID, CUSTOMER]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Resumed"), "{out}");
    let (_, out, _) = conversation(&path, &["list", "--number", PNID]).await;
    assert!(out.contains("No conversation is paused"), "{out}");
    t.emu.customer_says(PNID, CUSTOMER, "Ana", "hi again").await;
    assert!(
        wait_until(WAIT, || async { agent.count() == 1 }).await,
        "answered after resume"
    );
    assert!(history(&agent.calls()[0]).contains(&"hello".to_owned()));
    t.stop().await;
}

/// The status page, signed in, in headless Chromium: its card's form pauses a conversation, which
/// the card then lists with a Resume button; clicking it gives the conversation back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_pauses_a_conversation_and_its_resume_button_gives_it_back() {
    use common::browser::{Driver, chromium_available, save_screenshot, sign_in};
    if !chromium_available() {
        return;
    }
    let agent = RecordingAgent::start().await;
    let storage = storage(Db::Sqlite).await.expect("SQLite always runs");
    let yaml = config_yaml(&storage.url, &options(&agent, "{}"), "rec").replace(
        "  admin: 127.0.0.1:0\n",
        &format!("  admin: 127.0.0.1:0\n  admin_token: {{ value: {TOKEN} }}\n"),
    );
    let mut t = start_from_yaml(storage, &yaml).await;
    let d = Driver::start().await;
    sign_in(&d, &format!("{}/", admin(&t)), TOKEN).await;
    let card = format!("#card-{PNID}");
    let items = format!(
        "return String(document.querySelectorAll('{card} .paused-item[data-customer=\"{CUSTOMER}\"]').length)"
    );
    assert_eq!(d.eval(&items).await, "0", "nothing paused yet");

    let form = format!("{card} .pause-form");
    d.type_into(&format!("{form} input[name=customer]"), CUSTOMER)
        .await;
    d.type_into(&format!("{form} input[name=for]"), "2h").await;
    d.type_into(&format!("{form} input[name=reason]"), "angry customer")
        .await;
    d.click(&format!("{form} button[type=submit]")).await;
    assert!(d.wait_for(&items, "1").await, "listed on the card");
    let shown = d
        .eval(&format!(
            "return document.querySelector('{card} .paused-item').innerText"
        ))
        .await;
    let shown = shown.as_str().unwrap_or_default();
    assert!(
        shown.contains("angry customer") && shown.contains("by operator"),
        "{shown}"
    );
    assert_eq!(paused_customers(&t, "paused=true").await, [CUSTOMER]);
    t.emu.customer_says(PNID, CUSTOMER, "Ana", "hello?").await;
    assert!(t.wait_count(HELD, 1, WAIT).await, "held while paused");
    assert_eq!(agent.count(), 0);
    save_screenshot(&d, "status-page-paused-conversation.png").await;

    d.click(&format!(
        "{card} [data-action=\"resume\"][data-customer=\"{CUSTOMER}\"]"
    ))
    .await;
    assert!(d.wait_for(&items, "0").await, "gone from the card");
    let msg = d
        .eval(&format!(
            "return document.querySelector('{card} .msg').textContent"
        ))
        .await;
    assert!(
        msg.as_str().is_some_and(|m| m.starts_with("Resumed")),
        "{msg}"
    );
    assert!(paused_customers(&t, "paused=true").await.is_empty());
    t.emu
        .customer_says(PNID, CUSTOMER, "Ana", "still there?")
        .await;
    assert!(
        wait_until(WAIT, || async { agent.count() == 1 }).await,
        "answered after Resume"
    );
    d.stop().await;
    t.stop().await;
}

/// One gateway process of a cluster on PostgreSQL: its webhook URL and admin address.
struct Replica {
    _process: GatewayProcess,
    webhook: String,
    admin: String,
    log: std::path::PathBuf,
}

impl Replica {
    /// Starts `wa-gateway serve` as replica `id`, answering [`PNID`] with `agent`.
    fn start(dir: &std::path::Path, id: &str, storage: &str, graph: &str, agent: &str) -> Self {
        let cfg = StandaloneConfig::new(dir, storage, graph)
            .storage_extra(", lease: 2s")
            .agents(agent)
            .agent("rec")
            .extra("policies:\n  delivery: { initial_backoff: 20ms, max_backoff: 200ms }\n");
        let (process, webhook, admin, log) = spawn_replica(dir, id, cfg);
        Self {
            _process: process,
            webhook,
            admin,
            log,
        }
    }

    /// POSTs `body` to this replica's admin API; the JSON answer of a 200.
    async fn post(&self, http: &reqwest::Client, path: &str, body: Value) -> Value {
        let res = http
            .post(format!("http://{}{path}", self.admin))
            .json(&body)
            .send()
            .await
            .expect("admin POST");
        assert_eq!(res.status().as_u16(), 200, "{path}");
        res.json().await.expect("JSON")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_through_one_replica_holds_for_messages_received_by_another() {
    let Some(storage) = storage(Db::Postgres).await else {
        return;
    };
    let dir = storage.dir.path();
    let emu = standalone_emulator(dir, Duration::from_millis(300)).await;
    let agent = RecordingAgent::start().await;
    let replicas: Vec<Replica> = (0..3)
        .map(|n| {
            let id = format!("handoff-{n}");
            Replica::start(dir, &id, &storage.url, &emu.url(), &agent.agents_yaml())
        })
        .collect();
    let _logs = LogsOnFailure(replicas.iter().map(|r| r.log.clone()).collect());
    for r in &replicas {
        assert!(wait_ready(&r.admin, Duration::from_secs(30)).await, "ready");
    }
    let http = reqwest::Client::new();
    let customer_says = |replica: usize, n: usize, text: &'static str| {
        let (http, emu, url) = (http.clone(), emu.clone(), replicas[replica].webhook.clone());
        async move {
            let wamid = format!("wamid.HANDOFF.{n}");
            emu.record_inbound(PNID, CUSTOMER, &wamid, now_secs());
            post_text(&http, &url, CUSTOMER, &wamid, text)
                .await
                .expect("webhook accepted");
        }
    };
    let held = |n: i64| count_is(&storage.url, HELD, n);

    // Replica 1 answers the customer first, so it holds the conversation's lease.
    customer_says(1, 0, "hello").await;
    assert!(emu.wait_sent(|s| s.len() == 1, WAIT).await, "answered");
    assert_eq!(agent.count(), 1);

    // Paused through replica 0: messages received by replica 1 (holding the conversation) and
    // by replica 2 are held; every replica lists the pause.
    replicas[0]
        .post(
            &http,
            &pause_path(CUSTOMER, "pause"),
            json!({ "for": "1h" }),
        )
        .await;
    customer_says(1, 1, "a person, please").await;
    assert!(
        held(1).await,
        "held by the replica holding the conversation"
    );
    customer_says(2, 2, "hello?").await;
    assert!(held(2).await, "held when another replica received it");
    for r in &replicas {
        let listed = paused_at(&http, &format!("http://{}", r.admin), "paused=true").await;
        assert_eq!(listed, [CUSTOMER], "listed by {}", r.admin);
    }
    assert_eq!(agent.count(), 1, "no agent call while paused");
    assert_eq!(emu.sent().len(), 1, "nothing sent while paused");

    // Resumed through replica 2: the next message, wherever it lands, is answered with the
    // messages of the pause as history.
    let v = replicas[2]
        .post(&http, &pause_path(CUSTOMER, "resume"), json!({}))
        .await;
    assert_eq!(v["was_paused"], true, "{v}");
    customer_says(0, 3, "thanks").await;
    assert!(
        wait_until(WAIT, || async { agent.count() == 2 }).await,
        "answered after resume"
    );
    let seen = history(&agent.calls()[1]);
    for text in ["a person, please", "hello?"] {
        assert!(seen.iter().any(|h| h == text), "{text:?} in {seen:?}");
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Waits until `sql` (a COUNT) on the database at `url` gives `n`.
async fn count_is(url: &str, sql: &str, n: i64) -> bool {
    wait_until(WAIT, || async { count(url, sql).await == n }).await
}
