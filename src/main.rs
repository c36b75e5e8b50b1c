//! `mailtoken`: OAuth2 access tokens for mail programs. The call they make thousands of times
//! a day, `token NAME` with a cached token, is answered here (src/front.rs, which also says
//! everything this program trusts); every other call becomes `mailtoken-full`
//! (src/bin/mailtoken-full.rs), the program with every command, in the same process (exec).
//! Two programs because start-up cost grows with the program: the full one's relocations and
//! scattered code pages alone cost more than all of `cat` (README, Performance).

// Started without Rust's runtime set-up (its stack-overflow guard reads /proc/self/maps, a
// tenth of a cached call); `process::start` does the part of it that matters.
// A test build keeps the harness's main (the tests live in the library): `[[bin]] test =
// false` would not do, since `cargo test --all-targets` builds and runs the bins' tests anyway,
// and a `no_main` test binary would be the program itself, run with the harness's arguments.
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    use mailtoken::{front, process, shell};
    process::start();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let result = match front::quick(&args) {
        Some(result) => result,
        None => Err(shell::become_full(&args)),
    };
    process::finish(result)
}
