//! Per-account lock files, so that one process refreshes while the others wait.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a process waits for another one's refresh. Longer than the slowest refresh
/// (connect + request timeouts), so a waiter does not give up on a process that is still
/// legitimately working.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// Held while the account's tokens may change; the OS releases it when the file closes,
/// even if the process is killed.
pub struct AccountLock {
    file: File,
}

impl AccountLock {
    /// The inode of the locked file.
    pub fn inode(&self) -> u64 {
        self.file.metadata().map_or(0, |m| m.ino())
    }
}

/// Wait for the exclusive lock at `path`, for at most `timeout`.
pub fn exclusive(path: &Path, timeout: Duration) -> Result<AccountLock> {
    if path.is_dir() {
        bail!(
            "the lock file {} is a directory: remove it and try again",
            path.display()
        );
    }
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()));
                }
            }
            if start.elapsed() >= timeout {
                bail!(
                    "another mailtoken process has held {} for {} s; if none is running, try again",
                    path.display(),
                    timeout.as_secs()
                );
            }
            sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        // Someone removed (or replaced) the lock file while we waited for it: the lock we
        // hold is on a file nobody else will open, so it guards nothing. Take the one at the
        // path instead.
        if is_at(&file, path) {
            return Ok(AccountLock { file });
        }
    }
}

/// Whether `file` is still the file at `path`.
fn is_at(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(held), Ok(there)) => held.dev() == there.dev() && held.ino() == there.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_then_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.lock");
        let held = exclusive(&path, Duration::from_secs(1)).unwrap();
        let err = exclusive(&path, Duration::from_millis(100)).err().unwrap();
        assert!(err.to_string().contains("another mailtoken process"));
        drop(held);
        exclusive(&path, Duration::from_millis(100)).unwrap();
    }

    #[test]
    fn a_lock_file_removed_while_held_is_not_taken_for_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.lock");
        let held = exclusive(&path, Duration::from_secs(1)).unwrap();
        let other = {
            let path = path.clone();
            std::thread::spawn(move || exclusive(&path, Duration::from_secs(10)).unwrap())
        };
        // The waiter has opened the old file; now it is removed and a new one takes its place.
        sleep(Duration::from_millis(300));
        std::fs::remove_file(&path).unwrap();
        File::create(&path).unwrap();
        drop(held);
        let got = other.join().unwrap();
        assert_eq!(got.inode(), std::fs::metadata(&path).unwrap().ino());
    }

    #[test]
    fn a_directory_in_the_way_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = exclusive(dir.path(), Duration::from_millis(10))
            .err()
            .unwrap();
        assert!(err.to_string().contains("is a directory"));
    }
}
