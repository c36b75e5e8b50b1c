//! `doctor`: look for setup problems without changing anything. Each finding says what is
//! wrong, why it matters, and how to fix it. The checks are plain functions (`checks.rs`, the
//! model in `findings.rs`); this file gathers their inputs (files, modes, the stored tokens,
//! one HEAD request per token server for the clock) and prints the report.

mod checks;
mod findings;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Result, anyhow};

use crate::config::{Account, Config, OpenAccount, Paths};
use crate::http::Http;
use crate::provider::{Flow, Provider};
use crate::store::{self, Tokens};
use crate::time;

pub use checks::*;
pub use findings::{Finding, Severity};

/// What doctor would call an error in an account's flow and scopes, in doctor's words: `add`
/// refuses such an account rather than write it.
pub fn scope_refusal(name: &str, account: &Account) -> Option<String> {
    checks::scope_findings(name, account)
        .into_iter()
        .find(|f| f.severity == Severity::Error)
        .map(|f| f.one_line())
}

/// The placeholder client id of the README's examples, in doctor's words: what `add` refuses
/// before writing, since every login with it is refused.
pub fn placeholder_refusal(name: &str, account: &Account) -> Option<String> {
    checks::placeholder_finding(name, account).map(|f| f.one_line())
}

/// The client secret and certificate, fetched as a refresh would fetch them (the secret is
/// dropped unseen): a locked password store or a moved key is found now, not by the timer.
pub fn credential_findings(name: &str, account: &Account, now: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Err(e) = account.client_secret() {
        out.push(
            Finding::new(Severity::Error, Some(name), format!("{e:#}"))
                .why("the client secret cannot be had, so no token can be fetched")
                .fix("fix the account's client_secret_* setting"),
        );
    }
    if let (Some(cert), Some(key)) = (&account.client_certificate, &account.client_key)
        && let Err(e) = crate::oauth::jwt::client_assertion(
            cert,
            key,
            &account.client_id,
            "https://token-endpoint.invalid/",
            now,
        )
    {
        out.push(
            Finding::new(Severity::Error, Some(name), format!("{e:#}"))
                .why("no client assertion can be signed with the certificate and key")
                .fix("fix `client_certificate` and `client_key`"),
        );
    }
    if let Some(path) = account.service_account_key()
        && let Err(e) = crate::oauth::service_account_assertion(account, &path, now)
    {
        out.push(
            Finding::new(Severity::Error, Some(name), format!("{e:#}"))
                .why("no grant can be signed with the service account key")
                .fix("download a new JSON key for the service account and point `service_account_key` at it"),
        );
    }
    out
}

/// A data directory that cannot be written (read-only, or its mode): tokens would be read,
/// but a refresh could not store the new ones, and a rotated refresh token would be lost.
fn writable_finding(dir: &Path) -> Option<Finding> {
    (!crate::sys::files::writable(dir)).then(|| {
        Finding::new(
            Severity::Error,
            None,
            format!("the token store {} cannot be written", dir.display()),
        )
        .why(
            "every refresh must store the new tokens before it prints one: `mailtoken token` \
             fails once the stored access token expires",
        )
        .fix(format!(
            "`chmod u+w {}` (or remount its file system read-write)",
            dir.display()
        ))
    })
}

/// An account's lock file that is not a regular file of ours: `token` refuses it.
fn lock_finding(name: &str, path: &Path) -> Option<Finding> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    let me = crate::sys::uid();
    let problem = if !meta.file_type().is_file() {
        "is not a regular file".to_string()
    } else if meta.uid() != me {
        format!("belongs to uid {}, not to you (uid {me})", meta.uid())
    } else {
        return None;
    };
    Some(
        Finding::new(
            Severity::Error,
            Some(name),
            format!("the lock file {} {problem}", path.display()),
        )
        .why("a refresh takes that lock first: `mailtoken token` refuses it once a refresh is due")
        .fix(format!(
            "remove it (`rm {}`, as its owner or root); mailtoken makes a new one",
            path.display()
        )),
    )
}

