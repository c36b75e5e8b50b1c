//! `mailtoken-full`: every command of mailtoken. `mailtoken` (src/main.rs) answers the cached
//! `token` call itself and becomes this program for everything else. This file only parses
//! and dispatches.

// Started without Rust's runtime set-up; `process::start` does the part of it that matters.
// A test build keeps the harness's main (the tests live in the library): `[[bin]] test =
// false` would not do, since `cargo test --all-targets` builds and runs the bins' tests anyway,
// and a `no_main` test binary would be the program itself, run with the harness's arguments.
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    use clap::Parser;
    use mailtoken::cli::{Cli, Command};
    use mailtoken::commands::{doctor, git, proxy, setup, status, token, verify, whoami};
    use mailtoken::{config, log, process, shell};
    process::start();
    if let Err(err) = shell::check_front() {
        process::finish(Err(err));
    }
    let cli = Cli::parse_from(std::env::args_os());
    log::set_verbose(cli.verbose);
    let result =
        config::Paths::resolve(cli.config, cli.data_dir).and_then(|paths| match cli.command {
            Command::Add(args) => setup::add(&paths, args),
            Command::Login(args) => setup::login(&paths, &args),
            Command::Token(args) => token::print(&paths, &args),
            Command::Status { account } => status::run(&paths, account.as_deref()),
            Command::Logout { account } => setup::logout(&paths, &account),
            Command::Remove { account } => setup::remove(&paths, &account),
            Command::Rename { account, new } => setup::rename(&paths, &account, &new),
            Command::Completions { shell } => setup::completions(shell),
            Command::Refresh { accounts, all } => token::refresh(&paths, &accounts, all),
            Command::GitCredential { account, operation } => {
                git::run(&paths, account.as_deref(), &operation)
            }
            Command::SendTest(args) => verify::send_test(&paths, &args),
            Command::Check(args) => verify::check(&paths, &args),
            Command::Whoami { account } => whoami::run(&paths, &account),
            Command::Doctor { account } => doctor::run(&paths, account.as_deref()),
            Command::Proxy {
                hash_password,
                make_certificate,
            } => proxy::run(&paths, hash_password, make_certificate),
            Command::Accounts => setup::accounts(&paths),
            Command::BackgroundLogin { account } => setup::background_login(&paths, &account),
        });
    process::finish(result)
}
