//! The 24-hour customer service window: a pure function of the last inbound message's time and
//! the clock. It stores nothing and reads no clock itself; the caller passes `now`.

use std::time::Duration;

/// The instant (Unix seconds) the window closes: `window` after the customer's last message.
///
/// A `last_inbound_unix_s` in the future (clock skew between Meta and us) counts as `now`, so a
/// skewed timestamp can never stretch the window past `now + window`. Sub-second parts of
/// `window` are dropped: Meta's window is whole hours and erring shorter is the safe side.
pub fn window_closes_at(last_inbound_unix_s: i64, now_unix_s: i64, window: Duration) -> i64 {
    let opened = last_inbound_unix_s.min(now_unix_s);
    let secs = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    opened.saturating_add(secs)
}

/// Whether a reply may still be sent at `now_unix_s`; closed from the closing second on.
///
/// At exactly `window` after the customer's message the window is closed: Meta counts 24 hours
/// and a reply racing the boundary would fail with 131047, so we give up the last second.
pub fn window_open(last_inbound_unix_s: i64, now_unix_s: i64, window: Duration) -> bool {
    now_unix_s < window_closes_at(last_inbound_unix_s, now_unix_s, window)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);
    const T0: i64 = 1_750_000_000;

    #[test]
    fn window_edges() {
        let d = DAY.as_secs() as i64;
        // (last inbound, now, window, open?)
        let cases: &[(i64, i64, Duration, bool)] = &[
            (T0, T0, DAY, true),
            (T0, T0 + 1, DAY, true),
            (T0, T0 + d - 1, DAY, true),
            (T0, T0 + d, DAY, false),
            (T0, T0 + d + 1, DAY, false),
            (T0, T0 + 10 * d, DAY, false),
            // Clock skew: a message "from the future" opens the window as of now.
            (T0 + 3600, T0, DAY, true),
            (T0 + 10 * d, T0, DAY, true),
            (T0 + 10 * d, T0 + d - 1, DAY, true),
            // A shorter configured window.
            (T0, T0 + 3599, Duration::from_secs(3600), true),
            (T0, T0 + 3600, Duration::from_secs(3600), false),
            // Sub-second windows round down; a zero window is never open.
            (T0, T0, Duration::from_millis(999), false),
            (T0, T0, Duration::ZERO, false),
        ];
        for &(last, now, window, open) in cases {
            assert_eq!(
                window_open(last, now, window),
                open,
                "last={last} now={now} window={window:?}"
            );
        }
    }

    #[test]
    fn closes_at_edges() {
        let d = DAY.as_secs() as i64;
        assert_eq!(window_closes_at(T0, T0 + 5, DAY), T0 + d);
        // Skewed timestamps close `window` after now, not after the future timestamp.
        assert_eq!(window_closes_at(T0 + 3600, T0, DAY), T0 + d);
        // Huge values saturate instead of overflowing.
        assert_eq!(window_closes_at(i64::MAX, i64::MAX, DAY), i64::MAX);
        assert_eq!(window_closes_at(T0, T0, Duration::MAX), i64::MAX);
        assert!(window_open(T0, i64::MAX - 1, Duration::MAX));
    }

    #[test]
    fn open_iff_now_before_close() {
        for now in [T0 - 5, T0, T0 + 1, T0 + 86_399, T0 + 86_400, T0 + 86_401] {
            assert_eq!(
                window_open(T0, now, DAY),
                now < window_closes_at(T0, now, DAY)
            );
        }
    }
}
