//! Process-wide protection of the secrets in memory: no core dumps, and SIGTERM, SIGINT and
//! SIGHUP held off while a rotated refresh token is in flight.
//!
//! Once a server has answered a refresh, the old refresh token is dead and the new one exists
//! only in memory until it is stored: a mail client timing out its password command, or a
//! service manager stopping a timer, must not kill the process in that window. SIGKILL cannot
//! be held off.

use std::mem::MaybeUninit;

/// While this lives, the three signals stay pending instead of ending the process; dropping it
/// restores the previous mask, and a signal that arrived meanwhile is then delivered.
pub struct Held {
    old: libc::sigset_t,
}

/// No core file, and no ptrace or /proc/PID/mem for other processes of the same user: a dump
/// or a debugger would show the tokens in memory. Called first thing in `main`.
pub fn forbid_core_dumps() {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct it is given; prctl(PR_SET_DUMPABLE, 0) takes plain
    // integers. Failure leaves things as they were, which is all we could do anyway.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// Block the signals in this thread and in every thread it starts from now on (the HTTP
/// client's runtime thread among them), so none of them can take the signal instead.
pub fn hold_signals() -> Held {
    // SAFETY: sigemptyset/sigaddset initialise the set they are given; pthread_sigmask reads
    // `set` and writes the previous mask into `old`, both valid for the call.
    unsafe {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        let mut set = set.assume_init();
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        let mut old = MaybeUninit::<libc::sigset_t>::uninit();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, old.as_mut_ptr());
        Held {
            old: old.assume_init(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `hold`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}
