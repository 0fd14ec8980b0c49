//! The handoff notification: the JSON body a pause queues (in the pause's transaction), and the
//! leader's sender that POSTs it to `policies.handoff.notify.url` signed like Meta signs webhooks,
//! retried with backoff under `policies.delivery` until accepted. The queue is a table, so a
//! restart or a new leader carries on; delivery is at least once (`X-Wa-Gateway-Delivery`).

use super::Pause;
use crate::serve::state::AppState;
use crate::store::{HandoffOp, HistoryEntry, Notification, Notified, now_ms};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// The header carrying `sha256=<hex>`, the HMAC-SHA256 of the raw body keyed with
/// `policies.handoff.notify.secret` (the format of Meta's `X-Hub-Signature-256`).
pub const SIGNATURE_HEADER: &str = "x-wa-gateway-signature-256";
/// The header carrying the notification's id, the same on every attempt (for deduplication).
const DELIVERY_HEADER: &str = "x-wa-gateway-delivery";
/// Notifications read per round.
const BATCH: usize = 16;
/// How often the leader looks for notifications queued by another replica while idle (one
/// process is woken by its own pauses instead).
const SHARED_POLL: Duration = Duration::from_secs(2);
const LOCAL_POLL: Duration = Duration::from_secs(60);
/// How often pauses that ended by themselves are forgotten (they hold no more either way).
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// Milliseconds since the Unix epoch as RFC 3339 (UTC, seconds), as the admin API shows times.
fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The body announcing `pause`, with the conversation's `last` messages, oldest first.
pub(super) fn body(pause: &Pause, last: &[HistoryEntry]) -> String {
    let last: Vec<_> = last
        .iter()
        .map(|m| {
            json!({
                "from": if m.from_customer { "customer" } else { "business" },
                "text": m.text,
                "timestamp": m.timestamp,
            })
        })
        .collect();
    json!({
        "event": "paused",
        "number": pause.phone_number_id,
        "customer": pause.customer,
        "reason": pause.reason,
        "paused_at": rfc3339(pause.paused_at),
        "paused_until": rfc3339(pause.paused_until),
        "by": pause.by,
        "last_messages": last,
    })
    .to_string()
}

/// Starts the sender (it works while this replica leads, and stops when the gateway drains).
pub fn spawn(state: Arc<AppState>) {
    let tracker = state.tracker.clone();
    tracker.spawn(run(state));
}

