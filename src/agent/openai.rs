//! The `openai` agent: any OpenAI-compatible chat-completions server. A turn becomes
//! `[system, …history, user]`, with the configured tools offered as functions; the answer is
//! `choices[0].message.content` followed by what its tool calls make (`tools.rs`).

use super::tools::{self, ToolCall};
use super::{AgentBuildError, AgentError, Answer, Role, Turn, http_client, render_for_text_agent};
use crate::config::{AgentTool, Secret};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What shapes each request besides the conversation.
#[derive(Clone, Debug)]
pub struct ChatParams {
    pub model: String,
    /// Starts every request as the system message (with the language hint appended).
    pub system_prompt: String,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    /// Earlier messages sent along, at most.
    pub history_turns: usize,
    /// The tools offered to the model.
    pub tools: Vec<AgentTool>,
}

/// A chat-completions client for one configured agent.
#[derive(Clone, Debug)]
pub struct OpenaiAgent {
    client: reqwest::Client,
    endpoint: String,
    /// `Bearer …`, marked sensitive.
    auth: Option<HeaderValue>,
    /// Kept to scrub it from error text a server might echo it in.
    api_key: Option<Secret>,
    timeout: Duration,
    params: ChatParams,
}

#[derive(Debug, Serialize)]
pub(super) struct ChatRequest<'a> {
    pub model: &'a str,
    pub messages: Vec<ChatMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<serde_json::Value>,
}

#[derive(Debug, PartialEq, Serialize)]
pub(super) struct ChatMessage<'a> {
    pub role: &'static str,
    pub content: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct ChatAnswer {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: AnswerMessage,
}

#[derive(Deserialize)]
struct AnswerMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCall>,
}

/// OpenAI's error body: `{"error": {"message": …, "type": …, "code": …}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: String,
}

/// Most characters of an error body quoted when it is not OpenAI's shape.
const QUOTED_BODY: usize = 300;

impl OpenaiAgent {
    /// Previous turns sent as history.
    pub fn history_turns(&self) -> usize {
        self.params.history_turns
    }

    /// A client for the server at `base_url` (up to `/v1`).
    pub fn new(
        base_url: &str,
        api_key: Option<&Secret>,
        timeout: Duration,
        params: ChatParams,
    ) -> Result<Self, AgentBuildError> {
        let auth = match api_key {
            Some(key) => {
                let mut hv = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                    .map_err(|_| AgentBuildError::ApiKey)?;
                hv.set_sensitive(true);
                Some(hv)
            }
            None => None,
        };
        Ok(Self {
            client: http_client(timeout),
            endpoint: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            auth,
            api_key: api_key.cloned(),
            timeout,
            params,
        })
    }

    /// The request body for `turn`.
    pub(super) fn request<'a>(&'a self, turn: &'a Turn) -> ChatRequest<'a> {
        let p = &self.params;
        let mut system = p.system_prompt.trim().to_owned();
        if let Some(lang) = turn.language.as_ref().filter(|l| l.reliable) {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(&format!(
                "The customer writes in {} ({}).",
                lang.name, lang.code
            ));
        }
        let mut messages = Vec::with_capacity(p.history_turns + 2);
        if !system.is_empty() {
            messages.push(ChatMessage {
                role: "system",
                content: system.into(),
            });
        }
        messages.extend(
            turn.recent_history(p.history_turns)
                .iter()
                .map(|h| ChatMessage {
                    role: match h.role {
                        Role::Customer => "user",
                        Role::Agent => "assistant",
                    },
                    content: h.text.as_str().into(),
                }),
        );
        messages.push(ChatMessage {
            role: "user",
            content: render_for_text_agent(turn).into(),
        });
        ChatRequest {
            model: &p.model,
            messages,
            temperature: p.temperature,
            max_tokens: p.max_tokens,
            tools: tools::definitions(&p.tools),
        }
    }

    pub(super) async fn reply(&self, turn: &Turn) -> Result<Answer, AgentError> {
        let mut req = self.client.post(&self.endpoint).json(&self.request(turn));
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| AgentError::from_reqwest(e, self.timeout))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| AgentError::from_reqwest(e, self.timeout))?;
        if !status.is_success() {
            let text = match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(e) => e.error.message,
                Err(_) => String::from_utf8_lossy(&body)
                    .chars()
                    .take(QUOTED_BODY)
                    .collect(),
            };
            return Err(AgentError::Status {
                status: status.as_u16(),
                body: self.scrub(text),
            });
        }
        let answer: ChatAnswer = serde_json::from_slice(&body).map_err(|e| {
            AgentError::BadAnswer(format!("expected a chat.completion object: {e}"))
        })?;
        let first = answer
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| AgentError::BadAnswer("the answer has no choices".into()))?;
        tools::answer(
            &self.params.tools,
            first.message.content,
            first.message.tool_calls,
        )
    }

    /// Servers quote a wrong key back ("Incorrect API key provided: sk-…"); ours never leaves.
    fn scrub(&self, text: String) -> String {
        match &self.api_key {
            Some(key) if !key.expose().is_empty() && text.contains(key.expose()) => {
                text.replace(key.expose(), "[redacted]")
            }
            _ => text,
        }
    }
}
