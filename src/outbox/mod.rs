//! The sender: posts one outbox row to the Graph API with retries (exponential backoff with
//! jitter, Retry-After honoured) and records the outcome. It is called by the conversation
//! worker, so replies of one conversation leave in order.

use crate::graph::{GraphError, RetryClass};
use crate::serve::state::{AppState, NumberRuntime};
use crate::store::{OutboxRow, OutboxState, now_ms};
use backon::BackoffBuilder;
use std::time::Duration;

/// How a delivery ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Meta accepted it (or a status webhook proved it did).
    Sent,
    /// Given up: Meta refused it, or retries ran out.
    Failed,
    /// Outside the 24-hour window (131047).
    Expired,
    /// Not sent: the customer opted out after it was queued.
    Cancelled,
    /// Shutdown interrupted it; it stays open in the outbox and is resumed at the next start.
    Interrupted,
}

/// What the caller already knows, sparing the gate a database read.
#[derive(Clone, Debug, Default)]
pub struct Known {
    /// The latest customer message time (Unix seconds) the caller has seen.
    pub last_inbound: Option<i64>,
    /// The row's first attempt was recorded when it was queued (it is `sending` already).
    pub attempt_recorded: bool,
}

/// Builds the Graph request body for a row queued in the database `installation`.
pub fn request_body(row: &OutboxRow, installation: &str) -> serde_json::Value {
    let mut body: serde_json::Value =
        serde_json::from_str(&row.payload).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(obj) = body.as_object_mut() {
        obj.insert("messaging_product".into(), "whatsapp".into());
        obj.entry("recipient_type")
            .or_insert_with(|| "individual".into());
        if row.recipient_kind == "user_id" {
            obj.insert("recipient".into(), row.recipient.clone().into());
        } else {
            obj.insert("to".into(), row.recipient.clone().into());
        }
        obj.insert(
            "biz_opaque_callback_data".into(),
            row.callback_data(installation).into(),
        );
    }
    body
}

/// Sends `row` for `number` until it is settled, failed or the gateway stops.
pub async fn deliver(
    state: &AppState,
    number: &NumberRuntime,
    row: &OutboxRow,
    known: &Known,
) -> Outcome {
    let snap = state.snapshot.load_full();
    let policy = &snap.config.policies.delivery;
    let pnid = row.phone_number_id.as_str();
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(policy.initial_backoff.get())
        .with_max_delay(policy.max_backoff.get())
        .with_jitter()
        .without_max_times()
        .build();
    let body = request_body(row, state.store.installation());
    // Attempts made before this call; the one recorded with the row is about to be made here.
    let mut attempts = row.attempts - i64::from(known.attempt_recorded);
    let mut recorded = known.attempt_recorded;
    loop {
        if state.shutdown.is_cancelled() {
            return Outcome::Interrupted;
        }
        // Checked at send time, not only when queued: the window may have closed while the
        // agent thought or while this reply waited for a retry.
        match gate(state, number, row, known, recorded).await {
            Gate::Go => {}
            Gate::Stop(outcome) => return outcome,
        }
        let attempt = if std::mem::take(&mut recorded) {
            Some(true)
        } else {
            state
                .persist("outbox attempt", || state.writer.outbox_attempt(row.id))
                .await
        };
        match attempt {
            None => return Outcome::Interrupted,
            // A status webhook settled it first: Meta has it, sending again would duplicate it.
            // With several replicas, the row may instead belong to a conversation whose lease
            // this replica lost: the new owner sends it.
            Some(false) => {
                if !state.store.is_shared() {
                    return Outcome::Sent;
                }
                return match state
                    .persist("outbox read", || state.store.outbox_row(row.id))
                    .await
                {
                    Some(Some(r)) if r.state == OutboxState::Cancelled => Outcome::Cancelled,
                    Some(Some(r)) if r.state.is_settled() => Outcome::Sent,
                    _ => {
                        tracing::warn!(
                            outbox_id = row.id,
                            "not sent: this replica no longer holds the conversation's lease"
                        );
                        Outcome::Interrupted
                    }
                };
            }
            Some(true) => {}
        }
        // The token is taken right before the call (only the opt-out check comes between), so
        // what Meta sees is paced, not what the database saw.
        let limiter = state.limiter.load_full();
        let waiting = tokio::time::Instant::now();
        // Like the waits between retries, a pacing wait ends when the gateway drains: the row
        // stays open for whoever comes next.
        tokio::select! {
            _ = limiter.acquire(pnid, &row.customer) => {}
            _ = state.draining.cancelled() => return Outcome::Interrupted,
        }
        state
            .metrics
            .throttle_wait_seconds
            .with_label_values(&[pnid])
            .inc_by(waiting.elapsed().as_secs_f64());
        // The last moment before it leaves: an opt-out committed while it was queued, waited
        // for its pace or for a retry stops it here (an attempt recorded for it is taken back).
        match state.reply_allowed(row).await {
            Some(true) => {}
            Some(false) => {
                tracing::info!(
                    outbox_id = row.id,
                    "reply cancelled: the customer opted out after it was queued"
                );
                give_up(
                    state,
                    row,
                    OutboxState::Cancelled,
                    None,
                    "customer opted out",
                    true,
                )
                .await;
                return Outcome::Cancelled;
            }
            None => return Outcome::Interrupted,
        }
        attempts += 1;
        let result = snap
            .graph
            .send_message(pnid, number.cfg.access_token.expose(), &body)
            .await;
        let err = match result {
            Ok(wamid) => {
                state.reconcile.send_health.record_sent(pnid);
                state
                    .persist("outbox sent", || state.writer.outbox_sent(row.id, &wamid))
                    .await;
                state
                    .metrics
                    .messages_out
                    .with_label_values(&[pnid, "sent"])
                    .inc();
                tracing::debug!(outbox_id = row.id, %wamid, "reply accepted by Meta");
                return Outcome::Sent;
            }
            Err(e) => e,
        };
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
                return Outcome::Expired;
            }
            RetryClass::Fatal => {
                tracing::error!(outbox_id = row.id, phone_number_id = pnid, error = %message, "reply failed; Meta refused it and it is not retried");
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                state
                    .reconcile
                    .send_health
                    .record_refused(pnid, code, &message, now);
                give_up(state, row, OutboxState::Failed, code, &message, false).await;
                return Outcome::Failed;
            }
            class @ (RetryClass::Retry | RetryClass::Throttle) => {
                if attempts >= i64::from(policy.max_attempts) {
                    tracing::error!(outbox_id = row.id, attempts, error = %message, "reply failed after the last retry");
                    give_up(state, row, OutboxState::Failed, code, &message, false).await;
                    return Outcome::Failed;
                }
                let reason = match (class, &err) {
                    (_, GraphError::Network { .. }) => "network",
                    (RetryClass::Throttle, _) => "throttle",
                    _ => "retry",
                };
                state
                    .metrics
                    .send_retries
                    .with_label_values(&[pnid, reason])
                    .inc();
                let backoff = delays.next().unwrap_or(policy.max_backoff.get());
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
                    match settle(state, row, policy.settle_grace.get().max(wait)).await {
                        Some(true) => return Outcome::Sent,
                        Some(false) => {}
                        None => return Outcome::Interrupted,
                    }
                } else {
                    state
                        .persist("outbox retry", || {
                            state.writer.outbox_retry(row.id, code, &message)
                        })
                        .await;
                    tracing::info!(outbox_id = row.id, ?wait, error = %message, "send failed; retrying");
                    // A draining gateway does not wait out retries: the row stays open for
                    // whoever works on the conversation next.
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = state.draining.cancelled() => return Outcome::Interrupted,
                    }
                }
            }
        }
    }
}

