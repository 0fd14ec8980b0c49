//! The `http` agent: POSTs the [`Turn`] as JSON and reads `{"reply": "…"}` back (204 or an
//! empty body: no reply). History is cut to the agent's `history_turns`.

use super::{AgentBuildError, AgentError, Turn, http_client};
use crate::config::Secret;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

/// An agent behind any URL that speaks the turn contract.
#[derive(Clone, Debug)]
pub struct HttpAgent {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
    headers: HeaderMap,
    history_turns: usize,
}

#[derive(Deserialize)]
struct HttpAnswer {
    #[serde(default)]
    reply: Option<String>,
}

/// Most bytes of an error body quoted in an [`AgentError::Status`].
const QUOTED_BODY: usize = 300;

impl HttpAgent {
    /// An agent at `url`; header values are secrets, marked sensitive so they are never logged.
    pub fn new(
        url: String,
        timeout: Duration,
        headers: &BTreeMap<String, Secret>,
        history_turns: usize,
    ) -> Result<Self, AgentBuildError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let bad = |reason: String| AgentBuildError::Header {
                name: name.clone(),
                reason,
            };
            let hn = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
            let mut hv = HeaderValue::from_str(value.expose())
                .map_err(|_| bad("value is not a valid header value".into()))?;
            hv.set_sensitive(true);
            map.insert(hn, hv);
        }
        Ok(Self {
            client: http_client(timeout),
            url,
            timeout,
            headers: map,
            history_turns,
        })
    }

    /// Previous turns sent along.
    pub fn history_turns(&self) -> usize {
        self.history_turns
    }

    pub(super) async fn reply(&self, turn: &Turn) -> Result<Option<String>, AgentError> {
        let body = if turn.history.len() > self.history_turns {
            let mut cut = turn.clone();
            cut.history = turn.recent_history(self.history_turns).to_vec();
            Cow::Owned(cut)
        } else {
            Cow::Borrowed(turn)
        };
        let resp = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .json(&*body)
            .send()
            .await
            .map_err(|e| AgentError::from_reqwest(e, self.timeout))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| AgentError::from_reqwest(e, self.timeout))?;
        if !status.is_success() {
            return Err(AgentError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body[..body.len().min(QUOTED_BODY)]).into_owned(),
            });
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let answer: HttpAnswer = serde_json::from_slice(&body)
            .map_err(|e| AgentError::BadAnswer(format!("expected {{\"reply\": \"…\"}}: {e}")))?;
        Ok(answer.reply.filter(|r| !r.trim().is_empty()))
    }
}
