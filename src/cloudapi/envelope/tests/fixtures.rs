//! The envelopes the tests parse: one message fixture per type (grouped by kind), a statuses
//! change, other fields' changes, and several entries across two numbers.

use super::*;

/// (type, object, content, the text an agent sees: `render_text`) of one message fixture.
pub(super) type Fixture = (&'static str, Option<Value>, Content, Option<&'static str>);

/// One fixture per message type from meta-cloud-api.md: (type, object, content, agent text).
pub(super) fn fixtures() -> Vec<Fixture> {
    let mut all = text_and_media();
    all.extend(places_cards_and_replies());
    all.extend(events_and_unknowns());
    all
}

/// Text and the media types.
fn text_and_media() -> Vec<Fixture> {
    vec![
        (
            "text",
            Some(json!({ "body": "Does it come in another color?" })),
            Content::Text {
                body: "Does it come in another color?".into(),
            },
            Some("Does it come in another color?"),
        ),
        (
            "image",
            Some(
                json!({ "caption": "This is a caption", "mime_type": "image/jpeg",
                "sha256": "WO+1", "id": "2754859441498128" }),
            ),
            Content::Image(Media {
                caption: Some("This is a caption".into()),
                mime_type: Some("image/jpeg".into()),
                sha256: Some("WO+1".into()),
                ..media("2754859441498128")
            }),
            Some("[image] This is a caption"),
        ),
        (
            "video",
            Some(json!({ "mime_type": "video/mp4", "sha256": "v", "id": "5" })),
            Content::Video(Media {
                mime_type: Some("video/mp4".into()),
                sha256: Some("v".into()),
                ..media("5")
            }),
            // The agent's text, read from render_text: a video without a caption is its tag.
            Some("[video]"),
        ),
        (
            "audio",
            Some(json!({ "mime_type": "audio/ogg; codecs=opus", "id": "6", "voice": true })),
            Content::Audio(Media {
                mime_type: Some("audio/ogg; codecs=opus".into()),
                voice: true,
                ..media("6")
            }),
            Some("[voice message]"),
        ),
        (
            "document",
            Some(
                json!({ "caption": "Lucky Shrub Invoice", "filename": "invoice.pdf",
                "mime_type": "application/pdf", "id": "7" }),
            ),
            Content::Document(Media {
                caption: Some("Lucky Shrub Invoice".into()),
                filename: Some("invoice.pdf".into()),
                mime_type: Some("application/pdf".into()),
                ..media("7")
            }),
            Some("[document invoice.pdf] Lucky Shrub Invoice"),
        ),
        (
            "sticker",
            Some(json!({ "mime_type": "image/webp", "id": "8", "animated": true })),
            Content::Sticker(Media {
                mime_type: Some("image/webp".into()),
                animated: true,
                ..media("8")
            }),
            Some("[animated sticker]"),
        ),
    ]
}

