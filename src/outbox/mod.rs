//! The sender: posts one outbox row to the Graph API with retries (exponential backoff with
//! jitter, Retry-After honoured) and records the outcome; a media row's file is uploaded first
//! (`media.rs`). It is called by the conversation worker, so replies of one conversation leave
//! in order.

use crate::cloudapi::outbound::Envelope;
use crate::graph::{GraphClient, GraphError};
use crate::policy::limits::{Paced, Turns};
use crate::serve::state::{AppState, NumberRuntime};
use crate::store::{OutboxKind, OutboxRow, OutboxState, now_ms};
use media::{MediaError, Uploaded};
use retry::{Failure, Retries, after_failure};
use std::ops::ControlFlow;
use std::time::Duration;
use tracing::Instrument;

mod fetch;
mod media;
pub mod requeue;
mod retry;

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
    // The message goes out as it was queued, whatever its type: the sender only addresses it.
    let message: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&row.payload).unwrap_or_default();
    let callback = row.callback_data(installation);
    Envelope::new(&message, row.recipient_kind, &row.recipient, &callback).to_value()
}

/// Sends `row` for `number` until it is settled, failed or the gateway stops: each round checks
/// that the row may still leave, makes one attempt, and on a failure decides whether to retry.
/// A media row sent by upload gets its media id in the first round that reaches it; the id
/// is kept for the rounds after.
pub async fn deliver(
    state: &AppState,
    number: &NumberRuntime,
    row: &OutboxRow,
    known: &Known,
) -> Outcome {
    let snap = state.snapshot.load_full();
    let mut retries = Retries::new(&snap.config.policies.delivery, row, known);
    let queued = request_body(row, state.store.installation());
    let to_upload = media::link_to_upload(&queued, number.policies.media.upload);
    let mut uploaded: Option<Uploaded> = None;
    // Set once Meta refused a cached media id: the file is uploaded again, not looked up.
    let mut fresh = false;
    let mut recorded = known.attempt_recorded;
    loop {
        if let ControlFlow::Break(outcome) = admit(state, number, row, known, &mut recorded).await {
            return outcome;
        }
        retries.attempts += 1;
        let body = match (&to_upload, &uploaded) {
            (None, _) => queued.clone(),
            (Some((kind, _)), Some(u)) => media::by_id(&queued, *kind, &u.media_id),
            (Some((kind, link)), None) => {
                match media::upload(state, number, *kind, link, &queued, fresh).await {
                    Ok(u) => {
                        let body = media::by_id(&queued, *kind, &u.media_id);
                        uploaded = Some(u);
                        body
                    }
                    Err(MediaError::Interrupted) => return Outcome::Interrupted,
                    Err(e) => {
                        match after_failure(state, row, Failure::Media(&e), &mut retries).await {
                            ControlFlow::Break(outcome) => return outcome,
                            ControlFlow::Continue(()) => continue,
                        }
                    }
                }
            }
        };
        if let ControlFlow::Break(outcome) = last_checks(state, row).await {
            return outcome;
        }
        let err = match send(state, &snap.graph, number, row, &body).await {
            Ok(()) => return Outcome::Sent,
            Err(e) => e,
        };
        if !fresh && uploaded.as_ref().is_some_and(|u| u.cached) && media::unknown_media_id(&err) {
            tracing::warn!(
                outbox_id = row.id,
                "Meta no longer knows the cached media id; uploading the file again"
            );
            (uploaded, fresh) = (None, true);
            continue;
        }
        if let ControlFlow::Break(outcome) =
            after_failure(state, row, Failure::Send(&err), &mut retries).await
        {
            return outcome;
        }
    }
}

/// What is checked before one attempt, in order: shutdown, the 24-hour window and recording
/// the attempt (then, right before the call, [`last_checks`]). `recorded`: an attempt was
/// recorded for the row when it was queued and is not made yet (the first round only).
async fn admit(
    state: &AppState,
    number: &NumberRuntime,
    row: &OutboxRow,
    known: &Known,
    recorded: &mut bool,
) -> ControlFlow<Outcome> {
    if state.shutdown.is_cancelled() {
        return ControlFlow::Break(Outcome::Interrupted);
    }
    // Checked at send time, not only when queued: the window may have closed while the
    // agent thought or while this reply waited for a retry.
    match gate(state, number, row, known, *recorded).await {
        Gate::Go => {}
        Gate::Stop(outcome) => return ControlFlow::Break(outcome),
    }
    record_attempt(state, row, std::mem::take(recorded)).await
}

/// A wait for the number's pace shorter than this, after storage said the customer takes the
/// reply, is not worth asking again before the call: asking takes about as long.
const ASKED_FRESH: Duration = Duration::from_millis(1);

/// How many times a send whose pace turn came late takes a later one before it goes anyway: a
/// process stalled that long is slow whatever it does, and the reply must still leave.
const LATE_RETAKES: u32 = 3;

