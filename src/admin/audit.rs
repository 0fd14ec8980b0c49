//! `GET /api/audit`: the audit log, newest first (`?since=1h` or an RFC 3339 time, `limit`), and
//! the reading of a `since` that the other lists of the API share. Errors are
//! `{"error": "<what to do>"}`.

use super::api::{error, rfc3339};
use crate::audit::AuditEntry;
use crate::serve::state::AppState;
use crate::store::now_ms;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

/// The most entries one call answers.
pub const MAX_LIMIT: i64 = 1000;

/// `since` as milliseconds since the epoch: a duration back from now (`1h`, `30m`, `7d`) or an
/// RFC 3339 time; absent: the beginning.
pub fn since_ms(since: Option<&str>) -> Result<i64, String> {
    let Some(s) = since.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(0);
    };
    if let Ok(d) = humantime::parse_duration(s) {
        let back = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        return Ok(now_ms().saturating_sub(back));
    }
    match humantime::parse_rfc3339_weak(s) {
        Ok(t) => Ok(t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
        Err(_) => Err(format!(
            "since={s:?} is neither a duration (1h, 30m, 7d) nor an RFC 3339 time \
             (2026-12-04T10:00:00Z)"
        )),
    }
}

/// `limit` within 1..=[`MAX_LIMIT`], 100 when absent.
pub fn limit(limit: Option<i64>) -> i64 {
    limit.unwrap_or(100).clamp(1, MAX_LIMIT)
}

/// One entry as the API shows it.
fn view(e: &AuditEntry) -> serde_json::Value {
    json!({
        "id": e.id,
        "at": rfc3339(e.at),
        "actor": e.actor,
        "action": e.action_text,
        "target": e.target,
        "outcome": e.outcome,
        "detail": e.detail,
    })
}

/// `?since=…&limit=…`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    since: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/audit`.
pub(super) async fn list(
    State(st): State<Arc<AppState>>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "the query takes since=<1h or an RFC 3339 time> and limit=<1..1000>",
        );
    };
    let since = match since_ms(q.since.as_deref()) {
        Ok(s) => s,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match st.store.audit_entries(since, limit(q.limit)).await {
        Ok(entries) => {
            let entries: Vec<_> = entries.iter().map(view).collect();
            Json(json!({ "entries": entries })).into_response()
        }
        Err(e) => super::api::storage_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_time() {
        assert_eq!(since_ms(None), Ok(0));
        let hour_ago = since_ms(Some("1h")).unwrap();
        assert!((now_ms() - 3_600_000 - hour_ago).abs() < 5_000);
        assert_eq!(since_ms(Some("1970-01-01T00:00:01Z")), Ok(1000));
        assert!(since_ms(Some("yesterday")).is_err());
        assert_eq!(limit(None), 100);
        assert_eq!(limit(Some(0)), 1);
        assert_eq!(limit(Some(5000)), MAX_LIMIT);
    }
}
