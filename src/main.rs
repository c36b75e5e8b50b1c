//! mailtoken: OAuth2 access tokens for mail clients. This file only parses and dispatches.

// Started without Rust's runtime set-up, which costs the cached `token` call a sixth of its
// time; `process::start` does the part of it that matters here.
#![no_main]

use clap::Parser;

use mailtoken::cli::{Cli, Command};
use mailtoken::commands::{doctor, git, proxy, setup, status, token, verify, whoami};
use mailtoken::{config, error, log, process};

#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    process::start();
    process::forbid_core_dumps();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(result) = token::quick(&args) {
        finish(result);
    }
    let cli = Cli::parse_from(args);
    log::set_verbose(cli.verbose);
    let result =
        config::Paths::resolve(cli.config, cli.data_dir).and_then(|paths| match cli.command {
            Command::Add(args) => setup::add(&paths, args),
            Command::Login(args) => setup::login(&paths, &args),
            Command::Token(args) => token::print(&paths, &args),
            Command::Status { account } => status::run(&paths, account.as_deref()),
            Command::Logout { account } => setup::logout(&paths, &account),
            Command::Completions { shell } => setup::completions(shell),
            Command::Refresh { accounts, all } => token::refresh(&paths, &accounts, all),
            Command::GitCredential { account, operation } => {
                git::run(&paths, account.as_deref(), &operation)
            }
            Command::SendTest(args) => verify::send_test(&paths, &args),
            Command::Check(args) => verify::check(&paths, &args),
            Command::Whoami { account } => whoami::run(&paths, &account),
            Command::Doctor { account } => doctor::run(&paths, account.as_deref()),
            Command::Proxy { hash_password } => proxy::run(&paths, hash_password),
            Command::Accounts => setup::accounts(&paths),
        });
    finish(result);
}

/// The only way out: `process::exit` flushes stdout (returning from `main` would not).
fn finish(result: anyhow::Result<()>) -> ! {
    if let Err(err) = result {
        // Errors may quote a server: its control characters are shown, not obeyed.
        eprintln!("mailtoken: {}", log::printable(&format!("{err:#}")));
        std::process::exit(error::exit_code(&err));
    }
    std::process::exit(0)
}
