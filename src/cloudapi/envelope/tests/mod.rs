//! Envelope parsing tests: a fixture per message type, statuses, odd shapes and properties.
use super::*;
use proptest::prelude::*;
use serde_json::json;

const PNID: &str = "106540352242922";
const BSUID: &str = "US.13491208655302741918";

fn envelope_of(messages_value: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "102290129340398", "changes": [{
            "value": messages_value, "field": "messages" }] }]
    })
}

fn messages_value(messages: Value) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "metadata": { "display_phone_number": "15550783881", "phone_number_id": PNID },
        "contacts": [{ "profile": { "name": "Sheena Nelson" }, "wa_id": "16505551234" }],
        "messages": messages
    })
}

fn parse_value(v: &Value) -> Result<Envelope, EnvelopeError> {
    parse(&serde_json::to_vec(v).unwrap())
}

fn messages_of(env: &Envelope) -> &MessagesValue {
    match &env.entry[0].changes[0].value {
        ChangeValue::Messages(v) => v,
        other => panic!("not a messages change: {other:?}"),
    }
}

/// A message as Meta sends it: the common fields, then `type` and its object.
fn message(kind: &str, object: Option<Value>) -> Value {
    let mut m = json!({
        "from": "16505551234",
        "id": format!("wamid.{kind}"),
        "timestamp": "1749416383",
        "type": kind,
    });
    if let Some(o) = object {
        m[kind] = o;
    }
    m
}

fn one(m: Value) -> InboundMessage {
    let env = parse_value(&envelope_of(messages_value(json!([m])))).unwrap();
    let mut v = messages_of(&env).clone();
    assert_eq!(v.messages.len(), 1);
    v.messages.remove(0)
}

fn media(id: &str) -> Media {
    Media {
        id: id.into(),
        mime_type: None,
        sha256: None,
        caption: None,
        filename: None,
        voice: false,
        animated: false,
    }
}

/// One fixture per message type from meta-cloud-api.md: (type, object, content, text()).
fn fixtures() -> Vec<(&'static str, Option<Value>, Content, Option<&'static str>)> {
    let nfm = r#"{"flow_token":"AQAAAAACS5FpgQ_cAAAAAD0QI3s.","size":"m"}"#;
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
            Some("This is a caption"),
        ),
        (
            "video",
            Some(json!({ "mime_type": "video/mp4", "sha256": "v", "id": "5" })),
            Content::Video(Media {
                mime_type: Some("video/mp4".into()),
                sha256: Some("v".into()),
                ..media("5")
            }),
            None,
        ),
        (
            "audio",
            Some(json!({ "mime_type": "audio/ogg; codecs=opus", "id": "6", "voice": true })),
            Content::Audio(Media {
                mime_type: Some("audio/ogg; codecs=opus".into()),
                voice: true,
                ..media("6")
            }),
            None,
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
            Some("Lucky Shrub Invoice"),
        ),
        (
            "sticker",
            Some(json!({ "mime_type": "image/webp", "id": "8", "animated": true })),
            Content::Sticker(Media {
                mime_type: Some("image/webp".into()),
                animated: true,
                ..media("8")
            }),
            None,
        ),
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
            Some("[location: 37.483253479004,-122.14821624756 Main Street Beach 1 Hacker Way]"),
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
            Some("Barbara J. Johnson, Kai"),
        ),
        (
            "interactive",
            Some(json!({ "type": "button_reply",
                "button_reply": { "id": "cancel-button", "title": "Cancel" } })),
            Content::Interactive(Interactive::ButtonReply {
                id: "cancel-button".into(),
                title: "Cancel".into(),
            }),
            Some("Cancel"),
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
            Some("Express Shipping"),
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
            Some(nfm),
        ),
        (
            "button",
            Some(json!({ "payload": "stop-promos", "text": "Unsubscribe from Promos" })),
            Content::Button {
                payload: "stop-promos".into(),
                text: "Unsubscribe from Promos".into(),
            },
            Some("Unsubscribe from Promos"),
        ),
        (
            "reaction",
            Some(json!({ "message_id": "wamid.ORIG", "emoji": "\u{1F600}" })),
            Content::Reaction {
                message_id: "wamid.ORIG".into(),
                emoji: Some("\u{1F600}".into()),
            },
            None,
        ),
        (
            "reaction",
            Some(json!({ "message_id": "wamid.ORIG" })),
            Content::Reaction {
                message_id: "wamid.ORIG".into(),
                emoji: None,
            },
            None,
        ),
        (
            "reaction",
            Some(json!({ "message_id": "wamid.ORIG", "emoji": "" })),
            Content::Reaction {
                message_id: "wamid.ORIG".into(),
                emoji: None,
            },
            None,
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
            Some("Is this in stock?"),
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
            None,
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
            Some("Does it come in red?"),
        ),
        (
            "revoke",
            Some(json!({ "original_message_id": "wamid.ORIG" })),
            Content::Revoke {
                original_message_id: "wamid.ORIG".into(),
            },
            None,
        ),
        ("request_welcome", None, Content::RequestWelcome, None),
        (
            "unsupported",
            Some(json!({ "type": "cart" })),
            Content::Unsupported {
                type_name: "unsupported".into(),
            },
            None,
        ),
        (
            "hologram",
            Some(json!({ "depth": 3, "frames": [1, 2] })),
            Content::Unsupported {
                type_name: "hologram".into(),
            },
            None,
        ),
    ]
}

