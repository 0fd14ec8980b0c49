//! The admin listener: /metrics (Prometheus text format, storage gauges refreshed on a timer),
//! /healthz (the process is alive), /readyz (storage answers and the gateway is not shutting
//! down), /config/status (the configuration in force and the last reload error), the status
//! page at `/`, the JSON API under /api (numbers, Test Connection, a control-loop pass on
//! demand, paused conversations, dead letters and undelivered replies, the audit log) and
//! /media (customer media). Every route checks `Host`; every
//! change refuses cross-site requests; all but the page, health and metrics need the token when
//! one is set.

mod actor;
mod api;
mod audit;
mod auth;
pub mod cli;
mod conversations;
mod guard;
mod media;
mod onboard;
mod page;
mod session;
mod store_gauges;
mod undelivered;

pub use api::{MetaView, NumberView, OPENAPI, effective_statuses, rfc3339};
pub use page::escape;

use crate::serve::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::Duration;

/// The admin router.
pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/api/numbers", get(api::numbers))
        .route(
            "/api/numbers/{phone_number_id}/disconnect",
            post(api::disconnect),
        )
        .route("/api/numbers/{phone_number_id}/connect", post(api::connect))
        .route("/api/numbers/{phone_number_id}/test", post(api::test))
        .route("/api/reconcile", post(api::reconcile))
        .route(
            "/api/numbers/{phone_number_id}/request_code",
            post(onboard::request_code),
        )
        .route(
            "/api/numbers/{phone_number_id}/verify_code",
            post(onboard::verify_code),
        )
        .route(
            "/api/numbers/{phone_number_id}/register",
            post(onboard::register),
        )
        .route("/api/signup", post(onboard::signup))
        .route(
            "/api/customers/{id}",
            axum::routing::delete(api::erase_customer),
        )
        .route("/api/conversations", get(conversations::list))
        .route(
            "/api/conversations/{phone_number_id}/{customer}/pause",
            post(conversations::pause),
        )
        .route(
            "/api/conversations/{phone_number_id}/{customer}/resume",
            post(conversations::resume),
        )
        .route("/api/dead-letters", get(undelivered::list))
        .route("/api/dead-letters/replay", post(undelivered::replay_all))
        .route("/api/dead-letters/{id}", get(undelivered::show))
        .route(
            "/api/dead-letters/{id}/replay",
            post(undelivered::replay_one),
        )
        .route("/api/replies", get(undelivered::replies))
        .route("/api/replies/retry", post(undelivered::retry_since))
        .route("/api/replies/{id}/retry", post(undelivered::retry_one))
        .route("/api/audit", get(audit::list))
        .route("/api/config", get(api::config))
        .route("/api/cluster", get(api::cluster))
        .route("/api/openapi.json", get(api::openapi))
        .route("/config/status", get(config_status))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let media = Router::new()
        .route("/media/{phone_number_id}/{media_id}", get(media::download))
        .route_layer(axum::Extension(media::Downloads::default()))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_media_token,
        ));
    Router::new()
        .route("/", get(page::index))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/api/session",
            post(session::sign_in).delete(session::sign_out),
        )
        .merge(protected)
        .merge(media)
        .fallback(api::not_found)
        // The last layer runs first: Host, then the cross-site rule, then the route's own.
        .layer(middleware::from_fn(guard::refuse_cross_site))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::require_known_host,
        ))
        .with_state(state)
}

/// How often the storage gauges (outbox backlog, last activity) are read: a scrape serves the
/// latest values and never waits on storage, so scrapes cannot load the database.
pub const STORE_GAUGES_EVERY: Duration = Duration::from_secs(5);

/// Refreshes the storage gauges every [`STORE_GAUGES_EVERY`] until the gateway drains.
pub fn spawn_store_gauges(st: Arc<AppState>) {
    let tracker = st.tracker.clone();
    tracker.spawn(async move {
        let mut every = tokio::time::interval(STORE_GAUGES_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = st.draining.cancelled() => break,
                _ = every.tick() => {}
            }
            let numbers: Vec<String> = st
                .snapshot
                .load()
                .config
                .numbers
                .iter()
                .map(|n| n.phone_number_id.to_string())
                .collect();
            store_gauges::refresh(&st.metrics, &st.store, &numbers, Duration::from_secs(2)).await;
        }
    });
}

async fn metrics(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    // Computed at each scrape from what `/api/numbers` shows, so the two always agree (memory
    // only: no storage read).
    api::record_status_metrics(&st);
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