/// Gather and check. Reads only: no file is created, moved or chmod-ed.
pub fn gather(paths: &Paths, only: Option<&str>) -> Vec<Finding> {
    let mut out = Vec::new();
    let text = match std::fs::read_to_string(&paths.config) {
        Ok(text) => text,
        Err(e) => {
            out.push(
                Finding::new(
                    Severity::Error,
                    None,
                    format!("cannot read the config {}: {e}", paths.config.display()),
                )
                .why("the accounts are defined there")
                .fix("create it with `mailtoken add NAME --provider ... --client-id ...`, or pass --config")
                .usage(),
            );
            return out;
        }
    };
    let config = match Config::parse(&text) {
        Ok(c) => c,
        Err(e) => {
            out.push(config_error(&paths.config, &text, &format!("{e:#}")));
            return out;
        }
    };
    let shared = crate::config::shared_config(&paths.config);
    if let Some((problem, fix)) = &shared {
        out.push(
            Finding::new(
                Severity::Error,
                None,
                format!("{} {problem}", paths.config.display()),
            )
            .why(
                "another user could point your accounts at their own servers (and receive your \
                 tokens) or at their commands: mailtoken refuses to use it",
            )
            .fix(fix)
            .usage(),
        );
    }
    if only.is_none() {
        out.extend(proxy_findings(&config));
    }
    let names: Vec<&String> = match only {
        Some(name) => match config.accounts.get_key_value(name) {
            Some((k, _)) => vec![k],
            None => {
                out.push(
                    Finding::new(Severity::Error, Some(name), "no such account in the config")
                        .fix("check the name with `mailtoken status`")
                        .usage(),
                );
                return out;
            }
        },
        None => config.accounts.keys().collect(),
    };

    let dir = &paths.data_dir;
    // No store yet is fine here: each account below then says it is not logged in.
    if let Ok(meta) = std::fs::metadata(dir) {
        out.extend(mode_finding(dir, meta.permissions().mode(), true));
        out.extend(writable_finding(dir));
    }
    let now = time::now();
    let mut servers = BTreeSet::new();
    for name in names {
        let acct = match config.open(paths, name) {
            Ok(acct) => acct,
            Err(e) => {
                out.push(Finding::new(Severity::Error, Some(name), format!("{e:#}")).usage());
                continue;
            }
        };
        out.extend(placeholder_finding(name, &acct.account));
        out.extend(relogin_finding(&acct));
        out.extend(scope_findings(name, &acct.account));
        out.extend(lock_finding(name, &acct.store.lock_path(name)));
        for rescued in acct.store.rescued(name) {
            out.push(
                Finding::new(
                    Severity::Warning,
                    Some(name),
                    format!("newer tokens were rescued to {}", rescued.display()),
                )
                .why("a refresh could not store them after the server had rotated the refresh token: they hold the live login")
                .fix(format!(
                    "the next refresh stores them (`mailtoken token {name} --force-refresh`), once the token store can be written"
                )),
            );
        }
        out.extend(ca_file_findings(name, &acct.account));
        // Commands named by a file others can write are not run, here either.
        let commands = shared.is_none();
        if commands {
            out.extend(credential_findings(name, &acct.account, now));
        }
        servers.extend(token_server(&acct.account).map(|url| (url, acct.account.tls_ca_file())));
        match acct.store.backend() {
            store::Backend::File => out.extend(stored_findings(&acct, now)),
            store::Backend::Command { .. } if !commands => {}
            _ => out.extend(backend_findings(&acct, now)),
        }
    }
    // A server that cannot be reached is said once, whatever else would have asked it.
    let mut unreachable = BTreeSet::new();
    for (url, ca_file) in servers {
        let host = crate::http::host_of(&url).to_string();
        if unreachable.contains(&host) {
            continue;
        }
        match Http::new(ca_file.as_deref()) {
            Ok(http) => match http.server_date(&url) {
                Ok(Some(date)) => out.extend(skew_finding(&url, now, &date)),
                Ok(None) => {}
                Err(e) if crate::error::kind(&e) == Some(crate::error::Kind::Server) => {
                    out.push(unreachable_finding(&host, &format!("{e:#}")));
                    unreachable.insert(host);
                }
                Err(e) => out.push(Finding::new(Severity::Warning, None, format!("{e:#}"))),
            },
            Err(e) => out.push(Finding::new(Severity::Warning, None, format!("{e:#}"))),
        }
    }
    out
}

/// A token server that cannot be reached, in one line: the network (or the server) is down,
/// and what needs none was checked all the same.
pub fn unreachable_finding(host: &str, cause: &str) -> Finding {
    Finding::new(
        Severity::Warning,
        None,
        format!(
            "cannot reach {host} ({cause}): offline, or the server is down; the rest was checked \
             offline, and `mailtoken token` needs it to refresh"
        ),
    )
}

