//! The end of every turn: its reply rows built, the turn completed with them in one transaction,
//! and the replies sent in order. It decides nothing about what a turn answers.

use crate::agent::Handoff;
use crate::cloudapi::outbound::{Content, RecipientKind};
use crate::handoff::{PauseRequest, PausedBy};
use crate::outbox::{self, Outcome};
use crate::reply::Outgoing;
use crate::serve::state::{AppState, NumberRuntime};
use crate::store::{InboxRow, InboxState, NewOutbox, OutboxKind, OutboxState};

/// Outbox rows for `messages` answering `row`, in order.
pub(super) fn reply_rows(
    row: &InboxRow,
    number: &NumberRuntime,
    messages: Vec<Outgoing>,
    kind: OutboxKind,
) -> Vec<NewOutbox> {
    let (recipient, recipient_kind) = match (&row.msg.wa_id, &row.msg.user_id) {
        (Some(wa), _) => (wa.clone(), RecipientKind::WaId),
        (None, Some(user)) => (user.clone(), RecipientKind::UserId),
        (None, None) => (row.msg.customer.clone(), RecipientKind::WaId),
    };
    // Quote the customer's message on the first message that can quote (a reaction cannot).
    let mut quote = number.policies.quote_customer;
    messages
        .into_iter()
        .enumerate()
        .map(|(i, out)| {
            let mut message = out.message;
            if quote && !matches!(message.content, Content::Reaction { .. }) {
                message = message.quoting(row.msg.wamid.as_str());
                quote = false;
            }
            NewOutbox {
                recipient: recipient.clone(),
                recipient_kind,
                part: i as i64,
                payload: message.to_stored(),
                history: out.history,
                kind,
            }
        })
        .collect()
}

/// Outbox rows for one system text answering `row` (a confirmation, the fallback, the reply to
/// an unsupported message); none for a blank text.
pub(super) fn text_rows(
    row: &InboxRow,
    number: &NumberRuntime,
    text: String,
    kind: OutboxKind,
) -> Vec<NewOutbox> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    reply_rows(row, number, vec![Outgoing::text(text)], kind)
}

/// Completes the turn of `rows` as `to` with `replies` queued, then sends them in order.
pub(super) async fn complete_and_send(
    state: &AppState,
    number: &NumberRuntime,
    rows: &[InboxRow],
    to: InboxState,
    detail: Option<&str>,
    replies: Vec<NewOutbox>,
) {
    complete_hand_off_and_send(state, number, rows, (to, detail), replies, None).await;
}

/// As [`complete_and_send`], and when the agent asked for a `handoff`, pauses the conversation
/// once the turn is committed, before its replies leave: the replies still go out (they are
/// queued), the next message gets no agent turn.
pub(super) async fn complete_hand_off_and_send(
    state: &AppState,
    number: &NumberRuntime,
    rows: &[InboxRow],
    (to, detail): (InboxState, Option<&str>),
    replies: Vec<NewOutbox>,
    handoff: Option<Handoff>,
) {
    let first = &rows[0];
    let coalesced: Vec<i64> = rows[1..].iter().map(|r| r.id).collect();
    // The replies' first attempt is recorded with the turn (the sender starts on them at
    // once). With several replicas the commit records it only under the conversation's lease;
    // a reply queued `pending` instead records its attempt on its own, and one whose lease is
    // lost is left to the new holder.
    let Some(out) = state
        .persist("turn", || {
            state
                .writer
                .complete_turn(first, to, detail, &replies, &coalesced, true)
        })
        .await
    else {
        return;
    };
    if let Some(handoff) = handoff {
        hand_off(state, first, handoff).await;
    }
    // The turn's own messages prove the window open until their time + window. An opt-out may
    // be committed at any moment: the sender checks it right before each part leaves.
    let last_inbound = rows.iter().map(|r| r.msg.meta_ts).max();
    for row in out {
        let known = outbox::Known {
            last_inbound,
            attempt_recorded: row.state == OutboxState::Sending,
        };
        let outcome = outbox::deliver(state, number, &row, &known).await;
        if outcome == Outcome::Sent {
            let age_ms = crate::store::now_ms() - first.received_at;
            state
                .metrics
                .reply_seconds
                .observe(age_ms.max(0) as f64 / 1000.0);
        }
        if outcome == Outcome::Interrupted {
            return;
        }
    }
}

/// Pauses `row`'s conversation as the agent's `handoff` asks. A failure is logged: the turn is
/// complete and its replies go out either way.
async fn hand_off(state: &AppState, row: &InboxRow, handoff: Handoff) {
    let request = PauseRequest {
        for_: handoff.pause_for.map(|d| d.get()),
        reason: handoff.reason,
        by: PausedBy::Agent,
    };
    let (pnid, customer) = (&row.msg.phone_number_id, &row.msg.customer);
    if let Err(e) = crate::handoff::pause(state, pnid, customer, request).await {
        tracing::warn!(error = %e, "the agent's handoff could not pause the conversation");
    }
}

/// Completes the turn of `rows` as `to` with nothing to send.
pub(super) async fn finish_all(state: &AppState, rows: &[InboxRow], to: InboxState, detail: &str) {
    let first = &rows[0];
    let coalesced: Vec<i64> = rows[1..].iter().map(|r| r.id).collect();
    state
        .persist("turn", || {
            state
                .writer
                .complete_turn(first, to, Some(detail), &[], &coalesced, false)
        })
        .await;
}
