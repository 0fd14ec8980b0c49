//! The load: webhooks posted on a fixed timeline (open loop: a slow gateway shows as latency, the
//! offered rate does not bend) or by N senders back to back (closed loop), spread over the targets
//! in turn, and the reply reader.

use super::client::Pool;
use super::payload::{Message, Number, Run};
use super::report::{Acks, Replies};
use crate::cloudapi::signature;
use crate::emulator::EmulatorHandle;
use bytes::Bytes;
use rand::Rng;
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
    /// emulator (24h window, markable wamids), signed, posted to its target, its answer recorded.
    async fn webhook(&self, k: u64, at: Instant) {
        let sent_us = self.unix_us_at(at);
        let (number, (target, messages)) = {
            let mut rng = rand::rng();
            let number = &self.numbers[rng.random_range(0..self.numbers.len())];
            let shape = Shape {
                per_webhook: self.per_webhook,
                customers: self.customers,
                targets: self.pool.targets(),
            };
            (number, shape.webhook(k, sent_us, &mut rng))
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
        let status = match self.pool.post(target, Bytes::from(body), &sig).await {
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

/// How webhooks are made up: messages per webhook, customers, targets.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub per_webhook: u32,
    pub customers: u32,
    pub targets: usize,
}

impl Shape {
    /// Webhook `k`, sent at `sent_us`: its target and its messages (seqs `k*per..(k+1)*per`,
    /// each from a random customer). Targets go in turn whatever the customer, as behind Meta's
    /// load balancer any replica may get any webhook; a customer's messages keep rising
    /// timestamps because `sent_us` rises with `k` (see `Tickets`).
    pub fn webhook(self, k: u64, sent_us: u64, rng: &mut impl Rng) -> (usize, Vec<Message>) {
        let per = u64::from(self.per_webhook);
        let messages = (k * per..(k + 1) * per)
            .map(|seq| Message {
                seq,
                customer: rng.random_range(0..self.customers),
                sent_us,
            })
            .collect();
        let target = usize::try_from(k % self.targets.max(1) as u64).unwrap_or(0);
        (target, messages)
    }
}

/// Hands out webhook numbers with their send times so that both rise together: a later webhook
/// never carries an earlier time, whichever sender takes it (two senders reading the clock and
/// then the counter could swap them).
pub struct Tickets {
    next: Mutex<u64>,
    deadline: Instant,
}

impl Tickets {
    pub fn new(deadline: Instant) -> Self {
        Self {
            next: Mutex::new(0),
            deadline,
        }
    }

    /// The next webhook number and its send time, or `None` once the deadline has passed.
    pub fn take(&self) -> Option<(u64, Instant)> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now >= self.deadline {
            return None;
        }
        let k = *next;
        *next += 1;
        Some((k, now))
    }

    /// How many were handed out.
    pub fn taken(&self) -> u64 {
        *self.next.lock().unwrap_or_else(|e| e.into_inner())
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
    let tickets = Arc::new(Tickets::new(load.start + duration));
    let tasks = TaskTracker::new();
    for _ in 0..concurrency {
        let (load, tickets) = (load.clone(), tickets.clone());
        tasks.spawn(async move {
            while let Some((k, at)) = tickets.take() {
                load.webhook(k, at).await;
            }
        });
    }
    tasks.close();
    tasks.wait().await;
    tickets.taken()
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn webhooks_go_to_the_targets_in_turn_and_keep_each_customers_order() {
        let shape = Shape {
            per_webhook: 2,
            customers: 5,
            targets: 3,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let start_us = 1_700_000_000_999_000;
        let mut per_target = [0u32; 3];
        let mut last_target = None;
        // customer -> (seq, timestamp in seconds as the envelope carries it, target), by seq.
        let mut by_customer: BTreeMap<u32, Vec<(u64, u64, usize)>> = BTreeMap::new();
        for k in 0..600 {
            // An open-loop timeline 5 ms apart: three second boundaries fall inside it.
            let sent_us = start_us + k * 5000;
            let (target, messages) = shape.webhook(k, sent_us, &mut rng);
            assert_ne!(Some(target), last_target, "webhook {k}");
            last_target = Some(target);
            per_target[target] += 1;
            assert_eq!(
                messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
                [2 * k, 2 * k + 1]
            );
            for m in messages {
                assert!(m.customer < 5);
                by_customer.entry(m.customer).or_default().push((
                    m.seq,
                    m.sent_us / 1_000_000,
                    target,
                ));
            }
        }
        assert_eq!(per_target, [200, 200, 200]);
        assert_eq!(by_customer.len(), 5);
        for (customer, msgs) in &by_customer {
            assert!(
                msgs.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "customer {customer}: seqs and timestamps rise together"
            );
            let targets: BTreeSet<usize> = msgs.iter().map(|m| m.2).collect();
            assert_eq!(targets.len(), 3, "customer {customer} is not pinned");
        }
        // One target: every webhook goes there.
        let one = Shape {
            targets: 1,
            ..shape
        };
        assert!((0..10).all(|k| one.webhook(k, start_us, &mut rng).0 == 0));
    }

    #[test]
    fn tickets_rise_with_their_times_across_senders_and_stop_at_the_deadline() {
        let tickets = Arc::new(Tickets::new(Instant::now() + Duration::from_secs(60)));
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let tickets = tickets.clone();
                std::thread::spawn(move || {
                    (0..2000)
                        .map(|_| tickets.take().expect("before the deadline"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(u64, Instant)> = senders
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect();
        all.sort_by_key(|&(k, _)| k);
        assert!(all.iter().enumerate().all(|(i, &(k, _))| k == i as u64));
        assert!(all.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(tickets.taken(), 8000);

        let past = Tickets::new(Instant::now());
        assert_eq!(past.take(), None);
        assert_eq!(past.taken(), 0);
    }
}
