//! The disk probe: while the load runs, a thread of its own writes 4 KiB to a file beside the
//! gateway's database and fsyncs it, every 10 ms, and records how long each fsync took. Every
//! durable acknowledgement waits for an fsync, so the disk's own fsync tail is the floor under
//! the gateway's ack tail; the bench prints both so a slow disk is not mistaken for a slow gateway.

use super::report::histogram;
use hdrhistogram::Histogram;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the probe writes.
const EVERY: Duration = Duration::from_millis(10);
/// The probe file cycles through this many 4 KiB blocks, as a WAL is overwritten.
const BLOCKS: u64 = 256;

/// A running probe; [`Probe::finish`] stops it and returns the fsync latencies (µs).
pub struct Probe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<std::io::Result<Histogram<u64>>>,
    path: PathBuf,
}

impl Probe {
    /// Starts probing in `dir` (the directory of the gateway's database).
    pub fn start(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(format!(".wa-gateway-bench-fsync-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        file.set_len(BLOCKS * 4096)?;
        file.sync_all()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-disk-probe".into())
            .spawn(move || {
                let mut h = histogram();
                let block = [0x5a_u8; 4096];
                // At least one fsync is measured, however soon the probe is stopped.
                for i in 0_u64.. {
                    let next = Instant::now() + EVERY;
                    file.seek(SeekFrom::Start((i % BLOCKS) * 4096))?;
                    file.write_all(&block)?;
                    let started = Instant::now();
                    file.sync_all()?;
                    record(&mut h, started.elapsed());
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                Ok(h)
            })?;
        Ok(Self { stop, thread, path })
    }

    /// Stops the probe, removes its file and returns the fsync latencies in microseconds.
    pub fn finish(self) -> std::io::Result<Histogram<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        let result = self
            .thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the disk probe panicked")));
        let _ = std::fs::remove_file(&self.path);
        result
    }
}

/// Records one fsync's latency. The histogram's range goes up to an hour: an auto-sized one
/// starts at 2 ms, and a saturating record clamps to the range before it would grow it, so every
/// slow fsync read as 2 ms.
fn record(h: &mut Histogram<u64>, took: Duration) {
    h.saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_records_fsyncs_and_removes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let probe = Probe::start(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let h = probe.finish().unwrap();
        assert!(!h.is_empty(), "no fsync recorded");
        assert!(h.max() > 0, "an fsync takes time");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_slow_fsync_is_recorded_as_slow() {
        let mut h = histogram();
        record(&mut h, Duration::from_micros(300));
        record(&mut h, Duration::from_millis(700));
        assert!(
            (h.max() as f64 - 700_000.0).abs() < 700.0,
            "max {} µs",
            h.max()
        );
        assert!(
            h.value_at_quantile(0.25) < 1_000,
            "{}",
            h.value_at_quantile(0.25)
        );
    }

    #[test]
    fn a_missing_directory_is_an_error_at_start() {
        assert!(Probe::start(Path::new("/nonexistent/wa-gateway-bench")).is_err());
    }
}
