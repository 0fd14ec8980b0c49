//! What a failed send (or the media upload before it) leads to: given up (outside the window,
//! refused, out of retries) or a wait before the next attempt, with backoff, Retry-After and
//! throttling. It never sends.

use super::media::MediaError;
use super::{Known, Outcome, give_up, settle};
use crate::config::Delivery;
use crate::graph::{GraphError, RetryClass};
use crate::serve::state::AppState;
use crate::store::{OutboxRow, OutboxState};
use backon::BackoffBuilder;
use std::ops::ControlFlow;

/// A failed attempt: the send itself, or making its media file a media id first.
#[derive(Clone, Copy, Debug)]
pub(super) enum Failure<'a> {
    Send(&'a GraphError),
    Media(&'a MediaError),
}

impl Failure<'_> {
    /// Meta's answer, when Meta gave it (to the send or to the upload).
    fn graph(&self) -> Option<&GraphError> {
        match *self {
            Failure::Send(e) | Failure::Media(MediaError::Upload { source: e, .. }) => Some(e),
            Failure::Media(_) => None,
        }
    }

    fn code(&self) -> Option<i64> {
        self.graph().and_then(GraphError::code)
    }

    /// A media host's failure is retried when it may pass (never as Meta's throttling, which
    /// would pause the whole number); a file Meta would refuse never is.
    fn class(&self) -> RetryClass {
        match self {
            Failure::Media(MediaError::Fetch { source, .. }) if source.is_temporary() => {
                RetryClass::Retry
            }
            _ => self.graph().map_or(RetryClass::Fatal, GraphError::class),
        }
    }

    /// Whether Meta may have taken the message although the call failed (only a send can be:
    /// an upload that may have happened is simply made again).
    fn is_ambiguous(&self) -> bool {
        matches!(self, Failure::Send(e) if e.is_ambiguous())
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Failure::Media(MediaError::Fetch { source, .. }) => source.retry_after(),
            _ => self.graph().and_then(GraphError::retry_after),
        }
    }

    fn is_network(&self) -> bool {
        matches!(self.graph(), Some(GraphError::Network { .. }))
            || matches!(self, Failure::Media(MediaError::Fetch { source, .. })
                if matches!(source, super::fetch::FetchError::Network(_)))
    }
}

impl std::fmt::Display for Failure<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Send(e) => e.fmt(f),
            Failure::Media(e) => e.fmt(f),
        }
    }
}

/// The attempts made and the waits between them, for one delivery.
pub(super) struct Retries<'a> {
    policy: &'a Delivery,
    delays: backon::ExponentialBackoff,
    /// Attempts made so far, counting those of earlier deliveries of the row.
    pub attempts: i64,
}

impl<'a> Retries<'a> {
    /// The retries of one delivery of `row`, under the delivery `policy`.
    pub fn new(policy: &'a Delivery, row: &OutboxRow, known: &Known) -> Self {
        let delays = backon::ExponentialBuilder::default()
            .with_min_delay(policy.initial_backoff.get())
            .with_max_delay(policy.max_backoff.get())
            .with_jitter()
            .without_max_times()
            .build();
        Retries {
            policy,
            delays,
            // The attempt recorded with the row is about to be made here, not made already.
            attempts: row.attempts - i64::from(known.attempt_recorded),
        }
    }
}

