//! Statements that every message pays on PostgreSQL outside the group commit (a turn's read,
//! a send's turns, the opt-out read right before a send), taken together: the requests a
//! replica's tasks make at the same time wait in one queue, and a task of the store's runs them
//! as one statement per batch, then the next batch, as the group commit does for writes.
//! Nothing waits on purpose: a batch is what queued while the last statement ran.

use super::{PgLinks, StoreError};
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{mpsc, oneshot};

/// Most requests in one statement.
const BATCH_MAX: usize = 512;

/// A request that can be batched.
pub(super) trait Batched: Sized + Send + 'static {
    /// What one request is answered.
    type Answer: Send + 'static;

    /// Whether this request may join a batch that already holds `keys`, adding its own; one that
    /// may not waits for the next batch (a statement updates a row at most once).
    fn joins(&self, _keys: &mut HashSet<String>) -> bool {
        true
    }

    /// Where this request's answer goes.
    fn reply(self) -> Reply<Self::Answer>;

    /// Runs `batch` as one statement: one answer per request, in order.
    fn run(
        links: &PgLinks,
        batch: &[Self],
    ) -> impl Future<Output = Result<Vec<Self::Answer>, StoreError>> + Send;
}

/// Where one request's answer goes.
pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// The queue to the task that runs one kind of request, started when first needed (and again
/// if the runtime that ran it is gone).
pub(super) struct Batches<Q> {
    queue: Mutex<Option<mpsc::UnboundedSender<Q>>>,
}

impl<Q> std::fmt::Debug for Batches<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches").finish_non_exhaustive()
    }
}

impl<Q> Default for Batches<Q> {
    fn default() -> Self {
        Self {
            queue: Mutex::new(None),
        }
    }
}

impl<Q: Batched> Batches<Q> {
    /// Queues the request `make` builds around its reply for the next batch, and waits for
    /// its answer.
    pub(super) async fn ask(
        &self,
        links: &Arc<PgLinks>,
        make: impl FnOnce(Reply<Q::Answer>) -> Q,
    ) -> Result<Q::Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue(links, make(reply))?;
        answer.await.map_err(|_| gone())?
    }

    fn queue(&self, links: &Arc<PgLinks>, req: Q) -> Result<(), StoreError> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let tx = match queue.as_ref() {
            Some(tx) if !tx.is_closed() => tx,
            _ => {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(serve(Arc::downgrade(links), rx));
                queue.insert(tx)
            }
        };
        tx.send(req).map_err(|_| gone())
    }
}

/// The error a request hears when the task that runs its kind is gone.
fn gone() -> StoreError {
    StoreError::Batch("the storage task that batches this request is gone".into())
}

/// Takes every request waiting (up to [`BATCH_MAX`]), runs them, then the next batch; ends when
/// the store is gone.
async fn serve<Q: Batched>(links: Weak<PgLinks>, mut rx: mpsc::UnboundedReceiver<Q>) {
    let mut held: Vec<Q> = Vec::new();
    loop {
        let mut next = Next::default();
        held.drain(..).for_each(|req| next.admit(req));
        if next.batch.is_empty() {
            match rx.recv().await {
                Some(req) => next.admit(req),
                None => return,
            }
        }
        while next.batch.len() + next.later.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(req) => next.admit(req),
                Err(_) => break,
            }
        }
        held = next.later;
        let Some(links) = links.upgrade() else { return };
        let answers = Q::run(&links, &next.batch).await;
        answer(next.batch, answers);
    }
}

/// Answers each request of `batch` from `answers` (one per request, in order), or with the
/// batch's error.
fn answer<Q: Batched>(batch: Vec<Q>, answers: Result<Vec<Q::Answer>, StoreError>) {
    let answers = answers.and_then(|a| {
        if a.len() == batch.len() {
            Ok(a)
        } else {
            Err(StoreError::Batch(format!(
                "a batched statement gave {} answers for {} requests",
                a.len(),
                batch.len()
            )))
        }
    });
    match answers {
        Ok(answers) => {
            for (req, a) in batch.into_iter().zip(answers) {
                let _ = req.reply().send(Ok(a));
            }
        }
        Err(e) => {
            let e = e.to_string();
            for req in batch {
                let _ = req.reply().send(Err(StoreError::Batch(e.clone())));
            }
        }
    }
}

/// The batch being gathered, and the requests that wait for the one after it.
struct Next<Q> {
    batch: Vec<Q>,
    later: Vec<Q>,
    keys: HashSet<String>,
}

impl<Q> Default for Next<Q> {
    fn default() -> Self {
        Self {
            batch: Vec::new(),
            later: Vec::new(),
            keys: HashSet::new(),
        }
    }
}

impl<Q: Batched> Next<Q> {
    fn admit(&mut self, req: Q) {
        if req.joins(&mut self.keys) {
            self.batch.push(req);
        } else {
            self.later.push(req);
        }
    }
}
