//! The admin JSON API under `/api`: numbers with their status, disconnect / connect, the
//! configuration in force and the OpenAPI document. Errors are `{"error": "<what to do>"}`.
//! Never returns a secret.

use crate::audit::{self, AuditAction, AuditOutcome};
use crate::doctor::connection::{Target, test_connection};
use crate::ids::PhoneNumberId;
use crate::reconcile::{Desired, Effective, NumberState, NumberStatus, effective, record_metrics};
use crate::serve::state::AppState;
use crate::store::{NumberOverride, StoreError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// The OpenAPI 3.1 document of this API, kept beside the code it describes.
pub const OPENAPI: &str = include_str!("openapi.json");

/// A JSON error: one sentence saying what happened and what to do.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

pub(super) fn storage_error(e: &StoreError) -> Response {
    tracing::warn!(error = %e, "admin API storage read failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage is not answering: check /readyz and the gateway's logs, then try again",
    )
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
    /// The status in force: the file, then the operator, then Meta, then the sender.
    pub status: NumberState,
    /// Why the status is not `active`.
    pub status_reason: Option<String>,
    /// Since when the number has had this status (RFC 3339), when known.
    pub status_since: Option<String>,
    /// The business name Meta verified, the number as Meta shows it, and its quality rating
    /// (GREEN, YELLOW, RED, UNKNOWN), from the latest observation.
    pub verified_name: Option<String>,
    pub display_phone_number: Option<String>,
    pub quality_rating: Option<String>,
    /// A problem of the number's WABA that does not stop it receiving messages (so not its
    /// status), e.g. subscriptions no token of the WABA can read.
    pub waba_problem: Option<String>,
    /// The control loop's view from Graph; null until its first pass.
    pub status_from_meta: Option<MetaView>,
    /// When the latest message to this number was stored (RFC 3339), if ever.
    pub last_activity: Option<String>,
    /// Replies queued for this number and not yet accepted by Meta.
    pub queued_replies: i64,
}

/// What the control loop last observed of a number at Meta.
#[derive(Clone, Debug, Serialize)]
pub struct MetaView {
    pub status: NumberState,
    pub reason: Option<String>,
    /// RFC 3339.
    pub since: String,
    /// When it was observed (RFC 3339).
    pub checked_at: String,
}

/// Milliseconds since the Unix epoch as RFC 3339 (UTC, seconds).
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn secs(s: u64) -> String {
    rfc3339(
        i64::try_from(s)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000),
    )
}

/// Each declared number's status in force, without storage reads (the gauge uses it at every
/// scrape): `(phone_number_id, status)`, in the config's order.
pub fn effective_statuses(st: &AppState) -> Vec<(String, Effective, Option<NumberStatus>)> {
    let snapshot = st.snapshot.load_full();
    let disconnected = st.disconnected.all();
    let from_meta = st.reconcile.statuses();
    let threshold = snapshot.config.meta.reconcile.failed_sends;
    snapshot
        .config
        .numbers
        .iter()
        .map(|n| {
            let id = n.phone_number_id.to_string();
            let meta = from_meta.get(&n.phone_number_id).cloned();
            let failing = st.reconcile.send_health.failing(&id, threshold);
            // The override's time is filled in by `number_views`, which reads it from storage.
            let disc = disconnected.contains(&id).then_some(None);
            let eff = effective(n.enabled, disc, meta.as_ref(), failing.as_ref());
            (id, eff, meta)
        })
        .collect()
}

/// Sets the number status gauge from the statuses in force.
pub fn record_status_metrics(st: &AppState) {
    let all = effective_statuses(st);
    record_metrics(
        &st.metrics,
        all.iter().map(|(id, e, _)| (id.as_str(), e.status)),
    );
}

