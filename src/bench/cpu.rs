//! CPU time from /proc (Linux): of this process, of its emulator threads (named `bench-emu…`),
//! and of another process (the gateway) when its pid is given. Elsewhere it reports nothing.

use std::path::Path;

/// Clock ticks per second of /proc's utime and stime (USER_HZ, 100 on every Linux we run on).
const TICKS_PER_SEC: f64 = 100.0;

/// The thread-name prefix of the emulator runtime's threads.
pub const EMULATOR_THREAD: &str = "bench-emu";

/// CPU seconds used so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// This process.
    pub bench: f64,
    /// This process's emulator threads.
    pub emulator: f64,
    /// The gateway process, when known.
    pub gateway: Option<f64>,
}

/// `(comm, utime + stime in seconds)` from a `stat` file.
fn read_stat(path: &Path) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    // comm sits in parentheses and may hold spaces; the fields after it are plain.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // After comm: state is field 3, so utime (14) and stime (15) sit at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_SEC))
}

/// Samples CPU time now.
pub fn sample(gateway_pid: Option<u32>) -> Sample {
    let bench = read_stat(Path::new("/proc/self/stat")).map_or(0.0, |(_, s)| s);
    let emulator = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| read_stat(&task.path().join("stat")))
        .filter(|(comm, _)| comm.starts_with(EMULATOR_THREAD))
        .map(|(_, s)| s)
        .sum();
    let gateway = gateway_pid
        .and_then(|pid| read_stat(&Path::new("/proc").join(pid.to_string()).join("stat")))
        .map(|(_, s)| s);
    Sample {
        bench,
        emulator,
        gateway,
    }
}

/// CPU used between two samples over `wall` seconds, as a share of one core (1.0 = one core).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Usage {
    /// The whole bench process.
    pub bench_cores: f64,
    /// Of which the load generator (everything but the emulator).
    pub load_cores: f64,
    /// Of which the emulator (Graph API and status webhooks).
    pub emulator_cores: f64,
    /// The gateway, when its pid was given.
    pub gateway_cores: Option<f64>,
    /// The window measured, in seconds.
    pub wall_secs: f64,
}

impl Usage {
    pub fn between(a: Sample, b: Sample, wall: f64) -> Self {
        let per = |x: f64| if wall > 0.0 { x / wall } else { 0.0 };
        let bench = per(b.bench - a.bench);
        let emulator = per(b.emulator - a.emulator);
        Self {
            bench_cores: bench,
            load_cores: (bench - emulator).max(0.0),
            emulator_cores: emulator,
            gateway_cores: a.gateway.zip(b.gateway).map(|(a, b)| per(b - a)),
            wall_secs: wall,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_spaces_in_comm() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stat");
        std::fs::write(
            &path,
            "4242 (bench-emu (1)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0 100\n",
        )
        .unwrap();
        let (comm, secs) = read_stat(&path).unwrap();
        assert_eq!(comm, "bench-emu (1)");
        assert!((secs - 3.0).abs() < 1e-9);
    }
}
