//! What several replicas on one PostgreSQL share: conversation leases (one replica at a time
//! works on a conversation), leader runs, and the queries a replica uses to find work it may
//! take over (the cluster-wide send turns are in `send_slots.rs`). PostgreSQL only: SQLite has
//! exactly one process (see `lock.rs`).

use super::batches::{Batched, Reply};
use super::pause::pause_from;
use super::rows::{
    INBOX_COLUMNS, InboxTuple, OUTBOX_COLUMNS, OutboxTuple, inbox_from, inbox_from_offset,
    outbox_from,
};
use super::{InboxRow, OutboxRow, Pause, PgLinks, Pool, Store, StoreError, on_pool};
use sqlx::{PgPool, Row};
use std::time::Duration;

/// The database's clock in milliseconds: every replica compares lease times on one clock.
pub(super) const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint";

/// Whether the lease `l` (a `conversation_leases` row) is live: its owner renewed its liveness
/// in `replicas` less than a lease ago (one row per replica, so a replica holding thousands of
/// conversations renews them in one small write), or the lease itself has not run out (taken
/// less than a lease ago; replicas before migration 14 renewed each lease this way).
pub(super) fn lease_live(l: &str) -> String {
    format!(
        "({l}.expires_at > {NOW_MS} OR EXISTS (SELECT 1 FROM replicas r \
         WHERE r.replica = {l}.owner AND r.alive_until > {NOW_MS}))"
    )
}

/// The channel on which a commit announces conversations with new inbound messages; the
/// payload is one `phone_number_id<TAB>customer` line per conversation.
pub const WORK_CHANNEL: &str = "wagw_work";
/// The channel on which a change of the disconnected numbers is announced.
pub const OVERRIDES_CHANNEL: &str = "wagw_overrides";
/// The channel on which a replica that requeued a reply (`outbox::requeue`) but could not claim
/// its conversation tells the conversation's holder to send it; the payload is
/// `phone_number_id<TAB>customer<TAB>outbox id`.
pub const REQUEUED_CHANNEL: &str = "wagw_requeued";
/// Largest NOTIFY payload sent (PostgreSQL refuses 8000 bytes and more).
pub(super) const NOTIFY_MAX: usize = 7000;

/// A conversation: (phone_number_id, customer).
pub type ConversationKey = (String, String);

/// Splits keys into NOTIFY payloads under PostgreSQL's size limit.
pub(super) fn work_payloads<'a>(keys: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for (pnid, customer) in keys {
        if !cur.is_empty() && cur.len() + pnid.len() + customer.len() + 2 > NOTIFY_MAX {
            out.push(std::mem::take(&mut cur));
        }
        cur.push_str(pnid);
        cur.push('\t');
        cur.push_str(customer);
        cur.push('\n');
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Reads a [`WORK_CHANNEL`] payload back.
pub fn parse_work_payload(payload: &str) -> Vec<ConversationKey> {
    payload
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(p, c)| (p.to_owned(), c.to_owned()))
        .collect()
}

/// A [`REQUEUED_CHANNEL`] payload.
fn requeued_payload(phone_number_id: &str, customer: &str, id: i64) -> String {
    format!("{phone_number_id}\t{customer}\t{id}")
}

/// Reads a [`REQUEUED_CHANNEL`] payload back: the conversation and the reply's id.
pub fn parse_requeued_payload(payload: &str) -> Option<(ConversationKey, i64)> {
    let mut fields = payload.split('\t');
    let (pnid, customer, id) = (fields.next()?, fields.next()?, fields.next()?);
    Some(((pnid.to_owned(), customer.to_owned()), id.parse().ok()?))
}

impl Store {
    /// Tells the holder of the conversation, whichever replica it is, that reply `id` was
    /// requeued and is its to send ([`REQUEUED_CHANNEL`]).
    pub async fn notify_requeued(
        &self,
        phone_number_id: &str,
        customer: &str,
        id: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(REQUEUED_CHANNEL)
            .bind(requeued_payload(phone_number_id, customer, id))
            .execute(self.pg()?)
            .await?;
        Ok(())
    }

    pub(super) fn pg(&self) -> Result<&PgPool, StoreError> {
        match &self.pool {
            Pool::Postgres(p) => Ok(p),
            Pool::Sqlite(_) => Err(StoreError::Batch(
                "cluster storage calls need PostgreSQL".into(),
            )),
        }
    }

