//! A number as `GET /{PNID}` shows it, built from the emulated number and its Meta-side setup.

use super::state::State;
use serde_json::{Value, json};

/// A number as `GET /{PNID}` shows it; `fields` limits the answer as Meta does.
pub(crate) fn number_info(st: &State, pnid: &str, fields: Option<&str>) -> Value {
    let n = st.manage.number(pnid);
    let display = st
        .number(pnid)
        .map(|n| n.display_phone_number.clone())
        .unwrap_or_default();
    let waba = st
        .number(pnid)
        .map(|n| n.waba_id.clone())
        .unwrap_or_default();
    // Meta's `status`: CONNECTED once registered, PENDING before, DISCONNECTED after deregister.
    let status = match (n.registered, n.ever_registered) {
        (true, _) => "CONNECTED",
        (false, false) => "PENDING",
        (false, true) => "DISCONNECTED",
    };
    let mut hooks = serde_json::Map::new();
    if let Some(app) = st.manage.app() {
        hooks.insert("application".into(), json!(app.callback_url));
    }
    if let Some(Some(uri)) = st.manage.waba(&waba) {
        hooks.insert("whatsapp_business_account".into(), json!(uri));
    }
    if let Some(uri) = n.override_callback {
        hooks.insert("phone_number".into(), json!(uri));
    }
    let all = json!({
        "id": pnid,
        "verified_name": "Test Number",
        "display_phone_number": format_display(&display),
        "code_verification_status": if n.verified { "VERIFIED" } else { "NOT_VERIFIED" },
        "quality_rating": "GREEN",
        "platform_type": if n.registered { "CLOUD_API" } else { "NOT_APPLICABLE" },
        "throughput": { "level": "STANDARD" },
        "status": status,
        "name_status": "APPROVED",
        "messaging_limit_tier": "TIER_1K",
        "webhook_configuration": hooks,
    });
    let default = "verified_name,code_verification_status,display_phone_number,quality_rating,platform_type,throughput,webhook_configuration";
    let mut out = json!({ "id": pnid });
    for f in fields.unwrap_or(default).split(',').map(str::trim) {
        if let Some(v) = all.get(f) {
            out[f] = v.clone();
        }
    }
    out
}

/// `15550001111` as Meta shows it: `+1 555-000-1111`.
fn format_display(digits: &str) -> String {
    match digits.len() {
        11 if digits.starts_with('1') => {
            format!("+1 {}-{}-{}", &digits[1..4], &digits[4..7], &digits[7..])
        }
        0 => String::new(),
        _ => format!("+{digits}"),
    }
}
