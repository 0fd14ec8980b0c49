//! Every write the gateway makes, as operations the group-commit writer applies in one
//! transaction per batch: webhooks (multi-row inserts), turn completions, send attempts and
//! outcomes, opt-outs, number overrides, paused conversations. Written once over [`WriteTx`]:
//! PostgreSQL runs it through sqlx ([`Store::apply`]), SQLite on the writer's own connection
//! (`SqliteWriter::apply`). Only the writer task applies operations. The phases live beside
//! this file, one per kind of write; this file fixes their order, which is part of the contract
//! (see `apply_ops`).

mod inbound;
mod leases;
mod operator;
mod outbox;
mod turns;

use super::erase::{EraseOp, Erased, apply_erase};
use super::pause::{HandoffOp, apply_handoff};
use super::retention::{PruneOp, Pruned, apply_prune};
use super::sql::WriteTx;
use super::{
    InboxRow, InboxState, MediaUpload, NewOutbox, OutboxRow, OutboxState, Store, StoreError,
    WebhookWrite, now_ms,
};
use std::collections::{HashMap, HashSet};

pub use leases::LeaseClaim;

/// One write.
#[derive(Debug)]
pub enum Op {
    /// Everything one webhook carries.
    Webhook(WebhookWrite),
    /// The end of a turn: close the inbound row(s), queue the replies.
    CompleteTurn(TurnEnd),
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
    /// A number uploaded a media file to Meta: cache its media id by the file's hash.
    MediaUploaded(MediaUpload),
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
    /// A conversation paused or resumed (human handoff), or a handoff notification's outcome.
    Handoff(HandoffOp),
    /// An operator sends a `failed` or `expired` reply again: back to `pending`.
    Requeue { id: i64 },
    /// PostgreSQL: this replica gives back its lease on a conversation, unless the conversation
    /// got messages since commit count `seq` (what its holder has read up to).
    ReleaseLease {
        phone_number_id: String,
        customer: String,
        seq: i64,
    },
}

/// The end of a turn, as [`Op::CompleteTurn`] carries it.
#[derive(Debug)]
pub struct TurnEnd {
    pub inbox_id: i64,
    pub phone_number_id: String,
    pub customer: String,
    pub state: InboxState,
    pub detail: Option<String>,
    pub replies: Vec<NewOutbox>,
    pub coalesced: Vec<i64>,
    /// The sender starts on the replies at once: queue them as `sending` with their first
    /// attempt recorded, as [`Op::Attempt`] would, sparing it a commit of its own.
    pub attempt: bool,
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

/// What a batch answers, grouped by what each kind of op answers; every list holds one answer
/// per op of its kind, in the order of those ops.
#[derive(Debug, Default)]
pub struct Answers {
    /// Per [`Op::Webhook`]: its new inbound rows, for the pipeline (redeliveries give none).
    pub webhooks: Vec<Vec<InboxRow>>,
    /// Per [`Op::CompleteTurn`]: the replies it queued.
    pub turns: Vec<Vec<OutboxRow>>,
    /// Per [`Op::Attempt`]: whether it was recorded (false: a status webhook had already
    /// settled the row).
    pub attempts: Vec<bool>,
    /// How many ops answer only that they are durable ([`Op::Sent`], [`Op::Retry`],
    /// [`Op::GiveUp`], [`Op::MediaUploaded`], [`Op::NumberOverride`], [`Op::Handoff`]).
    pub writes: usize,
    /// Per [`Op::Prune`]: what it deleted and how long it took.
    pub pruned: Vec<Pruned>,
    /// Per [`Op::Erase`]: what it deleted.
    pub erased: Vec<Erased>,
    /// Per [`Op::ReleaseLease`]: whether the lease was given back.
    pub released: Vec<bool>,
    /// Per [`Op::Requeue`]: whether the row was ended and is now `pending`.
    pub requeued: Vec<bool>,
    /// PostgreSQL: the leases of the conversations the batch's webhooks brought new messages
    /// to, as the batch's claim found them (see [`LeaseClaim`]).
    pub claims: Vec<LeaseClaim>,
}

/// Rows per multi-row statement, well under SQLite's and PostgreSQL's bind-parameter limits.
const CHUNK: usize = 1000;

impl Store {
    /// Applies `ops` in one PostgreSQL transaction, in order, on the writer's own connection;
    /// then gives back the leases the batch releases. Either every op is durable, or none is.
    /// (SQLite is written only by the writer's own connection, `SqliteWriter`.)
    pub async fn apply(&self, ops: &[Op]) -> Result<Answers, StoreError> {
        let Some(pg) = &self.pg else {
            return Err(StoreError::Batch(
                "SQLite is written through the writer's own connection".into(),
            ));
        };
        use sqlx::Connection;
        let cluster = Cluster {
            replica: self.replica(),
            lease_ms: self.lease_ms,
        };
        let mut c = pg.writer.get().await?;
        let conn = c.conn();
        let mut tx = conn.begin().await?;
        let mut done = apply_ops(&mut tx, ops, Some(&cluster), self.installation()).await?;
        tx.commit().await?;
        // The batch is durable: whatever happens now must not fail it (its ops would be applied
        // again, one by one, and find their work done).
        match leases::release(conn, ops, cluster.replica).await {
            Ok(released) => {
                done.released = released;
                c.completed();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot give conversation leases back; their holders keep them");
                done.released = leases::kept(ops);
            }
        }
        Ok(done)
    }
}

/// The replica applying a batch, with several replicas on PostgreSQL.
pub(super) struct Cluster<'a> {
    /// Names this replica in the leases it holds.
    pub replica: &'a str,
    /// How long a lease taken or renewed lasts.
    pub lease_ms: i64,
}

