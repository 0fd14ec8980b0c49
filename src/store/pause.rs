//! Paused conversations (human handoff) as storage sees them: the rows, their reads, the
//! writer's operations (a pause with its notification, a resume, the notifications' outcomes),
//! and the in-memory set one process decides on. Knows no HTTP and no config.

use super::sql::WriteTx;
use super::{Store, StoreError, on_pool};
use std::collections::HashMap;

/// Who paused a conversation; stored as a stable string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PausedBy {
    /// A person through the admin API or the status page.
    Operator,
    /// A person with `wa-gateway conversation pause`.
    Cli,
    /// The number's agent, answering with `handoff`.
    Agent,
    /// A person answering from the WhatsApp Business app on the same number (an echo).
    BusinessApp,
    /// Meta's conversation routing handed the conversation to another app.
    Handover,
}

impl PausedBy {
    /// The stable string stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Cli => "cli",
            Self::Agent => "agent",
            Self::BusinessApp => "business_app",
            Self::Handover => "handover",
        }
    }

    /// The value `as_str` stored; an unknown string (a newer gateway's) reads as an operator.
    pub fn parse(s: &str) -> Self {
        match s {
            "cli" => Self::Cli,
            "agent" => Self::Agent,
            "business_app" => Self::BusinessApp,
            "handover" => Self::Handover,
            _ => Self::Operator,
        }
    }
}

/// A conversation's pause: until when (ms since the epoch), why and by whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pause {
    pub phone_number_id: String,
    pub customer: String,
    pub paused_at: i64,
    pub paused_until: i64,
    pub reason: Option<String>,
    pub by: PausedBy,
}

impl Pause {
    /// Whether the pause is still in force at `now` (ms): it ends by itself at `paused_until`.
    pub fn holds_at(&self, now: i64) -> bool {
        now < self.paused_until
    }
}

/// What became of one attempt to deliver a handoff notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notified {
    /// The receiver answered 2xx.
    Sent,
    /// It failed; try again at `at` (ms).
    Retry { at: i64, error: String },
    /// It failed for the last time (or cannot be sent any more).
    Failed { error: String },
}

/// A write of the handoff, applied by the group-commit writer.
#[derive(Debug)]
pub enum HandoffOp {
    /// Pause a conversation (replacing a pause in force) and queue its notification body, if
    /// one is to be sent, in the same transaction.
    Pause {
        pause: Pause,
        notification: Option<String>,
    },
    /// End a conversation's pause now.
    Resume {
        phone_number_id: String,
        customer: String,
    },
    /// Forget pauses that ended by themselves before `now` (they already hold no more).
    ForgetEnded { now: i64 },
    /// The outcome of one delivery attempt of notification `id`.
    Notified { id: i64, outcome: Notified },
}

/// A queued handoff notification, as the sender reads it.
#[derive(Clone, Debug)]
pub struct Notification {
    pub id: i64,
    pub phone_number_id: String,
    pub customer: String,
    /// The JSON body, signed and sent as it is.
    pub body: String,
    /// Attempts made so far.
    pub attempts: i64,
}

