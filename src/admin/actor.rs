//! Who an admin request acts as, for the audit log: `cli` when a `wa-gateway` command sent it
//! (the header `audit::CLIENT_HEADER`), else the credential's name. Requests reach here past
//! the token check already.

use crate::serve::state::AppState;
use axum::http::HeaderMap;

/// The actor of a request: `cli`, else `admin_token` (the one admin token's name), or `open`
/// when no token is configured.
pub fn actor(st: &AppState, headers: &HeaderMap) -> &'static str {
    if headers
        .get(crate::audit::CLIENT_HEADER)
        .is_some_and(|v| v.as_bytes() == crate::audit::CLI.as_bytes())
    {
        return crate::audit::CLI;
    }
    if st.snapshot.load().config.listen.admin_token.is_some() {
        crate::audit::ADMIN_TOKEN
    } else {
        crate::audit::OPEN
    }
}
