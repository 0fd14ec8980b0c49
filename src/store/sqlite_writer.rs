//! The SQLite writer's connection, owned by the group-commit writer's thread and used there
//! synchronously (rusqlite): sqlx runs each SQLite statement on a worker thread of its own, and
//! handing every statement of a commit over and back cost more than the statement itself.

use super::apply::apply_ops;
use super::sql::{Arg, Fetched, Sql, WriteTx};
use super::{Done, Op, StoreError};
use rusqlite::{Connection, TransactionBehavior};
use std::path::PathBuf;
use std::time::Duration;

/// Prepared statements the writer keeps (the group commit's multi-row statements take one text
/// per batch size and statement kind: keep them all prepared rather than re-parse them).
const STATEMENT_CACHE: usize = 1024;

/// Where the writer's connection goes: the database file and how long a write waits on a lock.
#[derive(Clone, Debug)]
pub struct SqliteFile {
    pub path: PathBuf,
    pub busy_timeout: Duration,
}

/// The only connection that writes to the SQLite database while a gateway runs.
pub struct SqliteWriter {
    conn: Connection,
}

impl SqliteWriter {
    /// Opens the database (already created and migrated by the store) for writing.
    pub fn open(file: &SqliteFile) -> Result<Self, StoreError> {
        let conn = Connection::open(&file.path)?;
        conn.busy_timeout(file.busy_timeout)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Batch(format!(
                "the SQLite database {} cannot use write-ahead logging (journal mode {mode})",
                file.path.display()
            )));
        }
        conn.execute_batch(
            // FULL: a commit is on disk before the webhook is answered 200; the group commit
            // amortises the fsync over every message in the batch. The writer never checkpoints
            // inside a commit (the store does it beside, every second), and statement journals
            // stay in memory instead of spilling to a temporary file.
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; \
             PRAGMA wal_autocheckpoint = 0;",
        )?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Self { conn })
    }

    /// Applies `ops` in one transaction, in order: every op is durable, or none is.
    pub async fn apply(&mut self, ops: &[Op]) -> Result<Vec<Done>, StoreError> {
        // IMMEDIATE: the write lock is taken (waiting up to the busy timeout) before anything is
        // read, so a commit never fails halfway on a snapshot another connection moved past.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let done = apply_ops(&mut Tx(&tx), ops, false, "local").await?;
        tx.commit()?;
        Ok(done)
    }
}

struct Tx<'c>(&'c rusqlite::Transaction<'c>);

/// Binds `args` to the statement's `$n` parameters (SQLite numbers named parameters in order of
/// first use, which is not always `n`).
fn bind(stmt: &mut rusqlite::Statement<'_>, args: &[Arg<'_>]) -> rusqlite::Result<()> {
    for i in 1..=stmt.parameter_count() {
        let n = stmt
            .parameter_name(i)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=args.len()).contains(n))
            .ok_or(rusqlite::Error::InvalidParameterCount(i, args.len()))?;
        match args[n - 1] {
            Arg::Int(v) => stmt.raw_bind_parameter(i, v)?,
            Arg::Text(v) => stmt.raw_bind_parameter(i, v)?,
        }
    }
    Ok(())
}

impl WriteTx for Tx<'_> {
    async fn execute(&mut self, sql: &Sql<'_>) -> Result<u64, StoreError> {
        let mut stmt = self.0.prepare_cached(sql.text())?;
        bind(&mut stmt, sql.args())?;
        Ok(stmt.raw_execute()? as u64)
    }

    async fn fetch<R: Fetched>(&mut self, sql: &Sql<'_>) -> Result<Vec<R>, StoreError> {
        let mut stmt = self.0.prepare_cached(sql.text())?;
        bind(&mut stmt, sql.args())?;
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(R::from_sqlite(row)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_bind_by_number_not_by_position() {
        let conn = Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare("SELECT $2, $1, $2").unwrap();
        bind(&mut stmt, &[Arg::Int(Some(1)), Arg::Text(Some("two"))]).unwrap();
        let mut rows = stmt.raw_query();
        let row = rows.next().unwrap().unwrap();
        let got: (String, i64, String) = (
            row.get(0).unwrap(),
            row.get(1).unwrap(),
            row.get(2).unwrap(),
        );
        assert_eq!(got, ("two".into(), 1, "two".into()));
    }

    #[test]
    fn a_missing_argument_is_an_error_not_a_null() {
        let conn = Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare("SELECT $1, $2").unwrap();
        assert!(bind(&mut stmt, &[Arg::Int(Some(1))]).is_err());
    }
}
