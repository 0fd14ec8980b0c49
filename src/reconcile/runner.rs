//! The control loop inside `serve`. `run_cycle` is one pass: observe Meta, plan, apply when
//! `meta.reconcile.apply` allows, observe again and derive every number's status. `spawn` is
//! the thin driver that runs a pass at start, after each reload, on request and every
//! `meta.reconcile.interval`, backing off exponentially after a failed pass. With several
//! replicas only the elected leader runs passes (each recorded in `leader_runs`), and every
//! replica serves the statuses it stores (`stored`). It is handed the parts of the gateway it
//! needs (`Parts`), never the gateway's whole state.

use super::state::{CycleReport, Mode, ReconcileHandle, ReconcileState, Request};
use super::status::derive_statuses;
use super::{Desired, apply, observe, plan, stored};
use crate::cluster::Leadership;
use crate::config::Config;
use crate::graph::GraphClient;
use crate::metrics::Metrics;
use crate::store::Store;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a pass asked of a replica that does not lead waits for it to be elected.
const ELECTION_GRACE: Duration = Duration::from_secs(3);

/// First delay after a failed pass; it doubles up to the interval.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The configuration in force and the Graph client built for it, read afresh at each pass.
pub type Current = Arc<dyn Fn() -> (Arc<Config>, GraphClient) + Send + Sync>;

