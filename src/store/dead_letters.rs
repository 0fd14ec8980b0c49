//! Rows of `dead_letters`: signed bodies that were not a Cloud API envelope when they came, and
//! their replays (when each was last parsed again, how that ended). Reads are off the writer; a
//! replay's mark is written in the commit of the rows it brings (`WebhookWrite::replay`).

use super::sql::WriteTx;
use super::{Store, StoreError, on_pool};

/// How a dead letter's last replay ended; stored as a stable string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayOutcome {
    /// It parsed: its messages and statuses went through the normal ingest path.
    Ingested,
    /// It is still not an envelope this version reads.
    Unreadable,
}

impl ReplayOutcome {
    /// The stable string stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingested => "ingested",
            Self::Unreadable => "unreadable",
        }
    }

    /// Parses a stored outcome.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ingested" => Some(Self::Ingested),
            "unreadable" => Some(Self::Unreadable),
            _ => None,
        }
    }
}

/// The mark a replay leaves on its dead letter.
#[derive(Clone, Debug)]
pub struct ReplayMark {
    pub id: i64,
    pub outcome: ReplayOutcome,
    /// What the body held (or why it is still unreadable).
    pub detail: String,
}

/// One stored dead letter.
#[derive(Clone, Debug)]
pub struct DeadLetterRow {
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub received_at: i64,
    /// Why it could not be parsed when it came.
    pub reason: String,
    pub body: String,
    /// When it was last replayed (ms since the epoch).
    pub replayed_at: Option<i64>,
    pub replay_outcome: Option<ReplayOutcome>,
    pub replay_detail: Option<String>,
    pub replays: i64,
}

type Row = (
    i64,
    i64,
    String,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    i64,
);

const COLUMNS: &str =
    "id, received_at, reason, body, replayed_at, replay_outcome, replay_detail, replays";

fn from_row(r: Row) -> DeadLetterRow {
    DeadLetterRow {
        id: r.0,
        received_at: r.1,
        reason: r.2,
        body: r.3,
        replayed_at: r.4,
        replay_outcome: r.5.as_deref().and_then(ReplayOutcome::parse),
        replay_detail: r.6,
        replays: r.7,
    }
}

/// Marks dead letter `r.id` replayed now, inside the writer's transaction.
pub(super) async fn mark(
    tx: &mut impl WriteTx,
    r: &ReplayMark,
    now: i64,
) -> Result<(), StoreError> {
    tx.run(
        "UPDATE dead_letters SET replayed_at = $1, replay_outcome = $2, replay_detail = $3, \
         replays = replays + 1 WHERE id = $4",
        [
            now.into(),
            r.outcome.as_str().into(),
            r.detail.as_str().into(),
            r.id.into(),
        ],
    )
    .await?;
    Ok(())
}

impl Store {
    /// Dead letters, newest first, at most `limit`; with `pending`, only those never ingested
    /// (not replayed, or still unreadable at their last replay).
    pub async fn dead_letters(
        &self,
        pending: bool,
        limit: i64,
    ) -> Result<Vec<DeadLetterRow>, StoreError> {
        let filter = if pending {
            "WHERE replay_outcome IS NULL OR replay_outcome <> 'ingested'"
        } else {
            ""
        };
        let sql = format!("SELECT {COLUMNS} FROM dead_letters {filter} ORDER BY id DESC LIMIT $1");
        let rows: Vec<Row> = on_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(limit).fetch_all(pool).await
        })?;
        Ok(rows.into_iter().map(from_row).collect())
    }

    /// One dead letter.
    pub async fn dead_letter(&self, id: i64) -> Result<Option<DeadLetterRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1");
        let row: Option<Row> = on_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await
        })?;
        Ok(row.map(from_row))
    }
}