/// Every declared number, in the config's order.
pub async fn number_views(st: &AppState) -> Result<Vec<NumberView>, StoreError> {
    let snapshot = st.snapshot.load_full();
    let overrides: HashMap<String, NumberOverride> = st
        .store
        .number_overrides()
        .await?
        .into_iter()
        .map(|o| (o.phone_number_id.clone(), o))
        .collect();
    let queued = st.store.queued_replies().await?;
    let statuses = effective_statuses(st);
    let ids: Vec<String> = statuses.iter().map(|(id, _, _)| id.clone()).collect();
    let last_received = st.store.last_received_by_number(&ids).await?;
    let mut out = Vec::with_capacity(snapshot.config.numbers.len());
    for (n, (id, mut eff, meta)) in snapshot.config.numbers.iter().zip(statuses) {
        let is_disconnected = n.enabled && st.disconnected.contains(&id);
        let over = overrides.get(&id);
        if is_disconnected {
            eff.since = over.map(|o| u64::try_from(o.changed_at / 1000).unwrap_or(0));
        }
        out.push(NumberView {
            display_name: n.display_name.clone(),
            agent: n.agent.clone(),
            enabled: n.enabled,
            disconnected: st.disconnected.contains(&id),
            override_changed_at: over.map(|o| rfc3339(o.changed_at)),
            override_reason: over
                .filter(|o| o.disconnected)
                .and_then(|o| o.reason.clone()),
            status: eff.status,
            status_reason: eff.reason,
            status_since: eff.since.map(secs),
            verified_name: meta.as_ref().and_then(|m| m.verified_name.clone()),
            display_phone_number: meta.as_ref().and_then(|m| m.display_phone_number.clone()),
            quality_rating: meta.as_ref().and_then(|m| m.quality_rating.clone()),
            waba_problem: meta.as_ref().and_then(|m| m.waba_problem.clone()),
            status_from_meta: meta.map(|m| MetaView {
                status: m.status,
                reason: m.reason,
                since: secs(m.since),
                checked_at: secs(m.checked_at),
            }),
            last_activity: last_received.get(&id).copied().map(rfc3339),
            queued_replies: queued.get(&id).copied().unwrap_or(0),
            phone_number_id: id,
        });
    }
    Ok(out)
}

