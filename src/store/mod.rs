//! Storage: one interface over SQLite (embedded, WAL) and PostgreSQL, with migrations.
//! Owns the inbox, outbox, conversations, dead letters (and their replays), status events, the
//! cache of media uploads and the audit log; knows no HTTP.

mod apply;
mod audit;
mod batches;
pub mod cluster;
mod conversation;
mod dbclock;
mod dead_letters;
mod erase;
mod keywords;
mod lock;
mod media;
mod migrate;
mod number_status;
mod overrides;
mod pause;
mod pgconn;
mod pgcreate;
mod replies;
mod retention;
mod rows;
mod secrets;
pub mod send_slots;
mod settle;
mod sql;
mod sqlite_writer;
mod wamid_index;
pub mod writer;

pub use apply::{Answers, LeaseClaim, Op, TurnEnd};
pub use audit::{AuditAction, AuditEntry, AuditOutcome, NewAuditEntry};
pub use conversation::{HistoryEntry, OptedOut};
pub use dead_letters::{DeadLetterRow, ReplayMark, ReplayOutcome};
pub use erase::{BadCustomerId, CustomerId, ERASE_PASSES, EraseOp, Erased, ErasureKey};
pub use media::MediaUpload;
pub use number_status::StoredStatus;
pub use overrides::{Disconnected, NumberOverride};
pub use pause::{HandoffOp, Notification, Notified, Pause, Paused, PausedBy};
pub use replies::{EndedFilter, EndedReply};
pub use retention::{
    Candidates, MEDIA_UPLOADS, PruneOp, Pruned, PrunedTable, SEEN_WAMIDS, wamid_digest,
};
pub use rows::*;
pub use secrets::{StoredSecretRow, peek_stored_secret_names};
pub use sql::GROUP_COMMIT_MARK;
pub use sqlite_writer::{SqliteFile, SqliteWriter};

use crate::config::Storage as StorageConfig;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// A storage failure; the webhook that hit it is answered 503 so Meta delivers it again.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "storage url {0:?} is an in-memory SQLite database, which loses every message on a \
         restart: point it at a file (sqlite://data/gateway.db)"
    )]
    InMemory(String),
    #[error("storage migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("storage url {0:?} is neither sqlite://… nor postgres://…")]
    UnsupportedUrl(String),
    #[error(
        "the PostgreSQL database {name:?} (storage.url) does not exist, and user {user:?} could \
         not create it ({why}): create it as a superuser with `CREATE DATABASE \"{name}\" \
         OWNER \"{user}\";` (or `createdb -O {user} {name}`), or give the user CREATEDB, then \
         start again"
    )]
    NoDatabase {
        name: String,
        user: String,
        why: String,
    },
    #[error("cannot create the directory of the SQLite file {path}: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use the lock file {path}: {source}")]
    LockFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the SQLite database {database} is already in use by {holder} (it holds {lock}): SQLite \
         serves one gateway process; stop the other one, or use PostgreSQL (storage.url: \
         postgres://…) to run several replicas"
    )]
    InUse {
        database: String,
        lock: String,
        holder: String,
    },
    #[error("storage writer has stopped")]
    WriterGone,
    #[error("{0}")]
    Batch(String),
}

impl StoreError {
    /// The same error for another waiter on the same failed batch.
    pub fn shallow_clone(&self) -> StoreError {
        StoreError::Batch(self.to_string())
    }
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A handle to the database; cheap to clone. Reads use `pool`; every write goes through the
/// group-commit writer: on PostgreSQL through `write_pool`, on SQLite through the one connection
/// the writer opens itself ([`SqliteWriter`]), so writers queue in the gateway instead of sleeping
/// in SQLite's busy handler. (`write_pool` on SQLite runs migrations and rare writes by commands.)
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    write_pool: Pool,
    /// SQLite: the file the writer opens.
    sqlite: Option<std::sync::Arc<SqliteFile>>,
    /// SQLite: this process's exclusive lock on the database (one replica per file).
    lock: Option<std::sync::Arc<lock::FileLock>>,
    /// PostgreSQL: this replica's id, the owner named in the leases it takes.
    replica: std::sync::Arc<str>,
    /// This database's installation id (generated once, by migration 8), sent in every
    /// `biz_opaque_callback_data` so a status from another database settles nothing here.
    installation: std::sync::Arc<str>,
    /// PostgreSQL: connections for the statements every message pays, without the pool's
    /// pings (`pgconn.rs`), and the group-commit writer's own connection.
    pg: Option<std::sync::Arc<PgLinks>>,
    /// PostgreSQL: how long a conversation lease taken or renewed lasts, in milliseconds.
    lease_ms: i64,
}

