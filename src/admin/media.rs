//! `GET /media/{phone_number_id}/{media_id}`: fetches a customer's media from Meta with the
//! number's token and returns the bytes, so agents download media on request. It caches nothing
//! and never reveals the token.

use crate::graph::GraphError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tracing::Instrument;

/// Largest media served (Meta's largest, a document, is 100 MB); held in memory while served.
pub const MAX_MEDIA_BYTES: u64 = 100 * 1024 * 1024;

fn error(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(json!({ "error": body }))).into_response()
}

/// A Graph failure as a 502 carrying Meta's code and message; `token` is scrubbed from the text
/// in case a proxy ever echoes the request.
fn bad_gateway(what: &str, e: &GraphError, token: &str) -> Response {
    let scrub = |s: &str| {
        if token.is_empty() {
            s.to_owned()
        } else {
            s.replace(token, "[token]")
        }
    };
    let mut body = json!({ "message": scrub(&format!("{what}: {e}")), "code": e.code() });
    if let GraphError::Api {
        status,
        message,
        details,
        fbtrace_id,
        ..
    } = e
    {
        body["meta_status"] = json!(status);
        body["meta_message"] = json!(scrub(message));
        body["details"] = json!(details.as_deref().map(scrub));
        body["fbtrace_id"] = json!(fbtrace_id);
    }
    error(StatusCode::BAD_GATEWAY, body)
}

/// Meta's hash is hex SHA-256; anything else is not checked rather than refused.
fn hash_mismatch(expected: &str, bytes: &[u8]) -> bool {
    let looks_hex = expected.len() == 64 && expected.bytes().all(|b| b.is_ascii_hexdigit());
    looks_hex && !expected.eq_ignore_ascii_case(&hex::encode(Sha256::digest(bytes)))
}

pub(super) async fn download(
    State(st): State<Arc<AppState>>,
    Path((pnid, media_id)): Path<(String, String)>,
) -> Response {
    let span = tracing::info_span!("media_download", phone_number_id = %pnid, %media_id);
    fetch(st, pnid, media_id).instrument(span).await
}

async fn fetch(st: Arc<AppState>, pnid: String, media_id: String) -> Response {
    let snapshot = st.snapshot.load_full();
    let Some(number) = snapshot.numbers.get(&pnid) else {
        let message = format!(
            "phone number id {pnid} is not served by this gateway: declare it under `numbers:` \
             in the config"
        );
        return error(StatusCode::NOT_FOUND, json!({ "message": message }));
    };
    let token = number.cfg.access_token.expose();
    let info = match snapshot.graph.media_info(&media_id, token).await {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(error = %e, "media info failed");
            return bad_gateway(&format!("media {media_id}"), &e, token);
        }
    };
    let (mime, bytes) = match snapshot
        .graph
        .download_media(&info.url, token, MAX_MEDIA_BYTES)
        .await
    {
        Ok(got) => got,
        Err(e) => {
            tracing::warn!(error = %e, "media download failed");
            return bad_gateway(&format!("downloading media {media_id}"), &e, token);
        }
    };
    if hash_mismatch(&info.sha256, &bytes) {
        let message = format!(
            "media {media_id}: the downloaded bytes do not match Meta's sha256 {}",
            info.sha256
        );
        tracing::warn!("{message}");
        return error(StatusCode::BAD_GATEWAY, json!({ "message": message }));
    }
    // Meta's media info names the type; the download host's header is the fallback.
    let mime = Some(info.mime_type.as_str())
        .filter(|m| !m.is_empty())
        .and_then(|m| HeaderValue::from_str(m).ok())
        .or_else(|| HeaderValue::from_str(&mime).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    tracing::debug!(bytes = bytes.len(), "media served");
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_checked_only_when_hex() {
        let sha = hex::encode(Sha256::digest(b"abc"));
        assert!(!hash_mismatch(&sha, b"abc"));
        assert!(!hash_mismatch(&sha.to_uppercase(), b"abc"));
        assert!(hash_mismatch(&sha, b"abd"));
        assert!(!hash_mismatch("WO+1/base64ish=", b"abd"));
        assert!(!hash_mismatch("", b"abd"));
    }

    #[test]
    fn graph_errors_never_carry_the_token() {
        let e = GraphError::Api {
            status: 401,
            code: 190,
            message: "bad token tok-secret".into(),
            details: Some("tok-secret".into()),
            fbtrace_id: None,
            retry_after: None,
        };
        let r = bad_gateway("media 1", &e, "tok-secret");
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        let body = futures::executor::block_on(axum::body::to_bytes(r.into_body(), 4096)).unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("tok-secret"), "{text}");
        assert!(text.contains("\"code\":190"), "{text}");
    }
}
