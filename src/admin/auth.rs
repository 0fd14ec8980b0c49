//! Admin credentials: when `listen.admin_token` is set, the protected routes need it as
//! `Authorization: Bearer <token>` or the status page's sign-in cookie (a value derived from the
//! token, never the token itself); `/media` also takes `listen.media_token`. Tokens are compared
//! in constant time and read from the snapshot on every request, so a reload that changes one
//! takes effect at once. The token never travels in a URL.

use super::api::error;
use crate::serve::state::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// The sign-in cookie's name.
pub const COOKIE: &str = "wa_gateway_admin";
/// How long a sign-in lasts.
pub const SESSION: Duration = Duration::from_secs(12 * 3600);

/// What a request's credentials amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token is configured: everything is open.
    Open,
    /// The right token (or a valid sign-in cookie) was presented.
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

/// Which routes a credential is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything protected: only the admin token.
    Admin,
    /// `/media`: the admin token or the media token.
    Media,
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

/// The sign-in cookie's value, if the request carries one.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn session_mac(token: &str, expires: u64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes any key");
    mac.update(b"wa-gateway admin session v1\0");
    mac.update(expires.to_string().as_bytes());
    mac
}

/// A sign-in cookie value for `token`, valid until `expires` (Unix seconds): the expiry and an
/// HMAC keyed with the token, so every replica can check it, changing the token ends every
/// session, and the cookie never holds the token.
pub fn session_value(token: &str, expires: u64) -> String {
    let tag = session_mac(token, expires).finalize().into_bytes();
    format!("{expires}.{}", hex::encode(tag))
}

fn session_valid(value: &str, token: &str, now: u64) -> bool {
    let Some((expires, tag)) = value.split_once('.') else {
        return false;
    };
    let (Ok(expires), Ok(tag)) = (expires.parse::<u64>(), hex::decode(tag)) else {
        return false;
    };
    expires > now && session_mac(token, expires).verify_slice(&tag).is_ok()
}

/// Checks the credentials of `headers` for `scope` against the tokens configured now.
pub fn check(st: &AppState, headers: &HeaderMap, scope: Scope) -> Access {
    let snapshot = st.snapshot.load();
    let listen = &snapshot.config.listen;
    let Some(expected) = &listen.admin_token else {
        return Access::Open;
    };
    let media = listen
        .media_token
        .as_ref()
        .filter(|_| scope == Scope::Media);
    if let Some(given) = bearer(headers) {
        let ok = same_token(given, expected.expose())
            || media.is_some_and(|m| same_token(given, m.expose()));
        return if ok { Access::Granted } else { Access::Wrong };
    }
    match cookie(headers) {
        Some(v) if session_valid(v, expected.expose(), unix_now()) => Access::Granted,
        Some(_) => Access::Wrong,
        None => Access::Missing,
    }
}

/// Whether `given` is the admin token configured now (the sign-in form's check).
pub fn is_admin_token(st: &AppState, given: &str) -> bool {
    let snapshot = st.snapshot.load();
    snapshot
        .config
        .listen
        .admin_token
        .as_ref()
        .is_some_and(|t| same_token(given, t.expose()))
}

/// The `Set-Cookie` value that signs the browser in (`Some(token)`) or out (`None`):
/// HttpOnly (no script reads it), SameSite=Strict (no other site's request carries it), and
/// Secure when the admin listener speaks TLS.
pub fn set_cookie(token: Option<&str>, secure: bool) -> HeaderValue {
    let (value, max_age) = match token {
        Some(t) => (session_value(t, unix_now() + SESSION.as_secs()), SESSION),
        None => (String::new(), Duration::ZERO),
    };
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        max_age.as_secs()
    ))
    .expect("hex, digits and ASCII attributes")
}

/// The 401 answer for `access`.
pub fn refused(access: Access) -> Response {
    let message = match access {
        Access::Wrong => {
            "the admin token is wrong or the sign-in has expired: send the token configured as \
             `listen.admin_token` in `Authorization: Bearer <token>`, or sign in again"
        }
        _ => {
            "an admin token is required: send the token configured as `listen.admin_token` in \
             `Authorization: Bearer <token>`, or sign in on the status page"
        }
    };
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"wa-gateway admin\""),
    );
    response
}

async fn require(st: &AppState, scope: Scope, request: Request, next: Next) -> Response {
    let access = check(st, request.headers(), scope);
    if !access.allowed() {
        tracing::info!(path = %request.uri().path(), ?access, "admin request refused");
        return refused(access);
    }
    next.run(request).await
}

/// Middleware for the routes that need the admin token.
pub async fn require_token(
    State(st): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    require(&st, Scope::Admin, request, next).await
}

/// Middleware for `/media`: the admin token or the media token.
pub async fn require_media_token(
    State(st): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    require(&st, Scope::Media, request, next).await
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

    fn with(name: header::HeaderName, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn bearer_headers_are_read_leniently_and_only_as_bearer() {
        let auth = |v: &str| with(header::AUTHORIZATION, v);
        assert_eq!(bearer(&auth("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&auth("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&auth("Basic abc")), None);
        assert_eq!(bearer(&auth("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn sessions_hold_no_token_expire_and_end_when_the_token_changes() {
        let v = session_value("s3cret", 2000);
        assert!(!v.contains("s3cret"), "{v}");
        assert!(session_valid(&v, "s3cret", 1999));
        assert!(!session_valid(&v, "s3cret", 2000), "expired");
        assert!(!session_valid(&v, "other", 1999), "another token");
        let forged = v.replacen("2000", "9000", 1);
        assert!(!session_valid(&forged, "s3cret", 1999), "a moved expiry");
        assert!(!session_valid("junk", "s3cret", 0));
        let h = with(header::COOKIE, &format!("a=b; {COOKIE}={v}; c=d"));
        assert_eq!(cookie(&h), Some(v.as_str()));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_under_tls() {
        let c = set_cookie(Some("s3cret"), true);
        let c = c.to_str().unwrap();
        assert!(c.starts_with(&format!("{COOKIE}=")), "{c}");
        for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(c.contains(attr), "{attr} in {c}");
        }
        assert!(!c.contains("s3cret"), "{c}");
        let out = set_cookie(None, false);
        let out = out.to_str().unwrap();
        assert!(
            out.contains("Max-Age=0") && !out.contains("Secure"),
            "{out}"
        );
    }
}