/// Applies one handoff operation inside the writer's open transaction.
pub(super) async fn apply_handoff(
    tx: &mut impl WriteTx,
    op: &HandoffOp,
    now: i64,
) -> Result<(), StoreError> {
    match op {
        HandoffOp::Pause {
            pause,
            notification,
        } => {
            tx.run(
                "INSERT INTO paused_conversations (phone_number_id, customer, paused_at, \
                 paused_until, reason, paused_by) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (phone_number_id, customer) DO UPDATE SET \
                 paused_at = excluded.paused_at, paused_until = excluded.paused_until, \
                 reason = excluded.reason, paused_by = excluded.paused_by",
                [
                    (&pause.phone_number_id).into(),
                    (&pause.customer).into(),
                    pause.paused_at.into(),
                    pause.paused_until.into(),
                    (&pause.reason).into(),
                    pause.by.as_str().into(),
                ],
            )
            .await?;
            if let Some(body) = notification {
                tx.run(
                    "INSERT INTO handoff_notifications (phone_number_id, customer, body, state, \
                     attempts, next_attempt_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4)",
                    [
                        (&pause.phone_number_id).into(),
                        (&pause.customer).into(),
                        body.as_str().into(),
                        now.into(),
                    ],
                )
                .await?;
            }
        }
        HandoffOp::Resume {
            phone_number_id,
            customer,
        } => {
            tx.run(
                "DELETE FROM paused_conversations WHERE phone_number_id = $1 AND customer = $2",
                [phone_number_id.into(), customer.into()],
            )
            .await?;
        }
        HandoffOp::ForgetEnded { now } => {
            tx.run(
                "DELETE FROM paused_conversations WHERE paused_until <= $1",
                [(*now).into()],
            )
            .await?;
        }
        HandoffOp::Notified { id, outcome } => notified(tx, *id, outcome, now).await?,
    }
    Ok(())
}

/// Records one delivery attempt's outcome; only a pending notification changes.
async fn notified(
    tx: &mut impl WriteTx,
    id: i64,
    outcome: &Notified,
    now: i64,
) -> Result<(), StoreError> {
    let (state, next, error) = match outcome {
        Notified::Sent => ("sent", now, None),
        Notified::Retry { at, error } => ("pending", *at, Some(error.as_str())),
        Notified::Failed { error } => ("failed", now, Some(error.as_str())),
    };
    tx.run(
        "UPDATE handoff_notifications SET state = $1, attempts = attempts + 1, \
         next_attempt_at = $2, last_error = $3, updated_at = $4 \
         WHERE id = $5 AND state = 'pending'",
        [
            state.into(),
            next.into(),
            error.into(),
            now.into(),
            id.into(),
        ],
    )
    .await?;
    Ok(())
}

pub(super) type PauseRow = (String, String, i64, i64, Option<String>, String);

/// A pause from its stored columns.
pub(super) fn pause_from(
    (phone_number_id, customer, paused_at, paused_until, reason, by): PauseRow,
) -> Pause {
    Pause {
        phone_number_id,
        customer,
        paused_at,
        paused_until,
        reason,
        by: PausedBy::parse(&by),
    }
}

const PAUSE_COLUMNS: &str = "phone_number_id, customer, paused_at, paused_until, reason, paused_by FROM paused_conversations";

impl Store {
    /// The stored pause of a conversation, in force or ended by itself (one primary-key read).
    pub async fn pause_of(
        &self,
        phone_number_id: &str,
        customer: &str,
    ) -> Result<Option<Pause>, StoreError> {
        let sql = format!("SELECT {PAUSE_COLUMNS} WHERE phone_number_id = $1 AND customer = $2");
        let row: Option<PauseRow> = on_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(phone_number_id)
                .bind(customer)
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(pause_from))
    }

    /// The pauses in force at `now` (ms), of one number or all, the longest-paused first.
    pub async fn pauses(&self, number: Option<&str>, now: i64) -> Result<Vec<Pause>, StoreError> {
        let sql = format!(
            "SELECT {PAUSE_COLUMNS} WHERE paused_until > $1 AND ($2 = '' OR phone_number_id = $2) \
             ORDER BY paused_at, phone_number_id, customer"
        );
        let rows: Vec<PauseRow> = on_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(now)
                .bind(number.unwrap_or(""))
                .fetch_all(pool)
                .await
        })?;
        Ok(rows.into_iter().map(pause_from).collect())
    }

    /// Up to `limit` pending notifications due at `now` (ms), oldest first.
    pub async fn due_notifications(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        let rows: Vec<(i64, String, String, String, i64)> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, phone_number_id, customer, body, attempts FROM handoff_notifications \
                 WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY id LIMIT $2",
            )
            .bind(now)
            .bind(limit as i64)
            .fetch_all(pool)
            .await
        })?;
        Ok(rows
            .into_iter()
            .map(
                |(id, phone_number_id, customer, body, attempts)| Notification {
                    id,
                    phone_number_id,
                    customer,
                    body,
                    attempts,
                },
            )
            .collect())
    }

    /// When the next pending notification is due (ms), if one is.
    pub async fn next_notification_at(&self) -> Result<Option<i64>, StoreError> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_scalar(
                "SELECT MIN(next_attempt_at) FROM handoff_notifications WHERE state = 'pending'",
            )
            .fetch_one(pool)
            .await?)
        })
    }
}

