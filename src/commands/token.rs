//! `token` (print a valid token for a mail program) and `refresh` (renew now, for timers).

use anyhow::Result;

use crate::cli::TokenArgs;
use crate::config::{self, Config, Paths, Want};
use crate::error::{self, Kind};
use crate::output::{self, Sasl};
use crate::provider::Flow;
use crate::time;

pub fn print(paths: &Paths, args: &TokenArgs) -> Result<()> {
    let (config, stamp) = Config::read(&paths.config)?;
    let acct = config.open(paths, &args.account)?;
    // For the next call's quick path (`quick` below).
    config::snapshot::save(paths, &config, &acct.name, stamp.as_ref());
    if let Some(user) = &args.user {
        config::validate_user(user).map_err(|e| error::usage(format!("--user: {e}")))?;
    }
    let sasl = Sasl {
        user: args.user.as_deref().or(acct.account.user.as_deref()),
        host: args.host.as_deref(),
        port: args.port,
    };
    output::require_user(args.format, &sasl)?;
    let want = Want::pick(&acct.account, args.resource.as_deref(), &args.scopes)?;
    let tokens = crate::token::get(&acct, &want, args.force_refresh)?;
    let text = output::render(args.format, &tokens, &sasl)?;
    super::write_stdout(&format!("{text}\n"), "cannot write the token to stdout")
}

/// Refresh each account now and report; the exit code is the worst outcome, so a timer's log
/// and status show which accounts need a person.
pub fn refresh(paths: &Paths, names: &[String], all: bool) -> Result<()> {
    let config = Config::load(&paths.config)?;
    let names: Vec<&str> = if all {
        config.accounts.keys().map(String::as_str).collect()
    } else {
        names.iter().map(String::as_str).collect()
    };
    // None: all went well; Some(None): a local failure; Some(Some(kind)): the worst kind.
    let mut worst: Option<Option<Kind>> = None;
    let mut needs_login = Vec::new();
    for name in names {
        let acct = config.open(paths, name)?;
        if acct.account.flow() == Flow::Credentials {
            eprintln!("{name}: skipped (app-only: no refresh token to keep alive)");
            continue;
        }
        match crate::token::own(&acct, true) {
            Ok(access) => eprintln!(
                "{name}: refreshed; access token valid until {}",
                time::format_utc(access.expires_at)
            ),
            Err(err) => {
                let kind = error::kind(&err);
                // The summary below names the accounts that need a login, once.
                let text = format!("{err:#}");
                let text: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.starts_with("A new login is needed"))
                    .collect();
                eprintln!("{name}: FAILED: {}", text.join("\n"));
                if kind == Some(Kind::LoginNeeded) {
                    needs_login.push(name);
                }
                worst = worst.max(Some(kind));
            }
        }
    }
    if !needs_login.is_empty() {
        eprintln!("A new login is needed for: {}", needs_login.join(", "));
    }
    let summary = "some accounts could not be refreshed (see above)";
    match worst {
        None => Ok(()),
        Some(Some(kind)) => Err(error::failure(kind, summary)),
        // A local failure (a damaged store) is not worth retrying like a network one.
        Some(None) => Err(anyhow::anyhow!(summary)),
    }
}
