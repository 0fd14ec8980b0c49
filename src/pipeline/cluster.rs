//! Conversation work shared by several replicas on one PostgreSQL. A replica works on a
//! conversation only while it holds the conversation's lease, and runs its messages in order,
//! one turn at a time, whichever replica received them. The group commit that brings a
//! conversation messages claims its lease for the replica that committed them (or renews it) and
//! hands them to that replica's worker, with the conversation's commit count: a worker reads the
//! conversation from storage only when the count says another replica's commit came between
//! (its NOTIFY wakes the holder too), or when it took the lease over from a holder that left
//! work open. An idle worker gives the lease back in a commit, at the count it has read up to.
//! The leader takes over conversations whose lease ran out (a replica died). Nothing polls on
//! the message path.

use super::{Dispatch, Work, turn};
use crate::serve::state::AppState;
use crate::store::cluster::{
    OVERRIDES_CHANNEL, REQUEUED_CHANNEL, WORK_CHANNEL, parse_requeued_payload, parse_work_payload,
};
use crate::store::writer::Claimed;
use crate::store::{InboxRow, OutboxRow};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

type Key = (String, String);

/// How long a conversation with nothing to do keeps its lease (a customer writing again soon
/// is served without claiming it anew).
const IDLE: Duration = Duration::from_secs(10);
/// How old open work must be before the leader treats it as orphaned: the replica that
/// committed it claims it within milliseconds.
const ORPHAN_AFTER_MS: i64 = 1000;
/// Most orphaned conversations taken over per sweep.
const ORPHANS_PER_SWEEP: i64 = 500;
/// Leader runs kept in storage.
const KEEP_LEADER_RUNS: Duration = Duration::from_secs(24 * 3600);

/// The lease settings and when this replica last renewed its leases.
struct Claims {
    lease: Duration,
    epoch: Instant,
    /// Milliseconds since `epoch` at which the last successful renewal started.
    renewed_ms: AtomicU64,
}

impl Claims {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether a lease taken at `acquired` is still surely held: renewed (or taken) less than
    /// the lease ago, with a margin for the clocks of the two ends.
    fn holds(&self, acquired: Instant) -> bool {
        let acquired_ms = acquired.duration_since(self.epoch).as_millis() as u64;
        let base = acquired_ms.max(self.renewed_ms.load(Ordering::Acquire));
        let margin = self.lease.as_millis() as u64 / 5;
        self.now_ms() + margin < base + self.lease.as_millis() as u64
    }
}

/// Starts the cluster dispatcher and its helpers: the NOTIFY listener, the lease heartbeat and
/// the leader's takeover sweep.
pub(super) fn spawn(state: Arc<AppState>, rx: mpsc::UnboundedReceiver<Work>, dispatch: Dispatch) {
    let lease = state.snapshot.load().config.storage.lease.get();
    let claims = Arc::new(Claims {
        lease,
        epoch: Instant::now(),
        renewed_ms: AtomicU64::new(0),
    });
    state.tracker.spawn(dispatcher(
        state.clone(),
        claims.clone(),
        rx,
        dispatch.clone(),
    ));
    state.tracker.spawn(listen(state.clone(), dispatch.clone()));
    state.tracker.spawn(takeover(state.clone(), dispatch));
    // Not tracked: turns still finishing during the drain hold leases, so renewals go on until
    // the hard stop.
    tokio::spawn(heartbeat(state, claims));
}

/// A conversation's lease as a commit of this replica found it (see `store::LeaseClaim`).
#[derive(Clone, Copy, Debug)]
pub struct Held {
    /// The conversation's commit count after that commit.
    pub seq: i64,
    /// That commit took the lease.
    pub claimed: bool,
    /// Work older than that commit's messages was still open when it took the lease.
    pub stale: bool,
    /// When that commit began: the lease runs from no earlier.
    pub since: Instant,
}

