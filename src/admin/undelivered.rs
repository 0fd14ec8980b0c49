//! The admin API's dead letters and undelivered replies: `/api/dead-letters` (list, show,
//! replay one or all) and `/api/replies` (list the failed or expired ones, retry one or those
//! failed since a time). The work is `ingress::replay`'s and `outbox::requeue`'s; this file
//! reads requests, audits each change and shapes answers. Errors are `{"error": "<what to do>"}`.

use super::actor::actor;
use super::api::{error, rfc3339, storage_error};
use super::audit::{limit, since_ms};
use crate::audit::{self, AuditAction, AuditOutcome};
use crate::ingress::replay::{self, ReplayError, Replayed};
use crate::outbox::requeue::{self, RetryRefused};
use crate::serve::state::AppState;
use crate::store::{DeadLetterRow, EndedFilter, EndedReply, OutboxState, ReplayOutcome};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

fn dead_letter_view(d: &DeadLetterRow, with_body: bool) -> serde_json::Value {
    let mut v = json!({
        "id": d.id,
        "received_at": rfc3339(d.received_at),
        "reason": d.reason,
        "bytes": d.body.len(),
        "replayed_at": d.replayed_at.map(rfc3339),
        "replay_outcome": d.replay_outcome,
        "replay_detail": d.replay_detail,
        "replays": d.replays,
    });
    if with_body {
        v["body"] = json!(d.body);
    }
    v
}

/// `?pending=true&limit=…`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeadLetterQuery {
    pending: Option<bool>,
    limit: Option<i64>,
}

/// `GET /api/dead-letters`: newest first, without their bodies.
pub(super) async fn list(
    State(st): State<Arc<AppState>>,
    query: Result<Query<DeadLetterQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "the query takes pending=true (only those never ingested) and limit=<1..1000>",
        );
    };
    let pending = q.pending.unwrap_or(false);
    match st.store.dead_letters(pending, limit(q.limit)).await {
        Ok(rows) => {
            let rows: Vec<_> = rows.iter().map(|d| dead_letter_view(d, false)).collect();
            Json(json!({ "dead_letters": rows })).into_response()
        }
        Err(e) => storage_error(&e),
    }
}

/// `GET /api/dead-letters/{id}`: with its body.
pub(super) async fn show(State(st): State<Arc<AppState>>, Path(id): Path<i64>) -> Response {
    match st.store.dead_letter(id).await {
        Ok(Some(d)) => Json(dead_letter_view(&d, true)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, ReplayError::NotFound(id).to_string()),
        Err(e) => storage_error(&e),
    }
}

fn replayed_detail(r: &Replayed) -> String {
    format!("{}; {} new message(s)", r.detail, r.new_messages)
}

fn replay_outcome(r: &Replayed) -> AuditOutcome {
    match r.outcome {
        ReplayOutcome::Ingested => AuditOutcome::Ok,
        ReplayOutcome::Unreadable => AuditOutcome::Refused,
    }
}

