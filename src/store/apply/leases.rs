//! The batch's lease phase (PostgreSQL, several replicas): every conversation the batch brings
//! new messages to is claimed for this replica in one statement, inside the group commit, so a
//! message costs no round trip of its own to be claimed; the other replicas are told (NOTIFY)
//! only of the conversations another replica holds. Leases given back at the end of a commit
//! (one statement for all) and the replies a turn may send at once only under its lease are
//! here too. Each statement's text is fixed (arrays bound, not lists written out), so it is
//! prepared once per connection.

use super::Op;
use crate::store::cluster::{self, NOW_MS};
use crate::store::sql::{GROUP_COMMIT_MARK, WriteTx};
use crate::store::{InboxState, NewInbound, StoreError};
use sqlx::postgres::PgConnection;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

/// What a commit's claim found for one conversation it brought new messages to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseClaim {
    pub phone_number_id: String,
    pub customer: String,
    /// This replica holds the lease now (it did already, or this commit took it).
    pub mine: bool,
    /// The conversation's commit count after this commit (see migration 14).
    pub seq: i64,
    /// This commit took the lease (it was free, or its holder's had run out).
    pub claimed: bool,
    /// Taken with work older than this commit's messages still open (a holder that stopped or
    /// died left it): the new holder reads the conversation instead of trusting what the commit
    /// pushed to it.
    pub stale: bool,
}

/// Claims (or renews) the conversations of `keys`, each with the number of new messages this
/// commit brought it: `$1` numbers, `$2` customers, `$3` counts, `$4` this replica, `$5` the
/// lease in milliseconds. Rows are locked in key order, as every commit does, so two replicas'
/// commits wait for each other instead of deadlocking.
static CLAIM: LazyLock<String> = LazyLock::new(|| {
    let live = cluster::lease_live("l");
    format!(
        "{GROUP_COMMIT_MARK} WITH k AS ( \
           SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS k(p, c, n) \
         ), claimed AS ( \
           INSERT INTO conversation_leases AS l \
             (phone_number_id, customer, owner, expires_at, seq, claimed_seq) \
           SELECT p, c, $4, {NOW_MS} + $5, 1, 1 FROM k ORDER BY p, c \
           ON CONFLICT (phone_number_id, customer) DO UPDATE SET \
             owner = CASE WHEN l.owner = excluded.owner OR NOT {live} \
               THEN excluded.owner ELSE l.owner END, \
             expires_at = CASE WHEN l.owner = excluded.owner OR NOT {live} \
               THEN excluded.expires_at ELSE l.expires_at END, \
             claimed_seq = CASE WHEN l.owner <> excluded.owner AND NOT {live} \
               THEN l.seq + 1 ELSE l.claimed_seq END, \
             seq = l.seq + 1 \
           RETURNING phone_number_id, customer, owner, seq, claimed_seq \
         ) \
         SELECT claimed.phone_number_id, claimed.customer, claimed.owner = $4, claimed.seq, \
           claimed.owner = $4 AND claimed.claimed_seq = claimed.seq, \
           CASE WHEN claimed.owner = $4 AND claimed.claimed_seq = claimed.seq THEN \
             (SELECT count(*) FROM inbox i WHERE i.phone_number_id = claimed.phone_number_id \
               AND i.customer = claimed.customer AND i.state = 'received') <> k.n \
             OR EXISTS (SELECT 1 FROM outbox o WHERE o.phone_number_id = claimed.phone_number_id \
               AND o.customer = claimed.customer AND o.is_open) \
           ELSE false END \
         FROM claimed JOIN k ON k.p = claimed.phone_number_id AND k.c = claimed.customer"
    )
});

