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

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A client for one Graph base URL and API version.
#[derive(Clone, Debug)]
pub struct GraphClient {
    http: reqwest::Client,
    base: String,
    version: String,
    /// `{base}/{version}`, parsed once: the URL of a send is this one with two segments more,
    /// not a string parsed again (host and all) twice per message. `None` when it does not
    /// parse: the string goes to reqwest, which refuses it with its error.
    versioned: Option<reqwest::Url>,
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

/// The body that marks a message read (and shows the typing indicator).
#[derive(Serialize)]
struct MarkRead<'a> {
    messaging_product: &'static str,
    status: &'static str,
    message_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    typing_indicator: Option<TypingIndicator>,
}

#[derive(Serialize)]
struct TypingIndicator {
    #[serde(rename = "type")]
    kind: &'static str,
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
        let base = base.trim_end_matches('/').to_owned();
        let versioned = reqwest::Url::parse(&format!("{base}/{version}"))
            .ok()
            .filter(|u| !u.cannot_be_a_base() && u.query().is_none());
        Self {
            http,
            base,
            version: version.to_owned(),
            versioned,
        }
    }

    /// The base URL calls go to (e.g. `https://graph.facebook.com`, or the emulator's).
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}/{}", self.base, self.version, path)
    }

    /// `POST {base}/{version}/{phone_number_id}/messages`, the request of every send.
    fn post_messages(&self, phone_number_id: &str) -> reqwest::RequestBuilder {
        let Some(mut url) = self.versioned.clone() else {
            return self
                .http
                .post(self.url(&format!("{phone_number_id}/messages")));
        };
        // A base that cannot be one was refused when the client was made.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend([phone_number_id, "messages"]);
        }
        self.http.post(url)
    }

    /// `POST /{phone_number_id}/messages`; returns the wamid Meta assigned.
    pub async fn send_message(
        &self,
        phone_number_id: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> Result<String, GraphError> {
        let req = self
            .post_messages(phone_number_id)
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
        let body = MarkRead {
            messaging_product: "whatsapp",
            status: "read",
            message_id: wamid,
            typing_indicator: typing.then_some(TypingIndicator { kind: "text" }),
        };
        let req = self
            .post_messages(phone_number_id)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_goes_to_the_url_the_base_and_version_name() {
        for base in [
            "http://127.0.0.1:18089",
            "http://127.0.0.1:18089/",
            "https://graph.example.com/prefix/",
        ] {
            let client = GraphClient::new(base, "v23.0", Duration::from_secs(1));
            let built = client.post_messages("106540352242922").build().unwrap();
            assert_eq!(
                built.url().as_str(),
                client.url("106540352242922/messages"),
                "{base}"
            );
        }
        // Not a URL: reqwest's own refusal, as before.
        let client = GraphClient::new("not a url", "v23.0", Duration::from_secs(1));
        assert!(client.post_messages("1").build().is_err());
    }

    #[test]
    fn mark_read_says_what_meta_documents() {
        let body = |typing: bool| {
            serde_json::to_value(MarkRead {
                messaging_product: "whatsapp",
                status: "read",
                message_id: "wamid.X",
                typing_indicator: typing.then_some(TypingIndicator { kind: "text" }),
            })
            .unwrap()
        };
        let read = serde_json::json!({
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": "wamid.X",
        });
        assert_eq!(body(false), read);
        let mut typing = read;
        typing["typing_indicator"] = serde_json::json!({ "type": "text" });
        assert_eq!(body(true), typing);
    }
}