/// `POST /api/dead-letters/{id}/replay`.
pub(super) async fn replay_one(
    State(st): State<Arc<AppState>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    let who = actor(&st, &headers);
    let target = format!("dead_letter/{id}");
    let entry = audit::entry(who, AuditAction::DeadLetterReplay, Some(&target));
    match replay::replay(&st, id).await {
        Ok(r) => {
            audit::record(
                &st.store,
                audit::ended(entry, replay_outcome(&r), replayed_detail(&r)),
            )
            .await;
            Json(r).into_response()
        }
        Err(e @ ReplayError::NotFound(_)) => {
            audit::record(
                &st.store,
                audit::ended(entry, AuditOutcome::Refused, e.to_string()),
            )
            .await;
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(ReplayError::Storage(e)) => {
            audit::record(
                &st.store,
                audit::ended(entry, AuditOutcome::Failed, e.to_string()),
            )
            .await;
            storage_error(&e)
        }
    }
}

/// `POST /api/dead-letters/replay`: every one not yet ingested, oldest first.
pub(super) async fn replay_all(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let who = actor(&st, &headers);
    let entry = audit::entry(who, AuditAction::DeadLetterReplay, Some("dead_letter/all"));
    match replay::replay_all(&st).await {
        Ok(done) => {
            let ingested = done
                .iter()
                .filter(|r| r.outcome == ReplayOutcome::Ingested)
                .count();
            let new: usize = done.iter().map(|r| r.new_messages).sum();
            let detail = format!(
                "{} replayed, {ingested} ingested, {new} new message(s)",
                done.len()
            );
            audit::record(&st.store, audit::ended(entry, AuditOutcome::Ok, detail)).await;
            Json(json!({ "replayed": done })).into_response()
        }
        Err(e) => {
            audit::record(
                &st.store,
                audit::ended(entry, AuditOutcome::Failed, e.to_string()),
            )
            .await;
            match e {
                ReplayError::Storage(e) => storage_error(&e),
                other => error(StatusCode::NOT_FOUND, other.to_string()),
            }
        }
    }
}

fn reply_view(r: &EndedReply) -> serde_json::Value {
    json!({
        "id": r.id,
        "phone_number_id": r.phone_number_id,
        "customer": r.customer,
        "state": r.state.as_str(),
        "kind": r.kind.as_str(),
        "attempts": r.attempts,
        "error_code": r.error_code,
        "error_message": r.error_message,
        "text": r.text,
        "created_at": rfc3339(r.created_at),
        "ended_at": rfc3339(r.updated_at),
    })
}

/// `?state=failed|expired&since=1h&number=…&limit=…`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RepliesQuery {
    state: Option<String>,
    since: Option<String>,
    number: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/replies`: undelivered replies, the most recently ended first.
pub(super) async fn replies(
    State(st): State<Arc<AppState>>,
    query: Result<Query<RepliesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "the query takes state=failed|expired, since=<1h or an RFC 3339 time>, \
             number=<phone_number_id> and limit=<1..1000>",
        );
    };
    let states = match q.state.as_deref() {
        None => vec![OutboxState::Failed, OutboxState::Expired],
        Some("failed") => vec![OutboxState::Failed],
        Some("expired") => vec![OutboxState::Expired],
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("state={other:?}: ask for state=failed or state=expired"),
            );
        }
    };
    let since_ms = match since_ms(q.since.as_deref()) {
        Ok(s) => s,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let filter = EndedFilter {
        states,
        since_ms,
        number: q.number,
        limit: limit(q.limit),
    };
    match st.store.ended_replies(&filter).await {
        Ok(rows) => {
            let rows: Vec<_> = rows.iter().map(reply_view).collect();
            Json(json!({ "replies": rows })).into_response()
        }
        Err(e) => storage_error(&e),
    }
}

fn refused(e: &RetryRefused) -> Response {
    match e {
        RetryRefused::NotFound(_) | RetryRefused::UnknownNumber { .. } => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        RetryRefused::Storage(s) => storage_error(s),
        RetryRefused::ShuttingDown => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        _ => error(StatusCode::CONFLICT, e.to_string()),
    }
}

fn retry_outcome(e: &RetryRefused) -> AuditOutcome {
    if e.is_storage() {
        AuditOutcome::Failed
    } else {
        AuditOutcome::Refused
    }
}

/// `POST /api/replies/{id}/retry`: 200 once requeued; 409 with the reason when refused.
pub(super) async fn retry_one(
    State(st): State<Arc<AppState>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    let who = actor(&st, &headers);
    let target = format!("reply/{id}");
    let entry = audit::entry(who, AuditAction::ReplyRetry, Some(&target));
    match requeue::retry(&st, id).await {
        Ok(row) => {
            let detail = format!("requeued for {}", row.phone_number_id);
            audit::record(&st.store, audit::ended(entry, AuditOutcome::Ok, detail)).await;
            Json(json!({ "id": id, "state": row.state.as_str(), "requeued": true })).into_response()
        }
        Err(e) => {
            audit::record(
                &st.store,
                audit::ended(entry, retry_outcome(&e), e.to_string()),
            )
            .await;
            refused(&e)
        }
    }
}

/// `{"failed_since": "1h", "number": "…"}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    failed_since: String,
    number: Option<String>,
}

/// `POST /api/replies/retry`: every reply failed since a time, each checked on its own.
pub(super) async fn retry_since(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: RetryBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("send {{\"failed_since\": \"1h\"}} (and optionally \"number\"): {e}"),
            );
        }
    };
    let since = match since_ms(Some(&body.failed_since)) {
        Ok(s) => s,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let who = actor(&st, &headers);
    let items =
        match requeue::retry_failed_since(&st, since, body.number, super::audit::MAX_LIMIT).await {
            Ok(items) => items,
            Err(e) => return storage_error(&e),
        };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let target = format!("reply/{}", item.id);
        let entry = audit::entry(who, AuditAction::ReplyRetry, Some(&target));
        let (outcome, detail) = match &item.result {
            Ok(_) => (AuditOutcome::Ok, "requeued".to_owned()),
            Err(e) => (retry_outcome(e), e.to_string()),
        };
        audit::record(&st.store, audit::ended(entry, outcome, detail.clone())).await;
        out.push(json!({
            "id": item.id,
            "requeued": item.result.is_ok(),
            "reason": item.result.err().map(|e| e.to_string()),
        }));
    }
    Json(json!({ "replies": out })).into_response()
}
