//! Process-wide protection of the secrets in memory: no core dumps, and SIGTERM, SIGINT and
//! SIGHUP held off while a rotated refresh token is in flight; and a word on Ctrl-C during
//! the waits of a login.
//!
//! Once a server has answered a refresh, the old refresh token is dead and the new one exists
//! only in memory until it is stored: a mail client timing out its password command, or a
//! service manager stopping a timer, must not kill the process in that window. SIGKILL cannot
//! be held off.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

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

/// The line Ctrl-C prints while a `Cancel` lives, kept where the signal handler can reach it.
static CANCEL_TEXT: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static CANCEL_LEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn cancelled(_: libc::c_int) {
    let (text, len) = (
        CANCEL_TEXT.load(Ordering::SeqCst),
        CANCEL_LEN.load(Ordering::SeqCst),
    );
    // SAFETY: write(2) and _exit(2) are async-signal-safe; `text` points to a static string
    // of `len` bytes (set before the handler was installed).
    unsafe {
        libc::write(2, text.cast(), len);
        libc::_exit(130);
    }
}

/// While this lives, Ctrl-C (SIGINT) ends the process with `text` on stderr and the exit
/// status a shell gives an interrupted command (130). For waits where nothing is stored yet,
/// so the person knows it. Dropping it puts back the signal's default action.
pub struct Cancel(());

pub fn say_on_cancel(text: &'static str) -> Cancel {
    CANCEL_TEXT.store(text.as_ptr().cast_mut(), Ordering::SeqCst);
    CANCEL_LEN.store(text.len(), Ordering::SeqCst);
    // SAFETY: the handler only calls async-signal-safe functions on static data.
    unsafe {
        libc::signal(libc::SIGINT, cancelled as *const () as libc::sighandler_t);
    }
    Cancel(())
}

impl Drop for Cancel {
    fn drop(&mut self) {
        // SAFETY: restores the default action; no memory is involved.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
        }
    }
}
