//! Retention's storage side: which rows are old enough to go (read in small keyset pages, off
//! the writer), the writer's batch operations that delete them, the digests that keep deleted
//! wamids recognisable, and SQLite's incremental vacuum. Decides nothing about when.

use super::sql::{Sql, WriteTx};
use super::{Pool, Store, StoreError, on_pool};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// A table retention deletes from, with its time column and what "still open" means there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrunedTable {
    Inbox,
    Outbox,
    StatusEvents,
    DeadLetters,
    OptOutEvents,
    HandoffNotifications,
    /// The audit log, pruned by `storage.retention.audit` (not in [`PrunedTable::ALL`]).
    Audit,
}

impl PrunedTable {
    /// Every table pruned by `storage.retention.messages`, in the order they are pruned.
    pub const ALL: [PrunedTable; 6] = [
        Self::Inbox,
        Self::Outbox,
        Self::StatusEvents,
        Self::DeadLetters,
        Self::OptOutEvents,
        Self::HandoffNotifications,
    ];

    /// The table's name (also the metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbox => "inbox",
            Self::Outbox => "outbox",
            Self::StatusEvents => "status_events",
            Self::DeadLetters => "dead_letters",
            Self::OptOutEvents => "opt_out_events",
            Self::HandoffNotifications => "handoff_notifications",
            Self::Audit => "audit_log",
        }
    }

    /// When a row was written, in milliseconds since the epoch.
    fn time_column(self) -> &'static str {
        match self {
            Self::Outbox | Self::HandoffNotifications => "created_at",
            Self::OptOutEvents | Self::Audit => "at",
            _ => "received_at",
        }
    }

    /// Rows never deleted however old: a message not handled yet, a reply not settled yet.
    fn open(self) -> &'static str {
        match self {
            Self::Inbox => "state = 'received'",
            Self::Outbox => "is_open",
            Self::HandoffNotifications => "state = 'pending'",
            _ => "1 = 0",
        }
    }
}

/// The condition the inbox insert (`… FROM (VALUES …) AS v WHERE …`) puts on each message, given
/// the columns holding Meta's timestamp in seconds (`meta_ts`) and the wamid's digest (`digest`):
/// not remembered as deleted. Only a message sent before the newest deleted one was received
/// (give or take the clock skew Meta's timestamps may have, 5 minutes) can be a redelivery of a
/// deleted message, so newer ones, all of them in steady state, skip the lookup; the newest time
/// is read once per statement, from an index.
pub(super) fn not_deleted_before(meta_ts: &str, digest: &str) -> String {
    format!(
        "{meta_ts} * 1000 > (SELECT COALESCE(MAX(received_at), 0) FROM seen_wamids) + 300000 \
         OR NOT EXISTS (SELECT 1 FROM seen_wamids s WHERE s.wamid_hash = {digest})"
    )
}

/// The label of the wamid digests in the pruned-rows metric.
pub const SEEN_WAMIDS: &str = "seen_wamids";
/// The label of the cached media uploads in the pruned-rows metric.
pub const MEDIA_UPLOADS: &str = "media_uploads";

/// The digest a deleted inbound message's wamid is remembered by: the first 16 bytes of its
/// SHA-256, hex. A wamid carries the customer's phone number; its digest does not show it, and
/// 128 bits make two messages' digests collide with negligible probability.
pub fn wamid_digest(wamid: &str) -> String {
    hex::encode(&Sha256::digest(wamid.as_bytes())[..16])
}

/// One page of a table's oldest rows, as the pruner reads it.
#[derive(Debug, Default)]
pub struct Candidates {
    /// Rows old enough and closed: to be deleted.
    pub ids: Vec<i64>,
    /// The last id read; the next page starts after it.
    pub after: i64,
    /// No older row is left after this page (the page ended, or reached a newer row).
    pub done: bool,
}

