//! The control API under `/_emulator/` (JSON): play a customer, read what the gateway sent,
//! inject faults and latency, read delivery stats. Its wire types are shared with `client.rs`.

use super::faults::Fault;
use super::state::{SentMessage, State};
use super::webhook_queue::WebhookStats;
use axum::Json;
use axum::Router;
use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Longest a `/sent` long-poll may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// `POST /_emulator/customers/messages`: a customer writes a text, or sends any message object.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CustomerMessage {
    pub phone_number_id: String,
    /// The customer's wa_id (digits).
    pub from: String,
    /// The profile name shown in `contacts[].profile.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The text written; ignored when `message` is given.
    #[serde(default)]
    pub text: String,
    /// A whole message object (`{"type":"image","image":{"id":…}}`) instead of a text; the
    /// emulator fills `from`, `id` and `timestamp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<serde_json::Value>,
}

/// The answer to a customer message: the new message's id.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CustomerMessageAccepted {
    pub wamid: String,
}

/// `GET /_emulator/sent` query.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SentQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Only messages with a greater seq.
    #[serde(default)]
    pub after: u64,
    /// Wait up to this long for a first match (capped at 60 s).
    #[serde(default)]
    pub wait_ms: u64,
}

/// The answer to `GET /_emulator/sent`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SentPage {
    pub messages: Vec<SentMessage>,
    /// The seq of the last accepted message of any number or customer.
    pub last_seq: u64,
}

/// `POST /_emulator/latency`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Latency {
    pub ms: u64,
}

/// `GET /_emulator/stats`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct EmulatorStats {
    pub webhooks: WebhookStats,
    /// Messages accepted so far.
    pub sent: u64,
    pub last_seq: u64,
}

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/_emulator/customers/messages", post(customer_message))
        .route("/_emulator/envelopes", post(envelope))
        .route("/_emulator/sent", get(sent))
        .route("/_emulator/read_receipts", get(read_receipts))
        .route("/_emulator/faults", post(fault))
        .route("/_emulator/latency", post(latency))
        .route("/_emulator/stats", get(stats))
        .with_state(state)
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn customer_message(
    AxState(state): AxState<Arc<State>>,
    Json(m): Json<CustomerMessage>,
) -> Response {
    if state.number(&m.phone_number_id).is_none() {
        let known: Vec<&str> = state
            .cfg
            .numbers
            .iter()
            .map(|n| n.phone_number_id.as_str())
            .collect();
        return refuse(
            StatusCode::NOT_FOUND,
            format!(
                "phone_number_id {} is not served by this emulator; known: {}",
                m.phone_number_id,
                known.join(", ")
            ),
        );
    }
    if m.from.is_empty() || !m.from.bytes().all(|b| b.is_ascii_digit()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("from must be a wa_id (digits only), got {:?}", m.from),
        );
    }
    let name = m.name.as_deref().unwrap_or("Customer");
    let wamid = match m.message {
        Some(message) if message["type"].as_str().is_some_and(|t| !t.is_empty()) => {
            state.customer_sends(&m.phone_number_id, &m.from, name, message)
        }
        Some(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "message must be a message object with a `type`, e.g. \
                 {\"type\":\"image\",\"image\":{\"id\":\"…\"}}"
                    .into(),
            );
        }
        None => state.customer_says(&m.phone_number_id, &m.from, name, &m.text),
    };
    Json(CustomerMessageAccepted { wamid }).into_response()
}

async fn envelope(
    AxState(state): AxState<Arc<State>>,
    Json(env): Json<serde_json::Value>,
) -> StatusCode {
    state.deliver_envelope(env);
    StatusCode::ACCEPTED
}

async fn sent(AxState(state): AxState<Arc<State>>, Query(q): Query<SentQuery>) -> Json<SentPage> {
    let wait = Duration::from_millis(q.wait_ms).min(MAX_WAIT);
    let messages = state
        .wait_sent_after(q.phone_number_id.as_deref(), q.to.as_deref(), q.after, wait)
        .await;
    Json(SentPage {
        messages,
        last_seq: state.last_seq(),
    })
}

async fn read_receipts(AxState(state): AxState<Arc<State>>) -> Json<Vec<String>> {
    Json(state.read_receipts())
}

async fn fault(AxState(state): AxState<Arc<State>>, Json(f): Json<Fault>) -> StatusCode {
    state.push_fault(f);
    StatusCode::NO_CONTENT
}

async fn latency(AxState(state): AxState<Arc<State>>, Json(l): Json<Latency>) -> StatusCode {
    state.set_latency(Duration::from_millis(l.ms));
    StatusCode::NO_CONTENT
}

async fn stats(AxState(state): AxState<Arc<State>>) -> Json<EmulatorStats> {
    let last_seq = state.last_seq();
    Json(EmulatorStats {
        webhooks: state.webhook_stats(),
        sent: last_seq,
        last_seq,
    })
}
