//! Replies that ended undelivered (`failed`, `expired`), as an operator lists them, and the
//! writer's requeue of one: back to `pending` in a commit, so it leaves through the sender's
//! exactly-once path (its id, its callback data) and never beside it.

use super::sql::WriteTx;
use super::{OutboxKind, OutboxState, Store, StoreError, on_pool};

/// A reply that ended undelivered.
#[derive(Clone, Debug)]
pub struct EndedReply {
    pub id: i64,
    pub phone_number_id: String,
    pub customer: String,
    pub state: OutboxState,
    pub kind: OutboxKind,
    pub attempts: i64,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    /// What the conversation's history keeps of it (the text, or a summary).
    pub text: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// When it ended (ms since the epoch).
    pub updated_at: i64,
}

type Row = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

/// Which ended replies to list.
#[derive(Clone, Debug)]
pub struct EndedFilter {
    pub states: Vec<OutboxState>,
    /// Only those that ended at or after this (ms since the epoch).
    pub since_ms: i64,
    pub number: Option<String>,
    pub limit: i64,
}

impl Store {
    /// Replies in one of `f.states` that ended since `f.since_ms`, newest first.
    pub async fn ended_replies(&self, f: &EndedFilter) -> Result<Vec<EndedReply>, StoreError> {
        let states: Vec<&str> = f.states.iter().map(|s| s.as_str()).collect();
        let placeholders: Vec<String> = (0..states.len()).map(|i| format!("${}", i + 4)).collect();
        let sql = format!(
            "SELECT id, phone_number_id, customer, state, kind, attempts, error_code, \
             error_message, history_text, created_at, updated_at FROM outbox \
             WHERE updated_at >= $1 AND ($2 = '' OR phone_number_id = $2) \
             AND state IN ({}) ORDER BY updated_at DESC, id DESC LIMIT $3",
            placeholders.join(", ")
        );
        let number = f.number.clone().unwrap_or_default();
        let rows: Vec<Row> = on_pool!(self, |pool| {
            let mut q = sqlx::query_as(&sql)
                .bind(f.since_ms)
                .bind(&number)
                .bind(f.limit);
            for s in &states {
                q = q.bind(*s);
            }
            q.fetch_all(pool).await
        })?;
        Ok(rows
            .into_iter()
            .map(|r| EndedReply {
                id: r.0,
                phone_number_id: r.1,
                customer: r.2,
                state: OutboxState::parse(&r.3).unwrap_or(OutboxState::Failed),
                kind: OutboxKind::parse(&r.4),
                attempts: r.5,
                error_code: r.6,
                error_message: r.7,
                text: r.8,
                created_at: r.9,
                updated_at: r.10,
            })
            .collect())
    }
}

/// Puts reply `id` back to `pending` (a fresh delivery: no attempts yet) if it is still
/// `failed` or `expired`; whether it did. Two requeues of one row: only the first finds it ended.
pub(super) async fn requeue(tx: &mut impl WriteTx, id: i64, now: i64) -> Result<bool, StoreError> {
    let changed = tx
        .run(
            "UPDATE outbox SET state = 'pending', state_rank = 0, attempts = 0, \
             sending_since = NULL, updated_at = $1 \
             WHERE id = $2 AND state IN ('failed', 'expired')",
            [now.into(), id.into()],
        )
        .await?;
    Ok(changed == 1)
}