    /// The connections kept outside the pool (see `pgconn.rs`).
    pub(super) fn pg_links(&self) -> Result<&PgLinks, StoreError> {
        self.pg.as_deref().ok_or_else(needs_postgres)
    }

    /// The PostgreSQL connection options, for the connections a replica keeps to itself
    /// (leader election, LISTEN).
    pub fn pg_connect_options(&self) -> Option<sqlx::postgres::PgConnectOptions> {
        match &self.pool {
            Pool::Postgres(p) => Some(p.connect_options().as_ref().clone()),
            Pool::Sqlite(_) => None,
        }
    }

    /// Takes (or renews) this replica's lease on a conversation, unless another replica holds
    /// a live one. Returns whether this replica holds it now.
    pub async fn acquire_lease(
        &self,
        phone_number_id: &str,
        customer: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO conversation_leases AS l (phone_number_id, customer, owner, expires_at) \
             VALUES ($1, $2, $3, {NOW_MS} + $4) ON CONFLICT (phone_number_id, customer) DO UPDATE \
             SET owner = excluded.owner, expires_at = excluded.expires_at, \
             claimed_seq = CASE WHEN l.owner = excluded.owner THEN l.claimed_seq ELSE l.seq END \
             WHERE l.owner = excluded.owner OR NOT {} RETURNING 1",
            lease_live("l")
        );
        let row: Option<i32> = sqlx::query_scalar(&sql)
            .bind(phone_number_id)
            .bind(customer)
            .bind(self.replica())
            .bind(lease.as_millis() as i64)
            .fetch_optional(self.pg()?)
            .await?;
        Ok(row.is_some())
    }

    /// Gives up this replica's lease on a conversation.
    pub async fn release_lease(
        &self,
        phone_number_id: &str,
        customer: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM conversation_leases WHERE phone_number_id = $1 AND customer = $2 \
             AND owner = $3",
        )
        .bind(phone_number_id)
        .bind(customer)
        .bind(self.replica())
        .execute(self.pg()?)
        .await?;
        Ok(())
    }

    /// Renews every lease this replica holds (the heartbeat): one row, this replica's liveness,
    /// whatever the number of conversations it holds.
    pub async fn renew_leases(&self, lease: Duration) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO replicas (replica, alive_until) VALUES ($1, {NOW_MS} + $2) \
             ON CONFLICT (replica) DO UPDATE SET alive_until = excluded.alive_until"
        );
        sqlx::query(&sql)
            .bind(self.replica())
            .bind(lease.as_millis() as i64)
            .execute(self.pg()?)
            .await?;
        Ok(())
    }

    /// Gives up every lease this replica holds (at shutdown); returns how many.
    pub async fn release_all_leases(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM conversation_leases WHERE owner = $1")
            .bind(self.replica())
            .execute(self.pg()?)
            .await?;
        sqlx::query("DELETE FROM replicas WHERE replica = $1")
            .bind(self.replica())
            .execute(self.pg()?)
            .await?;
        Ok(done.rows_affected())
    }

    /// Conversations with open work (a message waiting, a reply not settled) older than
    /// `older_than_ms` (gateway clock) that no replica holds a live lease on.
    pub async fn orphaned_conversations(
        &self,
        older_than_ms: i64,
        limit: i64,
    ) -> Result<Vec<ConversationKey>, StoreError> {
        let sql = format!(
            "SELECT w.phone_number_id, w.customer FROM ( \
               SELECT phone_number_id, customer FROM inbox WHERE state = 'received' AND received_at < $1 \
               UNION \
               SELECT phone_number_id, customer FROM outbox WHERE is_open \
                 AND updated_at < $1 \
             ) w LEFT JOIN conversation_leases l \
               ON l.phone_number_id = w.phone_number_id AND l.customer = w.customer \
             WHERE l.owner IS NULL OR NOT {} LIMIT $2",
            lease_live("l")
        );
        let rows: Vec<(String, String)> = sqlx::query_as(&sql)
            .bind(older_than_ms)
            .bind(limit)
            .fetch_all(self.pg()?)
            .await?;
        Ok(rows)
    }

    /// A conversation's waiting messages, oldest first, with its commit count, read together by
    /// its holder; `None` when this replica does not hold its lease (anymore).
    pub async fn waiting_of(
        &self,
        phone_number_id: &str,
        customer: &str,
    ) -> Result<Option<(i64, Vec<InboxRow>)>, StoreError> {
        static READ: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let columns = INBOX_COLUMNS
                .split(", ")
                .map(|c| format!("i.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "SELECT l.seq, {columns} FROM conversation_leases l LEFT JOIN inbox i \
                 ON i.phone_number_id = l.phone_number_id AND i.customer = l.customer \
                 AND i.state = 'received' \
                 WHERE l.phone_number_id = $1 AND l.customer = $2 AND l.owner = $3 ORDER BY i.id"
            )
        });
        let pg = self.pg_links()?;
        let rows = pg
            .hot
            .run(async |c| {
                Ok(sqlx::query(READ.as_str())
                    .bind(phone_number_id)
                    .bind(customer)
                    .bind(self.replica())
                    .fetch_all(c)
                    .await?)
            })
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let seq: i64 = first.try_get(0)?;
        let mut waiting = Vec::with_capacity(rows.len());
        for row in &rows {
            // No waiting message: the one row the join keeps has no inbox columns.
            if row.try_get::<Option<i64>, _>(1)?.is_none() {
                continue;
            }
            waiting.push(inbox_from_offset(row, 1)?);
        }
        Ok(Some((seq, waiting)))
    }

    /// What a holder's turn asks before it runs, in one read: whether the customer opted out
    /// of the number (`(opted_out, erased)` as [`Store::opt_out_state`] says, `digest` being
    /// the customer's erasure digest) and the conversation's stored pause. The reads of turns
    /// starting at the same time are made in one statement.
    pub async fn turn_state(
        &self,
        phone_number_id: &str,
        customer: &str,
        digest: &str,
    ) -> Result<TurnState, StoreError> {
        let links = self.pg.as_ref().ok_or_else(needs_postgres)?;
        let keys = [phone_number_id, customer, digest].map(str::to_owned);
        links
            .turn_reads
            .ask(links, |reply| TurnRead { keys, reply })
            .await
    }

    /// A conversation's messages waiting for their turn with an id above `after`, oldest first.
    pub async fn open_inbox_of(
        &self,
        phone_number_id: &str,
        customer: &str,
        after: i64,
    ) -> Result<Vec<InboxRow>, StoreError> {
        let sql = format!(
            "SELECT {INBOX_COLUMNS} FROM inbox WHERE phone_number_id = $1 AND customer = $2 \
             AND state = 'received' AND id > $3 ORDER BY id"
        );
        on_pool!(self, |pool| {
            let rows: Vec<InboxTuple> = sqlx::query_as(&sql)
                .bind(phone_number_id)
                .bind(customer)
                .bind(after)
                .fetch_all(pool)
                .await?;
            Ok(rows.into_iter().map(inbox_from).collect())
        })
    }

    /// A conversation's replies not yet settled, oldest first.
    pub async fn open_outbox_of(
        &self,
        phone_number_id: &str,
        customer: &str,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE phone_number_id = $1 AND customer = $2 \
             AND is_open ORDER BY id"
        );
        on_pool!(self, |pool| {
            let rows: Vec<OutboxTuple> = sqlx::query_as(&sql)
                .bind(phone_number_id)
                .bind(customer)
                .fetch_all(pool)
                .await?;
            Ok(rows.into_iter().map(outbox_from).collect())
        })
    }

    /// Forgets replicas that stopped renewing their liveness an hour ago (killed ones; those
    /// stopped with SIGTERM remove their own row).
    pub async fn prune_replicas(&self) -> Result<u64, StoreError> {
        let sql = format!("DELETE FROM replicas WHERE alive_until < {NOW_MS} - 3600000");
        let done = sqlx::query(&sql).execute(self.pg()?).await?;
        Ok(done.rows_affected())
    }

    /// Records that this replica starts a cycle of leader-only `task`; returns the run's id.
    pub async fn leader_run_started(&self, task: &str) -> Result<i64, StoreError> {
        let sql = format!(
            "INSERT INTO leader_runs (replica, task, started_at) VALUES ($1, $2, {NOW_MS}) RETURNING id"
        );
        Ok(sqlx::query_scalar(&sql)
            .bind(self.replica())
            .bind(task)
            .fetch_one(self.pg()?)
            .await?)
    }

    /// Records the end of leader run `id`.
    pub async fn leader_run_ended(&self, id: i64) -> Result<(), StoreError> {
        let sql = format!("UPDATE leader_runs SET ended_at = {NOW_MS} WHERE id = $1");
        sqlx::query(&sql).bind(id).execute(self.pg()?).await?;
        Ok(())
    }

    /// Forgets leader runs that started more than `keep` ago.
    pub async fn prune_leader_runs(&self, keep: Duration) -> Result<u64, StoreError> {
        let sql = format!("DELETE FROM leader_runs WHERE started_at < {NOW_MS} - $1");
        let done = sqlx::query(&sql)
            .bind(keep.as_millis() as i64)
            .execute(self.pg()?)
            .await?;
        Ok(done.rows_affected())
    }
}

