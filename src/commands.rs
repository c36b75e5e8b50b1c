//! One thin function per subcommand: load what it needs, call the logic, report.

use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::{AddArgs, TokenArgs};
use crate::config::{self, Account, Config, Paths};
use crate::error::usage;
use crate::output::{self, Sasl};
use crate::store::Store;
use crate::token::{self, AccountRef};
use crate::{flows, time};

pub fn add(paths: &Paths, args: Box<AddArgs>) -> Result<()> {
    let args = *args;
    let account = Account {
        provider: args.provider,
        user: args.user,
        client_id: args.client_id,
        tenant: args.tenant,
        services: args.services,
        scopes: args.scopes,
        client_secret_env: args.client_secret_env,
        client_secret_file: args.client_secret_file,
        client_secret_command: args.client_secret_command,
        issuer: args.issuer,
        device_authorization_endpoint: args.device_authorization_endpoint,
        token_endpoint: args.token_endpoint,
        authorization_endpoint: args.authorization_endpoint,
        refresh_margin: None,
    };
    config::append_account(&paths.config, &args.account, &account)?;
    eprintln!(
        "Added account `{}` to {}.\nNext: mailtoken login {}",
        args.account,
        paths.config.display(),
        args.account
    );
    Ok(())
}

pub fn login(paths: &Paths, name: &str) -> Result<()> {
    let config = Config::load(&paths.config)?;
    let account = config.account(name)?;
    let store = Store::new(paths.data_dir.clone());
    let tokens = flows::device_login(&AccountRef {
        name,
        account,
        config: &config,
        store: &store,
    })?;
    eprintln!(
        "Logged in account `{name}`. Access token valid until {}; `mailtoken token {name}` prints it.",
        time::format_utc(tokens.expires_at)
    );
    Ok(())
}

pub fn token(paths: &Paths, args: &TokenArgs) -> Result<()> {
    let config = Config::load(&paths.config)?;
    let account = config.account(&args.account)?;
    let sasl = Sasl {
        user: args.user.as_deref().or(account.user.as_deref()),
        host: args.host.as_deref(),
        port: args.port,
    };
    if output::needs_user(args.format) && sasl.user.is_none() {
        return Err(usage(
            "this format needs a user: set `user` in the account or pass --user",
        ));
    }
    let store = Store::new(paths.data_dir.clone());
    let tokens = token::get(
        &AccountRef {
            name: &args.account,
            account,
            config: &config,
            store: &store,
        },
        args.force_refresh,
    )?;
    let mut text = output::render(args.format, &tokens, &sasl)?;
    text.push('\n');
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write the token to stdout")
}

pub fn status(paths: &Paths, only: Option<&str>) -> Result<()> {
    let config = Config::load(&paths.config)?;
    let names: Vec<&str> = match only {
        Some(name) => {
            config.account(name)?;
            vec![name]
        }
        None => config.accounts.keys().map(String::as_str).collect(),
    };
    if names.is_empty() {
        eprintln!(
            "No accounts in {}. Add one with `mailtoken add`.",
            paths.config.display()
        );
        return Ok(());
    }
    let store = Store::new(paths.data_dir.clone());
    let now = time::now();
    let mut out = String::new();
    for name in names {
        let account = config.account(name)?;
        out.push_str(&status_block(name, account, &store, now));
    }
    print!("{out}");
    Ok(())
}

fn status_block(name: &str, account: &Account, store: &Store, now: u64) -> String {
    let provider = format!("{:?}", account.provider).to_lowercase();
    let mut text = format!(
        "{name} ({provider}{})\n  store:         {}\n",
        account
            .user
            .as_deref()
            .map(|u| format!(", {u}"))
            .unwrap_or_default(),
        store.token_path(name).display()
    );
    match store.load(name) {
        Ok(None) => text.push_str(&format!(
            "  logged in:     no (run `mailtoken login {name}`)\n"
        )),
        Err(e) => text.push_str(&format!("  logged in:     unknown: {e:#}\n")),
        Ok(Some(t)) => {
            let access = if t.expires_at > now {
                format!(
                    "valid until {} (for {})",
                    time::format_utc(t.expires_at),
                    time::format_span(t.expires_at - now)
                )
            } else {
                format!("expired {} ago", time::format_span(now - t.expires_at))
            };
            let refresh = if t.refresh_token.is_some() {
                "stored (renews the access token when needed)"
            } else {
                "none: a new login is needed once the access token expires"
            };
            text.push_str(&format!(
                "  logged in:     yes\n  access token:  {access}\n  refresh token: {refresh}\n  scope:         {}\n",
                t.scope.as_deref().unwrap_or("-")
            ));
        }
    }
    text
}

pub fn logout(paths: &Paths, name: &str) -> Result<()> {
    let config = Config::load(&paths.config)?;
    config.account(name)?;
    let store = Store::new(paths.data_dir.clone());
    let removed = if store.dir().exists() {
        let _lock = store.lock(name, token::LOCK_TIMEOUT)?;
        store.remove(name)?
    } else {
        false
    };
    if removed {
        eprintln!(
            "Forgot the tokens of `{name}`. The refresh token stays valid at the provider until it \
             expires or you revoke the app's access there."
        );
    } else {
        eprintln!("Account `{name}` had no stored tokens.");
    }
    Ok(())
}
