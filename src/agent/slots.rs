//! The process-wide limit on agent calls in flight (`policies.agent.max_concurrency`), over every
//! agent and conversation: a turn takes a slot before it calls its agent and gives it back with
//! the answer. A large backlog then reaches the agents at this pace instead of all at once.
//! Resized in place on reload; it only waits, it never calls an agent.

use prometheus::IntGauge;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Slots for agent calls; shared by every turn of the process.
pub struct AgentSlots {
    sem: Arc<Semaphore>,
    /// The limit in force (permits handed out plus available, once a shrink has settled).
    limit: Mutex<usize>,
    in_flight: IntGauge,
}

/// One agent call's slot; dropping it frees the slot.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    in_flight: IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

impl AgentSlots {
    /// `limit` slots (at least one); `in_flight` is set to the calls holding one.
    pub fn new(limit: u32, in_flight: IntGauge) -> Self {
        let limit = (limit as usize).max(1);
        Self {
            sem: Arc::new(Semaphore::new(limit)),
            limit: Mutex::new(limit),
            in_flight,
        }
    }

    /// Waits for a free slot; `None` if `stop` is cancelled first.
    pub async fn acquire(&self, stop: &CancellationToken) -> Option<Slot> {
        let permit = tokio::select! {
            p = self.sem.clone().acquire_owned() => p.ok()?,
            _ = stop.cancelled() => return None,
        };
        self.in_flight.inc();
        Some(Slot {
            _permit: permit,
            in_flight: self.in_flight.clone(),
        })
    }

    /// Changes the limit. Growing frees slots at once; shrinking takes slots away as calls give
    /// them back (calls in flight finish), so the new limit holds once they have.
    pub fn resize(&self, limit: u32) {
        let limit = (limit as usize).max(1);
        let mut current = self.limit.lock().unwrap_or_else(|e| e.into_inner());
        if limit > *current {
            self.sem.add_permits(limit - *current);
        } else if limit < *current {
            let excess = *current - limit;
            let forgotten = self.sem.forget_permits(excess);
            if let Some(rest) = u32::try_from(excess - forgotten).ok().filter(|n| *n > 0) {
                let sem = self.sem.clone();
                tokio::spawn(async move {
                    if let Ok(permits) = sem.acquire_many_owned(rest).await {
                        permits.forget();
                    }
                });
            }
        }
        *current = limit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn never_more_calls_than_slots_and_resizes_hold() {
        let gauge = IntGauge::new("t_in_flight", "t").unwrap();
        let slots = Arc::new(AgentSlots::new(3, gauge.clone()));
        let stop = CancellationToken::new();
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let call = |slots: Arc<AgentSlots>, stop: CancellationToken| {
            let (now, peak) = (now.clone(), peak.clone());
            tokio::spawn(async move {
                let _slot = slots.acquire(&stop).await.unwrap();
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                now.fetch_sub(1, Ordering::SeqCst);
            })
        };
        let calls: Vec<_> = (0..30).map(|_| call(slots.clone(), stop.clone())).collect();
        for c in calls {
            c.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert_eq!(gauge.get(), 0);

        // Shrink while every slot is taken: the limit holds once those calls end.
        let held: Vec<Slot> = futures::future::join_all((0..3).map(|_| slots.acquire(&stop)))
            .await
            .into_iter()
            .map(Option::unwrap)
            .collect();
        slots.resize(1);
        // The shrink waits in the semaphore's queue, ahead of the calls below.
        tokio::task::yield_now().await;
        drop(held);
        peak.store(0, Ordering::SeqCst);
        let calls: Vec<_> = (0..10).map(|_| call(slots.clone(), stop.clone())).collect();
        for c in calls {
            c.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 1);
        slots.resize(4);
        assert_eq!(slots.sem.available_permits(), 4);
        // A stopping gateway does not wait for a slot.
        let full = AgentSlots::new(1, gauge);
        let _only = full.acquire(&stop).await.unwrap();
        stop.cancel();
        assert!(full.acquire(&stop).await.is_none());
    }
}
