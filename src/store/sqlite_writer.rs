//! The SQLite writer's connection, owned by the group-commit writer's thread and used there
//! synchronously (rusqlite): sqlx runs each SQLite statement on a worker thread of its own, and
//! handing every statement of a commit over and back cost more than the statement itself.

use super::apply::apply_ops;
use super::sql::{Arg, Fetched, Sql, WriteTx};
use super::wamid_index::{self, Recent};
use super::{Answers, Op, StoreError};
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
    text: String,
    /// The wamids of the messages stored since the wamid index's last merge.
    recent: Recent,
    /// The database's installation id (see `Store::installation`).
    installation: String,
}

impl SqliteWriter {
    /// Opens the database (already created and migrated by the store) for writing.
    pub fn open(file: &SqliteFile, installation: &str) -> Result<Self, StoreError> {
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
            // inside a commit: `Store::checkpoint_loop` copies the log beside it every 4 s,
            // and the writer copies the rest between two commits (`restart_wal`). And
            // statement journals stay in memory instead of spilling to a temporary file. A log
            // that grew past 256 MiB (a burst) is cut back when it starts over; below that it is
            // written over in place, with no blocks to allocate.
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; \
             PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 268435456;",
        )?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let recent = Recent::load(&conn)?;
        Ok(Self {
            conn,
            text: String::new(),
            recent,
            installation: installation.to_owned(),
        })
    }

    /// Copies what the last checkpoint left of the write-ahead log into the database, so that
    /// the next commit writes the log from its start. Only the writer can: a checkpointer on
    /// another connection never catches up with a writer that commits without pause, and a log
    /// that is only ever appended to grows for as long as the load lasts (2 GB in 20 s at 2,000
    /// msg/s), every commit allocating blocks and every reader searching a longer index.
    /// Between commits. A passive checkpoint waits for no one: a reader still on the old log
    /// keeps it (`false`), and the next checkpoint tries again. (A RESTART checkpoint would wait
    /// for that reader, and every webhook waits while the writer does.)
    pub fn restart_wal(&mut self) -> Result<bool, StoreError> {
        // (busy, frames in the log, frames copied)
        let (busy, log, copied) =
            self.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?;
        Ok(busy == 0 && log == copied)
    }

    /// Applies `ops` in one transaction, in order: every op is durable, or none is. When it is
    /// due, the transaction first merges the wamids stored since the last merge into the index.
    pub async fn apply(&mut self, ops: &[Op]) -> Result<Answers, StoreError> {
        if self.recent.stale() {
            self.recent = Recent::load(&self.conn)?;
        }
        // IMMEDIATE: the write lock is taken (waiting up to the busy timeout) before anything is
        // read, so a commit never fails halfway on a snapshot another connection moved past.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let merged = if self.recent.merge_due() {
            Some(wamid_index::merge(&tx, self.recent.merged())?)
        } else {
            None
        };
        let mut t = Tx {
            tx: &tx,
            text: &mut self.text,
            recent: &self.recent,
            inserted: Vec::new(),
        };
        let done = apply_ops(&mut t, ops, None, &self.installation).await?;
        let inserted = t.inserted;
        if let Err(e) = tx.commit() {
            self.recent.failed();
            return Err(e.into());
        }
        self.recent.committed(inserted, merged);
        Ok(done)
    }
}

#[cfg(test)]
impl SqliteWriter {
    /// The next batch merges the wamids stored since the last merge into the index first.
    pub(super) fn merge_next(&mut self) {
        self.recent.merge_next();
    }

    /// Whether the next batch would merge first.
    pub(super) fn merge_due(&self) -> bool {
        self.recent.merge_due()
    }

    /// As after a commit that failed: the next batch reads the wamids back from the database.
    pub(super) fn as_if_a_commit_failed(&mut self) {
        self.recent.failed();
    }
}

struct Tx<'c> {
    tx: &'c rusqlite::Transaction<'c>,
    /// The statement text being run, in SQLite's spelling.
    text: &'c mut String,
    recent: &'c Recent,
    /// The inbox rows (id, wamid) the transaction inserted.
    inserted: Vec<(i64, String)>,
}

