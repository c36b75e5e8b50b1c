//! `mailtoken`: OAuth2 access tokens for mail programs. The call they make thousands of times
//! a day, `token NAME` with a cached token, is answered here; every other call becomes
//! `mailtoken-full` (src/bin/mailtoken-full.rs), the program with every command, in the same
//! process (exec). Two programs because start-up cost grows with the program: the full one's
//! relocations and scattered code pages alone cost more than all of `cat`.

// Started without Rust's runtime set-up, which costs a cached call a sixth of its time;
// `process::start` does the part of it that matters here.
#![no_main]

use mailtoken::commands::token;
use mailtoken::{process, shell};

#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    process::start();
    process::forbid_core_dumps();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let result = match token::quick(&args) {
        Some(result) => result,
        None => Err(shell::become_full(&args)),
    };
    process::finish(result)
}
