//! The emulator's clock and the length of Meta's customer service window: the few facts the
//! state, the envelope builder and the handlers all read. Nothing here imports a sibling.

use std::time::{SystemTime, UNIX_EPOCH};

/// The customer service window: after this long without a customer message only templates go.
pub(crate) const WINDOW_SECS: i64 = 24 * 60 * 60;

/// Unix milliseconds now (0 if the clock is before 1970).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
