//! From the raw wire shapes to the envelope model: checks the skeleton (saying where a field is
//! missing), keeps each message object as received in `raw`, and turns a malformed or unknown
//! message type into `Content::Unsupported` rather than failing the envelope.

use std::fmt;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::wire::{
    RawApiError, RawButton, RawChange, RawContact, RawEnvelope, RawLocation, RawMessagesValue,
    RawNfm, RawOrder, RawOriginal, RawReaction, RawReply, RawStatus, RawSystem, RawText,
    UnixSeconds,
};
use super::{
    ApiError, Change, ChangeValue, Contact, Content, Context, Echo, Entry, Envelope, EnvelopeError,
    InboundMessage, Interactive, MessagesValue, Metadata, OBJECT, Status, StatusKind,
};
use crate::ids::{UserId, WaId, Wamid};

fn invalid(path: impl fmt::Display, problem: impl fmt::Display) -> EnvelopeError {
    EnvelopeError::Invalid {
        path: path.to_string(),
        problem: problem.to_string(),
    }
}

/// The envelope of a webhook body (see [`super::parse`]).
pub(super) fn envelope(body: &[u8]) -> Result<Envelope, EnvelopeError> {
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
        "standby" => ChangeValue::Standby(messages_value(at, raw.value)?),
        _ => {
            let value = match raw.value {
                Some(v) => serde_json::from_str(v.get())
                    .map_err(|e| invalid(format_args!("{at}.value"), e))?,
                None => Value::Null,
            };
            match super::handover::read(&value) {
                Some(h) if field == "messaging_handovers" => ChangeValue::Handover(h),
                _ => ChangeValue::Other(value),
            }
        }
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
    let message_echoes = raw
        .message_echoes
        .into_iter()
        .enumerate()
        .map(|(k, e)| {
            echo(e).map_err(|p| invalid(format_args!("{at}.value.message_echoes[{k}]"), p))
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
        message_echoes,
    })
}

fn echo(raw: Value) -> Result<Echo, &'static str> {
    let (to, to_user_id) = match &raw {
        Value::Object(o) => (
            str_field(o, "to").map(WaId::from),
            str_field(o, "to_user_id").map(UserId::from),
        ),
        _ => (None, None),
    };
    Ok(Echo {
        to,
        to_user_id,
        message: inbound_message(raw)?,
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

pub(super) fn inbound_message(raw: Value) -> Result<InboundMessage, &'static str> {
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
    Some(match kind {
        "text" => Content::Text {
            body: de::<RawText>(obj)?.body,
        },
        "image" => Content::Image(de(obj)?),
        "video" => Content::Video(de(obj)?),
        "audio" => Content::Audio(de(obj)?),
        "document" => Content::Document(de(obj)?),
        "sticker" => Content::Sticker(de(obj)?),
        "location" => {
            let l: RawLocation = de(obj)?;
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
            let b: RawButton = de(obj)?;
            Content::Button {
                payload: b.payload,
                text: b.text,
            }
        }
        "reaction" => {
            let r: RawReaction = de(obj)?;
            Content::Reaction {
                message_id: r.message_id,
                emoji: r.emoji.filter(|e| !e.is_empty()),
            }
        }
        "order" => {
            let o: RawOrder = de(obj)?;
            Content::Order {
                catalog_id: o.catalog_id,
                text: o.text,
                product_items: o.product_items,
            }
        }
        "system" => {
            let s: RawSystem = de(obj)?;
            Content::System {
                body: s.body,
                kind: s.kind,
                new_wa_id: s.new_wa_id.or(s.wa_id),
            }
        }
        "edit" => {
            let o = obj?.as_object()?;
            let original: RawOriginal = de(obj)?;
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
            original_message_id: de::<RawOriginal>(obj)?.original_message_id,
        },
        "request_welcome" => Content::RequestWelcome,
        _ => return None,
    })
}

fn interactive(v: &Value) -> Option<Interactive> {
    let o = v.as_object()?;
    let sub = o.get("type").and_then(Value::as_str).unwrap_or_default();
    let reply = |key| RawReply::deserialize(o.get(key)?).ok();
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
            let n = RawNfm::deserialize(o.get("nfm_reply")?).ok()?;
            Interactive::NfmReply {
                name: n.name,
                body: n.body,
                response_json: n.response_json,
            }
        }
        _ => Interactive::Other(v.clone()),
    })
}