/// What the loop needs of the running gateway.
pub struct Parts {
    /// The configuration in force (swapped by reloads) and its Graph client.
    pub current: Current,
    /// Where each pass's statuses and report go, and where the loop's handle is kept.
    pub state: Arc<ReconcileState>,
    /// Counts passes and actions, and the drift left.
    pub metrics: Metrics,
    /// Records leader-only passes on PostgreSQL.
    pub store: Store,
    /// Only the leader runs passes.
    pub leadership: Leadership,
    /// Draining, not the hard stop: a pass in progress is abandoned at once, so shutdown does
    /// not wait for Meta.
    pub stop: CancellationToken,
    /// Tracks the loop's task, so shutdown waits for it.
    pub tracker: TaskTracker,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One pass; `previous` is the configuration of the last successful pass, so WABAs a reload
/// removed can be pruned. Stores the statuses and the report in `parts.state`.
pub async fn run_cycle(parts: &Parts, previous: Option<&Config>) -> CycleReport {
    let started_at = unix_now();
    let (cfg, graph) = (parts.current)();
    let (cfg, graph) = (&cfg, &graph);
    let mut desired = Desired::from_config(cfg);
    if let Some(prev) = previous {
        desired = desired.with_previous(prev);
    }
    let mode = if cfg.meta.reconcile.apply {
        Mode::Apply
    } else {
        Mode::Plan
    };
    let mut observed_at = stored::unix_ms();
    let mut observed = observe(graph, &desired).await;
    let mut pending = plan(&desired, &observed);
    let mut applied = Vec::new();
    let mut error = None;
    if mode == Mode::Apply && !pending.is_empty() {
        match apply(graph, &desired, pending).await {
            Ok(done) => applied = done,
            Err(e) => {
                let text = e.to_string();
                // Logged when it first happens or changes, not on every retry: the report
                // (/api/config, the status page) and the error counter keep showing it.
                let again = parts.state.last().and_then(|r| r.error) == Some(text.clone());
                match (again, e.asked_meta) {
                    (true, _) => {
                        tracing::debug!(action = %e.action, error = %e.advice, "reconcile: the same change failed again")
                    }
                    (false, true) => {
                        tracing::error!(action = %e.action, error = %e.advice, "reconcile: a change failed at Meta; retrying with backoff")
                    }
                    (false, false) => {
                        tracing::error!(action = %e.action, error = %e.advice, "reconcile: the file lacks what a change needs (Meta was not asked); retrying with backoff")
                    }
                }
                error = Some(text);
                applied = e.done;
            }
        }
        // The same failure as the last pass's, with nothing applied, is audited once.
        let repeated = applied.is_empty()
            && error.is_some()
            && parts.state.last().and_then(|r| r.error) == error;
        if !repeated {
            let failed = error.as_deref();
            super::audit_apply(&parts.store, crate::audit::GATEWAY, &applied, failed).await;
        }
        // Statuses and the drift left come from Meta's state after the changes.
        observed_at = stored::unix_ms();
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
    let previous_statuses = parts.state.statuses();
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
    record(&parts.metrics, &report);
    stored::forget_undeclared(&parts.store, &statuses).await;
    stored::persist(&parts.store, &parts.state, statuses, observed_at).await;
    parts.state.set_report(report.clone());
    report
}

/// The pass's counters and the drift gauge.
fn record(m: &Metrics, report: &CycleReport) {
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
}

fn backoff(interval: Duration) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(FIRST_BACKOFF.min(interval))
        .with_max_delay(interval)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Starts the loop: a first pass at once, then as described in the module doc. Its handle is
/// kept in `parts.state` for the reload hook and the admin API.
pub fn spawn(parts: Parts) -> ReconcileHandle {
    let (tx, rx) = mpsc::channel::<Request>(16);
    let handle = ReconcileHandle { tx };
    parts.state.set_handle(handle.clone());
    let tracker = parts.tracker.clone();
    let interval = parts.interval();
    let driver = Driver {
        parts,
        rx,
        last_ok: None,
        delays: backoff(interval),
        next: Instant::now(),
        held: Vec::new(),
    };
    tracker.spawn(driver.run());
    handle
}

/// The loop's own state between passes.
struct Driver {
    parts: Parts,
    rx: mpsc::Receiver<Request>,
    /// The configuration of the last successful pass.
    last_ok: Option<Arc<Config>>,
    delays: ExponentialBackoff,
    /// When the next scheduled pass is due.
    next: Instant,
    /// Passes asked of a replica that does not lead (yet): served by its first pass if it is
    /// elected within `ELECTION_GRACE` (just after start, say), else told who runs them.
    held: Vec<(oneshot::Sender<CycleReport>, Instant)>,
}

impl Parts {
    fn interval(&self) -> Duration {
        (self.current)().0.meta.reconcile.interval.get()
    }
}

impl Driver {
    async fn run(mut self) {
        // The stored statuses first: a pass derives from them (`since`), and a replica that
        // does not lead serves them.
        let seq = stored::load(&self.parts.store, &self.parts.state).await;
        let current = self.parts.current.clone();
        self.parts.tracker.spawn(stored::follow(
            self.parts.store.clone(),
            self.parts.state.clone(),
            seq,
            move || stored::poll_every(current().0.meta.reconcile.interval.get()),
            self.parts.stop.clone(),
        ));
        loop {
            // Only the leader reconciles; the others start with a pass the moment they are
            // elected.
            let flow = if self.parts.leadership.is_leader() {
                self.lead().await
            } else {
                self.follow().await
            };
            if flow.is_break() {
                break;
            }
        }
    }

    /// While not leading: wait to be elected, answer held requests whose grace ran out.
    async fn follow(&mut self) -> ControlFlow<()> {
        let expiry = self.held.iter().map(|(_, at)| *at).min();
        tokio::select! {
            _ = self.parts.stop.cancelled() => return ControlFlow::Break(()),
            true = self.parts.leadership.wait_until_leader(&self.parts.stop) => {
                tracing::info!("reconcile: this replica leads now; running a pass");
                self.next = Instant::now();
            }
            _ = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => {
                let now = Instant::now();
                let (expired, kept): (Vec<_>, Vec<_>) =
                    self.held.drain(..).partition(|(_, at)| *at <= now);
                self.held = kept;
                for (reply, _) in expired {
                    let _ = reply.send(not_leader_report());
                }
            }
            req = self.rx.recv() => match req {
                Some(Request::RunNow(reply)) => {
                    self.held.push((reply, Instant::now() + ELECTION_GRACE));
                }
                Some(Request::Trigger) => {}
                None => return ControlFlow::Break(()),
            },
        }
        ControlFlow::Continue(())
    }

    /// While leading: wait for the next pass (due, or asked for), run it, schedule the next.
    async fn lead(&mut self) -> ControlFlow<()> {
        let waiters = self.wait_for_pass().await?;
        let config = (self.parts.current)().0;
        let pass = self.parts.leadership.run_cycle(
            &self.parts.store,
            "reconcile",
            run_cycle(&self.parts, self.last_ok.as_deref()),
        );
        let report = tokio::select! {
            _ = self.parts.stop.cancelled() => return ControlFlow::Break(()),
            r = pass => match r {
                Some(r) => r,
                // Leadership was lost (or its start could not be recorded): not run.
                None => {
                    for reply in waiters {
                        let _ = reply.send(not_leader_report());
                    }
                    return ControlFlow::Continue(());
                }
            },
        };
        let wait = if report.is_ok() {
            self.last_ok = Some(config);
            self.delays = backoff(self.parts.interval());
            self.parts.interval()
        } else {
            let wait = self.delays.next().unwrap_or_else(|| self.parts.interval());
            tracing::info!(
                ?wait,
                "reconcile: the pass failed; trying again after a backoff"
            );
            wait
        };
        self.next = Instant::now() + wait;
        for reply in waiters {
            let _ = reply.send(report.clone());
        }
        ControlFlow::Continue(())
    }

    /// Waits until a pass is due or asked for; returns who waits for its report.
    async fn wait_for_pass(&mut self) -> ControlFlow<(), Vec<oneshot::Sender<CycleReport>>> {
        let mut waiters: Vec<_> = self.held.drain(..).map(|(reply, _)| reply).collect();
        // Passes held while not leading run at once.
        let at = if waiters.is_empty() {
            self.next
        } else {
            Instant::now()
        };
        tokio::select! {
            _ = self.parts.stop.cancelled() => return ControlFlow::Break(()),
            _ = tokio::time::sleep_until(at) => {}
            req = self.rx.recv() => match req {
                Some(Request::RunNow(reply)) => waiters.push(reply),
                Some(Request::Trigger) => {}
                None => return ControlFlow::Break(()),
            },
        }
        // Everything asked for meanwhile is served by this one pass.
        while let Ok(req) = self.rx.try_recv() {
            if let Request::RunNow(reply) = req {
                waiters.push(reply);
            }
        }
        ControlFlow::Continue(waiters)
    }
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
