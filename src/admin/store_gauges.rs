//! The gauges storage answers (outbox backlog, last activity per number), read on the admin
//! listener's timer and set on the metrics. Reads only; the metrics module knows no storage.

use crate::metrics::Metrics;
use crate::store::{Store, StoreError, now_ms};
use std::time::Duration;

/// Sets the gauges that storage answers for the declared `numbers`. On a storage error or after
/// `timeout` the previous values stay and a warning is logged: /readyz reports storage trouble.
pub(super) async fn refresh(
    metrics: &Metrics,
    store: &Store,
    numbers: &[String],
    timeout: Duration,
) {
    let read = async {
        let queued = store.queued_replies().await?;
        let oldest = store.oldest_queued_reply_at().await?;
        let last = store.last_received_by_number(numbers).await?;
        Ok::<_, StoreError>((queued, oldest, last))
    };
    let (queued, oldest, last) = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: storage gauges not refreshed");
            return;
        }
        Err(_) => {
            tracing::warn!(?timeout, "metrics: storage gauges not refreshed in time");
            return;
        }
    };
    // Only numbers with replies queued have a series: with thousands of numbers, nearly all
    // idle, a zero for each would be most of the scrape on every replica. Reset so that a
    // drained or removed number's series ends.
    metrics.outbox_depth.reset();
    for n in numbers {
        if let Some(&depth) = queued.get(n).filter(|d| **d > 0) {
            metrics.outbox_depth.with_label_values(&[n]).set(depth);
        }
    }
    let now_ms = now_ms();
    metrics
        .outbox_oldest_age
        .set(oldest.map_or(0.0, |at| (now_ms - at).max(0) as f64 / 1000.0));
    metrics.number_last_activity.reset();
    for (n, at) in last {
        metrics
            .number_last_activity
            .with_label_values(&[&n])
            .set(at / 1000);
    }
}
