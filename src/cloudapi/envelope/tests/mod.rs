//! Envelope parsing tests: the shared helpers; fixtures, messages, changes and properties are
//! each in their own file.
use super::*;
// The text an agent sees is rendered one way, in content; the parser's tests check that one.
use crate::cloudapi::content::render_text;
use serde_json::json;

mod changes;
mod fixtures;
mod messages;
mod properties;

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

/// A contact with only its ids, as a test needs it.
fn contact(wa: Option<&str>, user: Option<&str>) -> Contact {
    Contact {
        wa_id: wa.map(WaId::from),
        user_id: user.map(UserId::from),
        parent_user_id: None,
        name: None,
        username: None,
    }
}
