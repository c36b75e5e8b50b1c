//! Per-account lock files, so that one process refreshes while the others wait. A waiter
//! sleeps in the kernel until the holder closes the file (inotify), so it goes on the moment
//! the lock is free, not at its next poll.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
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
    let (lock, _) = acquire(path, timeout, &mut || false)?;
    Ok(lock.expect("the wait ends only with the lock"))
}

/// As `exclusive`, but `done` is asked each time the holder (or another waiter) lets go, and
/// when it says the work is done, the wait ends without the lock: None.
pub fn exclusive_unless(
    path: &Path,
    timeout: Duration,
    done: &mut dyn FnMut() -> bool,
) -> Result<Option<AccountLock>> {
    acquire(path, timeout, done).map(|(lock, _)| lock)
}

/// The lock, or None when `done` said so; and how many times the lock was tried.
fn acquire(
    path: &Path,
    timeout: Duration,
    done: &mut dyn FnMut() -> bool,
) -> Result<(Option<AccountLock>, u32)> {
    if path.is_dir() {
        bail!(
            "the lock file {} is a directory: remove it and try again",
            path.display()
        );
    }
    let deadline = Instant::now() + timeout;
    let mut tries = 0;
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        // Watching before the first try: a release between the try and the wait still wakes us.
        let mut closed = Closes::watch(path);
        loop {
            tries += 1;
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "another mailtoken process has held {} for {} s; if none is running, try again",
                    path.display(),
                    timeout.as_secs()
                );
            }
            closed.wait(left);
            if done() {
                return Ok((None, tries));
            }
        }
        // Someone removed (or replaced) the lock file while we waited for it: the lock we
        // hold is on a file nobody else will open, so it guards nothing. Take the one at the
        // path instead.
        if is_at(&file, path) {
            return Ok((Some(AccountLock { file }), tries));
        }
    }
}

/// Wake-ups for a waiter: the lock file was closed by someone (the holder letting go, or
/// another waiter), or removed or replaced. inotify on Linux; where it is missing or its
/// limits are reached, short sleeps instead.
struct Closes {
    fd: Option<std::os::fd::OwnedFd>,
    pause: Duration,
}

impl Closes {
    fn watch(path: &Path) -> Closes {
        Closes {
            fd: watch_closes(path),
            pause: Duration::from_millis(1),
        }
    }

    /// Until something happened to the file, or `most` passed; then another try is due.
    fn wait(&mut self, most: Duration) {
        match &self.fd {
            Some(fd) => wait_readable(fd, most),
            None => {
                std::thread::sleep(self.pause.min(most));
                self.pause = (self.pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn watch_closes(path: &Path) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: plain inotify calls; the descriptor is owned (and closed) by the OwnedFd.
    unsafe {
        let fd = libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK);
        if fd < 0 {
            return None;
        }
        let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
        let events = libc::IN_CLOSE_WRITE
            | libc::IN_CLOSE_NOWRITE
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF
            | libc::IN_ATTRIB;
        (libc::inotify_add_watch(std::os::fd::AsRawFd::as_raw_fd(&fd), name.as_ptr(), events) >= 0)
            .then_some(fd)
    }
}

#[cfg(not(target_os = "linux"))]
fn watch_closes(_: &Path) -> Option<std::os::fd::OwnedFd> {
    None
}

/// Wait until `fd` has events (then drain them) or `most` passed.
fn wait_readable(fd: &std::os::fd::OwnedFd, most: Duration) {
    use std::os::fd::AsRawFd;
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(most.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd; the buffer below is ours and its length is given.
    unsafe {
        if libc::poll(&mut poll, 1, ms) > 0 {
            let mut events = [0u8; 4096];
            while libc::read(fd.as_raw_fd(), events.as_mut_ptr().cast(), events.len()) > 0 {}
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
        std::thread::sleep(Duration::from_millis(300));
        std::fs::remove_file(&path).unwrap();
        File::create(&path).unwrap();
        drop(held);
        let got = other.join().unwrap();
        assert_eq!(got.inode(), std::fs::metadata(&path).unwrap().ino());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_waiter_sleeps_until_the_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.lock");
        let held = exclusive(&path, Duration::from_secs(1)).unwrap();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                acquire(&path, Duration::from_secs(10), &mut || false)
                    .unwrap()
                    .1
            })
        };
        // Long enough for a polling waiter to try a dozen times.
        std::thread::sleep(Duration::from_millis(400));
        drop(held);
        // One try before the wait, one when the holder's close wakes it.
        assert_eq!(waiter.join().unwrap(), 2);
    }

    #[test]
    fn a_waiter_whose_work_was_done_meanwhile_goes_without_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.lock");
        let held = exclusive(&path, Duration::from_secs(1)).unwrap();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut asked = 0;
                let lock = exclusive_unless(&path, Duration::from_secs(10), &mut || {
                    asked += 1;
                    true
                })
                .unwrap();
                (lock.is_none(), asked)
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        drop(held);
        assert_eq!(waiter.join().unwrap(), (true, 1));
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