/// Location, shared contacts, interactive replies and template buttons.
fn places_cards_and_replies() -> Vec<Fixture> {
    let nfm = r#"{"flow_token":"AQAAAAACS5FpgQ_cAAAAAD0QI3s.","size":"m"}"#;
    vec![
        (
            "location",
            Some(
                json!({ "address": "1 Hacker Way", "latitude": 37.483253479004,
                "longitude": -122.14821624756, "name": "Main Street Beach",
                "url": "https://www.facebook.com" }),
            ),
            Content::Location {
                latitude: 37.483253479004,
                longitude: -122.14821624756,
                name: Some("Main Street Beach".into()),
                address: Some("1 Hacker Way".into()),
                url: Some("https://www.facebook.com".into()),
            },
            Some("[location] Main Street Beach, 1 Hacker Way (37.483253479004, -122.14821624756)"),
        ),
        (
            "contacts",
            Some(json!([
                { "name": { "formatted_name": "Barbara J. Johnson", "first_name": "Barbara" },
                  "phones": [{ "phone": "+1 (650) 555-1234", "wa_id": "16505551234" }] },
                { "name": { "formatted_name": "Kai" }, "emails": [] }
            ])),
            Content::Contacts(vec![
                json!({ "name": { "formatted_name": "Barbara J. Johnson", "first_name": "Barbara" },
                  "phones": [{ "phone": "+1 (650) 555-1234", "wa_id": "16505551234" }] }),
                json!({ "name": { "formatted_name": "Kai" }, "emails": [] }),
            ]),
            Some("[contact] Barbara J. Johnson +1 (650) 555-1234\n[contact] Kai"),
        ),
        (
            "interactive",
            Some(json!({ "type": "button_reply",
                "button_reply": { "id": "cancel-button", "title": "Cancel" } })),
            Content::Interactive(Interactive::ButtonReply {
                id: "cancel-button".into(),
                title: "Cancel".into(),
            }),
            Some("[button reply] Cancel (cancel-button)"),
        ),
        (
            "interactive",
            Some(
                json!({ "type": "list_reply", "list_reply": { "id": "priority_express",
                "title": "Express Shipping", "description": "Next Day to 2 Days" } }),
            ),
            Content::Interactive(Interactive::ListReply {
                id: "priority_express".into(),
                title: "Express Shipping".into(),
                description: Some("Next Day to 2 Days".into()),
            }),
            Some("[list reply] Express Shipping (priority_express)"),
        ),
        (
            "interactive",
            Some(json!({ "type": "nfm_reply",
                "nfm_reply": { "name": "flow", "body": "Sent", "response_json": nfm } })),
            Content::Interactive(Interactive::NfmReply {
                name: Some("flow".into()),
                body: Some("Sent".into()),
                response_json: nfm.into(),
            }),
            Some(r#"[form reply] {"flow_token":"AQAAAAACS5FpgQ_cAAAAAD0QI3s.","size":"m"}"#),
        ),
        (
            "button",
            Some(json!({ "payload": "stop-promos", "text": "Unsubscribe from Promos" })),
            Content::Button {
                payload: "stop-promos".into(),
                text: "Unsubscribe from Promos".into(),
            },
            Some("[button] Unsubscribe from Promos"),
        ),
    ]
}

/// Reactions, orders, system notices, edits, revokes, the welcome request and unknown types.
fn events_and_unknowns() -> Vec<Fixture> {
    vec![
        (
            "reaction",
            Some(json!({ "message_id": "wamid.ORIG", "emoji": "\u{1F600}" })),
            Content::Reaction {
                message_id: "wamid.ORIG".into(),
                emoji: Some("\u{1F600}".into()),
            },
            Some("[reaction \u{1F600}]"),
        ),
        (
            "reaction",
            Some(json!({ "message_id": "wamid.ORIG" })),
            Content::Reaction {
                message_id: "wamid.ORIG".into(),
                emoji: None,
            },
            Some("[reaction removed]"),
        ),
        (
            "reaction",
            Some(json!({ "message_id": "wamid.ORIG", "emoji": "" })),
            Content::Reaction {
                message_id: "wamid.ORIG".into(),
                emoji: None,
            },
            Some("[reaction removed]"),
        ),
        (
            "order",
            Some(
                json!({ "catalog_id": "194836987003835", "text": "Is this in stock?",
                "product_items": [{ "product_retailer_id": "di9ozbzfi4", "quantity": 2,
                    "item_price": 30, "currency": "USD" }] }),
            ),
            Content::Order {
                catalog_id: "194836987003835".into(),
                text: Some("Is this in stock?".into()),
                product_items: vec![json!({ "product_retailer_id": "di9ozbzfi4",
                    "quantity": 2, "item_price": 30, "currency": "USD" })],
            },
            Some("[order: 1 item] Is this in stock?"),
        ),
        (
            "system",
            Some(
                json!({ "body": "NAME changed from 16505551234 to 16505559999",
                "new_wa_id": "16505559999", "type": "user_changed_number" }),
            ),
            Content::System {
                body: Some("NAME changed from 16505551234 to 16505559999".into()),
                kind: Some("user_changed_number".into()),
                new_wa_id: Some("16505559999".into()),
            },
            Some("[system] NAME changed from 16505551234 to 16505559999"),
        ),
        (
            "edit",
            Some(json!({ "original_message_id": "wamid.ORIG",
                "message": { "type": "text", "text": { "body": "Does it come in red?" } } })),
            Content::Edit {
                original_message_id: "wamid.ORIG".into(),
                message: Box::new(Content::Text {
                    body: "Does it come in red?".into(),
                }),
            },
            Some("[edited] Does it come in red?"),
        ),
        (
            "revoke",
            Some(json!({ "original_message_id": "wamid.ORIG" })),
            Content::Revoke {
                original_message_id: "wamid.ORIG".into(),
            },
            None,
        ),
        (
            "request_welcome",
            None,
            Content::RequestWelcome,
            Some("[opened the chat]"),
        ),
        (
            "unsupported",
            Some(json!({ "type": "cart" })),
            Content::Unsupported {
                type_name: "unsupported".into(),
            },
            Some("[unsupported message: cart]"),
        ),
        (
            "hologram",
            Some(json!({ "depth": 3, "frames": [1, 2] })),
            Content::Unsupported {
                type_name: "hologram".into(),
            },
            Some("[unsupported message: hologram]"),
        ),
    ]
}

pub(super) fn statuses_fixture() -> Value {
    json!({
        "messaging_product": "whatsapp",
        "metadata": { "display_phone_number": "15550783881", "phone_number_id": PNID },
        "statuses": [
            { "id": "wamid.S1", "status": "sent", "timestamp": "1750263773",
              "recipient_id": "16505551234", "recipient_user_id": BSUID,
              "biz_opaque_callback_data": "turn-42",
              "conversation": { "id": "c1", "expiration_timestamp": "1750350173",
                  "origin": { "type": "service" } },
              "pricing": { "billable": true, "pricing_model": "PMP", "category": "service" } },
            { "id": "wamid.S1", "status": "delivered", "timestamp": 1750263774,
              "recipient_id": "16505551234" },
            { "id": "wamid.S1", "status": "read", "timestamp": "1750263775",
              "recipient_id": "16505551234" },
            { "id": "wamid.S2", "status": "failed", "timestamp": "1750263776",
              "recipient_id": "16505551234", "biz_opaque_callback_data": "turn-43",
              "errors": [{ "code": 131047, "title": "Re-engagement message",
                  "message": "Re-engagement message",
                  "error_data": { "details": "More than 24 hours have passed." },
                  "href": "https://developers.facebook.com/docs/whatsapp/" }] },
            { "id": "wamid.S3", "status": "played", "timestamp": "1750263777" }
        ]
    })
}

pub(super) fn other_changes() -> Vec<Value> {
    let metadata = json!({ "display_phone_number": "15550783881", "phone_number_id": PNID });
    vec![
        json!({ "field": "smb_message_echoes", "value": {
            "messaging_product": "whatsapp", "metadata": metadata,
            "message_echoes": [{ "from": "15550783881", "to": "16505551234",
                "to_user_id": BSUID, "id": "wamid.E1", "timestamp": "1750263773",
                "type": "text", "text": { "body": "sent from the app" } }] } }),
        json!({ "field": "user_preferences", "value": {
            "messaging_product": "whatsapp", "metadata": metadata,
            "contacts": [{ "wa_id": "16505551234", "user_id": BSUID }],
            "user_preferences": [{ "wa_id": "16505551234", "category": "marketing_messages",
                "value": "stop", "timestamp": 1731705721 }] } }),
        json!({ "field": "account_update", "value": {
            "phone_number": "15550783881", "event": "VERIFIED_ACCOUNT" } }),
    ]
}

pub(super) fn multi_envelope() -> Value {
    let value = |pnid: &str, messages: Value, statuses: Value| {
        json!({ "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "1555", "phone_number_id": pnid },
            "messages": messages, "statuses": statuses })
    };
    let text = |id: &str| {
        let mut m = message("text", Some(json!({ "body": id })));
        m["id"] = json!(id);
        m
    };
    json!({ "object": "whatsapp_business_account", "entry": [
        { "id": "waba-1", "changes": [
            { "field": "messages", "value": value("pnid-a", json!([text("wamid.1"), text("wamid.2")]), json!([])) },
            { "field": "messages", "value": value("pnid-b", json!([]), statuses_fixture()["statuses"].clone()) }
        ] },
        { "id": "waba-2", "time": 1750263773, "changes": [
            { "field": "messages", "value": value("pnid-b", json!([text("wamid.3")]), json!([])) },
            other_changes()[2].clone()
        ] }
    ] })
}

/// Every fixture in one envelope: all message types, statuses, echoes and other fields.
pub(super) fn everything() -> Value {
    let messages: Vec<Value> = fixtures()
        .into_iter()
        .map(|(k, o, _, _)| message(k, o))
        .collect();
    let mut env = multi_envelope();
    env["entry"][0]["changes"][0]["value"]["messages"] = Value::Array(messages);
    let changes = env["entry"][1]["changes"].as_array_mut().unwrap();
    changes.extend(other_changes());
    env
}
