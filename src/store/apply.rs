//! Every write the gateway makes, as operations the group-commit writer applies in one
//! transaction per batch: webhooks (multi-row inserts), turn completions, send attempts and
//! outcomes, opt-outs, number overrides. Only the writer task calls `Store::apply`.

use super::{
    InboxRow, InboxState, NewInbound, NewOutbox, OutboxRow, OutboxState, Store, StoreError,
    WebhookWrite, now_ms, on_pool, parse_callback_data,
};
use std::collections::HashMap;
use std::collections::hash_map::Entry;

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
    /// An opt-out (or opt-in) by keyword.
    OptOut {
        phone_number_id: String,
        customer: String,
        opted_out: bool,
        keyword: String,
        wamid: String,
    },
    /// An operator disconnects (or connects again) a number from the admin API.
    NumberOverride {
        phone_number_id: String,
        disconnected: bool,
        reason: Option<String>,
    },
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

/// What one row of the outbox moves to: a status webhook's, or Meta's answer to the send
/// (`sent`, with the wamid it gave).
struct Settle<'a> {
    state: OutboxState,
    wamid: &'a str,
    error_code: Option<i64>,
    error_title: Option<&'a str>,
}

impl<'a> Settle<'a> {
    /// Keeps the furthest state per row (the first one seen among equals).
    fn merge_into<K>(self, entry: Entry<'_, K, Settle<'a>>) {
        match entry {
            Entry::Vacant(v) => {
                v.insert(self);
            }
            Entry::Occupied(mut o) => {
                if self.state.rank() > o.get().state.rank() {
                    o.insert(self);
                }
            }
        }
    }
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

impl Store {
    /// Applies `ops` in one transaction, in order. Either every op is durable, or none is.
    pub async fn apply(&self, ops: &[Op]) -> Result<Vec<Done>, StoreError> {
        let now = now_ms();
        let shared = self.is_shared();
        let replica = self.replica().to_owned();
        let upsert_tail = match self.kind() {
            "sqlite" => UPSERT_CONVERSATION_TAIL_SQLITE,
            _ => UPSERT_CONVERSATION_TAIL_PG,
        };
        on_pool!(write self, |pool| {
            let mut tx = pool.begin().await?;
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
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO inbox (wamid, phone_number_id, customer, wa_id, user_id, customer_name, \
                     msg_type, text, payload, meta_ts, received_at, state, detail) ",
                );
                qb.push_values(chunk.iter(), |mut b, m| {
                    b.push_bind(&m.wamid)
                        .push_bind(&m.phone_number_id)
                        .push_bind(&m.customer)
                        .push_bind(&m.wa_id)
                        .push_bind(&m.user_id)
                        .push_bind(&m.customer_name)
                        .push_bind(&m.msg_type)
                        .push_bind(&m.text)
                        .push_bind(&m.payload)
                        .push_bind(m.meta_ts)
                        .push_bind(now)
                        .push_bind(m.state.as_str())
                        .push_bind(&m.detail);
                });
                qb.push(" ON CONFLICT (wamid) DO NOTHING RETURNING id, wamid");
                let rows: Vec<(i64, String)> = qb.build_query_as().fetch_all(&mut *tx).await?;
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
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(super::cluster::WORK_CHANNEL)
                        .bind(payload)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            let convs = conversations(all.iter().copied());
            for chunk in convs.chunks(CHUNK) {
                let mut qb = sqlx::QueryBuilder::new(UPSERT_CONVERSATION);
                qb.push_values(chunk.iter(), |mut b, m| {
                    b.push_bind(&m.phone_number_id)
                        .push_bind(&m.customer)
                        .push_bind(&m.wa_id)
                        .push_bind(&m.user_id)
                        .push_bind(&m.customer_name)
                        .push_bind(m.meta_ts)
                        .push_bind(now);
                });
                qb.push(upsert_tail);
                qb.build().execute(&mut *tx).await?;
            }

            // Statuses of the whole batch, the highest per row: statuses arrive out of order and
            // more than once, a row only moves forward, and PostgreSQL updates a row at most once
            // per statement. The callback id finds a row whose send was never recorded (a crash
            // between send and record), so it also fills in the wamid. Meta's answers to sends
            // join them as `sent` with the wamid the answer gave: one statement for both.
            let mut by_id: HashMap<i64, Settle> = HashMap::new();
            let mut by_wamid: HashMap<&str, Settle> = HashMap::new();
            for op in ops {
                if let Op::Sent { id, wamid } = op {
                    Settle { state: OutboxState::Sent, wamid, error_code: None, error_title: None }
                        .merge_into(by_id.entry(*id));
                }
                let Op::Webhook(w) = op else { continue };
                for st in &w.statuses {
                    if st.status == "failed" || st.error_code.is_some() {
                        sqlx::query(
                            "INSERT INTO status_events (wamid, status, meta_ts, \
                             biz_opaque_callback_data, error_code, error_title, received_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        )
                        .bind(&st.wamid)
                        .bind(&st.status)
                        .bind(st.meta_ts)
                        .bind(&st.callback)
                        .bind(st.error_code)
                        .bind(&st.error_title)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    let Some(state) = OutboxState::parse(&st.status).filter(|s| s.is_settled()) else {
                        continue;
                    };
                    let settle = Settle {
                        state,
                        wamid: &st.wamid,
                        error_code: st.error_code,
                        error_title: st.error_title.as_deref(),
                    };
                    match st.callback.as_deref().and_then(parse_callback_data) {
                        Some(id) => settle.merge_into(by_id.entry(id)),
                        None => settle.merge_into(by_wamid.entry(st.wamid.as_str())),
                    }
                }
            }
            // With several replicas, two batches may touch the same replies (one records Meta's
            // answer, the other its status webhooks) in different orders: lock every reply this
            // batch touches first, in id order, so they wait for each other instead of deadlocking.
            if shared {
                let mut ids: Vec<i64> = by_id.keys().copied().collect();
                ids.extend(ops.iter().filter_map(|op| match op {
                    Op::Attempt { id }
                    | Op::Sent { id, .. }
                    | Op::Retry { id, .. }
                    | Op::GiveUp { id, .. } => Some(*id),
                    _ => None,
                }));
                ids.sort_unstable();
                ids.dedup();
                if !ids.is_empty() || !by_wamid.is_empty() {
                    let mut qb = sqlx::QueryBuilder::new("SELECT id FROM outbox WHERE id IN (");
                    let mut sep = qb.separated(", ");
                    sep.push_bind(-1_i64);
                    for id in &ids {
                        sep.push_bind(*id);
                    }
                    qb.push(") OR wamid IN (");
                    let mut sep = qb.separated(", ");
                    sep.push_bind("");
                    for wamid in by_wamid.keys() {
                        sep.push_bind(*wamid);
                    }
                    qb.push(") ORDER BY id FOR UPDATE");
                    qb.build().execute(&mut *tx).await?;
                }
            }
            // One statement shape for both keys; matching by wamid, column4 is that same wamid.
            macro_rules! settle_statuses {
                ($rows:expr, $key:literal) => {
                    for chunk in $rows.chunks(CHUNK) {
                        let mut qb = sqlx::QueryBuilder::new(
                            "UPDATE outbox SET state = v.column2, state_rank = v.column3, \
                             wamid = COALESCE(outbox.wamid, v.column4), \
                             error_code = COALESCE(v.column5, outbox.error_code), \
                             error_message = COALESCE(v.column6, outbox.error_message), updated_at = ",
                        );
                        qb.push_bind(now);
                        qb.push(" FROM (");
                        qb.push_values(chunk.iter(), |mut b, (key, st)| {
                            b.push_bind(*key)
                                .push_bind(st.state.as_str())
                                .push_bind(st.state.rank())
                                .push_bind(st.wamid)
                                .push_bind(st.error_code)
                                .push_bind(st.error_title);
                        });
                        qb.push(concat!(
                            ") AS v WHERE outbox.",
                            $key,
                            " = v.column1 AND outbox.state_rank < v.column3"
                        ));
                        qb.build().execute(&mut *tx).await?;
                    }
                };
            }
            let by_id: Vec<_> = by_id.into_iter().collect();
            settle_statuses!(by_id, "id");
            let by_wamid: Vec<_> = by_wamid.into_iter().collect();
            settle_statuses!(by_wamid, "wamid");

            // Turns close their messages first, and only a message still waiting can be closed:
            // if two replicas ever ran the same turn (one stalled past its lease), the second
            // one's replies are not queued, so the customer hears one answer.
            let mut closed: std::collections::HashSet<i64> = std::collections::HashSet::new();
            // Turns closed as plain `done` (the common case) in one statement.
            let plain_done: Vec<i64> = ops
                .iter()
                .filter_map(|op| match op {
                    Op::CompleteTurn { inbox_id, state: InboxState::Done, detail: None, .. } => Some(*inbox_id),
                    _ => None,
                })
                .collect();
            for chunk in plain_done.chunks(CHUNK) {
                let mut qb = sqlx::QueryBuilder::new("UPDATE inbox SET state = 'done', handled_at = ");
                qb.push_bind(now);
                qb.push(" WHERE state = 'received' AND id IN (");
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                qb.push(") RETURNING id");
                let rows: Vec<(i64,)> = qb.build_query_as().fetch_all(&mut *tx).await?;
                closed.extend(rows.into_iter().map(|(id,)| id));
            }
            for op in ops {
                let Op::CompleteTurn { inbox_id, state, detail, coalesced, .. } = op else { continue };
                if !(*state == InboxState::Done && detail.is_none()) {
                    let done = sqlx::query(
                        "UPDATE inbox SET state = $1, detail = $2, handled_at = $3 WHERE id = $4 \
                         AND state = 'received'",
                    )
                    .bind(state.as_str())
                    .bind(detail)
                    .bind(now)
                    .bind(inbox_id)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 1 {
                        closed.insert(*inbox_id);
                    }
                }
                if !closed.contains(inbox_id) {
                    tracing::warn!(inbox_id, "turn already completed elsewhere; its replies are dropped");
                    continue;
                }
                for id in coalesced {
                    sqlx::query(
                        "UPDATE inbox SET state = 'done', detail = $1, handled_at = $2 WHERE id = $3 \
                         AND state = 'received'",
                    )
                    .bind(format!("coalesced into the turn of inbox row {inbox_id}"))
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
            }

            // Replies of every turn in the batch: one multi-row insert, mapped back by (turn, part).
            let replies: Vec<(i64, &str, &str, bool, &NewOutbox)> = ops
                .iter()
                .filter_map(|op| match op {
                    Op::CompleteTurn { inbox_id, phone_number_id, customer, replies, attempt, .. }
                        if closed.contains(inbox_id) => Some(replies.iter().map(move |r| {
                        (*inbox_id, phone_number_id.as_str(), customer.as_str(), *attempt, r)
                    })),
                    _ => None,
                })
                .flatten()
                .collect();
            let mut reply_ids: HashMap<(i64, i64), i64> = HashMap::new();
            for chunk in replies.chunks(CHUNK) {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO outbox (inbox_id, phone_number_id, customer, recipient, recipient_kind, \
                     part, payload, state, state_rank, attempts, sending_since, created_at, updated_at, kind) ",
                );
                qb.push_values(chunk.iter(), |mut b, (inbox_id, pnid, customer, attempt, r)| {
                    let state = if *attempt { OutboxState::Sending } else { OutboxState::Pending };
                    b.push_bind(*inbox_id)
                        .push_bind(*pnid)
                        .push_bind(*customer)
                        .push_bind(&r.recipient)
                        .push_bind(&r.recipient_kind)
                        .push_bind(r.part)
                        .push_bind(&r.payload)
                        .push_bind(state.as_str())
                        .push_bind(state.rank())
                        .push_bind(i64::from(*attempt))
                        .push_bind(attempt.then_some(now))
                        .push_bind(now)
                        .push_bind(now)
                        .push_bind(r.kind.as_str());
                });
                qb.push(" RETURNING id, inbox_id, part");
                let rows: Vec<(i64, i64, i64)> = qb.build_query_as().fetch_all(&mut *tx).await?;
                reply_ids.extend(rows.into_iter().map(|(id, inbox, part)| ((inbox, part), id)));
            }
            // Send attempts of the batch in one statement; rows already settled are left alone.
            let attempts: Vec<i64> = ops
                .iter()
                .filter_map(|op| match op {
                    Op::Attempt { id } => Some(*id),
                    _ => None,
                })
                .collect();
            let mut attempted: std::collections::HashSet<i64> = std::collections::HashSet::new();
            for chunk in attempts.chunks(CHUNK) {
                let mut qb = sqlx::QueryBuilder::new(
                    "UPDATE outbox SET state = 'sending', state_rank = 1, attempts = attempts + 1, sending_since = ",
                );
                qb.push_bind(now);
                qb.push(", updated_at = ");
                qb.push_bind(now);
                qb.push(" WHERE state_rank <= 1 AND id IN (");
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                qb.push(")");
                if shared {
                    // Only the replica holding the conversation's lease may send its replies: one
                    // whose lease ran out (and was taken over) must not send them too.
                    qb.push(
                        " AND EXISTS (SELECT 1 FROM conversation_leases l \
                         WHERE l.phone_number_id = outbox.phone_number_id \
                         AND l.customer = outbox.customer AND l.owner = ",
                    );
                    qb.push_bind(&replica);
                    qb.push(" AND l.expires_at > ");
                    qb.push(super::cluster::NOW_MS);
                    qb.push(")");
                }
                qb.push(" RETURNING id");
                let rows: Vec<(i64,)> = qb.build_query_as().fetch_all(&mut *tx).await?;
                attempted.extend(rows.into_iter().map(|(id,)| id));
            }

            for op in ops {
                match op {
                    Op::Webhook(w) => {
                        let mut fresh = Vec::new();
                        for m in &w.messages {
                            // The first occurrence of a wamid in the batch takes the new row.
                            if m.state == InboxState::Received
                                && let Some(id) = inserted.remove(&m.wamid)
                            {
                                fresh.push(InboxRow { id, received_at: now, msg: m.clone() });
                            }
                        }
                        if let Some(d) = &w.dead_letter {
                            sqlx::query("INSERT INTO dead_letters (received_at, reason, body) VALUES ($1, $2, $3)")
                                .bind(now)
                                .bind(&d.reason)
                                .bind(&d.body)
                                .execute(&mut *tx)
                                .await?;
                        }
                        done.push(Done::Webhook(fresh));
                    }
                    Op::CompleteTurn { inbox_id, phone_number_id, customer, replies, attempt, .. } => {
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
                                    recipient_kind: r.recipient_kind.clone(),
                                    part: r.part,
                                    payload: r.payload.clone(),
                                    state,
                                    attempts,
                                    wamid: None,
                                    sending_since,
                                    kind: r.kind,
                                })
                            })
                            .collect();
                        done.push(Done::Turn(rows));
                    }
                    Op::Attempt { id } => done.push(Done::Attempted(attempted.contains(id))),
                    Op::Sent { .. } => done.push(Done::Ok),
                    Op::Retry { id, code, message } => {
                        sqlx::query(
                            "UPDATE outbox SET state = 'pending', state_rank = 0, error_code = $1, \
                             error_message = $2, updated_at = $3 WHERE id = $4 AND state_rank <= 1",
                        )
                        .bind(code)
                        .bind(message)
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                        done.push(Done::Ok);
                    }
                    Op::GiveUp { id, state, code, message, unattempted } => {
                        sqlx::query(
                            "UPDATE outbox SET state = $1, state_rank = $2, error_code = $3, error_message = $4, \
                             updated_at = $5, attempts = attempts - $7 WHERE id = $6 AND state_rank < 2",
                        )
                        .bind(state.as_str())
                        .bind(state.rank())
                        .bind(code)
                        .bind(message)
                        .bind(now)
                        .bind(id)
                        .bind(i64::from(*unattempted))
                        .execute(&mut *tx)
                        .await?;
                        done.push(Done::Ok);
                    }
                    Op::OptOut { phone_number_id, customer, opted_out, keyword, wamid } => {
                        let flag = i64::from(*opted_out);
                        sqlx::query(
                            "INSERT INTO opt_outs (phone_number_id, customer, opted_out, keyword, changed_at) \
                             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (phone_number_id, customer) DO UPDATE SET \
                             opted_out = excluded.opted_out, keyword = excluded.keyword, changed_at = excluded.changed_at",
                        )
                        .bind(phone_number_id)
                        .bind(customer)
                        .bind(flag)
                        .bind(keyword)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query(
                            "INSERT INTO opt_out_events (phone_number_id, customer, opted_out, keyword, wamid, at) \
                             VALUES ($1, $2, $3, $4, $5, $6)",
                        )
                        .bind(phone_number_id)
                        .bind(customer)
                        .bind(flag)
                        .bind(keyword)
                        .bind(wamid)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        done.push(Done::Ok);
                    }
                    Op::NumberOverride { phone_number_id, disconnected, reason } => {
                        sqlx::query(
                            "INSERT INTO number_overrides (phone_number_id, disconnected, changed_at, reason) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT (phone_number_id) DO UPDATE SET \
                             disconnected = excluded.disconnected, changed_at = excluded.changed_at, \
                             reason = excluded.reason",
                        )
                        .bind(phone_number_id)
                        .bind(i64::from(*disconnected))
                        .bind(now)
                        .bind(reason)
                        .execute(&mut *tx)
                        .await?;
                        if shared {
                            sqlx::query("SELECT pg_notify($1, $2)")
                                .bind(super::cluster::OVERRIDES_CHANNEL)
                                .bind(phone_number_id)
                                .execute(&mut *tx)
                                .await?;
                        }
                        done.push(Done::Ok);
                    }
                }
            }
            tx.commit().await?;
            Ok(done)
        })
    }
}
