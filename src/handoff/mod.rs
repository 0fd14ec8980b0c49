//! Handing a conversation (number, customer) to a person: pausing it (an operator, the CLI, an
//! agent's `handoff`, the Business app, Meta's routing and its handovers), resuming it, and
//! whether a turn may run.
//! A paused conversation's messages are stored and marked read but get no agent turn; the pause
//! ends by itself after its time. Every pause queues a signed notification (`notify.rs`).

pub mod cli;
mod notify;

pub use crate::store::{Pause, PausedBy};
pub use notify::{SIGNATURE_HEADER, spawn};

use crate::cloudapi::envelope::{Handover, HandoverKind};
use crate::serve::state::AppState;
use crate::store::{BadCustomerId, CustomerId, HandoffOp, StoreError, now_ms};
use std::time::Duration;

/// The most customer and business messages a notification carries.
const LAST_MESSAGES: usize = 10;
/// The longest reason kept, in characters.
const MAX_REASON: usize = 500;

/// What a pause asks for; absent fields take the number's `policies.handoff`.
#[derive(Clone, Debug)]
pub struct PauseRequest {
    /// How long the pause lasts (default `policies.handoff.pause_for`).
    pub for_: Option<Duration>,
    /// Why, as a person reads it (kept up to 500 characters).
    pub reason: Option<String>,
    pub by: PausedBy,
}

/// Why a pause or resume was refused.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error(
        "phone number id {0} is not served by this gateway: GET /api/numbers lists the declared ones"
    )]
    UnknownNumber(String),
    #[error(transparent)]
    BadCustomer(#[from] BadCustomerId),
    #[error(
        "a pause lasts more than 0s and at most 30d, not {0}: write e.g. \"for\": \"2h\", or leave \
         it out for policies.handoff.pause_for"
    )]
    BadDuration(String),
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// Pauses the conversation of `customer` with `number` from now on, replacing a pause in force;
/// the pause and its notification (when `policies.handoff.notify` is set) are committed together.
/// Messages of the conversation committed after this returns get no agent turn until the pause
/// ends or [`resume`] is called; a turn already running may still send its reply.
pub async fn pause(
    state: &AppState,
    number: &str,
    customer: &str,
    request: PauseRequest,
) -> Result<Pause, HandoffError> {
    let customer = CustomerId::parse(customer)?;
    let snapshot = state.snapshot.load_full();
    let Some(runtime) = snapshot.numbers.get(number) else {
        return Err(HandoffError::UnknownNumber(number.to_owned()));
    };
    let handoff = &runtime.policies.handoff;
    let length = request.for_.unwrap_or(handoff.pause_for.get());
    if length.is_zero() || length > crate::config::validate::MAX_PAUSE {
        let shown = humantime::format_duration(length).to_string();
        return Err(HandoffError::BadDuration(shown));
    }
    let now = now_ms();
    let reason = request
        .reason
        .map(|r| r.trim().chars().take(MAX_REASON).collect::<String>())
        .filter(|r| !r.is_empty());
    let pause = Pause {
        phone_number_id: number.to_owned(),
        customer: customer.as_str().to_owned(),
        paused_at: now,
        paused_until: now.saturating_add(i64::try_from(length.as_millis()).unwrap_or(i64::MAX)),
        reason,
        by: request.by,
    };
    let notification = match &handoff.notify {
        Some(_) => {
            let last = state
                .store
                .history(number, customer.as_str(), i64::MAX, LAST_MESSAGES)
                .await?;
            Some(notify::body(&pause, &last))
        }
        None => None,
    };
    let queued = notification.is_some();
    let op = HandoffOp::Pause {
        pause: pause.clone(),
        notification,
    };
    state.writer.handoff(op).await?;
    state.paused.set(&pause);
    if queued {
        state.handoff_queued.notify_one();
    }
    state
        .metrics
        .handoff_pauses
        .with_label_values(&[number, pause.by.as_str()])
        .inc();
    // The customer's id stays out of the log, like everywhere else.
    tracing::info!(
        phone_number_id = number,
        by = pause.by.as_str(),
        seconds = length.as_secs(),
        "conversation paused for a person"
    );
    Ok(pause)
}

