//! `--pg-stats`: the statements the gateway ran on PostgreSQL per message, from the server's
//! `pg_stat_statements`: reset before the load, read after the drain. A statement is one round
//! trip; those the group-commit writer runs carry [`GROUP_COMMIT_MARK`], and `BEGIN`/`COMMIT`
//! belong to it too (the writer is the only one that opens transactions on PostgreSQL), so the
//! report tells the round trips amortised over a batch from those each message pays alone.

use crate::store::GROUP_COMMIT_MARK;
use serde::Serialize;
use sqlx::Connection;
use std::fmt::Write;

/// How many statements the report lists.
const TOP: usize = 12;

/// A connection to the gateway's database, with `pg_stat_statements` reset; or why there is none.
pub enum Probe {
    Ready(Box<sqlx::PgConnection>),
    Unavailable(String),
}

impl Probe {
    /// Connects to `url` (the gateway's database), makes sure the extension is there and
    /// resets its counters. A failure is kept as the reason, reported instead of the figures.
    pub async fn start(url: &str) -> Probe {
        let setup = async {
            let mut c = sqlx::PgConnection::connect(url).await?;
            sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .execute(&mut c)
                .await?;
            sqlx::query("SELECT pg_stat_statements_reset()")
                .execute(&mut c)
                .await?;
            Ok::<_, sqlx::Error>(c)
        };
        match setup.await {
            Ok(c) => Probe::Ready(Box::new(c)),
            Err(e) => Probe::Unavailable(e.to_string()),
        }
    }

    /// Reads the counters since the reset, per message of `messages`.
    pub async fn finish(self, messages: u64) -> PgStats {
        let mut c = match self {
            Probe::Ready(c) => c,
            Probe::Unavailable(reason) => return PgStats::unavailable(reason),
        };
        let rows: Result<Vec<(String, i64)>, sqlx::Error> = sqlx::query_as(
            "SELECT query, calls FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC",
        )
        .fetch_all(&mut *c)
        .await;
        let _ = c.close().await;
        match rows {
            Ok(rows) => PgStats::of(rows, messages),
            Err(e) => PgStats::unavailable(e.to_string()),
        }
    }
}

/// Statements per message, as reported.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PgStats {
    /// Why nothing was measured (`pg_stat_statements` not loaded, no privilege, …).
    pub unavailable: Option<String>,
    /// The messages the counts are divided by (those acknowledged).
    pub messages: u64,
    /// Every statement the gateway ran, per message.
    pub per_message: f64,
    /// Those outside the group commit, per message: what each message pays alone.
    pub outside_per_message: f64,
    /// Those inside group commits (with `BEGIN` and `COMMIT`), per message.
    pub group_commit_per_message: f64,
    /// Group commits (transactions).
    pub group_commits: u64,
    /// The statements run most often.
    pub top: Vec<Statement>,
}

/// One statement's count.
#[derive(Clone, Debug, Serialize)]
pub struct Statement {
    pub calls: u64,
    pub per_message: f64,
    /// Run by the group-commit writer.
    pub group_commit: bool,
    /// Its text, whitespace folded, cut at 120 characters.
    pub query: String,
}

/// Whether a statement's text is one the group-commit writer runs.
fn in_group_commit(query: &str) -> bool {
    let q = query.trim_start();
    q.starts_with(GROUP_COMMIT_MARK)
        || ["BEGIN", "COMMIT", "ROLLBACK"]
            .iter()
            .any(|k| q.eq_ignore_ascii_case(k))
}

impl PgStats {
    fn unavailable(reason: String) -> Self {
        Self {
            unavailable: Some(reason),
            ..Self::default()
        }
    }

    /// From `(query, calls)` rows, most called first.
    fn of(rows: Vec<(String, i64)>, messages: u64) -> Self {
        let per = |n: u64| n as f64 / messages.max(1) as f64;
        let (mut inside, mut outside, mut commits) = (0u64, 0u64, 0u64);
        let mut top = Vec::new();
        for (query, calls) in rows {
            let calls = calls.max(0) as u64;
            let group_commit = in_group_commit(&query);
            if group_commit {
                inside += calls;
            } else {
                outside += calls;
            }
            if query.trim().eq_ignore_ascii_case("COMMIT") {
                commits += calls;
            }
            if top.len() < TOP {
                let folded = query.split_whitespace().collect::<Vec<_>>().join(" ");
                let folded = folded
                    .strip_prefix(GROUP_COMMIT_MARK)
                    .map_or(folded.as_str(), str::trim_start);
                top.push(Statement {
                    calls,
                    per_message: per(calls),
                    group_commit,
                    query: folded.chars().take(120).collect(),
                });
            }
        }
        Self {
            unavailable: None,
            messages,
            per_message: per(inside + outside),
            outside_per_message: per(outside),
            group_commit_per_message: per(inside),
            group_commits: commits,
            top,
        }
    }

    /// The `postgres` lines of the text report.
    pub fn write(&self, s: &mut String) {
        if let Some(reason) = &self.unavailable {
            let _ = writeln!(
                s,
                "  postgres  round trips NOT measured: pg_stat_statements is not available ({reason}); \
                 the README's \"Scaling out\" says how to enable it"
            );
            return;
        }
        let _ = writeln!(
            s,
            "  postgres  {:.2} round trips per message: {:.2} outside the group commit, {:.2} in {} group commits \
             (over {} messages)",
            self.per_message,
            self.outside_per_message,
            self.group_commit_per_message,
            self.group_commits,
            self.messages
        );
        for st in &self.top {
            let _ = writeln!(
                s,
                "            {:>6.2}/msg  {:<7}  {}",
                st.per_message,
                if st.group_commit { "commit" } else { "outside" },
                st.query
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_told_apart_by_the_group_commit_mark() {
        let rows = vec![
            ("BEGIN".to_owned(), 10),
            ("COMMIT".to_owned(), 10),
            (
                format!("{GROUP_COMMIT_MARK} INSERT INTO inbox (wamid) VALUES ($1)"),
                10,
            ),
            ("SELECT 1 FROM opt_outs WHERE customer = $1".to_owned(), 40),
        ];
        let stats = PgStats::of(rows, 20);
        assert_eq!(stats.group_commits, 10);
        assert!(
            (stats.group_commit_per_message - 1.5).abs() < 1e-9,
            "{stats:?}"
        );
        assert!((stats.outside_per_message - 2.0).abs() < 1e-9, "{stats:?}");
        assert!((stats.per_message - 3.5).abs() < 1e-9, "{stats:?}");
        assert_eq!(stats.top[2].query, "INSERT INTO inbox (wamid) VALUES ($1)");
        let mut text = String::new();
        stats.write(&mut text);
        assert!(text.contains("2.00 outside the group commit"), "{text}");
        let mut text = String::new();
        PgStats::unavailable("no such view".into()).write(&mut text);
        assert!(text.contains("NOT measured"), "{text}");
    }
}
