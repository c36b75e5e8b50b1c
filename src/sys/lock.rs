//! Waiting for a file lock (flock) with a deadline, which the lock call itself does not have.

use std::fs::File;
use std::io;
use std::time::Duration;

/// Block until `file` holds the lock (shared or exclusive), for at most `most` (TimedOut then).
pub fn lock_within(file: &File, exclusive: bool, most: Duration) -> io::Result<()> {
    imp::lock_within(file, exclusive, most)
}

fn lock_once(file: &File, exclusive: bool) -> io::Result<()> {
    if exclusive {
        file.lock()
    } else {
        file.lock_shared()
    }
}

/// An alarm for this thread alone interrupts the lock call at the deadline, as util-linux's
/// `flock -w` does, without a thread to start.
#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use std::time::Instant;

    pub fn lock_within(file: &File, exclusive: bool, most: Duration) -> io::Result<()> {
        let deadline = Instant::now() + most;
        let _alarm = Alarm::at(most)?;
        loop {
            match lock_once(file, exclusive) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if Instant::now() >= deadline {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
                locked => return locked,
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

/// Elsewhere the lock call blocks in a thread of its own, on a duplicate of the descriptor
/// (the lock belongs to the open file, so it is `file`'s). A thread left behind by a timeout
/// gets the lock later, on a file nobody else has open, and lets it go at once.
#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    pub fn lock_within(file: &File, exclusive: bool, most: Duration) -> io::Result<()> {
        let twin = file.try_clone()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new().spawn(move || {
            let _ = tx.send(lock_once(&twin, exclusive));
        })?;
        rx.recv_timeout(most)
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }
}
