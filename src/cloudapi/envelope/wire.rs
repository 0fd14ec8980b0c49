//! The webhook's raw wire shapes, as serde reads them: the skeleton's fields are optional so
//! that `convert` can say which one is missing. No meaning here, only the JSON's shape.

// The skeleton is deserialized straight from the bytes; a change's value is kept as a borrowed
// RawValue because Meta sends `value` before `field`, and only the field says how to read it.
// Messages go through `Value` once, since `raw` must keep the object exactly as received.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::ids::{PhoneNumberId, UserId, WaId, WabaId, Wamid};

#[derive(Deserialize)]
#[serde(rename = "Envelope")]
pub(super) struct RawEnvelope<'a> {
    pub(super) object: Option<String>,
    #[serde(borrow)]
    pub(super) entry: Option<Vec<RawEntry<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename = "Entry")]
pub(super) struct RawEntry<'a> {
    pub(super) id: Option<WabaId>,
    #[serde(borrow)]
    pub(super) changes: Option<Vec<RawChange<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename = "Change")]
pub(super) struct RawChange<'a> {
    pub(super) field: Option<String>,
    #[serde(borrow)]
    pub(super) value: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename = "MessagesValue")]
pub(super) struct RawMessagesValue {
    pub(super) metadata: Option<RawMetadata>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub(super) contacts: Vec<RawContact>,
    #[serde(default)]
    pub(super) messages: Vec<Value>,
    #[serde(default)]
    pub(super) statuses: Vec<RawStatus>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub(super) errors: Vec<RawApiError>,
    #[serde(default)]
    pub(super) message_echoes: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename = "Metadata")]
pub(super) struct RawMetadata {
    pub(super) display_phone_number: Option<String>,
    pub(super) phone_number_id: Option<PhoneNumberId>,
}

#[derive(Deserialize)]
pub(super) struct RawContact {
    pub(super) wa_id: Option<WaId>,
    pub(super) user_id: Option<UserId>,
    pub(super) parent_user_id: Option<String>,
    pub(super) profile: Option<RawProfile>,
}

#[derive(Deserialize)]
pub(super) struct RawProfile {
    pub(super) name: Option<String>,
    pub(super) username: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename = "Status")]
pub(super) struct RawStatus {
    pub(super) id: Option<Wamid>,
    pub(super) status: Option<String>,
    pub(super) timestamp: Option<UnixSeconds>,
    pub(super) recipient_id: Option<String>,
    pub(super) recipient_user_id: Option<String>,
    pub(super) biz_opaque_callback_data: Option<String>,
    pub(super) conversation: Option<Value>,
    pub(super) pricing: Option<Value>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub(super) errors: Vec<RawApiError>,
}

#[derive(Deserialize)]
pub(super) struct RawApiError {
    pub(super) code: i64,
    pub(super) title: Option<String>,
    pub(super) message: Option<String>,
    pub(super) error_data: Option<RawErrorData>,
}

#[derive(Deserialize)]
pub(super) struct RawErrorData {
    pub(super) details: Option<String>,
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
pub(super) struct UnixSeconds(pub(super) i64);

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

// The object of each known message `type`, and of each interactive reply.

#[derive(Deserialize)]
pub(super) struct RawText {
    pub(super) body: String,
}
#[derive(Deserialize)]
pub(super) struct RawLocation {
    pub(super) latitude: f64,
    pub(super) longitude: f64,
    pub(super) name: Option<String>,
    pub(super) address: Option<String>,
    pub(super) url: Option<String>,
}
#[derive(Deserialize)]
pub(super) struct RawButton {
    #[serde(default)]
    pub(super) payload: String,
    pub(super) text: String,
}
#[derive(Deserialize)]
pub(super) struct RawReaction {
    pub(super) message_id: Wamid,
    pub(super) emoji: Option<String>,
}
#[derive(Deserialize)]
pub(super) struct RawOrder {
    pub(super) catalog_id: String,
    pub(super) text: Option<String>,
    #[serde(default)]
    pub(super) product_items: Vec<Value>,
}
#[derive(Deserialize)]
pub(super) struct RawSystem {
    pub(super) body: Option<String>,
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    pub(super) new_wa_id: Option<WaId>,
    pub(super) wa_id: Option<WaId>,
}
#[derive(Deserialize)]
pub(super) struct RawOriginal {
    pub(super) original_message_id: Wamid,
}

#[derive(Deserialize)]
pub(super) struct RawReply {
    pub(super) id: String,
    pub(super) title: String,
    pub(super) description: Option<String>,
}
#[derive(Deserialize)]
pub(super) struct RawNfm {
    pub(super) name: Option<String>,
    pub(super) body: Option<String>,
    pub(super) response_json: String,
}
