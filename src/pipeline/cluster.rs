//! Conversation work shared by several replicas on one PostgreSQL. A replica works on a
//! conversation only while it holds the conversation's lease: it reads the conversation's open
//! rows from storage and runs them in order, one turn at a time, whichever replica received
//! them. Commits announce their conversations with NOTIFY; the leader takes over conversations
//! whose lease ran out (a replica died). Nothing polls on the message path.

use super::{Dispatch, Work, turn};
use crate::serve::state::AppState;
use crate::store::InboxRow;
use crate::store::cluster::{OVERRIDES_CHANNEL, WORK_CHANNEL, parse_work_payload};
use std::collections::{HashMap, HashSet};
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

async fn dispatcher(
    state: Arc<AppState>,
    claims: Arc<Claims>,
    mut rx: mpsc::UnboundedReceiver<Work>,
    dispatch: Dispatch,
) {
    // Conversations this replica works on (or is claiming), with a way to wake their worker.
    let mut owned: HashMap<Key, mpsc::UnboundedSender<()>> = HashMap::new();
    let mut next_sweep = 4096;
    loop {
        let work = tokio::select! {
            w = rx.recv() => match w { Some(w) => w, None => break },
            _ = state.draining.cancelled() => break,
        };
        let local = match &work {
            Work::Wake { local, .. } => *local,
            Work::Inbound(_) | Work::Resume(_) => true,
        };
        let key = work.key();
        if let Some(wake) = owned.get(&key)
            && wake.send(()).is_ok()
        {
            continue;
        }
        if !local {
            // Another replica committed it: it claims the conversation, or its holder looks.
            continue;
        }
        if owned.len() >= next_sweep {
            owned.retain(|_, w| !w.is_closed());
            next_sweep = (owned.len() * 2).max(4096);
        }
        let (wake, woken) = mpsc::unbounded_channel();
        owned.insert(key.clone(), wake);
        state.tracker.spawn(conversation(
            state.clone(),
            claims.clone(),
            key,
            woken,
            dispatch.clone(),
        ));
    }
}

/// Claims one conversation and runs its open work in order until it has been idle for a while,
/// then gives it back.
async fn conversation(
    state: Arc<AppState>,
    claims: Arc<Claims>,
    key: Key,
    mut woken: mpsc::UnboundedReceiver<()>,
    dispatch: Dispatch,
) {
    let (pnid, customer) = (key.0.as_str(), key.1.as_str());
    let acquired = Instant::now();
    match state
        .persist("lease", || {
            state.store.acquire_lease(pnid, customer, claims.lease)
        })
        .await
    {
        Some(true) => {}
        // Another replica holds it and sees the work itself.
        Some(false) | None => return,
    }
    state.metrics.conversation_leases.inc();
    state.metrics.conversation_workers.inc();
    let mut known = turn::Known::default();
    // Replies a previous holder left unsettled leave before anything newer.
    if let Some(open) = state
        .persist("outbox read", || state.store.open_outbox_of(pnid, customer))
        .await
    {
        for row in open {
            if state.draining.is_cancelled() {
                break;
            }
            turn::resume(&state, row).await;
        }
    }
    // Messages already handed to a turn. Each read takes every waiting message rather than
    // those past the last id seen: another replica's message can commit after a later one was
    // handled here yet carry a lower id (ids are taken at insert, rows show at commit).
    let mut seen: HashSet<i64> = HashSet::new();
    loop {
        if state.draining.is_cancelled() {
            break;
        }
        if !claims.holds(acquired) {
            tracing::warn!(
                phone_number_id = pnid,
                "conversation lease not renewed in time; giving the conversation up"
            );
            break;
        }
        while woken.try_recv().is_ok() {}
        let Some(rows) = state
            .persist("inbox read", || {
                state.store.open_inbox_of(pnid, customer, 0)
            })
            .await
        else {
            break;
        };
        let rows: Vec<InboxRow> = rows.into_iter().filter(|r| !seen.contains(&r.id)).collect();
        if rows.is_empty() {
            tokio::select! {
                biased;
                _ = state.draining.cancelled() => break,
                w = woken.recv() => match w { Some(()) => continue, None => break },
                _ = tokio::time::sleep(IDLE) => break,
            }
        }
        let rows = gather(&state, rows, &mut woken, pnid, customer).await;
        seen.extend(rows.iter().map(|r| r.id));
        turn::inbound(&state, rows, &mut known).await;
    }
    // Wakes from now on start a new claim.
    drop(woken);
    state
        .persist("lease release", || {
            state.store.release_lease(pnid, customer)
        })
        .await;
    state.metrics.conversation_leases.dec();
    state.metrics.conversation_workers.dec();
    if state.draining.is_cancelled() {
        return;
    }
    // A message committed elsewhere while this replica held the lease but had stopped looking
    // found no one to claim it: look once more now that the lease is free.
    let waiting = state
        .persist("inbox read", || {
            state.store.open_inbox_of(pnid, customer, 0)
        })
        .await;
    if waiting.is_some_and(|w| !w.is_empty()) {
        dispatch.send(Work::Wake { key, local: true });
    }
}

/// The rows of the next turn: the first waiting message, joined by the customer's next ones
/// while coalescing applies (plain text arriving within the quiet period).
async fn gather(
    state: &AppState,
    rows: Vec<InboxRow>,
    woken: &mut mpsc::UnboundedReceiver<()>,
    pnid: &str,
    customer: &str,
) -> Vec<InboxRow> {
    let mut rows = rows.into_iter();
    let Some(first) = rows.next() else {
        return Vec::new();
    };
    let Some(quiet) = turn::coalesce_window(state, &first) else {
        return vec![first];
    };
    let mut turn_rows = vec![first];
    for row in rows {
        if !turn::coalescable(state, &row) {
            return turn_rows;
        }
        turn_rows.push(row);
    }
    // Each new message starts the quiet period again; a wake that brings none does not.
    let mut until = Instant::now() + quiet;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return turn_rows,
            _ = state.draining.cancelled() => return turn_rows,
            Some(()) = woken.recv() => {}
        }
        let after = turn_rows.last().map_or(0, |r| r.id);
        let Some(more) = state
            .persist("inbox read", || {
                state.store.open_inbox_of(pnid, customer, after)
            })
            .await
        else {
            return turn_rows;
        };
        if !more.is_empty() {
            until = Instant::now() + quiet;
        }
        for row in more {
            if !turn::coalescable(state, &row) {
                return turn_rows;
            }
            turn_rows.push(row);
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
            l.listen_all([WORK_CHANNEL, OVERRIDES_CHANNEL]).await?;
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