pub(super) async fn numbers(State(st): State<Arc<AppState>>) -> Response {
    // Serialised straight from the views: through a `json!` tree, 10,000 numbers cost tens of
    // MiB at each call.
    #[derive(Serialize)]
    struct Numbers {
        numbers: Vec<NumberView>,
    }
    match number_views(&st).await {
        Ok(numbers) => Json(Numbers { numbers }).into_response(),
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
        "reconcile": st.reconcile.last().map(|r| json!({
            "mode": r.mode,
            "finished_at": secs(r.finished_at),
            "pending": r.pending.len(),
            "error": r.error,
            "read_failures": r.read_failures,
        })),
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

async fn set_disconnected(
    st: &AppState,
    id: &str,
    disconnected: bool,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let action = if disconnected {
        AuditAction::NumberDisconnect
    } else {
        AuditAction::NumberConnect
    };
    let entry = audit::entry(super::actor::actor(st, headers), action, Some(id));
    let (response, outcome, detail) = change_override(st, id, disconnected, body).await;
    audit::record(&st.store, audit::ended(entry, outcome, detail)).await;
    response
}

/// Disconnects or connects `id`: the answer, and how it ended for the audit log.
async fn change_override(
    st: &AppState,
    id: &str,
    disconnected: bool,
    body: &Bytes,
) -> (Response, AuditOutcome, String) {
    if !st.snapshot.load().numbers.contains_key(id) {
        return (
            unknown_number(id),
            AuditOutcome::Refused,
            "unknown number".into(),
        );
    }
    let reason = match reason(body) {
        Ok(r) => r,
        Err(message) => {
            let r = error(StatusCode::BAD_REQUEST, message.clone());
            return (r, AuditOutcome::Refused, message);
        }
    };
    if let Err(e) = st
        .disconnected
        .set(&st.writer, id, disconnected, reason.as_deref())
        .await
    {
        tracing::warn!(error = %e, phone_number_id = %id, "number override not stored");
        let r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the change could not be stored, so nothing changed: check /readyz and the logs, \
             then try again",
        );
        return (r, AuditOutcome::Failed, e.to_string());
    }
    tracing::info!(phone_number_id = %id, disconnected, reason = ?reason, "number override changed");
    let detail = reason.map_or_else(|| "no reason given".to_owned(), |r| format!("reason: {r}"));
    let response = match number_views(st).await {
        Ok(views) => match views.into_iter().find(|v| v.phone_number_id == id) {
            Some(view) => Json(view).into_response(),
            None => unknown_number(id),
        },
        Err(e) => storage_error(&e),
    };
    (response, AuditOutcome::Ok, detail)
}

pub(super) async fn disconnect(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    set_disconnected(&st, &id, true, &headers, &body).await
}

pub(super) async fn connect(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    set_disconnected(&st, &id, false, &headers, &body).await
}

/// Test Connection: every check of one number against Meta, the webhook path and its agent.
/// Answers 200 with the report whether the checks pass or not; `ok` says which.
pub(super) async fn test(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let snapshot = st.snapshot.load_full();
    let Some(number) = snapshot.numbers.get(id.as_str()) else {
        return unknown_number(&id);
    };
    let desired = Desired::from_config(&snapshot.config);
    let Some(declared) = desired.number(&PhoneNumberId::from(id.as_str())) else {
        return unknown_number(&id);
    };
    let target = Target {
        client: &snapshot.graph,
        desired: &desired,
        number: declared,
        agent_name: &number.agent_name,
        agent: number.agent.agent(),
        probe_url: st.reconcile.probe_url(&snapshot.config),
        app_secret: snapshot.config.meta.app_secret.expose(),
    };
    let report = test_connection(&target).await;
    tracing::info!(phone_number_id = %id, ok = report.ok, "Test Connection run");
    Json(report).into_response()
}

/// Runs a control-loop pass now (plan, apply when allowed, statuses) and answers its report
/// with the numbers as `GET /api/numbers` shows them afterwards.
pub(super) async fn reconcile(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let entry = audit::entry(
        super::actor::actor(&st, &headers),
        AuditAction::ReconcileRun,
        None,
    );
    let Some(report) = st.reconcile.run_now().await else {
        let e = audit::ended(
            entry,
            AuditOutcome::Failed,
            "the control loop is not running",
        );
        audit::record(&st.store, e).await;
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the control loop is not running (the gateway is shutting down): try again once it is up",
        );
    };
    let (outcome, detail) = match &report.error {
        None => (
            AuditOutcome::Ok,
            format!(
                "{:?}: {} applied, {} pending",
                report.mode,
                report.applied.len(),
                report.pending.len()
            ),
        ),
        Some(e) => (AuditOutcome::Failed, e.clone()),
    };
    audit::record(&st.store, audit::ended(entry, outcome, detail)).await;
    match number_views(&st).await {
        Ok(views) => Json(json!({ "report": report, "numbers": views })).into_response(),
        Err(e) => storage_error(&e),
    }
}

pub(super) async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such admin route: GET /api/openapi.json lists them",
    )
}

/// `DELETE /api/customers/{id}`: erases every stored row of the customer (a wa_id or a BSUID) on
/// every number; an opt-out in force is kept under a keyed digest. Answers the rows deleted per
/// table.
pub async fn erase_customer(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let who = super::actor::actor(&st, &headers);
    // The customer's id is personal data the erasure removes: the log keeps no copy of it.
    let entry = audit::entry(who, AuditAction::CustomerErase, None);
    let id = match crate::store::CustomerId::parse(&id) {
        Ok(id) => id,
        Err(e) => {
            let ended = audit::ended(entry, AuditOutcome::Refused, e.to_string());
            audit::record(&st.store, ended).await;
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let erased = crate::customer::erase_in_gateway(&st, &id).await;
    let ended = match &erased {
        Ok(e) => audit::ended(entry, AuditOutcome::Ok, format!("{} row(s)", e.total())),
        Err(e) => audit::ended(entry, AuditOutcome::Failed, e.to_string()),
    };
    audit::record(&st.store, ended).await;
    match erased {
        Ok(erased) => Json(json!({
            "customer": id.as_str(),
            "rows": erased.total(),
            "deleted": erased.deleted,
            "opt_out_kept": !erased.opt_outs_kept.is_empty(),
        }))
        .into_response(),
        Err(e) => storage_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