/// A write the pruner asks of the group-commit writer; each touches at most one small batch.
#[derive(Debug)]
pub enum PruneOp {
    /// Remember the wamids of these inbox rows in `seen_wamids` (committed before the rows go,
    /// so that a redelivery racing the deletion on another replica still finds one or the other).
    Retire { ids: Vec<i64> },
    /// Delete these rows, unless one is (again) open.
    Delete { table: PrunedTable, ids: Vec<i64> },
    /// Forget up to `limit` wamid digests received before `before_ms`.
    ExpireSeen { before_ms: i64, limit: i64 },
    /// Forget up to `limit` cached media uploads made before `before_ms`.
    ExpireMediaUploads { before_ms: i64, limit: i64 },
    /// SQLite: give up to `pages` free pages back to the file system.
    Vacuum { pages: i64 },
}

/// What one [`PruneOp`] did and how long it held the writer.
#[derive(Debug, Clone, Copy)]
pub struct Pruned {
    pub rows: u64,
    pub took: Duration,
}

/// Applies one prune operation inside the writer's open transaction.
pub(super) async fn apply_prune(
    tx: &mut impl WriteTx,
    op: &PruneOp,
    shared: bool,
) -> Result<Pruned, StoreError> {
    let started = Instant::now();
    let rows = match op {
        PruneOp::Retire { ids } => retire(tx, ids).await?,
        PruneOp::Delete { table, ids } if !ids.is_empty() => {
            let mut sql = Sql::new(&format!("DELETE FROM {} WHERE id IN (", table.as_str()));
            sql.list(ids.iter().copied());
            sql.push(&format!(") AND NOT ({})", table.open()));
            tx.execute(&sql).await?
        }
        PruneOp::Delete { .. } => 0,
        PruneOp::ExpireSeen { before_ms, limit } => {
            tx.run(
                "DELETE FROM seen_wamids WHERE wamid_hash IN (SELECT wamid_hash FROM seen_wamids \
                 WHERE received_at < $1 ORDER BY received_at LIMIT $2)",
                [(*before_ms).into(), (*limit).into()],
            )
            .await?
        }
        PruneOp::ExpireMediaUploads { before_ms, limit } => {
            super::media::expire(tx, *before_ms, *limit).await?
        }
        // PostgreSQL's autovacuum reuses the space by itself.
        PruneOp::Vacuum { .. } if shared => 0,
        PruneOp::Vacuum { pages } => {
            tx.drain(&Sql::new(&format!("PRAGMA incremental_vacuum({pages})")))
                .await?;
            0
        }
    };
    Ok(Pruned {
        rows,
        took: started.elapsed(),
    })
}

/// Inserts the digests of the wamids of inbox rows `ids` into `seen_wamids`.
pub(super) async fn retire(tx: &mut impl WriteTx, ids: &[i64]) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut sql = Sql::new("SELECT wamid, received_at FROM inbox WHERE id IN (");
    sql.list(ids.iter().copied()).push(")");
    let rows: Vec<(String, i64)> = tx.fetch(&sql).await?;
    remember(tx, rows.iter().map(|(w, at)| (wamid_digest(w), *at))).await
}

/// Inserts `(digest, received_at)` pairs into `seen_wamids`, keeping the ones already there.
pub(super) async fn remember(
    tx: &mut impl WriteTx,
    digests: impl Iterator<Item = (String, i64)>,
) -> Result<u64, StoreError> {
    let digests: Vec<(String, i64)> = digests.collect();
    let mut n = 0;
    for chunk in digests.chunks(500) {
        let mut sql = Sql::new("INSERT INTO seen_wamids (wamid_hash, received_at) ");
        sql.values(chunk.iter(), |t, (digest, at)| {
            t.bind(digest.as_str()).bind(*at);
        });
        sql.push(" ON CONFLICT (wamid_hash) DO NOTHING");
        n += tx.execute(&sql).await?;
    }
    Ok(n)
}

/// Turns on SQLite's incremental auto-vacuum, so that pruned pages can be given back to the file
/// system. A file made without it takes one full VACUUM to change (once, at the first start of
/// a gateway that prunes; it rewrites the file and holds it meanwhile).
pub(super) async fn use_incremental_vacuum(pool: &sqlx::SqlitePool) -> Result<(), StoreError> {
    let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(pool)
        .await?;
    if mode != 2 {
        tracing::info!(
            "SQLite: turning on incremental auto-vacuum (rewrites the file once, with VACUUM)"
        );
        // One connection (the pool holds one): the pragma applies to the VACUUM that follows.
        let mut conn = pool.acquire().await?;
        sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
            .execute(&mut *conn)
            .await?;
        sqlx::query("VACUUM").execute(&mut *conn).await?;
    }
    Ok(())
}

