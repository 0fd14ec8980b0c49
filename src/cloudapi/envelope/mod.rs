//! Cloud API webhook envelopes: turns a verified POST body into entries, changes, inbound
//! messages and statuses. It tolerates unknown fields and message types; it routes nothing.

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::ids::{CustomerKey, PhoneNumberId, UserId, WaId, WabaId, Wamid};

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

fn invalid(path: impl fmt::Display, problem: impl fmt::Display) -> EnvelopeError {
    EnvelopeError::Invalid {
        path: path.to_string(),
        problem: problem.to_string(),
    }
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
    /// Any other field (account_update, user_preferences, calls, templates…), kept as received.
    Other(Value),
}

/// The value of a `messages` or `smb_message_echoes` change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessagesValue {
    pub metadata: Metadata,
    pub contacts: Vec<Contact>,
    pub messages: Vec<InboundMessage>,
    pub statuses: Vec<Status>,
    /// Errors not tied to one message.
    pub errors: Vec<ApiError>,
    /// Raw echoes of messages the business sent from the WhatsApp Business app.
    pub message_echoes: Vec<Value>,
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
    let raw: RawEnvelope<'_> = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => EnvelopeError::Shape(e),
        _ => EnvelopeError::NotJson(e),
    })?;
    let object = raw.object.ok_or(EnvelopeError::ObjectMissing)?;
    if object != OBJECT {
        return Err(EnvelopeError::WrongObject(object));
    }
    let raw_entries = raw.entry.ok_or(EnvelopeError::EntryMissing)?;
    let mut entry = Vec::with_capacity(raw_entries.len());
    for (i, e) in raw_entries.into_iter().enumerate() {
        let id =
            e.id.filter(|id| !id.0.is_empty())
                .ok_or_else(|| invalid(format_args!("entry[{i}]"), "has no `id`"))?;
        let raw_changes = e
            .changes
            .ok_or_else(|| invalid(format_args!("entry[{i}]"), "has no `changes` array"))?;
        let mut changes = Vec::with_capacity(raw_changes.len());
        for (j, c) in raw_changes.into_iter().enumerate() {
            changes.push(change(ChangeAt(i, j), c)?);
        }
        entry.push(Entry { id, changes });
    }
    Ok(Envelope { object, entry })
}

impl InboundMessage {
    /// Parses one message object as stored (the `raw` of an earlier parse).
    pub fn from_raw(raw: Value) -> Result<InboundMessage, &'static str> {
        inbound_message(raw)
    }

    /// The wire `type` (for an unsupported message, the type it claimed).
    pub fn type_name(&self) -> &str {
        self.content.type_name()
    }

    /// Who wrote it: the BSUID (ours or the matching contact's) when known, else the wa_id.
    pub fn customer_key(&self, contacts: &[Contact]) -> Option<CustomerKey> {
        let contact = contacts.iter().find(|c| {
            (self.from_user_id.is_some() && c.user_id == self.from_user_id)
                || (self.from.is_some() && c.wa_id == self.from)
        });
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

    /// The text an agent should see, or None when the message carries none.
    pub fn text(&self) -> Option<String> {
        self.content.text()
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
        match self {
            Content::Text { .. } => "text",
            Content::Image(_) => "image",
            Content::Video(_) => "video",
            Content::Audio(_) => "audio",
            Content::Document(_) => "document",
            Content::Sticker(_) => "sticker",
            Content::Location { .. } => "location",
            Content::Contacts(_) => "contacts",
            Content::Interactive(_) => "interactive",
            Content::Button { .. } => "button",
            Content::Reaction { .. } => "reaction",
            Content::Order { .. } => "order",
            Content::System { .. } => "system",
            Content::Edit { .. } => "edit",
            Content::Revoke { .. } => "revoke",
            Content::RequestWelcome => "request_welcome",
            Content::Unsupported { .. } => "unsupported",
        }
    }

    /// The text an agent should see, or None when the content carries none.
    pub fn text(&self) -> Option<String> {
        match self {
            Content::Text { body } => Some(body.clone()),
            Content::Image(m)
            | Content::Video(m)
            | Content::Audio(m)
            | Content::Document(m)
            | Content::Sticker(m) => m.caption.clone(),
            Content::Location {
                latitude,
                longitude,
                name,
                address,
                ..
            } => {
                let mut s = format!("[location: {latitude},{longitude}");
                for part in [name, address].into_iter().flatten() {
                    s.push(' ');
                    s.push_str(part);
                }
                s.push(']');
                Some(s)
            }
            Content::Contacts(cards) => {
                let names: Vec<&str> = cards
                    .iter()
                    .filter_map(|c| c.get("name")?.get("formatted_name")?.as_str())
                    .collect();
                (!names.is_empty()).then(|| names.join(", "))
            }
            Content::Interactive(Interactive::ButtonReply { title, .. })
            | Content::Interactive(Interactive::ListReply { title, .. }) => Some(title.clone()),
            Content::Interactive(Interactive::NfmReply { response_json, .. }) => {
                Some(response_json.clone())
            }
            Content::Interactive(Interactive::Other(_)) => None,
            Content::Button { text, .. } => Some(text.clone()),
            Content::Order { text, .. } => text.clone(),
            Content::Edit { message, .. } => message.text(),
            Content::Reaction { .. }
            | Content::System { .. }
            | Content::Revoke { .. }
            | Content::RequestWelcome
            | Content::Unsupported { .. } => None,
        }
    }
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

// --- wire shapes -------------------------------------------------------------------------------
// The skeleton is deserialized straight from the bytes; a change's value is kept as a borrowed
// RawValue because Meta sends `value` before `field`, and only the field says how to read it.
// Messages go through `Value` once, since `raw` must keep the object exactly as received.

#[derive(Deserialize)]
#[serde(rename = "Envelope")]
struct RawEnvelope<'a> {
    object: Option<String>,
    #[serde(borrow)]
    entry: Option<Vec<RawEntry<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename = "Entry")]
