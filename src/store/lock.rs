//! The SQLite single-replica rule: an exclusive lock on `<database>.lock`, held for as long as
//! the store is open, so a second process on the same file is refused instead of racing the
//! first one for the same work.

use super::StoreError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The lock file next to a SQLite database, locked by this process.
#[derive(Debug)]
pub struct FileLock {
    file: Mutex<Option<File>>,
}

impl FileLock {
    /// Locks `<database>.lock` or says which process holds it.
    pub fn acquire(database: &Path) -> Result<Self, StoreError> {
        let mut path = database.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        let io = |source| StoreError::LockFile {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StoreError::InUse {
                    database: database.display().to_string(),
                    lock: path.display().to_string(),
                    holder: if holder.is_empty() {
                        "another process".into()
                    } else {
                        format!("process {holder}")
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Who holds it, for the next process's error message; the lock is what counts.
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self {
            file: Mutex::new(Some(file)),
        })
    }

    /// Releases the lock (closing the store does this; dropping the process does too).
    pub fn release(&self) {
        if let Some(file) = self.file.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = file.set_len(0);
            let _ = file.unlock();
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_database_is_refused_until_the_first_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("gateway.db");
        let first = FileLock::acquire(&db).unwrap();
        let err = FileLock::acquire(&db).unwrap_err().to_string();
        assert!(err.contains(&db.display().to_string()), "{err}");
        assert!(
            err.contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        first.release();
        FileLock::acquire(&db).expect("free again once released");
    }
}