/// The error of a cluster call on SQLite.
pub(super) fn needs_postgres() -> StoreError {
    StoreError::Batch("cluster storage calls need PostgreSQL".into())
}

/// What a holder's turn reads before it runs: the customer's `(opted_out, erased)` and the
/// conversation's stored pause.
pub type TurnState = ((bool, bool), Option<Pause>);

/// One turn's read (number, customer, the customer's erasure digest), waiting for its batch.
pub(super) struct TurnRead {
    keys: [String; 3],
    reply: Reply<TurnState>,
}

impl Batched for TurnRead {
    type Answer = TurnState;

    fn reply(self) -> Reply<TurnState> {
        self.reply
    }

    async fn run(links: &PgLinks, batch: &[Self]) -> Result<Vec<TurnState>, StoreError> {
        const READ: &str = "SELECT \
             (SELECT opted_out FROM opt_outs o \
               WHERE o.phone_number_id = k.p AND o.customer = k.c), \
             (SELECT opted_out FROM opt_outs o \
               WHERE o.phone_number_id = k.p AND o.customer = k.d), \
             p.phone_number_id, p.customer, p.paused_at, p.paused_until, p.reason, p.paused_by \
             FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(p, c, d, ord) \
             LEFT JOIN paused_conversations p ON p.phone_number_id = k.p AND p.customer = k.c \
             ORDER BY k.ord";
        let col = |i: usize| batch.iter().map(|r| r.keys[i].as_str()).collect::<Vec<_>>();
        let rows = links
            .hot
            .run(async |c| {
                Ok(sqlx::query(READ)
                    .bind(col(0))
                    .bind(col(1))
                    .bind(col(2))
                    .fetch_all(c)
                    .await?)
            })
            .await?;
        rows.iter().map(turn_state_from).collect()
    }
}

