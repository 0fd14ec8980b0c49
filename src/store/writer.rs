//! The group-commit writer: one task owns every write. Each caller waits until the batch that
//! holds its operation is durable, then hears the result; new inbound rows are pushed on to the
//! pipeline. On SQLite it owns the only writing connection and runs it on its own thread, so no
//! writer ever waits in SQLite and no statement crosses a thread.

use super::{
    Answers, EraseOp, Erased, HandoffOp, InboxRow, InboxState, LeaseClaim, NewOutbox, Op,
    OutboxRow, OutboxState, PruneOp, Pruned, SqliteWriter, Store, StoreError, TurnEnd,
    WebhookWrite,
};
use crate::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Where one op's answer goes, typed by what that op answers.
type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Who waits for one op's answer, typed by what that op answers.
enum Waiter {
    Webhook(Reply<usize>),
    Turn(Reply<Vec<OutboxRow>>),
    Attempt(Reply<bool>),
    Release(Reply<bool>),
    Requeue(Reply<bool>),
    Write(Reply<()>),
    Prune(Reply<Pruned>),
    Erase(Reply<Erased>),
}

impl Waiter {
    /// Tells the caller that its op failed.
    fn fail(self, e: StoreError) {
        match self {
            Waiter::Webhook(r) => {
                let _ = r.send(Err(e));
            }
            Waiter::Turn(r) => {
                let _ = r.send(Err(e));
            }
            Waiter::Attempt(r) | Waiter::Release(r) | Waiter::Requeue(r) => {
                let _ = r.send(Err(e));
            }
            Waiter::Write(r) => {
                let _ = r.send(Err(e));
            }
            Waiter::Prune(r) => {
                let _ = r.send(Err(e));
            }
            Waiter::Erase(r) => {
                let _ = r.send(Err(e));
            }
        }
    }
}

/// Hands a commit's new rows to the pipeline, then answers `waiters` (one per op, in op order),
/// each from the group of [`Answers`] of its kind, in order. The pipeline hears of the commit
/// before any waiter resumes, so an opt-out it records is in force for every send that starts
/// after this commit. `started`: when the commit began, before any lease it claimed was taken.
fn answer(
    waiters: impl IntoIterator<Item = Waiter>,
    answers: Answers,
    sink: &mut impl Sink,
    started: Instant,
) {
    let Answers {
        webhooks,
        turns,
        attempts,
        writes: _,
        pruned,
        erased,
        released,
        requeued,
        claims,
    } = answers;
    // The rows go on to the pipeline; a webhook only needs to know how many were new.
    let new: Vec<usize> = webhooks.iter().map(Vec::len).collect();
    let fresh: Vec<InboxRow> = webhooks.into_iter().flatten().collect();
    if !fresh.is_empty() || !claims.is_empty() {
        sink.push(fresh, Claimed { claims, started });
    }
    let mut new = new.into_iter();
    let (mut turns, mut attempts) = (turns.into_iter(), attempts.into_iter());
    let (mut pruned, mut erased) = (pruned.into_iter(), erased.into_iter());
    let (mut released, mut requeued) = (released.into_iter(), requeued.into_iter());
    for waiter in waiters {
        match waiter {
            Waiter::Webhook(r) => reply(r, new.next()),
            Waiter::Turn(r) => reply(r, turns.next()),
            Waiter::Attempt(r) => reply(r, attempts.next()),
            Waiter::Release(r) => reply(r, released.next()),
            Waiter::Requeue(r) => reply(r, requeued.next()),
            Waiter::Write(r) => reply(r, Some(())),
            Waiter::Prune(r) => reply(r, pruned.next()),
            Waiter::Erase(r) => reply(r, erased.next()),
        }
    }
}

/// Sends `answer` to one caller. (Every op has its answer; were one missing, the caller would
/// hear that the writer is gone.)
fn reply<T>(r: Reply<T>, answer: Option<T>) {
    if let Some(answer) = answer {
        let _ = r.send(Ok(answer));
    }
}

/// One op and who waits for its answer.
struct Request {
    op: Op,
    waiter: Waiter,
}

/// The leases a commit claimed (PostgreSQL; none on SQLite).
#[derive(Debug)]
pub struct Claimed {
    /// Per conversation the commit brought waiting messages to.
    pub claims: Vec<LeaseClaim>,
    /// When the commit began: a lease it took runs from no earlier than this.
    pub started: Instant,
}

/// Where committed rows go next (the pipeline's dispatcher).
pub trait Sink: Send + 'static {
    /// Called once per committed batch with the rows that need an agent, in commit order, and
    /// the leases the commit claimed for their conversations.
    fn push(&mut self, rows: Vec<InboxRow>, claimed: Claimed);
}