enum Gate {
    Go,
    Stop(Outcome),
}

/// The 24-hour window, checked before each attempt (the customer's opt-out is checked later
/// still, right before the call: see [`deliver`]). `recorded`: an attempt was recorded for the
/// row but not made yet; a stop takes it back.
async fn gate(
    state: &AppState,
    number: &NumberRuntime,
    row: &OutboxRow,
    known: &Known,
    recorded: bool,
) -> Gate {
    let pnid = row.phone_number_id.as_str();
    let now_s = now_ms() / 1000;
    let window = number.policies.window.get();
    let open = |ts: Option<i64>| ts.is_some_and(|ts| crate::policy::window_open(ts, now_s, window));
    // What the caller saw may be older than the latest message: ask storage before refusing.
    let open = open(known.last_inbound) || {
        let Some(last) = state
            .persist("window read", || {
                state.store.last_inbound(pnid, &row.customer)
            })
            .await
        else {
            return Gate::Stop(Outcome::Interrupted);
        };
        open(last)
    };
    if !open {
        tracing::warn!(
            outbox_id = row.id,
            phone_number_id = pnid,
            "reply not sent: the customer's 24-hour window closed before it could leave"
        );
        state
            .metrics
            .window_expired
            .with_label_values(&[pnid])
            .inc();
        give_up(
            state,
            row,
            OutboxState::Expired,
            None,
            "customer service window closed before sending",
            recorded,
        )
        .await;
        return Gate::Stop(Outcome::Expired);
    }
    Gate::Go
}

/// Ends `row` undelivered. `unattempted`: it stopped before the send whose attempt was recorded
/// when it was queued, so that attempt is taken back.
async fn give_up(
    state: &AppState,
    row: &OutboxRow,
    to: OutboxState,
    code: Option<i64>,
    message: &str,
    unattempted: bool,
) {
    state
        .persist("outbox give up", || {
            state
                .writer
                .outbox_give_up(row.id, to, code, message, unattempted)
        })
        .await;
    state
        .metrics
        .messages_out
        .with_label_values(&[&row.phone_number_id, to.as_str()])
        .inc();
}

/// Waits `grace` for a status webhook to settle `row`. `Some(true)`: settled; `Some(false)`:
/// not settled, send again; `None`: shutting down.
async fn settle(state: &AppState, row: &OutboxRow, grace: Duration) -> Option<bool> {
    tokio::select! {
        _ = tokio::time::sleep(grace) => {}
        _ = state.draining.cancelled() => return None,
    }
    let current = state
        .persist("outbox read", || state.store.outbox_row(row.id))
        .await?;
    Some(current.is_some_and(|r| r.state.is_settled()))
}

/// Resumes a row found open at start: a row left in `sending` may have reached Meta before the
/// crash, so it waits out the grace period for a status webhook before it is sent again.
pub async fn resume(state: &AppState, number: &NumberRuntime, row: &OutboxRow) -> Outcome {
    if row.state == OutboxState::Sending {
        let grace = state
            .snapshot
            .load()
            .config
            .policies
            .delivery
            .settle_grace
            .get();
        let since = row.sending_since.unwrap_or(0);
        let left =
            Duration::from_millis((since + grace.as_millis() as i64 - now_ms()).max(0) as u64);
        match settle(state, row, left).await {
            Some(true) => {
                tracing::info!(
                    outbox_id = row.id,
                    "reply left in `sending` was settled by a status webhook; not sent again"
                );
                return Outcome::Sent;
            }
            Some(false) => {
                tracing::info!(
                    outbox_id = row.id,
                    "no status for a reply left in `sending`; sending it again"
                );
            }
            None => return Outcome::Interrupted,
        }
    }
    deliver(state, number, row, &Known::default()).await
}