/// The work a commit's new rows make: for each conversation whose lease this replica holds
/// after it, its rows, in commit order. The others' holders heard of theirs by NOTIFY.
pub(super) fn claimed(rows: Vec<InboxRow>, claimed: Claimed) -> Vec<Work> {
    let since = Instant::from_std(claimed.started);
    let mut by_key: HashMap<Key, Vec<InboxRow>> = HashMap::new();
    for row in rows {
        let key = (row.msg.phone_number_id.clone(), row.msg.customer.clone());
        by_key.entry(key).or_default().push(row);
    }
    claimed
        .claims
        .into_iter()
        .filter(|c| c.mine)
        .map(|c| {
            let key = (c.phone_number_id, c.customer);
            Work::Claimed {
                rows: by_key.remove(&key).unwrap_or_default(),
                key,
                held: Held {
                    seq: c.seq,
                    claimed: c.claimed,
                    stale: c.stale,
                    since,
                },
            }
        })
        .collect()
}

/// What a conversation's worker hears from the dispatcher.
#[derive(Debug)]
enum Nudge {
    /// A commit of this replica brought these rows, under the lease as it found it.
    Rows { rows: Vec<InboxRow>, held: Held },
    /// The conversation may have work in storage (another replica's commit, a takeover).
    Look,
    /// An operator put this reply back to `pending` (`outbox::requeue`): send it. Boxed: it is
    /// rare, and each worker's channel allocates room for 32 nudges when it is made.
    Reply(Box<OutboxRow>),
    /// Another replica requeued this reply of the conversation and could not claim it: read
    /// it, and send it if it is still waiting.
    Requeued(i64),
}

async fn dispatcher(
    state: Arc<AppState>,
    claims: Arc<Claims>,
    mut rx: mpsc::UnboundedReceiver<Work>,
    dispatch: Dispatch,
) {
    let mut routes = Routes::new(claims.lease);
    loop {
        let work = tokio::select! {
            w = rx.recv() => match w { Some(w) => w, None => break },
            _ = state.draining.cancelled() => break,
        };
        if let Some((key, first)) = routes.route(work) {
            state.tracker.spawn(conversation(
                state.clone(),
                claims.clone(),
                key,
                first,
                dispatch.clone(),
            ));
        }
    }
}

/// A new worker's conversation, its first nudge and the channel of the nudges after it.
type NewWorker = (Key, (Nudge, mpsc::UnboundedReceiver<Nudge>));

/// Where the dispatcher sends each unit of work: to the worker of its conversation, or to a
/// new one.
struct Routes {
    /// Conversations this replica works on (or is claiming), with a way to nudge their worker.
    owned: HashMap<Key, mpsc::UnboundedSender<Nudge>>,
    /// Conversations another replica's commit woke while no worker here had them, and when.
    /// Such a wake can overtake the commit of this replica that claimed the conversation just
    /// before it: PostgreSQL delivers the other replica's NOTIFY as soon as that replica
    /// commits, and this replica's writer may not have handed its own commit on yet. The
    /// worker that commit starts would take its rows as all there is and miss the other's
    /// message until it fell idle; told of the wake, it reads the conversation first.
    woken: HashMap<Key, Instant>,
    /// A wake older than a lease is forgotten: a worker whose commit began before the wake
    /// and starts later than that no longer surely holds the lease, and reads anyway.
    lease: Duration,
    next_sweep: usize,
}

impl Routes {
    fn new(lease: Duration) -> Self {
        Routes {
            owned: HashMap::new(),
            woken: HashMap::new(),
            lease,
            next_sweep: 4096,
        }
    }

    /// Nudges the conversation's worker with `work`, or returns the worker to start for it
    /// (`None` when there is none to start: another replica's commit, and no worker here).
    fn route(&mut self, work: Work) -> Option<NewWorker> {
        let key = work.key();
        let (local, nudge) = match work {
            Work::Wake { local, .. } => (local, Nudge::Look),
            Work::Claimed { rows, held, .. } => (true, Nudge::Rows { rows, held }),
            Work::Resume(row) => (true, Nudge::Reply(Box::new(row))),
            // Not made with several replicas; a look finds them in storage.
            Work::Inbound(_) => (true, Nudge::Look),
            Work::Requeued { id, .. } => {
                // Only the holder sends it; with no worker here, this replica does not hold it.
                if let Some(worker) = self.owned.get(&key) {
                    let _ = worker.send(Nudge::Requeued(id));
                }
                return None;
            }
        };
        let nudge = match self.owned.get(&key) {
            Some(worker) => match worker.send(nudge) {
                Ok(()) => return None,
                // The worker is leaving: a new one starts with this.
                Err(mpsc::error::SendError(nudge)) => nudge,
            },
            None => nudge,
        };
        if !local {
            // Another replica committed it: it claims the conversation, or its holder looks.
            self.woken.insert(key, Instant::now());
            self.sweep();
            return None;
        }
        let (tx, nudges) = mpsc::unbounded_channel();
        let woken = self.woken.remove(&key);
        if matches!(nudge, Nudge::Rows { .. }) && woken.is_some_and(|at| at.elapsed() < self.lease)
        {
            let _ = tx.send(Nudge::Look);
        }
        self.owned.insert(key.clone(), tx);
        self.sweep();
        Some((key, (nudge, nudges)))
    }

