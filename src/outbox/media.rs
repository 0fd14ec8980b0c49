//! A media row sent by upload (`policies.media.upload`): the file its `link` names is
//! downloaded (`fetch.rs`), checked against Meta's limits for its kind, looked up in the upload
//! cache by its SHA-256 and uploaded to Meta when new; the request body then names the upload's
//! `id` instead of the `link`. The stored row keeps its link: after a crash the file is fetched
//! again and the cache finds the upload, so nothing but the send itself needs exactly-once.

use super::fetch::{FetchError, fetch};
use crate::cloudapi::outbound::MediaKind;
use crate::cloudapi::outbound::media_file::{FileError, check_file};
use crate::graph::{GraphError, UploadFile};
use crate::serve::state::{AppState, NumberRuntime};
use crate::store::{MediaUpload, now_ms};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Why a media file could not be made a media id.
#[derive(Clone, Debug, thiserror::Error)]
pub enum MediaError {
    #[error("media {url} was not downloaded: {source}")]
    Fetch { url: String, source: FetchError },
    #[error("media {url} cannot be sent: {source}")]
    File { url: String, source: FileError },
    #[error("media {url} was not uploaded to Meta: {source}")]
    Upload { url: String, source: GraphError },
    /// The gateway is stopping: the row stays open.
    #[error("interrupted by shutdown")]
    Interrupted,
}

/// A media id for a row's link.
#[derive(Clone, Debug)]
pub(super) struct Uploaded {
    pub media_id: String,
    /// An earlier upload of the same bytes, reused.
    pub cached: bool,
}

/// The media of a request `body` that must be uploaded before it is sent: its kind and link
/// (a message by `id` is sent as it is, and so is every link when `upload` is off).
pub(super) fn link_to_upload(body: &Value, upload: bool) -> Option<(MediaKind, String)> {
    if !upload {
        return None;
    }
    let kind = MediaKind::ALL
        .into_iter()
        .find(|k| body["type"] == k.as_str())?;
    let media = &body[kind.as_str()];
    if media.get("id").is_some() {
        return None;
    }
    Some((kind, media["link"].as_str()?.to_owned()))
}

/// `body` with its media named by `media_id` instead of its link.
pub(super) fn by_id(body: &Value, kind: MediaKind, media_id: &str) -> Value {
    let mut body = body.clone();
    if let Some(media) = body[kind.as_str()].as_object_mut() {
        media.remove("link");
        media.insert("id".into(), Value::String(media_id.to_owned()));
    }
    body
}

/// Whether Meta refused a send because it does not know the media id (an upload deleted or
/// expired at Meta while the cache still held it).
pub(super) fn unknown_media_id(err: &GraphError) -> bool {
    matches!(err, GraphError::Api { code: 100, message, .. }
        if message.to_ascii_lowercase().contains("media attachment id"))
}

/// `url` without its query and fragment, for messages (a signed URL's signature stays out).
fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => url.chars().take(200).collect(),
    }
}

/// The name the upload carries: the document's own, else the URL's last path segment.
fn file_name(url: &str, filename: Option<&str>) -> String {
    let from_url = url::Url::parse(url).ok().and_then(|u| {
        let last = u.path_segments()?.next_back()?.to_owned();
        (!last.is_empty()).then_some(last)
    });
    filename
        .map(str::to_owned)
        .or(from_url)
        .unwrap_or_else(|| "file".to_owned())
}

/// Makes `link` (a `kind` file) a media id of `number`: downloaded and checked, then an earlier
/// upload of the same bytes (unless `fresh`: the cached id was refused) or a new upload.
pub(super) async fn upload(
    state: &AppState,
    number: &NumberRuntime,
    kind: MediaKind,
    link: &str,
    body: &Value,
    fresh: bool,
) -> Result<Uploaded, MediaError> {
    let pnid = number.cfg.phone_number_id.as_str();
    let result = resolve(state, number, kind, link, body, fresh).await;
    let label = match &result {
        Ok(Uploaded { cached: true, .. }) => "cached",
        Ok(_) => "uploaded",
        Err(MediaError::Interrupted) => return result,
        Err(_) => "failed",
    };
    let m = &state.metrics.media_files;
    m.with_label_values(&[pnid, label]).inc();
    result
}

