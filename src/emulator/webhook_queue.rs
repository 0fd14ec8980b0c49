//! What the webhook queue carries and counts: the queued envelope and the delivery counters the
//! state holds. The delivery loop itself lives in `webhooks.rs`; nothing here sends.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// An envelope waiting for delivery; `key` (number/customer) orders first attempts, "" means
/// no order.
pub(crate) struct Delivery {
    pub key: String,
    pub body: Bytes,
}

/// Webhook delivery counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookStats {
    /// POSTs made.
    pub attempts: u64,
    /// Envelopes answered 2xx.
    pub delivered: u64,
    /// POSTs answered non-2xx or failed on the network.
    pub failed_attempts: u64,
    /// Envelopes queued and not yet delivered.
    pub pending: u64,
}

#[derive(Default)]
pub(crate) struct WebhookCounters {
    pub attempts: AtomicU64,
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub pending: AtomicU64,
}

impl WebhookCounters {
    pub fn snapshot(&self) -> WebhookStats {
        WebhookStats {
            attempts: self.attempts.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
        }
    }
}