    /// Forgets workers that left and wakes older than a lease, once the maps have doubled.
    fn sweep(&mut self) {
        if self.owned.len() + self.woken.len() < self.next_sweep {
            return;
        }
        self.owned.retain(|_, w| !w.is_closed());
        let lease = self.lease;
        self.woken.retain(|_, at| at.elapsed() < lease);
        self.next_sweep = ((self.owned.len() + self.woken.len()) * 2).max(4096);
    }
}

/// A worker's view of its conversation's waiting messages.
struct Conversation {
    pnid: String,
    customer: String,
    /// Messages to handle, in order.
    queue: VecDeque<InboxRow>,
    /// The commit count up to which every message is in `queue` or handled (`None`: unknown).
    seen_seq: Option<i64>,
    /// A commit this replica did not push (another replica's, or one missed) may have brought
    /// messages: read the conversation before the next turn.
    must_read: bool,
    /// Messages already handed to a turn. A read takes every waiting message rather than those
    /// past the last id seen: another replica's message can commit after a later one was
    /// handled here yet carry a lower id (ids are taken at insert, rows show at commit).
    handed: HashSet<i64>,
    /// When the lease was last surely taken or renewed by a commit.
    acquired: Instant,
    /// Replies an operator requeued, sent before the next turn.
    replies: Vec<OutboxRow>,
    /// Replies another replica requeued, by id: read, and sent if still waiting.
    requeued: Vec<i64>,
}

/// How a worker's hold on its conversation ended.
enum End {
    /// Idle, and given back in a commit at the count it had read up to.
    Released,
    /// The lease ran out, or storage says another replica holds it.
    Lost,
    /// The gateway is stopping.
    Stopped,
}

impl Conversation {
    /// Takes a nudge in: rows that follow the last commit seen join the queue; rows of a commit
    /// after a gap (another replica's came between) or a look ask for a read.
    fn nudged(&mut self, nudge: Nudge) {
        match nudge {
            Nudge::Look => self.must_read = true,
            Nudge::Reply(row) => self.replies.push(*row),
            Nudge::Requeued(id) => self.requeued.push(id),
            Nudge::Rows { rows, held } => {
                self.acquired = self.acquired.max(held.since);
                match self.seen_seq {
                    Some(seen) if held.seq <= seen => {}
                    Some(seen) if held.seq == seen + 1 && !self.must_read => {
                        self.seen_seq = Some(held.seq);
                        let handed = &self.handed;
                        self.queue
                            .extend(rows.into_iter().filter(|r| !handed.contains(&r.id)));
                    }
                    _ => self.must_read = true,
                }
            }
        }
    }

    /// Reads the waiting messages and the commit count together. `Some(false)`: the lease is no
    /// longer this replica's; `None`: shutting down.
    async fn read(&mut self, state: &AppState) -> Option<bool> {
        let (pnid, customer) = (self.pnid.as_str(), self.customer.as_str());
        let read = state
            .persist("inbox read", || state.store.waiting_of(pnid, customer))
            .await?;
        let Some((seq, rows)) = read else {
            return Some(false);
        };
        let handed = &self.handed;
        self.queue = rows
            .into_iter()
            .filter(|r| !handed.contains(&r.id))
            .collect();
        self.seen_seq = Some(seq);
        self.must_read = false;
        Some(true)
    }

