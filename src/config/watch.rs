//! Watching the directories that hold the config file and the TLS files. Directories, not files:
//! Kubernetes swaps ConfigMaps and Secrets through the `..data` symlink and editors rename on
//! save, so a watch on the file's inode would go deaf. Reports "something changed" once quiet.

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Why the watcher stopped working; recreate it and reload in case a change went unseen.
#[derive(Debug, thiserror::Error)]
#[error("watching {dirs} failed: {reason}")]
pub struct WatchError {
    dirs: String,
    reason: String,
}

/// A watch on a few directories; `changed` resolves after a burst of changes goes quiet.
pub struct DirWatcher {
    _watcher: notify::RecommendedWatcher,
    rx: mpsc::UnboundedReceiver<notify::Result<Event>>,
    dirs: Vec<PathBuf>,
    debounce: Duration,
}

/// The directory holding `file` (`.` for a bare file name).
pub fn dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

impl DirWatcher {
    /// Watches each of `dirs` (not recursively).
    pub fn new(mut dirs: Vec<PathBuf>, debounce: Duration) -> Result<Self, WatchError> {
        dirs.sort();
        dirs.dedup();
        let (tx, rx) = mpsc::unbounded_channel();
        let error = |e: notify::Error| WatchError {
            dirs: describe(&dirs),
            reason: e.to_string(),
        };
        let mut watcher = notify::recommended_watcher(move |event| {
            // The receiver is gone only when the watcher is being dropped.
            let _ = tx.send(event);
        })
        .map_err(error)?;
        for dir in &dirs {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(error)?;
        }
        Ok(Self {
            _watcher: watcher,
            rx,
            dirs,
            debounce,
        })
    }

    /// The directories watched, sorted.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Waits for a change, then until no change arrived for the debounce period. Cancel-safe in
    /// the sense that matters: a change seen by a dropped call is picked up by the reload that
    /// whoever dropped it runs anyway.
    pub async fn changed(&mut self) -> Result<(), WatchError> {
        loop {
            if self.next_relevant().await? {
                break;
            }
        }
        loop {
            match tokio::time::timeout(self.debounce, self.next_relevant()).await {
                Ok(r) => {
                    r?;
                }
                Err(_quiet) => return Ok(()),
            }
        }
    }

    /// The next event; `Ok(false)` for one that changes nothing (a read of a file).
    async fn next_relevant(&mut self) -> Result<bool, WatchError> {
        let fail = |reason: String| WatchError {
            dirs: describe(&self.dirs),
            reason,
        };
        match self.rx.recv().await {
            None => Err(fail("the watcher stopped".into())),
            Some(Err(e)) => Err(fail(e.to_string())),
            Some(Ok(event)) => Ok(match event.kind {
                // Reading the config on reload opens it: reacting to that would loop.
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                EventKind::Access(_) => false,
                _ => true,
            }),
        }
    }
}

fn describe(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_of_writes_is_one_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut w =
            DirWatcher::new(vec![dir.path().to_owned()], Duration::from_millis(200)).unwrap();
        let writer = {
            let path = dir.path().join("gateway.yaml");
            tokio::spawn(async move {
                for i in 0..5 {
                    std::fs::write(&path, format!("v{i}")).unwrap();
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            })
        };
        let started = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("a change is seen")
            .unwrap();
        // Quiet only after the last write plus the debounce period.
        assert!(started.elapsed() >= Duration::from_millis(300));
        writer.await.unwrap();
        assert_eq!(dir_of(Path::new("gateway.yaml")), PathBuf::from("."));
    }
}
