//! Per-account lock files, so that one process refreshes while the others wait.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
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
    _file: File,
}

/// Wait for the exclusive lock at `path`, for at most `timeout`.
pub fn exclusive(path: &Path, timeout: Duration) -> Result<AccountLock> {
    if path.is_dir() {
        bail!(
            "the lock file {} is a directory: remove it and try again",
            path.display()
        );
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(AccountLock { _file: file }),
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
    fn a_directory_in_the_way_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = exclusive(dir.path(), Duration::from_millis(10))
            .err()
            .unwrap();
        assert!(err.to_string().contains("is a directory"));
    }
}
