//! `mailtoken`: OAuth2 access tokens for mail programs. The call they make thousands of times
//! a day, `token NAME` with a cached token, is answered here; every other call becomes
//! `mailtoken-full` (src/bin/mailtoken-full.rs), the program with every command, in the same
//! process (exec). Two programs because start-up cost grows with the program: the full one's
//! relocations and scattered code pages alone cost more than all of `cat`.

// Started without Rust's runtime set-up, which cost a cached call 110 to 130 us here (of 0.9
// to 1.2 ms); `process::start` does the part of it that matters. (A unit-test build keeps
// the harness's main: the tests live in the library.)
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    use mailtoken::commands::token;
    use mailtoken::{process, shell};
    process::start();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let result = match token::quick(&args) {
        Some(result) => result,
        None => Err(shell::become_full(&args)),
    };
    process::finish(result)
}
