//! What the control loop shares with the rest of the gateway: each pass's report, the numbers'
//! latest statuses, the sender's run of refused sends, and the handle that asks for a pass.
//! Plain data behind mutexes; it knows nothing of the gateway's state or how the loop runs.

use super::health::SendHealth;
use super::plan::Action;
use super::status::{NumberStatus, Statuses};
use crate::config::Config;
use serde::Serialize;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{mpsc, oneshot};

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

/// The loop's results, shared with the admin API and the sender; plain mutexes, never held
/// across an await.
#[derive(Default)]
pub struct ReconcileState {
    statuses: Mutex<Arc<Statuses>>,
    last: Mutex<Option<CycleReport>>,
    /// Runs of refused sends per number, fed by the sender.
    pub send_health: SendHealth,
    handle: OnceLock<ReconcileHandle>,
    /// The webhook listener's own URL, when the built-in emulator stands in for Meta.
    local_webhook: OnceLock<String>,
}

impl ReconcileState {
    /// The numbers' statuses as stored (`stored.rs`: loaded at start, then each change any
    /// replica stores); shared, not copied, so a scrape over thousands of numbers copies none
    /// of them.
    pub fn statuses(&self) -> Arc<Statuses> {
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The latest pass's report.
    pub fn last(&self) -> Option<CycleReport> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn set_report(&self, report: CycleReport) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
    }

    /// Takes in stored statuses: each replaces the number's status unless the one held is a
    /// later write (a higher `seq`), so rows read back in any order leave the newest. With
    /// `force`, they replace it whatever its `seq` (storage could not be written: this
    /// process's own view goes on).
    pub(super) fn merge(&self, statuses: impl IntoIterator<Item = NumberStatus>, force: bool) {
        let mut statuses = statuses.into_iter().peekable();
        if statuses.peek().is_none() {
            return;
        }
        let mut held = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        // Copies the map only while a reader (a scrape, a page) still holds the old one.
        let map = Arc::make_mut(&mut held);
        for s in statuses {
            match map.get(&s.phone_number_id) {
                Some(h) if !force && h.seq >= s.seq => {}
                _ => {
                    map.insert(s.phone_number_id.clone(), s);
                }
            }
        }
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

    /// Keeps the running loop's handle; the first loop started wins.
    pub(super) fn set_handle(&self, handle: ReconcileHandle) {
        let _ = self.handle.set(handle);
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

/// What the loop is asked for.
pub(super) enum Request {
    /// A pass soon; nobody waits for it.
    Trigger,
    /// A pass now; its report goes back.
    RunNow(oneshot::Sender<CycleReport>),
}

/// Asks the loop for passes; cheap to clone.
#[derive(Clone)]
pub struct ReconcileHandle {
    pub(super) tx: mpsc::Sender<Request>,
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
