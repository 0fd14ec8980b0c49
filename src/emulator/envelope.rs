//! Webhook envelopes as Meta builds them (customer messages, message statuses), and reading the
//! customer messages back out of any envelope. No I/O here.

use super::EmulatorNumber;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};

/// A fresh message id shaped like Meta's (`wamid.` + base64 of an opaque record).
pub(crate) fn new_wamid() -> String {
    let tail: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(44)
        .map(char::from)
        .collect();
    // Meta's ids all start with the same encoded record header.
    format!("wamid.HBgL{tail}")
}

fn metadata(number: &EmulatorNumber) -> Value {
    json!({
        "display_phone_number": number.display_phone_number,
        "phone_number_id": number.phone_number_id,
    })
}

fn wrap(number: &EmulatorNumber, value: Value) -> Value {
    wrap_field(number, "messages", value)
}

// Values already built are moved into place: `json!` would copy each one whole.
fn wrap_field(number: &EmulatorNumber, field: &str, value: Value) -> Value {
    let mut envelope = json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": number.waba_id,
            "changes": [{ "field": field }],
        }],
    });
    envelope["entry"][0]["changes"][0]["value"] = value;
    envelope
}

/// A change's value: `number`'s metadata and `items` under `key`.
fn change_value(number: &EmulatorNumber, key: &str, items: Vec<Value>) -> Value {
    let mut value = json!({ "messaging_product": "whatsapp" });
    value["metadata"] = metadata(number);
    value[key] = Value::Array(items);
    value
}

/// The echo of a message a person sent to customer `to` from the WhatsApp Business app on
/// `number` (coexistence): `message` is the message object, without `from`/`to`, which this
/// fills (`from` is the business).
pub(crate) fn business_echo(number: &EmulatorNumber, to: &str, mut message: Value) -> Value {
    message["from"] = Value::from(number.display_phone_number.as_str());
    message["to"] = Value::from(to);
    wrap_field(
        number,
        "smb_message_echoes",
        change_value(number, "message_echoes", vec![message]),
    )
}

/// A customer's text message to `number`.
pub(crate) fn customer_text(
    number: &EmulatorNumber,
    from: &str,
    name: &str,
    wamid: &str,
    unix_secs: i64,
    text: &str,
) -> Value {
    let message = json!({
        "from": from,
        "id": wamid,
        "timestamp": unix_secs.to_string(),
        "type": "text",
        "text": { "body": text },
    });
    customer_message(number, from, name, message)
}

/// A customer's message of any type to `number`; `message` is the whole message object.
pub(crate) fn customer_message(
    number: &EmulatorNumber,
    from: &str,
    name: &str,
    message: Value,
) -> Value {
    let mut value = change_value(number, "messages", vec![message]);
    value["contacts"] = json!([{ "profile": { "name": name }, "wa_id": from }]);
    wrap(number, value)
}

/// Who a status is about: a phone-based wa_id, or a BSUID when the send used `recipient`.
#[derive(Clone, Copy)]
pub(crate) enum Recipient<'a> {
    WaId(&'a str),
    UserId(&'a str),
}

/// One status of a message the business sent (`sent`, `delivered`, `read`).
pub(crate) struct Status<'a> {
    pub wamid: &'a str,
    pub status: &'a str,
    pub recipient: Recipient<'a>,
    pub unix_secs: i64,
    /// The service conversation the message belongs to.
    pub conversation_id: &'a str,
    pub biz_opaque_callback_data: Option<&'a str>,
}

/// A status webhook for a message `number` sent.
pub(crate) fn status(number: &EmulatorNumber, s: &Status<'_>) -> Value {
    let mut conversation = json!({
        "id": s.conversation_id,
        "origin": { "type": "service" },
    });
    // Meta gives the conversation's expiry only on the first status of a conversation's message.
    if s.status == "sent" {
        conversation["expiration_timestamp"] =
            json!((s.unix_secs + super::clock::WINDOW_SECS).to_string());
    }
    let mut status = json!({
        "id": s.wamid,
        "status": s.status,
        "timestamp": s.unix_secs.to_string(),
        // Per-message pricing (July 2025 on): replies in the service window are free.
        "pricing": {
            "billable": false,
            "pricing_model": "PMP",
            "category": "service",
            "type": "free_customer_service",
        },
    });
    status["conversation"] = conversation;
    match s.recipient {
        Recipient::WaId(id) => status["recipient_id"] = json!(id),
        Recipient::UserId(id) => status["recipient_user_id"] = json!(id),
    }
    if let Some(data) = s.biz_opaque_callback_data {
        status["biz_opaque_callback_data"] = json!(data);
    }
    wrap(number, change_value(number, "statuses", vec![status]))
}

