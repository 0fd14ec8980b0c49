//! Inbound messages: the message a customer sent, what it says by `type` (`Content`) and the
//! message type as stored (`MessageType`). The model only; parsing is in `convert`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiError, Contact};
use crate::ids::{CustomerKey, UserId, WaId, Wamid};

/// A message a customer sent to one of our numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InboundMessage {
    pub id: Wamid,
    pub from: Option<WaId>,
    pub from_user_id: Option<UserId>,
    /// Unix seconds.
    pub timestamp: i64,
    pub group_id: Option<String>,
    pub context: Option<Context>,
    /// Click-to-WhatsApp ad referral, as received.
    pub referral: Option<Value>,
    pub content: Content,
    pub errors: Vec<ApiError>,
    /// The whole message object exactly as received, unknown fields included.
    pub raw: Value,
}

/// The message a customer replied to or forwarded, or the product asked about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Context {
    pub from: Option<String>,
    pub id: Option<Wamid>,
    pub forwarded: bool,
    pub frequently_forwarded: bool,
    pub referred_product: Option<Value>,
}

/// What a message says, by its `type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    Text {
        body: String,
    },
    Image(Media),
    Video(Media),
    /// `voice` is set for voice notes.
    Audio(Media),
    Document(Media),
    Sticker(Media),
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
        address: Option<String>,
        url: Option<String>,
    },
    /// Shared contact cards, as received.
    Contacts(Vec<Value>),
    Interactive(Interactive),
    /// A template's quick-reply button.
    Button {
        payload: String,
        text: String,
    },
    /// `emoji` is None when the reaction was removed.
    Reaction {
        message_id: Wamid,
        emoji: Option<String>,
    },
    Order {
        catalog_id: String,
        text: Option<String>,
        product_items: Vec<Value>,
    },
    /// A notice such as `user_changed_number`; `kind` is the system `type`.
    System {
        body: Option<String>,
        kind: Option<String>,
        new_wa_id: Option<WaId>,
    },
    /// New content for an earlier message of the same turn.
    Edit {
        original_message_id: Wamid,
        message: Box<Content>,
    },
    /// The customer deleted an earlier message.
    Revoke {
        original_message_id: Wamid,
    },
    /// The customer opened a chat with the business for the first time.
    RequestWelcome,
    /// `unsupported`, a type this build does not know, or a known type whose object is malformed.
    Unsupported {
        type_name: String,
    },
}

/// A media attachment, to be fetched by `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Media {
    pub id: String,
    pub mime_type: Option<String>,
    pub sha256: Option<String>,
    pub caption: Option<String>,
    pub filename: Option<String>,
    #[serde(default)]
    pub voice: bool,
    #[serde(default)]
    pub animated: bool,
}

/// A reply to an interactive message, by its `interactive.type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Interactive {
    ButtonReply {
        id: String,
        title: String,
    },
    ListReply {
        id: String,
        title: String,
        description: Option<String>,
    },
    /// A WhatsApp Flow's answer; `response_json` is a JSON document in a string.
    NfmReply {
        name: Option<String>,
        body: Option<String>,
        response_json: String,
    },
    /// Any other interactive reply, as received.
    Other(Value),
}

impl InboundMessage {
    /// Parses one message object as stored (the `raw` of an earlier parse).
    pub fn from_raw(raw: Value) -> Result<InboundMessage, &'static str> {
        super::convert::inbound_message(raw)
    }

    /// The wire `type` (for an unsupported message, the type it claimed).
    pub fn type_name(&self) -> &str {
        self.content.type_name()
    }

    /// The contact of `contacts` that names this message's sender: same BSUID or same wa_id.
    pub fn contact<'c>(&self, contacts: &'c [Contact]) -> Option<&'c Contact> {
        contacts.iter().find(|c| {
            (self.from_user_id.is_some() && c.user_id == self.from_user_id)
                || (self.from.is_some() && c.wa_id == self.from)
        })
    }

    /// Who wrote it: the BSUID (ours or the matching contact's) when known, else the wa_id.
    pub fn customer_key(&self, contacts: &[Contact]) -> Option<CustomerKey> {
        let contact = self.contact(contacts);
        let user_id = self
            .from_user_id
            .as_ref()
            .or_else(|| contact.and_then(|c| c.user_id.as_ref()));
        let wa_id = self
            .from
            .as_ref()
            .or_else(|| contact.and_then(|c| c.wa_id.as_ref()));
        CustomerKey::from_ids(user_id.map(UserId::as_str), wa_id.map(WaId::as_str))
    }
}

