//! The admin listener: /metrics (Prometheus text format), /healthz (the process is alive),
//! /readyz (storage answers and the gateway is not shutting down), /config/status (the
//! configuration in force and the last reload error) and /media (customer media).

mod media;

use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;

/// The admin router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/config/status", get(config_status))
        .route("/media/{phone_number_id}/{media_id}", get(media::download))
        .with_state(state)
}

async fn metrics(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
}

/// The configuration in force (file hash, load time) and why the last reload was refused.
async fn config_status(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    axum::Json(st.config_status())
}

async fn readyz(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    if !st.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n");
    }
    if !st.store.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n");
    }
    (StatusCode::OK, "ready\n")
}