/// A customer message found in an envelope.
#[derive(Debug, PartialEq)]
pub(crate) struct Inbound {
    pub phone_number_id: String,
    pub wamid: String,
    /// The ids the customer is known by (`from`, `from_user_id`); either opens the window.
    pub customers: Vec<String>,
    pub timestamp: i64,
}

fn values(env: &Value) -> impl Iterator<Item = &Value> {
    env["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["changes"].as_array().into_iter().flatten())
        .filter(|c| c["field"] == "messages")
        .map(|c| &c["value"])
}

/// The customer messages in `env`, tolerating any shape (malformed parts are skipped).
pub(crate) fn inbound_messages(env: &Value) -> Vec<Inbound> {
    let mut found = Vec::new();
    for value in values(env) {
        let Some(pnid) = value["metadata"]["phone_number_id"].as_str() else {
            continue;
        };
        for m in value["messages"].as_array().into_iter().flatten() {
            let Some(wamid) = m["id"].as_str() else {
                continue;
            };
            let customers: Vec<String> = ["from", "from_user_id"]
                .iter()
                .filter_map(|k| m[*k].as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            let timestamp = m["timestamp"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .or_else(|| m["timestamp"].as_i64())
                .unwrap_or_else(|| super::clock::now_ms() / 1000);
            found.push(Inbound {
                phone_number_id: pnid.to_owned(),
                wamid: wamid.to_owned(),
                customers,
                timestamp,
            });
        }
    }
    found
}

/// The ordering key of an envelope: its first number and customer, so that one customer's
/// webhooks are first attempted in the order they were queued.
pub(crate) fn order_key(env: &Value) -> String {
    // An echo of the business's message goes in its customer's lane too.
    let echoes = env["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["changes"].as_array().into_iter().flatten())
        .filter(|c| c["field"] == "smb_message_echoes");
    for change in echoes {
        let value = &change["value"];
        if let Some(to) = value["message_echoes"][0]["to"].as_str() {
            return format!(
                "{}/{to}",
                value["metadata"]["phone_number_id"].as_str().unwrap_or("")
            );
        }
    }
    for value in values(env) {
        let pnid = value["metadata"]["phone_number_id"].as_str().unwrap_or("");
        let customer = value["messages"][0]["from"]
            .as_str()
            .or_else(|| value["messages"][0]["from_user_id"].as_str())
            .or_else(|| value["statuses"][0]["recipient_id"].as_str())
            .or_else(|| value["statuses"][0]["recipient_user_id"].as_str());
        if let Some(customer) = customer {
            return format!("{pnid}/{customer}");
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number() -> EmulatorNumber {
        EmulatorNumber {
            phone_number_id: "106540352242922".into(),
            waba_id: "102290129340398".into(),
            display_phone_number: "15550001111".into(),
            access_token: "t".into(),
        }
    }

    #[test]
    fn customer_text_has_meta_shape() {
        let env = customer_text(
            &number(),
            "919812345678",
            "Asha",
            "wamid.X",
            1_700_000_000,
            "hi",
        );
        let value = &env["entry"][0]["changes"][0]["value"];
        assert_eq!(env["object"], "whatsapp_business_account");
        assert_eq!(env["entry"][0]["id"], "102290129340398");
        assert_eq!(env["entry"][0]["changes"][0]["field"], "messages");
        assert_eq!(value["messaging_product"], "whatsapp");
        assert_eq!(value["metadata"]["phone_number_id"], "106540352242922");
        assert_eq!(value["metadata"]["display_phone_number"], "15550001111");
        assert_eq!(value["contacts"][0]["profile"]["name"], "Asha");
        assert_eq!(value["contacts"][0]["wa_id"], "919812345678");
        let m = &value["messages"][0];
        assert_eq!(
            (
                &m["from"],
                &m["id"],
                &m["timestamp"],
                &m["type"],
                &m["text"]["body"]
            ),
            (
                &json!("919812345678"),
                &json!("wamid.X"),
                &json!("1700000000"),
                &json!("text"),
                &json!("hi")
            )
        );
        assert_eq!(
            inbound_messages(&env),
            vec![Inbound {
                phone_number_id: "106540352242922".into(),
                wamid: "wamid.X".into(),
                customers: vec!["919812345678".into()],
                timestamp: 1_700_000_000,
            }]
        );
        assert_eq!(order_key(&env), "106540352242922/919812345678");
    }

    #[test]
    fn inbound_tolerates_odd_shapes() {
        for env in [
            json!(null),
            json!({"entry": 3}),
            json!({"entry": [{"changes": [{}]}]}),
        ] {
            assert!(inbound_messages(&env).is_empty());
            assert_eq!(order_key(&env), "");
        }
    }

    #[test]
    fn wamids_look_like_metas_and_differ() {
        let (a, b) = (new_wamid(), new_wamid());
        assert!(a.starts_with("wamid.") && a.len() > 40);
        assert_ne!(a, b);
    }
}
