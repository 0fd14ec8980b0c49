//! The load: webhooks posted on a fixed timeline (open loop: a slow gateway shows as latency, the
//! offered rate does not bend) or by N senders back to back (closed loop), and the reply reader.

use super::client::Pool;
use super::payload::{Message, Number, Run};
use super::report::{Acks, Replies};
use crate::emulator::EmulatorHandle;
use crate::ingress::signature;
use bytes::Bytes;
use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every webhook of a run shares.
pub struct Load {
    pub run: Run,
    pub numbers: Vec<Number>,
    pub customers: u32,
    pub per_webhook: u32,
    pub app_secret: Vec<u8>,
    pub pool: Pool,
    pub emulator: EmulatorHandle,
    pub acks: Mutex<Acks>,
    /// The load's start, and the same moment in unix microseconds.
    pub start: Instant,
    pub start_unix_us: u64,
}

/// Unix microseconds now.
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Load {
    fn unix_us_at(&self, at: Instant) -> u64 {
        self.start_unix_us + u64::try_from((at - self.start).as_micros()).unwrap_or(0)
    }

    /// Webhook `k`, meant to leave at `at`: random number and customers, registered with the
    /// emulator (24h window, markable wamids), signed, posted, its answer recorded.
    async fn webhook(&self, k: u64, at: Instant) {
        let sent_us = self.unix_us_at(at);
        let per = u64::from(self.per_webhook);
        let (number, messages) = {
            let mut rng = rand::rng();
            let number = &self.numbers[rng.random_range(0..self.numbers.len())];
            let messages: Vec<Message> = (k * per..(k + 1) * per)
                .map(|seq| Message {
                    seq,
                    customer: rng.random_range(0..self.customers),
                    sent_us,
                })
                .collect();
            (number, messages)
        };
        for m in &messages {
            self.emulator.record_inbound(
                &number.phone_number_id,
                &self.run.wa_id(m.customer),
                &self.run.wamid(m.seq),
                i64::try_from(sent_us / 1_000_000).unwrap_or(i64::MAX),
            );
        }
        let body = self.run.envelope(number, &messages);
        let sig = signature::sign(&self.app_secret, body.as_bytes());
        let status = match self.pool.post(Bytes::from(body), &sig).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(error = %e, "webhook POST got no answer");
                None
            }
        };
        let latency_us = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.acks.lock().unwrap_or_else(|e| e.into_inner()).record(
            messages.iter().map(|m| m.seq),
            status,
            latency_us,
        );
    }
}

/// Open loop: `rate` messages per second for `duration`, webhook `k` scheduled at
/// `start + k / webhook_rate` whatever became of the earlier ones. Returns webhooks sent.
pub async fn open_loop(load: Arc<Load>, rate: u64, duration: Duration) -> u64 {
    let webhooks_per_sec = rate as f64 / f64::from(load.per_webhook);
    let total = (duration.as_secs_f64() * webhooks_per_sec).round() as u64;
    let period_ns = 1e9 / webhooks_per_sec;
    let tasks = TaskTracker::new();
    for k in 0..total {
        let at = load.start + Duration::from_nanos((k as f64 * period_ns) as u64);
        if at > Instant::now() {
            tokio::time::sleep_until(at.into()).await;
        }
        let load = load.clone();
        tasks.spawn(async move { load.webhook(k, at).await });
    }
    tasks.close();
    tasks.wait().await;
    total
}

/// Closed loop: `concurrency` senders, each posting its next webhook as soon as the previous one
/// is answered, until `duration` has passed. Returns webhooks sent.
pub async fn closed_loop(load: Arc<Load>, concurrency: usize, duration: Duration) -> u64 {
    let deadline = load.start + duration;
    let next = Arc::new(AtomicU64::new(0));
    let tasks = TaskTracker::new();
    for _ in 0..concurrency {
        let (load, next) = (load.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let k = next.fetch_add(1, Ordering::Relaxed);
                load.webhook(k, now).await;
            }
        });
    }
    tasks.close();
    tasks.wait().await;
    next.load(Ordering::Relaxed)
}

/// Reads the messages the emulator accepts as they come and matches them until `stop`.
pub async fn read_replies(
    emulator: EmulatorHandle,
    replies: Arc<Mutex<Replies>>,
    stop: CancellationToken,
) {
    let mut after = 0;
    loop {
        let batch = tokio::select! {
            b = emulator.wait_sent_after(after, Duration::from_secs(1)) => b,
            () = stop.cancelled() => return,
        };
        let Some(last) = batch.last() else {
            continue;
        };
        after = last.seq;
        let mut r = replies.lock().unwrap_or_else(|e| e.into_inner());
        for m in &batch {
            r.record(m.text.as_deref(), m.received_at_ms);
        }
    }
}