/// Gives back the leases of `$1` numbers, `$2` customers held by `$4` at the commit counts `$3`;
/// a lease whose conversation got messages since stays (its holder reads them). Key order again.
static RELEASE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{GROUP_COMMIT_MARK} WITH k AS ( \
           SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS k(p, c, s) \
         ), held AS ( \
           SELECT l.phone_number_id, l.customer FROM conversation_leases l \
           JOIN k ON l.phone_number_id = k.p AND l.customer = k.c \
           WHERE l.owner = $4 AND l.seq = k.s \
           ORDER BY l.phone_number_id, l.customer FOR UPDATE OF l \
         ) \
         DELETE FROM conversation_leases l USING held \
         WHERE l.phone_number_id = held.phone_number_id AND l.customer = held.customer \
         RETURNING l.phone_number_id, l.customer"
    )
});

/// Takes back the attempt recorded with replies `$1` (queued `sending`) whose conversation's
/// lease `$2` does not hold: they wait `pending` for whoever holds it. `sending` is spelled as
/// its rank, which no index names, so the ids are looked up by the primary key: a predicate that
/// the partial index of open replies matched let the planner read every open row of the backlog
/// instead (1.4 ms a commit under load, in `pg_stat_statements`).
static UNLEASED_ATTEMPTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{GROUP_COMMIT_MARK} UPDATE outbox o SET state = 'pending', state_rank = 0, \
           attempts = attempts - 1, sending_since = NULL \
         WHERE o.id = ANY($1) AND o.state_rank = 1 AND NOT EXISTS ( \
           SELECT 1 FROM conversation_leases l WHERE l.phone_number_id = o.phone_number_id \
           AND l.customer = o.customer AND l.owner = $2 AND {}) \
         RETURNING o.id",
        cluster::lease_live("l")
    )
});

/// The new messages of this commit that wait for a turn, counted per conversation in key order:
/// inserted (a redelivery is not), `received`, not closed by a keyword at this commit.
fn waiting<'a>(
    all: &[&'a NewInbound],
    inserted: &HashMap<String, i64>,
    closed: &HashSet<i64>,
) -> BTreeMap<(&'a str, &'a str), i64> {
    let mut counted: HashSet<i64> = HashSet::new();
    let mut out: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for m in all {
        if m.state != InboxState::Received || m.customer.is_empty() {
            continue;
        }
        let Some(&id) = inserted.get(&m.wamid) else {
            continue;
        };
        if closed.contains(&id) || !counted.insert(id) {
            continue;
        }
        *out.entry((&m.phone_number_id, &m.customer)).or_default() += 1;
    }
    out
}

/// Claims the conversations this commit brought waiting messages to, and tells the other
/// replicas of those another replica holds. Nothing on SQLite (one process, no leases).
pub(super) async fn claim(
    tx: &mut impl WriteTx,
    all: &[&NewInbound],
    inserted: &HashMap<String, i64>,
    closed: &HashSet<i64>,
    replica: &str,
    lease_ms: i64,
) -> Result<Vec<LeaseClaim>, StoreError> {
    let Some(conn) = tx.pg() else {
        return Ok(Vec::new());
    };
    let keys = waiting(all, inserted, closed);
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let (mut numbers, mut customers, mut counts) = (Vec::new(), Vec::new(), Vec::new());
    for ((p, c), n) in &keys {
        numbers.push(*p);
        customers.push(*c);
        counts.push(*n);
    }
    let rows: Vec<(String, String, bool, i64, bool, bool)> = sqlx::query_as(CLAIM.as_str())
        .bind(&numbers)
        .bind(&customers)
        .bind(&counts)
        .bind(replica)
        .bind(lease_ms)
        .fetch_all(&mut *conn)
        .await?;
    let claims: Vec<LeaseClaim> = rows
        .into_iter()
        .map(|(p, c, mine, seq, claimed, stale)| LeaseClaim {
            phone_number_id: p,
            customer: c,
            mine,
            seq,
            claimed,
            stale,
        })
        .collect();
    // The holder of each other conversation hears of its new messages when this commits.
    let elsewhere = claims
        .iter()
        .filter(|c| !c.mine)
        .map(|c| (c.phone_number_id.as_str(), c.customer.as_str()));
    for payload in cluster::work_payloads(elsewhere) {
        sqlx::query(NOTIFY.as_str())
            .bind(cluster::WORK_CHANNEL)
            .bind(&payload)
            .execute(&mut *conn)
            .await?;
    }
    Ok(claims)
}

