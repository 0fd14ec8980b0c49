//! Graph API client: typed requests to `{graph_url}/{version}/…`, Meta's error bodies parsed into
//! typed errors, and the retry class of each error code. It never retries by itself.

mod error;
mod manage;
mod media;
mod oauth;

pub use error::{GraphError, RetryClass, classify_code};
pub use manage::{
    AppData, AppSubscription, CodeMethod, NUMBER_FIELDS, NumberInfo, SubscribedApp,
    SubscribedField, TokenInfo, WebhookConfiguration,
};
pub use media::{MediaDownload, MediaInfo, UploadFile};
pub use oauth::ExchangedToken;

use serde::Deserialize;
use std::time::Duration;

/// A client for one Graph base URL and API version.
#[derive(Clone, Debug)]
pub struct GraphClient {
    http: reqwest::Client,
    base: String,
    version: String,
}

/// Meta's answer to an accepted send.
#[derive(Clone, Debug, Deserialize)]
struct SendResponse {
    #[serde(default)]
    messages: Vec<SentId>,
}

#[derive(Clone, Debug, Deserialize)]
struct SentId {
    id: String,
}

impl GraphClient {
    /// `base` is e.g. `https://graph.facebook.com`; `version` e.g. `v23.0`.
    pub fn new(base: &str, version: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(256)
            .user_agent(concat!("wa-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the TLS backend is compiled in");
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            version: version.to_owned(),
        }
    }

    /// The base URL calls go to (e.g. `https://graph.facebook.com`, or the emulator's).
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}/{}", self.base, self.version, path)
    }

    /// `POST /{phone_number_id}/messages`; returns the wamid Meta assigned.
    pub async fn send_message(
        &self,
        phone_number_id: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> Result<String, GraphError> {
        let req = self
            .http
            .post(self.url(&format!("{phone_number_id}/messages")))
            .bearer_auth(token)
            .json(body);
        let parsed: SendResponse = self.call(req, "a send").await?;
        parsed
            .messages
            .into_iter()
            .next()
            .map(|m| m.id)
            .ok_or_else(|| GraphError::Decode {
                message: "send response has no messages[0].id".into(),
            })
    }

    /// Marks `wamid` read, optionally showing the typing indicator.
    pub async fn mark_read(
        &self,
        phone_number_id: &str,
        token: &str,
        wamid: &str,
        typing: bool,
    ) -> Result<(), GraphError> {
        let mut body = serde_json::json!({
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": wamid,
        });
        if typing {
            body["typing_indicator"] = serde_json::json!({ "type": "text" });
        }
        let req = self
            .http
            .post(self.url(&format!("{phone_number_id}/messages")))
            .bearer_auth(token)
            .json(&body);
        self.ok(req, "mark read").await
    }

    /// Sends `req` and reads Meta's answer: the body as `T`, or Meta's error.
    pub(crate) async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T, GraphError> {
        let resp = req.send().await.map_err(GraphError::from_transport)?;
        let status = resp.status();
        let retry_after = error::retry_after(resp.headers());
        let bytes = resp.bytes().await.map_err(GraphError::from_transport)?;
        if !status.is_success() {
            return Err(GraphError::from_body(status.as_u16(), &bytes, retry_after));
        }
        serde_json::from_slice(&bytes).map_err(|e| GraphError::Decode {
            message: format!("unexpected answer to {what}: {e}"),
        })
    }

    /// Calls that answer `{success: true}`.
    pub(crate) async fn ok(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<(), GraphError> {
        self.call::<serde_json::Value>(req, what).await.map(drop)
    }
}
