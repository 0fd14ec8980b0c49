//! The batch's inbound phase: every webhook's messages in multi-row inserts (deduplicated on
//! wamid, and against the wamids retention remembers), the conversations they touch, and each
//! webhook's new rows and dead letter. Statements only inside the writer's transaction.

use super::{CHUNK, Op};
use crate::store::keywords::Committed;
use crate::store::retention::{not_deleted_before, wamid_digest};
use crate::store::sql::{Sql, WriteTx};
use crate::store::{
    InboxRow, InboxState, NewInbound, OutboxKind, OutboxState, StoreError, WebhookWrite,
};
use std::collections::HashMap;

const UPSERT_CONVERSATION: &str = "INSERT INTO conversations (phone_number_id, customer, \
     wa_id, user_id, customer_name, last_inbound_ts, updated_at) ";

/// The upsert's conflict clause, with the dialect's two-argument maximum.
macro_rules! upsert_conversation_tail {
    ($max:literal) => {
        concat!(
            " ON CONFLICT (phone_number_id, customer) DO UPDATE SET \
             wa_id = COALESCE(excluded.wa_id, conversations.wa_id), \
             user_id = COALESCE(excluded.user_id, conversations.user_id), \
             customer_name = COALESCE(excluded.customer_name, conversations.customer_name), \
             last_inbound_ts = ",
            $max,
            "(conversations.last_inbound_ts, excluded.last_inbound_ts), \
             updated_at = excluded.updated_at"
        )
    };
}

const UPSERT_CONVERSATION_TAIL_SQLITE: &str = upsert_conversation_tail!("MAX");

const UPSERT_CONVERSATION_TAIL_PG: &str = upsert_conversation_tail!("GREATEST");

/// Inbound messages of every webhook in the batch, in op order.
pub(super) fn messages(ops: &[Op]) -> Vec<&NewInbound> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Webhook(w) => Some(w.messages.iter()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Inserts `all` (one multi-row insert per chunk) and returns the new rows' ids by wamid. (On
/// PostgreSQL the lease phase then tells the other replicas of their conversations' work.)
pub(super) async fn insert(
    tx: &mut impl WriteTx,
    all: &[&NewInbound],
    now: i64,
) -> Result<HashMap<String, i64>, StoreError> {
    let mut inserted: HashMap<String, i64> = HashMap::new();
    for chunk in all.chunks(CHUNK) {
        // A wamid whose row retention or erasure deleted is known by its digest in
        // `seen_wamids`: at most one primary-key lookup per message, in the same statement.
        let digests: Vec<String> = chunk.iter().map(|m| wamid_digest(&m.wamid)).collect();
        let mut sql = Sql::new(
            "INSERT INTO inbox (wamid, phone_number_id, customer, wa_id, user_id, customer_name, \
             msg_type, text, payload, meta_ts, received_at, state, detail, opt_action, \
             opt_keyword) SELECT column1, column2, column3, column4, column5, column6, column7, \
             column8, column9, column10, column11, column12, column13, column14, column15 FROM (",
        );
        sql.values(chunk.iter().zip(&digests), |t, (m, digest)| {
            t.bind(&m.wamid)
                .bind(&m.phone_number_id)
                .bind(&m.customer)
                .bind(&m.wa_id)
                .bind(&m.user_id)
                .bind(&m.customer_name)
                .bind(m.msg_type.as_str())
                .bind(&m.text)
                .bind(&m.payload)
                .bind(m.meta_ts)
                .bind(now)
                .bind(m.state.as_str())
                .bind(&m.detail)
                .bind(m.keyword.as_ref().map(|k| k.action.as_str()))
                .bind(m.keyword.as_ref().map(|k| k.keyword.as_str()))
                .bind(digest.as_str());
        });
        // The VALUES columns are numbered as bound above: meta_ts 10th, the digest 16th.
        sql.push(") AS v WHERE ")
            .push(&not_deleted_before("v.column10", "v.column16"))
            .push(" ON CONFLICT (wamid) DO NOTHING RETURNING id, wamid");
        let rows: Vec<(i64, String)> = tx.fetch(&sql).await?;
        inserted.extend(rows.into_iter().map(|(id, wamid)| (wamid, id)));
    }
    Ok(inserted)
}

/// The latest facts per conversation in a batch (one upsert row each: PostgreSQL refuses to
/// update the same row twice in one statement).
fn conversations<'a>(messages: impl Iterator<Item = &'a NewInbound>) -> Vec<&'a NewInbound> {
    let mut latest: HashMap<(&str, &str), &NewInbound> = HashMap::new();
    for m in messages.filter(|m| m.state != InboxState::Unrouted && !m.customer.is_empty()) {
        let key = (m.phone_number_id.as_str(), m.customer.as_str());
        match latest.get(&key) {
            Some(prev) if prev.meta_ts > m.meta_ts => {}
            _ => {
                latest.insert(key, m);
            }
        }
    }
    // In key order: two transactions upserting the same conversations lock them in the same
    // order, so they cannot deadlock (PostgreSQL, several replicas).
    let mut rows: Vec<&NewInbound> = latest.into_values().collect();
    rows.sort_unstable_by(|a, b| {
        (a.phone_number_id.as_str(), a.customer.as_str())
            .cmp(&(b.phone_number_id.as_str(), b.customer.as_str()))
    });
    rows
}

