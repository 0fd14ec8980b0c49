//! Table tests of the structured content and text rendering, one row per message type.

use super::*;
use crate::cloudapi::envelope::{self, ChangeValue};

const PNID: &str = "106540352242922";

/// A message of `kind` with its object, through the real envelope parser.
fn msg_with(kind: &str, object: Value, extra: Value) -> InboundMessage {
    let mut m = json!({ "from": "16505551234", "id": "wamid.X", "timestamp": "1749416383",
        "type": kind, kind: object });
    for (k, v) in extra.as_object().into_iter().flatten() {
        m[k] = v.clone();
    }
    let env = json!({ "object": "whatsapp_business_account", "entry": [{ "id": "1",
        "changes": [{ "field": "messages", "value": {
            "metadata": { "display_phone_number": "1555", "phone_number_id": PNID },
            "messages": [m] } }] }] });
    let env = envelope::parse(&serde_json::to_vec(&env).unwrap()).unwrap();
    match &env.entry[0].changes[0].value {
        ChangeValue::Messages(v) => v.messages[0].clone(),
        other => panic!("{other:?}"),
    }
}

fn msg(kind: &str, object: Value) -> InboundMessage {
    msg_with(kind, object, json!({}))
}

/// (type, object, structured, render_text) of one message case.
type Case = (&'static str, Value, Value, Option<&'static str>);

/// (type, object, structured, render_text) for every type in meta-cloud-api.md.
fn cases() -> Vec<Case> {
    let mut all = text_and_media();
    all.extend(places_cards_and_replies());
    all.extend(events_and_unknowns());
    all
}

/// Text and the media types.
fn text_and_media() -> Vec<Case> {
    vec![
        (
            "text",
            json!({ "body": "hi there" }),
            json!({ "type": "text", "body": "hi there" }),
            Some("hi there"),
        ),
        (
            "image",
            json!({ "id": "111", "mime_type": "image/jpeg", "sha256": "abc", "caption": "my cat" }),
            json!({ "type": "image", "media_id": "111", "mime_type": "image/jpeg", "sha256": "abc",
            "caption": "my cat", "filename": null, "voice": false, "animated": false,
            "download_url": "/media/106540352242922/111" }),
            Some("[image] my cat"),
        ),
        (
            "image",
            json!({ "id": "112", "mime_type": "image/png" }),
            json!({ "type": "image", "media_id": "112", "mime_type": "image/png", "sha256": null,
            "caption": null, "filename": null, "voice": false, "animated": false,
            "download_url": "/media/106540352242922/112" }),
            Some("[image]"),
        ),
        (
            "video",
            json!({ "id": "113", "mime_type": "video/mp4", "caption": "look" }),
            json!({ "type": "video", "media_id": "113", "mime_type": "video/mp4", "sha256": null,
            "caption": "look", "filename": null, "voice": false, "animated": false,
            "download_url": "/media/106540352242922/113" }),
            Some("[video] look"),
        ),
        (
            "audio",
            json!({ "id": "114", "mime_type": "audio/ogg; codecs=opus", "voice": true }),
            json!({ "type": "audio", "media_id": "114", "mime_type": "audio/ogg; codecs=opus",
            "sha256": null, "caption": null, "filename": null, "voice": true, "animated": false,
            "download_url": "/media/106540352242922/114" }),
            Some("[voice message]"),
        ),
        (
            "audio",
            json!({ "id": "115", "mime_type": "audio/mpeg" }),
            json!({ "type": "audio", "media_id": "115", "mime_type": "audio/mpeg", "sha256": null,
            "caption": null, "filename": null, "voice": false, "animated": false,
            "download_url": "/media/106540352242922/115" }),
            Some("[audio]"),
        ),
        (
            "document",
            json!({ "id": "116", "mime_type": "application/pdf", "filename": "report.pdf" }),
            json!({ "type": "document", "media_id": "116", "mime_type": "application/pdf",
            "sha256": null, "caption": null, "filename": "report.pdf", "voice": false,
            "animated": false, "download_url": "/media/106540352242922/116" }),
            Some("[document report.pdf]"),
        ),
        (
            "document",
            json!({ "id": "117", "filename": "q3.xlsx", "caption": "numbers" }),
            json!({ "type": "document", "media_id": "117", "mime_type": null, "sha256": null,
            "caption": "numbers", "filename": "q3.xlsx", "voice": false, "animated": false,
            "download_url": "/media/106540352242922/117" }),
            Some("[document q3.xlsx] numbers"),
        ),
        (
            "sticker",
            json!({ "id": "118", "mime_type": "image/webp", "animated": true }),
            json!({ "type": "sticker", "media_id": "118", "mime_type": "image/webp", "sha256": null,
            "caption": null, "filename": null, "voice": false, "animated": true,
            "download_url": "/media/106540352242922/118" }),
            Some("[animated sticker]"),
        ),
    ]
}

