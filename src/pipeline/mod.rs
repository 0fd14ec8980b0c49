//! Dispatch of committed inbound rows to conversation workers: one worker per (number, customer)
//! handles that conversation's work strictly in order; different conversations run concurrently.
//! Rows are pushed here by the group-commit writer; nothing polls. With several replicas on
//! PostgreSQL, conversations are claimed through the database instead (`cluster.rs`).

mod backlog;
pub mod cluster;
mod compliance;
mod decide;
mod finish;
mod turn;

use crate::serve::state::AppState;
use crate::store::writer::{Claimed, Sink};
use crate::store::{InboxRow, OutboxRow};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A unit of conversation work.
#[derive(Debug)]
pub enum Work {
    /// A customer message waiting for its agent turn.
    Inbound(InboxRow),
    /// A reply found open at start, to be settled or sent before newer work.
    Resume(OutboxRow),
    /// Several replicas: a conversation may have work in storage. `local`: this replica
    /// committed it or found it orphaned, so it tries to claim the conversation; otherwise
    /// (another replica's commit) only a worker already holding it looks.
    Wake { key: (String, String), local: bool },
    /// Several replicas: another replica requeued reply `id` of this conversation and could not
    /// claim it; a worker holding the conversation here sends it (none is started for it).
    Requeued { key: (String, String), id: i64 },
    /// Several replicas: a commit of this replica brought `rows` to a conversation whose lease
    /// this replica holds (it held it already, or the commit claimed it).
    Claimed {
        key: (String, String),
        rows: Vec<InboxRow>,
        held: cluster::Held,
    },
}

impl Work {
    fn key(&self) -> (String, String) {
        match self {
            Work::Inbound(r) => (r.msg.phone_number_id.clone(), r.msg.customer.clone()),
            Work::Resume(r) => (r.phone_number_id.clone(), r.customer.clone()),
            Work::Wake { key, .. } | Work::Requeued { key, .. } | Work::Claimed { key, .. } => {
                key.clone()
            }
        }
    }
}

/// Sends work to the dispatcher; cheap to clone.
#[derive(Clone)]
pub struct Dispatch {
    tx: mpsc::UnboundedSender<Work>,
    /// The opt-outs the send path reads, told of each change as soon as it is committed.
    opted_out: crate::store::OptedOut,
}

impl Dispatch {
    /// Queues one unit of work.
    pub fn send(&self, work: Work) {
        // The dispatcher only stops at shutdown; work refused then stays open in storage.
        let _ = self.tx.send(work);
    }
}

impl Sink for Dispatch {
    fn push(&mut self, rows: Vec<InboxRow>, claimed: Claimed) {
        for row in &rows {
            if let Some(tp) = &row.msg.traceparent {
                // The row may reach its turn read back from storage (the backlog at start).
                crate::telemetry::keep_inbound(row.id, tp);
            }
            // A committed keyword row changed the customer's state (the commit kept no other):
            // from now on nothing queued before it leaves.
            if let Some(k) = &row.msg.keyword {
                let stop = k.action == crate::store::OptAction::Stop;
                let m = &row.msg;
                self.opted_out
                    .set(&m.phone_number_id, &m.customer, stop, row.received_at);
            }
        }
        if claimed.claims.is_empty() {
            for row in rows {
                self.send(Work::Inbound(row));
            }
            return;
        }
        for work in cluster::claimed(rows, claimed) {
            self.send(work);
        }
    }
}

/// The CPU priority (nice value) of the pipeline's threads, relative to the rest of the gateway.
pub const PIPELINE_NICE: i32 = 10;

/// The runtime the pipeline runs on: the dispatcher, conversation workers, agent calls and
/// sends, and whatever they spawn. It is a runtime of its own, with threads at a lower CPU
/// priority (nice +[`PIPELINE_NICE`], as RocksDB lowers its compaction threads), so that when
/// the cores are busy, acknowledging Meta's webhooks (the listeners' runtime and the writer)
/// never waits behind agent turns: a burst is taken in durably at full speed and answered as
/// fast as the CPU left over allows. With idle cores the priority changes nothing.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("wa-pipeline")
        .enable_all()
        .on_thread_start(lower_priority)
        .build()
}

fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // On Linux a nice value belongs to a thread, so this leaves the others alone. It is
        // set relative to the process's main thread, not to this thread's own value, which a
        // thread started from a pipeline thread (a blocking-pool thread) has lowered already.
        let base =
            rustix::process::getpriority_process(Some(rustix::process::getpid())).unwrap_or(0);
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), base + PIPELINE_NICE) {
            tracing::debug!(error = %e, "cannot lower the pipeline thread's priority");
        }
    }
}

/// How long an idle conversation worker lives before it exits.
const WORKER_IDLE: Duration = Duration::from_secs(30);

/// Work on its way to a conversation worker; a backlog item holds its ticket until its turn is
/// over, so only so many backlog items are in the pipeline at once.
struct Queued {
    work: Work,
    ticket: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Starts the dispatcher. It stops at shutdown; workers finish their current item first. On one
/// process it first hands out the work found open at start (`backlog.rs`).
pub fn spawn(state: Arc<AppState>) -> Dispatch {
    let (tx, rx) = mpsc::unbounded_channel::<Work>();
    let dispatch = Dispatch {
        tx,
        opted_out: state.opted_out.clone(),
    };
    if state.store.is_shared() {
        cluster::spawn(state, rx, dispatch.clone());
        return dispatch;
    }
    let tracker = state.tracker.clone();
    tracker.spawn(dispatcher(state, rx));
    dispatch
}

async fn dispatcher(state: Arc<AppState>, mut rx: mpsc::UnboundedReceiver<Work>) {
    let mut workers: HashMap<(String, String), mpsc::UnboundedSender<Mail>> = HashMap::new();
    let mut next_sweep = 4096;
    // A few backlog turns per agent slot keep the agents busy while memory stays bounded.
    let slots = state.snapshot.load().config.policies.agent.max_concurrency as usize;
    let mut backlog = backlog::Backlog::new(slots.saturating_mul(4).clamp(64, 4096));
    loop {
        let queued = tokio::select! {
            biased;
            _ = state.draining.cancelled() => break,
            w = rx.recv() => match w {
                // The backlog reads this row from storage in its turn (or has handed it out).
                Some(Work::Inbound(row)) if backlog.covers(row.id) => continue,
                Some(work) => Queued { work, ticket: None },
                None => break,
            },
            ticket = backlog.ticket(), if backlog.is_open() => {
                match backlog.next(&state).await {
                    Some(work) => Queued { work, ticket: Some(ticket) },
                    None => continue,
                }
            }
        };
        let key = queued.work.key();
        let queued = Box::new(queued);
        let queued = match workers.get(&key) {
            Some(w) => match w.send(queued) {
                Ok(()) => continue,
                // The worker went idle and closed: start a new one for this work.
                Err(mpsc::error::SendError(queued)) => queued,
            },
            None => queued,
        };
        // Forget workers that went idle, amortised: sweep only when the map has doubled
        // since the last sweep, so a spawn costs O(1) however many conversations are live.
        if workers.len() >= next_sweep {
            workers.retain(|_, w| !w.is_closed());
            next_sweep = (workers.len() * 2).max(4096);
        }
        // A worker started for the backlog leaves as soon as it has nothing to do: a backlog
        // touches many conversations once each, and idle workers would hold memory for each.
        let idle = if queued.ticket.is_some() {
            Duration::ZERO
        } else {
            WORKER_IDLE
        };
        let (wtx, wrx) = mpsc::unbounded_channel();
        let _ = wtx.send(queued);
        workers.insert(key, wtx);
        state.tracker.spawn(worker(state.clone(), wrx, idle));
    }
}

/// Work in a worker's channel, boxed: a channel allocates its first block of 32 slots when it
/// is made, and a conversation's worker outlives its last turn by [`WORKER_IDLE`]. Unboxed,
/// every idle conversation held 32 rows' worth of memory.
type Mail = Box<Queued>;

/// A conversation's worker. Each unit of work is awaited boxed ([`handle`]'s future holds a
/// whole turn: agent call, sends, commits; about 9 KiB), so the worker itself stays small while
/// it waits idle: a burst of new customers costs about 1.4 KiB each until their workers leave
/// (`an_idle_conversation_worker_holds_under_two_kilobytes`), where it cost 20 KiB.
async fn worker(state: Arc<AppState>, mut rx: mpsc::UnboundedReceiver<Mail>, idle: Duration) {
    state.metrics.conversation_workers.inc();
    // Work taken from the channel while coalescing that did not belong to the turn.
    let mut next: Option<Queued> = None;
    let mut known = turn::Known::default();
    loop {
        let work = match next.take() {
            Some(w) => w,
            None => tokio::select! {
                biased;
                _ = state.draining.cancelled() => break,
                w = rx.recv() => match w { Some(w) => *w, None => break },
                _ = tokio::time::sleep(idle) => {
                    // Close first, then drain: anything sent before the close is still handled
                    // here, anything after makes the dispatcher start a new worker.
                    rx.close();
                    while let Ok(w) = rx.try_recv() {
                        Box::pin(handle(&state, &mut rx, *w, &mut next, &mut known)).await;
                    }
                    if let Some(w) = next.take() {
                        Box::pin(handle(&state, &mut rx, w, &mut next, &mut known)).await;
                    }
                    break;
                }
            },
        };
        Box::pin(handle(&state, &mut rx, work, &mut next, &mut known)).await;
    }
    state.metrics.conversation_workers.dec();
}

/// Handles one unit of work; an inbound message may first gather the customer's next messages
/// within the quiet period (coalescing) so they make one agent turn.
async fn handle(
    state: &AppState,
    rx: &mut mpsc::UnboundedReceiver<Mail>,
    queued: Queued,
    next: &mut Option<Queued>,
    known: &mut turn::Known,
) {
    // Backlog tickets are given back when the turn is over.
    let mut tickets: Vec<_> = queued.ticket.into_iter().collect();
    let first = match queued.work {
        Work::Resume(row) => return turn::resume(state, row).await,
        Work::Inbound(row) => row,
        // Only the cluster dispatcher sees wakes and claims.
        Work::Wake { .. } | Work::Requeued { .. } | Work::Claimed { .. } => return,
    };
    let quiet = turn::coalesce_window(state, &first);
    let mut rows = vec![first];
    if let Some(quiet) = quiet {
        loop {
            let more = tokio::select! {
                w = rx.recv() => w.map(|w| *w),
                _ = tokio::time::sleep(quiet) => None,
                _ = state.draining.cancelled() => None,
            };
            match more {
                Some(Queued {
                    work: Work::Inbound(row),
                    ticket,
                }) if turn::coalescable(state, &row) => {
                    rows.push(row);
                    tickets.extend(ticket);
                }
                Some(other) => {
                    *next = Some(other);
                    break;
                }
                None => break,
            }
        }
    }
    turn::inbound(state, rows, known).await;
    drop(tickets);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, F: std::future::Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// What an idle worker holds beside its task's header: its future and its channel's first
    /// block (Tokio's blocks hold 32 values). Each new customer starts one, and it stays for
    /// `WORKER_IDLE`: at 20 KiB each (27 KiB of RSS with the task and the map's entry), the
    /// bench's 20,000 customers in 20 s cost 550 MB.
    #[test]
    fn an_idle_conversation_worker_holds_under_two_kilobytes() {
        let held = future_size(worker) + 32 * std::mem::size_of::<Mail>();
        assert!(held <= 2048, "an idle worker holds {held} bytes");
    }
}
