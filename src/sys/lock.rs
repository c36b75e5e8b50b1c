//! Waiting for a file lock (flock) with a deadline, which the lock call itself does not have.

use std::fs::File;
use std::io;
use std::time::{Duration, Instant};

/// Block until `file` holds the lock (shared or exclusive), for at most `most` (TimedOut
/// then). With `tell`, once its patience has passed without the lock, it is run (to say who
/// holds it) and the same wait goes on: one wait, so that no lock request is left behind on
/// the open file to change its lock later.
pub fn lock_within(
    file: &File,
    exclusive: bool,
    most: Duration,
    tell: Option<(Duration, &mut dyn FnMut())>,
) -> io::Result<()> {
    let start = Instant::now();
    let mut wait = imp::Wait::start(file, exclusive)?;
    if let Some((patience, tell)) = tell
        && patience < most
    {
        if let Some(done) = wait.until(start + patience) {
            return done;
        }
        tell();
    }
    wait.until(start + most)
        .unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()))
}

fn lock_once(file: &File, exclusive: bool) -> io::Result<()> {
    if exclusive {
        file.lock()
    } else {
        file.lock_shared()
    }
}

/// Linux: an alarm for this thread alone interrupts the lock call at the deadline, as
/// util-linux's `flock -w` does, without a thread to start.
#[cfg(all(target_os = "linux", not(mailtoken_portable)))]
mod imp {
    use super::*;

    pub struct Wait<'a> {
        file: &'a File,
        exclusive: bool,
    }

    impl<'a> Wait<'a> {
        pub fn start(file: &'a File, exclusive: bool) -> io::Result<Wait<'a>> {
            Ok(Wait { file, exclusive })
        }

        /// The lock call's result, or None when `deadline` came first.
        pub fn until(&mut self, deadline: Instant) -> Option<io::Result<()>> {
            let _alarm = match Alarm::at(deadline.saturating_duration_since(Instant::now())) {
                Ok(alarm) => alarm,
                Err(e) => return Some(Err(e)),
            };
            loop {
                match lock_once(self.file, self.exclusive) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        if Instant::now() >= deadline {
                            return None;
                        }
                    }
                    locked => return Some(locked),
                }
            }
        }
    }

    /// SIGALRM for the calling thread alone, at a deadline and every 10 ms after it (so that a
    /// signal that came just before the lock call began is followed by one that finds it
    /// waiting); disarmed when dropped. Its handler does nothing and restarts nothing, so a
    /// blocking call in this thread returns with EINTR.
    struct Alarm(libc::timer_t);

    impl Alarm {
        fn at(after: Duration) -> io::Result<Alarm> {
            extern "C" fn ring(_: libc::c_int) {}
            static HANDLER: std::sync::Once = std::sync::Once::new();
            // SAFETY: plain calls on structs owned here: a handler that does nothing, installed
            // once without SA_RESTART, and a timer that signals this thread, deleted on drop.
            unsafe {
                HANDLER.call_once(|| {
                    let mut action: libc::sigaction = std::mem::zeroed();
                    action.sa_sigaction = ring as extern "C" fn(libc::c_int) as libc::sighandler_t;
                    libc::sigemptyset(&mut action.sa_mask);
                    libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut());
                });
                let mut event: libc::sigevent = std::mem::zeroed();
                event.sigev_notify = libc::SIGEV_THREAD_ID;
                event.sigev_signo = libc::SIGALRM;
                // The system call: glibc's wrapper came only in 2.30.
                event.sigev_notify_thread_id = libc::syscall(libc::SYS_gettid) as libc::pid_t;
                let mut timer: libc::timer_t = std::ptr::null_mut();
                if libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer) != 0 {
                    return Err(io::Error::last_os_error());
                }
                let alarm = Alarm(timer);
                let after = after.max(Duration::from_nanos(1));
                let times = libc::itimerspec {
                    it_value: libc::timespec {
                        tv_sec: libc::time_t::try_from(after.as_secs())
                            .unwrap_or(libc::time_t::MAX),
                        tv_nsec: after.subsec_nanos().into(),
                    },
                    it_interval: libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 10_000_000,
                    },
                };
                if libc::timer_settime(timer, 0, &times, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(alarm)
            }
        }
    }

    impl Drop for Alarm {
        fn drop(&mut self) {
            // SAFETY: the timer was created by `at` and is deleted once. A signal still pending
            // is taken (by the handler) when this call returns, not in a later call.
            unsafe { libc::timer_delete(self.0) };
        }
    }
}

/// Elsewhere (macOS has no POSIX timers; a timer aimed at one thread is Linux's): the lock call
/// blocks in a thread of its own, on a duplicate of the descriptor (the lock belongs to the
/// open file, so it is `file`'s), and the caller waits for its answer. A thread left behind by
/// a timeout gets the lock later, when the caller has given up on the file (no caller waits
/// on it again: see `lock_within`), and lets it go as it ends, by closing the last descriptor.
/// The kernel still grants a shared lock to every waiter at once, so a storm's design holds.
#[cfg(not(all(target_os = "linux", not(mailtoken_portable))))]
mod imp {
    use super::*;
    use std::sync::mpsc::{Receiver, RecvTimeoutError};

    pub struct Wait {
        answer: Receiver<io::Result<()>>,
    }

    impl Wait {
        pub fn start(file: &File, exclusive: bool) -> io::Result<Wait> {
            let twin = file.try_clone()?;
            let (tx, answer) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("lock wait".into())
                .spawn(move || {
                    let _ = tx.send(lock_once(&twin, exclusive));
                })?;
            Ok(Wait { answer })
        }

        /// The lock call's result, or None when `deadline` came first.
        pub fn until(&mut self, deadline: Instant) -> Option<io::Result<()>> {
            match self
                .answer
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(locked) => Some(locked),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(Err(io::Error::other(
                    "the thread waiting for the lock ended without an answer",
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wait a person is told about is one wait: the word comes once, the lock is had when
    /// the holder lets go, and in the mode asked for (no request of an earlier wait is left
    /// behind to change it), and a wait that runs out says so.
    #[test]
    fn one_wait_tells_once_and_ends_with_the_lock_or_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.lock");
        let holder = File::create(&path).unwrap();
        holder.lock().unwrap();
        let waiter = File::open(&path).unwrap();
        let mut told = 0;
        let timed_out = lock_within(
            &waiter,
            false,
            Duration::from_millis(300),
            Some((Duration::from_millis(50), &mut || told += 1)),
        );
        assert_eq!(timed_out.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(told, 1);
        // As every caller does after a timeout: the file waited on is let go.
        drop(waiter);

        let waiter = File::open(&path).unwrap();
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(holder);
        });
        let mut told = 0;
        lock_within(
            &waiter,
            true,
            Duration::from_secs(20),
            Some((Duration::from_millis(50), &mut || told += 1)),
        )
        .unwrap();
        letting_go.join().unwrap();
        assert_eq!(told, 1);
        // Exclusive: another open file gets no lock of either kind.
        let other = File::open(&path).unwrap();
        assert!(other.try_lock_shared().is_err());
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            other.try_lock_shared().is_err(),
            "the lock changed after the wait"
        );
    }
}
