//! A deterministic OpenAI-compatible chat-completions server under `/v1` for tests and the demo:
//! it answers what it was told ("[model] you said: … (history: n messages)"), or, when the
//! customer says `call <function> <json arguments>` and that function is among the request's
//! `tools`, calls it. It records each request, checks the bearer key when one is set and fails
//! on request, in OpenAI's error shape.

use super::EmulatorHandle;
use super::clock::now_ms;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// What the LLM endpoints share: the expected key, the requests seen, pending failures.
#[derive(Debug, Default)]
pub(crate) struct LlmState {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    api_key: Option<String>,
    requests: Vec<Value>,
    faults: VecDeque<u16>,
    seq: u64,
}

impl LlmState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) fn router(state: Arc<LlmState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .with_state(state)
}

impl EmulatorHandle {
    /// Every chat-completions request body the LLM endpoint accepted, in order.
    pub fn llm_requests(&self) -> Vec<Value> {
        self.llm.lock().requests.clone()
    }

    /// From now on `/v1/chat/completions` requires `Authorization: Bearer <key>` (None: any).
    pub fn set_llm_api_key(&self, key: Option<String>) {
        self.llm.lock().api_key = key;
    }

    /// The next chat-completions request fails with HTTP `status` (queued; one per call).
    pub fn push_llm_fault(&self, status: u16) {
        self.llm.lock().faults.push_back(status);
    }
}

/// An answer in OpenAI's error shape: the HTTP status and the body.
struct ApiError {
    status: StatusCode,
    body: Value,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// OpenAI's error body.
fn error(
    status: StatusCode,
    kind: &str,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> ApiError {
    let body =
        json!({ "error": { "message": message, "type": kind, "param": param, "code": code } });
    ApiError { status, body }
}

async fn chat_completions(
    State(state): State<Arc<LlmState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = check_key(&state, &headers) {
        return refused.into_response();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)",
            None,
            None,
        )
        .into_response();
    };
    let (seq, fault) = {
        let mut inner = state.lock();
        inner.requests.push(request.clone());
        inner.seq += 1;
        (inner.seq, inner.faults.pop_front())
    };
    if let Some(status) = fault {
        return fault_error(status).into_response();
    }
    match model_and_messages(&request) {
        Ok((model, messages)) => completion(seq, model, messages, &request["tools"]),
        Err(refused) => refused.into_response(),
    }
}

/// Refuses a request without the expected bearer key, when one is set, as OpenAI words it.
fn check_key(state: &LlmState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = state.lock().api_key.clone() else {
        return Ok(());
    };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            None,
            None,
        )),
        // Unlike OpenAI, not even a masked prefix of the wrong key is quoted back.
        Some(k) if k != key => Err(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Incorrect API key provided.",
            None,
            Some("invalid_api_key"),
        )),
        Some(_) => Ok(()),
    }
}

/// The error a queued fault fails a request with, HTTP `status`.
fn fault_error(status: u16) -> ApiError {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match status {
        StatusCode::TOO_MANY_REQUESTS => error(
            status,
            "requests",
            "Rate limit reached for requests (emulated).",
            None,
            Some("rate_limit_exceeded"),
        ),
        _ => error(
            status,
            "server_error",
            "The server had an error while processing your request (emulated).",
            None,
            None,
        ),
    }
}

/// The request's model and messages, or OpenAI's refusal when either is missing or empty.
fn model_and_messages(request: &Value) -> Result<(&str, &[Value]), ApiError> {
    let Some(model) = request["model"].as_str().filter(|m| !m.is_empty()) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "you must provide a model parameter",
            None,
            None,
        ));
    };
    let Some(messages) = request["messages"].as_array().filter(|m| !m.is_empty()) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "'messages' must be a non-empty array",
            Some("messages"),
            None,
        ));
    };
    Ok((model, messages))
}