async fn run(state: Arc<AppState>) {
    let http = reqwest::Client::new();
    let poll = if state.store.is_shared() {
        SHARED_POLL
    } else {
        LOCAL_POLL
    };
    let mut forgotten: Option<tokio::time::Instant> = None;
    loop {
        if !state.leadership.wait_until_leader(&state.draining).await {
            return;
        }
        if forgotten.is_none_or(|at| at.elapsed() >= FORGET_EVERY) {
            forgotten = Some(tokio::time::Instant::now());
            let op = HandoffOp::ForgetEnded { now: now_ms() };
            if let Err(e) = state.writer.handoff(op).await {
                tracing::debug!(error = %e, "ended pauses not forgotten; next time");
            }
        }
        let wait = match send_due(&state, &http).await {
            Ok(Some(next)) => {
                let ms = u64::try_from(next - now_ms()).unwrap_or(0);
                Duration::from_millis(ms).min(poll)
            }
            Ok(None) => poll,
            Err(e) => {
                tracing::warn!(error = %e, "handoff notifications not read; retrying");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.handoff_queued.notified() => {}
            _ = state.draining.cancelled() => return,
        }
    }
}

/// Sends every notification due now; answers when the next one is due, if one is pending.
async fn send_due(
    state: &AppState,
    http: &reqwest::Client,
) -> Result<Option<i64>, crate::store::StoreError> {
    loop {
        let due = state.store.due_notifications(now_ms(), BATCH).await?;
        for n in &due {
            if !state.leadership.is_leader() || state.draining.is_cancelled() {
                return Ok(None);
            }
            send_one(state, http, n).await;
        }
        if due.len() < BATCH {
            return state.store.next_notification_at().await;
        }
    }
}

/// One attempt at `n`, and its outcome recorded.
async fn send_one(state: &AppState, http: &reqwest::Client, n: &Notification) {
    let snapshot = state.snapshot.load_full();
    let policies = &snapshot.config.policies;
    let error = match &policies.handoff.notify {
        None => Err("policies.handoff.notify is no longer set".to_owned()),
        Some(cfg) => {
            let signature =
                crate::cloudapi::signature::sign(cfg.secret.expose().as_bytes(), n.body.as_bytes());
            let request = http
                .post(&cfg.url)
                .timeout(cfg.timeout.get())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, signature)
                .header(DELIVERY_HEADER, n.id.to_string())
                .body(n.body.clone())
                .send();
            let sent = tokio::select! {
                sent = request => sent,
                // Not recorded: the attempt is made again after the restart.
                _ = state.shutdown.cancelled() => return,
            };
            match sent {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!(
                    "the receiver answered HTTP {}",
                    r.status().as_u16()
                )),
                // Without the URL: its query may hold a credential.
                Err(e) => Err(e.without_url().to_string()),
            }
        }
    };
    let attempts = n.attempts + 1;
    let outcome = match error {
        Ok(()) => Notified::Sent,
        Err(error) if policies.handoff.notify.is_none() => Notified::Failed { error },
        Err(error) if attempts >= i64::from(policies.delivery.max_attempts) => {
            Notified::Failed { error }
        }
        Err(error) => Notified::Retry {
            at: now_ms() + backoff(&policies.delivery, attempts),
            error,
        },
    };
    let result = match &outcome {
        Notified::Sent => "sent",
        Notified::Retry { .. } => "retry",
        Notified::Failed { .. } => "failed",
    };
    match &outcome {
        Notified::Sent => tracing::info!(
            notification = n.id,
            phone_number_id = %n.phone_number_id,
            "handoff notification delivered"
        ),
        Notified::Retry { error, .. } | Notified::Failed { error } => tracing::warn!(
            notification = n.id,
            phone_number_id = %n.phone_number_id,
            attempts,
            result,
            error = %error,
            "handoff notification not delivered"
        ),
    }
    state
        .metrics
        .handoff_notifications
        .with_label_values(&[result])
        .inc();
    let op = || {
        state.writer.handoff(HandoffOp::Notified {
            id: n.id,
            outcome: outcome.clone(),
        })
    };
    state.persist("handoff notification", op).await;
}

/// The wait (ms) before attempt `attempts + 1`: `initial_backoff` doubling up to `max_backoff`,
/// with up to a quarter of jitter so receivers that come back are not hit all at once.
fn backoff(policy: &crate::config::Delivery, attempts: i64) -> i64 {
    let initial = policy.initial_backoff.get().as_millis() as f64;
    let max = policy.max_backoff.get().as_millis() as f64;
    let doubled = initial * 2f64.powi(attempts.clamp(1, 30) as i32 - 1);
    let base = doubled.min(max);
    let jitter = base * 0.25 * rand::random::<f64>();
    (base + jitter) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PausedBy;

    #[test]
    fn the_body_names_the_conversation_and_its_last_messages() {
        let pause = Pause {
            phone_number_id: "106540352242922".into(),
            customer: "15551234567".into(),
            paused_at: 1_700_000_000_000,
            paused_until: 1_700_007_200_000,
            reason: Some("refund".into()),
            by: PausedBy::Agent,
        };
        let last = [
            HistoryEntry {
                from_customer: true,
                text: "I want a refund".into(),
                timestamp: 1_699_999_990,
            },
            HistoryEntry {
                from_customer: false,
                text: "A person will help you.".into(),
                timestamp: 1_699_999_995,
            },
        ];
        let v: serde_json::Value = serde_json::from_str(&body(&pause, &last)).unwrap();
        assert_eq!(v["number"], "106540352242922");
        assert_eq!(v["customer"], "15551234567");
        assert_eq!(v["reason"], "refund");
        assert_eq!(v["by"], "agent");
        assert_eq!(v["paused_until"], "2023-11-15T00:13:20Z");
        assert_eq!(v["last_messages"][0]["from"], "customer");
        assert_eq!(v["last_messages"][1]["text"], "A person will help you.");
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let policy = crate::config::Delivery {
            initial_backoff: crate::config::Duration::from_millis(100),
            max_backoff: crate::config::Duration::from_millis(1000),
            ..Default::default()
        };
        for (attempts, low) in [(1, 100), (2, 200), (3, 400), (5, 1000), (40, 1000)] {
            let wait = backoff(&policy, attempts);
            assert!((low..=low + low / 4).contains(&wait), "{attempts}: {wait}");
        }
    }
}
