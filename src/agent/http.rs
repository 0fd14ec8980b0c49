//! The `http` agent: POSTs the [`Turn`] as JSON and reads the [`Answer`] back: `{"replies":
//! […], "handoff"?: {…}}`, or v1's `{"reply": "…"}` (204 or an empty body: no reply). History is
//! cut to the agent's `history_turns`.

use super::{AgentBuildError, AgentError, Answer, Handoff, ReplyItem, Turn, http_client};
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

/// The answer as it comes: v1 (`reply`) or v2 (`replies`, `handoff`). Other keys are ignored,
/// so an agent may add its own.
#[derive(Deserialize)]
struct HttpAnswer {
    #[serde(default)]
    reply: Option<String>,
    #[serde(default)]
    replies: Option<Vec<ReplyItem>>,
    #[serde(default)]
    handoff: Option<Handoff>,
}

impl HttpAnswer {
    fn parse(body: &[u8]) -> Result<Answer, AgentError> {
        let de = &mut serde_json::Deserializer::from_slice(body);
        let answer: HttpAnswer = serde_path_to_error::deserialize(de).map_err(|e| {
            AgentError::BadAnswer(format!(
                "expected {{\"replies\": […]}} or {{\"reply\": \"…\"}}: {}: {}",
                e.path(),
                e.inner()
            ))
        })?;
        match (answer.reply, answer.replies) {
            (Some(_), Some(_)) => Err(AgentError::BadAnswer(
                "an answer has `replies` (v2) or `reply` (v1), not both".into(),
            )),
            (reply, None) => Ok(Answer {
                handoff: answer.handoff,
                ..Answer::text(reply.unwrap_or_default())
            }),
            (None, Some(replies)) => Ok(Answer {
                replies,
                handoff: answer.handoff,
            }),
        }
    }
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

    pub(super) async fn reply(&self, turn: &Turn) -> Result<Answer, AgentError> {
        let body = if turn.history.len() > self.history_turns {
            let mut cut = turn.clone();
            cut.history = turn.recent_history(self.history_turns).to_vec();
            Cow::Owned(cut)
        } else {
            Cow::Borrowed(turn)
        };
        let mut headers = self.headers.clone();
        // The agent's work joins the message's trace (W3C Trace Context), and its `/media`
        // calls back carry it on.
        crate::telemetry::inject(&mut headers);
        let resp = self
            .client
            .post(&self.url)
            .headers(headers)
            .json(&*body)
            .send()
            .await
            .map_err(|e| AgentError::from_reqwest(e, self.timeout))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(Answer::default());
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
            return Ok(Answer::default());
        }
        HttpAnswer::parse(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Answer, String> {
        HttpAnswer::parse(body.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_v1_and_v2_answers() {
        assert_eq!(parse(r#"{"reply": "hi"}"#).unwrap(), Answer::text("hi"));
        assert_eq!(parse(r#"{"reply": null}"#).unwrap(), Answer::default());
        assert_eq!(parse(r#"{"reply": "  "}"#).unwrap(), Answer::default());
        assert_eq!(parse(r#"{"replies": []}"#).unwrap(), Answer::default());
        let v2 = parse(
            r#"{"replies": [{"text": "a"}, {"reaction": {"emoji": "👍"}}],
                "handoff": {"reason": "asked for a person", "for": "2h"}, "trace": "mine"}"#,
        )
        .unwrap();
        assert_eq!(v2.replies.len(), 2);
        assert_eq!(v2.replies[1].kind(), "reaction");
        let handoff = v2.handoff.unwrap();
        assert_eq!(handoff.reason.as_deref(), Some("asked for a person"));
        assert_eq!(
            handoff.pause_for.map(|d| d.get()),
            Some(Duration::from_secs(7200))
        );
    }

    #[test]
    fn a_malformed_answer_says_where() {
        for (body, says) in [
            (r#"{"reply": "a", "replies": []}"#, "not both"),
            (
                r#"{"replies": [{"txt": "a"}]}"#,
                "replies[0]: a reply item needs one of the keys text, image",
            ),
            (
                r#"{"replies": [{"text": "a"}, {"text": "b", "image": {}}]}"#,
                "replies[1]: a reply item is one thing, but this one has the keys text and image",
            ),
            (
                r#"{"replies": [{"buttons": {"body": "x"}}]}"#,
                "replies[0]: buttons item: missing field `buttons`",
            ),
            (
                r#"{"replies": [{"image": {"url": "u"}, "caption": "c"}]}"#,
                "unknown key `caption` beside `image`",
            ),
            (
                r#"{"replies": [{"text": "a", "preview": true}]}"#,
                "text item: unknown field `preview`",
            ),
            (
                r#"{"handoff": {"for": "soon"}}"#,
                "handoff.for: invalid duration",
            ),
        ] {
            let err = parse(body).unwrap_err();
            assert!(err.contains(says), "{body}: {err}");
        }
    }
}
