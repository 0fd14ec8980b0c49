//! Signed webhook delivery as Meta does it: POST with X-Hub-Signature-256 over the exact bytes,
//! redelivered with exponential backoff until a 2xx (Meta keeps trying for days) or shutdown.
//! One customer's webhooks are first attempted in order; redeliveries may overtake, as at Meta.

use super::state::State;
use super::webhook_queue::Delivery;
use crate::cloudapi::signature;
use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most POSTs in flight at once. Meta posts many at once: it asks a webhook server to take three
/// times a number's outgoing traffic plus its incoming at a median latency of up to 250 ms, which
/// at 1,000 messages a second is about a thousand requests open. 256 lets a server that answers in
/// 10 ms take 25,000 webhooks a second (64 held the bench's closed loop to about 2,700 answered
/// messages a second, the status webhooks queued here with the CPU idle), and stays under the
/// usual soft limit of 1,024 open files.
pub(crate) const MAX_IN_FLIGHT: usize = 256;
/// How long one POST may take before it counts as failed.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// What every delivery task shares.
struct Deliverer {
    state: Arc<State>,
    client: reqwest::Client,
    permits: Semaphore,
    backoff: ExponentialBuilder,
    shutdown: CancellationToken,
    /// The next of `webhook_spread` to post to.
    turn: AtomicUsize,
}

/// The queue: takes envelopes from `rx` and runs one delivery task each, starting a customer's
/// next envelope only when its previous one had its first attempt.
pub(crate) async fn run_queue(
    state: Arc<State>,
    mut rx: mpsc::UnboundedReceiver<Delivery>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(state.cfg.retry_initial)
        .with_max_delay(state.cfg.retry_max)
        .with_jitter()
        .without_max_times();
    let client = match reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build() {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(%err, "emulator cannot build its webhook HTTP client");
            return;
        }
    };
    let deliverer = Arc::new(Deliverer {
        state,
        client,
        permits: Semaphore::new(MAX_IN_FLIGHT),
        backoff,
        shutdown: shutdown.clone(),
        turn: AtomicUsize::new(0),
    });
    let (first_done_tx, mut first_done_rx) = mpsc::unbounded_channel::<String>();
    // Keys with a first attempt under way, and what waits behind it.
    let mut lanes: HashMap<String, VecDeque<Bytes>> = HashMap::new();
    let spawn = |key: String, body: Bytes| {
        let done = (!key.is_empty()).then(|| (first_done_tx.clone(), key));
        tasks.spawn(deliverer.clone().deliver(body, done));
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some(d) = rx.recv() => match lanes.get_mut(&d.key) {
                Some(waiting) => waiting.push_back(d.body),
                None => {
                    if !d.key.is_empty() {
                        lanes.insert(d.key.clone(), VecDeque::new());
                    }
                    spawn(d.key, d.body);
                }
            },
            Some(key) = first_done_rx.recv() => {
                match lanes.get_mut(&key).and_then(VecDeque::pop_front) {
                    Some(body) => spawn(key, body),
                    None => {
                        lanes.remove(&key);
                    }
                }
            }
        }
    }
}

impl Deliverer {
    /// Delivers `body` until it is accepted or shutdown; reports the first attempt on `first_done`.
    async fn deliver(
        self: Arc<Self>,
        body: Bytes,
        mut first_done: Option<(mpsc::UnboundedSender<String>, String)>,
    ) {
        let mut delays = self.backoff.build();
        loop {
            let Some(accepted) = self.attempt(&body).await else {
                return;
            };
            if let Some((tx, key)) = first_done.take() {
                let _ = tx.send(key);
            }
            if accepted {
                return;
            }
            let delay = delays.next().unwrap_or(self.state.cfg.retry_max);
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One POST; `None` when shut down first. Waits for a webhook URL if none is set yet.
    async fn attempt(&self, body: &Bytes) -> Option<bool> {
        let url = match self.state.cfg.webhook_spread.as_slice() {
            [] => {
                let mut url_rx = self.state.webhook_url();
                tokio::select! {
                    () = self.shutdown.cancelled() => return None,
                    url = url_rx.wait_for(Option::is_some) => url.ok()?.clone()?,
                }
            }
            urls => urls[self.turn.fetch_add(1, Ordering::Relaxed) % urls.len()].clone(),
        };
        let _permit = tokio::select! {
            () = self.shutdown.cancelled() => return None,
            permit = self.permits.acquire() => permit.ok()?,
        };
        let sig = signature::sign(self.state.cfg.app_secret.as_bytes(), body);
        let sent = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Hub-Signature-256", sig)
            .body(body.clone())
            .send();
        let result = tokio::select! {
            () = self.shutdown.cancelled() => return None,
            r = sent => r,
        };
        let counters = &self.state.counters;
        counters.attempts.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(response) if response.status().is_success() => {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                counters.pending.fetch_sub(1, Ordering::Relaxed);
                Some(true)
            }
            Ok(response) => {
                counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(status = %response.status(), %url, "webhook refused; will redeliver");
                Some(false)
            }
            Err(err) => {
                counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%err, %url, "webhook delivery failed; will redeliver");
                Some(false)
            }
        }
    }
}