/// Upserts the conversations `all` touches, with their latest facts.
pub(super) async fn upsert_conversations(
    tx: &mut impl WriteTx,
    all: &[&NewInbound],
    shared: bool,
    now: i64,
) -> Result<(), StoreError> {
    let upsert_tail = if shared {
        UPSERT_CONVERSATION_TAIL_PG
    } else {
        UPSERT_CONVERSATION_TAIL_SQLITE
    };
    let convs = conversations(all.iter().copied());
    for chunk in convs.chunks(CHUNK) {
        let mut sql = Sql::new(UPSERT_CONVERSATION);
        sql.values(chunk.iter(), |t, m| {
            t.bind(&m.phone_number_id)
                .bind(&m.customer)
                .bind(&m.wa_id)
                .bind(&m.user_id)
                .bind(&m.customer_name)
                .bind(m.meta_ts)
                .bind(now);
        });
        sql.push(upsert_tail);
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// The rows of webhook `w` that go on to the pipeline. The first occurrence of a wamid in the
/// batch takes the new row (it is removed from `inserted`); rows a keyword closed in this
/// commit need no turn.
pub(super) fn fresh_rows(
    w: &WebhookWrite,
    inserted: &mut HashMap<String, i64>,
    keywords: &Committed,
    now: i64,
) -> Vec<InboxRow> {
    let mut fresh = Vec::new();
    for m in &w.messages {
        if m.state == InboxState::Received
            && let Some(id) = inserted.remove(&m.wamid)
            && !keywords.closed.contains(&id)
        {
            let mut msg = m.clone();
            if keywords.ordinary.contains(&id) {
                msg.keyword = None;
            }
            fresh.push(InboxRow {
                id,
                received_at: now,
                msg,
            });
        }
    }
    fresh
}

/// Stores the body of webhook `w` that could not be read, if it had one; marks the dead letter
/// `w` replays, if it is one, with the rows it brought.
pub(super) async fn dead_letter(
    tx: &mut impl WriteTx,
    w: &WebhookWrite,
    now: i64,
) -> Result<(), StoreError> {
    if let Some(r) = &w.replay {
        crate::store::dead_letters::mark(tx, r, now).await?;
    }
    if let Some(d) = &w.dead_letter {
        tx.run(
            "INSERT INTO dead_letters (received_at, reason, body) VALUES ($1, $2, $3)",
            [now.into(), (&d.reason).into(), (&d.body).into()],
        )
        .await?;
    }
    Ok(())
}

/// Stores webhook `w`'s echoes of the WhatsApp Business app as the business's turns (already
/// `sent`), each once: an echo whose wamid an outbox row already has (one of the gateway's own
/// sends, or the same echo delivered again) adds nothing.
pub(super) async fn echoes(
    tx: &mut impl WriteTx,
    w: &WebhookWrite,
    now: i64,
) -> Result<(), StoreError> {
    let sent = OutboxState::Sent;
    for e in &w.echoes {
        tx.run(
            "INSERT INTO outbox (inbox_id, phone_number_id, customer, recipient, recipient_kind, \
             part, payload, state, state_rank, attempts, wamid, created_at, updated_at, kind, \
             history_text) \
             SELECT NULL, $1, $2, $3, $4, 0, $5, $6, $7, 0, $8, $9, $9, $10, $11 \
             WHERE NOT EXISTS (SELECT 1 FROM outbox WHERE wamid = $8)",
            [
                (&e.phone_number_id).into(),
                (&e.customer).into(),
                (&e.recipient).into(),
                e.recipient_kind.as_str().into(),
                (&e.payload).into(),
                sent.as_str().into(),
                sent.rank().into(),
                (&e.wamid).into(),
                now.into(),
                OutboxKind::BusinessApp.as_str().into(),
                (&e.history).into(),
            ],
        )
        .await?;
    }
    Ok(())
}