struct RawEntry<'a> {
    id: Option<WabaId>,
    #[serde(borrow)]
    changes: Option<Vec<RawChange<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename = "Change")]
struct RawChange<'a> {
    field: Option<String>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename = "MessagesValue")]
struct RawMessagesValue {
    metadata: Option<RawMetadata>,
    #[serde(default, deserialize_with = "lenient_vec")]
    contacts: Vec<RawContact>,
    #[serde(default)]
    messages: Vec<Value>,
    #[serde(default)]
    statuses: Vec<RawStatus>,
    #[serde(default, deserialize_with = "lenient_vec")]
    errors: Vec<RawApiError>,
    #[serde(default)]
    message_echoes: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename = "Metadata")]
struct RawMetadata {
    display_phone_number: Option<String>,
    phone_number_id: Option<PhoneNumberId>,
}

#[derive(Deserialize)]
struct RawContact {
    wa_id: Option<WaId>,
    user_id: Option<UserId>,
    parent_user_id: Option<String>,
    profile: Option<RawProfile>,
}

#[derive(Deserialize)]
struct RawProfile {
    name: Option<String>,
    username: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename = "Status")]
struct RawStatus {
    id: Option<Wamid>,
    status: Option<String>,
    timestamp: Option<UnixSeconds>,
    recipient_id: Option<String>,
    recipient_user_id: Option<String>,
    biz_opaque_callback_data: Option<String>,
    conversation: Option<Value>,
    pricing: Option<Value>,
    #[serde(default, deserialize_with = "lenient_vec")]
    errors: Vec<RawApiError>,
}

#[derive(Deserialize)]
struct RawApiError {
    code: i64,
    title: Option<String>,
    message: Option<String>,
    error_data: Option<RawErrorData>,
}

#[derive(Deserialize)]
struct RawErrorData {
    details: Option<String>,
}

impl From<RawApiError> for ApiError {
    fn from(e: RawApiError) -> Self {
        ApiError {
            code: e.code,
            title: e.title,
            message: e.message,
            details: e.error_data.and_then(|d| d.details),
        }
    }
}

impl From<RawContact> for Contact {
    fn from(c: RawContact) -> Self {
        let (name, username) = c.profile.map_or((None, None), |p| (p.name, p.username));
        Contact {
            wa_id: c.wa_id.filter(|id| !id.0.is_empty()),
            user_id: c.user_id.filter(|id| !id.0.is_empty()),
            parent_user_id: c.parent_user_id,
            name,
            username,
        }
    }
}

/// A list whose malformed items are dropped rather than failing the change.
fn lenient_vec<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| T::deserialize(item).ok())
            .collect(),
        _ => Vec::new(),
    })
}

/// Unix seconds, which Meta sends as a decimal string; a JSON integer is accepted too.
struct UnixSeconds(i64);

