//! Agents: what answers a customer. `echo` (demos, tests) and `http` (any service speaking the
//! JSON contract below). An agent sees one turn and returns the reply text, or none.

use crate::config;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What an agent is told about one customer turn (also the `http` agent's request body).
#[derive(Clone, Debug, Serialize)]
pub struct Turn {
    pub number: TurnNumber,
    pub customer: TurnCustomer,
    pub message: TurnMessage,
}

/// The business number the customer wrote to.
#[derive(Clone, Debug, Serialize)]
pub struct TurnNumber {
    pub phone_number_id: String,
    pub display_name: String,
}

/// The customer: `user_id` is the business-scoped id, `wa_id` the phone while it is shared.
#[derive(Clone, Debug, Serialize)]
pub struct TurnCustomer {
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub name: Option<String>,
}

/// The customer's message.
#[derive(Clone, Debug, Serialize)]
pub struct TurnMessage {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
    /// Meta's timestamp, Unix seconds.
    pub timestamp: i64,
    /// The message object exactly as Meta delivered it.
    pub content: serde_json::Value,
}

/// Why an agent gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent timed out after {0:?}")]
    Timeout(Duration),
    #[error("agent call failed: {0}")]
    Transport(String),
    #[error("agent answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("agent answer is not {{\"reply\": \"…\"}}: {0}")]
    BadAnswer(String),
}

/// A ready-to-call agent built from its config.
#[derive(Clone, Debug)]
pub enum Agent {
    Echo {
        prefix: String,
        delay: Duration,
    },
    Http {
        client: reqwest::Client,
        url: String,
        timeout: Duration,
        headers: reqwest::header::HeaderMap,
    },
}

#[derive(Deserialize)]
struct HttpAnswer {
    #[serde(default)]
    reply: Option<String>,
}

/// Why an agent's config cannot be turned into an agent.
#[derive(Debug, thiserror::Error)]
#[error("agent header {name:?}: {reason}")]
pub struct AgentBuildError {
    name: String,
    reason: String,
}

impl Agent {
    /// Builds an agent from its (validated, secrets resolved) config.
    pub fn from_config(cfg: &config::Agent) -> Result<Self, AgentBuildError> {
        Ok(match cfg {
            config::Agent::Echo { prefix, delay } => Agent::Echo {
                prefix: prefix.clone(),
                delay: delay.get(),
            },
            config::Agent::Openai { .. } => {
                return Err(AgentBuildError {
                    name: "kind".into(),
                    reason: "openai agents are not available yet".into(),
                });
            }
            config::Agent::Http {
                url,
                timeout,
                headers,
                ..
            } => {
                let mut map = reqwest::header::HeaderMap::new();
                for (name, value) in headers {
                    let hn =
                        reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
                            AgentBuildError {
                                name: name.clone(),
                                reason: e.to_string(),
                            }
                        })?;
                    let mut hv =
                        reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| {
                            AgentBuildError {
                                name: name.clone(),
                                reason: "value is not a valid header value".into(),
                            }
                        })?;
                    hv.set_sensitive(true);
                    map.insert(hn, hv);
                }
                Agent::Http {
                    client: reqwest::Client::builder()
                        .timeout(timeout.get())
                        .build()
                        .expect("the TLS backend is compiled in"),
                    url: url.clone(),
                    timeout: timeout.get(),
                    headers: map,
                }
            }
        })
    }

    /// `echo` or `http`, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Agent::Echo { .. } => "echo",
            Agent::Http { .. } => "http",
        }
    }

    /// Asks the agent for the reply to `turn`; `Ok(None)` means "no reply".
    pub async fn reply(&self, turn: &Turn) -> Result<Option<String>, AgentError> {
        match self {
            Agent::Echo { prefix, delay } => {
                if !delay.is_zero() {
                    tokio::time::sleep(*delay).await;
                }
                Ok(turn
                    .message
                    .text
                    .as_deref()
                    .filter(|t| !t.is_empty())
                    .map(|t| format!("{prefix}{t}")))
            }
            Agent::Http {
                client,
                url,
                timeout,
                headers,
            } => {
                let resp = client
                    .post(url)
                    .headers(headers.clone())
                    .json(turn)
                    .send()
                    .await
                    .map_err(|e| {
                        if e.is_timeout() {
                            AgentError::Timeout(*timeout)
                        } else {
                            AgentError::Transport(e.without_url().to_string())
                        }
                    })?;
                let status = resp.status();
                if status == reqwest::StatusCode::NO_CONTENT {
                    return Ok(None);
                }
                let body = resp.bytes().await.map_err(|e| {
                    if e.is_timeout() {
                        AgentError::Timeout(*timeout)
                    } else {
                        AgentError::Transport(e.without_url().to_string())
                    }
                })?;
                if !status.is_success() {
                    return Err(AgentError::Status {
                        status: status.as_u16(),
                        body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
                    });
                }
                if body.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                let answer: HttpAnswer = serde_json::from_slice(&body)
                    .map_err(|e| AgentError::BadAnswer(e.to_string()))?;
                Ok(answer.reply.filter(|r| !r.trim().is_empty()))
            }
        }
    }
}
