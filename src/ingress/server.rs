//! The webhook listener: GET verification handshake and signed POSTs. A POST is answered 200
//! only once everything in it is durable; a storage failure answers 503 so Meta redelivers.

use super::intake::Intake;
use super::probe;
use crate::cloudapi::envelope::{self, ChangeValue, Envelope, Handover};
use crate::cloudapi::{content, signature};
use crate::policy::KeywordKind;
use crate::serve::state::{AppState, Snapshot};
use crate::store::writer::WriterHandle;
use crate::store::{
    DeadLetter, InboxState, Keyword, NewInbound, OptAction, StatusUpdate, WebhookWrite,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;
use tracing::Instrument;

/// What the webhook handlers need.
#[derive(Clone)]
pub struct WebhookState {
    pub app: Arc<AppState>,
    pub writer: WriterHandle,
}

/// The webhook router: `GET /webhook` (handshake) and `POST /webhook`, whose body `intake`
/// reads within its limits first.
pub fn router(state: WebhookState, intake: Intake) -> Router {
    // Shared, not cloned per request: a clone of the state itself costs three atomic counts
    // (and their drops) on cache lines every core touches.
    let state = Arc::new(state);
    let receive = post(receive).layer(axum::middleware::from_fn_with_state(
        intake,
        super::intake::read_body,
    ));
    Router::new()
        .route("/webhook", get(verify).merge(receive))
        // The intake enforces the limit; this only lifts axum's default 2 MB one.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn verify(
    State(st): State<Arc<WebhookState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let snap = st.app.snapshot.load();
    let mode_ok = q.get("hub.mode").map(String::as_str) == Some("subscribe");
    let token_ok = q.get("hub.verify_token").is_some_and(|t| {
        bool::from(
            t.as_bytes()
                .ct_eq(snap.config.meta.verify_token.expose().as_bytes()),
        )
    });
    match (mode_ok && token_ok, q.get("hub.challenge")) {
        (true, Some(challenge)) => {
            tracing::info!("webhook verification handshake answered");
            (StatusCode::OK, challenge.clone()).into_response()
        }
        _ => {
            tracing::warn!(
                mode_ok,
                token_ok,
                "webhook verification refused: wrong hub.mode or hub.verify_token"
            );
            StatusCode::FORBIDDEN.into_response()
        }
    }
}

/// `POST /webhook` in its span: an HTTP server span (OpenTelemetry's HTTP conventions), the
/// root of the trace of every message in the body, made while anything could see it.
async fn receive(st: State<Arc<WebhookState>>, headers: HeaderMap, body: Bytes) -> Response {
    let span = crate::telemetry::span_if_seen(|| {
        tracing::info_span!(
            "webhook",
            bytes = body.len(),
            otel.name = "POST /webhook",
            otel.kind = "server",
            http.request.method = "POST",
            http.route = "/webhook",
            url.path = "/webhook",
            http.response.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        )
    });
    crate::telemetry::record_trace_id(&span);
    let response = handle(st, headers, body).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

async fn handle(State(st): State<Arc<WebhookState>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let metrics = &st.app.metrics;
    let snap = st.app.snapshot.load_full();
    let header = headers.get("x-hub-signature-256").map(|v| v.as_bytes());
    if let Err(e) = signature::verify(
        snap.config.meta.app_secret.expose().as_bytes(),
        header,
        &body,
    ) {
        metrics.webhooks.with_label_values(&["bad_signature"]).inc();
        tracing::warn!(error = %e, bytes = body.len(), "webhook refused: bad signature; nothing stored");
        return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
    }
    let parsed = envelope::parse(&body);
    if let Some(id) = parsed.as_ref().ok().and_then(probe::recognise) {
        // Test Connection's probe: it proved the path and the signature; nothing to store.
        metrics.webhooks.with_label_values(&["probe"]).inc();
        tracing::info!(probe = %id, "Test Connection probe webhook acknowledged");
        return (StatusCode::OK, [(probe::ECHO_HEADER, id)], "probe seen\n").into_response();
    }
    let (write, counted, handovers, result) = match parsed {
        Ok(env) => {
            let (write, counted, handovers) = to_write(&snap, env);
            (write, counted, handovers, "ok")
        }
        Err(e) => {
            tracing::warn!(error = %e, bytes = body.len(), "signed webhook is not a Cloud API envelope; kept as a dead letter and acknowledged");
            (
                WebhookWrite {
                    dead_letter: Some(DeadLetter {
                        reason: e.to_string(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    }),
                    ..Default::default()
                },
                Counted::new(),
                Vec::new(),
                "dead_letter",
            )
        }
    };
    match ingest(&st.app, &st.writer, write, &handovers).await {
        Ok(_) => {
            metrics.webhooks.with_label_values(&[result]).inc();
            for (number, kind) in &counted {
                metrics
                    .messages_in
                    .with_label_values(&[number.as_str(), kind])
                    .inc();
            }
            metrics
                .webhook_ack_seconds
                .observe(started.elapsed().as_secs_f64());
            StatusCode::OK.into_response()
        }
        Err(e) => {
            metrics.webhooks.with_label_values(&["storage_error"]).inc();
            tracing::error!(error = %e, "webhook not stored; answering 503 so Meta delivers it again");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable; retry later",
            )
                .into_response()
        }
    }
}

/// Commits `write` through `writer`, then applies what follows its commit: the business app's
/// echoes pause their conversations, and the handovers (after the messages before them) pause
/// or resume theirs, each its own commit. Returns how many of its messages were new. A failure
/// answers 503, and Meta's redelivery applies it again (the messages are recognised; a pause by
/// handover in force is left as it is).
pub(super) async fn ingest(
    app: &AppState,
    writer: &WriterHandle,
    write: WebhookWrite,
    handovers: &[Handover],
) -> Result<usize, crate::store::StoreError> {
    let echoes = write.echoes.clone();
    // The statuses whose send spans get a child once committed (none while tracing is off),
    // found by the callback data the send carried.
    let statuses: Vec<(String, String, String)> = if crate::telemetry::enabled() {
        let status = |s: &StatusUpdate| {
            let callback = s.callback.clone()?;
            Some((callback, s.wamid.clone(), s.status.as_str().to_owned()))
        };
        write.statuses.iter().filter_map(status).collect()
    } else {
        Vec::new()
    };
    let commit = crate::telemetry::span_if_on(|| {
        tracing::info_span!(
            "commit",
            otel.name = "inbox commit",
            messaging.system = "whatsapp",
            messaging.operation.type = "send",
            messaging.batch.message_count = write.messages.len(),
        )
    });
    let new = writer.submit(write).instrument(commit).await?;
    super::echoes::pause_for_people(app, &echoes).await?;
    for h in handovers {
        crate::handoff::handover(app, h)
            .await
            .map_err(|e| crate::store::StoreError::Batch(format!("handover not applied: {e}")))?;
    }
    for (callback, wamid, status) in &statuses {
        crate::telemetry::propagate::settled(callback, wamid, status);
    }
    Ok(new)
}

/// Inbound messages by (number label, type label), counted once their webhook is committed.
type Counted = Vec<(String, &'static str)>;

/// The compliance keyword a message to be answered is, if the whole message is one: the commit
/// records the opt-out (or opt-in) with the message.
fn keyword(snap: &Snapshot, row: &NewInbound) -> Option<Keyword> {
    if row.state != InboxState::Received {
        return None;
    }
    let hit = snap.keywords.classify(row.text.as_deref()?)?;
    let action = match hit.kind {
        KeywordKind::Stop => OptAction::Stop,
        KeywordKind::Resume => OptAction::Resume,
    };
    Some(Keyword {
        action,
        keyword: hit.keyword,
    })
}

/// The detail of a customer message that came on the `standby` field.
pub const STANDBY: &str = "standby: another app handles the conversation";

/// Turns a parsed envelope into the rows to commit, and the handovers of declared numbers to
/// apply once they are committed.
pub(super) fn to_write(snap: &Snapshot, env: Envelope) -> (WebhookWrite, Counted, Vec<Handover>) {
    let mut write = WebhookWrite::default();
    let mut counted = Counted::new();
    let mut handovers = Vec::new();
    for entry in env.entry {
        for change in entry.changes {
            let (value, standby) = match change.value {
                ChangeValue::Messages(v) => (v, false),
                // Conversation routing: another app (e.g. Meta's Business Agent) is in control.
                ChangeValue::Standby(v) => (v, true),
                ChangeValue::Handover(h) if snap.numbers.contains_key(&h.phone_number_id) => {
                    handovers.push(h);
                    continue;
                }
                ChangeValue::Handover(h) => {
                    tracing::warn!(phone_number_id = %h.phone_number_id, "handover for a phone_number_id this gateway does not declare; acknowledged, not applied");
                    continue;
                }
                ChangeValue::Echoes(v) => {
                    write.echoes.extend(super::echoes::rows(snap, &v));
                    continue;
                }
                // Coexistence's past chats and contacts, sent when a number joins: recorded in
                // the log, never a turn.
                ChangeValue::Other(_)
                    if matches!(change.field.as_str(), "history" | "smb_app_state_sync") =>
                {
                    tracing::info!(field = %change.field, waba_id = %entry.id, "coexistence sync webhook acknowledged and recorded; nothing is answered");
                    continue;
                }
                ChangeValue::Other(_) => {
                    tracing::debug!(field = %change.field, waba_id = %entry.id, "webhook field acknowledged, not handled");
                    continue;
                }
            };
            let pnid = value.metadata.phone_number_id.to_string();
            let number = snap.numbers.get(pnid.as_str());
            if number.is_none() && !value.messages.is_empty() {
                tracing::warn!(phone_number_id = %pnid, "message for a phone_number_id this gateway does not declare; recorded, not answered");
            }
            for e in &value.errors {
                tracing::warn!(phone_number_id = %pnid, code = e.code, title = ?e.title, "Meta reported an error in a webhook");
            }
            for msg in &value.messages {
                counted.push((
                    if number.is_some() {
                        pnid.clone()
                    } else {
                        "unknown".to_owned()
                    },
                    if number.is_some() {
                        msg.content.label()
                    } else {
                        "unrouted"
                    },
                ));
                let mut row = message_row(snap, number, &pnid, &value, msg);
                if standby && row.state == InboxState::Received {
                    // Stored as the conversation's history, never answered: the app in control
                    // answers, keywords included (a confirmation from here would be a service
                    // message, which takes the conversation over from that app).
                    row.state = InboxState::Done;
                    row.detail = Some(STANDBY.to_owned());
                    row.keyword = None;
                }
                row.traceparent = crate::telemetry::traceparent();
                write.messages.push(row);
            }
            if standby {
                // Statuses of what the app in control sent: nothing of ours to settle.
                continue;
            }
            for s in &value.statuses {
                let first_error = s.errors.first();
                write.statuses.push(StatusUpdate {
                    phone_number_id: pnid.clone(),
                    recipient_id: s.recipient_id.clone(),
                    recipient_user_id: s.recipient_user_id.clone(),
                    wamid: s.id.to_string(),
                    status: s.status.clone(),
                    meta_ts: s.timestamp,
                    callback: s.biz_opaque_callback_data.clone(),
                    error_code: first_error.map(|e| e.code),
                    error_title: first_error
                        .and_then(|e| e.title.clone().or_else(|| e.message.clone())),
                });
            }
        }
    }
    (write, counted, handovers)
}

/// The row of one customer message to `number` (`None`: not declared), with the state it is
/// stored in and the compliance keyword it is.
fn message_row(
    snap: &Snapshot,
    number: Option<&Arc<crate::serve::state::NumberRuntime>>,
    pnid: &str,
    value: &envelope::MessagesValue,
    msg: &envelope::InboundMessage,
) -> NewInbound {
    let customer = msg.customer_key(&value.contacts);
    let contact = msg.contact(&value.contacts).or(value.contacts.first());
    let (state, detail) = match (number, &customer) {
        (None, _) => (
            InboxState::Unrouted,
            Some("phone_number_id not declared".to_owned()),
        ),
        (Some(_), None) => (
            InboxState::Skipped,
            Some("message carries no customer id".to_owned()),
        ),
        (Some(_), Some(_)) if msg.group_id.is_some() => (
            InboxState::Skipped,
            Some("group messages are not served".to_owned()),
        ),
        (Some(n), Some(_)) if !n.cfg.enabled => {
            (InboxState::Skipped, Some("number disabled".to_owned()))
        }
        (Some(_), Some(_)) => (InboxState::Received, None),
    };
    let text = content::render_text(msg);
    let mut row = NewInbound {
        wamid: msg.id.to_string(),
        phone_number_id: pnid.to_owned(),
        customer: customer.map(|c| c.0).unwrap_or_default(),
        wa_id: msg.from.as_ref().map(|w| w.to_string()),
        user_id: msg
            .from_user_id
            .as_ref()
            .map(|u| u.to_string())
            .or_else(|| contact.and_then(|c| c.user_id.as_ref().map(|u| u.to_string()))),
        customer_name: contact.and_then(|c| c.name.clone()),
        msg_type: msg.content.message_type(),
        text,
        payload: msg.raw.to_string(),
        meta_ts: msg.timestamp,
        state,
        detail,
        keyword: None,
        traceparent: None,
    };
    row.strip_nul();
    row.keyword = keyword(snap, &row);
    row
}
