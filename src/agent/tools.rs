//! The `openai` agent's tools (`tools: [buttons, list, media, handoff]`): the functions offered
//! to the model, each with the JSON Schema of its arguments, and the model's calls read back as
//! reply items or a handoff. A model that calls none answers with its text as before.

use super::{AgentError, Answer, ButtonsItem, Handoff, ListItem, MediaItem, ReplyItem};
use crate::config::AgentTool;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Deserialize;
use serde_json::{Value, json};

/// The function a tool is offered as, and what it is for (the model reads the description).
fn function(tool: AgentTool) -> (&'static str, &'static str) {
    match tool {
        AgentTool::Buttons => (
            "send_buttons",
            "Send the customer a message with 1 to 3 reply buttons (titles of at most 20 \
             characters). Their choice comes back as their next message.",
        ),
        AgentTool::List => (
            "send_list",
            "Send the customer a list of up to 10 options in sections, opened by a button. \
             Their choice comes back as their next message.",
        ),
        AgentTool::Media => (
            "send_media",
            "Send the customer an image, video, audio, document or sticker from an https URL.",
        ),
        AgentTool::Handoff => (
            "hand_off",
            "Hand the conversation to a person: you stop answering until they hand it back. \
             Use it when the customer asks for a person or you cannot help.",
        ),
    }
}

/// The arguments of `send_media`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MediaCall {
    kind: MediaCallKind,
    /// An https URL the gateway fetches.
    url: String,
    /// Image, video and document only.
    #[serde(default)]
    caption: Option<String>,
    /// Documents only: the file name the customer sees.
    #[serde(default)]
    filename: Option<String>,
}

/// The kinds of media `send_media` sends.
#[derive(Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum MediaCallKind {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

/// The JSON Schema of `T`, inline (no references), as function parameters.
fn parameters<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft07()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut schema = serde_json::to_value(generator.into_root_schema_for::<T>())
        .expect("a schema is plain JSON");
    if let Some(o) = schema.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
    }
    schema
}

/// The `tools` of a chat-completions request offering `tools`.
pub(super) fn definitions(tools: &[AgentTool]) -> Vec<Value> {
    tools
        .iter()
        .map(|&tool| {
            let (name, description) = function(tool);
            let parameters = match tool {
                AgentTool::Buttons => parameters::<ButtonsItem>(),
                AgentTool::List => parameters::<ListItem>(),
                AgentTool::Media => parameters::<MediaCall>(),
                AgentTool::Handoff => parameters::<Handoff>(),
            };
            json!({ "type": "function",
                    "function": { "name": name, "description": description, "parameters": parameters } })
        })
        .collect()
}

/// One tool call of the model's answer.
#[derive(Debug, Deserialize)]
pub(super) struct ToolCall {
    function: FunctionCall,
}

#[derive(Debug, Deserialize)]
struct FunctionCall {
    name: String,
    /// The arguments as a JSON text (OpenAI's shape).
    arguments: String,
}

/// The answer made of the model's text (first, when there is one) and its tool calls, in order.
/// A call of a tool not offered, or with arguments that do not fit, is a bad answer.
pub(super) fn answer(
    offered: &[AgentTool],
    content: Option<String>,
    calls: Vec<ToolCall>,
) -> Result<Answer, AgentError> {
    let mut answer = Answer::text(content.unwrap_or_default());
    for call in calls {
        let FunctionCall { name, arguments } = call.function;
        let tool = offered
            .iter()
            .copied()
            .find(|&t| function(t).0 == name)
            .ok_or_else(|| {
                AgentError::BadAnswer(format!("the model called `{name}`, which is not offered"))
            })?;
        let bad = |e: serde_json::Error| {
            AgentError::BadAnswer(format!(
                "the model called `{name}` with arguments that do not fit: {e}"
            ))
        };
        match tool {
            AgentTool::Buttons => answer.replies.push(ReplyItem::Buttons {
                buttons: serde_json::from_str(&arguments).map_err(bad)?,
            }),
            AgentTool::List => answer.replies.push(ReplyItem::List {
                list: serde_json::from_str(&arguments).map_err(bad)?,
            }),
            AgentTool::Media => {
                let call: MediaCall = serde_json::from_str(&arguments).map_err(bad)?;
                answer.replies.push(media_item(call));
            }
            AgentTool::Handoff => {
                answer.handoff = Some(serde_json::from_str(&arguments).map_err(bad)?);
            }
        }
    }
    Ok(answer)
}

fn media_item(call: MediaCall) -> ReplyItem {
    let m = MediaItem {
        url: Some(call.url),
        media_id: None,
        caption: call.caption,
        filename: call.filename,
    };
    match call.kind {
        MediaCallKind::Image => ReplyItem::Image { image: m },
        MediaCallKind::Video => ReplyItem::Video { video: m },
        MediaCallKind::Audio => ReplyItem::Audio { audio: m },
        MediaCallKind::Document => ReplyItem::Document { document: m },
        MediaCallKind::Sticker => ReplyItem::Sticker { sticker: m },
    }
}