impl<'de> Deserialize<'de> for UnixSeconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = UnixSeconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("unix seconds as an integer or a string of digits")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<UnixSeconds, E> {
                Ok(UnixSeconds(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<UnixSeconds, E> {
                i64::try_from(v)
                    .map(UnixSeconds)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UnixSeconds, E> {
                v.trim()
                    .parse()
                    .map(UnixSeconds)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

// --- conversion --------------------------------------------------------------------------------

/// Where a change sits, for error paths: `entry[i].changes[j]`.
#[derive(Clone, Copy)]
struct ChangeAt(usize, usize);

impl fmt::Display for ChangeAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry[{}].changes[{}]", self.0, self.1)
    }
}

fn change(at: ChangeAt, raw: RawChange<'_>) -> Result<Change, EnvelopeError> {
    let field = raw.field.ok_or_else(|| invalid(at, "has no `field`"))?;
    let value = match field.as_str() {
        "messages" => ChangeValue::Messages(messages_value(at, raw.value)?),
        "smb_message_echoes" => ChangeValue::Echoes(messages_value(at, raw.value)?),
        _ => ChangeValue::Other(match raw.value {
            Some(v) => {
                serde_json::from_str(v.get()).map_err(|e| invalid(format_args!("{at}.value"), e))?
            }
            None => Value::Null,
        }),
    };
    Ok(Change { field, value })
}

fn messages_value(at: ChangeAt, value: Option<&RawValue>) -> Result<MessagesValue, EnvelopeError> {
    let value = value.ok_or_else(|| invalid(at, "has no `value`"))?;
    let raw: RawMessagesValue =
        serde_json::from_str(value.get()).map_err(|e| invalid(format_args!("{at}.value"), e))?;
    let metadata = raw
        .metadata
        .ok_or_else(|| invalid(format_args!("{at}.value"), "has no `metadata`"))?;
    let phone_number_id = metadata
        .phone_number_id
        .filter(|id| !id.0.is_empty())
        .ok_or_else(|| {
            invalid(
                format_args!("{at}.value.metadata"),
                "has no `phone_number_id`",
            )
        })?;
    let messages = raw
        .messages
        .into_iter()
        .enumerate()
        .map(|(k, m)| {
            inbound_message(m).map_err(|p| invalid(format_args!("{at}.value.messages[{k}]"), p))
        })
        .collect::<Result<_, _>>()?;
    let statuses = raw
        .statuses
        .into_iter()
        .enumerate()
        .map(|(k, s)| status(s).map_err(|p| invalid(format_args!("{at}.value.statuses[{k}]"), p)))
        .collect::<Result<_, _>>()?;
    Ok(MessagesValue {
        metadata: Metadata {
            display_phone_number: metadata.display_phone_number.unwrap_or_default(),
            phone_number_id,
        },
        contacts: raw.contacts.into_iter().map(Contact::from).collect(),
        messages,
        statuses,
        errors: raw.errors.into_iter().map(ApiError::from).collect(),
        message_echoes: raw.message_echoes,
    })
}

fn status(s: RawStatus) -> Result<Status, &'static str> {
    Ok(Status {
        id: s.id.filter(|id| !id.0.is_empty()).ok_or("has no `id`")?,
        status: StatusKind::from(s.status.ok_or("has no `status`")?),
        timestamp: s.timestamp.ok_or("has no `timestamp`")?.0,
        recipient_id: s.recipient_id,
        recipient_user_id: s.recipient_user_id,
        biz_opaque_callback_data: s.biz_opaque_callback_data,
        conversation: s.conversation,
        pricing: s.pricing,
        errors: s.errors.into_iter().map(ApiError::from).collect(),
    })
}

/// A non-empty string field, or None.
fn str_field<'v>(o: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
    o.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn inbound_message(raw: Value) -> Result<InboundMessage, &'static str> {
    let Value::Object(o) = &raw else {
        return Err("is not an object");
    };
    let id = str_field(o, "id").ok_or("has no `id`")?.into();
    let timestamp = o
        .get("timestamp")
        .and_then(|t| UnixSeconds::deserialize(t).ok())
        .ok_or("has no `timestamp` in unix seconds")?
        .0;
    let kind = o.get("type").and_then(Value::as_str).unwrap_or_default();
    let content = content(kind, o);
    let from = str_field(o, "from").map(WaId::from);
    let from_user_id = str_field(o, "from_user_id").map(UserId::from);
    let group_id = str_field(o, "group_id").map(str::to_owned);
    let context = o.get("context").and_then(context);
    let referral = o.get("referral").filter(|r| !r.is_null()).cloned();
    let errors = o.get("errors").map(api_errors).unwrap_or_default();
    Ok(InboundMessage {
        id,
        from,
        from_user_id,
        timestamp,
        group_id,
        context,
        referral,
        content,
        errors,
        raw,
    })
}

fn context(v: &Value) -> Option<Context> {
    let o = v.as_object()?;
    let flag = |key| o.get(key).and_then(Value::as_bool).unwrap_or(false);
    Some(Context {
        from: str_field(o, "from").map(str::to_owned),
        id: str_field(o, "id").map(Wamid::from),
        forwarded: flag("forwarded"),
        frequently_forwarded: flag("frequently_forwarded"),
        referred_product: o.get("referred_product").filter(|p| !p.is_null()).cloned(),
    })
}

fn api_errors(v: &Value) -> Vec<ApiError> {
    v.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|e| RawApiError::deserialize(e).ok().map(ApiError::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The content of a message object `o` of type `kind`: its object is `o[kind]`.
fn content(kind: &str, o: &Map<String, Value>) -> Content {
    known_content(kind, o.get(kind)).unwrap_or_else(|| Content::Unsupported {
        type_name: kind.to_owned(),
    })
}

fn known_content(kind: &str, obj: Option<&Value>) -> Option<Content> {
    fn de<T: DeserializeOwned>(v: Option<&Value>) -> Option<T> {
        T::deserialize(v?).ok()
    }
    #[derive(Deserialize)]
    struct Text {
        body: String,
    }
    #[derive(Deserialize)]
    struct Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
        address: Option<String>,
        url: Option<String>,
    }
    #[derive(Deserialize)]
    struct Button {
        #[serde(default)]
        payload: String,
        text: String,
    }
    #[derive(Deserialize)]
    struct Reaction {
        message_id: Wamid,
        emoji: Option<String>,
    }
    #[derive(Deserialize)]
    struct Order {
        catalog_id: String,
        text: Option<String>,
        #[serde(default)]
        product_items: Vec<Value>,
    }
    #[derive(Deserialize)]
    struct System {
        body: Option<String>,
        #[serde(rename = "type")]
        kind: Option<String>,
        new_wa_id: Option<WaId>,
        wa_id: Option<WaId>,
    }
    #[derive(Deserialize)]
    struct Original {
        original_message_id: Wamid,
    }

    Some(match kind {
        "text" => Content::Text {
            body: de::<Text>(obj)?.body,
        },
        "image" => Content::Image(de(obj)?),
        "video" => Content::Video(de(obj)?),
        "audio" => Content::Audio(de(obj)?),
        "document" => Content::Document(de(obj)?),
        "sticker" => Content::Sticker(de(obj)?),
        "location" => {
            let l: Location = de(obj)?;
            Content::Location {
                latitude: l.latitude,
                longitude: l.longitude,
                name: l.name,
                address: l.address,
                url: l.url,
            }
        }
        "contacts" => Content::Contacts(obj?.as_array()?.clone()),
        "interactive" => Content::Interactive(interactive(obj?)?),
        "button" => {
            let b: Button = de(obj)?;
            Content::Button {
                payload: b.payload,
                text: b.text,
            }
        }
        "reaction" => {
            let r: Reaction = de(obj)?;
            Content::Reaction {
                message_id: r.message_id,
                emoji: r.emoji.filter(|e| !e.is_empty()),
            }
        }
        "order" => {
            let o: Order = de(obj)?;
            Content::Order {
                catalog_id: o.catalog_id,
                text: o.text,
                product_items: o.product_items,
            }
        }
        "system" => {
            let s: System = de(obj)?;
            Content::System {
                body: s.body,
                kind: s.kind,
                new_wa_id: s.new_wa_id.or(s.wa_id),
            }
        }
        "edit" => {
            let o = obj?.as_object()?;
            let original: Original = de(obj)?;
            // The new content is a message object of its own: `{ type, <type>: {…} }`.
            let inner = o.get("message")?.as_object()?;
            let inner_kind = inner
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Content::Edit {
                original_message_id: original.original_message_id,
                message: Box::new(content(inner_kind, inner)),
            }
        }
        "revoke" => Content::Revoke {
            original_message_id: de::<Original>(obj)?.original_message_id,
        },
        "request_welcome" => Content::RequestWelcome,
        _ => return None,
    })
}

fn interactive(v: &Value) -> Option<Interactive> {
    #[derive(Deserialize)]
    struct Reply {
        id: String,
        title: String,
        description: Option<String>,
    }
    #[derive(Deserialize)]
    struct Nfm {
        name: Option<String>,
        body: Option<String>,
        response_json: String,
    }
    let o = v.as_object()?;
    let sub = o.get("type").and_then(Value::as_str).unwrap_or_default();
    let reply = |key| Reply::deserialize(o.get(key)?).ok();
    Some(match sub {
        "button_reply" => {
            let r = reply("button_reply")?;
            Interactive::ButtonReply {
                id: r.id,
                title: r.title,
            }
        }
        "list_reply" => {
            let r = reply("list_reply")?;
            Interactive::ListReply {
                id: r.id,
                title: r.title,
                description: r.description,
            }
        }
        "nfm_reply" => {
            let n = Nfm::deserialize(o.get("nfm_reply")?).ok()?;
            Interactive::NfmReply {
                name: n.name,
                body: n.body,
                response_json: n.response_json,
            }
        }
        _ => Interactive::Other(v.clone()),
    })
}

#[cfg(test)]
mod tests;
