//! `proxy`: run the local listeners, or make the hash of a local password for them.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, Result};

use crate::config::Paths;
use crate::error::usage;

pub fn run(paths: &Paths, hash_password: bool, make_certificate: bool) -> Result<()> {
    if make_certificate {
        return certificate(paths);
    }
    if !hash_password {
        return crate::proxy::run(paths);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Type the local password for the proxy (it is not shown), then Enter:");
    }
    let quiet = stdin
        .is_terminal()
        .then(crate::sys::terminal::NoEcho::start);
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(quiet) = quiet {
        drop(quiet);
        // The Enter typed was not echoed either.
        eprintln!();
    }
    read.context("cannot read the password")?;
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

/// `--make-certificate`: the files, then what to put in the config and how to make the mail
/// programs trust it (on stderr: nothing here is a secret meant for a script).
fn certificate(paths: &Paths) -> Result<()> {
    let made = crate::proxy::certificate::make(&paths.data_dir, crate::time::now())?;
    eprintln!(
        "Made a certificate for the proxy (localhost, 127.0.0.1, ::1; valid until {until}):\n  \
         {cert}\n  {key} (its key)\nsigned by a local CA that can vouch for nothing but this \
         machine's own names, and whose key was not kept:\n  {ca}\n\n\
         1. In the config's [proxy] section ({config}):\n  \
         tls_certificate = \"{cert}\"\n  tls_key = \"{key}\"\n  \
         imaps = \"127.0.0.1:1993\"    # TLS from the first byte; the plain listeners offer STARTTLS\n  \
         smtps = \"127.0.0.1:1465\"\n\
         2. Make the mail program trust the CA, for one program:\n  \
         SSL_CERT_FILE={ca} alpine\n\
         or for every program of every user of this machine (Debian, Ubuntu):\n  \
         sudo cp {ca} /usr/local/share/ca-certificates/mailtoken-proxy.crt && sudo update-ca-certificates\n\
         3. Connect to localhost (the name in the certificate) with TLS, e.g. in Alpine:\n  \
         inbox-path={{localhost:1993/ssl/user=ACCOUNT}}INBOX\n\
         Run this again before {until} for a new certificate; restart the proxy after.",
        until = made.valid_until,
        cert = made.certificate.display(),
        key = made.key.display(),
        ca = made.ca.display(),
        config = paths.config.display(),
    );
    Ok(())
}