/// What a failed attempt leads to: the row given up (outside the window, refused, or out of
/// retries), or a wait before the next round.
pub(super) async fn after_failure(
    state: &AppState,
    row: &OutboxRow,
    err: Failure<'_>,
    retries: &mut Retries<'_>,
) -> ControlFlow<Outcome> {
    let pnid = row.phone_number_id.as_str();
    let code = err.code();
    if let Some(c) = code {
        state
            .metrics
            .meta_errors
            .with_label_values(&[&c.to_string()])
            .inc();
    }
    let message = err.to_string();
    match err.class() {
        RetryClass::OutsideWindow => {
            state
                .metrics
                .window_expired
                .with_label_values(&[pnid])
                .inc();
            tracing::warn!(
                outbox_id = row.id,
                phone_number_id = pnid,
                "reply not sent: more than 24 h since the customer's last message (131047)"
            );
            give_up(state, row, OutboxState::Expired, code, &message, false).await;
            ControlFlow::Break(Outcome::Expired)
        }
        RetryClass::Fatal => {
            tracing::error!(outbox_id = row.id, phone_number_id = pnid, error = %message, "reply failed and is not retried");
            // A file its host would not give, or that Meta would not take, says nothing about
            // the number's health; Meta refusing a call does.
            if err.graph().is_some() {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                state
                    .reconcile
                    .send_health
                    .record_refused(pnid, code, &message, now);
            }
            if code == Some(190) && err.graph().is_some() {
                // The number's own token is refused: Error now, on every replica, not at the
                // next pass minutes later.
                let cfg = state.snapshot.load().config.clone();
                crate::reconcile::stored::token_refused(&state.store, &state.reconcile, &cfg, pnid)
                    .await;
            }
            give_up(state, row, OutboxState::Failed, code, &message, false).await;
            ControlFlow::Break(Outcome::Failed)
        }
        class @ (RetryClass::Retry | RetryClass::Throttle) => {
            if retries.attempts >= i64::from(retries.policy.max_attempts) {
                let attempts = retries.attempts;
                tracing::error!(outbox_id = row.id, attempts, error = %message, "reply failed after the last retry");
                give_up(state, row, OutboxState::Failed, code, &message, false).await;
                return ControlFlow::Break(Outcome::Failed);
            }
            retry_later(state, row, err, class, retries).await
        }
    }
}

/// Waits before the next attempt after a failure worth retrying. When Meta may have taken the
/// message after all, the wait is for a status webhook settling it instead.
async fn retry_later(
    state: &AppState,
    row: &OutboxRow,
    err: Failure<'_>,
    class: RetryClass,
    retries: &mut Retries<'_>,
) -> ControlFlow<Outcome> {
    let pnid = row.phone_number_id.as_str();
    let policy = retries.policy;
    let reason = match class {
        _ if err.is_network() => "network",
        RetryClass::Throttle => "throttle",
        _ => "retry",
    };
    state
        .metrics
        .send_retries
        .with_label_values(&[pnid, reason])
        .inc();
    let backoff = retries.delays.next().unwrap_or(policy.max_backoff.get());
    let wait = err.retry_after().map_or(backoff, |ra| ra.max(backoff));
    if class == RetryClass::Throttle {
        // The whole number pauses, not just this conversation; others keep sending.
        let limiter = state.limiter.load_full();
        limiter.throttle(pnid, tokio::time::Instant::now() + wait);
        limiter.pause_cluster(pnid, wait).await;
        state.metrics.throttled.with_label_values(&[pnid]).inc();
    }
    if err.is_ambiguous() {
        // Meta may have taken it: wait for a status webhook echoing our id before
        // sending again, or a retry could deliver it twice.
        return match settle(state, row, policy.settle_grace.get().max(wait)).await {
            Some(true) => ControlFlow::Break(Outcome::Sent),
            Some(false) => ControlFlow::Continue(()),
            None => ControlFlow::Break(Outcome::Interrupted),
        };
    }
    let (code, message) = (err.code(), err.to_string());
    state
        .persist("outbox retry", || {
            state.writer.outbox_retry(row.id, code, &message)
        })
        .await;
    tracing::info!(outbox_id = row.id, ?wait, error = %message, "send failed; retrying");
    // A draining gateway does not wait out retries: the row stays open for
    // whoever works on the conversation next.
    tokio::select! {
        _ = tokio::time::sleep(wait) => ControlFlow::Continue(()),
        _ = state.draining.cancelled() => ControlFlow::Break(Outcome::Interrupted),
    }
}
