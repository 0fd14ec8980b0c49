//! Meta's outbound message payloads (`POST /{phone-number-id}/messages`): the message a reply is
//! queued as (its content in `content.rs`, Meta's limits on it in `limits.rs`, on a media file
//! in `media_file.rs`), and the envelope that addresses it when it leaves. No storage and no
//! HTTP here.

mod content;
pub mod limits;
pub mod media_file;

pub use content::{
    Action, Body, Button, Buttons, Choice, Content, CtaUrl, Footer, Header, Interactive, List,
    Location, Media, MediaKind, Reaction, Row, Section, Text,
};
pub use limits::{LimitError, MAX_TEXT_CHARS};

use serde::{Deserialize, Serialize};

/// Which of the customer's ids a message is addressed to; stored as `wa_id` or `user_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientKind {
    /// The phone-based WhatsApp id, sent as `to`.
    WaId,
    /// The business-scoped user id (BSUID), sent as `recipient`.
    UserId,
}

impl RecipientKind {
    /// The stable string stored in the outbox.
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientKind::WaId => "wa_id",
            RecipientKind::UserId => "user_id",
        }
    }

    /// Reads a stored kind. Anything but `user_id` was always sent as `to`, so it reads as
    /// [`RecipientKind::WaId`].
    pub fn parse(stored: &str) -> Self {
        match stored {
            "user_id" => RecipientKind::UserId,
            _ => RecipientKind::WaId,
        }
    }
}

/// One outbound message as the outbox stores it, without its envelope: the content and,
/// optionally, the customer message it quotes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// What the message carries, with its `type`.
    #[serde(flatten)]
    pub content: Content,
    /// The customer message shown quoted above this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Context>,
}

/// The `context` of a reply: the message it quotes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// The wamid of the quoted message.
    pub message_id: String,
}

impl Message {
    /// A message carrying `content`, quoting nothing.
    pub fn new(content: Content) -> Self {
        Message {
            content,
            context: None,
        }
    }

    /// A text message with `body`.
    pub fn text(body: impl Into<String>, preview_url: bool) -> Self {
        Message::new(Content::Text {
            text: Text {
                body: body.into(),
                preview_url,
            },
        })
    }

    /// This message quoting the customer's message `wamid`.
    pub fn quoting(self, wamid: impl Into<String>) -> Self {
        Message {
            context: Some(Context {
                message_id: wamid.into(),
            }),
            ..self
        }
    }

    /// The message as one readable text (see [`Content::summary`]).
    pub fn summary(&self) -> String {
        self.content.summary()
    }

    /// The JSON the outbox stores. Keys come out sorted (a `serde_json::Value` object), as every
    /// stored payload always was, so rows read the same whichever version wrote them.
    pub fn to_stored(&self) -> String {
        serde_json::to_value(self)
            .expect("a message serializes: its keys are all strings")
            .to_string()
    }
}

/// A message addressed for sending: the body of `POST /{phone-number-id}/messages`. `M` is the
/// message: a [`Message`], or a stored one read back as a JSON object (the sender passes on
/// what was queued without needing to understand it).
#[derive(Debug, Serialize)]
pub struct Envelope<'a, M> {
    // Field order is precedence when the result is built as a `serde_json::Value` (a later key
    // replaces an earlier one): a stored message may name its own `recipient_type`, but the
    // product, the address and the callback data are always the envelope's.
    recipient_type: &'static str,
    #[serde(flatten)]
    message: &'a M,
    messaging_product: &'static str,
    #[serde(flatten)]
    address: Address<'a>,
    biz_opaque_callback_data: &'a str,
}

/// The recipient field: `to` for a wa_id, `recipient` for a BSUID.
#[derive(Debug, Serialize)]
enum Address<'a> {
    #[serde(rename = "to")]
    To(&'a str),
    #[serde(rename = "recipient")]
    Recipient(&'a str),
}

impl<'a, M: Serialize> Envelope<'a, M> {
    /// `message` to the customer `recipient` (a `kind` id), with `callback_data`, which Meta
    /// echoes in the message's status webhooks as `biz_opaque_callback_data`.
    pub fn new(
        message: &'a M,
        kind: RecipientKind,
        recipient: &'a str,
        callback_data: &'a str,
    ) -> Self {
        Envelope {
            recipient_type: "individual",
            message,
            messaging_product: "whatsapp",
            address: match kind {
                RecipientKind::WaId => Address::To(recipient),
                RecipientKind::UserId => Address::Recipient(recipient),
            },
            biz_opaque_callback_data: callback_data,
        }
    }

    /// The request body as JSON.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("an envelope serializes: its keys are all strings")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value, json};

    #[test]
    fn stored_text_is_the_json_the_outbox_always_held() {
        let plain = Message::text("hi https://x.io", true);
        assert_eq!(
            plain.to_stored(),
            r#"{"text":{"body":"hi https://x.io","preview_url":true},"type":"text"}"#
        );
        let quoted = Message::text("hi", false).quoting("wamid.A");
        assert_eq!(
            quoted.to_stored(),
            r#"{"context":{"message_id":"wamid.A"},"text":{"body":"hi","preview_url":false},"type":"text"}"#
        );
        let back: Message = serde_json::from_str(&quoted.to_stored()).unwrap();
        assert_eq!(back, quoted);
    }

    #[test]
    fn recipient_kinds_keep_their_stored_strings() {
        for kind in [RecipientKind::WaId, RecipientKind::UserId] {
            assert_eq!(RecipientKind::parse(kind.as_str()), kind);
            assert_eq!(json!(kind), json!(kind.as_str()));
        }
        assert_eq!(RecipientKind::parse("anything else"), RecipientKind::WaId);
    }

    #[test]
    fn envelope_addresses_the_stored_message() {
        let stored: Map<String, Value> =
            serde_json::from_str(&Message::text("hi", false).quoting("wamid.A").to_stored())
                .unwrap();
        let to = Envelope::new(&stored, RecipientKind::WaId, "16505551234", "wagw:x:1:2");
        assert_eq!(
            to.to_value(),
            json!({
                "type": "text",
                "text": { "body": "hi", "preview_url": false },
                "context": { "message_id": "wamid.A" },
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "16505551234",
                "biz_opaque_callback_data": "wagw:x:1:2",
            })
        );
        let typed = Message::text("hi", false);
        let bsuid = Envelope::new(&typed, RecipientKind::UserId, "US.1", "cb").to_value();
        assert_eq!(bsuid["recipient"], "US.1");
        assert!(bsuid.get("to").is_none());
    }

    #[test]
    fn envelope_fields_win_over_the_stored_message_except_recipient_type() {
        let stored: Map<String, Value> = serde_json::from_value(json!({
            "type": "text", "recipient_type": "group", "messaging_product": "x", "to": "other",
        }))
        .unwrap();
        let body = Envelope::new(&stored, RecipientKind::WaId, "1650", "cb").to_value();
        assert_eq!(body["recipient_type"], "group");
        assert_eq!(body["messaging_product"], "whatsapp");
        assert_eq!(body["to"], "1650");
    }
}
