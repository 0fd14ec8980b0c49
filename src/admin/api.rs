//! The admin JSON API under `/api`: numbers with their status, disconnect / connect, the
//! configuration in force and the OpenAPI document. Errors are `{"error": "<what to do>"}`.
//! Never returns a secret.

use crate::state::AppState;
use crate::store::StoreError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// The OpenAPI 3.1 document of this API, kept beside the code it describes.
pub const OPENAPI: &str = include_str!("openapi.json");

/// A JSON error: one sentence saying what happened and what to do.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn storage_error(e: &StoreError) -> Response {
    tracing::warn!(error = %e, "admin API storage read failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage is not answering: check /readyz and the gateway's logs, then try again",
    )
}

/// A number's status as the status page shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NumberStatus {
    Active,
    Inactive,
    Error,
}

impl NumberStatus {
    /// `Active`, `Inactive`, `Error`.
    pub fn label(self) -> &'static str {
        match self {
            NumberStatus::Active => "Active",
            NumberStatus::Inactive => "Inactive",
            NumberStatus::Error => "Error",
        }
    }
}

/// What Meta says about a number (the reconciler's observation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MetaStatus {
    pub status: NumberStatus,
    pub reason: Option<String>,
}

/// HOOK for the reconciler: its observed status of a number plugs in here. Until it exists
/// this is `None`, shown as `status_from_meta: null`, and a number's status comes from the
/// config and the operator alone.
fn status_from_meta(_st: &AppState, _phone_number_id: &str) -> Option<MetaStatus> {
    None
}

/// The status shown: what the operator decided wins over what Meta says.
pub fn status(
    enabled: bool,
    disconnected: bool,
    from_meta: Option<&MetaStatus>,
) -> (NumberStatus, Option<String>) {
    if !enabled {
        return (
            NumberStatus::Inactive,
            Some("disabled in the config".into()),
        );
    }
    if disconnected {
        return (NumberStatus::Inactive, Some("disconnected".into()));
    }
    match from_meta {
        Some(m) => (m.status, m.reason.clone()),
        None => (NumberStatus::Active, None),
    }
}

/// One declared number, as `GET /api/numbers` and the status page show it.
#[derive(Clone, Debug, Serialize)]
pub struct NumberView {
    pub phone_number_id: String,
    pub display_name: String,
    pub agent: String,
    pub enabled: bool,
    pub disconnected: bool,
    /// When it was last disconnected or connected (RFC 3339), if ever.
    pub override_changed_at: Option<String>,
    /// What the operator said when disconnecting it.
    pub override_reason: Option<String>,
    pub status: NumberStatus,
    /// Why the status is not `active`.
    pub status_reason: Option<String>,
    /// The reconciler's view from Graph; always null until the reconciler reports it.
    pub status_from_meta: Option<MetaStatus>,
    /// When the latest message to this number was stored (RFC 3339), if ever.
    pub last_activity: Option<String>,
    /// Replies queued for this number and not yet accepted by Meta.
    pub queued_replies: i64,
}

/// Milliseconds since the Unix epoch as RFC 3339 (UTC, seconds).
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Every declared number, in the config's order.
pub async fn number_views(st: &AppState) -> Result<Vec<NumberView>, StoreError> {
    let snapshot = st.snapshot.load_full();
    let disconnected = st.disconnected.all();
    let overrides = st.store.number_overrides().await?;
    let queued = st.store.queued_replies().await?;
    let mut out = Vec::with_capacity(snapshot.config.numbers.len());
    for n in &snapshot.config.numbers {
        let id = n.phone_number_id.to_string();
        let is_disconnected = disconnected.contains(&id);
        let from_meta = status_from_meta(st, &id);
        let (status, status_reason) = status(n.enabled, is_disconnected, from_meta.as_ref());
        let last = st.store.last_received_at(&id).await?;
        let over = overrides.iter().find(|o| o.phone_number_id == id);
        out.push(NumberView {
            display_name: n.display_name.clone(),
            agent: n.agent.clone(),
            enabled: n.enabled,
            disconnected: is_disconnected,
            override_changed_at: over.map(|o| rfc3339(o.changed_at)),
            override_reason: over
                .filter(|o| o.disconnected)
                .and_then(|o| o.reason.clone()),
            status,
            status_reason,
            status_from_meta: from_meta,
            last_activity: last.map(rfc3339),
            queued_replies: queued.get(&id).copied().unwrap_or(0),
            phone_number_id: id,
        });
    }
    Ok(out)
}

