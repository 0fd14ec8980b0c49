//! The `http` agent contract v2 over the wire, on SQLite and PostgreSQL: rich replies reach Meta
//! in order and once each (an image by URL uploaded first), items that break Meta's limits are
//! refused before anything is sent, and the requests an agent receives (and every answer shape)
//! match the published schemas.

use crate::common;

use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// The agents YAML for a scripted recording agent `rec` with history.
fn agents_yaml(agent: &RecordingAgent) -> String {
    format!(
        "  rec: {{ kind: http, url: \"{}\", timeout: 5s, history_turns: 10 }}\n",
        agent.url
    )
}

fn options(agent: &RecordingAgent) -> Options {
    Options {
        agents: agents_yaml(agent),
        extra: "policies:\n  delivery: { initial_backoff: 20ms, max_backoff: 200ms, settle_grace: 2s }\n  \
                fallback_reply: \"Sorry, something went wrong.\"\n  quote_customer: true\n  \
                media: { private_hosts: true }\n"
            .into(),
        ..Options::default()
    }
}

/// One answer with every kind of item but media by id; the image is `image_url`.
fn rich_answer(image_url: &str) -> Value {
    json!({ "replies": [
        { "text": "**Got** it, here is your order:" },
        { "image": { "url": image_url, "caption": "Order **A-1**" } },
        { "buttons": { "body": "Is this right?", "footer": "Acme", "buttons": [
            { "id": "yes", "title": "Yes" }, { "id": "no", "title": "No" } ] } },
        { "list": { "body": "Or pick a topic", "button": "Topics", "sections": [
            { "title": "Orders", "rows": [ { "id": "track", "title": "Track", "description": "Where is it?" } ] },
            { "title": "Returns", "rows": [ { "id": "return", "title": "Return an item" } ] } ] } },
        { "cta_url": { "body": "Manage it online", "display_text": "Open", "url": "https://acme.example/orders/A-1" } },
        { "location": { "latitude": 19.076, "longitude": 72.8777, "name": "Acme Store", "address": "1 Marine Drive" } },
        { "reaction": { "emoji": "👍" } }
    ] })
}

async fn rich_reply_reaches_meta_in_order_once(db: Db) {
    let host = MediaServer::start().await;
    let photo = jpeg(20 * 1024);
    let image_url = host.serve("order.jpg", "image/jpeg", photo.clone());
    let agent =
        RecordingAgent::scripted(Arc::new(move |_: &Value| (200, rich_answer(&image_url)))).await;
    let Some(mut t) = spawn_gateway_with_agent(db, options(&agent), "rec").await else {
        return;
    };
    let wamid = t
        .emu
        .customer_says(PNID, "919870000001", "R", "where is my order?")
        .await;
    assert!(
        t.wait_count(
            "SELECT COUNT(*) FROM outbox WHERE state = 'delivered'",
            7,
            WAIT
        )
        .await,
        "all seven messages delivered"
    );
    let sent = t.emu.sent();
    let bodies: Vec<&Value> = sent.iter().map(|s| &s.body).collect();
    let types: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "text",
            "image",
            "interactive",
            "interactive",
            "interactive",
            "location",
            "reaction"
        ],
        "in order, once each"
    );
    assert_eq!(bodies[0]["text"]["body"], "*Got* it, here is your order:");
    assert_eq!(
        bodies[0]["context"]["message_id"],
        wamid.as_str(),
        "the first quotes"
    );
    // The image went through a media upload first and is sent by its id.
    let uploads = t.emu.uploads();
    assert_eq!(uploads.len(), 1, "one upload");
    assert_eq!(uploads[0].bytes, photo);
    assert_eq!(uploads[0].mime_type, "image/jpeg");
    assert_eq!(bodies[1]["image"]["id"], uploads[0].id.as_str());
    assert!(bodies[1]["image"].get("link").is_none(), "by id, not link");
    assert_eq!(bodies[1]["image"]["caption"], "Order *A-1*");
    let buttons = &bodies[2]["interactive"];
    assert_eq!(buttons["type"], "button");
    assert_eq!(buttons["body"]["text"], "Is this right?");
    assert_eq!(buttons["footer"]["text"], "Acme");
    assert_eq!(
        buttons["action"]["buttons"][1],
        json!({ "type": "reply", "reply": { "id": "no", "title": "No" } })
    );
    let list = &bodies[3]["interactive"];
    assert_eq!(list["type"], "list");
    assert_eq!(list["action"]["button"], "Topics");
    assert_eq!(list["action"]["sections"][1]["rows"][0]["id"], "return");
    let cta = &bodies[4]["interactive"];
    assert_eq!(cta["type"], "cta_url");
    assert_eq!(
        cta["action"],
        json!({ "name": "cta_url", "parameters": { "display_text": "Open", "url": "https://acme.example/orders/A-1" } })
    );
    assert_eq!(bodies[5]["location"]["latitude"], 19.076);
    assert_eq!(
        bodies[6]["reaction"],
        json!({ "message_id": wamid, "emoji": "👍" })
    );
    assert!(
        bodies[6].get("context").is_none(),
        "a reaction quotes nothing"
    );
    // Past the settle grace nothing more leaves.
    assert!(
        !t.emu
            .wait_sent(|s| s.len() > 7, Duration::from_millis(2500))
            .await,
        "exactly once"
    );
    t.stop().await;
}

