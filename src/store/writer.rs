//! The group-commit writer: one task owns inbox writes. Each webhook waits until the batch that
//! holds it is durable, then hears the result; new rows are pushed on to the pipeline.

use super::{InboxRow, Store, StoreError, WebhookWrite};
use crate::metrics::Metrics;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

struct Request {
    write: WebhookWrite,
    done: oneshot::Sender<Result<usize, StoreError>>,
}

/// Where committed rows go next (the pipeline's dispatcher).
pub trait Sink: Send + 'static {
    /// Called once per committed batch with the rows that need an agent, in commit order.
    fn push(&mut self, rows: Vec<InboxRow>);
}

/// A handle to submit webhooks to the writer; cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Request>,
}

impl WriterHandle {
    /// Commits `write` (together with whatever else is waiting) and returns how many of its
    /// messages were new. Returns only once the data is durable, or with the storage error.
    pub async fn submit(&self, write: WebhookWrite) -> Result<usize, StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request { write, done })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

/// Starts the writer task. It stops when every `WriterHandle` is dropped.
pub fn spawn(
    store: Store,
    batch_max: usize,
    mut sink: impl Sink,
    metrics: Metrics,
    tracker: &tokio_util::task::TaskTracker,
) -> WriterHandle {
    let (tx, mut rx) = mpsc::channel::<Request>(batch_max.max(64) * 4);
    tracker.spawn(async move {
        let mut batch: Vec<Request> = Vec::with_capacity(batch_max);
        let mut writes: Vec<WebhookWrite> = Vec::with_capacity(batch_max);
        while let Some(first) = rx.recv().await {
            let mut messages = first.write.messages.len();
            batch.push(first);
            // Everything that queued up while the previous commit ran joins this one.
            while messages < batch_max {
                match rx.try_recv() {
                    Ok(r) => {
                        messages += r.write.messages.len();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            writes.extend(batch.iter_mut().map(|r| std::mem::take(&mut r.write)));
            let started = Instant::now();
            let result = store.commit_batch(&writes).await;
            metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
            metrics.commit_batch_messages.observe(messages as f64);
            match result {
                Ok(fresh) => {
                    let mut all = Vec::new();
                    for (req, rows) in batch.drain(..).zip(fresh) {
                        let _ = req.done.send(Ok(rows.len()));
                        all.extend(rows);
                    }
                    if !all.is_empty() {
                        sink.push(all);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, webhooks = batch.len(), "group commit failed; answering 503 so Meta redelivers");
                    let text = e.to_string();
                    for req in batch.drain(..) {
                        let _ = req.done.send(Err(StoreError::Sqlx(sqlx::Error::Protocol(text.clone()))));
                    }
                }
            }
            writes.clear();
        }
    });
    WriterHandle { tx }
}
