//! The control loop inside `serve`. `run_cycle` is one pass: observe Meta, plan, apply when
//! `meta.reconcile.apply` allows, observe again and derive every number's status. `spawn` is
//! the thin driver that runs a pass at start, after each reload, on request and every
//! `meta.reconcile.interval`, backing off exponentially after a failed pass. With several
//! replicas only the elected leader runs passes (each recorded in `leader_runs`).

use super::health::SendHealth;
use super::status::{NumberStatus, derive_statuses};
use super::{Action, Desired, apply, observe, plan};
use crate::config::Config;
use crate::state::AppState;
use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Serialize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// How long a pass asked of a replica that does not lead waits for it to be elected.
const ELECTION_GRACE: Duration = Duration::from_secs(3);

/// First delay after a failed pass; it doubles up to the interval.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Whether a pass carries out its plan or only reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Apply,
    Plan,
}

/// What one pass found and did.
#[derive(Clone, Debug, Serialize)]
pub struct CycleReport {
    /// Unix seconds.
    pub started_at: u64,
    pub finished_at: u64,
    pub mode: Mode,
    /// Actions carried out in this pass.
    pub applied: Vec<Action>,
    /// The drift left after the pass: actions still to do (all of them in `plan` mode).
    pub pending: Vec<Action>,
    /// Why applying stopped, with what to do.
    pub error: Option<String>,
    /// Graph reads that failed (what, and Meta's answer).
    pub read_failures: Vec<String>,
}

