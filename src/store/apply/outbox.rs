//! The batch's send phase: send attempts of the whole batch in one statement (on PostgreSQL
//! only under the conversation's lease), and the outcomes the sender records one op at a time
//! (retry, give up). Meta's answers (`Op::Sent`) settle rows in `store::settle`.

use super::{CHUNK, Op};
use crate::store::sql::{Sql, WriteTx};
use crate::store::{OutboxState, StoreError, cluster};
use std::collections::HashSet;

/// Records the send attempts of the batch in one statement and returns the rows whose attempt
/// was recorded; rows already settled are left alone.
pub(super) async fn attempts(
    tx: &mut impl WriteTx,
    ops: &[Op],
    shared: bool,
    replica: &str,
    now: i64,
) -> Result<HashSet<i64>, StoreError> {
    let attempts: Vec<i64> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Attempt { id } => Some(*id),
            _ => None,
        })
        .collect();
    let mut attempted: HashSet<i64> = HashSet::new();
    for chunk in attempts.chunks(CHUNK) {
        let mut sql = Sql::new(
            "UPDATE outbox SET state = 'sending', state_rank = 1, attempts = attempts + 1, sending_since = ",
        );
        sql.bind(now).push(", updated_at = ").bind(now);
        sql.push(" WHERE state_rank <= 1 AND id")
            .is_in(chunk.iter().copied());
        if shared {
            // Only the replica holding the conversation's lease may send its replies: one
            // whose lease ran out (and was taken over) must not send them too.
            sql.push(
                " AND EXISTS (SELECT 1 FROM conversation_leases l \
                 WHERE l.phone_number_id = outbox.phone_number_id \
                 AND l.customer = outbox.customer AND l.owner = ",
            );
            sql.bind(replica)
                .push(" AND ")
                .push(&cluster::lease_live("l"))
                .push(")");
        }
        sql.push(" RETURNING id");
        let rows: Vec<(i64,)> = tx.fetch(&sql).await?;
        attempted.extend(rows.into_iter().map(|(id,)| id));
    }
    Ok(attempted)
}

/// A retryable failure of row `id`: back to `pending` with the error.
pub(super) async fn retry(
    tx: &mut impl WriteTx,
    id: i64,
    code: Option<i64>,
    message: &str,
    now: i64,
) -> Result<(), StoreError> {
    tx.run(
        "UPDATE outbox SET state = 'pending', state_rank = 0, error_code = $1, \
         error_message = $2, updated_at = $3 WHERE id = $4 AND state_rank <= 1",
        [code.into(), message.into(), now.into(), id.into()],
    )
    .await?;
    Ok(())
}

/// Row `id` ends in `state` without delivery; `unattempted` takes back the attempt recorded
/// when it was queued.
pub(super) async fn give_up(
    tx: &mut impl WriteTx,
    id: i64,
    state: OutboxState,
    code: Option<i64>,
    message: &str,
    unattempted: bool,
    now: i64,
) -> Result<(), StoreError> {
    tx.run(
        "UPDATE outbox SET state = $1, state_rank = $2, error_code = $3, error_message = $4, \
         updated_at = $5, attempts = attempts - $7 WHERE id = $6 AND state_rank < 2",
        [
            state.as_str().into(),
            state.rank().into(),
            code.into(),
            message.into(),
            now.into(),
            id.into(),
            i64::from(unattempted).into(),
        ],
    )
    .await?;
    Ok(())
}