/// The `chat.completion` object answering request number `seq`: a tool call when the last user
/// message asks for one of `tools`, else the deterministic text.
fn completion(seq: u64, model: &str, messages: &[Value], tools: &Value) -> Response {
    let prompt_tokens: usize = messages.iter().map(|m| words(&text_of(m))).sum();
    let (message, finish_reason, completion_tokens) = match tool_call(seq, messages, tools) {
        Some(call) => {
            let tokens = words(call["function"]["arguments"].as_str().unwrap_or_default());
            let message = json!({ "role": "assistant", "content": null, "tool_calls": [call] });
            (message, "tool_calls", tokens)
        }
        None => {
            let content = answer(model, messages);
            let tokens = words(&content);
            (
                json!({ "role": "assistant", "content": content }),
                "stop",
                tokens,
            )
        }
    };
    Json(json!({
        "id": format!("chatcmpl-emu-{seq}"),
        "object": "chat.completion",
        "created": now_ms() / 1000,
        "model": model,
        "choices": [{ "index": 0, "message": message, "finish_reason": finish_reason }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }))
    .into_response()
}

/// The tool call the last user message asks for (`call <name> <arguments>`), if `name` is
/// among the offered `tools`: OpenAI's shape, with the arguments as a JSON text (`{}` if none).
fn tool_call(seq: u64, messages: &[Value], tools: &Value) -> Option<Value> {
    let last = messages.iter().rev().find(|m| m["role"] == "user")?;
    let said = text_of(last);
    let rest = said.trim().strip_prefix("call ")?.trim_start();
    let (name, arguments) = rest.split_once(char::is_whitespace).unwrap_or((rest, "{}"));
    let offered = tools
        .as_array()?
        .iter()
        .any(|t| t["function"]["name"] == name);
    offered.then(|| {
        json!({ "id": format!("call_emu_{seq}"), "type": "function",
                "function": { "name": name, "arguments": arguments.trim() } })
    })
}

async fn models() -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{ "id": "emulator", "object": "model", "created": 0, "owned_by": "wa-gateway" }],
    }))
}

/// The deterministic answer: the last user message and how many user/assistant messages came
/// before it (system messages are not history).
fn answer(model: &str, messages: &[Value]) -> String {
    let last_user = messages.iter().rposition(|m| m["role"] == "user");
    let said = last_user.map(|i| text_of(&messages[i])).unwrap_or_default();
    let history = messages[..last_user.unwrap_or(messages.len())]
        .iter()
        .filter(|m| m["role"] == "user" || m["role"] == "assistant")
        .count();
    format!("[{model}] you said: {said} (history: {history} messages)")
}

/// A message's text: `content` as a string, or the text parts of a content array.
fn text_of(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_reveals_the_last_user_message_and_the_history() {
        let messages = vec![
            json!({"role": "system", "content": "be nice"}),
            json!({"role": "user", "content": "hi"}),
            json!({"role": "assistant", "content": "hello"}),
            json!({"role": "user", "content": [{"type": "text", "text": "where is"}, {"type": "text", "text": "my order"}]}),
        ];
        assert_eq!(
            answer("m1", &messages),
            "[m1] you said: where is my order (history: 2 messages)"
        );
    }

    #[test]
    fn calls_a_function_only_when_it_is_offered() {
        let tools = json!([{ "type": "function", "function": { "name": "send_buttons", "parameters": {} } }]);
        let said = |text: &str| vec![json!({ "role": "user", "content": text })];
        let call = tool_call(7, &said("call send_buttons {\"body\": \"Pick\"}"), &tools).unwrap();
        assert_eq!(call["id"], "call_emu_7");
        assert_eq!(call["function"]["name"], "send_buttons");
        assert_eq!(call["function"]["arguments"], "{\"body\": \"Pick\"}");
        let bare = tool_call(1, &said("call send_buttons"), &tools).unwrap();
        assert_eq!(bare["function"]["arguments"], "{}");
        assert!(
            tool_call(1, &said("call hand_off"), &tools).is_none(),
            "not offered"
        );
        assert!(
            tool_call(1, &said("call send_buttons"), &Value::Null).is_none(),
            "no tools"
        );
        assert!(tool_call(1, &said("please call send_buttons"), &tools).is_none());
    }

    #[test]
    fn answer_without_a_user_message_says_nothing() {
        let messages = vec![json!({"role": "system", "content": "x"})];
        assert_eq!(
            answer("m", &messages),
            "[m] you said:  (history: 0 messages)"
        );
    }

    #[tokio::test]
    async fn chat_completions_speaks_openai_shapes_and_checks_the_key() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let emu = super::super::start(Default::default(), listener, stop.clone())
            .await
            .unwrap();
        emu.set_llm_api_key(Some("sk-emu".into()));
        let url = format!("{}/v1/chat/completions", emu.url());
        let body = json!({ "model": "m", "messages": [{ "role": "user", "content": "hi" }] });
        let http = reqwest::Client::new();

        let resp = http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let err: Value = resp.json().await.unwrap();
        let fields: Vec<_> = err["error"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(fields, ["code", "message", "param", "type"]);
        assert!(
            emu.llm_requests().is_empty(),
            "refused requests are not recorded"
        );

        let resp = http
            .post(&url)
            .bearer_auth("sk-emu")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let ok: Value = resp.json().await.unwrap();
        assert_eq!(ok["object"], "chat.completion");
        assert_eq!(ok["choices"][0]["message"]["role"], "assistant");
        assert_eq!(
            ok["choices"][0]["message"]["content"],
            "[m] you said: hi (history: 0 messages)"
        );
        assert_eq!(ok["choices"][0]["finish_reason"], "stop");
        assert_eq!(ok["usage"]["total_tokens"], 1 + 7);
        assert_eq!(emu.llm_requests(), [body]);
        stop.cancel();
    }
}