/// What is checked last, right before the call (after a media file's upload, which may take a
/// while): the number's pace, and the customer's opt-out. With several replicas, storage is
/// asked about the opt-out in the statement that takes the pace's turn.
async fn last_checks(state: &AppState, row: &OutboxRow) -> ControlFlow<Outcome> {
    let mut retakes = 0;
    let allowed = loop {
        let turns = if retakes == 0 {
            Turns::CustomerAndNumber
        } else {
            Turns::Number
        };
        let paced = pace(state, row, turns).await?;
        // The last moment before it leaves: an opt-out committed while it was queued, waited
        // for its pace or for a retry stops it here (an attempt recorded for it is taken back).
        let allowed = match paced.allowed {
            Some(allowed) if paced.waited_since <= ASKED_FRESH => Some(allowed),
            _ => state.reply_allowed(row).await,
        };
        if allowed != Some(true) || !paced.is_late() || retakes == LATE_RETAKES {
            break allowed;
        }
        tracing::debug!(
            outbox_id = row.id,
            "the pace's turn came late; taking a later one"
        );
        retakes += 1;
    };
    match allowed {
        Some(true) => ControlFlow::Continue(()),
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
            ControlFlow::Break(Outcome::Cancelled)
        }
        None => ControlFlow::Break(Outcome::Interrupted),
    }
}

/// Records the attempt about to be made (unless it was `recorded` with the row), which fails
/// when the row was settled meanwhile.
async fn record_attempt(state: &AppState, row: &OutboxRow, recorded: bool) -> ControlFlow<Outcome> {
    let attempt = if recorded {
        Some(true)
    } else {
        state
            .persist("outbox attempt", || state.writer.outbox_attempt(row.id))
            .await
    };
    match attempt {
        Some(true) => ControlFlow::Continue(()),
        None => ControlFlow::Break(Outcome::Interrupted),
        // A status webhook settled it first: Meta has it, sending again would duplicate it.
        // With several replicas, the row may instead belong to a conversation whose lease
        // this replica lost: the new owner sends it.
        Some(false) if !state.store.is_shared() => ControlFlow::Break(Outcome::Sent),
        Some(false) => ControlFlow::Break(
            match state
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
            },
        ),
    }
}

/// Waits for the number's pace. The token is taken right before the call (only the opt-out
/// check comes between), so what Meta sees is paced, not what the database saw. With several
/// replicas the statement that takes it also asks whether the customer takes the reply.
async fn pace(state: &AppState, row: &OutboxRow, turns: Turns) -> ControlFlow<Outcome, Paced> {
    let pnid = row.phone_number_id.as_str();
    let limiter = state.limiter.load_full();
    let waiting = tokio::time::Instant::now();
    let ask = (state.store.is_shared() && row.kind != OutboxKind::OptOutConfirmation)
        .then_some(row.created_at);
    // Like the waits between retries, a pacing wait ends when the gateway drains: the row
    // stays open for whoever comes next.
    let paced = tokio::select! {
        paced = limiter.take(pnid, &row.customer, ask, turns) => paced,
        _ = state.draining.cancelled() => return ControlFlow::Break(Outcome::Interrupted),
    };
    state
        .metrics
        .throttle_wait_seconds
        .with_label_values(&[pnid])
        .inc_by(waiting.elapsed().as_secs_f64());
    ControlFlow::Continue(paced)
}

/// One attempt; on success the row is recorded sent.
async fn send(
    state: &AppState,
    graph: &GraphClient,
    number: &NumberRuntime,
    row: &OutboxRow,
    body: &serde_json::Value,
) -> Result<(), GraphError> {
    let pnid = row.phone_number_id.as_str();
    // A client span per attempt (HTTP and messaging conventions); the status webhooks of the
    // wamid Meta answers become its children.
    let span = crate::telemetry::span_if_on(|| {
        tracing::info_span!(
            "send",
            otel.name = "POST /messages",
            otel.kind = "client",
            http.request.method = "POST",
            messaging.system = "whatsapp",
            messaging.operation.type = "send",
            messaging.operation.name = "send",
            messaging.destination.name = pnid,
            messaging.message.id = tracing::field::Empty,
            outbox_id = row.id,
            otel.status_code = tracing::field::Empty,
        )
    });
    // Known before the call: Meta's `sent` status may come back before its answer does.
    if crate::telemetry::enabled() {
        let callback = row.callback_data(state.store.installation());
        crate::telemetry::remember_send(&span, &callback);
    }
    let sent = graph
        .send_message(pnid, number.cfg.access_token.expose(), body)
        .instrument(span.clone())
        .await;
    let wamid = match sent {
        Ok(wamid) => wamid,
        Err(e) => {
            span.record("otel.status_code", "ERROR");
            return Err(e);
        }
    };
    span.record("messaging.message.id", wamid.as_str());
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
    Ok(())
}

enum Gate {
    Go,
    Stop(Outcome),
}

/// The 24-hour window, checked before each attempt (the customer's opt-out is checked later
/// still, right before the call: see [`last_checks`]). `recorded`: an attempt was recorded for the
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
