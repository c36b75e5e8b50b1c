//! One thin function per subcommand: load what it needs, call the logic, report.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::{AddArgs, LoginArgs, TokenArgs};
use crate::config::{self, Account, Config, Paths};
use crate::error::{Kind, usage};
use crate::output::{self, Sasl};
use crate::provider::Flow;
use crate::store::{Backend, Store};
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
        flow: args.flow,
        client_secret_env: args.client_secret_env,
        client_secret_file: args.client_secret_file,
        client_secret_command: args.client_secret_command,
        client_certificate: args.client_certificate,
        client_key: args.client_key,
        redirect_uri: args.redirect_uri,
        issuer: args.issuer,
        device_authorization_endpoint: args.device_authorization_endpoint,
        token_endpoint: args.token_endpoint,
        authorization_endpoint: args.authorization_endpoint,
        ..Account::default()
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

pub fn login(paths: &Paths, args: &LoginArgs) -> Result<()> {
    let name = args.account.as_str();
    let config = Config::load(&paths.config)?;
    let account = config.account(name)?;
    let store = paths.store_for(account);
    // App-only accounts are set up in the config (flow = "credentials"), not per login: `token`
    // must know to fetch without a refresh token.
    let flow = match (args.device, args.browser) {
        (true, _) => Some(Flow::Device),
        (_, true) => Some(Flow::Browser),
        _ => None,
    };
    if flow.is_some() && account.flow() == Flow::Credentials {
        return Err(usage(format!(
            "account `{name}` is app-only (flow = \"credentials\"): it has no user login; `mailtoken login {name}` fetches its token"
        )));
    }
    let options = flows::LoginOptions {
        flow,
        open_browser: !args.no_open,
        open_device_page: args.open,
        qr: !args.no_qr,
        copy_code: !args.no_copy,
        paste: args.paste,
        timeout: Duration::from_secs(args.timeout),
    };
    let acct = AccountRef {
        name,
        account,
        config: &config,
        store: &store,
    };
    let tokens = flows::login(&acct, &options)?;
    let until = tokens
        .access_for(None)
        .or_else(|| tokens.resources.values().next())
        .map(|a| time::format_utc(a.expires_at))
        .unwrap_or_default();
    eprintln!(
        "Logged in account `{name}`. Access token valid until {until}; `mailtoken token {name}` prints it."
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
    let want = token::Want::pick(account, args.resource.as_deref(), &args.scopes)?;
    let store = paths.store_for(account);
    let tokens = token::get(
        &AccountRef {
            name: &args.account,
            account,
            config: &config,
            store: &store,
        },
        &want,
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
    let now = time::now();
    let mut out = String::new();
    for name in names {
        let account = config.account(name)?;
        out.push_str(&status_block(name, account, &paths.store_for(account), now));
    }
    print!("{out}");
    Ok(())
}

fn status_block(name: &str, account: &Account, store: &Store, now: u64) -> String {
    let provider = format!("{:?}", account.provider).to_lowercase();
    let flow = format!("{:?}", account.flow()).to_lowercase();
    let user = account
        .user
        .as_deref()
        .map(|u| format!(", {u}"))
        .unwrap_or_default();
    let mut text = format!(
        "{name} ({provider}{user}, {flow} login)\n  store:         {}\n",
        store.location(name)
    );
    let tokens = match store.load(name) {
        Ok(Some(tokens)) => tokens,
        Ok(None) if account.flow() == Flow::Credentials => {
            text.push_str("  logged in:     app-only; a token is fetched on first use\n");
            return text;
        }
        Ok(None) => {
            text.push_str(&format!(
                "  logged in:     no (run `mailtoken login {name}`)\n"
            ));
            return text;
        }
        Err(e) => {
            text.push_str(&format!("  logged in:     unknown: {e:#}\n"));
            return text;
        }
    };
    let refresh = match (&tokens.refresh_token, account.flow()) {
        (_, Flow::Credentials) => "none needed (app-only)",
        (Some(_), _) => "stored (renews access tokens when needed)",
        (None, _) => "none: a new login is needed once the access token expires",
    };
    text.push_str(&format!(
        "  logged in:     yes\n  refresh token: {refresh}\n"
    ));
    let own = tokens.access_for(None).map(|a| ("access token:  ", a));
    let others = tokens.resources.values().map(|a| ("other token:   ", a));
    for (label, access) in own.into_iter().chain(others) {
        let life = if access.expires_at > now {
            format!(
                "valid until {} (for {})",
                time::format_utc(access.expires_at),
                time::format_span(access.expires_at - now)
            )
        } else {
            format!("expired {} ago", time::format_span(now - access.expires_at))
        };
        text.push_str(&format!(
            "  {label}{life}\n                 scope: {}\n",
            access.scope.as_deref().unwrap_or("-")
        ));
    }
    text
}

pub fn logout(paths: &Paths, name: &str) -> Result<()> {
    let config = Config::load(&paths.config)?;
    let account = config.account(name)?;
    let store = paths.store_for(account);
    let removed = if store.dir().exists() || account.backend() != Backend::File {
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

pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut command = <crate::cli::Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "mailtoken", &mut std::io::stdout());
    Ok(())
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
        let account = config.account(name)?;
        if account.flow() == Flow::Credentials {
            eprintln!("{name}: skipped (app-only: no refresh token to keep alive)");
            continue;
        }
        let store = paths.store_for(account);
        let acct = AccountRef {
            name,
            account,
            config: &config,
            store: &store,
        };
        match token::Want::own(account).and_then(|want| token::get(&acct, &want, true)) {
            Ok(access) => eprintln!(
                "{name}: refreshed; access token valid until {}",
                time::format_utc(access.expires_at)
            ),
            Err(err) => {
                eprintln!("{name}: FAILED: {err:#}");
                let kind = crate::error::kind(&err);
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
        Some(Some(kind)) => Err(crate::error::failure(kind, summary)),
        // A local failure (a damaged store) is not worth retrying like a network one.
        Some(None) => Err(anyhow::anyhow!(summary)),
    }
}

pub fn git_credential(paths: &Paths, named: Option<&str>, operation: &str) -> Result<()> {
    // git also sends store and erase; a token is not something git should keep or forget.
    if operation != "get" {
        return Ok(());
    }
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut input)
        .context("cannot read git's credential request")?;
    let request = crate::gitcred::parse_request(&input);
    let config = Config::load(&paths.config)?;
    let Some(name) = crate::gitcred::pick_account(&config, &request, named) else {
        return Ok(());
    };
    let account = config.account(name)?;
    let store = paths.store_for(account);
    let acct = AccountRef {
        name,
        account,
        config: &config,
        store: &store,
    };
    let access = token::get(&acct, &token::Want::own(account)?, false)?;
    let user = request
        .get("username")
        .map(String::as_str)
        .or(account.user.as_deref());
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(crate::gitcred::answer(user, &access.access_token).as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot answer git")
}
