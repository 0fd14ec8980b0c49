//! The batch's turn phase: turns close their inbound messages (only a message still waiting
//! can be closed), then the replies of the turns that closed are queued in one multi-row insert.
//! Statements only inside the writer's transaction.

use super::{CHUNK, Op, TurnEnd};
use crate::store::sql::{Sql, WriteTx};
use crate::store::{InboxState, NewOutbox, OutboxRow, OutboxState, StoreError};
use std::collections::{HashMap, HashSet};

/// Closes the inbound row of every turn in `ops` (and the rows coalesced into it) and returns
/// the turns that closed theirs. If two replicas ever ran the same turn (one stalled past its
/// lease), the second one's row is no longer waiting: its replies are not queued, so the
/// customer hears one answer.
pub(super) async fn close(
    tx: &mut impl WriteTx,
    ops: &[Op],
    now: i64,
) -> Result<HashSet<i64>, StoreError> {
    let mut closed: HashSet<i64> = HashSet::new();
    // Turns closed as plain `done` (the common case) in one statement.
    let plain_done: Vec<i64> = ops
        .iter()
        .filter_map(|op| match op {
            Op::CompleteTurn(TurnEnd {
                inbox_id,
                state: InboxState::Done,
                detail: None,
                ..
            }) => Some(*inbox_id),
            _ => None,
        })
        .collect();
    for chunk in plain_done.chunks(CHUNK) {
        let mut sql = Sql::new("UPDATE inbox SET state = 'done', handled_at = ");
        sql.bind(now).push(" WHERE state = 'received' AND id");
        sql.is_in(chunk.iter().copied()).push(" RETURNING id");
        let rows: Vec<(i64,)> = tx.fetch(&sql).await?;
        closed.extend(rows.into_iter().map(|(id,)| id));
    }
    for op in ops {
        let Op::CompleteTurn(TurnEnd {
            inbox_id,
            state,
            detail,
            coalesced,
            ..
        }) = op
        else {
            continue;
        };
        if !(*state == InboxState::Done && detail.is_none()) {
            let changed = tx
                .run(
                    "UPDATE inbox SET state = $1, detail = $2, handled_at = $3 WHERE id = $4 \
                     AND state = 'received'",
                    [
                        state.as_str().into(),
                        detail.into(),
                        now.into(),
                        (*inbox_id).into(),
                    ],
                )
                .await?;
            if changed == 1 {
                closed.insert(*inbox_id);
            }
        }
        if !closed.contains(inbox_id) {
            tracing::warn!(
                inbox_id,
                "turn already completed elsewhere; its replies are dropped"
            );
            continue;
        }
        close_coalesced(tx, *inbox_id, coalesced, now).await?;
    }
    Ok(closed)
}

/// Closes the rows a turn answered together with its own.
async fn close_coalesced(
    tx: &mut impl WriteTx,
    inbox_id: i64,
    coalesced: &[i64],
    now: i64,
) -> Result<(), StoreError> {
    for id in coalesced {
        let why = format!("coalesced into the turn of inbox row {inbox_id}");
        tx.run(
            "UPDATE inbox SET state = 'done', detail = $1, handled_at = $2 WHERE id = $3 \
             AND state = 'received'",
            [why.as_str().into(), now.into(), (*id).into()],
        )
        .await?;
    }
    Ok(())
}

/// The state, attempts and sending time a reply is queued with: `sending` with its first
/// attempt recorded when the sender starts on it at once (`attempt`), else `pending`.
fn queued_as(attempt: bool, now: i64) -> (OutboxState, i64, Option<i64>) {
    if attempt {
        (OutboxState::Sending, 1, Some(now))
    } else {
        (OutboxState::Pending, 0, None)
    }
}

/// Queues the replies of every turn that `closed` (one multi-row insert per chunk) and returns
/// their ids by (turn, part).
pub(super) async fn queue_replies(
    tx: &mut impl WriteTx,
    ops: &[Op],
    closed: &HashSet<i64>,
    now: i64,
) -> Result<HashMap<(i64, i64), i64>, StoreError> {
    let replies: Vec<(i64, &str, &str, bool, &NewOutbox)> = ops
        .iter()
        .filter_map(|op| match op {
            Op::CompleteTurn(t) if closed.contains(&t.inbox_id) => {
                Some(t.replies.iter().map(move |r| {
                    (
                        t.inbox_id,
                        t.phone_number_id.as_str(),
                        t.customer.as_str(),
                        t.attempt,
                        r,
                    )
                }))
            }
            _ => None,
        })
        .flatten()
        .collect();
    let mut reply_ids: HashMap<(i64, i64), i64> = HashMap::new();
    for chunk in replies.chunks(CHUNK) {
        let mut sql = Sql::new(
            "INSERT INTO outbox (inbox_id, phone_number_id, customer, recipient, recipient_kind, \
             part, payload, state, state_rank, attempts, sending_since, created_at, updated_at, kind, \
             history_text) ",
        );
        sql.values(chunk.iter(), |t, (inbox_id, pnid, customer, attempt, r)| {
            let (state, attempts, sending_since) = queued_as(*attempt, now);
            t.bind(*inbox_id)
                .bind(*pnid)
                .bind(*customer)
                .bind(&r.recipient)
                .bind(r.recipient_kind.as_str())
                .bind(r.part)
                .bind(&r.payload)
                .bind(state.as_str())
                .bind(state.rank())
                .bind(attempts)
                .bind(sending_since)
                .bind(now)
                .bind(now)
                .bind(r.kind.as_str())
                .bind(&r.history);
        });
        sql.push(" RETURNING id, inbox_id, part");
        let rows: Vec<(i64, i64, i64)> = tx.fetch(&sql).await?;
        reply_ids.extend(
            rows.into_iter()
                .map(|(id, inbox, part)| ((inbox, part), id)),
        );
    }
    Ok(reply_ids)
}

/// The replies queued in `sending`, their first attempt recorded (turns with `attempt`).
pub(super) fn attempted(ops: &[Op], reply_ids: &HashMap<(i64, i64), i64>) -> Vec<i64> {
    ops.iter()
        .filter_map(|op| match op {
            Op::CompleteTurn(t) if t.attempt => Some(
                t.replies
                    .iter()
                    .filter_map(|r| reply_ids.get(&(t.inbox_id, r.part)).copied()),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The rows `turn` queued, as its caller hears them; replies without an id in `reply_ids` were
/// not queued (the turn had completed elsewhere), those in `unleased` were queued `pending`
/// after all (PostgreSQL: the conversation's lease was lost).
pub(super) fn queued(
    turn: &TurnEnd,
    reply_ids: &HashMap<(i64, i64), i64>,
    unleased: &HashSet<i64>,
    now: i64,
) -> Vec<OutboxRow> {
    turn.replies
        .iter()
        .filter_map(|r| {
            let id = *reply_ids.get(&(turn.inbox_id, r.part))?;
            let (state, attempts, sending_since) =
                queued_as(turn.attempt && !unleased.contains(&id), now);
            Some(OutboxRow {
                id,
                inbox_id: Some(turn.inbox_id),
                phone_number_id: turn.phone_number_id.clone(),
                customer: turn.customer.clone(),
                recipient: r.recipient.clone(),
                recipient_kind: r.recipient_kind,
                part: r.part,
                payload: r.payload.clone(),
                state,
                attempts,
                wamid: None,
                sending_since,
                kind: r.kind,
                created_at: now,
            })
        })
        .collect()
}
