//! Media the emulator holds (uploaded by a number with `POST /{version}/{phone-number-id}/media`,
//! with Meta's checks and errors, or added by tests or `POST /_emulator/media`), served as Meta
//! serves it: `GET /{version}/{media-id}` gives a download URL, `GET /media-download/…` gives the
//! bytes; both want the bearer token of one of the emulated numbers. The blobs themselves:
//! `media_store.rs`.

use super::error::GraphError;
use super::graph::{authorize, bearer, is_version};
use super::state::State;
use crate::cloudapi::outbound::media_file::{UploadRefused, check_upload, upload_types};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::sync::Arc;

/// Largest blob the control API takes (Meta's largest media, a document, is 100 MB).
pub const MAX_MEDIA_BYTES: usize = 100 * 1024 * 1024;
/// Room for the multipart framing and the other fields of an upload.
const UPLOAD_OVERHEAD: usize = 64 * 1024;

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        // One route serves media, numbers and debug_token: axum allows one handler a path.
        .route(
            "/{version}/{media_id}",
            get(object).post(super::manage::post_object_handler),
        )
        .route(
            "/{version}/{phone_number_id}/media",
            post(upload_media).layer(DefaultBodyLimit::max(MAX_MEDIA_BYTES + UPLOAD_OVERHEAD)),
        )
        .route("/media-download/{key}", get(download))
        .route(
            "/_emulator/media",
            post(upload).layer(DefaultBodyLimit::max(MAX_MEDIA_BYTES)),
        )
        .with_state(state)
}

/// Meta checks the token before the object: a stranger learns nothing about ids.
fn check_token(state: &State, headers: &HeaderMap) -> Result<(), GraphError> {
    match bearer(headers) {
        Some(t) if state.token_is_known(t) => Ok(()),
        Some(t) if state.manage.debug(t).is_some() => Err(GraphError::token_expired()),
        _ => Err(GraphError::invalid_token()),
    }
}

/// Where the client reached us, for the download URL (Meta's is on another host; ours is not).
fn base_url(headers: &HeaderMap, uri: &Uri) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "127.0.0.1".into());
    format!("http://{host}")
}

/// `GET /{version}/{id}`: a number or `debug_token` when `id` is one, else a media object.
async fn object(
    st: AxState<Arc<State>>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(answer) = super::manage::get_object_answer(&st.0, &path.0, &headers, &uri).await {
        return answer;
    }
    info(st, path, headers, uri).await
}

async fn info(
    AxState(state): AxState<Arc<State>>,
    Path((version, media_id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let latency = state.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if !is_version(&version) {
        return GraphError::unknown_path(&version).into_response();
    }
    if let Err(e) = check_token(&state, &headers) {
        return e.into_response();
    }
    let Some(blob) = state.media.get(&media_id) else {
        return GraphError::unknown_object("get", &media_id).into_response();
    };
    let url = format!(
        "{}/media-download/{}?mid={media_id}",
        base_url(&headers, &uri),
        blob.key
    );
    Json(json!({
        "messaging_product": "whatsapp",
        "url": url,
        "mime_type": blob.mime,
        "sha256": blob.sha256,
        "file_size": blob.bytes.len(),
        "id": media_id,
    }))
    .into_response()
}

async fn download(
    AxState(state): AxState<Arc<State>>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = check_token(&state, &headers) {
        return e.into_response();
    }
    let Some(blob) = state.media.by_key(&key) else {
        let mut e = GraphError::unknown_object("get", &key);
        e.status = StatusCode::NOT_FOUND;
        return e.into_response();
    };
    let mime = HeaderValue::from_str(&blob.mime)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    ([(header::CONTENT_TYPE, mime)], blob.bytes).into_response()
}

/// `POST /_emulator/media`: the raw body is the blob, its Content-Type the media's.
async fn upload(AxState(state): AxState<Arc<State>>, headers: HeaderMap, body: Bytes) -> Response {
    if body.is_empty() {
        let error = "the request body is the media's bytes, and it is empty";
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response();
    }
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or("application/octet-stream");
    let id = state.media.add(mime, body.to_vec());
    (StatusCode::CREATED, Json(json!({ "id": id }))).into_response()
}

/// The fields of an upload's multipart body.
#[derive(Default)]
struct UploadForm {
    messaging_product: Option<String>,
    file: Option<UploadPart>,
}

struct UploadPart {
    /// The part's own Content-Type: what Meta judges the file by (not the `type` field).
    content_type: String,
    filename: Option<String>,
    bytes: Bytes,
}

async fn read_form(mut multipart: Multipart) -> Result<UploadForm, GraphError> {
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        GraphError::invalid_parameter(format!("The multipart body could not be read: {e}"))
    };
    let mut form = UploadForm::default();
    while let Some(field) = multipart.next_field().await.map_err(unreadable)? {
        match field.name() {
            Some("messaging_product") => {
                form.messaging_product = Some(field.text().await.map_err(unreadable)?);
            }
            Some("file") => {
                let content_type = field
                    .content_type()
                    .unwrap_or("application/octet-stream")
                    .to_owned();
                let filename = field.file_name().map(str::to_owned);
                let bytes = field.bytes().await.map_err(unreadable)?;
                form.file = Some(UploadPart {
                    content_type,
                    filename,
                    bytes,
                });
            }
            // `type` and anything else: Meta goes by the file part's own type.
            _ => {}
        }
    }
    Ok(form)
}

/// Meta's checks on an upload, in Meta's order: the product, the file, its type, then the file
/// against its type's limits.
fn accept_upload(state: &State, pnid: &str, form: UploadForm) -> Result<String, GraphError> {
    if form.messaging_product.as_deref() != Some("whatsapp") {
        return Err(GraphError::param_required("messaging_product"));
    }
    let Some(file) = form.file.filter(|f| !f.bytes.is_empty()) else {
        return Err(GraphError::param_required("file"));
    };
    match check_upload(&file.content_type, &file.bytes) {
        Ok(()) => {}
        Err(UploadRefused::Type(received)) => {
            return Err(GraphError::upload_type(&received, &upload_types()));
        }
        Err(UploadRefused::File(e)) => return Err(GraphError::media_upload(e.to_string())),
    }
    Ok(state
        .media
        .upload(pnid, &file.content_type, file.bytes.to_vec(), file.filename))
}

/// `POST /{version}/{phone_number_id}/media`: a number uploads a file to send by id.
async fn upload_media(
    AxState(state): AxState<Arc<State>>,
    Path((version, pnid)): Path<(String, String)>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let latency = state.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Err(e) = authorize(&state, &version, &pnid, &headers) {
        return e.into_response();
    }
    let form = match multipart {
        Ok(m) => read_form(m).await,
        // Not a multipart body: no file came with it.
        Err(_) => Err(GraphError::param_required("file")),
    };
    match form.and_then(|form| accept_upload(&state, &pnid, form)) {
        Ok(id) => Json(json!({ "id": id })).into_response(),
        Err(e) => e.into_response(),
    }
}
