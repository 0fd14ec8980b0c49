//! The admin bearer token: when `listen.admin_token` is set, `/api/*`, `/media/*` and the status
//! page's data need `Authorization: Bearer <token>`, compared in constant time. Read from the
//! snapshot on every request, so a reload that changes the token takes effect at once.

use super::api::error;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What a request's credentials amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token is configured: everything is open.
    Open,
    /// The right token was presented.
    Granted,
    /// A token is configured and none was presented.
    Missing,
    /// A token was presented and it is not the configured one.
    Wrong,
}

impl Access {
    /// Whether the request may proceed.
    pub fn allowed(self) -> bool {
        matches!(self, Access::Open | Access::Granted)
    }
}

/// Equal in constant time whatever the lengths: both sides are hashed first, so neither the
/// content nor the length of the configured token leaks through timing.
fn same_token(given: &str, expected: &str) -> bool {
    Sha256::digest(given.as_bytes())
        .ct_eq(&Sha256::digest(expected.as_bytes()))
        .into()
}

/// The token of an `Authorization: Bearer …` header, if there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Checks `presented` against the token configured now.
pub fn check(st: &AppState, presented: Option<&str>) -> Access {
    let snapshot = st.snapshot.load();
    let Some(expected) = &snapshot.config.listen.admin_token else {
        return Access::Open;
    };
    match presented {
        None => Access::Missing,
        Some(given) if same_token(given, expected.expose()) => Access::Granted,
        Some(_) => Access::Wrong,
    }
}

/// The 401 answer for `access`.
pub fn refused(access: Access) -> Response {
    let message = match access {
        Access::Wrong => {
            "the admin token is wrong: send the token configured as `listen.admin_token` in \
             `Authorization: Bearer <token>`"
        }
        _ => {
            "an admin token is required: send the token configured as `listen.admin_token` in \
             `Authorization: Bearer <token>`"
        }
    };
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"wa-gateway admin\""),
    );
    response
}

/// Middleware for the protected routes.
pub async fn require_token(
    State(st): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let access = check(&st, bearer(request.headers()));
    if !access.allowed() {
        tracing::info!(path = %request.uri().path(), ?access, "admin request refused");
        return refused(access);
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_value_whatever_the_length() {
        assert!(same_token("s3cret", "s3cret"));
        assert!(!same_token("s3cre", "s3cret"));
        assert!(!same_token("s3cret-longer", "s3cret"));
        assert!(!same_token("", "s3cret"));
    }

    #[test]
    fn bearer_headers_are_read_leniently_and_only_as_bearer() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(bearer(&with("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&with("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&with("Basic abc")), None);
        assert_eq!(bearer(&with("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