impl Content {
    /// The wire `type` this content came from.
    pub fn type_name(&self) -> &str {
        match self {
            Content::Unsupported { type_name } => type_name,
            known => known.label(),
        }
    }

    /// A bounded name for metrics and logs: the type, or "unsupported" for anything unknown.
    pub fn label(&self) -> &'static str {
        self.message_type().label()
    }

    /// The message type this content is; never [`MessageType::Other`].
    pub fn message_type(&self) -> MessageType {
        match self {
            Content::Text { .. } => MessageType::Text,
            Content::Image(_) => MessageType::Image,
            Content::Video(_) => MessageType::Video,
            Content::Audio(_) => MessageType::Audio,
            Content::Document(_) => MessageType::Document,
            Content::Sticker(_) => MessageType::Sticker,
            Content::Location { .. } => MessageType::Location,
            Content::Contacts(_) => MessageType::Contacts,
            Content::Interactive(_) => MessageType::Interactive,
            Content::Button { .. } => MessageType::Button,
            Content::Reaction { .. } => MessageType::Reaction,
            Content::Order { .. } => MessageType::Order,
            Content::System { .. } => MessageType::System,
            Content::Edit { .. } => MessageType::Edit,
            Content::Revoke { .. } => MessageType::Revoke,
            Content::RequestWelcome => MessageType::RequestWelcome,
            Content::Unsupported { .. } => MessageType::Unsupported,
        }
    }
}

/// A message's type as the gateway stores it (the inbox's `msg_type`): the known wire types,
/// `unsupported` for anything the parser could not read, and, read back from a row, any other
/// name kept as stored so an older or newer row never fails to load.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageType {
    Text,
    Image,
    Video,
    Audio,
    Document,
    Sticker,
    Location,
    Contacts,
    Interactive,
    Button,
    Reaction,
    Order,
    System,
    Edit,
    Revoke,
    RequestWelcome,
    Unsupported,
    /// A stored name this build does not know.
    Other(String),
}

impl MessageType {
    /// Every type this build knows, in the order of the variants.
    const KNOWN: [MessageType; 17] = [
        MessageType::Text,
        MessageType::Image,
        MessageType::Video,
        MessageType::Audio,
        MessageType::Document,
        MessageType::Sticker,
        MessageType::Location,
        MessageType::Contacts,
        MessageType::Interactive,
        MessageType::Button,
        MessageType::Reaction,
        MessageType::Order,
        MessageType::System,
        MessageType::Edit,
        MessageType::Revoke,
        MessageType::RequestWelcome,
        MessageType::Unsupported,
    ];

    /// The type as stored (and as Meta spells the known ones).
    pub fn as_str(&self) -> &str {
        match self {
            MessageType::Other(name) => name,
            known => known.label(),
        }
    }

    /// A bounded name for metrics and logs: the type, or "other" for a stored name this build
    /// does not know.
    pub fn label(&self) -> &'static str {
        match self {
            MessageType::Text => "text",
            MessageType::Image => "image",
            MessageType::Video => "video",
            MessageType::Audio => "audio",
            MessageType::Document => "document",
            MessageType::Sticker => "sticker",
            MessageType::Location => "location",
            MessageType::Contacts => "contacts",
            MessageType::Interactive => "interactive",
            MessageType::Button => "button",
            MessageType::Reaction => "reaction",
            MessageType::Order => "order",
            MessageType::System => "system",
            MessageType::Edit => "edit",
            MessageType::Revoke => "revoke",
            MessageType::RequestWelcome => "request_welcome",
            MessageType::Unsupported => "unsupported",
            MessageType::Other(_) => "other",
        }
    }

    /// Reads a stored name; a name this build does not know is kept as [`MessageType::Other`].
    pub fn parse(name: &str) -> MessageType {
        Self::KNOWN
            .into_iter()
            .find(|known| known.label() == name)
            .unwrap_or_else(|| MessageType::Other(name.to_owned()))
    }
}