impl Tx<'_> {
    fn prepare(&mut self, sql: &Sql<'_>) -> rusqlite::Result<rusqlite::CachedStatement<'_>> {
        let mut stmt = self.tx.prepare_cached(sqlite_text(sql.text(), self.text))?;
        bind(&mut stmt, sql.args())?;
        Ok(stmt)
    }
}

/// SQLite's spelling of a statement: `$n` becomes `?n`. SQLite treats `$n` as a name, looked up
/// by a linear scan of the names seen so far when parsing and when binding (quadratic in the
/// parameters of a multi-row statement); `?n` is the n-th parameter outright.
fn sqlite_text<'b>(text: &str, buf: &'b mut String) -> &'b str {
    buf.clear();
    super::sql::each_placeholder(text, buf, |out, digits| {
        out.push('?');
        out.push_str(digits);
    });
    buf
}

/// Binds `args` in order to the statement's parameters `?1..?n`.
fn bind(stmt: &mut rusqlite::Statement<'_>, args: &[Arg<'_>]) -> rusqlite::Result<()> {
    if stmt.parameter_count() != args.len() {
        return Err(rusqlite::Error::InvalidParameterCount(
            args.len(),
            stmt.parameter_count(),
        ));
    }
    for (i, arg) in args.iter().enumerate() {
        match *arg {
            Arg::Int(v) => stmt.raw_bind_parameter(i + 1, v)?,
            // The same text PostgreSQL would store (see `crate::text`).
            Arg::Text(v) => stmt.raw_bind_parameter(i + 1, v.map(crate::text::without_nul))?,
        }
    }
    Ok(())
}

impl WriteTx for Tx<'_> {
    async fn execute(&mut self, sql: &Sql<'_>) -> Result<u64, StoreError> {
        Ok(self.prepare(sql)?.raw_execute()? as u64)
    }

    async fn drain(&mut self, sql: &Sql<'_>) -> Result<u64, StoreError> {
        let mut stmt = self.prepare(sql)?;
        let mut rows = stmt.raw_query();
        let mut n = 0;
        while rows.next()?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    async fn fetch<R: Fetched>(&mut self, sql: &Sql<'_>) -> Result<Vec<R>, StoreError> {
        let mut stmt = self.prepare(sql)?;
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(R::from_sqlite(row)?);
        }
        Ok(out)
    }

    fn recent_wamids(&self) -> Option<&Recent> {
        Some(self.recent)
    }

    fn inserted_messages(&mut self, rows: &[(i64, String)]) {
        self.inserted.extend_from_slice(rows);
    }
}

/// A migrated database in a new directory (`w.db`), its store and its writer.
#[cfg(test)]
pub(super) async fn writer_on_a_fresh_file()
-> (tempfile::TempDir, crate::store::Store, SqliteWriter) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::config::Storage {
        url: format!("sqlite://{}", dir.path().join("w.db").display()),
        ..Default::default()
    };
    let store = crate::store::Store::connect(&cfg).await.unwrap();
    let writer = store
        .open_sqlite_writer()
        .unwrap()
        .expect("SQLite has a writer");
    (dir, store, writer)
}

