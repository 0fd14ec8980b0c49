//! Cloud API webhook envelopes, the public model: entries, changes, statuses and errors, and
//! `parse` from a verified POST body. The serde shapes are in `wire`, the mapping in `convert`;
//! messages are in `message`. It tolerates unknown fields and message types; it routes nothing.

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::ids::{CustomerKey, PhoneNumberId, UserId, WaId, WabaId, Wamid};

mod convert;
mod handover;
mod message;
mod wire;

pub use handover::{Handover, HandoverKind};
pub use message::{Content, Context, InboundMessage, Interactive, Media, MessageType};

/// The only `object` a WhatsApp Business Account webhook carries.
pub const OBJECT: &str = "whatsapp_business_account";

/// Why a webhook body is not a Cloud API envelope; the text names the place and the fault.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("webhook body is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("webhook body does not have the envelope's shape: {0}")]
    Shape(serde_json::Error),
    #[error("webhook body has no `object` (expected \"whatsapp_business_account\")")]
    ObjectMissing,
    #[error(
        "webhook `object` is {0:?}, not \"whatsapp_business_account\": the app's callback is \
         subscribed to another product"
    )]
    WrongObject(String),
    #[error("webhook body has no `entry` array")]
    EntryMissing,
    #[error("webhook {path}: {problem}")]
    Invalid { path: String, problem: String },
}

/// A whole webhook POST: one or more entries, one per WABA.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope {
    pub object: String,
    pub entry: Vec<Entry>,
}

/// The changes for one WhatsApp Business Account.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub id: WabaId,
    pub changes: Vec<Change>,
}

/// One subscribed field's event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub field: String,
    pub value: ChangeValue,
}

/// What a change carries, by `field`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeValue {
    /// `messages`: customer messages, statuses of what we sent, and errors.
    Messages(MessagesValue),
    /// `smb_message_echoes`: what the business sent from the Business app (`message_echoes`);
    /// the business speaking, never a customer turn.
    Echoes(MessagesValue),
    /// `standby`: conversation routing gave the conversation to another app (for example Meta's
    /// Business Agent); this app gets a copy, shaped like `messages`, and must not answer.
    Standby(MessagesValue),
    /// `messaging_handovers`: conversation routing moved a conversation between apps.
    Handover(Handover),
    /// Any other field (account_update, user_preferences, calls, templates…), kept as received.
    Other(Value),
}

/// The value of a `messages`, `smb_message_echoes` or `standby` change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessagesValue {
    pub metadata: Metadata,
    pub contacts: Vec<Contact>,
    pub messages: Vec<InboundMessage>,
    pub statuses: Vec<Status>,
    /// Errors not tied to one message.
    pub errors: Vec<ApiError>,
    /// Messages the business sent from the WhatsApp Business app (`smb_message_echoes`).
    pub message_echoes: Vec<Echo>,
}

/// A message a person sent to a customer from the WhatsApp Business app on a number the
/// gateway also serves (coexistence), echoed to the gateway: shaped like a customer message,
/// but `from` is the business and `to`/`to_user_id` the customer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Echo {
    pub to: Option<WaId>,
    pub to_user_id: Option<UserId>,
    pub message: InboundMessage,
}

impl Echo {
    /// The customer's key: the BSUID when Meta sent one, else the phone-based id.
    pub fn customer_key(&self) -> Option<CustomerKey> {
        CustomerKey::from_ids(
            self.to_user_id.as_ref().map(UserId::as_str),
            self.to.as_ref().map(WaId::as_str),
        )
    }
}

/// Which of our numbers the change concerns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metadata {
    pub display_phone_number: String,
    pub phone_number_id: PhoneNumberId,
}

/// A customer named by the change; since 2026 `wa_id` is absent when the phone is hidden.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contact {
    pub wa_id: Option<WaId>,
    /// The business-scoped user id (BSUID).
    pub user_id: Option<UserId>,
    pub parent_user_id: Option<String>,
    /// `profile.name`.
    pub name: Option<String>,
    /// `profile.username`.
    pub username: Option<String>,
}

/// The fate of a message the business sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub id: Wamid,
    pub status: StatusKind,
    /// Unix seconds.
    pub timestamp: i64,
    pub recipient_id: Option<String>,
    pub recipient_user_id: Option<String>,
    pub biz_opaque_callback_data: Option<String>,
    pub conversation: Option<Value>,
    pub pricing: Option<Value>,
    pub errors: Vec<ApiError>,
}

/// A status value; unknown ones are kept by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StatusKind {
    Sent,
    Delivered,
    Read,
    Failed,
    Deleted,
    Other(String),
}

/// An error Meta reports in a webhook; decide on `code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    pub code: i64,
    pub title: Option<String>,
    pub message: Option<String>,
    /// `error_data.details`.
    pub details: Option<String>,
}

/// Parses a webhook body (already signature-checked) into an envelope.
///
/// The skeleton (object, entries, changes, metadata, message and status ids and timestamps) must
/// be sound; a message whose type is unknown or whose type object is malformed becomes
/// [`Content::Unsupported`] instead of failing the envelope.
pub fn parse(body: &[u8]) -> Result<Envelope, EnvelopeError> {
    convert::envelope(body)
}

impl Status {
    /// The recipient's key: the BSUID when Meta sent one, else the phone-based id.
    pub fn customer_key(&self) -> Option<CustomerKey> {
        CustomerKey::from_ids(
            self.recipient_user_id.as_deref(),
            self.recipient_id.as_deref(),
        )
    }
}

impl StatusKind {
    /// The status as Meta spells it (and as stored).
    pub fn as_str(&self) -> &str {
        match self {
            StatusKind::Sent => "sent",
            StatusKind::Delivered => "delivered",
            StatusKind::Read => "read",
            StatusKind::Failed => "failed",
            StatusKind::Deleted => "deleted",
            StatusKind::Other(s) => s,
        }
    }
}

impl From<String> for StatusKind {
    fn from(s: String) -> Self {
        match s.as_str() {
            "sent" => StatusKind::Sent,
            "delivered" => StatusKind::Delivered,
            "read" => StatusKind::Read,
            "failed" => StatusKind::Failed,
            "deleted" => StatusKind::Deleted,
            _ => StatusKind::Other(s),
        }
    }
}

impl Serialize for StatusKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
