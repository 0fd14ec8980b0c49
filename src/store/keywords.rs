//! Opt-outs at commit: a message that is a stop or resume keyword changes the customer's
//! opt-out state in the same transaction that stores it, so nothing waits for its turn to run.
//! A STOP closes the customer's earlier messages still waiting for a turn (a turn already
//! running then finds its message closed and queues nothing) and cancels replies not yet on
//! their way. Only the group-commit writer calls this, inside its transaction.

use super::sql::{Sql, WriteTx};
use super::{NewInbound, OptAction, StoreError};
use std::collections::{HashMap, HashSet};

/// What the keywords of one commit did to its new rows.
#[derive(Debug, Default)]
pub(super) struct Committed {
    /// Rows closed by this commit (a repeated STOP, or earlier messages a keyword cut off):
    /// they need no turn.
    pub closed: HashSet<i64>,
    /// Keyword rows that changed nothing (START from a customer who never opted out): they
    /// go on as ordinary messages.
    pub ordinary: HashSet<i64>,
}

/// Why a waiting message was closed without an answer.
pub const CUT_OFF: &str = "customer opted out";

/// Records the opt-out changes the new keyword rows of a commit make, in message order.
/// `inserted` maps the wamids this commit inserted to their ids (redeliveries are absent).
pub(super) async fn commit(
    tx: &mut impl WriteTx,
    messages: &[&NewInbound],
    inserted: &HashMap<String, i64>,
    now: i64,
) -> Result<Committed, StoreError> {
    let mut done = Committed::default();
    let mut seen: HashSet<i64> = HashSet::new();
    for m in messages {
        let Some(keyword) = &m.keyword else { continue };
        // The first occurrence of a wamid in the batch is the one inserted.
        let Some(&id) = inserted.get(&m.wamid) else {
            continue;
        };
        if !seen.insert(id) || done.closed.contains(&id) {
            continue;
        }
        let (pnid, customer) = (m.phone_number_id.as_str(), m.customer.as_str());
        if !change_state(tx, pnid, customer, keyword.action, &keyword.keyword, now).await? {
            unchanged(tx, id, keyword.action, &mut done).await?;
            continue;
        }
        tx.run(
            "INSERT INTO opt_out_events (phone_number_id, customer, opted_out, keyword, wamid, at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            [
                pnid.into(),
                customer.into(),
                i64::from(keyword.action == OptAction::Stop).into(),
                keyword.keyword.as_str().into(),
                m.wamid.as_str().into(),
                now.into(),
            ],
        )
        .await?;
        // Earlier messages wait no longer: after a STOP they must not be answered, and before
        // an effective START they were written while the customer was opted out.
        let mut sql = Sql::new("UPDATE inbox SET state = 'skipped', detail = ");
        sql.bind(CUT_OFF).push(", handled_at = ").bind(now);
        sql.push(" WHERE phone_number_id = ").bind(pnid);
        sql.push(" AND customer = ").bind(customer);
        sql.push(" AND state = 'received' AND id < ")
            .bind(id)
            .push(" RETURNING id");
        let rows: Vec<(i64,)> = tx.fetch(&sql).await?;
        done.closed.extend(rows.into_iter().map(|(id,)| id));
        if keyword.action == OptAction::Stop {
            // Replies queued and not on their way are cancelled now; one already taken by the
            // sender (`sending`) is checked against the opt-out right before it leaves.
            tx.run(
                "UPDATE outbox SET state = 'cancelled', state_rank = 5, error_message = $1, \
                 updated_at = $2 WHERE phone_number_id = $3 AND customer = $4 \
                 AND state = 'pending' AND kind <> 'opt_out_confirmation'",
                [CUT_OFF.into(), now.into(), pnid.into(), customer.into()],
            )
            .await?;
        }
    }
    Ok(done)
}

/// Moves the customer to `action`'s state; false when they were in it already. One statement
/// each, so concurrent commits on PostgreSQL (several replicas) serialise on the row and only
/// one of two STOPs is the one that opted out.
async fn change_state(
    tx: &mut impl WriteTx,
    pnid: &str,
    customer: &str,
    action: OptAction,
    keyword: &str,
    now: i64,
) -> Result<bool, StoreError> {
    match action {
        OptAction::Stop => {
            let sql = Sql::with(
                "INSERT INTO opt_outs (phone_number_id, customer, opted_out, keyword, changed_at, \
                 stopped_at) VALUES ($1, $2, 1, $3, $4, $4) ON CONFLICT (phone_number_id, customer) \
                 DO UPDATE SET opted_out = 1, keyword = excluded.keyword, \
                 changed_at = excluded.changed_at, stopped_at = excluded.stopped_at \
                 WHERE opt_outs.opted_out = 0 RETURNING stopped_at",
                [pnid.into(), customer.into(), keyword.into(), now.into()],
            );
            let rows: Vec<(i64,)> = tx.fetch(&sql).await?;
            Ok(!rows.is_empty())
        }
        OptAction::Resume => Ok(tx
            .run(
                "UPDATE opt_outs SET opted_out = 0, keyword = $1, changed_at = $2 \
                 WHERE phone_number_id = $3 AND customer = $4 AND opted_out = 1",
                [keyword.into(), now.into(), pnid.into(), customer.into()],
            )
            .await?
            == 1),
    }
}

/// A keyword that changed nothing: a repeated STOP is recorded and closed (the confirmation
/// went out once already); a START from a customer who never opted out is an ordinary message.
async fn unchanged(
    tx: &mut impl WriteTx,
    id: i64,
    action: OptAction,
    done: &mut Committed,
) -> Result<(), StoreError> {
    match action {
        OptAction::Stop => {
            tx.run(
                "UPDATE inbox SET state = 'done', detail = 'opt-out repeated', \
                 handled_at = received_at WHERE id = $1",
                [id.into()],
            )
            .await?;
            done.closed.insert(id);
        }
        OptAction::Resume => {
            tx.run(
                "UPDATE inbox SET opt_action = NULL, opt_keyword = NULL WHERE id = $1",
                [id.into()],
            )
            .await?;
            done.ordinary.insert(id);
        }
    }
    Ok(())
}
