//! The group-commit writer: one task owns every write. Each caller waits until the batch that
//! holds its operation is durable, then hears the result; new inbound rows are pushed on to the
//! pipeline. On SQLite it owns the only writing connection and runs it on its own thread, so no
//! writer ever waits in SQLite and no statement crosses a thread.

use super::{
    Done, InboxRow, InboxState, NewOutbox, Op, OutboxRow, OutboxState, SqliteWriter, Store,
    StoreError, WebhookWrite,
};
use crate::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Request {
    op: Op,
    done: oneshot::Sender<Result<Done, StoreError>>,
}

/// Where committed rows go next (the pipeline's dispatcher).
pub trait Sink: Send + 'static {
    /// Called once per committed batch with the rows that need an agent, in commit order.
    fn push(&mut self, rows: Vec<InboxRow>);
}

/// A handle to submit writes; cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Request>,
}

impl WriterHandle {
    async fn run(&self, op: Op) -> Result<Done, StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request { op, done })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Commits a webhook (with whatever else is waiting) and returns how many of its messages
    /// were new. Returns only once the data is durable, or with the storage error.
    pub async fn submit(&self, write: WebhookWrite) -> Result<usize, StoreError> {
        match self.run(Op::Webhook(write)).await? {
            Done::Accepted(new) => Ok(new),
            _ => Ok(0),
        }
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
        let op = Op::CompleteTurn {
            inbox_id: inbox.id,
            phone_number_id: inbox.msg.phone_number_id.clone(),
            customer: inbox.msg.customer.clone(),
            state,
            detail: detail.map(str::to_owned),
            replies: replies.to_vec(),
            coalesced: coalesced.to_vec(),
            attempt,
        };
        match self.run(op).await? {
            Done::Turn(rows) => Ok(rows),
            _ => Ok(Vec::new()),
        }
    }

    /// Records that an attempt to send outbox row `id` starts now. `false`: the row is already
    /// settled (a status webhook proved Meta has it), so it must not be sent.
    pub async fn outbox_attempt(&self, id: i64) -> Result<bool, StoreError> {
        Ok(matches!(
            self.run(Op::Attempt { id }).await?,
            Done::Attempted(true)
        ))
    }

    /// Meta accepted row `id` as `wamid`. A status webhook may have got there first.
    pub async fn outbox_sent(&self, id: i64, wamid: &str) -> Result<(), StoreError> {
        self.run(Op::Sent {
            id,
            wamid: wamid.to_owned(),
        })
        .await
        .map(drop)
    }

    /// A retryable failure; the row goes back to `pending` with the error.
    pub async fn outbox_retry(
        &self,
        id: i64,
        code: Option<i64>,
        message: &str,
    ) -> Result<(), StoreError> {
        self.run(Op::Retry {
            id,
            code,
            message: message.to_owned(),
        })
        .await
        .map(drop)
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
        self.run(Op::GiveUp {
            id,
            state,
            code,
            message: message.to_owned(),
            unattempted,
        })
        .await
        .map(drop)
    }

    /// Applies a maintenance write (a prune batch, an erasure) in the next group commit.
    pub async fn maintain(&self, op: Op) -> Result<Done, StoreError> {
        self.run(op).await
    }

    /// Records that an operator disconnected (`true`) or connected again a number.
    pub async fn set_number_override(
        &self,
        phone_number_id: &str,
        disconnected: bool,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.run(Op::NumberOverride {
            phone_number_id: phone_number_id.to_owned(),
            disconnected,
            reason: reason.map(str::to_owned),
        })
        .await
        .map(drop)
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
    async fn apply(&mut self, ops: &[Op]) -> Result<Vec<Done>, StoreError> {
        match self {
            Backend::Sqlite(w) => w.apply(ops).await,
            Backend::Shared(store) => store.apply(ops).await,
        }
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
        let mut batch: Vec<Request> = Vec::with_capacity(batch_max);
        let mut last_start: Option<Instant> = None;
        loop {
            let first = tokio::select! {
                biased;
                r = rx.recv() => match r { Some(r) => r, None => break },
                _ = stop.cancelled() => match rx.try_recv() { Ok(r) => r, Err(_) => break },
            };
            let mut messages = first.op.messages();
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
            while messages < batch_max {
                match rx.try_recv() {
                    Ok(r) => {
                        messages += r.op.messages();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            let ops: Vec<Op> = batch
                .iter_mut()
                .map(|r| std::mem::replace(&mut r.op, Op::Attempt { id: -1 }))
                .collect();
            let started = Instant::now();
            last_start = Some(started);
            let result = backend.apply(&ops).await;
            metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            metrics.commit_batch_messages.observe(messages as f64);
            match result {
                Ok(done) => {
                    answer(&mut batch, done, &mut sink);
                    if let Backend::Sqlite(w) = &mut backend
                        && restart_wal.swap(false, Ordering::Relaxed)
                        && let Err(e) = w.restart_wal()
                    {
                        tracing::debug!(error = %e, "the write-ahead log did not start over");
                    }
                }
                Err(e) if batch.len() > 1 => {
                    // One bad operation must not keep failing the others with it: apply each
                    // alone, so only the one that fails hears about it.
                    tracing::warn!(error = %e, ops = batch.len(), "group commit failed; applying its operations one by one");
                    for (req, op) in batch.drain(..).zip(ops) {
                        match backend.apply(std::slice::from_ref(&op)).await {
                            Ok(done) => answer(&mut vec![req], done, &mut sink),
                            Err(e) => {
                                let _ = req.done.send(Err(e));
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "write failed; a webhook is answered 503 so Meta redelivers it");
                    for req in batch.drain(..) {
                        let _ = req.done.send(Err(e.shallow_clone()));
                    }
                }
            }
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

fn answer(batch: &mut Vec<Request>, done: Vec<Done>, sink: &mut impl Sink) {
    let mut fresh = Vec::new();
    let replies: Vec<Done> = done
        .into_iter()
        .map(|d| match d {
            // The rows go on to the pipeline; the webhook only needs to know how many were new.
            Done::Webhook(rows) => {
                let new = rows.len();
                fresh.extend(rows);
                Done::Accepted(new)
            }
            other => other,
        })
        .collect();
    // The pipeline hears of the commit before any waiter resumes, so an opt-out it records is
    // in force for every send that starts after this commit.
    if !fresh.is_empty() {
        sink.push(fresh);
    }
    for (req, reply) in batch.drain(..).zip(replies) {
        let _ = req.done.send(Ok(reply));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Nowhere;

    impl Sink for Nowhere {
        fn push(&mut self, _rows: Vec<InboxRow>) {}
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
