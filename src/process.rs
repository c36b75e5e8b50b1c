//! The process: its start (what Rust's runtime would set up) and its one way out.
//!
//! Once a server has answered a refresh, the old refresh token is dead and the new one exists
//! only in memory until it is stored: `sys::process::hold_signals` keeps a mail client timing
//! out its password command, or a service manager stopping a timer, from killing the process
//! in that window (SIGKILL cannot be held off), and `start` keeps core dumps from showing it.

/// What Rust's runtime does before `main`, for a binary that starts without it
/// (`#![no_main]`: the runtime's stack-overflow guard reads and parses /proc/self/maps and
/// sets up a signal stack, a tenth of a cached `token` call): standard streams that are closed
/// are opened on /dev/null and SIGPIPE is ignored (`sys::process::standard_start` says why).
/// Then no core dumps. Called first thing in both programs' `main`.
pub fn start() {
    crate::sys::process::standard_start();
    crate::sys::process::forbid_core_dumps();
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
