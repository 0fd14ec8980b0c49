//! `messaging_handovers`: conversation routing moved one customer's conversation between the
//! apps on a number. The notification names its kind in `type` and carries the object of that
//! name beside it; the business number is `recipient.phone_number_id` (or `metadata`'s) and the
//! customer `sender.phone_number` (or `sender.wa_id`). One that cannot be read stays a field
//! kept as received, so it never fails the webhook.

use serde::Serialize;
use serde_json::Value;

use crate::ids::{PhoneNumberId, WaId};

/// What moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoverKind {
    /// The app in control passed the conversation to this app (it is ours now).
    ControlPassed,
    /// Another app (the escalation partner) took the conversation from this app.
    ControlTaken,
}

/// One handover notification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Handover {
    pub phone_number_id: PhoneNumberId,
    pub customer: WaId,
    pub kind: HandoverKind,
    /// The notification's object (`control_passed` or `control_taken`) as received, e.g. the
    /// role of the app that held the conversation.
    pub detail: Value,
}

/// The handover `value` describes, if it is one this gateway can read.
pub(super) fn read(value: &Value) -> Option<Handover> {
    let kind_name = value.get("type")?.as_str()?;
    let kind = match kind_name {
        "control_passed" => HandoverKind::ControlPassed,
        "control_taken" => HandoverKind::ControlTaken,
        _ => return None,
    };
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let number = text(value.pointer("/recipient/phone_number_id"))
        .or_else(|| text(value.pointer("/metadata/phone_number_id")))?;
    let customer = text(value.pointer("/sender/phone_number"))
        .or_else(|| text(value.pointer("/sender/wa_id")))?;
    Some(Handover {
        phone_number_id: PhoneNumberId::from(number.as_str()),
        customer: WaId::from(customer.as_str()),
        kind,
        detail: value.get(kind_name).cloned().unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_kinds_read_and_anything_else_does_not() {
        let taken = json!({ "type": "control_taken",
            "sender": { "phone_number": "16505551234" },
            "recipient": { "phone_number_id": "106540352242922", "display_phone_number": "15550783881" },
            "control_taken": { "previous_owner_app_role": "primary" } });
        let h = read(&taken).unwrap();
        assert_eq!(h.kind, HandoverKind::ControlTaken);
        assert_eq!(h.phone_number_id.as_str(), "106540352242922");
        assert_eq!(h.customer.to_string(), "16505551234");
        assert_eq!(h.detail["previous_owner_app_role"], "primary");
        let passed = json!({ "type": "control_passed",
            "metadata": { "phone_number_id": "106540352242922" },
            "sender": { "wa_id": "16505551234" }, "control_passed": {} });
        assert_eq!(read(&passed).unwrap().kind, HandoverKind::ControlPassed);
        for unreadable in [
            json!({ "type": "control_released", "sender": { "phone_number": "1" },
                "recipient": { "phone_number_id": "2" } }),
            json!({ "type": "control_taken", "recipient": { "phone_number_id": "2" } }),
            json!({ "type": "control_taken", "sender": { "phone_number": "1" } }),
            json!({ "sender": { "phone_number": "1" }, "recipient": { "phone_number_id": "2" } }),
            json!(null),
        ] {
            assert_eq!(read(&unreadable), None, "{unreadable}");
        }
    }
}