/// One NOTIFY on the work channel, marked as the group commit's.
static NOTIFY: LazyLock<String> =
    LazyLock::new(|| format!("{GROUP_COMMIT_MARK} SELECT pg_notify($1, $2)"));

/// Takes back the attempts recorded with `sending` replies whose conversation this replica no
/// longer holds; returns their ids. Nothing on SQLite.
pub(super) async fn unleased_attempts(
    tx: &mut impl WriteTx,
    ids: &[i64],
    replica: &str,
) -> Result<HashSet<i64>, StoreError> {
    let Some(conn) = tx.pg() else {
        return Ok(HashSet::new());
    };
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<(i64,)> = sqlx::query_as(UNLEASED_ATTEMPTS.as_str())
        .bind(ids)
        .bind(replica)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Per [`Op::ReleaseLease`] of `ops`, in op order: not given back.
pub(in crate::store) fn kept(ops: &[Op]) -> Vec<bool> {
    ops.iter()
        .filter(|op| matches!(op, Op::ReleaseLease { .. }))
        .map(|_| false)
        .collect()
}

/// Gives back the leases the batch's [`Op::ReleaseLease`]s ask for, after the commit (in one
/// statement of its own, so the commit's claims and these releases never lock rows in two
/// orders); returns, per release op in op order, whether the lease was given back.
pub(in crate::store) async fn release(
    conn: &mut PgConnection,
    ops: &[Op],
    replica: &str,
) -> Result<Vec<bool>, StoreError> {
    let asked: Vec<(&str, &str, i64)> = ops
        .iter()
        .filter_map(|op| match op {
            Op::ReleaseLease {
                phone_number_id,
                customer,
                seq,
            } => Some((phone_number_id.as_str(), customer.as_str(), *seq)),
            _ => None,
        })
        .collect();
    if asked.is_empty() {
        return Ok(Vec::new());
    }
    let numbers: Vec<&str> = asked.iter().map(|a| a.0).collect();
    let customers: Vec<&str> = asked.iter().map(|a| a.1).collect();
    let seqs: Vec<i64> = asked.iter().map(|a| a.2).collect();
    let rows: Vec<(String, String)> = sqlx::query_as(RELEASE.as_str())
        .bind(&numbers)
        .bind(&customers)
        .bind(&seqs)
        .bind(replica)
        .fetch_all(&mut *conn)
        .await?;
    let gone: HashSet<(String, String)> = rows.into_iter().collect();
    Ok(asked
        .iter()
        .map(|(p, c, _)| gone.contains(&((*p).to_owned(), (*c).to_owned())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudapi::envelope::MessageType;

    fn message(wamid: &str, customer: &str, state: InboxState) -> NewInbound {
        NewInbound {
            wamid: wamid.into(),
            phone_number_id: "106540352242922".into(),
            customer: customer.into(),
            wa_id: None,
            user_id: None,
            customer_name: None,
            msg_type: MessageType::Text,
            text: None,
            payload: "{}".into(),
            meta_ts: 0,
            state,
            detail: None,
            keyword: None,
            traceparent: None,
        }
    }

    #[test]
    fn only_new_waiting_messages_count_once_each() {
        let msgs = [
            message("a", "1", InboxState::Received),
            message("a", "1", InboxState::Received),
            message("b", "1", InboxState::Received),
            message("c", "2", InboxState::Received),
            message("d", "2", InboxState::Unrouted),
            message("e", "3", InboxState::Received),
            message("f", "4", InboxState::Received),
        ];
        let all: Vec<&NewInbound> = msgs.iter().collect();
        let inserted: HashMap<String, i64> = [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)]
            .into_iter()
            .map(|(w, id)| (w.to_owned(), id))
            .collect();
        let closed: HashSet<i64> = [5].into_iter().collect();
        let got: Vec<((&str, &str), i64)> = waiting(&all, &inserted, &closed).into_iter().collect();
        assert_eq!(
            got,
            vec![(("106540352242922", "1"), 2), (("106540352242922", "2"), 1)]
        );
    }
}
