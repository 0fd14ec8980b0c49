//! Connector tests over real sockets: the `openai` agent against the emulator's LLM endpoint,
//! the `http` agent and [`ResilientAgent`] against a scripted server.

use super::*;
use crate::config::{AgentPolicy, Secret};
use crate::emulator::{self, EmulatorConfig, EmulatorHandle};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

fn turn(text: Option<&str>, kind: &str) -> Turn {
    Turn {
        number: TurnNumber {
            phone_number_id: "106540352242922".into(),
            display_name: "Acme".into(),
        },
        customer: TurnCustomer {
            wa_id: Some("15551234567".into()),
            user_id: None,
            name: Some("Asha".into()),
        },
        message: TurnMessage {
            id: "wamid.X".into(),
            kind: kind.into(),
            text: text.map(Into::into),
            timestamp: 1_700_000_000,
            content: json!({ "type": kind }),
            structured: Value::Null,
        },
        language: None,
        history: Vec::new(),
    }
}

fn history(n: usize) -> Vec<HistoryTurn> {
    (0..n)
        .map(|i| HistoryTurn {
            role: if i % 2 == 0 {
                Role::Customer
            } else {
                Role::Agent
            },
            text: format!("h{i}"),
            timestamp: 1_699_999_000 + i as i64,
        })
        .collect()
}

fn hindi(reliable: bool) -> Option<LanguageHint> {
    Some(LanguageHint {
        code: "hi".into(),
        name: "Hindi".into(),
        confidence: 0.9,
        reliable,
    })
}

fn openai(url: &str, key: Option<&str>, history_turns: usize) -> OpenaiAgent {
    openai_with_tools(url, key, history_turns, Vec::new())
}

fn openai_with_tools(
    url: &str,
    key: Option<&str>,
    history_turns: usize,
    tools: Vec<crate::config::AgentTool>,
) -> OpenaiAgent {
    let key = key.map(Secret::inline);
    OpenaiAgent::new(
        url,
        key.as_ref(),
        Duration::from_secs(5),
        ChatParams {
            model: "m1".into(),
            system_prompt: "You help Acme's customers.".into(),
            temperature: Some(0.2),
            max_tokens: None,
            history_turns,
            tools,
        },
    )
    .unwrap()
}

async fn emulator() -> (EmulatorHandle, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = CancellationToken::new();
    let emu = emulator::start(EmulatorConfig::default(), listener, stop.clone())
        .await
        .unwrap();
    (emu, stop)
}

#[test]
fn render_for_text_agent_prefers_the_pipeline_rendering() {
    let cases = [
        (turn(Some("hello"), "text"), "hello"),
        (
            turn(Some("📍 Home (12.9, 77.6)"), "location"),
            "📍 Home (12.9, 77.6)",
        ),
        (turn(None, "sticker"), "[sticker]"),
        (turn(Some("  "), "audio"), "[audio]"),
    ];
    for (t, want) in cases {
        assert_eq!(render_for_text_agent(&t), want);
    }
    let mut image = turn(None, "image");
    image.message.content = json!({ "type": "image", "image": { "caption": "my bill" } });
    assert_eq!(render_for_text_agent(&image), "[image] my bill");
}

#[test]
fn openai_request_orders_system_history_user_and_names_a_reliable_language() {
    let agent = openai("http://llm/v1/", None, 2);
    let mut t = turn(Some("kahan hai?"), "text");
    t.history = history(3);
    t.language = hindi(true);
    let body = serde_json::to_value(agent.request(&t)).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "m1",
            "temperature": 0.2f32,
            "messages": [
                { "role": "system", "content": "You help Acme's customers.\n\nThe customer writes in Hindi (hi)." },
                { "role": "assistant", "content": "h1" },
                { "role": "user", "content": "h2" },
                { "role": "user", "content": "kahan hai?" },
            ],
        })
    );
    t.language = hindi(false);
    let req = agent.request(&t);
    assert_eq!(req.messages[0].content, "You help Acme's customers.");
}