    /// The next message of the queue, handed to a turn.
    fn take(&mut self) -> Option<InboxRow> {
        let row = self.queue.pop_front()?;
        self.handed.insert(row.id);
        Some(row)
    }
}

/// Works one conversation, starting with `first`: claims it unless a commit did, reads what a
/// commit did not bring, runs its messages in order, one turn at a time, until it has been idle
/// for a while, then gives it back in a commit.
async fn conversation(
    state: Arc<AppState>,
    claims: Arc<Claims>,
    key: Key,
    (first, mut nudges): (Nudge, mpsc::UnboundedReceiver<Nudge>),
    dispatch: Dispatch,
) {
    let mut conv = Conversation {
        pnid: key.0.clone(),
        customer: key.1.clone(),
        queue: VecDeque::new(),
        seen_seq: None,
        must_read: true,
        handed: HashSet::new(),
        acquired: Instant::now(),
        replies: Vec::new(),
        requeued: Vec::new(),
    };
    let resume = match first {
        // The commit took the lease with nothing else open: its rows are all there is.
        Nudge::Rows { rows, held } if held.claimed && !held.stale => {
            conv.acquired = held.since;
            conv.seen_seq = Some(held.seq);
            conv.queue.extend(rows);
            conv.must_read = false;
            false
        }
        Nudge::Rows { held, .. } => {
            conv.acquired = held.since;
            true
        }
        // A requeued reply is open in storage: claiming the conversation resumes it.
        first @ (Nudge::Look | Nudge::Reply(_) | Nudge::Requeued(_)) => {
            let (pnid, customer) = (key.0.as_str(), key.1.as_str());
            let lease = claims.lease;
            match state
                .persist("lease", || state.store.acquire_lease(pnid, customer, lease))
                .await
            {
                Some(true) => true,
                // Another replica holds it and sees the work itself. A commit of this replica
                // may have claimed it since, its rows coming here as a nudge: a new worker
                // takes them, or none would until this replica's next commit for it.
                Some(false) => {
                    // A reply requeued here is the holder's to send: tell it.
                    if let Nudge::Reply(row) = &first {
                        let id = row.id;
                        state
                            .persist("requeue notice", || {
                                state.store.notify_requeued(pnid, customer, id)
                            })
                            .await;
                    }
                    if close(&mut nudges) == Late::Work && !state.draining.is_cancelled() {
                        dispatch.send(Work::Wake { key, local: true });
                    }
                    return;
                }
                None => return,
            }
        }
    };
    state.metrics.conversation_leases.inc();
    state.metrics.conversation_workers.inc();
    if resume {
        resume_replies(&state, &key).await;
    }
    let end = work(&state, &claims, &mut conv, &mut nudges).await;
    let mut missed = close(&mut nudges) != Late::Nothing;
    state.metrics.conversation_leases.dec();
    state.metrics.conversation_workers.dec();
    // Stopping: every lease this replica holds is given back at once at the end of the drain.
    if matches!(end, End::Lost) {
        let (pnid, customer) = (key.0.as_str(), key.1.as_str());
        state
            .persist("lease release", || {
                state.store.release_lease(pnid, customer)
            })
            .await;
        // A message committed while this worker stopped looking found no one to claim it.
        missed = true;
    }
    if missed && !state.draining.is_cancelled() {
        dispatch.send(Work::Wake { key, local: true });
    }
}

/// What came too late for a worker that is leaving.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Late {
    Nothing,
    /// Only looks: whoever holds the lease looks.
    Look,
    /// Rows a commit of this replica brought (it holds the lease), or a requeued reply.
    Work,
}

/// Closes a leaving worker's channel, so that nudges from now on start a new worker, and says
/// what came too late for this one.
fn close(nudges: &mut mpsc::UnboundedReceiver<Nudge>) -> Late {
    nudges.close();
    let mut late = Late::Nothing;
    while let Ok(n) = nudges.try_recv() {
        late = late.max(match n {
            Nudge::Look => Late::Look,
            Nudge::Rows { .. } | Nudge::Reply(_) | Nudge::Requeued(_) => Late::Work,
        });
    }
    late
}

