//! mailtoken: OAuth2 access tokens for mail clients. This file only parses and dispatches.

use clap::Parser;

use mailtoken::cli::{Cli, Command};
use mailtoken::{commands, config, error, log, mailcmd};

fn main() {
    let cli = Cli::parse();
    log::set_verbose(cli.verbose);
    let result =
        config::Paths::resolve(cli.config, cli.data_dir).and_then(|paths| match cli.command {
            Command::Add(args) => commands::add(&paths, args),
            Command::Login(args) => commands::login(&paths, &args),
            Command::Token(args) => commands::token(&paths, &args),
            Command::Status { account } => commands::status(&paths, account.as_deref()),
            Command::Logout { account } => commands::logout(&paths, &account),
            Command::Completions { shell } => commands::completions(shell),
            Command::Refresh { accounts, all } => commands::refresh(&paths, &accounts, all),
            Command::GitCredential { account, operation } => {
                commands::git_credential(&paths, account.as_deref(), &operation)
            }
            Command::SendTest(args) => mailcmd::send_test(&paths, &args),
            Command::Check(args) => mailcmd::check(&paths, &args),
            Command::Whoami { account } => mailcmd::whoami(&paths, &account),
            Command::Doctor { account } => mailcmd::doctor(&paths, account.as_deref()),
        });
    if let Err(err) = result {
        eprintln!("mailtoken: {err:#}");
        std::process::exit(error::exit_code(&err));
    }
}