/// A handle to submit writes; cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Request>,
}

impl WriterHandle {
    /// Queues `op`, its caller waiting as `waiter` (the kind that answers what `op` answers).
    async fn run<T>(&self, op: Op, waiter: fn(Reply<T>) -> Waiter) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                op,
                waiter: waiter(reply),
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Commits a webhook (with whatever else is waiting) and returns how many of its messages
    /// were new. Returns only once the data is durable, or with the storage error.
    pub async fn submit(&self, write: WebhookWrite) -> Result<usize, StoreError> {
        self.run(Op::Webhook(write), Waiter::Webhook).await
    }

    /// Ends a turn: queues its replies and closes the inbound message(s), atomically, so a crash
    /// either repeats the whole turn or none of it. With `attempt`, the replies are queued as
    /// `sending` with their first attempt recorded (see [`Op::CompleteTurn`]).
    pub async fn complete_turn(
        &self,
        inbox: &InboxRow,
        state: InboxState,
        detail: Option<&str>,
        replies: &[NewOutbox],
        coalesced: &[i64],
        attempt: bool,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let op = Op::CompleteTurn(TurnEnd {
            inbox_id: inbox.id,
            phone_number_id: inbox.msg.phone_number_id.clone(),
            customer: inbox.msg.customer.clone(),
            state,
            detail: detail.map(str::to_owned),
            replies: replies.to_vec(),
            coalesced: coalesced.to_vec(),
            attempt,
        });
        self.run(op, Waiter::Turn).await
    }

    /// Records that an attempt to send outbox row `id` starts now. `false`: the row is already
    /// settled (a status webhook proved Meta has it), so it must not be sent.
    pub async fn outbox_attempt(&self, id: i64) -> Result<bool, StoreError> {
        self.run(Op::Attempt { id }, Waiter::Attempt).await
    }

    /// Meta accepted row `id` as `wamid`. A status webhook may have got there first.
    pub async fn outbox_sent(&self, id: i64, wamid: &str) -> Result<(), StoreError> {
        let wamid = wamid.to_owned();
        self.run(Op::Sent { id, wamid }, Waiter::Write).await
    }

    /// A retryable failure; the row goes back to `pending` with the error.
    pub async fn outbox_retry(
        &self,
        id: i64,
        code: Option<i64>,
        message: &str,
    ) -> Result<(), StoreError> {
        let message = message.to_owned();
        self.run(Op::Retry { id, code, message }, Waiter::Write)
            .await
    }

    /// Row `id` ends without delivery, keeping Meta's code and message. `unattempted`: it ends
    /// before the attempt recorded when it was queued was made (the window closed or the customer
    /// opted out first), so that attempt is taken back.
    pub async fn outbox_give_up(
        &self,
        id: i64,
        state: OutboxState,
        code: Option<i64>,
        message: &str,
        unattempted: bool,
    ) -> Result<(), StoreError> {
        let op = Op::GiveUp {
            id,
            state,
            code,
            message: message.to_owned(),
            unattempted,
        };
        self.run(op, Waiter::Write).await
    }

    /// Gives back this replica's lease on a conversation (PostgreSQL), unless messages came
    /// after commit count `seq`: returns whether it was given back.
    pub async fn release_lease(
        &self,
        phone_number_id: &str,
        customer: &str,
        seq: i64,
    ) -> Result<bool, StoreError> {
        let op = Op::ReleaseLease {
            phone_number_id: phone_number_id.to_owned(),
            customer: customer.to_owned(),
            seq,
        };
        self.run(op, Waiter::Release).await
    }

    /// Puts a `failed` or `expired` reply back to `pending` for the sender; `false` when it was
    /// not (or no longer) ended, e.g. another retry took it first.
    pub async fn requeue_reply(&self, id: i64) -> Result<bool, StoreError> {
        self.run(Op::Requeue { id }, Waiter::Requeue).await
    }

    /// Applies one batch of retention's pruning in the next group commit.
    pub async fn prune(&self, op: PruneOp) -> Result<Pruned, StoreError> {
        self.run(Op::Prune(op), Waiter::Prune).await
    }

    /// Caches `upload`'s media id for the same bytes sent again by the same number.
    pub async fn media_uploaded(&self, upload: super::MediaUpload) -> Result<(), StoreError> {
        self.run(Op::MediaUploaded(upload), Waiter::Write).await
    }

    /// Applies an erasure (or gives an erased customer's opt-out back) in the next group commit.
    pub async fn erase(&self, op: EraseOp) -> Result<Erased, StoreError> {
        self.run(Op::Erase(op), Waiter::Erase).await
    }

    /// Pauses or resumes a conversation, or records a handoff notification's outcome, in the
    /// next group commit.
    pub async fn handoff(&self, op: HandoffOp) -> Result<(), StoreError> {
        self.run(Op::Handoff(op), Waiter::Write).await
    }