/// Keyring and command stores: no modes or file times to judge, only what they hold.
fn backend_findings(acct: &OpenAccount, now: u64) -> Vec<Finding> {
    let OpenAccount {
        name,
        account,
        store,
        ..
    } = acct;
    match store.load(name) {
        Ok(Some(tokens)) => match refused_finding(acct, &tokens) {
            Some(refused) => vec![refused],
            None => token_findings(name, account, &tokens, now),
        },
        Ok(None) if account.flow() == Flow::Credentials => Vec::new(),
        Ok(None) => vec![
            Finding::new(Severity::Error, Some(name), "not logged in")
                .why(format!("{} holds no tokens", store.location(name)))
                .fix(login_fix(name, account)),
        ],
        Err(e) => vec![
            Finding::new(Severity::Error, Some(name), format!("{e:#}"))
                .why("no token can be read from the store")
                .fix("check the store settings of the account"),
        ],
    }
}

fn stored_findings(acct: &OpenAccount, now: u64) -> Vec<Finding> {
    let OpenAccount {
        name,
        account,
        store,
        ..
    } = acct;
    let mut out = Vec::new();
    let path = store.token_path(name);
    let (bytes, meta) = match store.inspect_file(name) {
        Ok(Some(found)) => found,
        Err(e) => {
            out.push(
                Finding::new(Severity::Error, Some(name), format!("{e:#}"))
                    .why("no token can be read from it")
                    .fix(format!(
                        "move it aside (it may hold the only refresh token) and `mailtoken login {name}`"
                    )),
            );
            return out;
        }
        Ok(None) if account.flow() == Flow::Credentials => return out,
        Ok(None) => {
            out.push(
                Finding::new(Severity::Error, Some(name), "not logged in")
                    .why(format!("there is no token file {}", path.display()))
                    .fix(login_fix(name, account)),
            );
            return out;
        }
    };
    if let Some(mut f) = mode_finding(&path, meta.permissions().mode(), false) {
        f.account = Some(name.to_string());
        out.push(f);
    }
    let tokens = match store::parse(&bytes) {
        Ok(t) => t,
        Err(e) => {
            out.push(
                Finding::new(
                    Severity::Error,
                    Some(name),
                    format!("the token file {} is damaged: {e:#}", path.display()),
                )
                .why("no token can be read from it")
                .fix(format!(
                    "move it aside (it may hold the only refresh token) and `mailtoken login {name}`"
                )),
            );
            return out;
        }
    };
    if let Some(refused) = refused_finding(acct, &tokens) {
        out.push(refused);
        return out;
    }
    out.extend(token_findings(name, account, &tokens, now));
    if account.provider == Provider::Microsoft && tokens.refresh_token.is_some() {
        let written = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        out.extend(inactivity_finding(name, written, now));
    }
    out
}

/// The provider refused the stored refresh token (noted by the refresh that met it): the
/// login is dead whatever else the tokens say.
fn refused_finding(acct: &OpenAccount, tokens: &Tokens) -> Option<Finding> {
    let name = &acct.name;
    let refused = acct
        .store
        .refused_login(name, tokens.refresh_token.as_deref()?)?;
    Some(
        Finding::new(
            Severity::Error,
            Some(name),
            "the provider refused the stored login",
        )
        .why(refused.lines().next().unwrap_or("").to_string())
        .fix(refused_fix(name, &acct.account, &refused)),
    )
}

pub fn run(paths: &Paths, only: Option<&str>) -> Result<()> {
    let findings = gather(paths, only);
    let mut out = format!(
        "config {}\nstore  {}\n",
        paths.config.display(),
        paths.data_dir.display()
    );
    for f in &findings {
        out.push_str(&format!("\n{f}"));
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    if findings.is_empty() {
        out.push_str("\nNo problems found.\n");
    } else {
        out.push_str(&format!("\n{errors} error(s), {warnings} warning(s).\n"));
    }
    print!("{out}");
    let message = format!("doctor found {errors} error(s): fix them as described above");
    // A config that does not load or an unknown account: exit 2, as every command says it.
    if findings
        .iter()
        .any(|f| f.usage && f.severity == Severity::Error)
    {
        return Err(crate::error::usage(message));
    }
    if errors > 0 {
        return Err(anyhow!(message));
    }
    Ok(())
}