#[tokio::test]
async fn openai_agent_talks_to_the_emulator_llm() {
    let (emu, stop) = emulator().await;
    emu.set_llm_api_key(Some("sk-test".into()));
    let agent = openai(&format!("{}/v1", emu.url()), Some("sk-test"), 10);
    let mut t = turn(Some("where is my order?"), "text");
    t.history = history(2);
    t.language = hindi(true);
    let reply = agent.reply(&t).await.unwrap();
    assert_eq!(
        reply,
        Answer::text("[m1] you said: where is my order? (history: 2 messages)")
    );
    let seen = emu.llm_requests();
    assert_eq!(seen.len(), 1);
    let roles: Vec<_> = seen[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [
            (
                "system",
                "You help Acme's customers.\n\nThe customer writes in Hindi (hi)."
            ),
            ("user", "h0"),
            ("assistant", "h1"),
            ("user", "where is my order?"),
        ]
    );
    stop.cancel();
}

#[tokio::test]
async fn openai_agent_reports_the_servers_message_and_never_the_key() {
    let (emu, stop) = emulator().await;
    emu.set_llm_api_key(Some("sk-right".into()));
    let agent = openai(&format!("{}/v1", emu.url()), Some("sk-wrong"), 10);
    let err = agent.reply(&turn(Some("hi"), "text")).await.unwrap_err();
    assert!(
        matches!(&err, AgentError::Status { status: 401, body } if body == "Incorrect API key provided."),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let shown = format!("{err} {err:?} {agent:?}");
    assert!(!shown.contains("sk-wrong"), "{shown}");

    emu.push_llm_fault(503);
    let agent = openai(&format!("{}/v1", emu.url()), Some("sk-right"), 10);
    let err = agent.reply(&turn(Some("hi"), "text")).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    stop.cancel();
}

/// A server answering each POST with the next scripted (status, body), then `{"reply": "ok"}`.
struct Scripted {
    url: String,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Scripted {
    async fn start(script: Vec<(u16, Value)>) -> Self {
        use axum::extract::State;
        type S = (Arc<Mutex<Vec<Value>>>, Arc<Mutex<VecDeque<(u16, Value)>>>);
        async fn handle(
            State((seen, script)): State<S>,
            axum::Json(body): axum::Json<Value>,
        ) -> (axum::http::StatusCode, axum::Json<Value>) {
            seen.lock().unwrap().push(body);
            let (status, answer) = script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or((200, json!({ "reply": "ok" })));
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                axum::Json(answer),
            )
        }
        let seen = Arc::<Mutex<Vec<Value>>>::default();
        let app = axum::Router::new()
            .route("/", axum::routing::post(handle))
            .with_state((seen.clone(), Arc::new(Mutex::new(script.into()))));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, seen }
    }

    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn agent(&self, history_turns: usize) -> Agent {
        Agent::Http(
            HttpAgent::new(
                self.url.clone(),
                Duration::from_secs(5),
                &BTreeMap::new(),
                history_turns,
            )
            .unwrap(),
        )
    }
}

#[tokio::test]
async fn http_agent_sends_the_extended_turn_with_its_history_cut() {
    let server = Scripted::start(vec![]).await;
    let mut t = turn(Some("hi"), "text");
    t.history = history(5);
    t.language = hindi(true);
    t.message.structured = json!({ "kind": "text" });
    let reply = server.agent(2).reply(&t).await.unwrap();
    assert_eq!(reply, Answer::text("ok"));
    let seen = server.seen.lock().unwrap()[0].clone();
    assert_eq!(
        seen["history"],
        json!([
            { "role": "agent", "text": "h3", "timestamp": 1_699_999_003 },
            { "role": "customer", "text": "h4", "timestamp": 1_699_999_004 },
        ])
    );
    assert_eq!(seen["language"]["code"], "hi");
    assert_eq!(seen["message"]["structured"], json!({ "kind": "text" }));
    assert_eq!(seen["message"]["text"], "hi");
}

fn policy(retries: u32, breaker_failures: u32) -> AgentPolicy {
    AgentPolicy {
        retries,
        retry_backoff: crate::config::Duration::from_millis(1),
        breaker_failures,
        breaker_cooldown: crate::config::Duration::from_secs(60),
        ..AgentPolicy::default()
    }
}

fn server_error() -> (u16, Value) {
    (500, json!({ "error": "down" }))
}

