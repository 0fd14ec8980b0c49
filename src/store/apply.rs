//! Every write the gateway makes, as operations the group-commit writer applies in one
//! transaction per batch: webhooks (multi-row inserts), turn completions, send attempts and
//! outcomes, opt-outs, number overrides. Written once over [`WriteTx`]: PostgreSQL runs it through
//! sqlx ([`Store::apply`]), SQLite on the writer's own connection (`SqliteWriter::apply`). Only the
//! writer task applies operations.

use super::erase::{EraseOp, Erased, apply_erase};
use super::retention::{PruneOp, Pruned, apply_prune, not_deleted_before, wamid_digest};
use super::sql::{Sql, WriteTx};
use super::{
    InboxRow, InboxState, NewInbound, NewOutbox, OutboxRow, OutboxState, Pool, Store, StoreError,
    WebhookWrite, now_ms,
};
use std::collections::{HashMap, HashSet};

/// One write.
#[derive(Debug)]
pub enum Op {
    /// Everything one webhook carries.
    Webhook(WebhookWrite),
    /// The end of a turn: close the inbound row(s), queue the replies.
    CompleteTurn {
        inbox_id: i64,
        phone_number_id: String,
        customer: String,
        state: InboxState,
        detail: Option<String>,
        replies: Vec<NewOutbox>,
        coalesced: Vec<i64>,
        /// The sender starts on the replies at once: queue them as `sending` with their first
        /// attempt recorded, as [`Op::Attempt`] would, sparing it a commit of its own.
        attempt: bool,
    },
    /// A send attempt of an outbox row starts now.
    Attempt { id: i64 },
    /// Meta accepted an outbox row as `wamid`.
    Sent { id: i64, wamid: String },
    /// A retryable failure: back to `pending` with the error.
    Retry {
        id: i64,
        code: Option<i64>,
        message: String,
    },
    /// The row ends without delivery.
    GiveUp {
        id: i64,
        state: OutboxState,
        code: Option<i64>,
        message: String,
        /// The attempt recorded when the row was queued was never made: take it back.
        unattempted: bool,
    },
    /// An operator disconnects (or connects again) a number from the admin API.
    NumberOverride {
        phone_number_id: String,
        disconnected: bool,
        reason: Option<String>,
    },
    /// One small batch of retention's pruning.
    Prune(PruneOp),
    /// A customer's erasure, or an erased customer's opt-out made theirs again.
    Erase(EraseOp),
}

impl Op {
    /// Inbound messages this op carries (the writer caps a batch by them).
    pub fn messages(&self) -> usize {
        match self {
            Op::Webhook(w) => w.messages.len() + w.statuses.len(),
            _ => 1,
        }
    }
}

/// The result of one op.
#[derive(Debug)]
pub enum Done {
    /// New inbound rows to hand to the pipeline (redeliveries give none).
    Webhook(Vec<InboxRow>),
    /// The queued replies of a completed turn.
    Turn(Vec<OutboxRow>),
    /// Nothing to return.
    Ok,
    /// What the writer tells a webhook: how many of its messages were new.
    Accepted(usize),
    /// Whether an attempt was recorded (false: a status webhook had already settled the row).
    Attempted(bool),
    /// What a prune batch deleted and how long it took.
    Pruned(Pruned),
    /// What an erasure deleted.
    Erased(Erased),
}

/// Rows per multi-row INSERT, well under SQLite's and PostgreSQL's bind-parameter limits.
const CHUNK: usize = 1000;

const UPSERT_CONVERSATION: &str = "INSERT INTO conversations (phone_number_id, customer, \
     wa_id, user_id, customer_name, last_inbound_ts, updated_at) ";

const UPSERT_CONVERSATION_TAIL_SQLITE: &str = " ON CONFLICT (phone_number_id, customer) DO UPDATE SET \
     wa_id = COALESCE(excluded.wa_id, conversations.wa_id), \
     user_id = COALESCE(excluded.user_id, conversations.user_id), \
     customer_name = COALESCE(excluded.customer_name, conversations.customer_name), \
     last_inbound_ts = MAX(conversations.last_inbound_ts, excluded.last_inbound_ts), \
     updated_at = excluded.updated_at";

