//! The audit log's one entry point: every admin action, state-changing CLI action, reconciler
//! apply and reload is recorded here, as a row of `audit_log` (kept under
//! `storage.retention.audit`) and as a log line with `audit=true`. Who did it is the admin
//! token's name ([`ADMIN_TOKEN`]), [`CLI`] or [`GATEWAY`] (what the gateway does by itself).
//! An entry never holds a secret value: callers pass names, ids and outcomes, never values.

use crate::store::Store;
pub use crate::store::{AuditAction, AuditEntry, AuditOutcome, NewAuditEntry};

/// The actor of an action authorised by `listen.admin_token` (the one admin token's name).
pub const ADMIN_TOKEN: &str = "admin_token";
/// The actor of an action on an admin listener with no token configured.
pub const OPEN: &str = "open";
/// The actor of a `wa-gateway` command (directly on storage, or through the admin API).
pub const CLI: &str = "cli";
/// The actor of what the gateway does by itself (a reload on a file change, the reconciler).
pub const GATEWAY: &str = "gateway";

/// The header a `wa-gateway` command sets on its admin API calls (value [`CLI`]), so the
/// audit log names the command, not the token, as the actor.
pub const CLIENT_HEADER: &str = "x-wa-gateway-client";

/// A new entry by `actor`, ending `ok` unless said otherwise.
pub fn entry(actor: &str, action: AuditAction, target: Option<&str>) -> NewAuditEntry {
    NewAuditEntry {
        actor: actor.to_owned(),
        action,
        target: target.map(str::to_owned),
        outcome: AuditOutcome::Ok,
        detail: None,
    }
}

/// Sets how the action ended and what it did (or why not).
pub fn ended(
    mut e: NewAuditEntry,
    outcome: AuditOutcome,
    detail: impl Into<String>,
) -> NewAuditEntry {
    e.outcome = outcome;
    let detail: String = detail.into();
    // Bounded: a detail is a sentence, not a payload.
    e.detail = Some(detail.chars().take(1000).collect());
    e
}

/// Records `e`: a log line with `audit=true`, then its row. The action has happened (or was
/// refused) already, so a storage failure is logged and does not fail it.
pub async fn record(store: &Store, e: NewAuditEntry) {
    tracing::info!(
        audit = true,
        actor = %e.actor,
        action = e.action.as_str(),
        target = e.target.as_deref().unwrap_or(""),
        outcome = e.outcome.as_str(),
        detail = e.detail.as_deref().unwrap_or(""),
        "audit: {} by {}: {}",
        e.action.as_str(),
        e.actor,
        e.outcome.as_str()
    );
    if let Err(err) = store.record_audit(&e).await {
        tracing::warn!(error = %err, action = e.action.as_str(), "audit entry not stored");
    }
}