/// The pauses of one process, held in memory so a turn never asks storage on a single replica
/// (SQLite: every pause and resume goes through this process). Loaded at start; changed right
/// after the commit that records the change. A pause ends by itself at its time, so nothing
/// has to remove it then. Cheap to clone: clones share the set.
#[derive(Clone, Default)]
pub struct Paused {
    set: std::sync::Arc<std::sync::Mutex<PauseSet>>,
}

/// Until when (ms) and by whom each conversation (number, customer) is paused.
type PauseSet = HashMap<(String, String), (i64, PausedBy)>;

impl Paused {
    fn lock(&self) -> std::sync::MutexGuard<'_, PauseSet> {
        self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Who paused the conversation, if it is paused at `now` (ms).
    pub fn by(&self, phone_number_id: &str, customer: &str, now: i64) -> Option<PausedBy> {
        self.lock()
            .get(&(phone_number_id.to_owned(), customer.to_owned()))
            .filter(|(until, _)| now < *until)
            .map(|(_, by)| *by)
    }

    /// Whether the conversation is paused at `now` (ms).
    pub fn holds(&self, phone_number_id: &str, customer: &str, now: i64) -> bool {
        self.by(phone_number_id, customer, now).is_some()
    }

    /// Records a committed pause.
    pub fn set(&self, pause: &Pause) {
        let key = (pause.phone_number_id.clone(), pause.customer.clone());
        let mut set = self.lock();
        // Forget the ones that ended by themselves, so the set holds what is in force.
        set.retain(|_, (until, _)| *until > pause.paused_at);
        set.insert(key, (pause.paused_until, pause.by));
    }

    /// Records a committed resume.
    pub fn clear(&self, phone_number_id: &str, customer: &str) {
        self.lock()
            .remove(&(phone_number_id.to_owned(), customer.to_owned()));
    }

    /// Loads the pauses in force from storage (at start, before any turn).
    pub async fn load(&self, store: &Store) -> Result<usize, StoreError> {
        let pauses = store.pauses(None, super::now_ms()).await?;
        let n = pauses.len();
        *self.lock() = pauses
            .into_iter()
            .map(|p| ((p.phone_number_id, p.customer), (p.paused_until, p.by)))
            .collect();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_paused_reads_back_as_stored() {
        for by in [
            PausedBy::Operator,
            PausedBy::Cli,
            PausedBy::Agent,
            PausedBy::BusinessApp,
            PausedBy::Handover,
        ] {
            assert_eq!(PausedBy::parse(by.as_str()), by);
            let json = serde_json::to_value(by).unwrap();
            assert_eq!(json, by.as_str());
        }
    }

    #[test]
    fn a_pause_ends_by_itself_at_its_time() {
        let pause = Pause {
            phone_number_id: "1".into(),
            customer: "2".into(),
            paused_at: 1_000,
            paused_until: 2_000,
            reason: None,
            by: PausedBy::Agent,
        };
        assert!(pause.holds_at(1_999));
        assert!(!pause.holds_at(2_000));
        let set = Paused::default();
        set.set(&pause);
        assert!(set.holds("1", "2", 1_500));
        assert_eq!(set.by("1", "2", 1_500), Some(PausedBy::Agent));
        assert!(!set.holds("1", "2", 2_000));
        assert!(!set.holds("1", "3", 1_500));
        set.clear("1", "2");
        assert!(!set.holds("1", "2", 1_500));
    }
}