pub(super) async fn numbers(State(st): State<Arc<AppState>>) -> Response {
    match number_views(&st).await {
        Ok(views) => Json(json!({ "numbers": views })).into_response(),
        Err(e) => storage_error(&e),
    }
}

/// The configuration in force, as far as the state knows it.
pub fn config_view(st: &AppState) -> serde_json::Value {
    let snapshot = st.snapshot.load();
    let config = &snapshot.config;
    let status = st.config_status();
    json!({
        "version": config.version,
        "summary": crate::config::summary(config),
        "sha256": status.sha256,
        "loaded_at": status.loaded_at.map(|s| rfc3339(s as i64 * 1000)),
        "last_reload_error": status.last_reload_error,
    })
}

pub(super) async fn config(State(st): State<Arc<AppState>>) -> Response {
    Json(config_view(&st)).into_response()
}

/// This replica: its id, whether it leads, the conversations it holds.
pub(super) async fn cluster(State(st): State<Arc<AppState>>) -> Response {
    Json(json!({
        "replica": st.leadership.replica(),
        "leader": st.leadership.is_leader(),
        "storage": st.store.kind(),
        "conversation_leases": st.metrics.conversation_leases.get(),
    }))
    .into_response()
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

fn unknown_number(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "phone number id {id} is not served by this gateway: GET /api/numbers lists the \
             declared ones"
        ),
    )
}

/// An optional `{"reason": "…"}` body; anything else is refused with what to send instead.
fn reason(body: &Bytes) -> Result<Option<String>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        reason: Option<String>,
    }
    serde_json::from_slice::<Body>(body)
        .map(|b| b.reason.map(|r| r.chars().take(500).collect()))
        .map_err(|e| format!("send an empty body or {{\"reason\": \"…\"}}: {e}"))
}

async fn set_disconnected(st: &AppState, id: &str, disconnected: bool, body: &Bytes) -> Response {
    if !st.snapshot.load().numbers.contains_key(id) {
        return unknown_number(id);
    }
    let reason = match reason(body) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if let Err(e) = st
        .disconnected
        .set(&st.writer, id, disconnected, reason.as_deref())
        .await
    {
        tracing::warn!(error = %e, phone_number_id = %id, "number override not stored");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the change could not be stored, so nothing changed: check /readyz and the logs, \
             then try again",
        );
    }
    tracing::info!(phone_number_id = %id, disconnected, reason = ?reason, "number override changed");
    match number_views(st).await {
        Ok(views) => match views.into_iter().find(|v| v.phone_number_id == id) {
            Some(view) => Json(view).into_response(),
            None => unknown_number(id),
        },
        Err(e) => storage_error(&e),
    }
}

pub(super) async fn disconnect(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    set_disconnected(&st, &id, true, &body).await
}

pub(super) async fn connect(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    set_disconnected(&st, &id, false, &body).await
}

/// Test Connection: nothing checks a number against Meta yet (the reconciler will).
pub(super) async fn test(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if !st.snapshot.load().numbers.contains_key(&id) {
        return unknown_number(&id);
    }
    error(
        StatusCode::NOT_IMPLEMENTED,
        "not available yet: run `wa-gateway status` and `wa-gateway plan` with this config to check the number against Meta",
    )
}

pub(super) async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such admin route: GET /api/openapi.json lists them",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_wins_over_meta() {
        let meta_error = MetaStatus {
            status: NumberStatus::Error,
            reason: Some("not registered".into()),
        };
        type Case<'a> = (
            bool,
            bool,
            Option<&'a MetaStatus>,
            NumberStatus,
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            (true, false, None, NumberStatus::Active, None),
            (
                false,
                false,
                None,
                NumberStatus::Inactive,
                Some("disabled in the config"),
            ),
            (
                true,
                true,
                None,
                NumberStatus::Inactive,
                Some("disconnected"),
            ),
            (
                false,
                true,
                None,
                NumberStatus::Inactive,
                Some("disabled in the config"),
            ),
            (
                true,
                false,
                Some(&meta_error),
                NumberStatus::Error,
                Some("not registered"),
            ),
            (
                true,
                true,
                Some(&meta_error),
                NumberStatus::Inactive,
                Some("disconnected"),
            ),
        ];
        for (enabled, disconnected, meta, want, reason) in cases {
            let (got, why) = status(*enabled, *disconnected, *meta);
            assert_eq!(got, *want, "{enabled} {disconnected} {meta:?}");
            assert_eq!(why.as_deref(), *reason);
        }
    }

    #[test]
    fn the_openapi_document_is_json() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20Z");
    }
}
