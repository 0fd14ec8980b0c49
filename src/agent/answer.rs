//! What an agent answers a turn with (contract v2): messages to send, in order, and optionally a
//! handoff to a person. The `http` agent's `{"reply": "…"}` (v1) reads as one text item.

use crate::cloudapi::outbound::limits as meta;
use crate::config::Duration;
use schemars::JsonSchema;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

/// An agent's answer to one turn. No replies and no handoff: the agent stays silent. Keys
/// besides these are ignored, so an agent may add its own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Answer {
    /// The messages to send, in this order. Each becomes one or more WhatsApp messages (a long
    /// text is split at Meta's 4096-character limit).
    #[serde(default)]
    pub replies: Vec<ReplyItem>,
    /// Hands the conversation to a person once the replies are sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,
}

/// A handoff: the conversation is paused (no agent turns) until a person resumes it or `for`
/// passes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    /// Why, for the person who takes over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long the pause lasts (`30m`, `2h`); default `policies.handoff.pause_for`.
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub pause_for: Option<Duration>,
}

/// One message of an answer: exactly one of its keys says what it is.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum ReplyItem {
    /// Markdown text, converted to WhatsApp formatting.
    Text(TextItem),
    Image {
        image: MediaItem,
    },
    Video {
        video: MediaItem,
    },
    Audio {
        audio: MediaItem,
    },
    Document {
        document: MediaItem,
    },
    Sticker {
        sticker: MediaItem,
    },
    /// One to three reply buttons under a body text.
    Buttons {
        buttons: ButtonsItem,
    },
    /// A list of up to 10 rows, opened by a button.
    List {
        list: ListItem,
    },
    /// A button that opens a URL.
    CtaUrl {
        cta_url: CtaUrlItem,
    },
    Location {
        location: LocationItem,
    },
    /// A reaction to the customer's message that started the turn.
    Reaction {
        reaction: ReactionItem,
    },
}

/// A text item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextItem {
    /// Markdown.
    #[schemars(length(min = 1))]
    pub text: String,
    /// Whether WhatsApp previews the first link; default: when the text holds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_url: Option<bool>,
}

/// A media item: a `url` the gateway fetches (and uploads to Meta, unless
/// `policies.media.upload` is off), or the `media_id` of an upload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    /// Image, video and document only; Markdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = meta::MAX_CAPTION_CHARS))]
    pub caption: Option<String>,
    /// Documents only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// Reply buttons.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ButtonsItem {
    /// Markdown, at most 1024 characters.
    #[schemars(length(min = 1, max = meta::MAX_BUTTONS_BODY_CHARS))]
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = meta::MAX_HEADER_CHARS))]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = meta::MAX_HEADER_CHARS))]
    pub footer: Option<String>,
    /// 1 to 3; title at most 20 characters, id at most 256.
    #[schemars(length(min = 1, max = meta::MAX_BUTTONS))]
    pub buttons: Vec<ChoiceItem>,
}

/// A button: the `id` comes back with the customer's press, with the `title`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChoiceItem {
    #[schemars(length(min = 1, max = meta::MAX_BUTTON_ID_CHARS))]
    pub id: String,
    #[schemars(length(min = 1, max = meta::MAX_BUTTON_TITLE_CHARS))]
    pub title: String,
}

/// A list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListItem {
    /// Markdown, at most 4096 characters.
    #[schemars(length(min = 1, max = meta::MAX_LIST_BODY_CHARS))]
    pub body: String,
    /// The label of the button that opens the list, at most 20 characters.
    #[schemars(length(min = 1, max = meta::MAX_BUTTON_TITLE_CHARS))]
    pub button: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = meta::MAX_HEADER_CHARS))]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = meta::MAX_HEADER_CHARS))]
    pub footer: Option<String>,
    /// At most 10 rows in all sections together.
    #[schemars(length(min = 1, max = meta::MAX_LIST_ROWS))]
    pub sections: Vec<SectionItem>,
}

/// A list section; its title (at most 24 characters) is required when there are several.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SectionItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = meta::MAX_ROW_TITLE_CHARS))]
    pub title: Option<String>,
    #[schemars(length(min = 1, max = meta::MAX_LIST_ROWS))]
    pub rows: Vec<RowItem>,
}

/// A list row: id at most 200 characters, title 24, description 72.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RowItem {
    #[schemars(length(min = 1, max = meta::MAX_ROW_ID_CHARS))]
    pub id: String,
    #[schemars(length(min = 1, max = meta::MAX_ROW_TITLE_CHARS))]
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = meta::MAX_ROW_DESCRIPTION_CHARS))]
    pub description: Option<String>,
}

