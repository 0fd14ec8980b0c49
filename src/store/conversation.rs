//! Per-conversation facts the policies decide on: the last inbound time (the 24-hour window),
//! the opt-out state, and the turn history an agent is given.

use super::{Store, StoreError, on_pool};

/// One past turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// `true` for the customer, `false` for the business (the agent or a system text).
    pub from_customer: bool,
    pub text: String,
    /// Unix seconds.
    pub timestamp: i64,
}

impl Store {
    /// Meta's timestamp (Unix seconds) of the customer's latest message to this number.
    pub async fn last_inbound(
        &self,
        phone_number_id: &str,
        customer: &str,
    ) -> Result<Option<i64>, StoreError> {
        on_pool!(self, |pool| {
            let ts: Option<i64> = sqlx::query_scalar(
                "SELECT last_inbound_ts FROM conversations WHERE phone_number_id = $1 AND customer = $2",
            )
            .bind(phone_number_id)
            .bind(customer)
            .fetch_optional(pool)
            .await?;
            Ok(ts)
        })
    }

    /// The last `turns` messages of a conversation before inbox row `before_inbox_id`, oldest
    /// first: the customer's texts and the replies that Meta accepted.
    pub async fn history(
        &self,
        phone_number_id: &str,
        customer: &str,
        before_inbox_id: i64,
        turns: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        if turns == 0 {
            return Ok(Vec::new());
        }
        let limit = turns as i64;
        on_pool!(self, |pool| {
            let inbound: Vec<(Option<String>, i64, i64)> = sqlx::query_as(
                "SELECT text, meta_ts, received_at FROM inbox WHERE phone_number_id = $1 AND customer = $2 \
                 AND id < $3 AND state = 'done' AND text IS NOT NULL ORDER BY id DESC LIMIT $4",
            )
            .bind(phone_number_id)
            .bind(customer)
            .bind(before_inbox_id)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            let outbound: Vec<(String, i64)> = sqlx::query_as(
                "SELECT payload, created_at FROM outbox WHERE phone_number_id = $1 AND customer = $2 \
                 AND (inbox_id IS NULL OR inbox_id < $3) AND state_rank BETWEEN 2 AND 4 \
                 ORDER BY id DESC LIMIT $4",
            )
            .bind(phone_number_id)
            .bind(customer)
            .bind(before_inbox_id)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            // Order by arrival time in milliseconds; replies are created after their message.
            let mut all: Vec<(i64, HistoryEntry)> = inbound
                .into_iter()
                .filter_map(|(text, meta_ts, received_at)| {
                    text.map(|text| {
                        (
                            received_at,
                            HistoryEntry {
                                from_customer: true,
                                text,
                                timestamp: meta_ts,
                            },
                        )
                    })
                })
                .chain(outbound.into_iter().filter_map(|(payload, created_at)| {
                    let v: serde_json::Value = serde_json::from_str(&payload).ok()?;
                    let text = v["text"]["body"].as_str()?.to_owned();
                    Some((
                        created_at,
                        HistoryEntry {
                            from_customer: false,
                            text,
                            timestamp: created_at / 1000,
                        },
                    ))
                }))
                .collect();
            all.sort_by_key(|(at, _)| *at);
            let skip = all.len().saturating_sub(turns);
            Ok(all.into_iter().skip(skip).map(|(_, e)| e).collect())
        })
    }
}

/// Customers who opted out, per number, held in memory so a turn never asks storage. Loaded at
/// start; changed only after the change is durable. (Several replicas will need to share it
/// through storage instead.)
#[derive(Default)]
pub struct OptedOut {
    set: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

impl OptedOut {
    /// Whether `customer` opted out of `phone_number_id`.
    pub fn contains(&self, phone_number_id: &str, customer: &str) -> bool {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(phone_number_id.to_owned(), customer.to_owned()))
    }

    /// Records a durable change.
    pub fn set(&self, phone_number_id: &str, customer: &str, opted_out: bool) {
        let key = (phone_number_id.to_owned(), customer.to_owned());
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if opted_out {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    /// Loads every opted-out customer from storage (at start, before any turn runs).
    pub async fn load(&self, store: &Store) -> Result<usize, StoreError> {
        let rows: Vec<(String, String)> = on_pool!(store, |pool| {
            sqlx::query_as("SELECT phone_number_id, customer FROM opt_outs WHERE opted_out = 1")
                .fetch_all(pool)
                .await
        })?;
        let n = rows.len();
        *self.set.lock().unwrap_or_else(|e| e.into_inner()) = rows.into_iter().collect();
        Ok(n)
    }
}