#[tokio::test]
async fn retries_transient_failures_up_to_the_policy() {
    let server = Scripted::start(vec![server_error(), server_error()]).await;
    let agent = ResilientAgent::new("bot", server.agent(10), policy(2, 5));
    let reply = agent.call(&turn(Some("hi"), "text")).await.unwrap();
    assert_eq!(reply, Answer::text("ok"));
    assert_eq!(server.calls(), 3);

    let server = Scripted::start(vec![server_error(); 3]).await;
    let agent = ResilientAgent::new("bot", server.agent(10), policy(2, 5));
    let err = agent.call(&turn(Some("hi"), "text")).await.unwrap_err();
    assert!(
        matches!(err, AgentFailure::Failed { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(server.calls(), 3);
}

#[tokio::test]
async fn does_not_retry_a_client_error_or_a_bad_answer() {
    let server = Scripted::start(vec![(400, json!({})), (200, json!({ "reply": 5 }))]).await;
    let agent = ResilientAgent::new("bot", server.agent(10), policy(3, 5));
    let err = agent.call(&turn(Some("hi"), "text")).await.unwrap_err();
    assert!(
        matches!(
            err,
            AgentFailure::Failed {
                attempts: 1,
                source: AgentError::Status { status: 400, .. },
                ..
            }
        ),
        "{err:?}"
    );
    let err = agent.call(&turn(Some("hi"), "text")).await.unwrap_err();
    assert_eq!(err.label(), "bad_answer");
    assert_eq!(server.calls(), 2);
}

#[tokio::test]
async fn breaker_opens_after_failed_calls_and_fails_fast() {
    let server = Scripted::start(vec![server_error(); 4]).await;
    let agent = ResilientAgent::new("bot", server.agent(10), policy(1, 2));
    for _ in 0..2 {
        assert!(agent.call(&turn(Some("hi"), "text")).await.is_err());
    }
    assert_eq!(server.calls(), 4, "two calls of two attempts each");
    assert_eq!(agent.breaker_state(), BreakerState::Open);
    let err = agent.call(&turn(Some("hi"), "text")).await.unwrap_err();
    assert!(matches!(err, AgentFailure::CircuitOpen { ref agent, .. } if agent == "bot"));
    assert_eq!(err.label(), "circuit_open");
    assert_eq!(server.calls(), 4, "an open breaker does not call the agent");
}

#[tokio::test]
async fn openai_tools_are_offered_and_their_calls_become_items_and_a_handoff() {
    use crate::config::AgentTool;
    let (emu, stop) = emulator().await;
    let tools = vec![AgentTool::Buttons, AgentTool::Media, AgentTool::Handoff];
    let agent = openai_with_tools(&format!("{}/v1", emu.url()), None, 0, tools);
    let said = |text: &str| turn(Some(text), "text");

    let reply = agent
        .reply(&said(
            r#"call send_buttons {"body": "Pick", "buttons": [{"id": "y", "title": "Yes"}]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(reply.replies.len(), 1);
    let ReplyItem::Buttons { buttons } = &reply.replies[0] else {
        panic!("{reply:?}")
    };
    assert_eq!(buttons.buttons[0].id, "y");
    let requests = emu.llm_requests();
    let offered: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["send_buttons", "send_media", "hand_off"]);
    let params = &requests[0]["tools"][0]["function"]["parameters"];
    assert_eq!(params["type"], "object");
    assert_eq!(params["properties"]["buttons"]["maxItems"], 3);

    let reply = agent
        .reply(&said(r#"call send_media {"kind": "document", "url": "https://x.example/a.pdf", "filename": "a.pdf"}"#))
        .await
        .unwrap();
    assert!(
        matches!(&reply.replies[0], ReplyItem::Document { document } if document.url.as_deref() == Some("https://x.example/a.pdf"))
    );

    let reply = agent
        .reply(&said(
            r#"call hand_off {"reason": "wants a person", "for": "30m"}"#,
        ))
        .await
        .unwrap();
    assert!(reply.replies.is_empty());
    assert_eq!(
        reply.handoff.unwrap().reason.as_deref(),
        Some("wants a person")
    );

    let plain = agent.reply(&said("hello")).await.unwrap();
    assert_eq!(
        plain,
        Answer::text("[m1] you said: hello (history: 0 messages)")
    );

    let err = agent
        .reply(&said(r#"call send_buttons {"body": 5}"#))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("`send_buttons` with arguments that do not fit"),
        "{err}"
    );
    assert!(!err.is_retryable());
    stop.cancel();
}