/// A call-to-action URL button.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CtaUrlItem {
    /// Markdown, at most 1024 characters.
    #[schemars(length(min = 1, max = meta::MAX_BUTTONS_BODY_CHARS))]
    pub body: String,
    /// The button's label, at most 20 characters.
    #[schemars(length(min = 1, max = meta::MAX_BUTTON_TITLE_CHARS))]
    pub display_text: String,
    #[schemars(url)]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = meta::MAX_HEADER_CHARS))]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = meta::MAX_HEADER_CHARS))]
    pub footer: Option<String>,
}

/// A location pin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationItem {
    #[schemars(range(min = -90.0, max = 90.0))]
    pub latitude: f64,
    #[schemars(range(min = -180.0, max = 180.0))]
    pub longitude: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A reaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReactionItem {
    /// One emoji.
    pub emoji: String,
}

/// The key of each kind of item.
const KINDS: [&str; 11] = [
    "text", "image", "video", "audio", "document", "sticker", "buttons", "list", "cta_url",
    "location", "reaction",
];

impl ReplyItem {
    /// A text item with the default link preview.
    pub fn text(text: impl Into<String>) -> Self {
        ReplyItem::Text(TextItem {
            text: text.into(),
            preview_url: None,
        })
    }

    /// The item's key (`text`, `image`, `buttons` …).
    pub fn kind(&self) -> &'static str {
        match self {
            ReplyItem::Text(_) => "text",
            ReplyItem::Image { .. } => "image",
            ReplyItem::Video { .. } => "video",
            ReplyItem::Audio { .. } => "audio",
            ReplyItem::Document { .. } => "document",
            ReplyItem::Sticker { .. } => "sticker",
            ReplyItem::Buttons { .. } => "buttons",
            ReplyItem::List { .. } => "list",
            ReplyItem::CtaUrl { .. } => "cta_url",
            ReplyItem::Location { .. } => "location",
            ReplyItem::Reaction { .. } => "reaction",
        }
    }
}

// By hand rather than `untagged`: an item that matches no kind gets an error naming its kind and
// the field at fault, not "data did not match any variant".
impl<'de> Deserialize<'de> for ReplyItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let kinds: Vec<&str> = KINDS.into_iter().filter(|k| map.contains_key(*k)).collect();
        let kind = match kinds.as_slice() {
            [one] => *one,
            [] => {
                return Err(D::Error::custom(format!(
                    "a reply item needs one of the keys {}",
                    KINDS.join(", ")
                )));
            }
            several => {
                return Err(D::Error::custom(format!(
                    "a reply item is one thing, but this one has the keys {}",
                    several.join(" and ")
                )));
            }
        };
        if kind == "text" {
            return serde_json::from_value(serde_json::Value::Object(map))
                .map(ReplyItem::Text)
                .map_err(|e| D::Error::custom(format!("text item: {e}")));
        }
        if let Some(other) = map.keys().find(|k| k.as_str() != kind) {
            return Err(D::Error::custom(format!(
                "{kind} item: unknown key `{other}` beside `{kind}`"
            )));
        }
        let value = map.remove(kind).unwrap_or_default();
        item(kind, value).map_err(|e| D::Error::custom(format!("{kind} item: {e}")))
    }
}

/// The item of `kind` whose object is `value`.
fn item(kind: &str, value: serde_json::Value) -> Result<ReplyItem, serde_json::Error> {
    use serde_json::from_value as from;
    Ok(match kind {
        "image" => ReplyItem::Image {
            image: from(value)?,
        },
        "video" => ReplyItem::Video {
            video: from(value)?,
        },
        "audio" => ReplyItem::Audio {
            audio: from(value)?,
        },
        "document" => ReplyItem::Document {
            document: from(value)?,
        },
        "sticker" => ReplyItem::Sticker {
            sticker: from(value)?,
        },
        "buttons" => ReplyItem::Buttons {
            buttons: from(value)?,
        },
        "list" => ReplyItem::List { list: from(value)? },
        "cta_url" => ReplyItem::CtaUrl {
            cta_url: from(value)?,
        },
        "location" => ReplyItem::Location {
            location: from(value)?,
        },
        _ => ReplyItem::Reaction {
            reaction: from(value)?,
        },
    })
}

impl Answer {
    /// One Markdown text (an empty or blank one is no reply).
    pub fn text(text: impl Into<String>) -> Self {
        let text = text.into();
        Answer {
            replies: if text.trim().is_empty() {
                Vec::new()
            } else {
                vec![ReplyItem::text(text)]
            },
            handoff: None,
        }
    }
}
