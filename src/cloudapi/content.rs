//! What an agent sees of an inbound message: a structured JSON view of each message type, and a
//! one-line text rendering for agents that only take text. Pure functions of the parsed message.

use super::envelope::{ApiError, Content, InboundMessage, Interactive, Media};
use crate::ids::PhoneNumberId;
use serde_json::{Value, json};

/// The structured content of `msg`, without download links (see [`structured_for`]).
pub fn structured(msg: &InboundMessage) -> Value {
    message_value(msg, None)
}

/// The structured content of `msg` received by `pnid`: media carry `download_url`, the admin
/// route `/media/{pnid}/{media_id}` (relative; the caller may prefix it).
pub fn structured_for(pnid: &PhoneNumberId, msg: &InboundMessage) -> Value {
    message_value(msg, Some(pnid.as_str()))
}

/// The admin path that serves media `media_id` of number `pnid`, or None when the id could not
/// be a path segment (Meta's ids are digits; anything else came from a forged webhook).
pub fn download_path(pnid: &str, media_id: &str) -> Option<String> {
    let safe = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    (safe(pnid) && safe(media_id)).then(|| format!("/media/{pnid}/{media_id}"))
}

fn message_value(msg: &InboundMessage, pnid: Option<&str>) -> Value {
    let mut v = content_value(&msg.content, Some(&msg.raw), &msg.errors, pnid);
    let Some(o) = v.as_object_mut() else {
        return v;
    };
    if let Some(c) = &msg.context {
        o.insert(
            "context".into(),
            json!({
                "message_id": c.id,
                "from": c.from,
                "forwarded": c.forwarded,
                "frequently_forwarded": c.frequently_forwarded,
                "referred_product": c.referred_product,
            }),
        );
    }
    if let Some(r) = &msg.referral {
        o.insert("referral".into(), r.clone());
    }
    if let Some(g) = &msg.group_id {
        o.insert("group_id".into(), json!(g));
    }
    v
}

/// `raw` is the message object the content came from (for an unsupported type's real name).
fn content_value(
    content: &Content,
    raw: Option<&Value>,
    errors: &[ApiError],
    pnid: Option<&str>,
) -> Value {
    let kind = content.label();
    match content {
        Content::Text { body } => json!({ "type": kind, "body": body }),
        Content::Image(m)
        | Content::Video(m)
        | Content::Audio(m)
        | Content::Document(m)
        | Content::Sticker(m) => media_value(kind, m, pnid),
        Content::Location {
            latitude,
            longitude,
            name,
            address,
            url,
        } => json!({ "type": kind, "latitude": latitude, "longitude": longitude, "name": name,
                     "address": address, "url": url }),
        Content::Contacts(cards) => json!({
            "type": kind,
            "contacts": cards.iter().map(contact_card).collect::<Vec<_>>(),
        }),
        Content::Interactive(i) => interactive_value(i),
        Content::Button { payload, text } => {
            json!({ "type": kind, "payload": payload, "text": text })
        }
        Content::Reaction { message_id, emoji } => json!({
            "type": kind, "message_id": message_id, "emoji": emoji, "removed": emoji.is_none(),
        }),
        Content::Order {
            catalog_id,
            text,
            product_items,
        } => json!({ "type": kind, "catalog_id": catalog_id, "text": text,
                     "product_items": product_items }),
        Content::System {
            body,
            kind: system_type,
            new_wa_id,
        } => json!({ "type": kind, "system_type": system_type, "body": body,
                     "new_wa_id": new_wa_id }),
        Content::Edit {
            original_message_id,
            message,
        } => {
            let inner_raw = raw.map(|r| &r["edit"]["message"]);
            json!({
                "type": kind,
                "original_message_id": original_message_id,
                "message": content_value(message, inner_raw, &[], pnid),
            })
        }
        Content::Revoke {
            original_message_id,
        } => json!({ "type": kind, "original_message_id": original_message_id }),
        Content::RequestWelcome => json!({ "type": kind }),
        Content::Unsupported { type_name } => {
            // Meta names the type it could not show in `unsupported.type` (e.g. "cart").
            let original = match raw.and_then(|r| r["unsupported"]["type"].as_str()) {
                Some(t) if type_name == "unsupported" => t,
                _ => type_name,
            };
            json!({ "type": kind, "original_type": original, "errors": errors })
        }
    }
}

fn media_value(kind: &str, m: &Media, pnid: Option<&str>) -> Value {
    let mut v = json!({
        "type": kind,
        "media_id": m.id,
        "mime_type": m.mime_type,
        "sha256": m.sha256,
        "caption": m.caption,
        "filename": m.filename,
        "voice": m.voice,
        "animated": m.animated,
    });
    if let Some(path) = pnid.and_then(|p| download_path(p, &m.id)) {
        v["download_url"] = json!(path);
    }
    v
}

fn interactive_value(i: &Interactive) -> Value {
    match i {
        Interactive::ButtonReply { id, title } => {
            json!({ "type": "button_reply", "id": id, "title": title })
        }
        Interactive::ListReply {
            id,
            title,
            description,
        } => json!({ "type": "list_reply", "id": id, "title": title,
                     "description": description }),
        Interactive::NfmReply {
            name,
            body,
            response_json,
        } => json!({
            "type": "nfm_reply",
            "name": name,
            "body": body,
            "response_json": response_json,
            // Flows answer with a JSON document in a string; parsed when it parses.
            "response": serde_json::from_str::<Value>(response_json).ok(),
        }),
        Interactive::Other(raw) => json!({
            "type": "interactive",
            "interactive_type": raw["type"],
            "interactive": raw,
        }),
    }
}

