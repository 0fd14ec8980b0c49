//! Embedded migrations for each dialect, applied at start (PostgreSQL's are serialised by
//! sqlx's advisory lock, so several replicas may start at once).

use sqlx::migrate::{Migration, MigrationType, Migrator};
use std::borrow::Cow;

const SQLITE: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/sqlite/0001_init.sql")),
    (
        2,
        "opt_outs",
        include_str!("migrations/sqlite/0002_opt_outs.sql"),
    ),
    (
        3,
        "number_overrides",
        include_str!("migrations/sqlite/0003_number_overrides.sql"),
    ),
    // 4 is PostgreSQL's cluster tables, which SQLite (one process) never needs.
    (
        5,
        "onboarding",
        include_str!("migrations/sqlite/0005_onboarding.sql"),
    ),
    (
        7,
        "retention",
        include_str!("migrations/sqlite/0007_retention.sql"),
    ),
    (
        8,
        "optout_commit_installation",
        include_str!("migrations/sqlite/0008_optout_commit_installation.sql"),
    ),
    (
        9,
        "outbox_history_text",
        include_str!("migrations/sqlite/0009_outbox_history_text.sql"),
    ),
    (
        10,
        "paused_conversations",
        include_str!("migrations/sqlite/0010_paused_conversations.sql"),
    ),
    (
        11,
        "media_uploads",
        include_str!("migrations/sqlite/0011_media_uploads.sql"),
    ),
    // 12 is SQLite's alone: PostgreSQL's heap and primary key are the same pages either way.
    (
        12,
        "conversations_clustered",
        include_str!("migrations/sqlite/0012_conversations_clustered.sql"),
    ),
    (
        20,
        "audit",
        include_str!("migrations/sqlite/0020_audit.sql"),
    ),
    (
        21,
        "dead_letter_replays",
        include_str!("migrations/sqlite/0021_dead_letter_replays.sql"),
    ),
    (
        30,
        "number_status",
        include_str!("migrations/sqlite/0030_number_status.sql"),
    ),
    (
        31,
        "outbox_is_open",
        include_str!("migrations/sqlite/0031_outbox_is_open.sql"),
    ),
    (
        32,
        "outbox_indexes",
        include_str!("migrations/sqlite/0032_outbox_indexes.sql"),
    ),
    // SQLite only: PostgreSQL keeps `inbox_conversation` (a chain's links there would have to
    // be written after the insert, which rewrites the row and every index entry of it).
    (
        33,
        "inbox_chain",
        include_str!("migrations/sqlite/0033_inbox_chain.sql"),
    ),
    // SQLite only: PostgreSQL reads a conversation's open replies when a lease changes hands.
    (
        34,
        "no_open_replies_by_conversation",
        include_str!("migrations/sqlite/0034_no_open_replies_by_conversation.sql"),
    ),
    // SQLite only: on PostgreSQL every replica's commit would wait on the number's row.
    (
        35,
        "number_last_received",
        include_str!("migrations/sqlite/0035_number_last_received.sql"),
    ),
    (
        36,
        "echo_wamids",
        include_str!("migrations/sqlite/0036_echo_wamids.sql"),
    ),
    // SQLite only: PostgreSQL's replicas all insert messages, and none holds the others' new
    // wamids in memory; its unique index stays.
    (
        37,
        "wamid_index_merged",
        include_str!("migrations/sqlite/0037_wamid_index_merged.sql"),
    ),
];
const POSTGRES: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/postgres/0001_init.sql")),
    (
        2,
        "opt_outs",
        include_str!("migrations/postgres/0002_opt_outs.sql"),
    ),
    (
        3,
        "number_overrides",
        include_str!("migrations/postgres/0003_number_overrides.sql"),
    ),
    // PostgreSQL only: leases, cluster-wide send limits and leader runs serve several
    // replicas, which SQLite never has (one process holds the file's lock).
    (
        4,
        "cluster",
        include_str!("migrations/postgres/0004_cluster.sql"),
    ),
    (
        5,
        "onboarding",
        include_str!("migrations/postgres/0005_onboarding.sql"),
    ),
    (
        6,
        "send_limits_unlogged",
        include_str!("migrations/postgres/0006_send_limits_unlogged.sql"),
    ),
    (
        7,
        "retention",
        include_str!("migrations/postgres/0007_retention.sql"),
    ),
    (
        8,
        "optout_commit_installation",
        include_str!("migrations/postgres/0008_optout_commit_installation.sql"),
    ),
    (
        9,
        "outbox_history_text",
        include_str!("migrations/postgres/0009_outbox_history_text.sql"),
    ),
    (
        10,
        "paused_conversations",
        include_str!("migrations/postgres/0010_paused_conversations.sql"),
    ),
    (
        11,
        "media_uploads",
        include_str!("migrations/postgres/0011_media_uploads.sql"),
    ),
    // PostgreSQL only: the leases SQLite never has.
    (
        14,
        "leases_in_the_group_commit",
        include_str!("migrations/postgres/0014_leases_in_the_group_commit.sql"),
    ),
    (
        20,
        "audit",
        include_str!("migrations/postgres/0020_audit.sql"),
    ),
    (
        21,
        "dead_letter_replays",
        include_str!("migrations/postgres/0021_dead_letter_replays.sql"),
    ),
    (
        30,
        "number_status",
        include_str!("migrations/postgres/0030_number_status.sql"),
    ),
    (
        31,
        "outbox_is_open",
        include_str!("migrations/postgres/0031_outbox_is_open.sql"),
    ),
    (
        32,
        "outbox_indexes",
        include_str!("migrations/postgres/0032_outbox_indexes.sql"),
    ),
    (
        36,
        "echo_wamids",
        include_str!("migrations/postgres/0036_echo_wamids.sql"),
    ),
];

