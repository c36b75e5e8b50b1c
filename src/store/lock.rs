//! Per-account lock files, so that one process refreshes while the others wait. Waiters sleep
//! in the kernel on the lock itself and are all let go together when the holder closes it.

use std::fs::{File, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
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

/// As `exclusive`, but `done` is asked once the holder lets go, and when it says the work is
/// done, the wait ends without the lock: None.
pub fn exclusive_unless(
    path: &Path,
    timeout: Duration,
    done: &mut dyn FnMut() -> bool,
) -> Result<Option<AccountLock>> {
    acquire(path, timeout, done).map(|(lock, _)| lock)
}

/// For a process that only reads: if someone holds the lock at `path`, wait until they let
/// go and run `check` under a shared lock, so that it sees all they wrote and no other holder
/// starts before it ends. None when nobody held it (or there is no lock file): nothing to wait
/// for.
pub fn after_holder<T>(
    path: &Path,
    timeout: Duration,
    check: impl FnOnce() -> T,
) -> Result<Option<T>> {
    let Some(file) = super::file::open_lock(path, false)? else {
        return Ok(None);
    };
    match file.try_lock_shared() {
        Ok(()) => return Ok(None),
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    wait_telling(&file, Mode::Shared, timeout, path)
        .map_err(|e| held_too_long(e, path, timeout))?;
    Ok(Some(check()))
}

/// The exclusive lock at `path` if nobody holds it now; None if somebody does.
pub fn try_exclusive(path: &Path) -> Result<Option<AccountLock>> {
    let file = super::file::open_lock(path, true)?
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            sign(&file);
            Ok(Some(AccountLock { file }))
        }
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Whether a process holds the lock at `path` now. Creates nothing.
pub fn is_held(path: &Path) -> bool {
    let Ok(Some(file)) = super::file::open_lock(path, false) else {
        return false;
    };
    matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
}

/// The lock, or None when `done` said so; and how many times the lock was asked for.
///
/// A waiter first waits for a shared lock: the kernel grants it to every such waiter at once
/// when the holder lets go, so a storm of callers all read the new token together instead of
/// taking the exclusive lock one after the other. Only a waiter whose work is not done then
/// queues for the exclusive lock. (Waking on inotify instead cost each waiter an RCU grace
/// period, about 15 ms here, when it closed its inotify descriptor.)
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
    let mut asked = false;
    loop {
        let file = super::file::open_lock(path, true)?
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        tries += 1;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let left = || deadline.saturating_duration_since(Instant::now());
                if !asked {
                    tries += 1;
                    wait_telling(&file, Mode::Shared, left(), path)
                        .map_err(|e| held_too_long(e, path, timeout))?;
                    asked = true;
                    if done() {
                        return Ok((None, tries));
                    }
                }
                tries += 1;
                wait_telling(&file, Mode::Exclusive, left(), path)
                    .map_err(|e| held_too_long(e, path, timeout))?;
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        // Someone removed (or replaced) the lock file while we waited for it: the lock we
        // hold is on a file nobody else will open, so it guards nothing. Take the one at the
        // path instead.
        if is_at(&file, path) {
            sign(&file);
            return Ok((Some(AccountLock { file }), tries));
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Shared,
    Exclusive,
}

/// Block until `file` holds the lock in `mode`, for at most `most` (TimedOut then).
fn wait(file: &File, mode: Mode, most: Duration) -> io::Result<()> {
    crate::sys::lock::lock_within(file, mode == Mode::Exclusive, most, None)
}

/// The holder writes its process id into the lock file, for waiters to name it. Best effort:
/// a waiter that finds none says less.
fn sign(file: &File) {
    use std::os::unix::fs::FileExt;
    let _ = file
        .set_len(0)
        .and_then(|()| file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0));
}

/// Who holds the lock at `path`, as its holder signed it: `process 4242 (mailtoken token
/// work)`, the command line where the system shows it.
pub fn holder(path: &Path) -> Option<(u32, String)> {
    use std::io::Read;
    let file = super::file::open_lock(path, false).ok()??;
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    let command = crate::sys::process::command_line(pid)
        .map(|command| command.chars().take(240).collect::<String>());
    let named = match command {
        Some(command) => format!("process {pid} ({})", crate::log::printable(&command)),
        None => format!("process {pid}"),
    };
    Some((pid, named))
}

/// `wait`, and at a terminal, once a second has passed, a line on who holds the lock: a
/// person should not stare at two silent minutes.
fn wait_telling(file: &File, mode: Mode, most: Duration, path: &Path) -> io::Result<()> {
    use std::io::IsTerminal;
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Said once per process, however many waits it makes.
    static TOLD: AtomicBool = AtomicBool::new(false);
    const PATIENCE: Duration = Duration::from_secs(1);
    if TOLD.load(Ordering::Relaxed) || !io::stderr().is_terminal() {
        return wait(file, mode, most);
    }
    let until = Instant::now() + most;
    let mut tell = || {
        TOLD.store(true, Ordering::Relaxed);
        let left = until.saturating_duration_since(Instant::now());
        eprintln!(
            "mailtoken: waiting for {} to finish with {} (at most {} s more)",
            holder(path).map_or("another mailtoken process".into(), |(_, named)| named),
            path.display(),
            left.as_secs()
        );
    };
    crate::sys::lock::lock_within(
        file,
        mode == Mode::Exclusive,
        most,
        Some((PATIENCE, &mut tell)),
    )
}

/// The wait's error, in words: the usual one is another process holding the lock too long.
fn held_too_long(err: io::Error, path: &Path, timeout: Duration) -> anyhow::Error {
    if err.kind() == io::ErrorKind::TimedOut {
        match holder(path) {
            Some((pid, named)) => anyhow::anyhow!(
                "{named} has held {} for {} s; if it hangs, end it (`kill {pid}`) and try again",
                path.display(),
                timeout.as_secs()
            ),
            None => anyhow::anyhow!(
                "another mailtoken process has held {} for {} s; if none is running, try again",
                path.display(),
                timeout.as_secs()
            ),
        }
    } else {
        anyhow::Error::new(err).context(format!("cannot lock {}", path.display()))
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
        // The holder is named, with its command line, and how to end it.
        let me = std::process::id();
        assert!(
            err.to_string().starts_with(&format!(
                "process {me} ({}",
                std::env::args().next().unwrap()
            )),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("`kill {me}`")), "{err}");
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
        // One try, then the shared wait, then (its work not done) the exclusive one.
        assert_eq!(waiter.join().unwrap(), 3);
    }

    #[test]
    fn waiters_are_let_go_together_and_check_under_a_shared_lock() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        const WAITERS: usize = 3;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.lock");
        let held = exclusive(&path, Duration::from_secs(1)).unwrap();
        let checking = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (0..WAITERS)
            .map(|_| {
                let (path, checking) = (path.clone(), checking.clone());
                std::thread::spawn(move || {
                    let mut seen = (false, false);
                    let lock = exclusive_unless(&path, Duration::from_secs(10), &mut || {
                        // While a waiter checks, no refresh can start: the file cannot be
                        // locked exclusively, but it can be shared.
                        let other = File::open(&path).unwrap();
                        let exclusive_refused =
                            matches!(other.try_lock(), Err(TryLockError::WouldBlock));
                        let shared_granted = other.try_lock_shared().is_ok();
                        // Every waiter is checking at the same time, none queues behind another.
                        checking.fetch_add(1, Ordering::SeqCst);
                        let until = Instant::now() + Duration::from_secs(5);
                        while checking.load(Ordering::SeqCst) < WAITERS && Instant::now() < until {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        seen = (
                            exclusive_refused && shared_granted,
                            checking.load(Ordering::SeqCst) == WAITERS,
                        );
                        true
                    })
                    .unwrap();
                    (lock.is_none(), seen)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        drop(held);
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), (true, (true, true)));
        }
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
    fn a_reader_waits_only_for_a_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.lock");
        // No lock file, then a free lock: nothing to wait for.
        assert!(
            after_holder(&path, Duration::from_secs(1), || ())
                .unwrap()
                .is_none()
        );
        drop(exclusive(&path, Duration::from_secs(1)).unwrap());
        assert!(
            after_holder(&path, Duration::from_secs(1), || ())
                .unwrap()
                .is_none()
        );
        // Held: the check runs once the holder lets go, and not before.
        let held = exclusive(&path, Duration::from_secs(1)).unwrap();
        let released = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (path, released) = (path.clone(), released.clone());
            std::thread::spawn(move || {
                after_holder(&path, Duration::from_secs(10), || {
                    released.load(std::sync::atomic::Ordering::SeqCst)
                })
                .unwrap()
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        released.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(held);
        assert_eq!(reader.join().unwrap(), Some(true));
        // A holder that stays past the deadline is named.
        let _held = exclusive(&path, Duration::from_secs(1)).unwrap();
        let err = after_holder(&path, Duration::from_millis(100), || ())
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with(&format!("process {} (", std::process::id())),
            "{err}"
        );
    }

    #[test]
    fn the_shared_wait_and_the_exclusive_one_keep_to_one_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.lock");
        let held = File::create(&path).unwrap();
        held.lock().unwrap();
        let started = Instant::now();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || exclusive(&path, Duration::from_secs(2)).err())
        };
        // After 1.5 s the holder only shares: the waiter's shared wait ends, its work is not
        // done, and its exclusive wait has the 0.5 s left, not another 2 s.
        std::thread::sleep(Duration::from_millis(1500));
        held.lock_shared().unwrap();
        let err = waiter.join().unwrap().expect("the lock stays shared");
        assert!(
            err.to_string().contains("another mailtoken process"),
            "{err}"
        );
        let waited = started.elapsed();
        assert!(waited < Duration::from_millis(3000), "waited {waited:?}");
    }

    #[test]
    fn a_deadline_that_passes_before_the_lock_call_still_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.lock");
        let _held = exclusive(&path, Duration::from_secs(1)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path2 = path.clone();
        std::thread::spawn(move || {
            let file = File::open(&path2).unwrap();
            // The alarm rings before the lock call can begin: the ones after it must end it.
            let _ = tx.send(wait(&file, Mode::Exclusive, Duration::ZERO).map_err(|e| e.kind()));
        });
        let got = rx.recv_timeout(Duration::from_secs(5));
        assert_eq!(got, Ok(Err(io::ErrorKind::TimedOut)));
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