/// Applies `ops` in order inside the open transaction `tx`. `cluster`: PostgreSQL, where other
/// replicas write too (`None` on SQLite); `installation` is the database's id, which status
/// webhooks must echo to settle a reply.
///
/// The phases run in this order, each over the whole batch: inbound messages and their
/// conversations, opt-out keywords, the leases of the conversations with new messages, statuses
/// and Meta's answers, turns closing their messages, the replies of the turns that closed (sent
/// at once only under the conversation's lease), send attempts; then each op's own statements,
/// in op order.
pub(super) async fn apply_ops(
    tx: &mut impl WriteTx,
    ops: &[Op],
    cluster: Option<&Cluster<'_>>,
    installation: &str,
) -> Result<Answers, StoreError> {
    let now = now_ms();
    let shared = cluster.is_some();
    let replica = cluster.map_or("local", |c| c.replica);
    let all = inbound::messages(ops);
    let inserted = inbound::insert(tx, &all, now).await?;
    inbound::upsert_conversations(tx, &all, &inserted, shared, now).await?;
    if !shared {
        inbound::note_numbers(tx, &all, &inserted, now).await?;
    }
    // Opt-outs take effect here, with the message that says so (before the turns below close,
    // so a turn this keyword cuts off queues nothing).
    let keywords = super::keywords::commit(tx, &all, &inserted, now).await?;
    let claims = match cluster {
        Some(c) => {
            leases::claim(tx, &all, &inserted, &keywords.closed, c.replica, c.lease_ms).await?
        }
        None => Vec::new(),
    };
    super::settle::statuses(tx, ops, shared, installation, now).await?;
    let closed = turns::close(tx, ops, now).await?;
    let reply_ids = turns::queue_replies(tx, ops, &closed, now).await?;
    let unleased = match cluster {
        Some(c) => {
            leases::unleased_attempts(tx, &turns::attempted(ops, &reply_ids), c.replica).await?
        }
        None => HashSet::new(),
    };
    let attempted = outbox::attempts(tx, ops, shared, replica, now).await?;

    let batch = Batch {
        shared,
        now,
        inserted,
        keywords,
        reply_ids,
        unleased,
        attempted,
    };
    let mut answers = each_op(tx, ops, batch).await?;
    answers.claims = claims;
    Ok(answers)
}

/// What the phases over the whole batch found, which the ops' answers are made of.
struct Batch {
    shared: bool,
    now: i64,
    /// The new inbox rows by wamid (each is taken by the first webhook in the batch that has it).
    inserted: HashMap<String, i64>,
    keywords: super::keywords::Committed,
    /// The queued replies' ids by (inbox row, part).
    reply_ids: HashMap<(i64, i64), i64>,
    /// Replies queued to be sent at once whose conversation's lease this replica lost: queued
    /// `pending` instead (PostgreSQL).
    unleased: HashSet<i64>,
    /// The outbox rows whose send attempt was recorded.
    attempted: HashSet<i64>,
}

/// Each op's own statements, in op order, and its answer.
async fn each_op(
    tx: &mut impl WriteTx,
    ops: &[Op],
    mut batch: Batch,
) -> Result<Answers, StoreError> {
    let (shared, now) = (batch.shared, batch.now);
    let mut answers = Answers::default();
    for op in ops {
        match op {
            Op::Webhook(w) => {
                let fresh = inbound::fresh_rows(w, &mut batch.inserted, &batch.keywords, now);
                inbound::dead_letter(tx, w, now).await?;
                inbound::echoes(tx, w, now).await?;
                answers.webhooks.push(fresh);
            }
            Op::CompleteTurn(turn) => {
                let rows = turns::queued(turn, &batch.reply_ids, &batch.unleased, now);
                answers.turns.push(rows);
            }
            Op::Attempt { id } => answers.attempts.push(batch.attempted.contains(id)),
            Op::Sent { .. } => answers.writes += 1,
            Op::Retry { id, code, message } => {
                outbox::retry(tx, *id, *code, message, now).await?;
                answers.writes += 1;
            }
            Op::GiveUp {
                id,
                state,
                code,
                message,
                unattempted,
            } => {
                outbox::give_up(tx, *id, *state, *code, message, *unattempted, now).await?;
                answers.writes += 1;
            }
            Op::MediaUploaded(upload) => {
                super::media::record(tx, upload).await?;
                answers.writes += 1;
            }
            Op::NumberOverride {
                phone_number_id,
                disconnected,
                reason,
            } => {
                let reason = reason.as_deref();
                operator::number_override(tx, phone_number_id, *disconnected, reason, shared, now)
                    .await?;
                answers.writes += 1;
            }
            Op::Prune(op) => answers.pruned.push(apply_prune(tx, op, shared).await?),
            Op::Erase(op) => answers.erased.push(apply_erase(tx, op, shared).await?),
            Op::Handoff(op) => {
                apply_handoff(tx, op, now).await?;
                answers.writes += 1;
            }
            Op::Requeue { id } => answers
                .requeued
                .push(super::replies::requeue(tx, *id, now).await?),
            // Given back after the commit (`leases::release`).
            Op::ReleaseLease { .. } => {}
        }
    }
    Ok(answers)
}
