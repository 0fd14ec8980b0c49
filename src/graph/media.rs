//! Media: `GET /{media-id}` for the short-lived download URL, then the bytes from that URL
//! (another host, same bearer token) with a size limit; and `POST /{phone-number-id}/media`,
//! the upload of a file for sending by id. It stores nothing.

use super::{GraphClient, GraphError, error};
use serde::{Deserialize, Deserializer, Serialize};

/// What Meta says about an uploaded or received media object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaInfo {
    /// Where the bytes are, for about five minutes; fetch with the same bearer token.
    pub url: String,
    pub mime_type: String,
    /// Hex SHA-256 of the bytes.
    #[serde(default)]
    pub sha256: String,
    /// Bytes; Meta has sent it both as a number and as a string of digits.
    #[serde(deserialize_with = "size")]
    pub file_size: u64,
    pub id: String,
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Number(n) => Ok(n),
        Size::Text(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

/// A file to upload: its bytes, its type and the name Meta keeps with it.
#[derive(Clone, Debug)]
pub struct UploadFile<'a> {
    pub bytes: bytes::Bytes,
    pub mime: &'a str,
    pub filename: &'a str,
}

/// The type to assume when the media host names none.
const OCTET_STREAM: &str = "application/octet-stream";

impl GraphClient {
    /// `GET /{media_id}`: the media's download URL, type, hash and size.
    pub async fn media_info(&self, media_id: &str, token: &str) -> Result<MediaInfo, GraphError> {
        let req = self.http.get(self.url(media_id)).bearer_auth(token);
        self.call(req, &format!("the media info of {media_id}"))
            .await
    }

    /// `POST /{phone_number_id}/media`: uploads `bytes` as a file named `filename` of type
    /// `mime` (multipart, as Meta's docs show it), within `timeout`; the media id Meta gave it.
    pub async fn upload_media(
        &self,
        phone_number_id: &str,
        token: &str,
        file: UploadFile<'_>,
        timeout: std::time::Duration,
    ) -> Result<String, GraphError> {
        #[derive(Deserialize)]
        struct Uploaded {
            id: String,
        }
        let length = file.bytes.len() as u64;
        let part = reqwest::multipart::Part::stream_with_length(file.bytes, length)
            .file_name(file.filename.to_owned())
            .mime_str(file.mime)
            .map_err(|e| GraphError::Decode {
                message: format!("media type {:?} is not a MIME type: {e}", file.mime),
            })?;
        let form = reqwest::multipart::Form::new()
            .text("messaging_product", "whatsapp")
            .text("type", file.mime.to_owned())
            .part("file", part);
        let req = self
            .http
            .post(self.url(&format!("{phone_number_id}/media")))
            .bearer_auth(token)
            .timeout(timeout)
            .multipart(form);
        let uploaded: Uploaded = self.call(req, "a media upload").await?;
        Ok(uploaded.id)
    }

    /// GETs `url` (as [`MediaInfo::url`] gave it) with `token` and returns the open download,
    /// its body not yet read. Refused when the announced length is over `max_bytes`.
    pub async fn open_media(
        &self,
        url: &str,
        token: &str,
        max_bytes: u64,
    ) -> Result<MediaDownload, GraphError> {
        let resp = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(GraphError::from_transport)?;
        let status = resp.status();
        if !status.is_success() {
            let retry_after = error::retry_after(resp.headers());
            let bytes = resp.bytes().await.map_err(GraphError::from_transport)?;
            return Err(GraphError::from_body(status.as_u16(), &bytes, retry_after));
        }
        MediaDownload::new(resp, max_bytes)
    }

    /// As [`open_media`](Self::open_media), reading the whole body: the Content-Type and bytes.
    pub async fn download_media(
        &self,
        url: &str,
        token: &str,
        max_bytes: u64,
    ) -> Result<(String, bytes::Bytes), GraphError> {
        let mut download = self.open_media(url, token, max_bytes).await?;
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = download.chunk().await? {
            body.extend_from_slice(&chunk);
        }
        Ok((download.mime, body.freeze()))
    }
}

fn too_large(size: u64, max_bytes: u64) -> GraphError {
    GraphError::Decode {
        message: format!("media is {size} bytes or more, over the {max_bytes}-byte limit"),
    }
}

/// A media download in progress: its type, then its body chunk by chunk, counted against the
/// limit as it arrives (the announced length may be absent or wrong).
pub struct MediaDownload {
    /// The media host's Content-Type (`application/octet-stream` when it names none).
    pub mime: String,
    resp: reqwest::Response,
    read: u64,
    max_bytes: u64,
}

impl MediaDownload {
    /// The download of a successful response; refused when its announced length is over
    /// `max_bytes`.
    pub fn new(resp: reqwest::Response, max_bytes: u64) -> Result<Self, GraphError> {
        if let Some(len) = resp.content_length().filter(|&len| len > max_bytes) {
            return Err(too_large(len, max_bytes));
        }
        let mime = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .unwrap_or(OCTET_STREAM)
            .to_owned();
        Ok(Self {
            mime,
            resp,
            read: 0,
            max_bytes,
        })
    }

    /// The length the media host announced, if any.
    pub fn content_length(&self) -> Option<u64> {
        self.resp.content_length()
    }

    /// The next chunk, `None` at the end; an error past the size limit.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, GraphError> {
        let Some(chunk) = self
            .resp
            .chunk()
            .await
            .map_err(GraphError::from_transport)?
        else {
            return Ok(None);
        };
        self.read += chunk.len() as u64;
        if self.read > self.max_bytes {
            return Err(too_large(self.read, self.max_bytes));
        }
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_info_reads_metas_shapes() {
        let cases = [
            r#"{"messaging_product":"whatsapp","url":"https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1&ext=2&hash=3","mime_type":"image/jpeg","sha256":"ab12","file_size":303833,"id":"1"}"#,
            r#"{"url":"https://lookaside.fbsbx.com/x","mime_type":"image/jpeg","sha256":"ab12","file_size":"303833","id":"1"}"#,
        ];
        for body in cases {
            let info: MediaInfo = serde_json::from_str(body).unwrap();
            assert_eq!(info.file_size, 303_833, "{body}");
            assert_eq!(info.mime_type, "image/jpeg");
            assert_eq!(info.id, "1");
        }
        let bad = r#"{"url":"u","mime_type":"m","file_size":"big","id":"1"}"#;
        assert!(serde_json::from_str::<MediaInfo>(bad).is_err());
    }
}
