//! This process and others: the standard streams and signals at start, core dumps off, signals
//! held or caught, a child's signal mask, and whether another process is there.

use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// Standard streams that are closed are opened on /dev/null, so that no file mailtoken opens
/// (a token file) takes their place and gets the token written into it; SIGPIPE is ignored, so
/// that a reader gone away is an error that is reported, not a silent death.
pub fn standard_start() {
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
}

/// No core file, and no debugger for other processes of the same user where the system lets
/// a process say so: a dump or a debugger would show the tokens in memory. Failure leaves
/// things as they were, which is all we could do anyway.
pub fn forbid_core_dumps() {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct it is given.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &none);
    }
    // Linux: not dumpable also means no ptrace and no /proc/PID/mem for the same user.
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes plain integers.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    // FreeBSD: no ptrace, procfs or core of this process; tracing comes back for the programs
    // it starts (a user's `pass`, the browser), which are not ours to restrict.
    #[cfg(target_os = "freebsd")]
    {
        let mut disable: libc::c_int = libc::PROC_TRACE_CTL_DISABLE_EXEC;
        // SAFETY: procctl reads the int it is given, for this process (P_PID, our pid).
        unsafe {
            libc::procctl(
                libc::P_PID,
                libc::id_t::from(std::process::id()),
                libc::PROC_TRACE_CTL,
                (&mut disable as *mut libc::c_int).cast(),
            );
        }
    }
    // macOS: another process of the same user needs the debugging entitlement or root to read
    // this one's memory (task_for_pid); PT_DENY_ATTACH would add little and would also stop the
    // user's own crash reports, so nothing more is done there.
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

/// Set by any of `STOP_SIGNALS` once `catch_stop_signals` has run.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// From now on, each of `STOP_SIGNALS` only sets the flag `stop_requested` reads, instead of
/// ending the process (a server's graceful stop). A blocking call it interrupts returns EINTR.
pub fn catch_stop_signals() {
    for signal in STOP_SIGNALS {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(signal, request_stop as *const () as libc::sighandler_t);
        }
    }
}

/// Whether one of `STOP_SIGNALS` has come since `catch_stop_signals`.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Every signal whose default action ends the process and that can be held back. Not KILL and
/// STOP (they cannot be), nor the faults a thread raises itself (SEGV, BUS, FPE, ILL, TRAP,
/// SYS: holding them would not stop them). PIPE is ignored from the start. ALRM too: the lock's
/// timer uses it only while waiting for the lock, never while signals are held.
pub fn held_signals() -> Vec<libc::c_int> {
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
    #[cfg(target_os = "freebsd")]
    {
        // FreeBSD's real-time signals, 65 to 126, end the process by default too; SIGTHR
        // and SIGLIBRT belong to its thread library and are not touched.
        signals.extend(65..=126);
    }
    signals
}

/// While this lives, the `held_signals` stay pending instead of ending the process; dropping
/// it restores the previous mask, and a signal that arrived meanwhile is then delivered.
pub struct Held {
    old: libc::sigset_t,
}

/// Block the `held_signals` in this thread and in every thread it starts from now on.
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

/// While this lives, Ctrl-C (SIGINT) ends the process with the text given to `say_on_cancel`
/// on stderr and the exit status a shell gives an interrupted command (130). Dropping it puts
/// back the signal's default action.
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

/// The program `cmd` starts begins with no signal blocked, whatever this thread holds at the
/// time (the mask would otherwise be inherited).
pub fn unblock_signals_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only async-signal-safe calls, on a set on this stack.
    unsafe {
        cmd.pre_exec(|| {
            let mut none = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(none.as_mut_ptr());
            libc::pthread_sigmask(libc::SIG_SETMASK, none.as_ptr(), std::ptr::null_mut());
            Ok(())
        });
    }
}

/// Remove a variable from this process's environment. Only for the first lines of `main`,
/// before any other thread exists (another thread reading the environment meanwhile is what
/// makes `std::env::remove_var` unsafe).
pub fn remove_env_at_start(name: &str) {
    // SAFETY: the caller's promise above: no other thread yet.
    unsafe { std::env::remove_var(name) };
}

/// Whether process `pid` exists (ours or another user's).
pub fn exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; it is never delivered.
    let sent = unsafe { libc::kill(pid, 0) };
    sent == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The command line of process `pid`, its words joined by spaces, where the system shows it.
pub fn command_line(pid: u32) -> Option<String> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let words: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|w| !w.is_empty())
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        Some(words.join(" ")).filter(|c| !c.is_empty())
    }
    // macOS: the program's path (its arguments are not to be had as simply).
    #[cfg(target_os = "macos")]
    {
        let pid = libc::c_int::try_from(pid).ok()?;
        let mut path = vec![0u8; 4 * libc::PATH_MAX as usize];
        // SAFETY: the kernel writes at most the buffer's length and returns how much it wrote.
        let got = unsafe { libc::proc_pidpath(pid, path.as_mut_ptr().cast(), path.len() as u32) };
        path.truncate(usize::try_from(got).ok()?);
        Some(String::from_utf8_lossy(&path).into_owned()).filter(|p| !p.is_empty())
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "macos")))]
    {
        let _ = pid;
        None
    }
}