#[test]
fn every_message_type_parses_with_its_text() {
    for (kind, object, want, text) in fixtures() {
        let raw = message(kind, object);
        let m = one(raw.clone());
        assert_eq!(m.content, want, "{kind}");
        assert_eq!(m.text().as_deref(), text, "{kind}");
        assert_eq!(m.type_name(), kind);
        assert_eq!(m.id.as_str(), format!("wamid.{kind}"));
        assert_eq!(m.from.as_ref().map(WaId::as_str), Some("16505551234"));
        assert_eq!(m.timestamp, 1_749_416_383);
        assert_eq!(m.raw, raw, "{kind}: raw is the message as received");
    }
}

#[test]
fn unsupported_keeps_its_errors() {
    let mut raw = message("unsupported", None);
    raw["errors"] = json!([{ "code": 131051, "title": "Message type unknown",
        "message": "Message type unknown",
        "error_data": { "details": "Message type is currently not supported." } }]);
    let m = one(raw);
    assert_eq!(m.content.label(), "unsupported");
    assert_eq!(
        m.errors,
        vec![ApiError {
            code: 131051,
            title: Some("Message type unknown".into()),
            message: Some("Message type unknown".into()),
            details: Some("Message type is currently not supported.".into()),
        }]
    );
}

#[test]
fn malformed_known_types_become_unsupported() {
    let cases = [
        ("text", json!({ "body": 5 })),
        ("text", json!("hello")),
        ("image", json!({ "caption": "no id" })),
        ("location", json!({ "latitude": "north" , "longitude": 1 })),
        ("contacts", json!({ "name": "not an array" })),
        (
            "interactive",
            json!({ "type": "button_reply", "button_reply": { "id": "x" } }),
        ),
        ("interactive", json!(["not", "an", "object"])),
        ("reaction", json!({ "emoji": "x" })),
        ("edit", json!({ "original_message_id": "wamid.O" })),
        ("revoke", json!({})),
    ];
    for (kind, object) in cases {
        let m = one(message(kind, Some(object.clone())));
        assert_eq!(
            m.content,
            Content::Unsupported {
                type_name: kind.into()
            },
            "{kind} {object}"
        );
        assert_eq!(m.type_name(), kind);
        assert_eq!(m.content.label(), "unsupported");
    }
    // A known type with its object missing altogether.
    assert_eq!(one(message("text", None)).content.label(), "unsupported");
    // No `type` at all.
    let mut raw = message("text", Some(json!({ "body": "hi" })));
    raw.as_object_mut().unwrap().remove("type");
    assert_eq!(
        one(raw).content,
        Content::Unsupported {
            type_name: String::new()
        }
    );
}

#[test]
fn unknown_interactive_reply_is_kept_raw() {
    let object = json!({ "type": "call_permission_reply", "call_permission_reply": {} });
    let m = one(message("interactive", Some(object.clone())));
    assert_eq!(m.content, Content::Interactive(Interactive::Other(object)));
    assert_eq!(m.text(), None);
}

#[test]
fn edit_of_unknown_content_is_still_an_edit() {
    let m = one(message(
        "edit",
        Some(json!({ "original_message_id": "wamid.O",
            "message": { "type": "hologram", "hologram": {} } })),
    ));
    assert_eq!(
        m.content,
        Content::Edit {
            original_message_id: "wamid.O".into(),
            message: Box::new(Content::Unsupported {
                type_name: "hologram".into()
            }),
        }
    );
    assert_eq!(m.text(), None);
}