/// PostgreSQL connections kept outside sqlx's pool (see `pgconn.rs`).
#[derive(Debug)]
struct PgLinks {
    /// The conversation reads and send checks.
    hot: pgconn::PgConns,
    /// The group commit's: one, as there is one writer.
    writer: pgconn::PgConns,
    /// How this process's clock relates to the database's, for the send turns.
    clock: dbclock::DbClock,
    /// The send turns asked for at the same time, taken in one statement.
    slots: batches::Batches<send_slots::Request>,
    /// The turns' reads made at the same time, in one statement.
    turn_reads: batches::Batches<cluster::TurnRead>,
    /// The opt-out reads right before sends, made at the same time, in one statement.
    allowed_reads: batches::Batches<conversation::AllowedRead>,
}

/// Runs the same sqlx code against whichever pool this store holds.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        on_pool!(@ &$store.pool, |$pool| $body)
    };
    (write $store:expr, |$pool:ident| $body:expr) => {
        on_pool!(@ &$store.write_pool, |$pool| $body)
    };
    (@ $which:expr, |$pool:ident| $body:expr) => {
        match $which {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// How often the SQLite write-ahead log is copied into the database. A checkpoint writes each
/// page the log holds once, however many commits wrote it meanwhile: the pages every commit
/// touches (the tables' and indexes' last pages, the B-trees' upper levels) and those that
/// messages hit again within the interval are written once per interval. At 2,000 msg/s
/// (development machine, README "Storage") 4 s wrote 10.7 KiB per message against 12.4 with
/// 1 s (2 s: 11.3), for the same CPU and latency; the log then peaks near 77 MB instead of 20.
pub(crate) const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(4);

/// Prepared statements the PostgreSQL writer's connection keeps (sqlx keeps 100 by default).
const WRITER_STATEMENTS: usize = 1000;

/// The page size of a SQLite file this gateway creates (SQLite's default is 4 KiB). A commit
/// writes every page it touched, whole, to the log, and each answered message touches random
/// pages of a few B-trees: 2 KiB pages write 29% fewer bytes per message for about 1 ms more ack
/// p99, and 3–7% fewer replies a second with the cores saturated (README "Storage"). A file keeps
/// the page size it was created with.
pub(crate) const SQLITE_PAGE_SIZE: u32 = 2048;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Connects for a gateway process (creating a SQLite file and its directory if needed) and
    /// runs migrations. On SQLite it holds the file's lock for as long as the store lives, so a
    /// second gateway on the same file is refused.
    pub async fn connect(cfg: &StorageConfig) -> Result<Self, StoreError> {
        Self::connect_as(cfg, true).await
    }

    /// Connects for a short-lived command (`signup`, `number`, `secret`) that may run next to
    /// the gateway serving the same database: SQLite lets other connections in (they wait on
    /// its busy timeout), so only gateways take the exclusive lock.
    pub async fn connect_for_command(cfg: &StorageConfig) -> Result<Self, StoreError> {
        Self::connect_as(cfg, false).await
    }

    async fn connect_as(cfg: &StorageConfig, gateway: bool) -> Result<Self, StoreError> {
        let url = cfg.url.as_str();
        let mut lock = None;
        let mut sqlite = None;
        let mut pg = None;
        let (pool, write_pool) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            let file = path.split('?').next().unwrap_or(path);
            if let Some(dir) = std::path::Path::new(file).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                    path: path.to_owned(),
                    source,
                })?;
            }
            if gateway && file != ":memory:" && !file.is_empty() {
                lock = Some(std::sync::Arc::new(lock::FileLock::acquire(
                    std::path::Path::new(file),
                )?));
            }
            let in_memory = file == ":memory:" || file.is_empty() || url.contains("mode=memory");
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .page_size(SQLITE_PAGE_SIZE)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a commit is on disk before the webhook is answered 200. Group commit
                // amortises the fsync over every message in the batch.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(cfg.busy_timeout.get())
                .foreign_keys(true)
                // Statement journals (a multi-row statement inside the group commit's
                // transaction keeps one, to undo itself alone) stay in memory instead of
                // spilling to a temporary file; they are discarded at commit either way.
                .pragma("temp_store", "MEMORY");
            if !in_memory {
                sqlite = Some(std::sync::Arc::new(SqliteFile {
                    path: opts.get_filename().to_owned(),
                    busy_timeout: cfg.busy_timeout.get(),
                }));
            }
            // An embedded database cannot lose its connection: no ping (a round trip to the
            // connection's thread) before every use.
            let write_pool = SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .connect_with(opts.clone().pragma("wal_autocheckpoint", "0"))
                .await?;
            if gateway && !in_memory {
                retention::use_incremental_vacuum(&write_pool).await?;
            }
            let read_pool = SqlitePoolOptions::new()
                .max_connections(cfg.max_connections.max(2))
                .test_before_acquire(false)
                .connect_with(opts)
                .await?;
            (Pool::Sqlite(read_pool), Pool::Sqlite(write_pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let lock_ms = cfg.busy_timeout.get().as_millis();
            let opts = PgConnectOptions::from_str(url)?
                .options([("lock_timeout", format!("{lock_ms}ms"))]);
            let pool = PgPoolOptions::new()
                .max_connections(cfg.max_connections.max(2))
                .acquire_timeout(
                    cfg.busy_timeout
                        .get()
                        .max(std::time::Duration::from_secs(1)),
                );
            let pool = pgcreate::connect_creating(pool, &opts).await?;
            pg = Some(std::sync::Arc::new(PgLinks {
                // Each statement on these connections (the batched reads and the send turns)
                // finds its rows by key, over arrays of keys: one plan serves any array. Left to
                // choose, PostgreSQL planned the turn's opt-out read anew on every call (a custom
                // plan for each array looked cheaper than the generic one). The group commit's
                // statements keep the choice: generic plans made them slower.
                hot: pgconn::PgConns::new(
                    opts.clone()
                        .options([("plan_cache_mode", "force_generic_plan")]),
                    cfg.max_connections.max(2) as usize,
                ),
                // The group commit's multi-row statements have one text per row count: room
                // for each count a batch commonly has, so each is prepared once, not again
                // every time another count pushed it out.
                writer: pgconn::PgConns::new(opts.statement_cache_capacity(WRITER_STATEMENTS), 1),
                clock: dbclock::DbClock::default(),
                slots: Default::default(),
                turn_reads: Default::default(),
                allowed_reads: Default::default(),
            }));
            (Pool::Postgres(pool.clone()), Pool::Postgres(pool))
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let store = Self {
            pool,
            write_pool,
            sqlite,
            lock,
            replica: std::sync::Arc::from("local"),
            installation: std::sync::Arc::from(""),
            pg,
            lease_ms: cfg.lease.get().as_millis() as i64,
        };
        store.migrate().await?;
        let installation: String = on_pool!(store, |p| {
            sqlx::query_scalar("SELECT installation_id FROM installation WHERE id = 1")
                .fetch_one(p)
                .await
        })?;
        Ok(Self {
            installation: std::sync::Arc::from(installation),
            ..store
        })
    }

    /// Opens the SQLite writer's connection (`None` on PostgreSQL, which the writer reaches
    /// through [`Store::apply`]).
    pub fn open_sqlite_writer(&self) -> Result<Option<SqliteWriter>, StoreError> {
        match (&self.write_pool, &self.sqlite) {
            (Pool::Postgres(_), _) => Ok(None),
            (Pool::Sqlite(_), Some(file)) => SqliteWriter::open(file, &self.installation).map(Some),
            (Pool::Sqlite(p), None) => Err(StoreError::InMemory(
                p.connect_options().get_filename().display().to_string(),
            )),
        }
    }

    /// Names this replica in the leases it takes (PostgreSQL).
    pub fn with_replica(mut self, replica: &str) -> Self {
        self.replica = std::sync::Arc::from(replica);
        self
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// This database's installation id, which `biz_opaque_callback_data` carries.
    pub fn installation(&self) -> &str {
        &self.installation
    }

    /// Whether several replicas may share this database (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match &self.write_pool {
            Pool::Sqlite(p) => migrate::sqlite().run(p).await?,
            Pool::Postgres(p) => migrate::postgres().run(p).await?,
        }
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        on_pool!(self, |p| p.close().await);
        on_pool!(write self, |p| p.close().await);
        if let Some(pg) = &self.pg {
            pg.hot.close().await;
            pg.writer.close().await;
        }
        if let Some(lock) = &self.lock {
            lock.release();
        }
    }

    /// Copies the SQLite write-ahead log into the database every [`CHECKPOINT_EVERY`], until
    /// `stop`, without holding anyone up (PASSIVE), then asks the writer to start the log over
    /// (see [`SqliteWriter::restart_wal`]). The writer's connection does not checkpoint by
    /// itself, so commits never pay for the copying.
    pub async fn checkpoint_loop(
        &self,
        restart: std::sync::Arc<AtomicBool>,
        stop: CancellationToken,
    ) {
        let Pool::Sqlite(p) = &self.pool else { return };
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(p)
                .await
            {
                Ok(_) => restart.store(true, Ordering::Relaxed),
                Err(e) => tracing::debug!(error = %e, "WAL checkpoint did not run"),
            }
        }
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        on_pool!(self, |p| sqlx::query("SELECT 1").execute(p).await.is_ok())
    }
}
