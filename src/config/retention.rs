//! `storage.retention`: how long stored messages and the wamids that recognise Meta's
//! redeliveries are kept, and how often pruning runs; its rules and its load-time warnings.

use super::duration::Duration;
use super::error::Issue;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);
/// Meta redelivers an unacknowledged webhook for up to 7 days; a day more covers clock skew and
/// the last retries.
pub const MIN_DEDUPE: std::time::Duration = std::time::Duration::from_secs(8 * 24 * 3600);

/// What is deleted, and when (see the README's "Data lifecycle").
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Inbound messages, replies, status events, dead letters and opt-out events older than this
    /// are deleted. Rows still open (a message not yet handled, a reply not yet settled) stay
    /// until they are; a conversation's last-message time (the 24-hour window) and a customer's
    /// opt-out stay. Under 1h is accepted with a warning (for tests).
    pub messages: Duration,
    /// The ids (wamids, as SHA-256 digests) of deleted inbound messages are kept this long, so a
    /// redelivery from Meta (up to 7 days) is still recognised and not answered twice. At
    /// least 8d.
    pub dedupe: Duration,
    /// How often pruning runs (on the leader when several replicas share PostgreSQL); at
    /// least 1s.
    pub interval: Duration,
    /// Audit log entries (who did what, when) older than this are deleted; more than 0s.
    pub audit: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            messages: Duration::from_secs(30 * 24 * 3600),
            dedupe: Duration(MIN_DEDUPE),
            interval: Duration::from_secs(600),
            audit: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// Broken rules of `storage.retention`.
pub fn check(r: &Retention) -> Vec<Issue> {
    let mut out = Vec::new();
    let mut issue = |path: &str, message: &str| {
        out.push(Issue {
            path: format!("storage.retention.{path}"),
            at_key: false,
            message: message.to_owned(),
        })
    };
    if r.messages.get().is_zero() {
        issue(
            "messages",
            "must be more than 0s: a message would be deleted before its turn ran (default 30d)",
        );
    }
    if r.dedupe.get() < MIN_DEDUPE {
        issue(
            "dedupe",
            "must be at least 8d: Meta redelivers a webhook for up to 7 days, and a redelivered \
             message whose id was forgotten would reach the agent twice (default 8d)",
        );
    }
    if r.audit.get().is_zero() {
        issue(
            "audit",
            "must be more than 0s: an audit entry would be deleted as it is written (default 365d)",
        );
    }
    if r.interval.get() < std::time::Duration::from_secs(1) {
        issue(
            "interval",
            "must be at least 1s: pruning runs this often (default 10m)",
        );
    }
    out
}

/// Settings that are valid but unusual: `(field path, why)`, logged as warnings at load. A
/// message retention under an hour is meant for tests: it deletes a conversation's history
/// before the agent's next turn could use it.
pub fn warnings(r: &Retention) -> Vec<(String, String)> {
    let d = r.messages.get();
    if d.is_zero() || d >= HOUR {
        return Vec::new();
    }
    vec![(
        "storage.retention.messages".to_owned(),
        format!(
            "{} is under 1h: fine for tests; in production the agents lose the conversation's \
             history that soon",
            humantime::format_duration(d)
        ),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(messages: u64, dedupe: u64, interval: u64) -> Retention {
        Retention {
            messages: Duration::from_secs(messages),
            dedupe: Duration::from_secs(dedupe),
            interval: Duration::from_secs(interval),
            ..Retention::default()
        }
    }

    #[test]
    fn rules_and_warnings_by_case() {
        let day = 24 * 3600;
        let cases: &[(Retention, &[&str], &[&str])] = &[
            (Retention::default(), &[], &[]),
            (with(2, 8 * day, 1), &[], &["storage.retention.messages"]),
            (with(0, 8 * day, 600), &["storage.retention.messages"], &[]),
            (
                with(3600, 7 * day, 3600),
                &["storage.retention.dedupe"],
                &[],
            ),
            (with(3600, 9 * day, 0), &["storage.retention.interval"], &[]),
        ];
        for (r, issues, warned) in cases {
            let got: Vec<String> = check(r).into_iter().map(|i| i.path).collect();
            assert_eq!(&got, issues, "{r:?}");
            let got: Vec<String> = warnings(r).into_iter().map(|(p, _)| p).collect();
            assert_eq!(&got, warned, "{r:?}");
        }
    }
}