impl CycleReport {
    /// A pass is ok when every read succeeded and nothing was refused. Drift left in `plan`
    /// mode is not an error: it is what that mode reports.
    pub fn is_ok(&self) -> bool {
        self.error.is_none() && self.read_failures.is_empty()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The loop's results, shared with the admin API and the sender; plain mutexes, never held
/// across an await.
#[derive(Default)]
pub struct ReconcileState {
    statuses: Mutex<Vec<NumberStatus>>,
    last: Mutex<Option<CycleReport>>,
    /// Runs of refused sends per number, fed by the sender.
    pub send_health: SendHealth,
    handle: OnceLock<ReconcileHandle>,
    /// The webhook listener's own URL, when the built-in emulator stands in for Meta.
    local_webhook: OnceLock<String>,
}

impl ReconcileState {
    /// The numbers' statuses from the latest observation (empty before the first pass).
    pub fn statuses(&self) -> Vec<NumberStatus> {
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The latest pass's report.
    pub fn last(&self) -> Option<CycleReport> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn store(&self, statuses: Vec<NumberStatus>, report: CycleReport) {
        *self.statuses.lock().unwrap_or_else(|e| e.into_inner()) = statuses;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
    }

    /// Records where the in-process emulator delivers webhooks (the listener itself).
    pub fn set_local_webhook(&self, url: String) {
        let _ = self.local_webhook.set(url);
    }

    /// Where Test Connection sends its probe: `public_url`, or with the built-in emulator the
    /// listener it calls instead.
    pub fn probe_url(&self, cfg: &Config) -> String {
        match self.local_webhook.get() {
            Some(url) if cfg.uses_emulator() => url.clone(),
            _ => cfg.public_url.clone(),
        }
    }

    /// Asks the loop for a pass soon (after a reload); no-op when no loop runs.
    pub fn trigger(&self) {
        if let Some(h) = self.handle.get() {
            h.trigger();
        }
    }

    /// Runs a pass now and returns its report; `None` when no loop runs or it stopped.
    pub async fn run_now(&self) -> Option<CycleReport> {
        self.handle.get()?.run_now().await
    }
}

/// One pass; `previous` is the configuration of the last successful pass, so WABAs a reload
/// removed can be pruned. Stores the statuses and the report in `state`.
pub async fn run_cycle(state: &AppState, previous: Option<&Config>) -> CycleReport {
    let started_at = unix_now();
    let snap = state.snapshot.load_full();
    let cfg = &snap.config;
    let mut desired = Desired::from_config(cfg);
    if let Some(prev) = previous {
        desired = desired.with_previous(prev);
    }
    let graph = &snap.graph;
    let mode = if cfg.meta.reconcile.apply {
        Mode::Apply
    } else {
        Mode::Plan
    };
    let mut observed = observe(graph, &desired).await;
    let mut pending = plan(&desired, &observed);
    let mut applied = Vec::new();
    let mut error = None;
    if mode == Mode::Apply && !pending.is_empty() {
        match apply(graph, &desired, pending).await {
            Ok(done) => applied = done,
            Err(e) => {
                tracing::error!(action = %e.action, error = %e.advice, "reconcile: Meta refused a change; retrying with backoff");
                error = Some(e.to_string());
                applied = e.done;
            }
        }
        // Statuses and the drift left come from Meta's state after the changes.
        observed = observe(graph, &desired).await;
        pending = plan(&desired, &observed);
    } else if !pending.is_empty() {
        for a in &pending {
            tracing::warn!(action = %a.op, reason = %a.reason, "reconcile: drift from the file (meta.reconcile.apply is off; run `wa-gateway apply`)");
        }
    }
    let read_failures: Vec<String> = observed
        .failures()
        .into_iter()
        .map(|(what, f)| format!("{what}: {}", f.message))
        .collect();
    for f in &read_failures {
        tracing::warn!(failure = %f, "reconcile: cannot read the state at Meta");
    }
    let previous_statuses = state.reconcile.statuses();
    let statuses = derive_statuses(&desired, &observed, &previous_statuses, unix_now());
    let report = CycleReport {
        started_at,
        finished_at: unix_now(),
        mode,
        applied,
        pending,
        error,
        read_failures,
    };
    let m = &state.metrics;
    m.reconcile_runs
        .with_label_values(&[if report.is_ok() { "ok" } else { "error" }])
        .inc();
    m.reconcile_actions
        .with_label_values(&["ok"])
        .inc_by(report.applied.len() as u64);
    if report.error.is_some() {
        m.reconcile_actions.with_label_values(&["error"]).inc();
    }
    m.reconcile_drift.set(report.pending.len() as i64);
    state.reconcile.store(statuses, report.clone());
    report
}

enum Request {
    /// A pass soon; nobody waits for it.
    Trigger,
    /// A pass now; its report goes back.
    RunNow(oneshot::Sender<CycleReport>),
}

/// Asks the loop for passes; cheap to clone.
#[derive(Clone)]
pub struct ReconcileHandle {
    tx: mpsc::Sender<Request>,
}

impl ReconcileHandle {
    /// A pass soon; requests made while one is queued fold into it.
    pub fn trigger(&self) {
        // A full queue already holds a pass that will see the same state.
        let _ = self.tx.try_send(Request::Trigger);
    }

    /// A pass now; returns its report, or `None` when the loop stopped.
    pub async fn run_now(&self) -> Option<CycleReport> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Request::RunNow(tx)).await.ok()?;
        rx.await.ok()
    }
}

fn backoff(interval: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(FIRST_BACKOFF.min(interval))
        .with_max_delay(interval)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Starts the loop: a first pass at once, then as described in the module doc. Its handle is
/// kept in `state.reconcile` for the reload hook and the admin API.
pub fn spawn(state: Arc<AppState>) -> ReconcileHandle {
    let (tx, mut rx) = mpsc::channel::<Request>(16);
    let handle = ReconcileHandle { tx };
    let _ = state.reconcile.handle.set(handle.clone());
    // Draining, not the hard stop: a pass in progress is abandoned at once, so shutdown does
    // not wait for Meta.
    let stop = state.draining.clone();
    let tracker = state.tracker.clone();
    tracker.spawn(async move {
        let mut last_ok: Option<Arc<Config>> = None;
        let interval = || state.snapshot.load().config.meta.reconcile.interval.get();
        let mut delays = backoff(interval());
        let mut next = tokio::time::Instant::now();
        // Passes asked of a replica that does not lead (yet): served by its first pass if it
        // is elected within `ELECTION_GRACE` (just after start, say), else told who runs them.
        let mut held: Vec<(oneshot::Sender<CycleReport>, tokio::time::Instant)> = Vec::new();
        loop {
            // Only the leader reconciles; the others start with a pass the moment they are
            // elected.
            if !state.leadership.is_leader() {
                let expiry = held.iter().map(|(_, at)| *at).min();
                tokio::select! {
                    _ = stop.cancelled() => break,
                    true = state.leadership.wait_until_leader(&stop) => {
                        tracing::info!("reconcile: this replica leads now; running a pass");
                        next = tokio::time::Instant::now();
                    }
                    _ = tokio::time::sleep_until(expiry.unwrap_or_else(tokio::time::Instant::now)), if expiry.is_some() => {
                        let now = tokio::time::Instant::now();
                        let (expired, kept): (Vec<_>, Vec<_>) =
                            held.drain(..).partition(|(_, at)| *at <= now);
                        held = kept;
                        for (reply, _) in expired {
                            let _ = reply.send(not_leader_report());
                        }
                    }
                    req = rx.recv() => match req {
                        Some(Request::RunNow(reply)) => {
                            held.push((reply, tokio::time::Instant::now() + ELECTION_GRACE));
                        }
                        Some(Request::Trigger) => {}
                        None => break,
                    },
                }
                continue;
            }
            let mut waiters: Vec<_> = held.drain(..).map(|(reply, _)| reply).collect();
            // Passes held while not leading run at once.
            let at = if waiters.is_empty() {
                next
            } else {
                tokio::time::Instant::now()
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(at) => {}
                req = rx.recv() => match req {
                    Some(Request::RunNow(reply)) => waiters.push(reply),
                    Some(Request::Trigger) => {}
                    None => break,
                },
            }
            // Everything asked for meanwhile is served by this one pass.
            while let Ok(req) = rx.try_recv() {
                if let Request::RunNow(reply) = req {
                    waiters.push(reply);
                }
            }
            let config = state.snapshot.load().config.clone();
            let pass = state.leadership.run_cycle(
                &state.store,
                "reconcile",
                run_cycle(&state, last_ok.as_deref()),
            );
            let report = tokio::select! {
                _ = stop.cancelled() => break,
                r = pass => match r {
                    Some(r) => r,
                    // Leadership was lost (or its start could not be recorded): not run.
                    None => {
                        for reply in waiters {
                            let _ = reply.send(not_leader_report());
                        }
                        continue;
                    }
                },
            };
            let wait = if report.is_ok() {
                last_ok = Some(config);
                delays = backoff(interval());
                interval()
            } else {
                let wait = delays.next().unwrap_or_else(interval);
                tracing::info!(
                    ?wait,
                    "reconcile: the pass failed; trying again after a backoff"
                );
                wait
            };
            next = tokio::time::Instant::now() + wait;
            for reply in waiters {
                let _ = reply.send(report.clone());
            }
        }
    });
    handle
}

/// The answer to a pass asked of a replica that does not lead.
fn not_leader_report() -> CycleReport {
    let now = unix_now();
    CycleReport {
        started_at: now,
        finished_at: now,
        mode: Mode::Plan,
        applied: Vec::new(),
        pending: Vec::new(),
        error: Some(
            "this replica is not the leader: the elected leader runs the reconciler (GET \
             /api/cluster on each replica says which one leads)"
                .into(),
        ),
        read_failures: Vec::new(),
    }
}
