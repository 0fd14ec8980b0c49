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

/// The upsert of rows from `source` (a `VALUES` row or a `SELECT`, in [`COLUMNS`] order) that
/// keeps a stored row from a newer observation, returning each written row's id and `seq`.
fn upsert(source: &str) -> String {
    format!(
        "INSERT INTO number_status ({COLUMNS}) {source} \
         ON CONFLICT (phone_number_id) DO UPDATE SET status = excluded.status, \
         reason = excluded.reason, waba_problem = excluded.waba_problem, \
         since = excluded.since, verified_name = excluded.verified_name, \
         display_phone_number = excluded.display_phone_number, \
         quality_rating = excluded.quality_rating, checked_at = excluded.checked_at, \
         seq = excluded.seq WHERE number_status.checked_at <= excluded.checked_at \
         RETURNING phone_number_id, seq"
    )
}

/// [`Store::write_number_statuses`] on PostgreSQL: one statement over arrays, under a table
/// lock that serialises writers (the leader and refused sends on any replica), so that no row
/// commits with a lower `seq` after a reader moved past it.
async fn write_pg(
    pool: &sqlx::PgPool,
    rows: &[StoredStatus],
) -> Result<Vec<(String, i64)>, StoreError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        upsert(
            "SELECT u.*, nextval('number_status_seq') FROM UNNEST($1::text[], $2::text[], \
             $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[], $8::text[], $9::int8[]) \
             AS u(phone_number_id, status, reason, waba_problem, since, verified_name, \
             display_phone_number, quality_rating, checked_at)",
        )
    });
    let col = |f: fn(&StoredStatus) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE number_status IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let written = sqlx::query_as(SQL.as_str())
        .bind(col(|r| Some(r.phone_number_id.clone())))
        .bind(col(|r| Some(r.status.clone())))
        .bind(col(|r| r.reason.clone()))
        .bind(col(|r| r.waba_problem.clone()))
        .bind(rows.iter().map(|r| r.since).collect::<Vec<_>>())
        .bind(col(|r| r.verified_name.clone()))
        .bind(col(|r| r.display_phone_number.clone()))
        .bind(col(|r| r.quality_rating.clone()))
        .bind(rows.iter().map(|r| r.checked_at).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(written)
}

impl Store {
    /// Writes `rows`, except where the stored row comes from a newer observation; returns the
    /// rows written, each with its `seq`. Writers are serialised (a table lock on PostgreSQL),
    /// so the order of `seq` is the order of commits and a reader that has seen `seq` N has
    /// seen every row up to it. On PostgreSQL the rows go in one statement (a first pass over
    /// 10,000 numbers is one round trip, not 10,000).
    pub async fn write_number_statuses(
        &self,
        rows: &[StoredStatus],
    ) -> Result<Vec<StoredStatus>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let written: Vec<(String, i64)> = match &self.write_pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let mut written = Vec::with_capacity(rows.len());
                let sql = upsert(
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                     (SELECT COALESCE(MAX(seq), 0) + 1 FROM number_status))",
                );
                for r in rows {
                    let row: Option<(String, i64)> = sqlx::query_as(&sql)
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
                    written.extend(row);
                }
                tx.commit().await?;
                written
            }
            Pool::Postgres(pool) => write_pg(pool, rows).await?,
        };
        let by_id: std::collections::HashMap<&str, &StoredStatus> = rows
            .iter()
            .map(|r| (r.phone_number_id.as_str(), r))
            .collect();
        Ok(written
            .into_iter()
            .filter_map(|(id, seq)| {
                let r = by_id.get(id.as_str())?;
                Some(StoredStatus {
                    seq,
                    ..(*r).clone()
                })
            })
            .collect())
    }

    /// Deletes the rows of numbers not in `declared` (removed from the file); returns how many.
    pub async fn forget_number_statuses_except(
        &self,
        declared: &[String],
    ) -> Result<u64, StoreError> {
        let done = match &self.write_pool {
            Pool::Sqlite(pool) => {
                let list = serde_json::to_string(declared).unwrap_or_else(|_| "[]".to_owned());
                sqlx::query(
                    "DELETE FROM number_status \
                     WHERE phone_number_id NOT IN (SELECT value FROM json_each($1))",
                )
                .bind(list)
                .execute(pool)
                .await?
                .rows_affected()
            }
            Pool::Postgres(pool) => {
                sqlx::query("DELETE FROM number_status WHERE NOT (phone_number_id = ANY($1))")
                    .bind(declared)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
        };
        Ok(done)
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
