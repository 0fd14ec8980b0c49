//! Watching the directories that hold the config file and the TLS files. Directories, not files:
//! Kubernetes swaps ConfigMaps and Secrets through the `..data` symlink and editors rename on
//! save, so a watch on the file's inode would go deaf. Reports "one of them changed" once quiet.

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::ffi::OsString;
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

/// The name Kubernetes gives the symlink it swaps to update a ConfigMap or Secret volume.
const KUBE_DATA: &str = "..data";

/// Longest wait after a first change when other files of the directory keep changing.
const MAX_DELAY: Duration = Duration::from_secs(3);

/// A watch on the directories of a few files; `changed` resolves after a burst of changes to
/// those files goes quiet. Other files of the directories (a database beside the config) are
/// ignored.
pub struct DirWatcher {
    _watcher: notify::RecommendedWatcher,
    rx: mpsc::UnboundedReceiver<notify::Result<Event>>,
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    names: HashSet<OsString>,
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
    /// Watches the directory of each of `files` (not recursively) for changes to those names
    /// or to a Kubernetes `..data` link.
    pub fn new(files: &[PathBuf], debounce: Duration) -> Result<Self, WatchError> {
        let mut dirs: Vec<PathBuf> = files.iter().map(|f| dir_of(f)).collect();
        dirs.sort();
        dirs.dedup();
        let mut names: HashSet<OsString> = files
            .iter()
            .filter_map(|f| f.file_name())
            .map(Into::into)
            .collect();
        names.insert(KUBE_DATA.into());
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
            files: files.to_vec(),
            dirs,
            names,
            debounce,
        })
    }

    /// The files watched for, as given.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
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
        let give_up = tokio::time::Instant::now() + MAX_DELAY;
        let mut quiet_from = tokio::time::Instant::now() + self.debounce;
        loop {
            let until = quiet_from.min(give_up);
            match tokio::time::timeout_at(until, self.next_relevant()).await {
                Ok(r) => {
                    if r? {
                        quiet_from = tokio::time::Instant::now() + self.debounce;
                    }
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
            Some(Ok(event)) => {
                let kind = match event.kind {
                    // Reading the config on reload opens it: reacting to that would loop.
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                    EventKind::Access(_) => false,
                    _ => true,
                };
                // An event without paths (a rescan after an overflow) may hide anything.
                let ours = event.paths.is_empty()
                    || event
                        .paths
                        .iter()
                        .filter_map(|p| p.file_name())
                        .any(|n| self.names.contains(n));
                Ok(kind && ours)
            }
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
        let file = dir.path().join("gateway.yaml");
        let mut w = DirWatcher::new(&[file], Duration::from_millis(200)).unwrap();
        // Other files of the directory (the database's WAL) do not count.
        std::fs::write(dir.path().join("gateway.db-wal"), "x").unwrap();
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
