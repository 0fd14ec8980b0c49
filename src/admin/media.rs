//! `GET /media/{phone_number_id}/{media_id}`: fetches a customer's media from Meta with the
//! number's token and streams the bytes through, so agents download media on request. Ids are
//! digits; the download URL is fetched only from an allowed media host; at most
//! `listen.media_concurrency` downloads run at once. It caches nothing and never reveals the token.

use crate::graph::{GraphError, MediaDownload};
use crate::serve::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tracing::Instrument;

/// Largest media served (Meta's largest, a document, is 100 MB); streamed, never held whole.
pub const MAX_MEDIA_BYTES: u64 = 100 * 1024 * 1024;

/// The downloads running now, shared by the admin router's requests.
#[derive(Clone, Default)]
pub struct Downloads(Arc<AtomicUsize>);

/// One running download's place; given back when dropped (the body is sent or abandoned).
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Downloads {
    /// A place (the limit is read from the config at each request, so a reload changes it) if fewer than `limit` downloads run.
    pub fn try_start(&self, limit: usize) -> Option<Slot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.0.clone()))
    }
}

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

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `url` is one the number's token may be sent to: HTTPS to an allowed media host, or
/// (with the built-in emulator) the emulator's own base.
pub fn media_url_allowed(url: &str, hosts: &[String], emulator_base: Option<&str>) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    if let Some(base) = emulator_base.and_then(|b| reqwest::Url::parse(b).ok())
        && parsed.origin() == base.origin()
    {
        return true;
    }
    parsed.scheme() == "https"
        && parsed.port().is_none()
        && parsed
            .host_str()
            .is_some_and(|h| hosts.iter().any(|a| a.eq_ignore_ascii_case(h)))
}

