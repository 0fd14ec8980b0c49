//! The reconciler: converges Meta-side setup (the app's webhook subscription, each WABA's app
//! subscription, number registration) to what the file declares, like a kube-rs controller:
//! `desired` from the config, `observe` through Graph GETs, a pure `plan`, then `apply`.

pub mod apply;
pub mod cli;
pub mod desired;
pub mod health;
pub mod observe;
pub mod plan;
pub mod runner;
pub mod state;
pub mod status;
pub mod stored;

pub use apply::{ApplyError, apply, explain};
pub use desired::{Desired, DesiredNumber, DesiredWaba};
pub use health::SendHealth;
pub use observe::{Failure, Observed, ObservedApp, ObservedWaba, observe};
pub use plan::{Action, Op, plan};
pub use runner::{Parts, run_cycle};
pub use state::{CycleReport, Mode, ReconcileHandle, ReconcileState};
pub use status::{
    Effective, NumberState, NumberStatus, Statuses, derive_statuses, effective, record_metrics,
    statuses,
};

/// Records what an apply changed at Meta (or where Meta refused it) in the audit log; a pass
/// that changed nothing and failed nothing is not an action.
pub async fn audit_apply(
    store: &crate::store::Store,
    actor: &str,
    applied: &[Action],
    error: Option<&str>,
) {
    use crate::audit::{self, AuditAction, AuditOutcome};
    if applied.is_empty() && error.is_none() {
        return;
    }
    let ops: Vec<String> = applied.iter().map(|a| a.op.to_string()).collect();
    let mut detail = format!("{} change(s) applied", ops.len());
    if !ops.is_empty() {
        detail.push_str(&format!(": {}", ops.join("; ")));
    }
    let outcome = match error {
        None => AuditOutcome::Ok,
        Some(e) => {
            detail.push_str(&format!("; refused: {e}"));
            AuditOutcome::Failed
        }
    };
    let entry = audit::entry(actor, AuditAction::ReconcileApply, None);
    audit::record(store, audit::ended(entry, outcome, detail)).await;
}
