//! The status page's sign-in: `POST /api/session {"token": "…"}` checks the admin token and
//! answers with the session cookie; `DELETE /api/session` clears it. The token arrives in a JSON
//! body (never a URL) and is not kept.

use super::api::error;
use super::auth;
use crate::serve::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

fn secure(st: &AppState) -> bool {
    st.snapshot.load().config.listen.admin_tls.is_some()
}

/// `POST /api/session`: 204 with the cookie for the right token, 401 otherwise.
pub(super) async fn sign_in(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<SignIn>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "send {\"token\": \"<admin token>\"}",
        );
    };
    if st.snapshot.load().config.listen.admin_token.is_none() {
        // Nothing to sign in to: the page is open.
        return StatusCode::NO_CONTENT.into_response();
    }
    if !auth::is_admin_token(&st, &req.token) {
        tracing::info!("status page sign-in refused");
        return auth::refused(auth::Access::Wrong);
    }
    let cookie = auth::set_cookie(Some(&req.token), secure(&st));
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}

/// `DELETE /api/session`: clears the cookie.
pub(super) async fn sign_out(State(st): State<Arc<AppState>>) -> Response {
    let cookie = auth::set_cookie(None, secure(&st));
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}
