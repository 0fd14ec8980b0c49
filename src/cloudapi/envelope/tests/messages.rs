//! Messages: every type with its content and text, malformed and unknown types, senders and
//! customer keys, the common fields, timestamps, and the stored message type.

use super::fixtures::fixtures;
use super::*;

#[test]
fn every_message_type_parses_with_its_text() {
    for (kind, object, want, text) in fixtures() {
        let raw = message(kind, object);
        let m = one(raw.clone());
        assert_eq!(m.content, want, "{kind}");
        assert_eq!(render_text(&m).as_deref(), text, "{kind}");
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
    assert_eq!(
        render_text(&m).as_deref(),
        Some("[interactive call_permission_reply]")
    );
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
    // The agent's text, read from render_text: the edit's tag around the unknown type's name.
    assert_eq!(
        render_text(&m).as_deref(),
        Some("[edited] [unsupported message: hologram]")
    );
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

#[test]
fn message_type_is_stored_as_the_wire_name() {
    for (kind, object, want, _) in fixtures() {
        let m = one(message(kind, object));
        let stored = m.content.message_type();
        assert_eq!(stored, want.message_type(), "{kind}");
        assert_eq!(stored.as_str(), m.content.label(), "{kind}");
        assert_eq!(MessageType::parse(stored.as_str()), stored, "{kind}");
    }
    // A row written by another build keeps its name; metrics see a bounded label.
    let other = MessageType::parse("hologram");
    assert_eq!(other, MessageType::Other("hologram".into()));
    assert_eq!(other.as_str(), "hologram");
    assert_eq!(other.label(), "other");
    assert_eq!(
        MessageType::parse("request_welcome"),
        MessageType::RequestWelcome
    );
}

#[test]
fn contact_is_the_one_naming_the_sender() {
    let mut m = one(message("text", Some(json!({ "body": "hi" }))));
    let contacts = [
        contact(Some("1999"), Some("US.OTHER")),
        contact(Some("16505551234"), None),
        contact(None, Some(BSUID)),
    ];
    assert_eq!(m.contact(&contacts), Some(&contacts[1]));
    m.from = None;
    assert_eq!(m.contact(&contacts), None);
    m.from_user_id = Some(BSUID.into());
    assert_eq!(m.contact(&contacts), Some(&contacts[2]));
}
