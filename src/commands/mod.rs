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

use crate::output::write_stdout;
