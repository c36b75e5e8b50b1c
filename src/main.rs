//! mailtoken: OAuth2 access tokens for mail clients. This file only parses and dispatches.

mod cli;
mod commands;
mod config;
mod error;
mod flows;
mod http;
mod lock;
mod log;
mod oauth;
mod output;
mod provider;
mod sasl;
mod store;
mod time;
mod token;

use clap::Parser;

use cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    log::set_verbose(cli.verbose);
    let result =
        config::Paths::resolve(cli.config, cli.data_dir).and_then(|paths| match cli.command {
            Command::Add(args) => commands::add(&paths, args),
            Command::Login { account } => commands::login(&paths, &account),
            Command::Token(args) => commands::token(&paths, &args),
            Command::Status { account } => commands::status(&paths, account.as_deref()),
            Command::Logout { account } => commands::logout(&paths, &account),
        });
    if let Err(err) = result {
        eprintln!("mailtoken: {err:#}");
        std::process::exit(error::exit_code(&err));
    }
}
