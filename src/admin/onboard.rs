//! Onboarding over the admin API: `POST /api/signup` (the Embedded Signup code exchange),
//! `POST /api/numbers/{id}/request_code | verify_code | register`, and the status page's
//! "Connect with Facebook" launcher. Answers carry names and sentences, never a token.

use super::api::error;
use crate::audit::{self, AuditAction, AuditOutcome};
use crate::onboard::{OnboardError, Onboarding, SignupRequest, verify};
use crate::serve::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

const SIGNUP_JS: &str = include_str!("signup.js");

/// The status page's policy when the launcher is shown: Facebook's SDK script and its login
/// popup and frames are allowed, nothing else from outside.
pub(super) const CSP_WITH_SIGNUP: &str = "default-src 'none'; style-src 'unsafe-inline'; \
    script-src 'unsafe-inline' https://connect.facebook.net; connect-src 'self' \
    https://*.facebook.com https://*.facebook.net; frame-src https://*.facebook.com; \
    img-src https://*.facebook.com https://*.fbcdn.net; form-action 'self'; frame-ancestors 'none'";

/// The "Connect with Facebook" launcher, when `meta.embedded_signup.config_id` is set.
pub(super) fn launcher_html(st: &AppState) -> Option<String> {
    let snapshot = st.snapshot.load();
    let meta = &snapshot.config.meta;
    let signup = meta.embedded_signup.as_ref()?;
    let e = super::escape;
    Some(format!(
        "<section class=\"signup\" id=\"signup\" data-app-id=\"{}\" data-config-id=\"{}\" \
         data-graph-version=\"{}\"><h2>Add a number</h2>\
         <p>Connect a WhatsApp Business Account with Meta's Embedded Signup; the token is stored \
         encrypted and the entries to add to the config are shown here.</p>\
         <button type=\"button\" id=\"connect-facebook\">Connect with Facebook</button>\
         <p class=\"msg\" id=\"signup-msg\" role=\"status\" aria-live=\"polite\"></p>\
         <pre id=\"signup-yaml\" hidden></pre></section>\
         <script>{SIGNUP_JS}</script>\
         <script async defer crossorigin=\"anonymous\" src=\"https://connect.facebook.net/en_US/sdk.js\"></script>",
        e(&meta.app_id),
        e(&signup.config_id),
        e(&meta.api_version),
    ))
}

fn onboard_error(e: &OnboardError) -> Response {
    let message = e.to_string();
    match e {
        OnboardError::UnknownNumber(_) => error(StatusCode::NOT_FOUND, message),
        OnboardError::Cooldown { wait, .. } => {
            let secs = wait.as_secs().max(1);
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({ "error": message, "retry_after_secs": secs })),
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
        OnboardError::NoPin { .. } | OnboardError::Exists(_) => {
            error(StatusCode::CONFLICT, message)
        }
        OnboardError::Invalid(_) => error(StatusCode::BAD_REQUEST, message),
        OnboardError::Meta {
            code, unavailable, ..
        } => {
            let status = match unavailable {
                true => StatusCode::BAD_GATEWAY,
                false => StatusCode::UNPROCESSABLE_ENTITY,
            };
            (status, Json(json!({ "error": message, "meta_code": code }))).into_response()
        }
        OnboardError::Store(_)
        | OnboardError::Secret(crate::secrets::StoredSecretError::Store(_)) => {
            tracing::warn!(error = %message, "onboarding storage failure");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage is not answering, so nothing was recorded: check /readyz and the \
                 gateway's logs, then try again",
            )
        }
        OnboardError::Secret(_) => error(StatusCode::CONFLICT, message),
    }
}

/// An optional JSON body (empty means all defaults); the error says what shape to send.
fn body<T: for<'de> Deserialize<'de> + Default>(bytes: &Bytes, shape: &str) -> Result<T, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| format!("send {shape}: {e}"))
}