/// Location, shared contacts, interactive replies and template buttons.
fn places_cards_and_replies() -> Vec<Case> {
    let nfm = r#"{"flow_token":"t","size":"m"}"#;
    let card = json!({ "name": { "formatted_name": "Barbara J. Johnson", "first_name": "Barbara" },
        "phones": [{ "phone": "+1 (650) 555-1234", "wa_id": "16505551234", "type": "HOME" }],
        "emails": [{ "email": "b@example.com", "type": "WORK" }],
        "org": { "company": "Lucky Shrub", "title": "Manager" } });
    vec![
        (
            "location",
            json!({ "latitude": 37.48, "longitude": -122.14, "name": "Main Street Beach",
            "address": "1 Hacker Way", "url": "https://example.com" }),
            json!({ "type": "location", "latitude": 37.48, "longitude": -122.14,
            "name": "Main Street Beach", "address": "1 Hacker Way", "url": "https://example.com" }),
            Some("[location] Main Street Beach, 1 Hacker Way (37.48, -122.14)"),
        ),
        (
            "location",
            json!({ "latitude": 1.5, "longitude": 2.0 }),
            json!({ "type": "location", "latitude": 1.5, "longitude": 2.0, "name": null,
            "address": null, "url": null }),
            Some("[location] (1.5, 2)"),
        ),
        (
            "contacts",
            json!([card, { "name": { "first_name": "Kai", "last_name": "Ng" } }]),
            json!({ "type": "contacts", "contacts": [
            { "name": "Barbara J. Johnson", "phones": ["+1 (650) 555-1234"],
              "emails": ["b@example.com"], "org": "Lucky Shrub" },
            { "name": "Kai Ng", "phones": [], "emails": [], "org": null } ] }),
            Some("[contact] Barbara J. Johnson +1 (650) 555-1234\n[contact] Kai Ng"),
        ),
        (
            "interactive",
            json!({ "type": "button_reply", "button_reply": { "id": "yes-1", "title": "Yes" } }),
            json!({ "type": "button_reply", "id": "yes-1", "title": "Yes" }),
            Some("[button reply] Yes (yes-1)"),
        ),
        (
            "interactive",
            json!({ "type": "list_reply", "list_reply": { "id": "express",
            "title": "Express Shipping", "description": "Next day" } }),
            json!({ "type": "list_reply", "id": "express", "title": "Express Shipping",
            "description": "Next day" }),
            Some("[list reply] Express Shipping (express)"),
        ),
        (
            "interactive",
            json!({ "type": "nfm_reply", "nfm_reply": { "name": "flow",
            "body": "Sent", "response_json": nfm } }),
            json!({ "type": "nfm_reply", "name": "flow", "body": "Sent", "response_json": nfm,
            "response": { "flow_token": "t", "size": "m" } }),
            Some(r#"[form reply] {"flow_token":"t","size":"m"}"#),
        ),
        (
            "interactive",
            json!({ "type": "call_permission_reply", "call_permission_reply": {} }),
            json!({ "type": "interactive", "interactive_type": "call_permission_reply",
            "interactive": { "type": "call_permission_reply", "call_permission_reply": {} } }),
            Some("[interactive call_permission_reply]"),
        ),
        (
            "button",
            json!({ "payload": "stop-promos", "text": "Unsubscribe" }),
            json!({ "type": "button", "payload": "stop-promos", "text": "Unsubscribe" }),
            Some("[button] Unsubscribe"),
        ),
    ]
}

/// Reactions, orders, system notices, edits, revokes, the welcome request and unknown types.
fn events_and_unknowns() -> Vec<Case> {
    vec![
        (
            "reaction",
            json!({ "message_id": "wamid.O", "emoji": "👍" }),
            json!({ "type": "reaction", "message_id": "wamid.O", "emoji": "👍", "removed": false }),
            Some("[reaction 👍]"),
        ),
        (
            "reaction",
            json!({ "message_id": "wamid.O", "emoji": "" }),
            json!({ "type": "reaction", "message_id": "wamid.O", "emoji": null, "removed": true }),
            Some("[reaction removed]"),
        ),
        (
            "order",
            json!({ "catalog_id": "c1", "text": "in stock?", "product_items": [
            { "product_retailer_id": "p1", "quantity": 2, "item_price": 30, "currency": "USD" }] }),
            json!({ "type": "order", "catalog_id": "c1", "text": "in stock?", "product_items": [
            { "product_retailer_id": "p1", "quantity": 2, "item_price": 30, "currency": "USD" }] }),
            Some("[order: 1 item] in stock?"),
        ),
        (
            "system",
            json!({ "body": "changed number", "type": "user_changed_number",
            "new_wa_id": "16505559999" }),
            json!({ "type": "system", "system_type": "user_changed_number", "body": "changed number",
            "new_wa_id": "16505559999" }),
            Some("[system] changed number"),
        ),
        (
            "edit",
            json!({ "original_message_id": "wamid.O",
            "message": { "type": "text", "text": { "body": "in red?" } } }),
            json!({ "type": "edit", "original_message_id": "wamid.O",
            "message": { "type": "text", "body": "in red?" } }),
            Some("[edited] in red?"),
        ),
        (
            "edit",
            json!({ "original_message_id": "wamid.O",
            "message": { "type": "image", "image": { "id": "119", "caption": "better" } } }),
            json!({ "type": "edit", "original_message_id": "wamid.O",
            "message": { "type": "image", "media_id": "119", "mime_type": null, "sha256": null,
                "caption": "better", "filename": null, "voice": false, "animated": false,
                "download_url": "/media/106540352242922/119" } }),
            Some("[edited] [image] better"),
        ),
        (
            "revoke",
            json!({ "original_message_id": "wamid.O" }),
            json!({ "type": "revoke", "original_message_id": "wamid.O" }),
            None,
        ),
        (
            "request_welcome",
            json!({}),
            json!({ "type": "request_welcome" }),
            Some("[opened the chat]"),
        ),
        (
            "unsupported",
            json!({ "type": "cart" }),
            json!({ "type": "unsupported", "original_type": "cart", "errors": [] }),
            Some("[unsupported message: cart]"),
        ),
        (
            "hologram",
            json!({ "depth": 3 }),
            json!({ "type": "unsupported", "original_type": "hologram", "errors": [] }),
            Some("[unsupported message: hologram]"),
        ),
        (
            "text",
            json!({ "body": 5 }),
            json!({ "type": "unsupported", "original_type": "text", "errors": [] }),
            Some("[unsupported message: text]"),
        ),
    ]
}

#[test]
fn every_type_has_its_structured_content_and_text() {
    let pnid = PhoneNumberId::from(PNID);
    for (kind, object, want, text) in cases() {
        let m = msg(kind, object);
        let got = structured_for(&pnid, &m);
        assert_eq!(got, want, "{kind}");
        let mut without = want.clone();
        without.as_object_mut().unwrap().remove("download_url");
        if let Some(inner) = without.get_mut("message").and_then(Value::as_object_mut) {
            inner.remove("download_url");
        }
        assert_eq!(structured(&m), without, "{kind} without a number");
        assert_eq!(render_text(&m).as_deref(), text, "{kind}");
    }
}

#[test]
fn unsupported_carries_metas_errors() {
    let m = msg_with(
        "unsupported",
        json!({ "type": "poll" }),
        json!({ "errors": [{ "code": 131051, "title": "Message type unknown",
            "error_data": { "details": "Message type is currently not supported." } }] }),
    );
    assert_eq!(
        structured(&m),
        json!({ "type": "unsupported", "original_type": "poll", "errors": [{
            "code": 131051, "title": "Message type unknown", "message": null,
            "details": "Message type is currently not supported." }] })
    );
}

#[test]
fn context_referral_and_group_are_kept() {
    let m = msg_with(
        "text",
        json!({ "body": "this one" }),
        json!({ "context": { "from": "15550001111", "id": "wamid.Q", "forwarded": true },
            "referral": { "source_url": "https://fb.me/x", "ctwa_clid": "abc" },
            "group_id": "120363000000000000" }),
    );
    assert_eq!(
        structured(&m),
        json!({ "type": "text", "body": "this one",
            "context": { "message_id": "wamid.Q", "from": "15550001111", "forwarded": true,
                "frequently_forwarded": false, "referred_product": null },
            "referral": { "source_url": "https://fb.me/x", "ctwa_clid": "abc" },
            "group_id": "120363000000000000" })
    );
    assert_eq!(render_text(&m).as_deref(), Some("[forwarded] this one"));
}

#[test]
fn download_paths_only_for_path_safe_ids() {
    for (pnid, id, want) in [
        (
            PNID,
            "1234567890",
            Some("/media/106540352242922/1234567890"),
        ),
        (PNID, "abc_DEF-9", Some("/media/106540352242922/abc_DEF-9")),
        (PNID, "../admin", None),
        (PNID, "a/b", None),
        (PNID, "a?b", None),
        (PNID, "", None),
        ("", "1", None),
    ] {
        assert_eq!(download_path(pnid, id).as_deref(), want, "{id:?}");
    }
    let m = msg("image", json!({ "id": "../../metrics" }));
    assert_eq!(
        structured_for(&PhoneNumberId::from(PNID), &m).get("download_url"),
        None
    );
}
