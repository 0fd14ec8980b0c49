//! Coexistence: what a person sends a customer from the WhatsApp Business app on a number the
//! gateway serves comes back as an echo (`smb_message_echoes`). It is kept as the business's own
//! turn of the conversation and pauses the agent there for `policies.handoff.echo_pause`; the
//! echo of one of the gateway's own sends changes nothing.

use crate::cloudapi::content;
use crate::cloudapi::envelope::MessagesValue;
use crate::cloudapi::outbound::RecipientKind;
use crate::handoff::{PauseRequest, PausedBy};
use crate::serve::state::{AppState, Snapshot};
use crate::store::{NewEcho, StoreError};

/// Why an echo pauses its conversation, as the pause records it.
const REASON: &str = "a person answered from the WhatsApp Business app";

/// The echoes of `value` to store: those of a declared, enabled number that name a customer.
pub(super) fn rows(snap: &Snapshot, value: &MessagesValue) -> Vec<NewEcho> {
    let pnid = value.metadata.phone_number_id.as_str();
    if !snap.numbers.get(pnid).is_some_and(|n| n.cfg.enabled) {
        if !value.message_echoes.is_empty() {
            tracing::warn!(phone_number_id = %pnid, "echoes for a number that is not declared or not enabled; acknowledged, not kept");
        }
        return Vec::new();
    }
    value
        .message_echoes
        .iter()
        .filter_map(|e| {
            let customer = e.customer_key()?;
            let (recipient, recipient_kind) = match (&e.to, &e.to_user_id) {
                (Some(wa), _) => (wa.to_string(), RecipientKind::WaId),
                (None, Some(user)) => (user.to_string(), RecipientKind::UserId),
                (None, None) => return None,
            };
            let history = content::render_text(&e.message)
                .unwrap_or_else(|| format!("[{}]", e.message.type_name()));
            Some(NewEcho {
                phone_number_id: pnid.to_owned(),
                customer: customer.0,
                recipient,
                recipient_kind,
                wamid: e.message.id.to_string(),
                payload: e.message.raw.to_string(),
                history: crate::text::without_nul(&history).into_owned(),
            })
        })
        .collect()
}

/// Once `echoes` are committed: pauses the conversation of each one a person sent (its stored
/// row is `business_app`); an echo whose wamid belongs to one of the gateway's own replies
/// changes nothing. A failure answers the webhook 503; Meta's redelivery pauses again.
pub(super) async fn pause_for_people(app: &AppState, echoes: &[NewEcho]) -> Result<(), StoreError> {
    for e in echoes {
        if !app.store.is_stored_echo(&e.wamid).await? {
            tracing::debug!(phone_number_id = %e.phone_number_id, "echo of the gateway's own reply; nothing to do");
            continue;
        }
        let pause_for = app
            .snapshot
            .load()
            .numbers
            .get(e.phone_number_id.as_str())
            .map(|n| n.policies.handoff.echo_pause.get());
        let request = PauseRequest {
            for_: pause_for,
            reason: Some(REASON.to_owned()),
            by: PausedBy::BusinessApp,
        };
        crate::handoff::pause(app, &e.phone_number_id, &e.customer, request)
            .await
            .map_err(|err| StoreError::Batch(format!("echo pause not applied: {err}")))?;
    }
    Ok(())
}
