//! The Test Connection probe: a signed `messages` webhook carrying one `sent` status for a
//! reserved message id, built by the checker and recognised by the webhook handler after the
//! signature check. A probe is acknowledged and counted, never stored, never shown to an agent
//! and never sent to anyone; the handler echoes its id so the checker knows a gateway saw it.

use crate::cloudapi::envelope::{ChangeValue, Envelope};
use serde_json::json;

/// The prefix of a probe's `biz_opaque_callback_data` (outbox ids are numbers, so no reply
/// ever carries it).
pub const CALLBACK_PREFIX: &str = "wa-gateway-probe:";
/// The prefix of a probe's status id.
pub const WAMID_PREFIX: &str = "wamid.wa-gateway-probe.";
/// The header the handler answers a probe with; its value is the probe's id.
pub const ECHO_HEADER: &str = "x-wa-gateway-probe";

/// A new probe id: random hex, so two checks never confuse their answers.
pub fn new_id() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// The probe webhook for number `pnid` of `waba`, as Meta would shape a status webhook.
pub fn envelope(waba: &str, pnid: &str, display_phone_number: &str, id: &str) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": waba, "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": display_phone_number, "phone_number_id": pnid },
            "statuses": [{
                "id": format!("{WAMID_PREFIX}{id}"),
                "status": "sent",
                "timestamp": now.to_string(),
                "recipient_id": "0",
                "biz_opaque_callback_data": format!("{CALLBACK_PREFIX}{id}"),
            }]
        } }] }]
    });
    serde_json::to_vec(&body).expect("a JSON value serialises")
}

/// The probe's id when `env` is a probe and nothing else: only statuses, each a probe's.
pub fn recognise(env: &Envelope) -> Option<String> {
    let mut id = None;
    for entry in &env.entry {
        for change in &entry.changes {
            let ChangeValue::Messages(v) = &change.value else {
                return None;
            };
            if !v.messages.is_empty() || v.statuses.is_empty() {
                return None;
            }
            for s in &v.statuses {
                let probe = s
                    .biz_opaque_callback_data
                    .as_deref()
                    .and_then(|c| c.strip_prefix(CALLBACK_PREFIX))?;
                if !s.id.as_str().starts_with(WAMID_PREFIX) {
                    return None;
                }
                id = Some(probe.to_owned());
            }
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudapi::envelope::parse;

    #[test]
    fn a_probe_is_recognised_and_a_real_status_is_not() {
        let id = new_id();
        let env = parse(&envelope("102", "106", "15550001111", &id)).unwrap();
        assert_eq!(recognise(&env), Some(id));

        let mut real: serde_json::Value =
            serde_json::from_slice(&envelope("102", "106", "1555", "x")).unwrap();
        real["entry"][0]["changes"][0]["value"]["statuses"][0]["biz_opaque_callback_data"] =
            json!("42");
        let env = parse(&serde_json::to_vec(&real).unwrap()).unwrap();
        assert_eq!(recognise(&env), None, "an outbox id is not a probe");

        // A probe status beside a real one is not a probe: the real one must be stored.
        let mut mixed: serde_json::Value =
            serde_json::from_slice(&envelope("102", "106", "1555", "y")).unwrap();
        let mut other = mixed["entry"][0]["changes"][0]["value"]["statuses"][0].clone();
        other["id"] = json!("wamid.REAL");
        other["biz_opaque_callback_data"] = json!("7");
        mixed["entry"][0]["changes"][0]["value"]["statuses"]
            .as_array_mut()
            .unwrap()
            .push(other);
        let env = parse(&serde_json::to_vec(&mixed).unwrap()).unwrap();
        assert_eq!(recognise(&env), None);
    }
}
