//! How this process's clock relates to PostgreSQL's, for the cluster-wide send turns: a turn
//! is a time on the database's clock, and a replica must start its send at that time on its
//! own clock, neither early (it would land in the turn before) nor late.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// How far this process's wall clock runs ahead of the database's, at most.
///
/// Each answer carries the database's time when it ran; it is read after that, so (time read −
/// database's time) is the clocks' offset plus the answer's way back. The least sample is the
/// offset plus the quickest way back seen: a bound that is never under the offset, so a time
/// turned local with it is never early, and is late only by that quickest way (a fraction of a
/// millisecond on a LAN). Samples are kept for this minute and the last, so drift is followed.
#[derive(Debug, Default)]
pub(super) struct DbClock {
    /// (minute of the wall clock, least sample in it in µs), the last minute then this one.
    least: Mutex<[Option<(i64, i64)>; 2]>,
}

impl DbClock {
    /// The instant of this process at which the database's clock read `db_now_us`, from an
    /// answer that said so and was read at `read`; a time `d` later on the database's clock is
    /// this instant plus `d`.
    pub(super) fn local(&self, read: Instant, db_now_us: i64) -> Instant {
        let wall_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let ahead = self.observe(wall_us, wall_us - db_now_us);
        // The database's `db_now_us` is `db_now_us + ahead` here; `read` was `wall_us` here.
        let from_read = db_now_us + ahead - wall_us;
        if from_read >= 0 {
            read + Duration::from_micros(from_read as u64)
        } else {
            read.checked_sub(Duration::from_micros(from_read.unsigned_abs()))
                .unwrap_or(read)
        }
    }

    /// Records `sample` (µs) read at `wall_us`; returns the least of this minute and the last.
    fn observe(&self, wall_us: i64, sample: i64) -> i64 {
        let minute = wall_us.div_euclid(60_000_000);
        let mut least = self.least.lock().unwrap_or_else(|e| e.into_inner());
        match least[1] {
            Some((m, ref mut l)) if m == minute => *l = (*l).min(sample),
            _ => *least = [least[1], Some((minute, sample))],
        }
        let now = least[1].map_or(sample, |(_, l)| l);
        match least[0] {
            Some((m, l)) if m + 1 == minute => now.min(l),
            _ => now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_the_quickest_answer_of_this_minute_and_the_last() {
        let clock = DbClock::default();
        let minute = 60_000_000;
        assert_eq!(clock.observe(10 * minute, 900), 900);
        assert_eq!(clock.observe(10 * minute + 5, 300), 300);
        assert_eq!(clock.observe(10 * minute + 9, 700), 300);
        // The next minute still remembers the last one's quickest answer.
        assert_eq!(clock.observe(11 * minute, 800), 300);
        // Two minutes on, it is forgotten: a drifting clock is followed.
        assert_eq!(clock.observe(12 * minute, 800), 800);
        assert_eq!(clock.observe(14 * minute, 2_000), 2_000);
    }

    #[test]
    fn a_database_time_turns_local_never_early() {
        let clock = DbClock::default();
        let read = Instant::now();
        let wall_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        // The database's clock runs 5 s behind ours: its "now" is the moment its answer was read.
        let db_now = wall_us - 5_000_000;
        assert_eq!(clock.local(read, db_now), read);
    }
}
