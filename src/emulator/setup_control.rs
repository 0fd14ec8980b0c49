//! Control routes for the Meta-side setup: expire a token, issue a new one, read a number's
//! verification code, mint an Embedded Signup code. Test and playground conveniences; Meta has
//! no such endpoints.

use super::state::State;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

pub(crate) fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/_emulator/tokens/expire", post(expire_token))
        .route("/_emulator/tokens", post(issue_token))
        .route(
            "/_emulator/numbers/{pnid}/verification_code",
            get(read_code),
        )
        .route("/_emulator/signup_codes", post(mint_signup_code))
}

/// `POST /_emulator/signup_codes`: what the Embedded Signup popup would hand the browser.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignupCodeRequest {
    pub waba_id: String,
}

/// The answer to `POST /_emulator/signup_codes`: a single-use code for `GET /oauth/access_token`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignupCode {
    pub code: String,
}

async fn mint_signup_code(
    AxState(st): AxState<Arc<State>>,
    Json(b): Json<SignupCodeRequest>,
) -> Response {
    if !st.cfg.numbers.iter().any(|n| n.waba_id == b.waba_id) {
        return not_found(format!("no emulated number belongs to WABA {}", b.waba_id));
    }
    Json(SignupCode {
        code: st.manage.mint_signup_code(&b.waba_id),
    })
    .into_response()
}

/// `POST /_emulator/tokens/expire` and the answer to `POST /_emulator/tokens`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenBody {
    pub token: String,
}

/// `POST /_emulator/tokens`: issue a new token for a number's WABA.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IssueToken {
    pub phone_number_id: String,
}

/// The answer to `GET /_emulator/numbers/{pnid}/verification_code`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerificationCode {
    pub code: String,
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": what }))).into_response()
}

async fn expire_token(AxState(st): AxState<Arc<State>>, Json(b): Json<TokenBody>) -> Response {
    if st.manage.expire(&b.token) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found("the emulator issued no such token".into())
    }
}

async fn issue_token(AxState(st): AxState<Arc<State>>, Json(b): Json<IssueToken>) -> Response {
    match st.number(&b.phone_number_id) {
        Some(n) => Json(TokenBody {
            token: st.manage.issue(&n.waba_id),
        })
        .into_response(),
        None => not_found(format!("no number {}", b.phone_number_id)),
    }
}

async fn read_code(AxState(st): AxState<Arc<State>>, Path(pnid): Path<String>) -> Response {
    if st.number(&pnid).is_none() {
        return not_found(format!("no number {pnid}"));
    }
    match st.manage.pending_code(&pnid) {
        Some(code) => Json(VerificationCode { code }).into_response(),
        None => not_found(format!(
            "no code is pending for number {pnid}: request one with POST /{{version}}/{pnid}/request_code"
        )),
    }
}