async fn resolve(
    state: &AppState,
    number: &NumberRuntime,
    kind: MediaKind,
    link: &str,
    body: &Value,
    fresh: bool,
) -> Result<Uploaded, MediaError> {
    let snap = state.snapshot.load_full();
    let pnid = number.cfg.phone_number_id.as_str();
    let url = shown(link);
    let private_hosts = snap.config.policies.media.private_hosts;
    let fetched = fetch(&snap.media_http, link, kind, private_hosts)
        .await
        .map_err(|e| match e {
            // Too large is the file's fault, found while it was arriving.
            FetchError::TooLarge(source) => MediaError::File {
                url: url.clone(),
                source,
            },
            source => MediaError::Fetch {
                url: url.clone(),
                source,
            },
        })?;
    let mime =
        check_file(kind, fetched.content_type.as_deref(), &fetched.bytes).map_err(|source| {
            MediaError::File {
                url: url.clone(),
                source,
            }
        })?;
    let sha256 = hex::encode(Sha256::digest(&fetched.bytes));
    let policy = &number.policies.media;
    if !fresh {
        let cache_for = i64::try_from(policy.cache_for.get().as_millis()).unwrap_or(i64::MAX);
        let since = now_ms().saturating_sub(cache_for);
        let cached = state
            .persist("media cache read", || {
                state.store.media_upload(pnid, &sha256, since)
            })
            .await
            .ok_or(MediaError::Interrupted)?;
        // The same bytes uploaded as another type are uploaded again as this one.
        if let Some(hit) = cached.filter(|c| c.mime_type == mime) {
            return Ok(Uploaded {
                media_id: hit.media_id,
                cached: true,
            });
        }
    }
    let filename = file_name(link, body[kind.as_str()]["filename"].as_str());
    let file = UploadFile {
        bytes: fetched.bytes,
        mime: &mime,
        filename: &filename,
    };
    let token = number.cfg.access_token.expose();
    let media_id = snap
        .graph
        .upload_media(pnid, token, file, policy.timeout.get())
        .await
        .map_err(|source| MediaError::Upload { url, source })?;
    tracing::debug!(phone_number_id = pnid, %media_id, %mime, "media uploaded to Meta");
    let record = MediaUpload {
        phone_number_id: pnid.to_owned(),
        sha256,
        media_id: media_id.clone(),
        mime_type: mime,
        uploaded_at: now_ms(),
    };
    // Not cached after all (shutdown): the next delivery uploads again, which is harmless.
    state
        .persist("media cache write", || {
            state.writer.media_uploaded(record.clone())
        })
        .await;
    Ok(Uploaded {
        media_id,
        cached: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_links_are_uploaded_and_only_when_asked() {
        let link = json!({ "type": "image", "image": { "link": "https://x.example/a.jpg", "caption": "c" } });
        assert_eq!(
            link_to_upload(&link, true),
            Some((MediaKind::Image, "https://x.example/a.jpg".into()))
        );
        assert_eq!(link_to_upload(&link, false), None);
        let by = json!({ "type": "image", "image": { "id": "1" } });
        assert_eq!(link_to_upload(&by, true), None);
        let text = json!({ "type": "text", "text": { "body": "https://x.example/a.jpg" } });
        assert_eq!(link_to_upload(&text, true), None);
        assert_eq!(
            by_id(&link, MediaKind::Image, "42")["image"],
            json!({ "id": "42", "caption": "c" })
        );
    }

    #[test]
    fn names_and_messages_leave_the_query_out() {
        assert_eq!(
            shown("https://cdn.example/a/b.png?X-Amz-Signature=secret#f"),
            "https://cdn.example/a/b.png"
        );
        assert_eq!(file_name("https://cdn.example/a/b.png?x=1", None), "b.png");
        assert_eq!(file_name("https://cdn.example/", None), "file");
        assert_eq!(
            file_name("https://cdn.example/x", Some("invoice.pdf")),
            "invoice.pdf"
        );
    }

    #[test]
    fn a_refused_media_id_is_recognised() {
        let refused = GraphError::Api {
            status: 400,
            code: 100,
            message: "(#100) Param image['id'] is not a valid whatsapp business account media attachment ID".into(),
            details: None,
            fbtrace_id: None,
            retry_after: None,
        };
        assert!(unknown_media_id(&refused));
        let other = GraphError::Api {
            status: 400,
            code: 100,
            message: "(#100) Invalid parameter".into(),
            details: None,
            fbtrace_id: None,
            retry_after: None,
        };
        assert!(!unknown_media_id(&other));
    }
}
