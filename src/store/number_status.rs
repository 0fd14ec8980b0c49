//! The numbers' statuses at Meta as stored (`number_status`): written by the leader's control
//! loop when a status changes and by a sender whose send Meta refused with 190, read by every
//! replica (the rows newer than the last one it has seen). Plain rows: the reconciler owns what
//! they mean. Written outside the group-commit writer: a row changes when a number's status does,
//! rarely, and never on a message's path to its commit.

use super::{Pool, Store, StoreError, on_pool};

/// One number's stored status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredStatus {
    pub phone_number_id: String,
    /// `active`, `inactive` or `error`.
    pub status: String,
    pub reason: Option<String>,
    /// A problem of the number's WABA, shown without being charged to the number.
    pub waba_problem: Option<String>,
    /// Unix seconds since the number has had this status.
    pub since: i64,
    pub verified_name: Option<String>,
    pub display_phone_number: Option<String>,
    pub quality_rating: Option<String>,
    /// When the observation behind the row was made, in milliseconds since the epoch.
    pub checked_at: i64,
    /// The order of writes; 0 in a row not written yet.
    pub seq: i64,
}

const COLUMNS: &str = "phone_number_id, status, reason, waba_problem, since, verified_name, \
                       display_phone_number, quality_rating, checked_at, seq";

impl Store {
    /// Writes `rows`, except where the stored row comes from a newer observation; returns the
    /// rows written, each with its `seq`. Writers are serialised (a table lock on PostgreSQL),
    /// so the order of `seq` is the order of commits and a reader that has seen `seq` N has
    /// seen every row up to it.
    pub async fn write_number_statuses(
        &self,
        rows: &[StoredStatus],
    ) -> Result<Vec<StoredStatus>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let upsert = format!(
            "INSERT INTO number_status ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, {}) \
             ON CONFLICT (phone_number_id) DO UPDATE SET status = excluded.status, \
             reason = excluded.reason, waba_problem = excluded.waba_problem, \
             since = excluded.since, verified_name = excluded.verified_name, \
             display_phone_number = excluded.display_phone_number, \
             quality_rating = excluded.quality_rating, checked_at = excluded.checked_at, \
             seq = excluded.seq WHERE number_status.checked_at <= excluded.checked_at \
             RETURNING seq",
            match &self.write_pool {
                Pool::Sqlite(_) => "(SELECT COALESCE(MAX(seq), 0) + 1 FROM number_status)",
                Pool::Postgres(_) => "nextval('number_status_seq')",
            }
        );
        on_pool!(write self, |pool| {
            let mut tx = pool.begin().await?;
            if matches!(self.write_pool, Pool::Postgres(_)) {
                // Serialises writers (the leader and refused sends on any replica) so that no
                // row commits with a lower `seq` after a reader moved past it.
                sqlx::query("LOCK TABLE number_status IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
            }
            let mut written = Vec::with_capacity(rows.len());
            for r in rows {
                let seq: Option<i64> = sqlx::query_scalar(&upsert)
                    .bind(&r.phone_number_id)
                    .bind(&r.status)
                    .bind(&r.reason)
                    .bind(&r.waba_problem)
                    .bind(r.since)
                    .bind(&r.verified_name)
                    .bind(&r.display_phone_number)
                    .bind(&r.quality_rating)
                    .bind(r.checked_at)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(seq) = seq {
                    written.push(StoredStatus { seq, ..r.clone() });
                }
            }
            tx.commit().await?;
            Ok(written)
        })
    }

    /// The rows written after `seq`, in the order they were written (all of them from 0).
    pub async fn number_statuses_after(&self, seq: i64) -> Result<Vec<StoredStatus>, StoreError> {
        type Row = (
            String,
            String,
            Option<String>,
            Option<String>,
            i64,
            Option<String>,
            Option<String>,
            Option<String>,
            i64,
            i64,
        );
        let sql = format!("SELECT {COLUMNS} FROM number_status WHERE seq > $1 ORDER BY seq");
        let rows: Vec<Row> = on_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(seq).fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|r| StoredStatus {
                phone_number_id: r.0,
                status: r.1,
                reason: r.2,
                waba_problem: r.3,
                since: r.4,
                verified_name: r.5,
                display_phone_number: r.6,
                quality_rating: r.7,
                checked_at: r.8,
                seq: r.9,
            })
            .collect())
    }
}
