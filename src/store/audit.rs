//! Rows of the audit log (`audit_log`): who did what, when, and how it ended. Entries are rare
//! (operator actions, reloads, applied changes) and may come from a CLI process with no writer
//! running, so they go straight to the write pool, as the onboarding rows do.

use super::{Store, StoreError, now_ms, on_pool};

/// What was done; stored as a stable string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum AuditAction {
    /// A number taken out of service from the admin API.
    NumberDisconnect,
    /// A number put back into service.
    NumberConnect,
    /// A conversation handed to a person.
    ConversationPause,
    /// A conversation given back to the agent.
    ConversationResume,
    /// An Embedded Signup code exchanged and its token stored.
    Signup,
    /// A verification code requested for a number.
    NumberRequestCode,
    /// A number's verification code submitted.
    NumberVerifyCode,
    /// A number registered with the Cloud API.
    NumberRegister,
    /// A secret stored encrypted for `{ stored: NAME }`.
    SecretPut,
    /// A customer's data erased.
    CustomerErase,
    /// A control-loop pass run on demand.
    ReconcileRun,
    /// Changes made at Meta to match the file (the reconciler or `wa-gateway apply`).
    ReconcileApply,
    /// The configuration reloaded (or a reload refused).
    ConfigReload,
    /// A dead letter parsed again and ingested.
    DeadLetterReplay,
    /// A failed or expired reply queued to be sent again.
    ReplyRetry,
}

impl AuditAction {
    /// Every action, for parsing.
    const ALL: [AuditAction; 15] = [
        Self::NumberDisconnect,
        Self::NumberConnect,
        Self::ConversationPause,
        Self::ConversationResume,
        Self::Signup,
        Self::NumberRequestCode,
        Self::NumberVerifyCode,
        Self::NumberRegister,
        Self::SecretPut,
        Self::CustomerErase,
        Self::ReconcileRun,
        Self::ReconcileApply,
        Self::ConfigReload,
        Self::DeadLetterReplay,
        Self::ReplyRetry,
    ];

    /// The stable string stored in the database and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NumberDisconnect => "number.disconnect",
            Self::NumberConnect => "number.connect",
            Self::ConversationPause => "conversation.pause",
            Self::ConversationResume => "conversation.resume",
            Self::Signup => "signup",
            Self::NumberRequestCode => "number.request_code",
            Self::NumberVerifyCode => "number.verify_code",
            Self::NumberRegister => "number.register",
            Self::SecretPut => "secret.put",
            Self::CustomerErase => "customer.erase",
            Self::ReconcileRun => "reconcile.run",
            Self::ReconcileApply => "reconcile.apply",
            Self::ConfigReload => "config.reload",
            Self::DeadLetterReplay => "dead_letter.replay",
            Self::ReplyRetry => "reply.retry",
        }
    }

    /// Parses a stored action.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// How an audited action ended; stored as a stable string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// Done.
    Ok,
    /// Refused before anything changed (bad input, a rule said no).
    Refused,
    /// Tried and failed (storage or Meta failed).
    Failed,
}

impl AuditOutcome {
    /// The stable string stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored outcome.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ok" => Self::Ok,
            "refused" => Self::Refused,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// One entry to record. `detail` says what changed or why it did not; it never holds a secret.
#[derive(Clone, Debug)]
pub struct NewAuditEntry {
    pub actor: String,
    pub action: AuditAction,
    pub target: Option<String>,
    pub outcome: AuditOutcome,
    pub detail: Option<String>,
}

/// One stored entry.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub actor: String,
    /// `None` for an action this version does not know (written by a newer one).
    pub action: Option<AuditAction>,
    pub action_text: String,
    pub target: Option<String>,
    pub outcome: Option<AuditOutcome>,
    pub detail: Option<String>,
}

type Row = (
    i64,
    i64,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
);

impl Store {
    /// Appends `entry` to the audit log, now.
    pub async fn record_audit(&self, entry: &NewAuditEntry) -> Result<(), StoreError> {
        let now = now_ms();
        on_pool!(write self, |pool| {
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, target, outcome, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(now)
            .bind(&entry.actor)
            .bind(entry.action.as_str())
            .bind(&entry.target)
            .bind(entry.outcome.as_str())
            .bind(&entry.detail)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// The entries made at or after `since_ms`, newest first, at most `limit`.
    pub async fn audit_entries(
        &self,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let sql = "SELECT id, at, actor, action, target, outcome, detail FROM audit_log \
                   WHERE at >= $1 ORDER BY id DESC LIMIT $2";
        let rows: Vec<Row> = on_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(since_ms)
                .bind(limit)
                .fetch_all(pool)
                .await
        })?;
        Ok(rows
            .into_iter()
            .map(
                |(id, at, actor, action, target, outcome, detail)| AuditEntry {
                    id,
                    at,
                    actor,
                    action: AuditAction::parse(&action),
                    action_text: action,
                    target,
                    outcome: AuditOutcome::parse(&outcome),
                    detail,
                },
            )
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_through_their_stable_strings() {
        for a in AuditAction::ALL {
            assert_eq!(AuditAction::parse(a.as_str()), Some(a));
        }
        for o in [
            AuditOutcome::Ok,
            AuditOutcome::Refused,
            AuditOutcome::Failed,
        ] {
            assert_eq!(AuditOutcome::parse(o.as_str()), Some(o));
        }
    }
}
