//! Meta's send limits, enforced before each send: throughput per number, pacing per (number,
//! customer), and pauses after Meta answers "too many messages". It only waits; it never sends.
//! One process keeps the buckets in memory (governor); several replicas on PostgreSQL keep them
//! in the database (one atomic GCRA statement per take), so the limits hold for the cluster.

use crate::config::policy::CustomerPacing;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// governor's clock on tokio's time, so limits follow `tokio::time::pause` in tests and the
/// waits below (tokio sleeps) agree with the limiter's notion of now. governor's own
/// `until_ready` sleeps with futures-timer on wall time, which a paused tokio clock never
/// reaches; that is why `acquire` waits with its own loop.
#[derive(Clone, Debug)]
struct TokioClock {
    start: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

type Direct = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;
type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, TokioClock, NoOpMiddleware<Duration>>;

/// What a turn taken with [`SendLimiter::acquire_asking`] said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paced {
    /// Whether the customer still takes the reply, as storage said when the turn was taken;
    /// `None` when it was not asked (one process, or the cluster's buckets unavailable).
    pub allowed: Option<bool>,
    /// How long the wait for the turn lasted after storage said so.
    pub waited_since: Duration,
    /// When the number's turn began.
    turn: Instant,
    /// How late after `turn` a send may still use it: one interval of the number's rate (so at
    /// most one send lands beside the next turn), never under 5 ms, which timers and a busy
    /// scheduler overshoot by anyway.
    tolerance: Duration,
}

impl Paced {
    fn new(turn: Instant, interval: Duration) -> Self {
        Self {
            allowed: None,
            waited_since: Duration::ZERO,
            turn,
            tolerance: interval.max(Duration::from_millis(5)),
        }
    }

    /// Whether the turn is past: a send made now (a stalled process, a slow read after the
    /// turn came) would land beside the turns taken after it, past the rate Meta measures, so
    /// the sender takes a later one instead. Giving a turn up errs on the slow side.
    pub fn is_late(&self) -> bool {
        self.turn.elapsed() > self.tolerance
    }
}

/// Which turns a send takes ([`SendLimiter::take`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turns {
    /// The customer's (pacing), then the number's: a send's first.
    CustomerAndNumber,
    /// Only the number's: a send whose number turn came late ([`Paced::is_late`]) takes a
    /// later one. The customer's turn it took stands: coming late only spaced the customer's
    /// messages further. Taking it again would spend the customer's burst at every late wake,
    /// and once it was spent hold each of their later replies for the pacing interval (6 s by
    /// default) at every retake.
    Number,
}

/// Paces sends per number and per (number, customer); shared by all senders of the process.
///
/// Build a new one when the config changes: the new limiter starts with full buckets, which at
/// worst lets one message per number and a customer's burst through early after a reload, and
/// Meta's own limits absorb that.
#[derive(Debug)]
pub struct SendLimiter {
    clock: TokioClock,
    /// Numbers at the default rate, created on first use.
    default_numbers: Keyed<String>,
    /// Numbers with their own rate (a per-number override in the config).
    numbers: HashMap<String, Direct>,
    /// `None` when pacing is off (a zero interval).
    customers: Option<Keyed<(String, String)>>,
    /// Numbers Meta told to slow down, and until when. Never locked across an await.
    throttled: Mutex<HashMap<String, Instant>>,
    /// The rates, kept for the cluster-wide buckets.
    default_rate: u32,
    rates: HashMap<String, u32>,
    pacing: CustomerPacing,
    /// With several replicas: the database holding the cluster-wide buckets.
    store: Option<crate::store::Store>,
}

