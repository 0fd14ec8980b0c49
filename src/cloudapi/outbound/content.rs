//! What an outbound message carries, in Meta's JSON: text, media, interactive buttons, lists
//! and call-to-action links, locations and reactions. Their limits are `limits.rs`'s.

use serde::{Deserialize, Serialize};

/// What a message carries, tagged by Meta's `type` (the object of that name holds it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Text { text: Text },
    Image { image: Media },
    Video { video: Media },
    Audio { audio: Media },
    Document { document: Media },
    Sticker { sticker: Media },
    Interactive { interactive: Interactive },
    Location { location: Location },
    Reaction { reaction: Reaction },
}

/// The `text` object of a text message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Text {
    /// The text itself (at most 4096 characters; `reply::shape` cuts longer replies).
    pub body: String,
    /// Whether WhatsApp shows a preview of the first URL in `body` (optional at Meta: no).
    #[serde(default)]
    pub preview_url: bool,
}

/// The kinds of media message, each with Meta's own size and type limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

impl MediaKind {
    /// Every kind, in Meta's order.
    pub const ALL: [MediaKind; 5] = [
        MediaKind::Image,
        MediaKind::Video,
        MediaKind::Audio,
        MediaKind::Document,
        MediaKind::Sticker,
    ];

    /// Meta's `type` for this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Document => "document",
            MediaKind::Sticker => "sticker",
        }
    }

    /// The largest file Meta takes for this kind, in bytes (an animated sticker may be 500 KB;
    /// a static one 100 KB, which only the file itself tells).
    pub fn max_bytes(self) -> u64 {
        const MB: u64 = 1024 * 1024;
        match self {
            MediaKind::Image => 5 * MB,
            MediaKind::Video | MediaKind::Audio => 16 * MB,
            MediaKind::Document => 100 * MB,
            MediaKind::Sticker => 500 * 1024,
        }
    }

    /// The MIME types Meta accepts for this kind (a file's upload type is one of these; Ogg is
    /// Opus audio only, and a document one of the types WhatsApp opens).
    pub fn mime_types(self) -> &'static [&'static str] {
        match self {
            MediaKind::Image => &["image/jpeg", "image/png"],
            MediaKind::Video => &["video/mp4", "video/3gpp"],
            MediaKind::Audio => &[
                "audio/aac",
                "audio/amr",
                "audio/mpeg",
                "audio/mp4",
                "audio/ogg",
                "audio/opus",
            ],
            MediaKind::Document => &[
                "application/pdf",
                "text/plain",
                "application/msword",
                "application/vnd.ms-excel",
                "application/vnd.ms-powerpoint",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "application/vnd.openxmlformats-officedocument.presentationml.presentation",
            ],
            MediaKind::Sticker => &["image/webp"],
        }
    }

    /// Whether Meta takes a `caption` with this kind.
    pub fn takes_caption(self) -> bool {
        matches!(
            self,
            MediaKind::Image | MediaKind::Video | MediaKind::Document
        )
    }
}

/// A media object: by the `id` of an upload or by a `link` Meta fetches (exactly one).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Media {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// A document's file name, shown to the customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// An interactive message: reply buttons, a list, or a call-to-action URL button.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interactive {
    /// The `type` and its `action`.
    #[serde(flatten)]
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<Header>,
    pub body: Body,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footer: Option<Footer>,
}

/// An interactive message's `type` with its `action` object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "action", rename_all = "snake_case")]
pub enum Action {
    Button(Buttons),
    List(List),
    CtaUrl(CtaUrl),
}

/// A text header (the only kind a list or a call-to-action takes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Header {
    Text { text: String },
}

/// The body text of an interactive message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Body {
    pub text: String,
}

/// The footer text of an interactive message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Footer {
    pub text: String,
}

/// The action of reply buttons.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Buttons {
    pub buttons: Vec<Button>,
}

/// One reply button (`{"type": "reply", "reply": {id, title}}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Button {
    Reply { reply: Choice },
}