/// One shared contact card, flattened: formatted name, phone numbers, emails, company.
fn contact_card(card: &Value) -> Value {
    let strings = |list: &str, key: &str, fallback: &str| -> Vec<String> {
        card[list]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p[key].as_str().or_else(|| p[fallback].as_str()))
            .map(str::to_owned)
            .collect()
    };
    json!({
        "name": card_name(card),
        "phones": strings("phones", "phone", "wa_id"),
        "emails": strings("emails", "email", "email"),
        "org": card["org"]["company"].as_str(),
    })
}

fn card_name(card: &Value) -> Option<String> {
    let name = &card["name"];
    if let Some(f) = name["formatted_name"].as_str().filter(|s| !s.is_empty()) {
        return Some(f.to_owned());
    }
    let parts: Vec<&str> = ["first_name", "middle_name", "last_name"]
        .iter()
        .filter_map(|k| name[*k].as_str().filter(|s| !s.is_empty()))
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// The text an agent that only takes text should see, or None when there is nothing to say
/// (a revoke cancels a turn rather than starting one).
pub fn render_text(msg: &InboundMessage) -> Option<String> {
    let text = render_content(&msg.content, Some(&msg.raw))?;
    let forwarded = msg.context.as_ref().is_some_and(|c| c.forwarded);
    Some(if forwarded {
        format!("[forwarded] {text}")
    } else {
        text
    })
}

/// `tag` alone, or `tag caption` when there is a caption.
fn tagged(tag: &str, caption: Option<&str>) -> String {
    match caption.map(str::trim).filter(|c| !c.is_empty()) {
        Some(c) => format!("{tag} {c}"),
        None => tag.to_owned(),
    }
}

fn render_content(content: &Content, raw: Option<&Value>) -> Option<String> {
    Some(match content {
        Content::Text { body } => body.clone(),
        Content::Image(m) => tagged("[image]", m.caption.as_deref()),
        Content::Video(m) => tagged("[video]", m.caption.as_deref()),
        Content::Audio(m) if m.voice => tagged("[voice message]", m.caption.as_deref()),
        Content::Audio(m) => tagged("[audio]", m.caption.as_deref()),
        Content::Document(m) => {
            let tag = match m.filename.as_deref().filter(|f| !f.is_empty()) {
                Some(f) => format!("[document {f}]"),
                None => "[document]".to_owned(),
            };
            tagged(&tag, m.caption.as_deref())
        }
        Content::Sticker(m) if m.animated => "[animated sticker]".to_owned(),
        Content::Sticker(_) => "[sticker]".to_owned(),
        Content::Location {
            latitude,
            longitude,
            name,
            address,
            ..
        } => {
            let place: Vec<&str> = [name, address]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .filter(|s| !s.is_empty())
                .collect();
            let coords = format!("({latitude}, {longitude})");
            tagged("[location]", Some(&[place.join(", "), coords].join(" ")))
        }
        Content::Contacts(cards) => {
            let lines: Vec<String> = cards
                .iter()
                .map(|c| {
                    let card = contact_card(c);
                    let mut parts: Vec<&str> = card["name"].as_str().into_iter().collect();
                    parts.extend(
                        card["phones"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .flat_map(Value::as_str),
                    );
                    tagged("[contact]", Some(&parts.join(" ")))
                })
                .collect();
            if lines.is_empty() {
                "[contact]".to_owned()
            } else {
                lines.join("\n")
            }
        }
        Content::Interactive(Interactive::ButtonReply { id, title }) => {
            format!("[button reply] {title} ({id})")
        }
        Content::Interactive(Interactive::ListReply { id, title, .. }) => {
            format!("[list reply] {title} ({id})")
        }
        Content::Interactive(Interactive::NfmReply { response_json, .. }) => {
            format!("[form reply] {response_json}")
        }
        Content::Interactive(Interactive::Other(raw)) => match raw["type"].as_str() {
            Some(t) => format!("[interactive {t}]"),
            None => "[interactive]".to_owned(),
        },
        Content::Button { text, .. } => format!("[button] {text}"),
        Content::Reaction {
            emoji: Some(emoji), ..
        } => format!("[reaction {emoji}]"),
        Content::Reaction { emoji: None, .. } => "[reaction removed]".to_owned(),
        Content::Order {
            text,
            product_items,
            ..
        } => {
            let n = product_items.len();
            let tag = format!("[order: {n} item{}]", if n == 1 { "" } else { "s" });
            tagged(&tag, text.as_deref())
        }
        Content::System { body, .. } => tagged("[system]", body.as_deref()),
        Content::Edit { message, .. } => {
            let inner = render_content(message, raw.map(|r| &r["edit"]["message"]))?;
            format!("[edited] {inner}")
        }
        Content::Revoke { .. } => return None,
        Content::RequestWelcome => "[opened the chat]".to_owned(),
        Content::Unsupported { type_name } => {
            let original = raw.and_then(|r| r["unsupported"]["type"].as_str());
            match original.filter(|_| type_name == "unsupported") {
                Some(t) => format!("[unsupported message: {t}]"),
                None if type_name == "unsupported" || type_name.is_empty() => {
                    "[unsupported message]".to_owned()
                }
                None => format!("[unsupported message: {type_name}]"),
            }
        }
    })
}

#[cfg(test)]
mod tests;
