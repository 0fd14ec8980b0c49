//! The Graph endpoints the gateway calls, with Meta's checks and answers:
//! `POST /{version}/{phone_number_id}/messages` (send, mark read + typing indicator).

use super::clock::now_ms;
use super::envelope::{self, Recipient, Status};
use super::error::GraphError;
use super::state::{SentMessage, State};
use crate::cloudapi::outbound::{MAX_TEXT_CHARS, Message};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

/// Longest `biz_opaque_callback_data` Meta accepts.
const MAX_CALLBACK_DATA_CHARS: usize = 512;
/// Message types a business may send; `template` is the only one allowed outside the window.
const SEND_TYPES: &[&str] = &[
    "text",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "reaction",
    "template",
];

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/{version}/{phone_number_id}/messages", post(messages))
        .fallback(unknown)
        .with_state(state)
}

/// Graph's answer to any path it does not serve.
async fn unknown(method: Method, uri: Uri) -> Response {
    let id = uri
        .path()
        .split('/')
        .find(|s| !s.is_empty() && !is_version(s));
    GraphError::unknown_object(&method.as_str().to_ascii_lowercase(), id.unwrap_or(""))
        .into_response()
}

/// `v23.0` and the like.
pub(super) fn is_version(s: &str) -> bool {
    let Some((major, minor)) = s.strip_prefix('v').and_then(|v| v.split_once('.')) else {
        return false;
    };
    [major, minor]
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn messages(
    AxState(state): AxState<Arc<State>>,
    Path((version, pnid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Once the request has reached Meta it is processed even if the caller hangs up while
    // waiting (the case `biz_opaque_callback_data` settles): the work runs in a task of its own,
    // which dropping this handler does not cancel.
    state.request_received();
    let work = tokio::spawn(async move {
        let latency = state.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        handle(&state, &version, &pnid, &headers, &body)
    });
    match work.await {
        Ok(Ok(answer)) => axum::Json(answer).into_response(),
        Ok(Err(err)) => err.into_response(),
        // The task panicked: Meta answers an unexpected failure with code 1.
        Err(_) => GraphError::unknown_error().into_response(),
    }
}

/// Meta's checks before any number's endpoint: the version, the token, then the number (a
/// stranger learns nothing about ids), then its registration when the emulator is strict.
pub(super) fn authorize(
    state: &State,
    version: &str,
    pnid: &str,
    headers: &HeaderMap,
) -> Result<(), GraphError> {
    if !is_version(version) {
        return Err(GraphError::unknown_path(version));
    }
    let token = bearer(headers);
    match state.number(pnid) {
        // Meta checks the token before the object: a stranger learns nothing about ids.
        None if token.is_some_and(|t| state.token_is_known(t)) => {
            return Err(GraphError::unknown_object("post", pnid));
        }
        None => return Err(GraphError::invalid_token()),
        Some(n) => {
            if let Some(e) = state.manage.token_error(token, &n.waba_id) {
                return Err(e);
            }
        }
    }
    if state.cfg.strict_registration && !state.manage.is_registered(pnid) {
        return Err(GraphError::not_registered());
    }
    Ok(())
}

fn handle(
    state: &State,
    version: &str,
    pnid: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, GraphError> {
    authorize(state, version, pnid, headers)?;
    let request: Value = serde_json::from_slice(body).map_err(|e| {
        GraphError::invalid_parameter(format!("The request body is not valid JSON: {e}"))
    })?;
    if !request.is_object() {
        return Err(GraphError::invalid_parameter(
            "The request body must be a JSON object.",
        ));
    }
    match request["messaging_product"].as_str() {
        Some("whatsapp") => {}
        Some(_) => {
            return Err(GraphError::invalid_parameter(
                "Param messaging_product must be 'whatsapp'.",
            ));
        }
        None => {
            return Err(GraphError::invalid_parameter(
                "The parameter messaging_product is required.",
            ));
        }
    }
    if request.get("status").is_some() {
        return mark_read(state, pnid, &request);
    }
    if let Some(fault) = state.take_fault(pnid) {
        return Err(fault.error());
    }
    send(state, pnid, request)
}

fn mark_read(state: &State, pnid: &str, request: &Value) -> Result<Value, GraphError> {
    if request["status"] != "read" {
        return Err(GraphError::invalid_parameter(
            "Param status must be 'read'.",
        ));
    }
    let Some(wamid) = request["message_id"].as_str() else {
        return Err(GraphError::invalid_parameter(
            "The parameter message_id is required.",
        ));
    };
    if let Some(indicator) = request.get("typing_indicator")
        && indicator["type"] != "text"
    {
        return Err(GraphError::invalid_parameter(
            "Param typing_indicator['type'] must be 'text'.",
        ));
    }
    if !state.is_inbound_message(pnid, wamid) {
        return Err(GraphError::invalid_parameter(format!(
            "Invalid message_id: no message {wamid} was received by this phone number."
        )));
    }
    state.record_read(wamid);
    Ok(json!({ "success": true }))
}

/// Who a send goes to: `to` (a phone, normalised to digits as Meta does) or `recipient` (BSUID).
fn recipient(request: &Value) -> Result<(String, bool), GraphError> {
    if let Some(to) = request["to"].as_str() {
        let wa_id: String = to.chars().filter(char::is_ascii_digit).collect();
        if wa_id.is_empty() {
            return Err(GraphError::invalid_parameter(format!(
                "Param to '{to}' is not a valid phone number."
            )));
        }
        return Ok((wa_id, false));
    }
    match request["recipient"].as_str() {
        Some(r) if !r.trim().is_empty() => Ok((r.to_owned(), true)),
        _ => Err(GraphError::invalid_parameter(
            "The parameter to is required.",
        )),
    }
}

/// The checks Meta makes on a message's content.
fn validate_content(request: &Value) -> Result<(&str, Option<String>), GraphError> {
    let Some(kind) = request["type"].as_str() else {
        return Err(GraphError::invalid_parameter(
            "The parameter type is required.",
        ));
    };
    if !SEND_TYPES.contains(&kind) {
        return Err(GraphError::invalid_parameter(format!(
            "Param type must be one of {{{}}}.",
            SEND_TYPES.join(", ")
        )));
    }
    if !request[kind].is_object() {
        return Err(GraphError::invalid_parameter(format!(
            "The parameter {kind} is required."
        )));
    }
    let text = if kind == "text" {
        let Some(body) = request["text"]["body"].as_str() else {
            return Err(GraphError::invalid_parameter(
                "The parameter text['body'] is required.",
            ));
        };
        if body.trim().is_empty() {
            return Err(GraphError::invalid_parameter(
                "Param text['body'] must not be empty.",
            ));
        }
        if body.chars().count() > MAX_TEXT_CHARS {
            return Err(GraphError::invalid_parameter(format!(
                "Param text['body'] must be at most {MAX_TEXT_CHARS} characters long."
            )));
        }
        Some(body.to_owned())
    } else {
        check_content(kind, request)?;
        None
    };
    match request.get("biz_opaque_callback_data") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.chars().count() <= MAX_CALLBACK_DATA_CHARS => {}
        Some(_) => {
            return Err(GraphError::invalid_parameter(format!(
                "Param biz_opaque_callback_data must be a string of at most \
                 {MAX_CALLBACK_DATA_CHARS} characters."
            )));
        }
    }
    Ok((kind, text))
}

/// Meta's checks on the types the gateway sends besides text: the shape of the type's object
/// (error 100), then its limits (error 131009). Templates and contacts are taken as they come.
fn check_content(kind: &str, request: &Value) -> Result<(), GraphError> {
    if matches!(kind, "template" | "contacts") {
        return Ok(());
    }
    let message: Message = serde_json::from_value(request.clone())
        .map_err(|e| GraphError::invalid_parameter(format!("Param {kind} is not valid: {e}")))?;
    message
        .check()
        .map_err(|e| GraphError::invalid_value(e.to_string()))
}

fn send(state: &State, pnid: &str, request: Value) -> Result<Value, GraphError> {
    let (to, by_user_id) = recipient(&request)?;
    let (kind, text) = validate_content(&request)?;
    // Media by id names an upload of this very number.
    let media = media_id(kind, &request);
    if let Some(id) = media
        && !state.media.owned_by(id, pnid)
    {
        return Err(GraphError::unknown_media(kind));
    }
    let media = media.and_then(|id| state.media.file(id));
    let now = now_ms();
    if kind != "template" && !state.window_open(pnid, &to, now / 1000) {
        return Err(GraphError::re_engagement());
    }
    let wamid = envelope::new_wamid();
    let callback = request["biz_opaque_callback_data"]
        .as_str()
        .map(str::to_owned);
    let sent = state.record_sent(SentMessage {
        seq: 0,
        phone_number_id: pnid.to_owned(),
        to: to.clone(),
        wamid: wamid.clone(),
        text,
        context_message_id: request["context"]["message_id"].as_str().map(str::to_owned),
        biz_opaque_callback_data: callback.clone(),
        body: request,
        received_at_ms: now,
        media,
    });
    if state.cfg.statuses {
        queue_statuses(state, &sent, by_user_id);
    }
    let contact = if by_user_id {
        json!({ "input": to, "user_id": to })
    } else {
        json!({ "input": to, "wa_id": to })
    };
    Ok(json!({
        "messaging_product": "whatsapp",
        "contacts": [contact],
        "messages": [{ "id": wamid }],
    }))
}

/// The media id a media message names, if it names one.
fn media_id<'a>(kind: &str, request: &'a Value) -> Option<&'a str> {
    let media = ["image", "video", "audio", "document", "sticker"].contains(&kind);
    media.then(|| request[kind]["id"].as_str()).flatten()
}

/// Queues `sent` then `delivered` for an accepted message, on the customer's ordered lane.
fn queue_statuses(state: &State, sent: &SentMessage, by_user_id: bool) {
    let Some(number) = state.number(&sent.phone_number_id) else {
        return;
    };
    // One service conversation per number and customer, as Meta reports it.
    let mut h = DefaultHasher::new();
    (&sent.phone_number_id, &sent.to).hash(&mut h);
    let conversation_id = format!("{:016x}{:016x}", h.finish(), h.finish().rotate_left(17));
    let recipient = if by_user_id {
        Recipient::UserId(&sent.to)
    } else {
        Recipient::WaId(&sent.to)
    };
    for status in ["sent", "delivered"] {
        let env = envelope::status(
            number,
            &Status {
                wamid: &sent.wamid,
                status,
                recipient,
                unix_secs: sent.received_at_ms / 1000,
                conversation_id: &conversation_id,
                biz_opaque_callback_data: sent.biz_opaque_callback_data.as_deref(),
            },
        );
        state.enqueue(envelope::order_key(&env), env);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        for (s, ok) in [
            ("v23.0", true),
            ("v1.10", true),
            ("23.0", false),
            ("v23", false),
            ("v.0", false),
            ("vx.1", false),
        ] {
            assert_eq!(is_version(s), ok, "{s}");
        }
    }
}