/// Records an onboarding action: `Ok(detail)` or the error (never the request's code or token).
async fn audit_onboard(
    st: &AppState,
    headers: &HeaderMap,
    action: AuditAction,
    target: &str,
    result: Result<String, &OnboardError>,
) {
    let entry = audit::entry(super::actor::actor(st, headers), action, Some(target));
    let ended = match result {
        Ok(detail) => audit::ended(entry, AuditOutcome::Ok, detail),
        Err(e) => {
            let outcome = match e {
                OnboardError::Store(_)
                | OnboardError::Secret(crate::secrets::StoredSecretError::Store(_))
                | OnboardError::Meta {
                    unavailable: true, ..
                } => AuditOutcome::Failed,
                _ => AuditOutcome::Refused,
            };
            audit::ended(entry, outcome, e.to_string())
        }
    };
    audit::record(&st.store, ended).await;
}

fn done(message: String) -> Response {
    Json(json!({ "ok": true, "message": message })).into_response()
}

/// `POST /api/signup` `{code, waba_id, phone_number_id?, name?}`.
pub(super) async fn signup(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let req: SignupRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "send {{\"code\": \"…\", \"waba_id\": \"…\", \"phone_number_id\": \"…\"}} \
                     (phone_number_id, name and replace optional): {e}"
                ),
            );
        }
    };
    let snapshot = st.snapshot.load_full();
    let ob = Onboarding {
        config: &snapshot.config,
        graph: &snapshot.graph,
        store: &st.store,
    };
    let result = ob.signup(&req).await;
    let detail = result
        .as_ref()
        .map(|o| format!("token stored as `{}` (key {})", o.name, o.key_id));
    audit_onboard(&st, &headers, AuditAction::Signup, &req.waba_id, detail).await;
    match result {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => onboard_error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RequestCode {
    method: String,
    language: String,
}

impl Default for RequestCode {
    fn default() -> Self {
        Self {
            method: "sms".into(),
            language: "en_US".into(),
        }
    }
}

/// `POST /api/numbers/{id}/request_code` `{method?: sms|voice, language?: en_US}`.
pub(super) async fn request_code(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let req: RequestCode = match body(
        &bytes,
        "{\"method\": \"sms\" | \"voice\", \"language\": \"en_US\"}",
    ) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let method = match verify::parse_method(&req.method) {
        Ok(m) => m,
        Err(e) => return onboard_error(&e),
    };
    let snapshot = st.snapshot.load_full();
    let ob = Onboarding {
        config: &snapshot.config,
        graph: &snapshot.graph,
        store: &st.store,
    };
    let result = ob.request_code(&id, method, &req.language).await;
    let detail = result.as_ref().map(|()| format!("by {}", req.method));
    audit_onboard(&st, &headers, AuditAction::NumberRequestCode, &id, detail).await;
    match result {
        Ok(()) => done(format!(
            "Meta is sending a verification code to number {id}; submit it with POST \
             /api/numbers/{id}/verify_code {{\"code\": \"…\"}}."
        )),
        Err(e) => onboard_error(&e),
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyCode {
    #[serde(default)]
    code: String,
}

/// `POST /api/numbers/{id}/verify_code` `{code}`.
pub(super) async fn verify_code(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let req: VerifyCode = match body(&bytes, "{\"code\": \"123456\"}") {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let snapshot = st.snapshot.load_full();
    let ob = Onboarding {
        config: &snapshot.config,
        graph: &snapshot.graph,
        store: &st.store,
    };
    let result = ob.verify_code(&id, &req.code).await;
    let detail = result.as_ref().map(|()| "verified".to_owned());
    audit_onboard(&st, &headers, AuditAction::NumberVerifyCode, &id, detail).await;
    match result {
        Ok(()) => done(format!(
            "Number {id} is verified; register it with POST /api/numbers/{id}/register."
        )),
        Err(e) => onboard_error(&e),
    }
}

/// `POST /api/numbers/{id}/register`: with the PIN from the file.
pub(super) async fn register(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let snapshot = st.snapshot.load_full();
    let ob = Onboarding {
        config: &snapshot.config,
        graph: &snapshot.graph,
        store: &st.store,
    };
    let result = ob.register(&id).await;
    let detail = result.as_ref().map(|()| "registered".to_owned());
    audit_onboard(&st, &headers, AuditAction::NumberRegister, &id, detail).await;
    match result {
        Ok(()) => done(format!("Number {id} is registered with the Cloud API.")),
        Err(e) => onboard_error(&e),
    }
}