/// Ends the pause of `customer`'s conversation with `number` now; `Ok(false)` when none was in
/// force. The next message of the conversation gets an agent turn, with the messages of the pause
/// in its history.
pub async fn resume(state: &AppState, number: &str, customer: &str) -> Result<bool, HandoffError> {
    let customer = CustomerId::parse(customer)?;
    let was = state.store.pause_of(number, customer.as_str()).await?;
    let op = HandoffOp::Resume {
        phone_number_id: number.to_owned(),
        customer: customer.as_str().to_owned(),
    };
    state.writer.handoff(op).await?;
    state.paused.clear(number, customer.as_str());
    let was_paused = was.is_some_and(|p| p.holds_at(now_ms()));
    tracing::info!(
        phone_number_id = number,
        was_paused,
        "conversation resumed: the agent answers again"
    );
    Ok(was_paused)
}

/// The pauses in force, of one number or of all, the longest-paused first (read from storage,
/// so every replica answers the same).
pub async fn paused(state: &AppState, number: Option<&str>) -> Result<Vec<Pause>, StoreError> {
    state.store.pauses(number, now_ms()).await
}

/// Whether `customer`'s conversation with `pnid` is paused now, for a turn about to run. One
/// process answers from memory (every pause goes through it); with several replicas a pause may
/// have been made through another one, so storage is read at each turn (one primary-key read).
/// A pause made because conversation routing gave the conversation to another app ends here:
/// a message on `messages` means Meta routes the conversation to this app again (a release
/// sends no handover notification). `None` when shutting down before it could be read.
pub async fn is_paused(state: &AppState, pnid: &str, customer: &str) -> Option<bool> {
    if state.store.is_shared() {
        let pause = state
            .persist("pause read", || state.store.pause_of(pnid, customer))
            .await?;
        return is_paused_as(state, pnid, customer, pause).await;
    }
    let by = state.paused.by(pnid, customer, now_ms());
    paused_by(state, pnid, customer, by).await
}

/// As [`is_paused`], with several replicas, from the conversation's stored pause as a read the
/// turn made anyway just returned it.
pub async fn is_paused_as(
    state: &AppState,
    pnid: &str,
    customer: &str,
    stored: Option<Pause>,
) -> Option<bool> {
    let by = stored.filter(|p| p.holds_at(now_ms())).map(|p| p.by);
    paused_by(state, pnid, customer, by).await
}

/// Whether a pause by `by` holds the turn; a pause by `handover` ends here (see [`is_paused`]).
async fn paused_by(
    state: &AppState,
    pnid: &str,
    customer: &str,
    by: Option<PausedBy>,
) -> Option<bool> {
    match by {
        None => Some(false),
        Some(PausedBy::Handover) => {
            let op = || {
                state.writer.handoff(HandoffOp::Resume {
                    phone_number_id: pnid.to_owned(),
                    customer: customer.to_owned(),
                })
            };
            state.persist("pause end", op).await?;
            state.paused.clear(pnid, customer);
            tracing::info!(
                phone_number_id = pnid,
                "conversation routed to this app again: its handover pause ends"
            );
            Some(false)
        }
        Some(_) => Some(true),
    }
}

/// Applies a `messaging_handovers` notification: another app took the conversation (unless it
/// is paused already, it is paused by `handover` and the helpdesk told), or the conversation
/// was passed to this app (a pause by `handover` ends; one a person or the agent made stays).
pub async fn handover(state: &AppState, h: &Handover) -> Result<(), HandoffError> {
    let (number, customer) = (h.phone_number_id.as_str(), h.customer.as_str());
    match h.kind {
        HandoverKind::ControlTaken => {
            let now = now_ms();
            let current = state.store.pause_of(number, customer).await?;
            if current.is_some_and(|p| p.holds_at(now)) {
                // Paused already (by a person, the agent, or this handover redelivered): that
                // pause stays as it is, with no second notification.
                return Ok(());
            }
            let role = h.detail["previous_owner_app_role"]
                .as_str()
                .or(h.detail["new_owner_app_role"].as_str());
            let reason = match role {
                Some(role) => format!("conversation routing: another app took it (was {role})"),
                None => "conversation routing: another app took it".to_owned(),
            };
            let request = PauseRequest {
                for_: None,
                reason: Some(reason),
                by: PausedBy::Handover,
            };
            pause(state, number, customer, request).await.map(|_| ())
        }
        HandoverKind::ControlPassed => {
            let by = state.store.pause_of(number, customer).await?.map(|p| p.by);
            if by == Some(PausedBy::Handover) {
                resume(state, number, customer).await?;
            }
            Ok(())
        }
    }
}