#[test]
fn bsuid_message_without_wa_id() {
    let value = json!({
        "messaging_product": "whatsapp",
        "metadata": { "display_phone_number": "15550783881", "phone_number_id": PNID },
        "contacts": [{ "profile": { "name": "Asha", "username": "asha.k" },
            "user_id": BSUID, "parent_user_id": "US.ENT.99" }],
        "messages": [{ "from_user_id": BSUID, "id": "wamid.B", "timestamp": "1775000000",
            "type": "text", "text": { "body": "hi" } }]
    });
    let env = parse_value(&envelope_of(value)).unwrap();
    let v = messages_of(&env);
    let m = &v.messages[0];
    assert_eq!(m.from, None);
    assert_eq!(m.from_user_id, Some(UserId::from(BSUID)));
    assert_eq!(
        v.contacts,
        vec![Contact {
            wa_id: None,
            user_id: Some(BSUID.into()),
            parent_user_id: Some("US.ENT.99".into()),
            name: Some("Asha".into()),
            username: Some("asha.k".into()),
        }]
    );
    assert_eq!(m.customer_key(&v.contacts), Some(CustomerKey(BSUID.into())));
}

#[test]
fn customer_key_prefers_bsuid_from_message_or_matching_contact() {
    let contact = |wa: Option<&str>, user: Option<&str>| Contact {
        wa_id: wa.map(WaId::from),
        user_id: user.map(UserId::from),
        parent_user_id: None,
        name: None,
        username: None,
    };
    let mut m = one(message("text", Some(json!({ "body": "hi" }))));
    let wa = "16505551234";
    // (from, from_user_id, contacts, want)
    let cases = [
        (Some(wa), None, vec![contact(Some(wa), None)], Some(wa)),
        (
            Some(wa),
            None,
            vec![contact(Some(wa), Some(BSUID))],
            Some(BSUID),
        ),
        (
            Some(wa),
            None,
            vec![contact(Some("1999"), Some("US.OTHER"))],
            Some(wa),
        ),
        (Some(wa), Some(BSUID), vec![], Some(BSUID)),
        (
            None,
            Some(BSUID),
            vec![contact(None, Some(BSUID))],
            Some(BSUID),
        ),
        (None, None, vec![contact(Some(wa), Some(BSUID))], None),
    ];
    for (from, user, contacts, want) in cases {
        m.from = from.map(WaId::from);
        m.from_user_id = user.map(UserId::from);
        assert_eq!(
            m.customer_key(&contacts).map(|k| k.0),
            want.map(str::to_owned),
            "from={from:?} user={user:?}"
        );
    }
}

#[test]
fn message_without_any_sender_still_parses() {
    let mut raw = message("text", Some(json!({ "body": "who am I" })));
    raw.as_object_mut().unwrap().remove("from");
    let env = parse_value(&envelope_of(json!({
        "metadata": { "display_phone_number": "1", "phone_number_id": PNID },
        "messages": [raw]
    })))
    .unwrap();
    let v = messages_of(&env);
    assert_eq!(v.messages[0].from, None);
    assert_eq!(v.messages[0].customer_key(&v.contacts), None);
}

#[test]
fn common_fields_context_referral_group() {
    let mut raw = message("text", Some(json!({ "body": "this one" })));
    raw["context"] = json!({ "from": "15550783881", "id": "wamid.Q", "forwarded": true,
        "referred_product": { "catalog_id": "c", "product_retailer_id": "p" } });
    raw["referral"] = json!({ "source_url": "https://fb.me/x", "source_type": "ad",
        "ctwa_clid": "abc" });
    raw["group_id"] = json!("120363000000000000");
    raw["x_future"] = json!({ "kept": true });
    let m = one(raw.clone());
    assert_eq!(
        m.context,
        Some(Context {
            from: Some("15550783881".into()),
            id: Some("wamid.Q".into()),
            forwarded: true,
            frequently_forwarded: false,
            referred_product: Some(json!({ "catalog_id": "c", "product_retailer_id": "p" })),
        })
    );
    assert_eq!(m.referral, Some(raw["referral"].clone()));
    assert_eq!(m.group_id.as_deref(), Some("120363000000000000"));
    assert_eq!(m.raw["x_future"], json!({ "kept": true }));
    assert_eq!(m.raw, raw);
}

