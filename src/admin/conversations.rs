//! The admin API's conversations: pause one for a person, resume it, list the paused ones
//! (`/api/conversations…`). The handoff itself is `crate::handoff`'s; this file reads requests
//! and shapes answers. Errors are `{"error": "<what to do>"}`.

use super::actor::actor;
use super::api::{error, rfc3339};
use crate::audit::{self, AuditAction, AuditOutcome};
use crate::handoff::{self, HandoffError, Pause, PauseRequest, PausedBy};
use crate::serve::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

/// One paused conversation as the API and the status page show it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PausedView {
    pub phone_number_id: String,
    pub customer: String,
    pub paused: bool,
    /// RFC 3339.
    pub paused_at: String,
    /// When it resumes by itself (RFC 3339).
    pub paused_until: String,
    pub reason: Option<String>,
    pub by: PausedBy,
}

impl From<&Pause> for PausedView {
    fn from(p: &Pause) -> Self {
        Self {
            phone_number_id: p.phone_number_id.clone(),
            customer: p.customer.clone(),
            paused: true,
            paused_at: rfc3339(p.paused_at),
            paused_until: rfc3339(p.paused_until),
            reason: p.reason.clone(),
            by: p.by,
        }
    }
}

/// Who may be named as the pauser through the API: the others are the gateway's own.
#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum ApiPauser {
    Operator,
    Cli,
}

/// `{"for": "2h", "reason": "…", "by": "operator" | "cli"}`, every field optional.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    #[serde(rename = "for")]
    for_: Option<crate::config::Duration>,
    reason: Option<String>,
    by: Option<ApiPauser>,
}

fn refused(e: &HandoffError) -> Response {
    match e {
        HandoffError::UnknownNumber(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        HandoffError::BadCustomer(_) | HandoffError::BadDuration(_) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        HandoffError::Storage(e) => {
            tracing::warn!(error = %e, "conversation change not stored");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the change could not be stored, so nothing changed: check /readyz and the \
                 logs, then try again",
            )
        }
    }
}

/// `POST /api/conversations/{phone_number_id}/{customer}/pause`.
pub(super) async fn pause(
    State(st): State<Arc<AppState>>,
    Path((number, customer)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = format!("{number}/{customer}");
    let entry = audit::entry(
        actor(&st, &headers),
        AuditAction::ConversationPause,
        Some(&target),
    );
    let (response, outcome, detail) = pause_now(&st, &number, &customer, body).await;
    audit::record(&st.store, audit::ended(entry, outcome, detail)).await;
    response
}

/// Pauses the conversation: the answer, and how it ended for the audit log.
async fn pause_now(
    st: &AppState,
    number: &str,
    customer: &str,
    body: Bytes,
) -> (Response, AuditOutcome, String) {
    let body: PauseBody = if body.iter().all(u8::is_ascii_whitespace) {
        PauseBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                let message = format!(
                    "send {{}} or {{\"for\": \"2h\", \"reason\": \"…\"}} (both optional): {e}"
                );
                let r = error(StatusCode::BAD_REQUEST, message.clone());
                return (r, AuditOutcome::Refused, message);
            }
        }
    };
    let request = PauseRequest {
        for_: body.for_.map(|d| d.get()),
        reason: body.reason,
        by: match body.by {
            Some(ApiPauser::Cli) => PausedBy::Cli,
            Some(ApiPauser::Operator) | None => PausedBy::Operator,
        },
    };
    match handoff::pause(st, number, customer, request).await {
        Ok(p) => {
            let detail = format!(
                "until {}{}",
                rfc3339(p.paused_until),
                p.reason
                    .as_deref()
                    .map(|r| format!("; reason: {r}"))
                    .unwrap_or_default()
            );
            let r = Json(PausedView::from(&p)).into_response();
            (r, AuditOutcome::Ok, detail)
        }
        Err(e) => (refused(&e), outcome_of(&e), e.to_string()),
    }
}

fn outcome_of(e: &HandoffError) -> AuditOutcome {
    match e {
        HandoffError::Storage(_) => AuditOutcome::Failed,
        _ => AuditOutcome::Refused,
    }
}

/// `POST /api/conversations/{phone_number_id}/{customer}/resume`.
pub(super) async fn resume(
    State(st): State<Arc<AppState>>,
    Path((number, customer)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let target = format!("{number}/{customer}");
    let entry = audit::entry(
        actor(&st, &headers),
        AuditAction::ConversationResume,
        Some(&target),
    );
    let resumed = handoff::resume(&st, &number, &customer).await;
    let ended = match &resumed {
        Ok(true) => audit::ended(entry, AuditOutcome::Ok, "resumed"),
        Ok(false) => audit::ended(entry, AuditOutcome::Ok, "was not paused"),
        Err(e) => audit::ended(entry, outcome_of(e), e.to_string()),
    };
    audit::record(&st.store, ended).await;
    match resumed {
        Ok(was_paused) => Json(json!({
            "phone_number_id": number,
            "customer": customer,
            "paused": false,
            "was_paused": was_paused,
        }))
        .into_response(),
        Err(e) => refused(&e),
    }
}

/// `GET /api/conversations?paused=true[&number=…]`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    paused: Option<bool>,
    number: Option<String>,
}

pub(super) async fn list(
    State(st): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "the query takes paused=true and optionally number=<phone_number_id>",
        );
    };
    if q.paused == Some(false) {
        return error(
            StatusCode::BAD_REQUEST,
            "only paused conversations are listed: ask with paused=true",
        );
    }
    match handoff::paused(&st, q.number.as_deref()).await {
        Ok(pauses) => {
            let views: Vec<PausedView> = pauses.iter().map(PausedView::from).collect();
            Json(json!({ "conversations": views })).into_response()
        }
        Err(e) => refused(&HandoffError::Storage(e)),
    }
}