/// The first column of every row `sql` returns on `file`, as text.
#[cfg(test)]
pub(super) fn texts(file: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut stmt = file.prepare(sql).unwrap();
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

/// How SQLite would run `sql` on `file` (its parameters unbound): `EXPLAIN QUERY PLAN`'s
/// lines, joined by `; `.
#[cfg(test)]
pub(super) fn query_plan(file: &rusqlite::Connection, sql: &str) -> String {
    let mut explain = file.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let nulls = vec![rusqlite::types::Null; explain.parameter_count()];
    let lines = explain
        .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
        .unwrap();
    lines.collect::<Result<Vec<_>, _>>().unwrap().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_keep_their_numbers_in_sqlite_spelling() {
        let mut buf = String::new();
        assert_eq!(
            sqlite_text("SET a = $2, b = $10 WHERE c = $1 AND d = '$x'", &mut buf),
            "SET a = ?2, b = ?10 WHERE c = ?1 AND d = '$x'"
        );
        let conn = Connection::open_in_memory().unwrap();
        let mut stmt = conn
            .prepare(sqlite_text("SELECT $2, $1, $2", &mut buf))
            .unwrap();
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

    #[tokio::test]
    async fn an_in_memory_database_is_refused_with_what_to_do() {
        let cfg = crate::config::Storage {
            url: "sqlite::memory:".into(),
            ..Default::default()
        };
        let store = crate::store::Store::connect(&cfg).await.unwrap();
        let err = store
            .open_sqlite_writer()
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("in-memory SQLite database"), "{err}");
        assert!(err.contains("point it at a file"), "{err}");
    }

    #[tokio::test]
    async fn the_writer_commits_what_the_readers_see() {
        let (_dir, store, mut writer) = writer_on_a_fresh_file().await;
        let op = Op::NumberOverride {
            phone_number_id: "106540352242922".into(),
            disconnected: true,
            reason: Some("maintenance".into()),
        };
        assert_eq!(writer.apply(&[op]).await.unwrap().writes, 1);
        let read = store.number_overrides().await.unwrap();
        assert_eq!(read.len(), 1, "{read:?}");
    }

    #[tokio::test]
    async fn the_write_ahead_log_starts_over_after_a_restart() {
        let (dir, store, mut writer) = writer_on_a_fresh_file().await;
        let override_op = |i: usize| Op::NumberOverride {
            phone_number_id: format!("10654035224{i:04}"),
            disconnected: true,
            reason: Some("x".repeat(2000)),
        };
        // Frames in the log, as a checkpoint that copies nothing reports them.
        let frames = |w: &SqliteWriter| -> i64 {
            w.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
                .unwrap()
        };
        for i in 0..200 {
            writer.apply(&[override_op(i)]).await.unwrap();
        }
        // A reader on an old snapshot holds the log: it cannot start over, and the writer
        // hears so after waiting briefly instead of stalling.
        let reader = Connection::open(dir.path().join("w.db")).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let _: i64 = reader
            .query_row("SELECT count(*) FROM number_overrides", [], |r| r.get(0))
            .unwrap();
        writer.apply(&[override_op(200)]).await.unwrap();
        let grown = frames(&writer);
        assert!(grown > 200, "every commit appended: {grown} frames");
        let started = std::time::Instant::now();
        assert!(!writer.restart_wal().unwrap(), "a reader holds the old log");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        writer.apply(&[override_op(201)]).await.unwrap();
        assert!(frames(&writer) > grown, "the log still grows");
        reader.execute_batch("COMMIT").unwrap();
        assert!(writer.restart_wal().unwrap(), "no reader holds the old log");
        writer.apply(&[override_op(202)]).await.unwrap();
        let after = frames(&writer);
        assert!(
            after < 10,
            "the next commit writes the log from its start: {after} frames"
        );
        assert_eq!(store.number_overrides().await.unwrap().len(), 203);
    }

    /// A file the gateway creates has its page size; a file created before keeps its own (the
    /// page size of a database in write-ahead-log mode cannot change).
    #[tokio::test]
    async fn a_new_file_gets_the_gateways_page_size_and_an_old_one_keeps_its_own() {
        let page_size = |path: &std::path::Path| -> u32 {
            Connection::open(path)
                .unwrap()
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .unwrap()
        };
        let (dir, store, _writer) = writer_on_a_fresh_file().await;
        drop(store);
        assert_eq!(page_size(&dir.path().join("w.db")), 2048);

        // SQLite's default, as a file of an earlier version has.
        let old = dir.path().join("old.db");
        Connection::open(&old)
            .unwrap()
            .execute_batch(
                "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; CREATE TABLE t (x);",
            )
            .unwrap();
        let cfg = crate::config::Storage {
            url: format!("sqlite://{}", old.display()),
            ..Default::default()
        };
        let store = crate::store::Store::connect(&cfg).await.unwrap();
        assert!(
            store.number_overrides().await.unwrap().is_empty(),
            "migrated"
        );
        drop(store);
        assert_eq!(page_size(&old), 4096);
    }

    #[test]
    fn a_missing_argument_is_an_error_not_a_null() {
        let conn = Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare("SELECT ?1, ?2").unwrap();
        assert!(bind(&mut stmt, &[Arg::Int(Some(1))]).is_err());
    }
}