#[test]
fn timestamp_as_string_or_number() {
    for (ts, want) in [
        (json!("1749416383"), 1_749_416_383),
        (json!(1_749_416_383), 1_749_416_383),
    ] {
        let mut raw = message("text", Some(json!({ "body": "t" })));
        raw["timestamp"] = ts;
        assert_eq!(one(raw).timestamp, want);
    }
    for bad in [json!("yesterday"), json!(1.5), json!(null), json!(u64::MAX)] {
        let mut raw = message("text", Some(json!({ "body": "t" })));
        raw["timestamp"] = bad.clone();
        let err = parse_value(&envelope_of(messages_value(json!([raw])))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "webhook entry[0].changes[0].value.messages[0]: has no `timestamp` in unix seconds",
            "{bad}"
        );
    }
}

fn statuses_fixture() -> Value {
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

#[test]
fn statuses_sent_delivered_read_failed() {
    let env = parse_value(&envelope_of(statuses_fixture())).unwrap();
    let s = &messages_of(&env).statuses;
    let kinds: Vec<_> = s.iter().map(|s| s.status.clone()).collect();
    assert_eq!(
        kinds,
        [
            StatusKind::Sent,
            StatusKind::Delivered,
            StatusKind::Read,
            StatusKind::Failed,
            StatusKind::Other("played".into())
        ]
    );
    assert_eq!(s[0].biz_opaque_callback_data.as_deref(), Some("turn-42"));
    assert_eq!(s[0].customer_key(), Some(CustomerKey(BSUID.into())));
    assert_eq!(s[0].pricing.as_ref().unwrap()["category"], "service");
    assert_eq!(
        s[0].conversation.as_ref().unwrap()["origin"]["type"],
        "service"
    );
    assert_eq!(s[1].timestamp, 1_750_263_774);
    assert_eq!(s[1].customer_key(), Some(CustomerKey("16505551234".into())));
    assert_eq!(s[3].biz_opaque_callback_data.as_deref(), Some("turn-43"));
    assert_eq!(
        s[3].errors,
        vec![ApiError {
            code: 131047,
            title: Some("Re-engagement message".into()),
            message: Some("Re-engagement message".into()),
            details: Some("More than 24 hours have passed.".into()),
        }]
    );
    assert_eq!(s[4].status.as_str(), "played");
    assert_eq!(serde_json::to_value(&s[3].status).unwrap(), json!("failed"));
}

fn other_changes() -> Vec<Value> {
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

#[test]
fn echoes_preferences_and_account_updates_are_not_messages() {
    let changes = other_changes();
    let env = parse_value(&json!({ "object": "whatsapp_business_account",
        "entry": [{ "id": "1", "changes": changes.clone() }] }))
    .unwrap();
    let c = &env.entry[0].changes;
    match &c[0].value {
        ChangeValue::Echoes(v) => {
            assert!(v.messages.is_empty());
            assert_eq!(
                v.message_echoes,
                changes[0]["value"]["message_echoes"]
                    .as_array()
                    .unwrap()
                    .clone()
            );
            assert_eq!(v.metadata.phone_number_id.as_str(), PNID);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c[1].field, "user_preferences");
    assert_eq!(c[1].value, ChangeValue::Other(changes[1]["value"].clone()));
    assert_eq!(c[2].field, "account_update");
    assert_eq!(c[2].value, ChangeValue::Other(changes[2]["value"].clone()));
}

fn multi_envelope() -> Value {
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

#[test]
fn several_entries_and_changes_across_two_numbers() {
    let env = parse_value(&multi_envelope()).unwrap();
    let seen: Vec<(String, String, Vec<String>, usize)> = env
        .entry
        .iter()
        .flat_map(|e| e.changes.iter().map(move |c| (e, c)))
        .filter_map(|(e, c)| match &c.value {
            ChangeValue::Messages(v) => Some((
                e.id.0.clone(),
                v.metadata.phone_number_id.0.clone(),
                v.messages.iter().map(|m| m.id.0.clone()).collect(),
                v.statuses.len(),
            )),
            _ => None,
        })
        .collect();
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        seen,
        vec![
            (
                "waba-1".into(),
                "pnid-a".into(),
                s(&["wamid.1", "wamid.2"]),
                0
            ),
            ("waba-1".into(), "pnid-b".into(), s(&[]), 5),
            ("waba-2".into(), "pnid-b".into(), s(&["wamid.3"]), 0),
        ]
    );
    assert!(matches!(
        env.entry[1].changes[1].value,
        ChangeValue::Other(_)
    ));
}

#[test]
fn broken_skeletons_say_what_is_wrong() {
    let msg = |body: &[u8]| parse(body).unwrap_err().to_string();
    assert!(msg(b"not json").starts_with("webhook body is not JSON"));
    assert!(msg(b"{\"object\":").starts_with("webhook body is not JSON"));
    assert!(msg(b"[]").starts_with("webhook body does not have the envelope's shape"));
    assert_eq!(
        msg(br#"{"entry":[]}"#),
        "webhook body has no `object` (expected \"whatsapp_business_account\")"
    );
    assert!(msg(br#"{"object":"page","entry":[]}"#).starts_with("webhook `object` is \"page\""));
    assert_eq!(
        msg(br#"{"object":"whatsapp_business_account"}"#),
        "webhook body has no `entry` array"
    );
    assert!(
        msg(br#"{"object":"whatsapp_business_account","entry":{}}"#)
            .starts_with("webhook body does not have the envelope's shape")
    );
    let cases = [
        (json!([{ "changes": [] }]), "webhook entry[0]: has no `id`"),
        (
            json!([{ "id": "w" }]),
            "webhook entry[0]: has no `changes` array",
        ),
        (
            json!([{ "id": "w", "changes": [{ "value": {} }] }]),
            "webhook entry[0].changes[0]: has no `field`",
        ),
        (
            json!([{ "id": "w", "changes": [{ "field": "messages" }] }]),
            "webhook entry[0].changes[0]: has no `value`",
        ),
        (
            json!([{ "id": "w", "changes": [{ "field": "messages", "value": { "messages": [] } }] }]),
            "webhook entry[0].changes[0].value: has no `metadata`",
        ),
        (
            json!([{ "id": "w", "changes": [{ "field": "messages", "value": { "metadata": {} } }] }]),
            "webhook entry[0].changes[0].value.metadata: has no `phone_number_id`",
        ),
    ];
    for (entry, want) in cases {
        let body = json!({ "object": "whatsapp_business_account", "entry": entry });
        assert_eq!(parse_value(&body).unwrap_err().to_string(), want);
    }
    let mut no_id = message("text", Some(json!({ "body": "x" })));
    no_id.as_object_mut().unwrap().remove("id");
    let ok = message("text", Some(json!({ "body": "y" })));
    let err = parse_value(&envelope_of(messages_value(json!([ok, no_id])))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "webhook entry[0].changes[0].value.messages[1]: has no `id`"
    );
    let mut st = statuses_fixture();
    st["statuses"][2].as_object_mut().unwrap().remove("status");
    let err = parse_value(&envelope_of(st)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "webhook entry[0].changes[0].value.statuses[2]: has no `status`"
    );
}

#[test]
fn value_level_errors_and_malformed_items_are_tolerated() {
    let mut v = messages_value(json!([]));
    v["errors"] =
        json!([{ "code": 131000, "title": "Something went wrong" }, { "title": "no code" }]);
    v["contacts"] = json!([{ "wa_id": 5 }, { "wa_id": "16505551234" }]);
    let env = parse_value(&envelope_of(v)).unwrap();
    let v = messages_of(&env);
    assert_eq!(v.errors.len(), 1);
    assert_eq!(v.errors[0].code, 131000);
    assert_eq!(v.contacts.len(), 1);
}

// --- property tests --------------------------------------------------------------------

/// Every fixture in one envelope: all message types, statuses, echoes and other fields.
fn everything() -> Value {
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

fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "object",
            "entry",
            "id",
            "changes",
            "field",
            "value",
            "metadata",
            "phone_number_id",
            "messages",
            "statuses",
            "contacts",
            "type",
            "timestamp",
            "from",
            "text",
            "body",
            "errors",
            "code",
            "status",
            "message",
            "interactive",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{0,10}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Keys whose subtree the parser keeps as raw JSON (so extra fields there do show).
fn kept_raw(path: &[String], key: &str) -> bool {
    matches!(
        key,
        "referral"
            | "referred_product"
            | "conversation"
            | "pricing"
            | "message_echoes"
            | "product_items"
    ) || (key == "contacts" && path.iter().any(|k| k == "messages"))
}

/// Adds unknown fields to every object the parser reads field by field.
fn inject(v: &mut Value, path: &mut Vec<String>, extras: &[(String, Value)], n: &mut usize) {
    match v {
        Value::Object(o) => {
            let (k, x) = &extras[*n % extras.len()];
            *n += 1;
            o.insert(k.clone(), x.clone());
            let typed_value = matches!(
                o.get("field").and_then(Value::as_str),
                Some("messages" | "smb_message_echoes")
            );
            for (key, child) in o.iter_mut() {
                if key == k
                    || kept_raw(path, key)
                    || (key == "value"
                        && !typed_value
                        && path.last().is_some_and(|p| p == "changes"))
                {
                    continue;
                }
                path.push(key.clone());
                inject(child, path, extras, n);
                path.pop();
            }
        }
        Value::Array(items) => {
            for item in items {
                inject(item, path, extras, n);
            }
        }
        _ => {}
    }
}

fn without_raw(mut env: Envelope) -> Envelope {
    for c in env.entry.iter_mut().flat_map(|e| e.changes.iter_mut()) {
        if let ChangeValue::Messages(v) = &mut c.value {
            for m in &mut v.messages {
                m.raw = Value::Null;
            }
        }
    }
    env
}

proptest! {
    #[test]
    fn never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&body);
    }

    #[test]
    fn never_panics_on_json(v in arb_json()) {
        let _ = parse_value(&v);
        let _ = parse_value(&json!({ "object": "whatsapp_business_account", "entry": [v] }));
    }

    #[test]
    fn never_panics_on_mutated_envelopes(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut body = serde_json::to_vec(&everything()).unwrap();
        for (at, byte) in edits {
            let i = at.index(body.len());
            body[i] = byte;
        }
        let _ = parse(&body);
    }

    #[test]
    fn any_type_object_keeps_the_envelope(kind in prop_oneof![
        prop::sample::select(vec!["text", "image", "audio", "location", "contacts",
            "interactive", "button", "reaction", "order", "system", "edit", "revoke",
            "request_welcome", "unsupported"]).prop_map(str::to_owned),
        "[a-z_]{0,10}".prop_filter("a common field", |k| !matches!(k.as_str(), "id" | "timestamp" | "type")),
    ], object in arb_json(), context in arb_json(), errors in arb_json()) {
        let mut m = message(&kind, None);
        m[kind.as_str()] = object;
        m["context"] = context;
        m["errors"] = errors;
        let env = parse_value(&envelope_of(messages_value(json!([m])))).unwrap();
        let got = &messages_of(&env).messages[0];
        prop_assert_eq!(got.type_name(), kind.as_str());
        let _ = got.text();
    }

    #[test]
    fn unknown_fields_change_nothing(extras in prop::collection::vec(("x_[a-z]{1,8}", arb_json()), 1..16)) {
        let plain = everything();
        let mut noisy = plain.clone();
        inject(&mut noisy, &mut Vec::new(), &extras, &mut 0);
        prop_assert_ne!(&plain, &noisy);
        let want = without_raw(parse_value(&plain).unwrap());
        let got = without_raw(parse_value(&noisy).unwrap());
        prop_assert_eq!(want, got);
    }
}

// --- fuzz seeds --------------------------------------------------------------------------

/// Every fixture envelope parses; with `WA_GATEWAY_FUZZ_SEEDS=DIR` each is also written there as
/// a seed of the `webhook` fuzz target (`fuzz/seed.sh` does this).
#[test]
fn fixtures_are_the_webhook_fuzz_seeds() {
    let mut seeds: Vec<Value> = fixtures()
        .into_iter()
        .map(|(k, o, _, _)| envelope_of(messages_value(Value::Array(vec![message(k, o)]))))
        .collect();
    seeds.push(envelope_of(statuses_fixture()));
    seeds.extend(other_changes().into_iter().map(|change| {
        json!({ "object": "whatsapp_business_account",
                "entry": [{ "id": "102290129340398", "changes": [change] }] })
    }));
    seeds.push(multi_envelope());
    seeds.push(everything());
    let dir = std::env::var_os("WA_GATEWAY_FUZZ_SEEDS").map(std::path::PathBuf::from);
    for (i, seed) in seeds.iter().enumerate() {
        let bytes = serde_json::to_vec(seed).unwrap();
        assert!(parse(&bytes).is_ok(), "seed {i} does not parse: {seed}");
        if let Some(dir) = &dir {
            // The webhook target's first byte picks how the signature header is made.
            let mut data = vec![0u8];
            data.extend_from_slice(&bytes);
            std::fs::write(dir.join(format!("fixture-{i:02}.json")), data).unwrap();
        }
    }
}