    /// Records that an operator disconnected (`true`) or connected again a number.
    pub async fn set_number_override(
        &self,
        phone_number_id: &str,
        disconnected: bool,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let op = Op::NumberOverride {
            phone_number_id: phone_number_id.to_owned(),
            disconnected,
            reason: reason.map(str::to_owned),
        };
        self.run(op, Waiter::Write).await
    }
}

/// The write channel and the writer's end of it. The handle exists before the writer starts, so
/// the pipeline can hold it before the writer needs the pipeline.
pub fn channel(batch_max: usize) -> (WriterHandle, WriterInbox) {
    let (tx, rx) = mpsc::channel::<Request>(batch_max.max(64) * 4);
    (WriterHandle { tx }, WriterInbox { rx })
}

/// The receiving end of the write channel, consumed by [`spawn`].
pub struct WriterInbox {
    rx: mpsc::Receiver<Request>,
}

/// What the writer commits through.
enum Backend {
    /// Its own SQLite connection, used synchronously on the writer's thread.
    Sqlite(SqliteWriter),
    /// PostgreSQL, through the store's pool.
    Shared(Store),
}

impl Backend {
    async fn apply(&mut self, ops: &[Op]) -> Result<Answers, StoreError> {
        match self {
            Backend::Sqlite(w) => w.apply(ops).await,
            Backend::Shared(store) => store.apply(ops).await,
        }
    }

