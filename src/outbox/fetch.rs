//! Downloads the file an agent named by URL: http and https only, within the client's timeout
//! (`policies.media.timeout`), and never more than the kind's size limit in memory (counted as
//! the body arrives, whatever length the host announced). It checks nothing else.

use crate::cloudapi::outbound::MediaKind;
use crate::cloudapi::outbound::media_file::FileError;
use std::time::Duration;

/// A downloaded file.
#[derive(Debug)]
pub(super) struct Fetched {
    /// The host's Content-Type, if it named one.
    pub content_type: Option<String>,
    pub bytes: bytes::Bytes,
}

/// Why a file could not be downloaded.
#[derive(Clone, Debug, thiserror::Error)]
pub enum FetchError {
    #[error("only http and https URLs are downloaded")]
    NotHttp,
    #[error("{0}")]
    NotPublic(String),
    #[error("the media host answered HTTP {status}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("the download failed: {0}")]
    Network(String),
    #[error(transparent)]
    TooLarge(FileError),
}

impl FetchError {
    /// Whether trying again later may work: the network, a timeout, the host's 5xx, 408, 429.
    pub fn is_temporary(&self) -> bool {
        match self {
            FetchError::Network(_) => true,
            FetchError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            FetchError::NotHttp | FetchError::NotPublic(_) | FetchError::TooLarge(_) => false,
        }
    }

    /// The wait the host asked for (Retry-After in seconds), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

fn network(e: reqwest::Error) -> FetchError {
    if let Some(refused) = crate::net::not_public(&e) {
        return FetchError::NotPublic(refused.to_string());
    }
    // The URL may carry a signature in its query: it stays out of the message.
    FetchError::Network(e.without_url().to_string())
}

fn too_large(kind: MediaKind, size: u64) -> FetchError {
    FetchError::TooLarge(FileError::TooLarge {
        kind: kind.as_str(),
        size,
        max: kind.max_bytes(),
    })
}

/// GETs `url` with `client` and reads its body, refusing more than `kind`'s size limit. Unless
/// `private_hosts`, a non-public address literal is refused here, and the client refuses a name
/// that resolves to none and a redirect to one (`crate::net`): each for good.
pub(super) async fn fetch(
    client: &reqwest::Client,
    url: &str,
    kind: MediaKind,
    private_hosts: bool,
) -> Result<Fetched, FetchError> {
    let parsed = url::Url::parse(url).map_err(|_| FetchError::NotHttp)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(FetchError::NotHttp);
    }
    if let Some(ip) = crate::net::private_literal(&parsed).filter(|_| !private_hosts) {
        return Err(FetchError::NotPublic(
            crate::net::NotPublic(ip.to_string()).to_string(),
        ));
    }
    let mut resp = client.get(parsed).send().await.map_err(network)?;
    let status = resp.status();
    if !status.is_success() {
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse().ok())
            .map(Duration::from_secs);
        return Err(FetchError::Status {
            status: status.as_u16(),
            retry_after,
        });
    }
    let max = kind.max_bytes();
    if let Some(len) = resp.content_length().filter(|&len| len > max) {
        return Err(too_large(kind, len));
    }
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let announced = resp.content_length().unwrap_or(0);
    let mut body = bytes::BytesMut::with_capacity(announced as usize);
    while let Some(chunk) = resp.chunk().await.map_err(network)? {
        let size = (body.len() + chunk.len()) as u64;
        if size > max {
            return Err(too_large(kind, size));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched {
        content_type,
        bytes: body.freeze(),
    })
}