/// A reply of 4 buttons, one with a 21-character title, and an 11-row list: each is refused
/// before anything of it is sent, the fallback goes out, and the turn records why.
async fn items_breaking_meta_limits_are_refused(db: Db) {
    let agent = RecordingAgent::scripted(Arc::new(|turn: &Value| {
        let button = |i: usize| json!({ "id": format!("b{i}"), "title": format!("Option {i}") });
        let item = match turn["message"]["text"].as_str().unwrap_or_default() {
            "four" => json!({ "buttons": { "body": "Pick", "buttons": (0..4).map(button).collect::<Vec<_>>() } }),
            "long" => json!({ "buttons": { "body": "Pick", "buttons": [ { "id": "x", "title": "a".repeat(21) } ] } }),
            _ => {
                let rows: Vec<Value> = (0..11).map(|i| json!({ "id": format!("r{i}"), "title": format!("Row {i}") })).collect();
                json!({ "list": { "body": "Pick", "button": "Open", "sections": [ { "rows": rows } ] } })
            }
        };
        (200, json!({ "replies": [ { "text": "before" }, item ] }))
    }))
    .await;
    let Some(mut t) = spawn_gateway_with_agent(db, options(&agent), "rec").await else {
        return;
    };
    let cases = [
        (
            "919871000001",
            "four",
            "interactive.action.buttons: 4 buttons",
        ),
        (
            "919871000002",
            "long",
            "interactive.action.buttons[0].reply.title: 21 characters",
        ),
        ("919871000003", "eleven", "11 rows in all"),
    ];
    for (customer, text, _) in cases {
        t.emu.customer_says(PNID, customer, "L", text).await;
    }
    assert!(
        t.emu.wait_sent(|s| s.len() == 3, WAIT).await,
        "three fallbacks"
    );
    for (customer, _, reason) in cases {
        assert_eq!(
            t.texts_to(customer),
            ["Sorry, something went wrong."],
            "only the fallback reached {customer}"
        );
        let detail: String = t
            .scalar(&format!(
                "SELECT detail FROM inbox WHERE customer = '{customer}' AND state = 'failed'"
            ))
            .await;
        assert!(detail.contains(reason), "{customer}: {detail}");
        assert!(detail.contains("reply item 1"), "{detail}");
    }
    let metrics = t.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wa_gateway_agent_seconds_count{")
                && l.contains("result=\"refused\"")
                && l.ends_with(" 3")),
        "three refused answers counted:\n{metrics}"
    );
    t.stop().await;
}

async fn button_press_reaches_the_agent(db: Db) {
    let agent = RecordingAgent::scripted(Arc::new(|_: &Value| (204, Value::Null))).await;
    let Some(mut t) = spawn_gateway_with_agent(db, options(&agent), "rec").await else {
        return;
    };
    t.emu.customer_sends(
        PNID,
        "919872000001",
        "B",
        json!({ "type": "interactive", "interactive": { "type": "button_reply",
                "button_reply": { "id": "yes", "title": "Yes" } } }),
    );
    assert!(wait_until(WAIT, || async { agent.count() == 1 }).await);
    let message = &agent.calls()[0]["message"];
    assert_eq!(message["type"], "interactive");
    assert_eq!(message["structured"]["type"], "button_reply");
    assert_eq!(message["structured"]["id"], "yes");
    assert_eq!(message["structured"]["title"], "Yes");
    t.stop().await;
}

