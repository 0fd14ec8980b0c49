//! CPU time from /proc (Linux): of this process, of its emulator threads (named `bench-emu…`),
//! and of other processes (the gateway's replicas) when their pids are given, with the bytes
//! those replicas wrote to storage. Elsewhere it reports nothing.

use std::path::Path;

/// Clock ticks per second of /proc's utime and stime (USER_HZ, 100 on every Linux we run on).
const TICKS_PER_SEC: f64 = 100.0;

/// The thread-name prefix of the emulator runtime's threads.
pub const EMULATOR_THREAD: &str = "bench-emu";

/// CPU seconds used so far.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// This process.
    pub bench: f64,
    /// This process's emulator threads.
    pub emulator: f64,
    /// Each gateway process given, in order; `None` where /proc could not tell.
    pub gateways: Vec<Option<f64>>,
    /// Bytes each gateway process has caused to be written to storage (`write_bytes` of
    /// /proc/PID/io, counted when a page is dirtied: the WAL, the database, the logs).
    pub written: Vec<Option<u64>>,
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

/// `write_bytes` from an `io` file.
fn read_written(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// Samples CPU time now.
pub fn sample(gateway_pids: &[u32]) -> Sample {
    let bench = read_stat(Path::new("/proc/self/stat")).map_or(0.0, |(_, s)| s);
    let emulator = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| read_stat(&task.path().join("stat")))
        .filter(|(comm, _)| comm.starts_with(EMULATOR_THREAD))
        .map(|(_, s)| s)
        .sum();
    let gateways = gateway_pids
        .iter()
        .map(|pid| {
            read_stat(&Path::new("/proc").join(pid.to_string()).join("stat")).map(|(_, s)| s)
        })
        .collect();
    let written = gateway_pids
        .iter()
        .map(|pid| read_written(&Path::new("/proc").join(pid.to_string()).join("io")))
        .collect();
    Sample {
        bench,
        emulator,
        gateways,
        written,
    }
}

/// What the gateway spent per message, from the load's start until its last reply: CPU time
/// and bytes written, all replicas together.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Cost {
    /// CPU microseconds per message; `None` without `--gateway-pid` or when /proc could not tell.
    pub cpu_us_per_message: Option<f64>,
    /// Bytes written to storage per message, likewise.
    pub written_bytes_per_message: Option<f64>,
}

impl Cost {
    /// The gateways' cost of `messages` between two samples (taken with the same pids).
    pub fn between(a: &Sample, b: &Sample, messages: u64) -> Self {
        if a.gateways.is_empty() || messages == 0 {
            return Self::default();
        }
        let per = |total: f64| total / messages as f64;
        let cpu: Option<f64> = a
            .gateways
            .iter()
            .zip(&b.gateways)
            .map(|(a, b)| a.zip(*b).map(|(a, b)| b - a))
            .sum();
        let written: Option<u64> = a
            .written
            .iter()
            .zip(&b.written)
            .map(|(a, b)| a.zip(*b).map(|(a, b)| b.saturating_sub(a)))
            .sum();
        Self {
            cpu_us_per_message: cpu.map(|s| per(s * 1e6)),
            written_bytes_per_message: written.map(|b| per(b as f64)),
        }
    }
}

/// CPU used between two samples over `wall` seconds, as a share of one core (1.0 = one core).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Usage {
    /// The whole bench process.
    pub bench_cores: f64,
    /// Of which the load generator (everything but the emulator).
    pub load_cores: f64,
    /// Of which the emulator (Graph API and status webhooks).
    pub emulator_cores: f64,
    /// The gateway, all replicas together, when their pids were given and all could be read.
    pub gateway_cores: Option<f64>,
    /// Each replica, in the order of `--gateway-pid`.
    pub replica_cores: Vec<ReplicaCpu>,
    /// The window measured, in seconds.
    pub wall_secs: f64,
}

/// One gateway replica's CPU, as a share of one core.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ReplicaCpu {
    pub pid: u32,
    /// `None` when /proc could not tell (the process was gone, or this is not Linux).
    pub cores: Option<f64>,
}

impl Usage {
    /// `pids` are the gateway pids both samples were taken with.
    pub fn between(a: &Sample, b: &Sample, pids: &[u32], wall: f64) -> Self {
        let per = |x: f64| if wall > 0.0 { x / wall } else { 0.0 };
        let bench = per(b.bench - a.bench);
        let emulator = per(b.emulator - a.emulator);
        let replica_cores: Vec<ReplicaCpu> = pids
            .iter()
            .zip(a.gateways.iter().zip(&b.gateways))
            .map(|(&pid, (a, b))| ReplicaCpu {
                pid,
                cores: a.zip(*b).map(|(a, b)| per(b - a)),
            })
            .collect();
        let gateway_cores = if replica_cores.is_empty() {
            None
        } else {
            replica_cores.iter().map(|r| r.cores).sum()
        };
        Self {
            bench_cores: bench,
            load_cores: (bench - emulator).max(0.0),
            emulator_cores: emulator,
            gateway_cores,
            replica_cores,
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

    #[test]
    fn gateway_cpu_is_the_sum_of_the_replicas_unless_one_is_unknown() {
        let sample = |bench, gateways| Sample {
            bench,
            emulator: 0.5,
            gateways,
            written: Vec::new(),
        };
        let a = sample(1.0, vec![Some(10.0), Some(20.0)]);
        let b = sample(3.0, vec![Some(14.0), Some(22.0)]);
        let u = Usage::between(&a, &b, &[11, 12], 4.0);
        assert_eq!(u.gateway_cores, Some(1.5));
        assert_eq!(
            u.replica_cores,
            [
                ReplicaCpu {
                    pid: 11,
                    cores: Some(1.0)
                },
                ReplicaCpu {
                    pid: 12,
                    cores: Some(0.5)
                }
            ]
        );
        assert!((u.bench_cores - 0.5).abs() < 1e-9);
        let gone = sample(3.0, vec![Some(14.0), None]);
        let u = Usage::between(&a, &gone, &[11, 12], 4.0);
        assert_eq!(u.gateway_cores, None);
        assert_eq!(u.replica_cores[0].cores, Some(1.0));
        assert_eq!(Usage::between(&a, &b, &[], 4.0).gateway_cores, None);
    }

    #[test]
    fn cost_per_message_sums_the_replicas() {
        let sample = |cpu: [f64; 2], written: [Option<u64>; 2]| Sample {
            gateways: cpu.iter().map(|c| Some(*c)).collect(),
            written: written.to_vec(),
            ..Sample::default()
        };
        let a = sample([1.0, 2.0], [Some(1000), Some(0)]);
        let b = sample([1.5, 2.5], [Some(5096), Some(4000)]);
        let cost = Cost::between(&a, &b, 1000);
        assert_eq!(cost.cpu_us_per_message, Some(1000.0));
        assert_eq!(cost.written_bytes_per_message, Some(8.096));
        let unknown = sample([1.5, 2.5], [Some(5096), None]);
        assert_eq!(
            Cost::between(&a, &unknown, 1000).written_bytes_per_message,
            None
        );
        assert_eq!(Cost::between(&a, &b, 0), Cost::default());
    }

    #[test]
    fn written_bytes_come_from_the_io_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("io");
        std::fs::write(
            &path,
            "rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 0\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n",
        )
        .unwrap();
        assert_eq!(read_written(&path), Some(8192));
        assert_eq!(read_written(&dir.path().join("absent")), None);
    }
}
