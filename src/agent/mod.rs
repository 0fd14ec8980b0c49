//! Agents: what answers a customer. `echo` (demos, tests), `http` (any service speaking the JSON
//! contract of [`Turn`] and [`Answer`]) and `openai` (any chat-completions server). An agent sees
//! one turn and answers with messages, or none; retries and the circuit breaker live in
//! [`ResilientAgent`].

mod answer;
mod breaker;
mod echo;
mod http;
mod openai;
mod resilient;
pub mod schema;
mod slots;
mod tools;

#[cfg(test)]
mod tests;

/// The language hint of a turn is the policy's own detection result.
pub use crate::policy::LanguageHint;
pub use answer::{
    Answer, ButtonsItem, ChoiceItem, CtaUrlItem, Handoff, ListItem, LocationItem, MediaItem,
    ReactionItem, ReplyItem, RowItem, SectionItem, TextItem,
};
pub use breaker::{BreakerState, CircuitBreaker};
pub use echo::EchoAgent;
pub use http::HttpAgent;
pub use openai::{ChatParams, OpenaiAgent};
pub use resilient::{AgentFailure, ResilientAgent};
pub use slots::{AgentSlots, Slot};

use crate::config;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What an agent is told about one customer turn (also the `http` agent's request body: fields
/// are only ever added to it). A field the gateway does not know is absent, never `null`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Turn {
    pub number: TurnNumber,
    pub customer: TurnCustomer,
    pub message: TurnMessage,
    /// The language the customer writes in, as far as the gateway could tell; absent when the
    /// text is too short to tell (or the agent is `echo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<LanguageHint>,
    /// Earlier turns of this conversation, oldest first, without the current message.
    #[serde(default)]
    pub history: Vec<HistoryTurn>,
}

/// The business number the customer wrote to.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct TurnNumber {
    pub phone_number_id: String,
    pub display_name: String,
}

/// The customer: `user_id` is the business-scoped id, `wa_id` the phone while it is shared.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct TurnCustomer {
    /// The phone-based WhatsApp id, present only while the customer shares their number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<String>,
    /// Meta's business-scoped user id (BSUID), on every webhook since 2026.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The profile name the customer chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The customer's message.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct TurnMessage {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The text, or a text rendering of a non-text message; absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Meta's timestamp, Unix seconds.
    pub timestamp: i64,
    /// The message object exactly as Meta delivered it.
    pub content: serde_json::Value,
    /// The type-specific content in the gateway's own shape (absent when there is none).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub structured: serde_json::Value,
}

/// One earlier message of the conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryTurn {
    pub role: Role,
    /// The customer's text (or its rendering); for the agent, the Markdown it wrote, or a
    /// summary of a message that was not text (`[image] caption`, `body\n[buttons] Yes | No`).
    pub text: String,
    /// Unix seconds.
    pub timestamp: i64,
}

/// Who wrote a history message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Agent,
}

impl Turn {
    /// The last `n` history messages (oldest first).
    pub fn recent_history(&self, n: usize) -> &[HistoryTurn] {
        &self.history[self.history.len().saturating_sub(n)..]
    }
}

/// The current message as plain text, for agents that take nothing else: the pipeline's
/// rendering when there is one, else `[<type>]` with the media caption if Meta sent one.
pub fn render_for_text_agent(turn: &Turn) -> String {
    let msg = &turn.message;
    if let Some(text) = msg.text.as_deref().filter(|t| !t.trim().is_empty()) {
        return text.to_owned();
    }
    let caption = msg.content[msg.kind.as_str()]["caption"]
        .as_str()
        .filter(|c| !c.trim().is_empty());
    match caption {
        Some(c) => format!("[{}] {c}", msg.kind),
        None => format!("[{}]", msg.kind),
    }
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
    #[error("agent answer is not what its kind promises: {0}")]
    BadAnswer(String),
}

