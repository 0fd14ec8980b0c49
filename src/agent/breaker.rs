//! A circuit breaker per agent: consecutive failed calls open it, an open breaker fails fast for
//! a cooldown, then lets one probe through. It knows calls only as permits and their outcomes.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// What the breaker lets through (for metrics: 0 closed, 1 open, 2 half-open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; failures are being counted.
    Closed,
    /// Calls fail fast until the cooldown ends.
    Open,
    /// The cooldown ended: the next call (one at a time) probes the agent.
    HalfOpen,
}

impl BreakerState {
    /// A stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// Counts consecutive failures and trips after `threshold` of them (0: never trips). Each
/// method has an `_at(now)` twin so that tests choose the clock.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

/// Leave to make one call. Report its outcome with [`Permit::success`] or [`Permit::failure`];
/// a probe dropped without an outcome (the call was cancelled) lets the next call probe.
#[must_use = "report the call's outcome on the permit"]
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    settled: bool,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
        }
    }

    // The lock is only ever held for a few instructions, never across an await; a poisoned
    // lock still holds a consistent state (every write is a single assignment).
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit to call, or how long the breaker stays open (zero while a probe is in flight).
    pub fn try_acquire(&self) -> Result<Permit<'_>, Duration> {
        self.try_acquire_at(Instant::now())
    }

    /// [`CircuitBreaker::try_acquire`] at `now`.
    pub fn try_acquire_at(&self, now: Instant) -> Result<Permit<'_>, Duration> {
        let mut inner = self.lock();
        let probe = match *inner {
            Inner::Closed { .. } => false,
            Inner::Open { until } => {
                if now < until {
                    return Err(until - now);
                }
                *inner = Inner::HalfOpen { probing: true };
                true
            }
            Inner::HalfOpen { probing: true } => return Err(Duration::ZERO),
            Inner::HalfOpen { probing: false } => {
                *inner = Inner::HalfOpen { probing: true };
                true
            }
        };
        Ok(Permit {
            breaker: self,
            probe,
            settled: false,
        })
    }

    /// The state now; an open breaker whose cooldown has passed reads as half-open.
    pub fn state(&self) -> BreakerState {
        self.state_at(Instant::now())
    }

    /// [`CircuitBreaker::state`] at `now`.
    pub fn state_at(&self, now: Instant) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if now < until => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn settle(&self, probe: bool, ok: bool, now: Instant) {
        let mut inner = self.lock();
        let open = Inner::Open {
            until: now + self.cooldown,
        };
        match (&mut *inner, probe, ok) {
            (Inner::HalfOpen { .. }, true, true) => *inner = Inner::Closed { failures: 0 },
            (Inner::HalfOpen { .. }, true, false) => *inner = open,
            (Inner::Closed { failures }, false, true) => *failures = 0,
            (Inner::Closed { failures }, false, false) => {
                *failures += 1;
                if self.threshold > 0 && *failures >= self.threshold {
                    *inner = open;
                }
            }
            // A call that started before the breaker tripped says nothing about the agent now.
            _ => {}
        }
    }
}

impl Permit<'_> {
    /// The call succeeded.
    pub fn success(self) {
        self.finish_at(true, Instant::now());
    }

    /// The call failed (after its retries).
    pub fn failure(self) {
        self.finish_at(false, Instant::now());
    }

    /// Reports the outcome as of `now`.
    pub fn finish_at(mut self, ok: bool, now: Instant) {
        self.settled = true;
        self.breaker.settle(self.probe, ok, now);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            let mut inner = self.breaker.lock();
            if let Inner::HalfOpen { probing } = &mut *inner {
                *probing = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(30);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn fail_n(b: &CircuitBreaker, n: u32, now: Instant) {
        for _ in 0..n {
            b.try_acquire_at(now).expect("closed").finish_at(false, now);
        }
    }

    #[test]
    fn opens_after_n_consecutive_failures() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(3, COOLDOWN);
        fail_n(&b, 2, t0);
        b.try_acquire_at(t0).unwrap().finish_at(true, t0);
        fail_n(&b, 2, t0);
        assert_eq!(
            b.state_at(t0),
            BreakerState::Closed,
            "a success resets the count"
        );
        fail_n(&b, 1, t0);
        assert_eq!(b.state_at(t0), BreakerState::Open);
    }

    #[test]
    fn fails_fast_while_open_then_lets_one_probe_close_it() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(1, COOLDOWN);
        fail_n(&b, 1, t0);
        assert_eq!(b.try_acquire_at(t0).unwrap_err(), COOLDOWN);
        assert_eq!(b.try_acquire_at(t0 + secs(29)).unwrap_err(), secs(1));
        let t1 = t0 + COOLDOWN;
        assert_eq!(b.state_at(t1), BreakerState::HalfOpen);
        let probe = b.try_acquire_at(t1).expect("one probe");
        assert_eq!(b.state_at(t1), BreakerState::HalfOpen);
        assert_eq!(
            b.try_acquire_at(t1).unwrap_err(),
            Duration::ZERO,
            "only one probe"
        );
        probe.finish_at(true, t1);
        assert_eq!(b.state_at(t1), BreakerState::Closed);
        assert!(b.try_acquire_at(t1).is_ok());
    }

    #[test]
    fn failed_probe_reopens_for_a_full_cooldown() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(2, COOLDOWN);
        fail_n(&b, 2, t0);
        let t1 = t0 + secs(45);
        b.try_acquire_at(t1).unwrap().finish_at(false, t1);
        assert_eq!(b.state_at(t1), BreakerState::Open);
        assert_eq!(b.try_acquire_at(t1).unwrap_err(), COOLDOWN);
        assert_eq!(b.state_at(t1 + COOLDOWN), BreakerState::HalfOpen);
    }

    #[test]
    fn cancelled_probe_lets_the_next_call_probe() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(1, COOLDOWN);
        fail_n(&b, 1, t0);
        let t1 = t0 + COOLDOWN;
        drop(b.try_acquire_at(t1).unwrap());
        b.try_acquire_at(t1)
            .expect("a new probe")
            .finish_at(true, t1);
        assert_eq!(b.state_at(t1), BreakerState::Closed);
    }

    #[test]
    fn stale_outcomes_do_not_move_an_open_breaker() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(1, COOLDOWN);
        let slow = b.try_acquire_at(t0).unwrap();
        fail_n(&b, 1, t0);
        slow.finish_at(true, t0);
        assert_eq!(b.state_at(t0), BreakerState::Open);
    }

    #[test]
    fn zero_threshold_never_opens() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(0, COOLDOWN);
        fail_n(&b, 100, t0);
        assert_eq!(b.state_at(t0), BreakerState::Closed);
    }
}
