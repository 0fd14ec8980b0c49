//! Operator overrides per number (disconnect / connect from the admin API): the table's reads,
//! the per-number activity the status page shows, and the in-memory set of disconnected numbers
//! that the pipeline checks on every turn. Writes go through the group-commit writer.

use super::writer::WriterHandle;
use super::{Store, StoreError, on_pool};
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// One number's override as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumberOverride {
    pub phone_number_id: String,
    pub disconnected: bool,
    /// Milliseconds since the Unix epoch.
    pub changed_at: i64,
    /// What the operator said when changing it.
    pub reason: Option<String>,
}

impl Store {
    /// Every stored override, connected ones included.
    pub async fn number_overrides(&self) -> Result<Vec<NumberOverride>, StoreError> {
        on_pool!(self, |pool| {
            let rows: Vec<(String, i64, i64, Option<String>)> = sqlx::query_as(
                "SELECT phone_number_id, disconnected, changed_at, reason FROM number_overrides \
                 ORDER BY phone_number_id",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(
                    |(phone_number_id, disconnected, changed_at, reason)| NumberOverride {
                        phone_number_id,
                        disconnected: disconnected == 1,
                        changed_at,
                        reason,
                    },
                )
                .collect())
        })
    }

    /// When the latest customer message to each of `numbers` was stored (milliseconds since
    /// the Unix epoch); numbers that never had one are left out. One statement for them all:
    /// the database reads one row per number (SQLite's `number_last_received`) or probes
    /// `inbox_number_received` once per number (PostgreSQL), where a query each cost a round
    /// trip each (10,000 numbers: seconds of a core, every refresh).
    pub async fn last_received_by_number(
        &self,
        numbers: &[String],
    ) -> Result<HashMap<String, i64>, StoreError> {
        let rows: Vec<(String, Option<i64>)> = match &self.pool {
            super::Pool::Sqlite(pool) => {
                let list = serde_json::to_string(numbers).expect("strings serialise as JSON");
                sqlx::query_as(
                    "SELECT n.value, (SELECT received_at FROM number_last_received \
                     WHERE phone_number_id = n.value) FROM json_each($1) AS n",
                )
                .bind(list)
                .fetch_all(pool)
                .await?
            }
            super::Pool::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT n, (SELECT MAX(received_at) FROM inbox WHERE phone_number_id = n) \
                     FROM unnest($1::text[]) AS n",
                )
                .bind(numbers)
                .fetch_all(pool)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .filter_map(|(n, at)| Some((n, at?)))
            .collect())
    }

    /// Replies not yet settled (`pending` or `sending`), counted per number.
    pub async fn queued_replies(&self) -> Result<HashMap<String, i64>, StoreError> {
        on_pool!(self, |pool| {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT phone_number_id, COUNT(*) FROM outbox \
                 WHERE is_open GROUP BY phone_number_id",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().collect())
        })
    }

    /// When the oldest reply not yet settled was queued (milliseconds since the Unix epoch).
    /// Ids grow with time, so the partial index `outbox_open` answers it without a scan.
    pub async fn oldest_queued_reply_at(&self) -> Result<Option<i64>, StoreError> {
        on_pool!(self, |pool| {
            let at: Option<i64> = sqlx::query_scalar(
                "SELECT created_at FROM outbox WHERE is_open \
                 ORDER BY id LIMIT 1",
            )
            .fetch_optional(pool)
            .await?;
            Ok(at)
        })
    }
}

/// The numbers an operator disconnected, read on every turn without touching storage.
#[derive(Default)]
pub struct Disconnected {
    set: ArcSwap<HashSet<String>>,
    /// Serialises changes and loads, so that the stored rows and the in-memory set agree when
    /// two requests race, or a request and a load (another replica's change, heard on
    /// PostgreSQL): a load that read the rows before a change committed must not replace the
    /// set after the change put it in force. The admin API (across the write) and loads take
    /// it, never the message path.
    change: tokio::sync::Mutex<()>,
}

impl Disconnected {
    /// Whether `phone_number_id` is disconnected.
    pub fn contains(&self, phone_number_id: &str) -> bool {
        self.set.load().contains(phone_number_id)
    }

    /// The disconnected numbers now.
    pub fn all(&self) -> Arc<HashSet<String>> {
        self.set.load_full()
    }

    /// Loads the set from storage (at start, before any turn runs, and on PostgreSQL whenever
    /// a replica changed it).
    pub async fn load(&self, store: &Store) -> Result<usize, StoreError> {
        let _one_at_a_time = self.change.lock().await;
        let set: HashSet<String> = store
            .number_overrides()
            .await?
            .into_iter()
            .filter(|o| o.disconnected)
            .map(|o| o.phone_number_id)
            .collect();
        let n = set.len();
        self.set.store(Arc::new(set));
        Ok(n)
    }

    /// Disconnects (or connects) a number: durable first, then in force for the next turn.
    pub async fn set(
        &self,
        writer: &WriterHandle,
        phone_number_id: &str,
        disconnected: bool,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let _one_at_a_time = self.change.lock().await;
        writer
            .set_number_override(phone_number_id, disconnected, reason)
            .await?;
        self.set.rcu(|current| {
            let mut next = HashSet::clone(current);
            if disconnected {
                next.insert(phone_number_id.to_owned());
            } else {
                next.remove(phone_number_id);
            }
            next
        });
        Ok(())
    }
}