impl AgentError {
    /// Whether trying again may help: timeouts, transport errors, 5xx, and 408/429 (which
    /// say "later" rather than "never").
    pub fn is_retryable(&self) -> bool {
        match self {
            AgentError::Timeout(_) | AgentError::Transport(_) => true,
            AgentError::Status { status, .. } => *status >= 500 || matches!(status, 408 | 429),
            AgentError::BadAnswer(_) => false,
        }
    }

    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AgentError::Timeout(_) => "timeout",
            AgentError::Transport(_) => "transport",
            AgentError::Status { .. } => "status",
            AgentError::BadAnswer(_) => "bad_answer",
        }
    }

    /// Maps a reqwest failure, keeping URLs (which may carry credentials) out of the text.
    fn from_reqwest(e: reqwest::Error, timeout: Duration) -> Self {
        if e.is_timeout() {
            AgentError::Timeout(timeout)
        } else {
            AgentError::Transport(e.without_url().to_string())
        }
    }
}

/// Why an agent's config cannot be turned into an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentBuildError {
    #[error("agent header {name:?}: {reason}")]
    Header { name: String, reason: String },
    #[error("api_key is not a valid header value (it must be visible ASCII)")]
    ApiKey,
}

/// The kinds of agent, named as in the config (`echo`, `http`, `openai`) in metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentKind {
    /// [`EchoAgent`].
    Echo,
    /// [`HttpAgent`].
    Http,
    /// [`OpenaiAgent`].
    Openai,
}

impl AgentKind {
    /// The kind's name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Echo => "echo",
            AgentKind::Http => "http",
            AgentKind::Openai => "openai",
        }
    }

    /// Whether the agent reads more of a turn than its text: the language hint, the message
    /// as Meta sent it and its structured content. The echo agent reads only the text.
    pub fn reads_more_than_text(self) -> bool {
        self != AgentKind::Echo
    }
}

impl std::fmt::Display for AgentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ready-to-call agent built from its config.
#[derive(Clone, Debug)]
pub enum Agent {
    Echo(EchoAgent),
    Http(HttpAgent),
    Openai(OpenaiAgent),
}

impl Agent {
    /// Builds an agent from its (validated, secrets resolved) config.
    pub fn from_config(cfg: &config::Agent) -> Result<Self, AgentBuildError> {
        Ok(match cfg {
            config::Agent::Echo { prefix, delay } => {
                Agent::Echo(EchoAgent::new(prefix.clone(), delay.get()))
            }
            config::Agent::Http {
                url,
                timeout,
                headers,
                history_turns,
            } => Agent::Http(HttpAgent::new(
                url.clone(),
                timeout.get(),
                headers,
                *history_turns,
            )?),
            config::Agent::Openai {
                url,
                model,
                api_key,
                system_prompt,
                temperature,
                max_tokens,
                timeout,
                history_turns,
                tools,
            } => Agent::Openai(OpenaiAgent::new(
                url,
                api_key.as_ref(),
                timeout.get(),
                ChatParams {
                    model: model.clone(),
                    system_prompt: system_prompt.clone(),
                    temperature: *temperature,
                    max_tokens: *max_tokens,
                    history_turns: *history_turns,
                    tools: tools.clone(),
                },
            )?),
        })
    }

    /// How many previous turns this agent wants as history (0: none, so none is loaded).
    pub fn history_turns(&self) -> usize {
        match self {
            Agent::Echo(_) => 0,
            Agent::Http(a) => a.history_turns(),
            Agent::Openai(a) => a.history_turns(),
        }
    }

    /// Which kind of agent this is.
    pub fn kind(&self) -> AgentKind {
        match self {
            Agent::Echo(_) => AgentKind::Echo,
            Agent::Http(_) => AgentKind::Http,
            Agent::Openai(_) => AgentKind::Openai,
        }
    }

    /// Asks the agent for its answer to `turn` once (an empty answer is "no reply").
    pub async fn reply(&self, turn: &Turn) -> Result<Answer, AgentError> {
        match self {
            Agent::Echo(a) => Ok(a.reply(turn).await.map(Answer::text).unwrap_or_default()),
            Agent::Http(a) => a.reply(turn).await,
            Agent::Openai(a) => a.reply(turn).await,
        }
    }
}

/// The client every HTTP-speaking agent uses: one per agent, with the agent's timeout.
fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("the TLS backend is compiled in")
}