impl SendLimiter {
    /// A limiter allowing `default_rate` messages per second per number, evenly spaced,
    /// `per_number_rates` for numbers with an override, and `pacing` per customer.
    ///
    /// In one process a number's bucket holds 10 ms' worth of messages, at least two, not one: a
    /// waiter wakes on tokio's millisecond timer, a little after its turn on a busy machine, and
    /// a bucket of one would carry that lateness into every later turn (80/s would become 1 per
    /// 13 ms, 77/s; 5,000/s at most one or two per millisecond). Any one second then sees at most
    /// 1% over the rate, plus one. The cluster's buckets reserve each turn ahead of time, so a
    /// late wake shifts nothing and they hold one ([`Self::number_bucket`]).
    /// A rate of 0 is taken as 1: config validation is where zero is refused.
    pub fn new(
        default_rate: u32,
        per_number_rates: HashMap<String, u32>,
        pacing: &CustomerPacing,
    ) -> Self {
        let clock = TokioClock {
            start: Instant::now(),
        };
        let per_second = |rate: u32| {
            let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new((rate.get() / 100).max(2)).unwrap_or(NonZeroU32::MIN);
            Quota::per_second(rate).allow_burst(burst.min(rate))
        };
        let default_numbers = RateLimiter::new(
            per_second(default_rate),
            DefaultKeyedStateStore::default(),
            clock.clone(),
        );
        let rates = per_number_rates.clone();
        let numbers = per_number_rates
            .into_iter()
            .map(|(number, rate)| {
                let limiter = RateLimiter::direct_with_clock(per_second(rate), clock.clone());
                (number, limiter)
            })
            .collect();
        let customers = Quota::with_period(pacing.interval.get()).map(|quota| {
            let burst = NonZeroU32::new(pacing.burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::new(
                quota.allow_burst(burst),
                DefaultKeyedStateStore::default(),
                clock.clone(),
            )
        });
        Self {
            clock,
            default_numbers,
            numbers,
            customers,
            throttled: Mutex::new(HashMap::new()),
            default_rate,
            rates,
            pacing: pacing.clone(),
            store: None,
        }
    }

    /// The same limits, kept in `store` for every replica sharing it.
    pub fn shared(mut self, store: crate::store::Store) -> Self {
        self.store = Some(store);
        self
    }

    /// The interval and burst of a number's cluster-wide bucket: one message every `1 / rate`,
    /// no burst, so no one-second window Meta looks at sees more than the rate and a little delay
    /// on the way has room before it bunches sends past it.
    fn number_bucket(&self, phone_number_id: &str) -> (Duration, u32) {
        let rate = self
            .rates
            .get(phone_number_id)
            .copied()
            .unwrap_or(self.default_rate)
            .max(1);
        (Duration::from_secs_f64(1.0 / f64::from(rate)), 1)
    }

    /// Takes the customer's turn then the number's from the cluster-wide buckets, waiting what
    /// each says: both in one statement when the customer's turn is now (as it is until a
    /// customer passes the pacing's burst), the number's after the wait otherwise. With `ask`
    /// (the reply's queue time), the statement that takes the number's turn also reads whether
    /// the customer still takes the reply.
    async fn acquire_shared(
        &self,
        store: &crate::store::Store,
        phone_number_id: &str,
        customer: &str,
        ask: Option<i64>,
        turns: Turns,
    ) -> Result<Paced, crate::store::StoreError> {
        use crate::store::send_slots::Bucket;
        if let Some(until) = self.throttled_until(phone_number_id) {
            tokio::time::sleep_until(until).await;
        }
        let customer_key = format!("c:{phone_number_id}:{customer}");
        let paces_customer =
            turns == Turns::CustomerAndNumber && !self.pacing.interval.get().is_zero();
        let customer_bucket = paces_customer.then(|| Bucket {
            key: &customer_key,
            interval: self.pacing.interval.get(),
            burst: self.pacing.burst,
        });
        let number_key = format!("n:{phone_number_id}");
        let (interval, burst) = self.number_bucket(phone_number_id);
        let number = Bucket {
            key: &number_key,
            interval,
            burst,
        };
        let ask = ask.map(|at| (phone_number_id, customer, at));
        let mut slots = store.take_send_slots(customer_bucket, number, ask).await?;
        let number_at = match slots.number_at {
            Some(at) => at,
            None => {
                tokio::time::sleep_until(slots.customer_at).await;
                if let Some(until) = self.throttled_until(phone_number_id) {
                    tokio::time::sleep_until(until).await;
                }
                slots = store.take_send_slots(None, number, ask).await?;
                slots.number_at.unwrap_or(slots.answered)
            }
        };
        let mut paced = Paced::new(number_at, interval);
        paced.allowed = slots.allowed;
        if slots.allowed != Some(false) {
            tokio::time::sleep_until(number_at).await;
            paced.waited_since = number_at.saturating_duration_since(slots.answered);
        }
        Ok(paced)
    }

    /// With several replicas, tells every replica that `phone_number_id` pauses for `pause`
    /// (besides [`throttle`](Self::throttle), which pauses this one).
    pub async fn pause_cluster(&self, phone_number_id: &str, pause: Duration) {
        let Some(store) = &self.store else { return };
        let (interval, burst) = self.number_bucket(phone_number_id);
        if let Err(e) = store
            .pause_send_slots(&format!("n:{phone_number_id}"), interval, burst, pause)
            .await
        {
            tracing::warn!(error = %e, phone_number_id, "cannot share Meta's pause with the other replicas");
        }
    }

    /// Waits until one message from `phone_number_id` to `customer` may be sent, and takes it.
    ///
    /// The customer's pacing is waited for first, so a message waiting out a slow customer
    /// holds none of the number's throughput. Dropping the future after the customer's turn
    /// was taken spends that turn: pacing errs on the slow side.
    pub async fn acquire(&self, phone_number_id: &str, customer: &str) {
        self.acquire_asking(phone_number_id, customer, None).await;
    }

    /// As [`acquire`](Self::acquire); with several replicas and `ask` (the queue time of the
    /// reply about to leave), the statement that takes the turn also reads whether the customer
    /// still takes the reply (see [`Paced`]).
    pub async fn acquire_asking(
        &self,
        phone_number_id: &str,
        customer: &str,
        ask: Option<i64>,
    ) -> Paced {
        self.take(phone_number_id, customer, ask, Turns::CustomerAndNumber)
            .await
    }

    /// Takes `turns` for one message from `phone_number_id` to `customer`, asking as
    /// [`acquire_asking`](Self::acquire_asking) does: from the cluster's buckets when there are
    /// several replicas, from this process's otherwise (or when the database's cannot be
    /// reached).
    pub async fn take(
        &self,
        phone_number_id: &str,
        customer: &str,
        ask: Option<i64>,
        turns: Turns,
    ) -> Paced {
        if let Some(store) = &self.store {
            match self
                .acquire_shared(store, phone_number_id, customer, ask, turns)
                .await
            {
                Ok(paced) => return paced,
                Err(e) => {
                    tracing::warn!(error = %e, phone_number_id, "cluster-wide send limits unavailable; pacing this replica alone");
                }
            }
        }
        if let (Some(customers), Turns::CustomerAndNumber) = (&self.customers, turns) {
            let key = (phone_number_id.to_owned(), customer.to_owned());
            while let Err(not_until) = customers.check_key(&key) {
                tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
            }
        }
        loop {
            if let Some(until) = self.throttled_until(phone_number_id) {
                tokio::time::sleep_until(until).await;
                continue;
            }
            let checked = match self.numbers.get(phone_number_id) {
                Some(limiter) => limiter.check(),
                None => self.default_numbers.check_key(&phone_number_id.to_owned()),
            };
            match checked {
                Ok(()) => {
                    let (interval, _) = self.number_bucket(phone_number_id);
                    return Paced::new(Instant::now(), interval);
                }
                Err(not_until) => {
                    tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
                }
            }
        }
    }

    /// Pauses `phone_number_id` until `until`, after Meta answered 130429, 80007 or HTTP 429;
    /// other numbers keep sending. A pause already running longer is kept.
    pub fn throttle(&self, phone_number_id: &str, until: Instant) {
        let mut throttled = self.throttled.lock().unwrap_or_else(|e| e.into_inner());
        let entry = throttled.entry(phone_number_id.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Takes over the pauses `old` still runs, so a reload does not undo Meta's "slow down".
    pub fn carry_pauses_from(&self, old: &SendLimiter) {
        let now = Instant::now();
        let paused: Vec<(String, Instant)> = {
            let old = old.throttled.lock().unwrap_or_else(|e| e.into_inner());
            old.iter()
                .filter(|(_, until)| **until > now)
                .map(|(n, u)| (n.clone(), *u))
                .collect()
        };
        for (number, until) in paused {
            self.throttle(&number, until);
        }
    }

    /// When `phone_number_id`'s pause ends, if it is paused now.
    pub fn throttled_until(&self, phone_number_id: &str) -> Option<Instant> {
        let throttled = self.throttled.lock().unwrap_or_else(|e| e.into_inner());
        throttled
            .get(phone_number_id)
            .copied()
            .filter(|&until| until > Instant::now())
    }

    /// Forgets state that no longer limits anything (customers and numbers idle long enough to
    /// be back at a full bucket, pauses that ended). Call it periodically, e.g. every minute.
    pub fn housekeeping(&self) {
        self.default_numbers.retain_recent();
        self.default_numbers.shrink_to_fit();
        if let Some(customers) = &self.customers {
            customers.retain_recent();
            customers.shrink_to_fit();
        }
        let now = Instant::now();
        let mut throttled = self.throttled.lock().unwrap_or_else(|e| e.into_inner());
        throttled.retain(|_, until| *until > now);
        throttled.shrink_to_fit();
    }

    /// How many (number, customer) pairs the pacing limiter remembers (for a gauge and tests).
    pub fn tracked_customers(&self) -> usize {
        self.customers.as_ref().map_or(0, |c| c.len())
    }
}

/// How often the pacing state is swept (a customer's entry is forgotten once its bucket is full
/// again, at most `burst × interval` after their last message).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Sweeps whichever limiter is in force (a reload replaces it) every `every` until `stop`, and
/// reports how many customers it still remembers. Owned by the process (started with the
/// gateway): without it, every customer ever answered would stay in memory.
pub async fn sweep(
    limiter: &arc_swap::ArcSwap<SendLimiter>,
    every: Duration,
    report: impl Fn(usize),
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let limiter = limiter.load();
        limiter.housekeeping();
        report(limiter.tracked_customers());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::duration::Duration as ConfigDuration;
    use std::sync::Arc;

    fn pacing(interval_s: u64, burst: u32) -> CustomerPacing {
        CustomerPacing {
            interval: ConfigDuration::from_secs(interval_s),
            burst,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_is_late_once_one_interval_of_the_number_has_passed() {
        let limiter = SendLimiter::new(20, HashMap::new(), &pacing(0, 1));
        let paced = limiter.acquire_asking("slow", "customer", None).await;
        tokio::time::advance(Duration::from_millis(50)).await;
        assert!(
            !paced.is_late(),
            "50 ms is one interval at 20/s: still usable"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            paced.is_late(),
            "past one interval, the send would bunch with the next turn"
        );
        // A fast number's turn still keeps the 5 ms timers overshoot by.
        let fast = SendLimiter::new(1000, HashMap::new(), &pacing(0, 1));
        let paced = fast.acquire_asking("fast", "customer", None).await;
        tokio::time::advance(Duration::from_millis(5)).await;
        assert!(!paced.is_late());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(paced.is_late());
    }

    #[tokio::test(start_paused = true)]
    async fn one_busy_number_does_not_slow_another() {
        let limiter = Arc::new(SendLimiter::new(80, HashMap::new(), &pacing(6, 45)));
        let start = Instant::now();
        let busy = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                for i in 0..500 {
                    limiter.acquire("busy", &format!("customer-{i}")).await;
                }
                start.elapsed()
            }
        });
        let quiet = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                // Evenly spaced at its own rate (two at once), whatever the busy one does.
                for i in 0..8 {
                    limiter.acquire("quiet", &format!("customer-{i}")).await;
                }
                start.elapsed()
            }
        });
        let (busy, quiet) = (busy.await.unwrap(), quiet.await.unwrap());
        // Two at once, then one every 1/80 s.
        let floor = Duration::from_secs_f64(498.0 / 80.0);
        assert!(busy >= floor, "500 sends at 80/s took only {busy:?}");
        assert!(busy < floor + Duration::from_millis(100), "took {busy:?}");
        assert_eq!(quiet, Duration::from_secs_f64(6.0 / 80.0));
    }

    #[tokio::test(start_paused = true)]
    async fn per_number_rates_override_the_default() {
        let rates = HashMap::from([("big".to_owned(), 1000), ("small".to_owned(), 0)]);
        let limiter = SendLimiter::new(80, rates, &pacing(0, 1));
        let start = Instant::now();
        for i in 0..1010 {
            limiter.acquire("big", &i.to_string()).await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1),
            "1000 per second, the first ten at once"
        );
        let start = Instant::now();
        // A zero rate is taken as 1 per second.
        limiter.acquire("small", "a").await;
        limiter.acquire("small", "a").await;
        assert!(start.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_number_waits_while_others_send() {
        let limiter = Arc::new(SendLimiter::new(80, HashMap::new(), &pacing(6, 45)));
        let start = Instant::now();
        limiter.throttle("slow", start + Duration::from_secs(30));
        // A shorter pause does not cut the running one short.
        limiter.throttle("slow", start + Duration::from_secs(5));
        assert_eq!(
            limiter.throttled_until("slow"),
            Some(start + Duration::from_secs(30))
        );
        let slow = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                limiter.acquire("slow", "c").await;
                start.elapsed()
            }
        });
        limiter.acquire("fast", "c").await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(slow.await.unwrap(), Duration::from_secs(30));
        assert_eq!(limiter.throttled_until("slow"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_lets_a_burst_through_then_spaces_messages() {
        let limiter = SendLimiter::new(80, HashMap::new(), &pacing(6, 3));
        let start = Instant::now();
        let mut sent_at = Vec::new();
        for _ in 0..5 {
            limiter.acquire("n", "alice").await;
            sent_at.push(start.elapsed().as_secs());
        }
        assert_eq!(sent_at, [0, 0, 0, 6, 12]);
        // Another customer of the same number is not held back by alice's pacing.
        limiter.acquire("n", "bob").await;
        assert_eq!(start.elapsed(), Duration::from_secs(12));
    }

    #[tokio::test(start_paused = true)]
    async fn housekeeping_forgets_idle_customers_and_ended_pauses() {
        let limiter = SendLimiter::new(80, HashMap::new(), &pacing(6, 2));
        for i in 0..50 {
            limiter.acquire("n", &format!("c{i}")).await;
        }
        limiter.throttle("n", Instant::now() + Duration::from_secs(1));
        limiter.housekeeping();
        assert_eq!(limiter.tracked_customers(), 50);
        tokio::time::advance(Duration::from_secs(60)).await;
        limiter.housekeeping();
        assert_eq!(limiter.tracked_customers(), 0);
        assert!(limiter.throttled.lock().unwrap().is_empty());
        assert!(limiter.default_numbers.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_keeps_pacing_state_bounded() {
        let limiter = Arc::new(arc_swap::ArcSwap::from_pointee(SendLimiter::new(
            1000,
            HashMap::new(),
            &pacing(1, 2),
        )));
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = {
            let (limiter, seen, stop) = (limiter.clone(), seen.clone(), stop.clone());
            tokio::spawn(async move {
                let report = |n| seen.store(n, std::sync::atomic::Ordering::SeqCst);
                sweep(&limiter, Duration::from_secs(10), report, stop).await
            })
        };
        // Waves of new customers, each answered once: without the sweep the limiter would
        // remember all of them; with it, only those of the last interval or two.
        for wave in 0..20 {
            for c in 0..500 {
                limiter
                    .load()
                    .acquire("106540352242922", &format!("{wave}-{c}"))
                    .await;
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
            tokio::task::yield_now().await;
            let remembered = seen.load(std::sync::atomic::Ordering::SeqCst);
            assert!(
                remembered <= 1000,
                "wave {wave}: {remembered} customers remembered"
            );
        }
        // A reload's new limiter is the one swept from then on.
        limiter.store(Arc::new(SendLimiter::new(
            1000,
            HashMap::new(),
            &pacing(1, 2),
        )));
        limiter.load().acquire("106540352242922", "late").await;
        tokio::time::sleep(Duration::from_secs(25)).await;
        tokio::task::yield_now().await;
        assert_eq!(limiter.load().tracked_customers(), 0);
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 0);
        stop.cancel();
        task.await.unwrap();
    }
}
