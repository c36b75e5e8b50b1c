//! `proxy`: run the local listeners, or make the hash of a local password for them.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, Result};

use crate::config::Paths;
use crate::error::usage;

pub fn run(paths: &Paths, hash_password: bool) -> Result<()> {
    if !hash_password {
        return crate::proxy::run(paths);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Type the local password for the proxy (it is not shown), then Enter:");
    }
    let _quiet = stdin.is_terminal().then(NoEcho::start);
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(usage("the password is empty"));
    }
    let hash = crate::proxy::hash_password(password)?;
    super::write_stdout(&format!("{hash}\n"), "cannot write the hash to stdout")?;
    eprintln!(
        "Put it in the config: [proxy] password_hash = \"...\" (it is a hash, not the password)."
    );
    Ok(())
}

/// The terminal's echo turned off while the password is typed, and back on afterwards.
struct NoEcho(libc::termios);

impl NoEcho {
    fn start() -> NoEcho {
        // SAFETY: tcgetattr/tcsetattr on stdin with a termios value they fill and read.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            libc::tcgetattr(libc::STDIN_FILENO, &mut saved);
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet);
            NoEcho(saved)
        }
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `start`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
        }
        eprintln!();
    }
}