/// Replies a previous holder left unsettled, which leave before anything newer.
async fn resume_replies(state: &AppState, (pnid, customer): &Key) {
    let Some(open) = state
        .persist("outbox read", || state.store.open_outbox_of(pnid, customer))
        .await
    else {
        return;
    };
    for row in open {
        if state.draining.is_cancelled() {
            break;
        }
        Box::pin(turn::resume(state, row)).await;
    }
}

/// Reads the replies another replica requeued and queues those still waiting to be sent;
/// `false` when shutting down.
async fn requeued_replies(state: &AppState, conv: &mut Conversation) -> bool {
    for id in std::mem::take(&mut conv.requeued) {
        let Some(row) = state
            .persist("outbox read", || state.store.outbox_row(id))
            .await
        else {
            return false;
        };
        // Already sent, or ended again: nothing to do.
        if let Some(row) = row.filter(|r| r.state == crate::store::OutboxState::Pending) {
            conv.replies.push(row);
        }
    }
    true
}

/// Runs the conversation's turns until it is idle (and given back), lost or the gateway stops.
/// Turns are awaited boxed, as in the one-process worker (`super::worker`): a worker waiting
/// idle for [`IDLE`] holds only its own state, not room for a whole turn.
async fn work(
    state: &AppState,
    claims: &Claims,
    conv: &mut Conversation,
    nudges: &mut mpsc::UnboundedReceiver<Nudge>,
) -> End {
    let mut known = turn::Known::default();
    loop {
        if state.draining.is_cancelled() {
            return End::Stopped;
        }
        if !claims.holds(conv.acquired) {
            tracing::warn!(
                phone_number_id = conv.pnid,
                "conversation lease not renewed in time; giving the conversation up"
            );
            return End::Lost;
        }
        while let Ok(n) = nudges.try_recv() {
            conv.nudged(n);
        }
        if !requeued_replies(state, conv).await {
            return End::Stopped;
        }
        for row in std::mem::take(&mut conv.replies) {
            Box::pin(turn::resume(state, row)).await;
        }
        if conv.must_read {
            match conv.read(state).await {
                Some(true) => {}
                Some(false) => {
                    tracing::warn!(
                        phone_number_id = conv.pnid,
                        "the conversation's lease is another replica's; giving the conversation up"
                    );
                    return End::Lost;
                }
                None => return End::Stopped,
            }
        }
        if conv.queue.is_empty() {
            match idle(state, conv, nudges).await {
                Some(end) => return end,
                None => continue,
            }
        }
        let rows = gather(state, conv, nudges).await;
        if !rows.is_empty() {
            Box::pin(turn::inbound(state, rows, &mut known)).await;
        }
    }
}

/// Waits for more work; after [`IDLE`] without any, gives the lease back in a commit, at the
/// commit count read up to. `None`: there may be work (a nudge, or messages that came before
/// the lease could be given back).
async fn idle(
    state: &AppState,
    conv: &mut Conversation,
    nudges: &mut mpsc::UnboundedReceiver<Nudge>,
) -> Option<End> {
    tokio::select! {
        biased;
        _ = state.draining.cancelled() => Some(End::Stopped),
        n = nudges.recv() => match n {
            Some(n) => {
                conv.nudged(n);
                None
            }
            None => Some(End::Stopped),
        },
        _ = tokio::time::sleep(IDLE) => {
            let seq = conv.seen_seq.unwrap_or(0);
            let (pnid, customer) = (conv.pnid.as_str(), conv.customer.as_str());
            match state
                .persist("lease release", || state.writer.release_lease(pnid, customer, seq))
                .await
            {
                Some(true) => Some(End::Released),
                // Another replica's messages came meanwhile (its NOTIFY is on its way).
                Some(false) => {
                    conv.must_read = true;
                    None
                }
                None => Some(End::Stopped),
            }
        }
    }
}