    /// Answers the callers of `batch` with `result`, the outcome of applying it, and empties it.
    /// SQLite: after a commit, the log starts over if `restart_wal` asks.
    async fn answer(
        &mut self,
        result: Result<Answers, StoreError>,
        batch: &mut Batch,
        sink: &mut impl Sink,
        restart_wal: &AtomicBool,
        started: Instant,
    ) {
        let (ops, waiting) = (&mut batch.ops, &mut batch.waiting);
        batch.messages = 0;
        match result {
            Ok(answers) => {
                answer(waiting.drain(..), answers, sink, started);
                if let Backend::Sqlite(w) = self
                    && restart_wal.swap(false, Ordering::Relaxed)
                    && let Err(e) = w.restart_wal()
                {
                    tracing::debug!(error = %e, "the write-ahead log did not start over");
                }
            }
            Err(e) if ops.len() > 1 => {
                // One bad operation must not keep failing the others with it: apply each
                // alone, so only the one that fails hears about it.
                tracing::warn!(error = %e, ops = ops.len(), "group commit failed; applying its operations one by one");
                for (op, w) in ops.drain(..).zip(waiting.drain(..)) {
                    let started = Instant::now();
                    match self.apply(std::slice::from_ref(&op)).await {
                        Ok(answers) => answer([w], answers, sink, started),
                        Err(e) => w.fail(e),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "write failed; a webhook is answered 503 so Meta redelivers it");
                for w in waiting.drain(..) {
                    w.fail(e.shallow_clone());
                }
            }
        }
        ops.clear();
    }
}

/// The group commit's span while tracing is on. It commits the messages of many webhooks, each
/// the root of a trace of its own, so it cannot be the child of all of them: it is a span of
/// its own, linked to the webhook span of every message it commits (each webhook's trace has
/// its own `commit` span, the wait for this one).
fn commit_span(ops: &[Op]) -> tracing::Span {
    if !crate::telemetry::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("group commit", ops = ops.len());
    let traced = ops.iter().flat_map(|op| match op {
        Op::Webhook(w) => w.messages.as_slice(),
        _ => &[],
    });
    for tp in traced.filter_map(|m| m.traceparent.as_deref()) {
        crate::telemetry::link_to(&span, tp);
    }
    span
}

/// The ops of the next commit and their callers, in arrival order.
struct Batch {
    ops: Vec<Op>,
    waiting: Vec<Waiter>,
    /// Inbound messages the ops carry (the writer caps a batch by them).
    messages: usize,
}

impl Batch {
    fn push(&mut self, r: Request) {
        self.messages += r.op.messages();
        self.ops.push(r.op);
        self.waiting.push(r.waiter);
    }
}

/// Starts the writer task on `inbox`: commits of at most `batch_max` messages, started at most
/// once per `commit_interval`. It stops when `stop` is cancelled (after answering what is
/// already queued) or when every `WriterHandle` is dropped. Fails if the SQLite writer's
/// connection cannot be opened.
pub fn spawn(
    store: Store,
    batch_max: usize,
    commit_interval: std::time::Duration,
    inbox: WriterInbox,
    mut sink: impl Sink,
    metrics: Metrics,
    stop: CancellationToken,
) -> Result<JoinHandle<()>, StoreError> {
    let mut backend = match store.open_sqlite_writer()? {
        Some(w) => Backend::Sqlite(w),
        None => Backend::Shared(store.clone()),
    };
    let mut rx = inbox.rx;
    // SQLite: the writer's connection never checkpoints inside a commit; a task copies the log
    // beside it, and the writer starts the log over between commits when asked.
    let restart_wal = Arc::new(AtomicBool::new(false));
    if matches!(backend, Backend::Sqlite(_)) {
        let (store, stop, restart) = (store.clone(), stop.clone(), restart_wal.clone());
        tokio::spawn(async move { store.checkpoint_loop(restart, stop).await });
    }
    // The writer runs on a thread and runtime of its own: on a runtime busy with thousands of
    // HTTP tasks each wake-up (a new request; on PostgreSQL every statement it awaits) would
    // queue behind them, stretching every commit (and every webhook's 200) by the queue's length.
    // SQLite's statements run right here, blocking only this thread.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts");
    // Made on the writer's thread: the SQLite connection may move there, but not be shared.
    let writer = move || async move {
        let mut batch = Batch {
            ops: Vec::with_capacity(batch_max),
            waiting: Vec::with_capacity(batch_max),
            messages: 0,
        };
        let mut last_start: Option<Instant> = None;
        loop {
            let first = tokio::select! {
                biased;
                r = rx.recv() => match r { Some(r) => r, None => break },
                _ = stop.cancelled() => match rx.try_recv() { Ok(r) => r, Err(_) => break },
            };
            batch.push(first);
            // Commits start at most once per `commit_interval`: what arrives meanwhile joins the
            // next one. Every commit writes its B-trees' hot pages again and waits for an fsync,
            // so two thousand small commits a second cost far more disk and CPU than a few
            // hundred larger ones; a webhook waits at most one interval longer. A sleep of this
            // thread alone: it runs nothing but the writer.
            if let Some(due) = last_start.map(|t| t + commit_interval) {
                let now = Instant::now();
                if now < due {
                    std::thread::sleep(due - now);
                }
            }
            // Everything that queued up while the previous commit ran joins this one.
            while batch.messages < batch_max {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            last_start = Some(started);
            let result = backend
                .apply(&batch.ops)
                .instrument(commit_span(&batch.ops))
                .await;
            metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            metrics.commit_batch_messages.observe(batch.messages as f64);
            backend
                .answer(result, &mut batch, &mut sink, &restart_wal, started)
                .await;
        }
    };
    std::thread::Builder::new()
        .name("wa-gateway-writer".into())
        .spawn(move || {
            runtime.block_on(writer());
            let _ = done_tx.send(());
        })
        .expect("the writer thread starts");
    Ok(tokio::spawn(async move {
        let _ = done_rx.await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Nowhere;

    impl Sink for Nowhere {
        fn push(&mut self, _rows: Vec<InboxRow>, _claimed: Claimed) {}
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_start_at_most_once_per_interval_and_what_waits_joins_them() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::Storage {
            url: format!("sqlite://{}", dir.path().join("w.db").display()),
            ..Default::default()
        };
        let store = Store::connect(&cfg).await.unwrap();
        let metrics = Metrics::new();
        let stop = CancellationToken::new();
        let (handle, inbox) = channel(64);
        let interval = Duration::from_millis(20);
        let task = spawn(
            store.clone(),
            64,
            interval,
            inbox,
            Nowhere,
            metrics.clone(),
            stop.clone(),
        )
        .unwrap();
        let started = Instant::now();
        // Eight callers, each with ten writes in a row (each waits for its commit).
        let callers: Vec<_> = (0..8)
            .map(|c| {
                let handle = handle.clone();
                tokio::spawn(async move {
                    for i in 0..10 {
                        let id = format!("1065403522{c:02}{i:03}");
                        handle.set_number_override(&id, true, None).await.unwrap();
                    }
                })
            })
            .collect();
        for c in callers {
            c.await.unwrap();
        }
        let elapsed = started.elapsed();
        let commits = metrics.commit_seconds.get_sample_count();
        // A commit starts at least `interval` after the one before it.
        assert!(
            commits as f64 <= elapsed.as_secs_f64() / interval.as_secs_f64() + 1.0,
            "{commits} commits in {elapsed:?}"
        );
        // Each caller's ten writes took ten commits, so nine intervals at least passed...
        assert!(elapsed >= interval * 9, "{elapsed:?}");
        // ...and the writes that waited meanwhile were committed together.
        assert!(commits < 80, "{commits} commits for 80 writes");
        assert_eq!(store.number_overrides().await.unwrap().len(), 80);
        stop.cancel();
        drop(handle);
        task.await.unwrap();
    }
}
