//! One module per group of subcommands. Each handler is thin: open the account, call the
//! logic in the lower layers, report. Only the token and report printers write to stdout.

pub mod doctor;
pub mod git;
pub mod proxy;
pub mod setup;
pub mod status;
pub mod token;
pub mod verify;
pub mod whoami;

use std::io::Write;

use anyhow::{Context, Result};

/// Write `text` to stdout in one piece and flush, so a reader gets all of it or an error.
fn write_stdout(text: &str, what: &'static str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context(what)
}
