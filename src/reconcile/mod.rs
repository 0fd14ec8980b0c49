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