fn migrator(list: &[(i64, &'static str, &'static str)]) -> Migrator {
    let migrations = list
        .iter()
        .map(|(version, desc, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*desc),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
}

pub(super) fn sqlite() -> Migrator {
    migrator(SQLITE)
}

pub(super) fn postgres() -> Migrator {
    migrator(POSTGRES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

    /// A SQLite file with the migrations before `version` applied (an earlier release's).
    async fn sqlite_before(version: i64) -> (tempfile::TempDir, SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("old.db"))
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        let before: Vec<_> = SQLITE.iter().copied().filter(|m| m.0 < version).collect();
        migrator(&before).run(&pool).await.unwrap();
        (dir, pool)
    }

    /// A database of the previous version keeps its conversations when migration 12 clusters
    /// them on their key.
    #[tokio::test]
    async fn conversations_survive_their_clustering() {
        let (_dir, pool) = sqlite_before(12).await;
        sqlx::query(
            "INSERT INTO conversations (phone_number_id, customer, wa_id, user_id, \
             customer_name, last_inbound_ts, updated_at) \
             VALUES ('106', '15550001', '15550001', 'US.1', 'Ana', 1700000000, 1700000000123)",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlite().run(&pool).await.unwrap();
        let row: (String, String, Option<String>, Option<String>, i64, i64) = sqlx::query_as(
            "SELECT phone_number_id, customer, user_id, customer_name, last_inbound_ts, \
             updated_at FROM conversations",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            row,
            (
                "106".into(),
                "15550001".into(),
                Some("US.1".into()),
                Some("Ana".into()),
                1700000000,
                1700000000123
            )
        );
        let without_rowid = sqlx::query("SELECT rowid FROM conversations")
            .fetch_all(&pool)
            .await;
        assert!(without_rowid.is_err(), "clustered on its key: no rowid");
    }

    /// Migration 33 links the messages a database already holds into their conversations'
    /// chains, in id order, and points each conversation at its newest; the index it replaces
    /// is gone.
    #[tokio::test]
    async fn existing_messages_are_chained_per_conversation() {
        let (_dir, pool) = sqlite_before(33).await;
        for (id, customer) in [(1, "ana"), (2, "ben"), (3, "ana"), (5, "ana"), (6, "ben")] {
            sqlx::query(
                "INSERT INTO inbox (id, wamid, phone_number_id, customer, msg_type, payload, \
                 meta_ts, received_at, state) VALUES ($1, 'w' || $1, '106', $2, 'text', '{}', \
                 1, 1, 'done')",
            )
            .bind(id)
            .bind(customer)
            .execute(&pool)
            .await
            .unwrap();
        }
        for customer in ["ana", "ben", "cleo"] {
            sqlx::query(
                "INSERT INTO conversations (phone_number_id, customer, last_inbound_ts, \
                 updated_at) VALUES ('106', $1, 1, 1)",
            )
            .bind(customer)
            .execute(&pool)
            .await
            .unwrap();
        }
        sqlite().run(&pool).await.unwrap();
        let links: Vec<(i64, Option<i64>)> =
            sqlx::query_as("SELECT id, prev_id FROM inbox ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(
            links,
            [
                (1, None),
                (2, None),
                (3, Some(1)),
                (5, Some(3)),
                (6, Some(2))
            ]
        );
        let heads: Vec<(String, Option<i64>)> =
            sqlx::query_as("SELECT customer, last_inbox_id FROM conversations ORDER BY customer")
                .fetch_all(&pool)
                .await
                .unwrap();
        let head = |c: &str, id: Option<i64>| (c.to_owned(), id);
        assert_eq!(
            heads,
            [
                head("ana", Some(5)),
                head("ben", Some(6)),
                head("cleo", None)
            ]
        );
        let index: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_schema WHERE name = 'inbox_conversation'")
                .fetch_optional(&pool)
                .await
                .unwrap();
        assert_eq!(index, None);
    }

    /// Migration 35 keeps each number's last message time from the messages the database holds.
    #[tokio::test]
    async fn numbers_keep_their_last_message_time() {
        let (_dir, pool) = sqlite_before(35).await;
        for (id, number, at) in [(1, "106", 5_000), (2, "107", 7_000), (3, "106", 9_000)] {
            sqlx::query(
                "INSERT INTO inbox (id, wamid, phone_number_id, customer, msg_type, payload, \
                 meta_ts, received_at, state) VALUES ($1, 'w' || $1, $2, '1555', 'text', '{}', \
                 1, $3, 'done')",
            )
            .bind(id)
            .bind(number)
            .bind(at)
            .execute(&pool)
            .await
            .unwrap();
        }
        sqlite().run(&pool).await.unwrap();
        let times: Vec<(String, i64)> = sqlx::query_as(
            "SELECT phone_number_id, received_at FROM number_last_received ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(times, [("106".into(), 9_000), ("107".into(), 7_000)]);
    }

    /// Migration 37 rebuilds the inbox without its unique wamid index: the rows keep their ids,
    /// links and content, a new row's id still follows the highest ever given (not the highest
    /// left), and every wamid is in the index the writer merges into, up to the newest row.
    #[tokio::test]
    async fn messages_keep_their_ids_when_their_wamids_move_to_the_merged_index() {
        let (_dir, pool) = sqlite_before(37).await;
        for (id, prev) in [(1, None), (2, Some(1)), (5, Some(2)), (7, None)] {
            sqlx::query(
                "INSERT INTO inbox (id, wamid, phone_number_id, customer, msg_type, text, \
                 payload, meta_ts, received_at, state, prev_id, opt_keyword) VALUES ($1, \
                 'w' || $1, '106', '1555', 'text', 'hi', '{}', 1, 1, 'done', $2, 'STOP')",
            )
            .bind(id)
            .bind(prev)
            .execute(&pool)
            .await
            .unwrap();
        }
        sqlx::query("DELETE FROM inbox WHERE id = 7")
            .execute(&pool)
            .await
            .unwrap();
        sqlite().run(&pool).await.unwrap();
        let rows: Vec<(i64, String, Option<i64>, String, String)> =
            sqlx::query_as("SELECT id, wamid, prev_id, text, opt_keyword FROM inbox ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        let row = |id: i64, prev: Option<i64>| {
            (
                id,
                format!("w{id}"),
                prev,
                "hi".to_owned(),
                "STOP".to_owned(),
            )
        };
        assert_eq!(rows, [row(1, None), row(2, Some(1)), row(5, Some(2))]);
        let indexed: Vec<(String, i64)> =
            sqlx::query_as("SELECT wamid, id FROM inbox_wamids ORDER BY wamid")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(
            indexed,
            [("w1".into(), 1), ("w2".into(), 2), ("w5".into(), 5)]
        );
        let mark: i64 = sqlx::query_scalar("SELECT id FROM inbox_wamids_merged")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(mark, 5);
        let next: i64 = sqlx::query_scalar(
            "INSERT INTO inbox (wamid, phone_number_id, customer, msg_type, payload, meta_ts, \
             received_at, state) VALUES ('w', '106', '1555', 'text', '{}', 1, 1, 'done') \
             RETURNING id",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(next, 8);
        let unique: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_schema WHERE tbl_name = 'inbox' AND name LIKE '%autoindex%'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        assert_eq!(unique, None);
    }
}
