//! Send health per number: how many sends in a row Meta refused for good (non-retryable codes),
//! fed by the sender, read by the number status. In memory only: a restart starts clean, and
//! the next refusals bring the Error back.

use std::collections::HashMap;
use std::sync::Mutex;

/// The run of refusals a number is on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Streak {
    failures: u32,
    /// Unix seconds of the first refusal of the run.
    since: u64,
    code: Option<i64>,
    message: String,
}

/// A number whose last sends were all refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failing {
    /// Why, for people: how many, Meta's code and what it said.
    pub reason: String,
    /// Unix seconds of the first refusal of the run.
    pub since: u64,
}

/// Consecutive non-retryable send refusals by phone number id.
#[derive(Debug, Default)]
pub struct SendHealth {
    streaks: Mutex<HashMap<String, Streak>>,
}

impl SendHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Streak>> {
        self.streaks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Meta accepted a send from `pnid`: its run of refusals ends.
    pub fn record_sent(&self, pnid: &str) {
        let mut streaks = self.lock();
        if streaks.get(pnid).is_some_and(|s| s.failures > 0) {
            streaks.remove(pnid);
        }
    }

    /// Meta refused a send from `pnid` with a non-retryable error at `now_unix`.
    pub fn record_refused(&self, pnid: &str, code: Option<i64>, message: &str, now_unix: u64) {
        let mut streaks = self.lock();
        let s = streaks.entry(pnid.to_owned()).or_default();
        if s.failures == 0 {
            s.since = now_unix;
        }
        s.failures = s.failures.saturating_add(1);
        s.code = code;
        s.message = message.chars().take(300).collect();
    }

    /// Whether `pnid`'s last `threshold` sends were all refused (never with threshold 0).
    pub fn failing(&self, pnid: &str, threshold: u32) -> Option<Failing> {
        if threshold == 0 {
            return None;
        }
        let streaks = self.lock();
        let s = streaks.get(pnid).filter(|s| s.failures >= threshold)?;
        let code = s.code.map_or_else(String::new, |c| format!(" ({c})"));
        Some(Failing {
            reason: format!(
                "the last {} sends were refused by Meta{code}: {}; fix the cause (see the error code), the status clears at the next accepted send",
                s.failures, s.message
            ),
            since: s.since,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_refusals_reaches_the_threshold_and_a_send_clears_it() {
        let h = SendHealth::default();
        for i in 0..4 {
            h.record_refused("1", Some(131031), "account locked", 100 + i);
            assert_eq!(h.failing("1", 5), None, "after {} refusals", i + 1);
        }
        h.record_refused("1", Some(131031), "account locked", 200);
        let f = h.failing("1", 5).expect("5 in a row");
        assert_eq!(f.since, 100, "since the first of the run");
        assert!(f.reason.contains("last 5 sends") && f.reason.contains("(131031)"));
        assert_eq!(h.failing("1", 0), None, "0 turns it off");
        assert_eq!(h.failing("2", 1), None, "other numbers unaffected");
        h.record_sent("1");
        assert_eq!(h.failing("1", 1), None);
        h.record_refused("1", None, "x", 300);
        assert_eq!(h.failing("1", 1).map(|f| f.since), Some(300), "a new run");
    }
}