impl Store {
    /// The next page of `table`'s rows after id `after`, oldest first: the closed ones written
    /// before `before_ms` are candidates. Ids grow with time, so the page stops at the first
    /// newer row. A read, off the writer.
    pub async fn prune_candidates(
        &self,
        table: PrunedTable,
        after: i64,
        before_ms: i64,
        limit: usize,
    ) -> Result<Candidates, StoreError> {
        let sql = format!(
            "SELECT id, {}, CAST(CASE WHEN {} THEN 1 ELSE 0 END AS BIGINT) FROM {} \
             WHERE id > $1 ORDER BY id LIMIT $2",
            table.time_column(),
            table.open(),
            table.as_str()
        );
        let rows: Vec<(i64, i64, i64)> = on_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(after)
                .bind(limit as i64)
                .fetch_all(pool)
                .await
        })?;
        let mut page = Candidates {
            ids: Vec::new(),
            after,
            done: rows.len() < limit,
        };
        for (id, at, open) in rows {
            if at >= before_ms {
                page.done = true;
                break;
            }
            page.after = id;
            if open == 0 {
                page.ids.push(id);
            }
        }
        Ok(page)
    }

    /// When the oldest row of `table` was written (ms since the epoch); `None` when empty.
    pub async fn oldest_row_at(&self, table: PrunedTable) -> Result<Option<i64>, StoreError> {
        let sql = format!(
            "SELECT {} FROM {} ORDER BY id LIMIT 1",
            table.time_column(),
            table.as_str()
        );
        on_pool!(self, |pool| Ok(sqlx::query_scalar(&sql)
            .fetch_optional(pool)
            .await?))
    }

    /// When the oldest remembered wamid digest was received; `None` when there is none.
    pub async fn oldest_seen_wamid_at(&self) -> Result<Option<i64>, StoreError> {
        on_pool!(self, |pool| Ok(sqlx::query_scalar(
            "SELECT received_at FROM seen_wamids ORDER BY received_at LIMIT 1"
        )
        .fetch_optional(pool)
        .await?))
    }

    /// The database's size on disk in bytes: SQLite's file (pages × page size), PostgreSQL's
    /// database.
    pub async fn database_size_bytes(&self) -> Result<i64, StoreError> {
        let size = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_scalar(
                    "SELECT c.page_count * s.page_size FROM pragma_page_count() c, pragma_page_size() s",
                )
                .fetch_one(p)
                .await?
            }
            Pool::Postgres(p) => {
                sqlx::query_scalar("SELECT pg_database_size(current_database())")
                    .fetch_one(p)
                    .await?
            }
        };
        Ok(size)
    }

    /// PostgreSQL: VACUUM the pruned tables, so that the space of the deleted rows is reused
    /// at once rather than after autovacuum's next visit (a plain VACUUM: it takes no lock that
    /// writers wait on, and the files keep their size for the rows to come). Nothing on SQLite,
    /// whose free pages the writer gives back (`PruneOp::Vacuum`).
    pub async fn vacuum_pruned(&self) -> Result<(), StoreError> {
        if let Pool::Postgres(p) = &self.pool {
            sqlx::raw_sql(
                "VACUUM inbox, outbox, status_events, dead_letters, opt_out_events, \
                 handoff_notifications, seen_wamids",
            )
            .execute(p)
            .await?;
        }
        Ok(())
    }

    /// SQLite: pages on the file's free list, which an incremental vacuum gives back; 0 on
    /// PostgreSQL.
    pub async fn free_pages(&self) -> Result<i64, StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => Ok(sqlx::query_scalar(
                "SELECT freelist_count FROM pragma_freelist_count()",
            )
            .fetch_one(p)
            .await?),
            Pool::Postgres(_) => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_stable_short_and_hides_the_wamid() {
        let w = "wamid.HBgLMTU1NTAwMDExMTEVAgASGBQzQUY4";
        let d = wamid_digest(w);
        assert_eq!(d.len(), 32);
        assert_eq!(d, wamid_digest(w));
        assert_ne!(d, wamid_digest("wamid.other"));
    }
}