/// The rows of the next turn: the first waiting message, joined by the customer's next ones
/// while coalescing applies (plain text arriving within the quiet period).
async fn gather(
    state: &AppState,
    conv: &mut Conversation,
    nudges: &mut mpsc::UnboundedReceiver<Nudge>,
) -> Vec<InboxRow> {
    let Some(first) = conv.take() else {
        return Vec::new();
    };
    let Some(quiet) = turn::coalesce_window(state, &first) else {
        return vec![first];
    };
    let mut turn_rows = vec![first];
    // Each new message starts the quiet period again; a nudge that brings none does not.
    let mut until = Instant::now() + quiet;
    loop {
        let before = turn_rows.len();
        while let Some(row) = conv.queue.front() {
            if !turn::coalescable(state, row) {
                return turn_rows;
            }
            turn_rows.extend(conv.take());
        }
        if turn_rows.len() > before {
            until = Instant::now() + quiet;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return turn_rows,
            _ = state.draining.cancelled() => return turn_rows,
            n = nudges.recv() => match n {
                Some(n) => conv.nudged(n),
                None => return turn_rows,
            },
        }
        if conv.must_read && conv.read(state).await != Some(true) {
            return turn_rows;
        }
    }
}

/// Renews this replica's leases every third of the lease, until the hard stop.
async fn heartbeat(state: Arc<AppState>, claims: Arc<Claims>) {
    let every = claims.lease / 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = state.shutdown.cancelled() => return,
        }
        let started = claims.now_ms();
        match state.store.renew_leases(claims.lease).await {
            Ok(_) => claims.renewed_ms.store(started, Ordering::Release),
            Err(e) => tracing::warn!(error = %e, "cannot renew conversation leases"),
        }
    }
}

/// Listens for other replicas' commits (and changes of the disconnected numbers). After a lost
/// connection, notifications may have been missed: the disconnected set is read again, and
/// conversations are found by their holders' idle checks and the leader's sweep.
async fn listen(state: Arc<AppState>, dispatch: Dispatch) {
    let Some(opts) = state.store.pg_connect_options() else {
        return;
    };
    let mut delay = Duration::from_millis(100);
    'connect: loop {
        let mut listener = match async {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(opts.clone());
            let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
            l.listen_all([WORK_CHANNEL, OVERRIDES_CHANNEL, REQUEUED_CHANNEL])
                .await?;
            Ok::<_, sqlx::Error>(l)
        }
        .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN for other replicas' work; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = state.draining.cancelled() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        delay = Duration::from_millis(100);
        reload_disconnected(&state).await;
        loop {
            let next = tokio::select! {
                n = listener.try_recv() => n,
                _ = state.draining.cancelled() => return,
            };
            match next {
                Ok(Some(n)) if n.channel() == WORK_CHANNEL => {
                    for key in parse_work_payload(n.payload()) {
                        dispatch.send(Work::Wake { key, local: false });
                    }
                }
                Ok(Some(n)) if n.channel() == REQUEUED_CHANNEL => {
                    if let Some((key, id)) = parse_requeued_payload(n.payload()) {
                        dispatch.send(Work::Requeued { key, id });
                    }
                }
                Ok(Some(_)) => reload_disconnected(&state).await,
                // The connection was lost; the next call reconnects.
                Ok(None) => reload_disconnected(&state).await,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; reconnecting");
                    continue 'connect;
                }
            }
        }
    }
}

async fn reload_disconnected(state: &AppState) {
    if let Err(e) = state.disconnected.load(&state.store).await {
        tracing::warn!(error = %e, "cannot read the disconnected numbers");
    }
}

