//! The end of every turn: its reply rows built, the turn completed with them in one transaction,
//! and the replies sent in order. It decides nothing about what a turn answers.

use crate::cloudapi::outbound::{Message, RecipientKind};
use crate::outbox::{self, Outcome};
use crate::serve::state::{AppState, NumberRuntime};
use crate::store::{InboxRow, InboxState, NewOutbox, OutboxKind};

/// Outbox rows for text `parts` answering `row`.
pub(super) fn reply_rows(
    row: &InboxRow,
    number: &NumberRuntime,
    parts: &[String],
    kind: OutboxKind,
) -> Vec<NewOutbox> {
    let (recipient, recipient_kind) = match (&row.msg.wa_id, &row.msg.user_id) {
        (Some(wa), _) => (wa.clone(), RecipientKind::WaId),
        (None, Some(user)) => (user.clone(), RecipientKind::UserId),
        (None, None) => (row.msg.customer.clone(), RecipientKind::WaId),
    };
    parts
        .iter()
        .filter(|p| !p.trim().is_empty())
        .enumerate()
        .map(|(i, part)| {
            let mut message = Message::text(part.as_str(), crate::reply::has_url(part));
            // Quote the customer's message on the first part only.
            if number.policies.quote_customer && i == 0 {
                message = message.quoting(row.msg.wamid.as_str());
            }
            NewOutbox {
                recipient: recipient.clone(),
                recipient_kind,
                part: i as i64,
                payload: message.to_stored(),
                kind,
            }
        })
        .collect()
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
    let first = &rows[0];
    let coalesced: Vec<i64> = rows[1..].iter().map(|r| r.id).collect();
    // With one writer, the replies' first attempt is recorded with the turn (the sender starts
    // on them at once). With several replicas, an attempt must also prove the conversation's
    // lease at send time, so it stays a write of its own.
    let attempt = !state.store.is_shared();
    let Some(out) = state
        .persist("turn", || {
            state
                .writer
                .complete_turn(first, to, detail, &replies, &coalesced, attempt)
        })
        .await
    else {
        return;
    };
    // The turn's own messages prove the window open until their time + window. An opt-out may
    // be committed at any moment: the sender checks it right before each part leaves.
    let known = outbox::Known {
        last_inbound: rows.iter().map(|r| r.msg.meta_ts).max(),
        attempt_recorded: attempt,
    };
    for row in out {
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