/// A row of [`TurnRead`]'s statement.
fn turn_state_from(row: &sqlx::postgres::PgRow) -> Result<TurnState, StoreError> {
    let plain: Option<i64> = row.try_get(0)?;
    let hashed = row.try_get::<Option<i64>, _>(1)? == Some(1);
    let opted_out = match plain {
        Some(1) => (true, false),
        _ => (hashed, hashed),
    };
    let pause = match row.try_get::<Option<String>, _>(2)? {
        None => None,
        Some(pnid) => Some(pause_from((
            pnid,
            row.try_get(3)?,
            row.try_get(4)?,
            row.try_get(5)?,
            row.try_get(6)?,
            row.try_get(7)?,
        ))),
    };
    Ok((opted_out, pause))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_payloads_stay_under_the_notify_limit_and_read_back() {
        let keys: Vec<(String, String)> = (0..1000)
            .map(|i| ("106540352242922".to_owned(), format!("9198{i:08}")))
            .collect();
        let payloads = work_payloads(keys.iter().map(|(p, c)| (p.as_str(), c.as_str())));
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() <= NOTIFY_MAX));
        let back: Vec<ConversationKey> = payloads
            .iter()
            .flat_map(|p| parse_work_payload(p))
            .collect();
        assert_eq!(back, keys);
    }

    #[test]
    fn a_requeued_payload_reads_back_and_junk_does_not() {
        let payload = requeued_payload("106540352242922", "491700000001", 42);
        let key = ("106540352242922".to_owned(), "491700000001".to_owned());
        assert_eq!(parse_requeued_payload(&payload), Some((key, 42)));
        assert_eq!(
            parse_requeued_payload("106540352242922\t491700000001"),
            None
        );
        assert_eq!(parse_requeued_payload("a\tb\tnot-an-id"), None);
    }
}