/// The leader's sweep, every half lease: conversations with open work and no live lease (their
/// replica died, or left while draining) are claimed here; old leader runs and idle send-limit
/// buckets are forgotten now and then.
async fn takeover(state: Arc<AppState>, dispatch: Dispatch) {
    let every = (state.snapshot.load().config.storage.lease.get() / 2)
        .clamp(Duration::from_millis(500), Duration::from_secs(5));
    let mut cycles: u64 = 0;
    loop {
        if !state.leadership.wait_until_leader(&state.draining).await {
            return;
        }
        let swept = state
            .leadership
            .run_cycle(&state.store, "takeover", async {
                let older = crate::store::now_ms() - ORPHAN_AFTER_MS;
                let orphans = state
                    .store
                    .orphaned_conversations(older, ORPHANS_PER_SWEEP)
                    .await?;
                if cycles.is_multiple_of(600) {
                    state.store.prune_leader_runs(KEEP_LEADER_RUNS).await?;
                    state.store.prune_send_limits().await?;
                    state.store.prune_replicas().await?;
                }
                Ok::<_, crate::store::StoreError>(orphans)
            })
            .await;
        cycles += 1;
        match swept {
            Some(Ok(orphans)) => {
                if !orphans.is_empty() {
                    tracing::info!(
                        conversations = orphans.len(),
                        "taking over conversations no replica holds"
                    );
                }
                for key in orphans {
                    dispatch.send(Work::Wake { key, local: true });
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "takeover sweep failed"),
            None => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = state.draining.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As `super::tests::an_idle_conversation_worker_holds_under_two_kilobytes`, for the
    /// worker that holds a conversation's lease (about 13 KiB when it held its turns inline).
    #[test]
    fn an_idle_leaseholder_holds_under_four_kilobytes() {
        fn future_size<A, B, C, D, E, F: std::future::Future>(_: fn(A, B, C, D, E) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let held = future_size(conversation) + 32 * std::mem::size_of::<Nudge>();
        assert!(held <= 4096, "an idle leaseholder holds {held} bytes");
    }

    fn key() -> Key {
        ("106540352242922".to_owned(), "15551234567".to_owned())
    }

    fn claimed_here(seq: i64) -> Work {
        Work::Claimed {
            key: key(),
            rows: Vec::new(),
            held: Held {
                seq,
                claimed: true,
                stale: false,
                since: Instant::now(),
            },
        }
    }

    /// A worker that could not take the lease still hands on rows a commit of this replica
    /// sent it meanwhile; a look alone it may drop, and nothing reaches it once it closed.
    #[test]
    fn a_leaving_worker_tells_rows_from_looks() {
        let (_tx, mut rx) = mpsc::unbounded_channel::<Nudge>();
        assert_eq!(close(&mut rx), Late::Nothing);
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        tx2.send(Nudge::Look).unwrap();
        assert_eq!(close(&mut rx2), Late::Look);
        assert!(
            tx2.send(Nudge::Look).is_err(),
            "closed: a new worker starts"
        );
        let (tx3, mut rx3) = mpsc::unbounded_channel();
        tx3.send(Nudge::Look).unwrap();
        let Work::Claimed { rows, held, .. } = claimed_here(5) else {
            unreachable!()
        };
        tx3.send(Nudge::Rows { rows, held }).unwrap();
        tx3.send(Nudge::Look).unwrap();
        assert_eq!(close(&mut rx3), Late::Work);
    }

    /// Another replica's commit, heard of by NOTIFY.
    fn woken_elsewhere() -> Work {
        Work::Wake {
            key: key(),
            local: false,
        }
    }

    /// Whether the new worker is told to read the conversation before its first turn.
    fn reads_first(worker: Option<NewWorker>) -> bool {
        let (_, (first, mut nudges)) = worker.expect("a worker starts");
        assert!(matches!(first, Nudge::Rows { .. }));
        matches!(nudges.try_recv(), Ok(Nudge::Look))
    }

    #[tokio::test]
    async fn a_wake_that_overtakes_this_replicas_claim_makes_its_worker_read() {
        let mut routes = Routes::new(Duration::from_secs(30));
        // Another replica's commit (after this replica's claim) is heard of first.
        assert!(routes.route(woken_elsewhere()).is_none());
        assert!(reads_first(routes.route(claimed_here(1))));
    }

    #[tokio::test]
    async fn a_claim_without_a_wake_before_it_takes_its_rows_as_all_there_is() {
        let mut routes = Routes::new(Duration::from_secs(30));
        assert!(!reads_first(routes.route(claimed_here(1))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_older_than_a_lease_is_forgotten() {
        let mut routes = Routes::new(Duration::from_secs(30));
        assert!(routes.route(woken_elsewhere()).is_none());
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(!reads_first(routes.route(claimed_here(1))));
    }

    #[tokio::test]
    async fn a_wake_reaches_the_worker_that_holds_the_conversation() {
        let mut routes = Routes::new(Duration::from_secs(30));
        let (_, (_, mut nudges)) = routes.route(claimed_here(1)).expect("a worker starts");
        assert!(routes.route(woken_elsewhere()).is_none());
        assert!(matches!(nudges.try_recv(), Ok(Nudge::Look)));
    }
}
