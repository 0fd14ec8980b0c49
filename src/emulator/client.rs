//! An HTTP client of the control API, for users outside the emulator's process (`chat`, the
//! benchmark). It speaks only `/_emulator/`; the Graph side is the gateway's business.

use super::control::{
    CustomerMessage, CustomerMessageAccepted, EmulatorStats, Latency, SentPage, SentQuery,
};
use super::faults::Fault;
use super::state::SentMessage;
use std::time::Duration;

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "cannot reach the emulator at {url}: {source} (is `wa-gateway emulator` or `serve` with graph_url: emulator running?)"
    )]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the emulator refused {what}: HTTP {status}: {body}")]
    Refused {
        what: &'static str,
        status: u16,
        body: String,
    },
    #[error("the emulator answered {what} with a body this client does not understand: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
}

/// A client of one emulator's control API.
#[derive(Clone, Debug)]
pub struct ControlClient {
    base: String,
    http: reqwest::Client,
}

impl ControlClient {
    /// A client of the emulator at `base_url` (`http://127.0.0.1:8089`).
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base: base_url.into().trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/_emulator/{path}", self.base)
    }

    async fn check(
        &self,
        what: &'static str,
        sent: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<reqwest::Response, ControlError> {
        let response = sent.map_err(|source| ControlError::Unreachable {
            url: self.base.clone(),
            source,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        Err(ControlError::Refused {
            what,
            status: status.as_u16(),
            body,
        })
    }

    /// A customer writes `text` to number `pnid`; returns the wamid.
    pub async fn customer_says(
        &self,
        pnid: &str,
        from: &str,
        name: Option<&str>,
        text: &str,
    ) -> Result<String, ControlError> {
        self.customer_message(CustomerMessage {
            phone_number_id: pnid.to_owned(),
            from: from.to_owned(),
            name: name.map(str::to_owned),
            text: text.to_owned(),
            message: None,
        })
        .await
    }

    /// A customer sends `message`, any message object (`{"type": "interactive", …}`), to
    /// number `pnid`; returns the wamid.
    pub async fn customer_sends(
        &self,
        pnid: &str,
        from: &str,
        name: Option<&str>,
        message: serde_json::Value,
    ) -> Result<String, ControlError> {
        self.customer_message(CustomerMessage {
            phone_number_id: pnid.to_owned(),
            from: from.to_owned(),
            name: name.map(str::to_owned),
            text: String::new(),
            message: Some(message),
        })
        .await
    }

    async fn customer_message(&self, body: CustomerMessage) -> Result<String, ControlError> {
        let what = "a customer message";
        let sent = self
            .http
            .post(self.url("customers/messages"))
            .json(&body)
            .send()
            .await;
        let accepted: CustomerMessageAccepted = self
            .check(what, sent)
            .await?
            .json()
            .await
            .map_err(|source| ControlError::Decode { what, source })?;
        Ok(accepted.wamid)
    }

    /// Queues a raw envelope for signed delivery.
    pub async fn deliver_envelope(&self, envelope: &serde_json::Value) -> Result<(), ControlError> {
        let sent = self
            .http
            .post(self.url("envelopes"))
            .json(envelope)
            .send()
            .await;
        self.check("an envelope", sent).await.map(drop)
    }

    /// Messages sent to `to` from `pnid` (either may be None for any) with seq > `after`, waiting
    /// up to `wait` for the first one; empty if none came.
    pub async fn sent_after(
        &self,
        pnid: Option<&str>,
        to: Option<&str>,
        after: u64,
        wait: Duration,
    ) -> Result<Vec<SentMessage>, ControlError> {
        Ok(self.sent_page(pnid, to, after, wait).await?.messages)
    }

    /// Like `sent_after`, also giving the last seq of any message (a baseline for later polls).
    pub async fn sent_page(
        &self,
        pnid: Option<&str>,
        to: Option<&str>,
        after: u64,
        wait: Duration,
    ) -> Result<SentPage, ControlError> {
        let what = "a sent-messages query";
        let query = SentQuery {
            phone_number_id: pnid.map(str::to_owned),
            to: to.map(str::to_owned),
            after,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        let sent = self
            .http
            .get(self.url("sent"))
            .query(&query)
            // The server holds the poll up to `wait`; leave room for the answer.
            .timeout(wait.min(super::control::MAX_WAIT) + Duration::from_secs(10))
            .send()
            .await;
        self.check(what, sent)
            .await?
            .json()
            .await
            .map_err(|source| ControlError::Decode { what, source })
    }

    /// The wamids the gateway marked read.
    pub async fn read_receipts(&self) -> Result<Vec<String>, ControlError> {
        let what = "a read-receipts query";
        let sent = self.http.get(self.url("read_receipts")).send().await;
        self.check(what, sent)
            .await?
            .json()
            .await
            .map_err(|source| ControlError::Decode { what, source })
    }

    /// The next matching send calls fail as `fault` says.
    pub async fn push_fault(&self, fault: &Fault) -> Result<(), ControlError> {
        let sent = self.http.post(self.url("faults")).json(fault).send().await;
        self.check("a fault", sent).await.map(drop)
    }

    /// Adds `latency` to every Graph call.
    pub async fn set_latency(&self, latency: Duration) -> Result<(), ControlError> {
        let body = Latency {
            ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
        };
        let sent = self.http.post(self.url("latency")).json(&body).send().await;
        self.check("a latency change", sent).await.map(drop)
    }

    /// Webhook delivery counters and the number of accepted messages.
    pub async fn stats(&self) -> Result<EmulatorStats, ControlError> {
        let what = "a stats query";
        let sent = self.http.get(self.url("stats")).send().await;
        self.check(what, sent)
            .await?
            .json()
            .await
            .map_err(|source| ControlError::Decode { what, source })
    }
}