const UPSERT_CONVERSATION_TAIL_PG: &str = " ON CONFLICT (phone_number_id, customer) DO UPDATE SET \
     wa_id = COALESCE(excluded.wa_id, conversations.wa_id), \
     user_id = COALESCE(excluded.user_id, conversations.user_id), \
     customer_name = COALESCE(excluded.customer_name, conversations.customer_name), \
     last_inbound_ts = GREATEST(conversations.last_inbound_ts, excluded.last_inbound_ts), \
     updated_at = excluded.updated_at";

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

impl Store {
    /// Applies `ops` in one PostgreSQL transaction, in order. Either every op is durable, or none
    /// is. (SQLite is written only by the writer's own connection, `SqliteWriter`.)
    pub async fn apply(&self, ops: &[Op]) -> Result<Vec<Done>, StoreError> {
        let Pool::Postgres(pool) = &self.write_pool else {
            return Err(StoreError::Batch(
                "SQLite is written through the writer's own connection".into(),
            ));
        };
        let mut tx = pool.begin().await?;
        let done = apply_ops(&mut tx, ops, true, self.replica(), self.installation()).await?;
        tx.commit().await?;
        Ok(done)
    }
}

/// Applies `ops` in order inside the open transaction `tx`. `shared`: PostgreSQL, where other
/// replicas write too; `replica` names this one in the leases it holds; `installation` is the
/// database's id, which status webhooks must echo to settle a reply.
pub(super) async fn apply_ops(
    tx: &mut impl WriteTx,
    ops: &[Op],
    shared: bool,
    replica: &str,
    installation: &str,
) -> Result<Vec<Done>, StoreError> {
    let now = now_ms();
    let upsert_tail = if shared {
        UPSERT_CONVERSATION_TAIL_PG
    } else {
        UPSERT_CONVERSATION_TAIL_SQLITE
    };
    let mut done: Vec<Done> = Vec::with_capacity(ops.len());

    // Inbound messages of every webhook in the batch: one multi-row insert per chunk.
    let all: Vec<&NewInbound> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Webhook(w) => Some(w.messages.iter()),
            _ => None,
        })
        .flatten()
        .collect();
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
                .bind(&m.msg_type)
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
    // Other replicas learn of the conversations with new messages when this commits
    // (NOTIFY is transactional); the receiving replica is told by the writer directly.
    if shared && !inserted.is_empty() {
        let mut keys: Vec<(&str, &str)> = all
            .iter()
            .filter(|m| m.state == InboxState::Received && inserted.contains_key(&m.wamid))
            .map(|m| (m.phone_number_id.as_str(), m.customer.as_str()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        for payload in super::cluster::work_payloads(keys.into_iter()) {
            tx.run(
                "SELECT pg_notify($1, $2)",
                [super::cluster::WORK_CHANNEL.into(), payload.as_str().into()],
            )
            .await?;
        }
    }
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
    // Opt-outs take effect here, with the message that says so (before the turns below close,
    // so a turn this keyword cuts off queues nothing).
    let keywords = super::keywords::commit(tx, &all, &inserted, now).await?;

    super::settle::statuses(tx, ops, shared, installation, now).await?;

    // Turns close their messages first, and only a message still waiting can be closed:
    // if two replicas ever ran the same turn (one stalled past its lease), the second
    // one's replies are not queued, so the customer hears one answer.
    let mut closed: HashSet<i64> = HashSet::new();
    // Turns closed as plain `done` (the common case) in one statement.
    let plain_done: Vec<i64> = ops
        .iter()
        .filter_map(|op| match op {
            Op::CompleteTurn {
                inbox_id,
                state: InboxState::Done,
                detail: None,
                ..
            } => Some(*inbox_id),
            _ => None,
        })
        .collect();
    for chunk in plain_done.chunks(CHUNK) {
        let mut sql = Sql::new("UPDATE inbox SET state = 'done', handled_at = ");
        sql.bind(now).push(" WHERE state = 'received' AND id IN (");
        sql.list(chunk.iter().copied()).push(") RETURNING id");
        let rows: Vec<(i64,)> = tx.fetch(&sql).await?;
        closed.extend(rows.into_iter().map(|(id,)| id));
    }
    for op in ops {
        let Op::CompleteTurn {
            inbox_id,
            state,
            detail,
            coalesced,
            ..
        } = op
        else {
            continue;
        };
        if !(*state == InboxState::Done && detail.is_none()) {
            let changed = tx
                .run(
                    "UPDATE inbox SET state = $1, detail = $2, handled_at = $3 WHERE id = $4 \
                     AND state = 'received'",
                    [
                        state.as_str().into(),
                        detail.into(),
                        now.into(),
                        (*inbox_id).into(),
                    ],
                )
                .await?;
            if changed == 1 {
                closed.insert(*inbox_id);
            }
        }
        if !closed.contains(inbox_id) {
            tracing::warn!(
                inbox_id,
                "turn already completed elsewhere; its replies are dropped"
            );
            continue;
        }
        for id in coalesced {
            let why = format!("coalesced into the turn of inbox row {inbox_id}");
            tx.run(
                "UPDATE inbox SET state = 'done', detail = $1, handled_at = $2 WHERE id = $3 \
                 AND state = 'received'",
                [why.as_str().into(), now.into(), (*id).into()],
            )
            .await?;
        }
    }

    // Replies of every turn in the batch: one multi-row insert, mapped back by (turn, part).
    let replies: Vec<(i64, &str, &str, bool, &NewOutbox)> = ops
        .iter()
        .filter_map(|op| match op {
            Op::CompleteTurn {
                inbox_id,
                phone_number_id,
                customer,
                replies,
                attempt,
                ..
            } if closed.contains(inbox_id) => Some(replies.iter().map(move |r| {
                (
                    *inbox_id,
                    phone_number_id.as_str(),
                    customer.as_str(),
                    *attempt,
                    r,
                )
            })),
            _ => None,
        })
        .flatten()
        .collect();
    let mut reply_ids: HashMap<(i64, i64), i64> = HashMap::new();
    for chunk in replies.chunks(CHUNK) {
        let mut sql = Sql::new(
            "INSERT INTO outbox (inbox_id, phone_number_id, customer, recipient, recipient_kind, \
             part, payload, state, state_rank, attempts, sending_since, created_at, updated_at, kind) ",
        );
        sql.values(chunk.iter(), |t, (inbox_id, pnid, customer, attempt, r)| {
            let state = if *attempt {
                OutboxState::Sending
            } else {
                OutboxState::Pending
            };
            t.bind(*inbox_id)
                .bind(*pnid)
                .bind(*customer)
                .bind(&r.recipient)
                .bind(r.recipient_kind.as_str())
                .bind(r.part)
                .bind(&r.payload)
                .bind(state.as_str())
                .bind(state.rank())
                .bind(i64::from(*attempt))
                .bind(attempt.then_some(now))
                .bind(now)
                .bind(now)
                .bind(r.kind.as_str());
        });
        sql.push(" RETURNING id, inbox_id, part");
        let rows: Vec<(i64, i64, i64)> = tx.fetch(&sql).await?;
        reply_ids.extend(
            rows.into_iter()
                .map(|(id, inbox, part)| ((inbox, part), id)),
        );
    }
    // Send attempts of the batch in one statement; rows already settled are left alone.
    let attempts: Vec<i64> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Attempt { id } => Some(*id),
            _ => None,
        })
        .collect();
    let mut attempted: HashSet<i64> = HashSet::new();
    for chunk in attempts.chunks(CHUNK) {
        let mut sql = Sql::new(
            "UPDATE outbox SET state = 'sending', state_rank = 1, attempts = attempts + 1, sending_since = ",
        );
        sql.bind(now).push(", updated_at = ").bind(now);
        sql.push(" WHERE state_rank <= 1 AND id IN (")
            .list(chunk.iter().copied())
            .push(")");
        if shared {
            // Only the replica holding the conversation's lease may send its replies: one
            // whose lease ran out (and was taken over) must not send them too.
            sql.push(
                " AND EXISTS (SELECT 1 FROM conversation_leases l \
                 WHERE l.phone_number_id = outbox.phone_number_id \
                 AND l.customer = outbox.customer AND l.owner = ",
            );
            sql.bind(replica)
                .push(" AND l.expires_at > ")
                .push(super::cluster::NOW_MS)
                .push(")");
        }
        sql.push(" RETURNING id");
        let rows: Vec<(i64,)> = tx.fetch(&sql).await?;
        attempted.extend(rows.into_iter().map(|(id,)| id));
    }

    for op in ops {
        match op {
            Op::Webhook(w) => {
                let mut fresh = Vec::new();
                for m in &w.messages {
                    // The first occurrence of a wamid in the batch takes the new row; rows a
                    // keyword closed in this commit need no turn.
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
                if let Some(d) = &w.dead_letter {
                    tx.run(
                        "INSERT INTO dead_letters (received_at, reason, body) VALUES ($1, $2, $3)",
                        [now.into(), (&d.reason).into(), (&d.body).into()],
                    )
                    .await?;
                }
                done.push(Done::Webhook(fresh));
            }
            Op::CompleteTurn {
                inbox_id,
                phone_number_id,
                customer,
                replies,
                attempt,
                ..
            } => {
                let (state, attempts, sending_since) = if *attempt {
                    (OutboxState::Sending, 1, Some(now))
                } else {
                    (OutboxState::Pending, 0, None)
                };
                let rows = replies
                    .iter()
                    .filter_map(|r| {
                        let id = *reply_ids.get(&(*inbox_id, r.part))?;
                        Some(OutboxRow {
                            id,
                            inbox_id: Some(*inbox_id),
                            phone_number_id: phone_number_id.clone(),
                            customer: customer.clone(),
                            recipient: r.recipient.clone(),
                            recipient_kind: r.recipient_kind,
                            part: r.part,
                            payload: r.payload.clone(),
                            state,
                            attempts,
                            wamid: None,
                            sending_since,
                            kind: r.kind,
                            created_at: now,
                        })
                    })
                    .collect();
                done.push(Done::Turn(rows));
            }
            Op::Attempt { id } => done.push(Done::Attempted(attempted.contains(id))),
            Op::Sent { .. } => done.push(Done::Ok),
            Op::Retry { id, code, message } => {
                tx.run(
                    "UPDATE outbox SET state = 'pending', state_rank = 0, error_code = $1, \
                     error_message = $2, updated_at = $3 WHERE id = $4 AND state_rank <= 1",
                    [(*code).into(), message.into(), now.into(), (*id).into()],
                )
                .await?;
                done.push(Done::Ok);
            }
            Op::GiveUp {
                id,
                state,
                code,
                message,
                unattempted,
            } => {
                tx.run(
                    "UPDATE outbox SET state = $1, state_rank = $2, error_code = $3, error_message = $4, \
                     updated_at = $5, attempts = attempts - $7 WHERE id = $6 AND state_rank < 2",
                    [
                        state.as_str().into(),
                        state.rank().into(),
                        (*code).into(),
                        message.into(),
                        now.into(),
                        (*id).into(),
                        i64::from(*unattempted).into(),
                    ],
                )
                .await?;
                done.push(Done::Ok);
            }
            Op::NumberOverride {
                phone_number_id,
                disconnected,
                reason,
            } => {
                tx.run(
                    "INSERT INTO number_overrides (phone_number_id, disconnected, changed_at, reason) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (phone_number_id) DO UPDATE SET \
                     disconnected = excluded.disconnected, changed_at = excluded.changed_at, \
                     reason = excluded.reason",
                    [
                        phone_number_id.into(),
                        i64::from(*disconnected).into(),
                        now.into(),
                        reason.into(),
                    ],
                )
                .await?;
                if shared {
                    tx.run(
                        "SELECT pg_notify($1, $2)",
                        [
                            super::cluster::OVERRIDES_CHANNEL.into(),
                            phone_number_id.into(),
                        ],
                    )
                    .await?;
                }
                done.push(Done::Ok);
            }
            Op::Prune(op) => done.push(Done::Pruned(apply_prune(tx, op, shared).await?)),
            Op::Erase(op) => done.push(Done::Erased(apply_erase(tx, op, shared).await?)),
        }
    }
    Ok(done)
}