/// An `openai` agent offered `tools: [buttons, handoff]` (the emulator's LLM calls the function
/// the customer names): its `send_buttons` call reaches Meta as reply buttons.
async fn openai_agent_calls_the_buttons_tool(db: Db) {
    let opts = emulated_llm_options("model: acme-small, tools: [buttons, handoff]");
    let Some(mut t) = spawn_gateway_with_agent(db, opts, "gpt").await else {
        return;
    };
    let args = r#"{"body": "Track or return?", "buttons": [{"id": "track", "title": "Track"}, {"id": "return", "title": "Return"}]}"#;
    t.emu
        .customer_says(
            PNID,
            "919874000001",
            "O",
            &format!("call send_buttons {args}"),
        )
        .await;
    assert!(t.emu.wait_sent(|s| s.len() == 1, WAIT).await, "one message");
    let body = &t.emu.sent()[0].body;
    assert_eq!(body["type"], "interactive");
    assert_eq!(body["interactive"]["type"], "button");
    assert_eq!(body["interactive"]["body"]["text"], "Track or return?");
    assert_eq!(
        body["interactive"]["action"]["buttons"][1]["reply"],
        json!({ "id": "return", "title": "Return" })
    );
    let offered = &t.emu.llm_requests()[0]["tools"];
    assert_eq!(offered.as_array().map(Vec::len), Some(2), "{offered}");
    t.stop().await;
}

/// What a new user reads in the README holds: `customer.user_id` is the webhook's BSUID,
/// `language` is absent when the text is too short to tell, and `history` holds the agent's
/// Markdown. Every request validates against the published schema.
async fn requests_match_the_published_contract(db: Db) {
    let agent = RecordingAgent::scripted(Arc::new(|_: &Value| {
        (200, json!({ "replies": [ { "text": "**Got** it" }, { "buttons": { "body": "More?", "buttons": [ { "id": "y", "title": "Yes" } ] } } ] }))
    }))
    .await;
    let Some(mut t) = spawn_gateway_with_agent(db, options(&agent), "rec").await else {
        return;
    };
    for (i, text) in ["ok", "and then?"].into_iter().enumerate() {
        t.emu
            .deliver_envelope(bsuid_envelope(&format!("wamid.BSUID{i}"), text));
        assert!(
            t.emu.wait_sent(|s| s.len() == 2 * (i + 1), WAIT).await,
            "turn {i} answered"
        );
    }
    let calls = agent.calls();
    let first = &calls[0];
    assert_eq!(first["customer"]["user_id"], "IN.1349120865530274");
    assert_eq!(first["customer"]["wa_id"], "919873000001");
    assert!(first.get("language").is_none(), "absent, not null: {first}");
    let history = calls[1]["history"].as_array().unwrap();
    let texts: Vec<&str> = history
        .iter()
        .map(|h| h["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["ok", "**Got** it", "More?\n[buttons] Yes"]);
    let turn = schema_validator("Turn");
    for call in &calls {
        let errors: Vec<String> = turn.iter_errors(call).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{call}");
    }
    t.stop().await;
}

/// `wa-gateway chat` shows buttons as a readable line, and `/press 2` sends the second button's
/// reply, which reaches the agent with its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_shows_buttons_and_presses_one() {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};
    let agent = RecordingAgent::scripted(Arc::new(|turn: &Value| {
        let answer = match turn["message"]["structured"]["id"].as_str() {
            Some(id) => json!({ "replies": [ { "text": format!("pressed {id}") } ] }),
            None => json!({ "replies": [ { "buttons": { "body": "Pick one", "buttons": [
                { "id": "yes", "title": "Yes" }, { "id": "no", "title": "No" } ] } } ] }),
        };
        (200, answer)
    }))
    .await;
    let Some(mut t) = spawn_gateway_with_agent(Db::Sqlite, options(&agent), "rec").await else {
        return;
    };
    let mut chat = Command::new(env!("CARGO_BIN_EXE_wa-gateway"))
        .args([
            "chat",
            "--number",
            PNID,
            "--from",
            "15550100009",
            "--emulator",
        ])
        .arg(t.emu.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = chat.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut stdin = chat.stdin.take().unwrap();
    let mut seen = Vec::new();
    let mut read_until = async |want: &str, seen: &mut Vec<String>| {
        while !seen.iter().any(|l| l == want) {
            match tokio::time::timeout(WAIT, lines.recv()).await {
                Ok(Some(line)) => seen.push(line),
                _ => panic!("{want:?} never printed; got {seen:?}"),
            }
        }
    };
    writeln!(stdin, "hello").unwrap();
    read_until("  [buttons] Yes | No", &mut seen).await;
    assert!(seen.contains(&"< Pick one".to_owned()), "{seen:?}");
    writeln!(stdin, "/press 2").unwrap();
    read_until("< pressed no", &mut seen).await;
    drop(stdin);
    assert!(chat.wait().unwrap().success());
    let pressed = &agent.calls()[1]["message"]["structured"];
    assert_eq!(pressed["type"], "button_reply");
    assert_eq!(pressed["title"], "No");
    t.stop().await;
}

/// A webhook as Meta sends it in 2026: the contact and the message carry the customer's BSUID.
fn bsuid_envelope(wamid: &str, text: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    json!({ "object": "whatsapp_business_account", "entry": [ { "id": WABA, "changes": [ {
        "field": "messages",
        "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550001111", "phone_number_id": PNID },
            "contacts": [ { "profile": { "name": "Asha" }, "wa_id": "919873000001",
                            "user_id": "IN.1349120865530274" } ],
            "messages": [ { "from": "919873000001", "from_user_id": "IN.1349120865530274",
                            "id": wamid, "timestamp": now, "type": "text", "text": { "body": text } } ]
        } } ] } ] })
}