pub(super) async fn download(
    State(st): State<Arc<AppState>>,
    Extension(downloads): Extension<Downloads>,
    Path((pnid, media_id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    if !is_digits(&pnid) || !is_digits(&media_id) {
        let message = "phone number ids and media ids are digits only, as the webhook gave them";
        return error(StatusCode::BAD_REQUEST, json!({ "message": message }));
    }
    let limit = st.snapshot.load().config.listen.media_concurrency;
    let Some(slot) = downloads.try_start(limit) else {
        let message = format!(
            "{limit} media downloads are running (listen.media_concurrency): retry in a moment"
        );
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "message": message }),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    // An HTTP server span; an agent calling back with the `traceparent` it was sent puts the
    // download in the message's trace.
    let span = tracing::info_span!(
        "media_download",
        phone_number_id = %pnid,
        %media_id,
        otel.name = "GET /media",
        otel.kind = "server",
        http.request.method = "GET",
        http.route = "/media/{phone_number_id}/{media_id}",
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    crate::telemetry::set_parent_from_headers(&span, &headers);
    let response = fetch(st, pnid, media_id, slot)
        .instrument(span.clone())
        .await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

async fn fetch(st: Arc<AppState>, pnid: String, media_id: String, slot: Slot) -> Response {
    let snapshot = st.snapshot.load_full();
    let Some(number) = snapshot.numbers.get(pnid.as_str()) else {
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
    let config = &snapshot.config;
    let emulator = config.uses_emulator().then(|| snapshot.graph.base());
    if !media_url_allowed(&info.url, &config.meta.media_hosts, emulator) {
        let host = reqwest::Url::parse(&info.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let message = format!(
            "media {media_id}: Meta's download URL is on host {host:?}, which is not in \
             meta.media_hosts (HTTPS only): add it there if it is Meta's"
        );
        tracing::warn!("{message}");
        return error(StatusCode::BAD_GATEWAY, json!({ "message": message }));
    }
    let download = match snapshot
        .graph
        .open_media(&info.url, token, MAX_MEDIA_BYTES)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "media download failed");
            return bad_gateway(&format!("downloading media {media_id}"), &e, token);
        }
    };
    // Meta's media info names the type; the download host's header is the fallback.
    let mime = Some(info.mime_type.as_str())
        .filter(|m| !m.is_empty())
        .and_then(|m| HeaderValue::from_str(m).ok())
        .or_else(|| HeaderValue::from_str(&download.mime).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    let length = download.content_length();
    let body = Body::from_stream(stream(download, info.sha256, slot));
    let mut response = (
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response();
    if let Some(len) = length {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    response
}

/// Why a streamed download was cut short; the client sees the body end early.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("{0}")]
    Graph(#[from] GraphError),
    #[error("the downloaded bytes do not match Meta's sha256 {0}")]
    Hash(String),
}

/// The body, chunk by chunk, hashed on the way: a mismatch with Meta's hash at the end breaks
/// the response instead of completing it. `slot` is held until the body ends.
fn stream(
    download: MediaDownload,
    sha256: String,
    slot: Slot,
) -> impl futures::Stream<Item = Result<bytes::Bytes, StreamError>> + Send {
    let state = Some((download, Sha256::new(), sha256, slot));
    futures::stream::unfold(state, |state| async move {
        let (mut download, mut hasher, expected, slot) = state?;
        match download.chunk().await {
            Ok(Some(chunk)) => {
                hasher.update(&chunk);
                Some((Ok(chunk), Some((download, hasher, expected, slot))))
            }
            Ok(None) => {
                let got = hex::encode(hasher.finalize());
                if hash_mismatch(&expected, &got) {
                    tracing::warn!(expected = %expected, "media bytes do not match Meta's hash");
                    return Some((Err(StreamError::Hash(expected)), None));
                }
                tracing::debug!("media served");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "media download broke off");
                Some((Err(e.into()), None))
            }
        }
    })
}

/// Meta's hash is hex SHA-256; anything else is not checked rather than refused.
fn hash_mismatch(expected: &str, got_hex: &str) -> bool {
    let looks_hex = expected.len() == 64 && expected.bytes().all(|b| b.is_ascii_hexdigit());
    looks_hex && !expected.eq_ignore_ascii_case(got_hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_checked_only_when_hex() {
        let sha = hex::encode(Sha256::digest(b"abc"));
        let abd = hex::encode(Sha256::digest(b"abd"));
        assert!(!hash_mismatch(&sha, &sha));
        assert!(!hash_mismatch(&sha.to_uppercase(), &sha));
        assert!(hash_mismatch(&sha, &abd));
        assert!(!hash_mismatch("WO+1/base64ish=", &abd));
        assert!(!hash_mismatch("", &abd));
    }

    #[test]
    fn media_is_fetched_only_from_allowed_hosts_over_https() {
        let hosts = vec!["lookaside.fbsbx.com".to_owned()];
        let emu = Some("http://127.0.0.1:8089");
        for (url, emulator, want) in [
            (
                "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1",
                None,
                true,
            ),
            ("https://LOOKASIDE.fbsbx.com/x", None, true),
            ("http://lookaside.fbsbx.com/x", None, false),
            ("https://lookaside.fbsbx.com:8443/x", None, false),
            ("https://lookaside.fbsbx.com.evil.example/x", None, false),
            ("https://169.254.169.254/latest/meta-data", None, false),
            ("http://127.0.0.1:8089/media/1", None, false),
            ("http://127.0.0.1:8089/media/1", emu, true),
            ("http://127.0.0.1:8090/media/1", emu, false),
            ("not a url", emu, false),
        ] {
            assert_eq!(media_url_allowed(url, &hosts, emulator), want, "{url}");
        }
    }

    /// The streamed body of a media host answering `bytes`, checked against `sha256`.
    fn streamed(bytes: &'static [u8], sha256: &str, max: u64) -> Vec<Result<Vec<u8>, String>> {
        use futures::StreamExt;
        let resp = reqwest::Response::from(axum::http::Response::new(bytes.to_vec()));
        let download = MediaDownload::new(resp, max).unwrap();
        let slot = Downloads::default().try_start(1).unwrap();
        let items = stream(download, sha256.to_owned(), slot)
            .map(|r| r.map(|b| b.to_vec()).map_err(|e| e.to_string()))
            .collect::<Vec<_>>();
        futures::executor::block_on(items)
    }

    #[test]
    fn a_streamed_body_that_does_not_match_metas_hash_breaks_off() {
        let good = hex::encode(Sha256::digest(b"media bytes"));
        let bad = hex::encode(Sha256::digest(b"other bytes"));
        assert_eq!(
            streamed(b"media bytes", &good, 100),
            [Ok(b"media bytes".to_vec())]
        );
        let broken = streamed(b"media bytes", &bad, 100);
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(
            broken[1].as_ref().unwrap_err().contains("do not match"),
            "{broken:?}"
        );
        // Over the limit by its announced length: refused before any byte is read.
        let resp = reqwest::Response::from(axum::http::Response::new(b"media bytes".to_vec()));
        let over = MediaDownload::new(resp, 4).err().unwrap().to_string();
        assert!(over.contains("4-byte limit"), "{over}");
    }

    #[test]
    fn downloads_are_limited_and_slots_come_back() {
        let d = Downloads::default();
        let a = d.try_start(2).unwrap();
        let _b = d.try_start(2).unwrap();
        assert!(d.try_start(2).is_none());
        drop(a);
        assert!(d.try_start(2).is_some());
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
