//! The process: its start (what Rust's runtime would set up), protection of the secrets in
//! memory (no core dumps; every signal that would end the process and can be held is held off
//! while a rotated refresh token is in flight), and a word on Ctrl-C during the waits of a
//! login.
//!
//! Once a server has answered a refresh, the old refresh token is dead and the new one exists
//! only in memory until it is stored: a mail client timing out its password command, or a
//! service manager stopping a timer, must not kill the process in that window. SIGKILL cannot
//! be held off.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// While this lives, those signals stay pending instead of ending the process; dropping it
/// restores the previous mask, and a signal that arrived meanwhile is then delivered.
pub struct Held {
    old: libc::sigset_t,
}

/// What Rust's runtime does before `main`, for a binary that starts without it
/// (`#![no_main]`: the runtime's stack-overflow guard reads and parses /proc/self/maps and
/// sets up a signal stack, 110 to 130 us of a cached `token` call here): standard streams that are
/// closed are opened on /dev/null, so that no file mailtoken opens (a token file) takes their
/// place and gets the token written into it; and SIGPIPE is ignored, so that a reader gone
/// away is an error that is reported, not a silent death. Then no core dumps. Called first
/// thing in both programs' `main`.
pub fn start() {
    for fd in 0..=2 {
        // SAFETY: fcntl(F_GETFD) on any integer is harmless; open returns a new descriptor,
        // the lowest free one, which is `fd` itself when `fd` is the one closed.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1
                && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) != fd
            {
                // As Rust's runtime does: no safe way on without the three streams.
                libc::abort();
            }
        }
    }
    // SAFETY: setting a signal's disposition to SIG_IGN has no memory preconditions. Programs
    // mailtoken starts get the default back (std::process resets SIGPIPE in the child).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    forbid_core_dumps();
}

/// The only way out of both programs: the error on stderr (as one line of printable text:
/// errors may quote a server, whose control characters are shown, not obeyed) and its exit
/// code. `std::process::exit` flushes stdout; returning from a `#![no_main]` main would not.
pub fn finish(result: anyhow::Result<()>) -> ! {
    if let Err(err) = result {
        eprintln!("mailtoken: {}", crate::log::printable(&format!("{err:#}")));
        std::process::exit(crate::error::exit_code(&err));
    }
    std::process::exit(0)
}

/// No core file, and no ptrace or /proc/PID/mem for other processes of the same user: a dump
/// or a debugger would show the tokens in memory. Part of `start`.
fn forbid_core_dumps() {
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

/// The signals people and service managers send to stop a program.
pub const STOP_SIGNALS: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Run `handler` on each of `STOP_SIGNALS` from now on, instead of ending the process (a
/// server's graceful stop). The handler may only do what is async-signal-safe.
pub fn on_stop_signals(handler: extern "C" fn(libc::c_int)) {
    for signal in STOP_SIGNALS {
        // SAFETY: installs a handler; the caller's promise above makes running it safe.
        unsafe {
            libc::signal(signal, handler as *const () as libc::sighandler_t);
        }
    }
}

/// Every signal whose default action ends the process and that can be held back: a refresh
/// that one of them ended between the request and the commit would lose the rotated refresh
/// token. Not KILL and STOP (they cannot be), nor the faults a thread raises itself (SEGV,
/// BUS, FPE, ILL, TRAP, SYS: holding them would not stop them). PIPE is ignored from the start.
/// ALRM too: the lock's timer uses it only while waiting for the lock, never in this window.
fn held_signals() -> Vec<libc::c_int> {
    let mut signals = STOP_SIGNALS.to_vec();
    signals.extend([
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGIO,
    ]);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        signals.extend([libc::SIGPWR, libc::SIGSTKFLT]);
        // Real-time signals end the process by default too.
        signals.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
    }
    signals
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
        for signal in held_signals() {
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
        // SAFETY: restores the mask saved by `hold_signals`.
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