/// What a button or a list row shows and the id the customer's choice comes back with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub id: String,
    pub title: String,
}

/// The action of a list: the button that opens it and its sections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct List {
    pub button: String,
    pub sections: Vec<Section>,
}

/// A list section (its title is required when there are several).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Section {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub rows: Vec<Row>,
}

/// A list row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The action of a call-to-action URL button (`{"name": "cta_url", "parameters": …}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "parameters", rename_all = "snake_case")]
pub enum CtaUrl {
    CtaUrl { display_text: String, url: String },
}

/// A location pin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A reaction to a customer's message (an empty emoji takes a reaction back).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reaction {
    pub message_id: String,
    pub emoji: String,
}

impl Content {
    /// Meta's `type` of this content.
    pub fn type_name(&self) -> &'static str {
        match self {
            Content::Text { .. } => "text",
            Content::Image { .. } => "image",
            Content::Video { .. } => "video",
            Content::Audio { .. } => "audio",
            Content::Document { .. } => "document",
            Content::Sticker { .. } => "sticker",
            Content::Interactive { .. } => "interactive",
            Content::Location { .. } => "location",
            Content::Reaction { .. } => "reaction",
        }
    }

    /// Media content of `kind`.
    pub fn media(kind: MediaKind, media: Media) -> Self {
        match kind {
            MediaKind::Image => Content::Image { image: media },
            MediaKind::Video => Content::Video { video: media },
            MediaKind::Audio => Content::Audio { audio: media },
            MediaKind::Document => Content::Document { document: media },
            MediaKind::Sticker => Content::Sticker { sticker: media },
        }
    }

    /// The media this content carries, with its kind.
    pub fn as_media(&self) -> Option<(MediaKind, &Media)> {
        match self {
            Content::Image { image } => Some((MediaKind::Image, image)),
            Content::Video { video } => Some((MediaKind::Video, video)),
            Content::Audio { audio } => Some((MediaKind::Audio, audio)),
            Content::Document { document } => Some((MediaKind::Document, document)),
            Content::Sticker { sticker } => Some((MediaKind::Sticker, sticker)),
            _ => None,
        }
    }
}

impl Content {
    /// The message as one readable text, for the conversation's history and the terminal chat:
    /// `[buttons] Yes | No`, `[image] caption`, `[location] name, address (lat, lon)`.
    pub fn summary(&self) -> String {
        match self {
            Content::Text { text } => text.body.clone(),
            Content::Interactive { interactive } => interactive.summary(),
            Content::Location { location: l } => {
                let named: Vec<&str> = [l.name.as_deref(), l.address.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect();
                let at = format!("({}, {})", l.latitude, l.longitude);
                match named.is_empty() {
                    true => format!("[location] {at}"),
                    false => format!("[location] {} {at}", named.join(", ")),
                }
            }
            Content::Reaction { reaction } => format!("[reaction] {}", reaction.emoji),
            media => match media.as_media() {
                Some((kind, m)) => {
                    let label = m.caption.as_deref().or(m.filename.as_deref());
                    match label {
                        Some(l) => format!("[{}] {l}", kind.as_str()),
                        None => format!("[{}]", kind.as_str()),
                    }
                }
                None => String::new(),
            },
        }
    }
}

impl Interactive {
    fn summary(&self) -> String {
        let choices = match &self.action {
            Action::Button(b) => {
                let titles: Vec<&str> = b
                    .buttons
                    .iter()
                    .map(|Button::Reply { reply }| reply.title.as_str())
                    .collect();
                format!("[buttons] {}", titles.join(" | "))
            }
            Action::List(l) => {
                let rows: Vec<&str> = l
                    .sections
                    .iter()
                    .flat_map(|s| s.rows.iter().map(|r| r.title.as_str()))
                    .collect();
                format!("[list] {}: {}", l.button, rows.join(" | "))
            }
            Action::CtaUrl(CtaUrl::CtaUrl { display_text, url }) => {
                format!("[link] {display_text}: {url}")
            }
        };
        format!("{}\n{choices}", self.body.text)
    }
}