/// A validator for `components.schemas.{name}` of `wa-gateway schema --agent`'s document.
fn schema_validator(name: &str) -> jsonschema::Validator {
    let doc = wa_gateway::agent::schema::openapi();
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    jsonschema::validator_for(&schema).expect("the published schema compiles")
}

/// Every answer shape of the README validates against the published schema; answers that
/// break Meta's limits or mix kinds do not.
#[test]
fn answer_shapes_match_the_published_schema() {
    let answer = schema_validator("Answer");
    let v1 = schema_validator("AnswerV1");
    let media = [
        json!({ "document": { "media_id": "1234", "filename": "invoice.pdf", "caption": "Your invoice" } }),
        json!({ "audio": { "url": "https://cdn.example.com/note.ogg" } }),
        json!({ "video": { "url": "https://cdn.example.com/clip.mp4" } }),
        json!({ "sticker": { "media_id": "5678" } }),
    ];
    let cdn = "https://cdn.example.com/order.jpg";
    let mut shapes: Vec<Value> = rich_answer(cdn)["replies"].as_array().unwrap().clone();
    shapes.extend(media);
    shapes.push(json!({ "text": "see https://acme.example", "preview_url": false }));
    for item in &shapes {
        let one = json!({ "replies": [item] });
        let errors: Vec<String> = answer.iter_errors(&one).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{item}: {errors:?}");
    }
    for ok in [
        json!({ "replies": [], "handoff": { "reason": "asked for a person", "for": "2h" } }),
        rich_answer(cdn),
    ] {
        assert!(answer.is_valid(&ok), "{ok}");
    }
    assert!(v1.is_valid(&json!({ "reply": "Your order ships today." })));
    for bad in [
        json!({ "replies": [ { "buttons": { "body": "x", "buttons": [
            { "id": "1", "title": "a" }, { "id": "2", "title": "b" }, { "id": "3", "title": "c" }, { "id": "4", "title": "d" } ] } } ] }),
        json!({ "replies": [ { "buttons": { "body": "x", "buttons": [ { "id": "1", "title": "a".repeat(21) } ] } } ] }),
        json!({ "replies": [ { "text": "a", "image": { "url": "https://x.example/a.png" } } ] }),
        json!({ "replies": [ { "location": { "latitude": 91.0, "longitude": 0.0 } } ] }),
    ] {
        assert!(!answer.is_valid(&bad), "{bad}");
    }
}

on_both_dbs!(
    rich_reply_reaches_meta_in_order_once,
    items_breaking_meta_limits_are_refused,
    button_press_reaches_the_agent,
    requests_match_the_published_contract,
    openai_agent_calls_the_buttons_tool,
);
