//! Setting an account up and taking it down: `add`, `login`, `logout`, `remove`, `rename`, and
//! `completions`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::{AddArgs, LoginArgs};
use crate::config::{self, Account, Paths};
use crate::error::{server, usage};
use crate::flows;
use crate::provider::Flow;
use crate::store::{AccountLock, Backend, LOCK_TIMEOUT};
use crate::time;

pub fn add(paths: &Paths, args: Box<AddArgs>) -> Result<()> {
    let mut args = *args;
    // Stored as given, a relative path would mean another file for every directory a mail
    // program happens to start mailtoken in.
    for (flag, path) in [
        ("--client-certificate", &mut args.client_certificate),
        ("--client-key", &mut args.client_key),
        ("--tls-ca-file", &mut args.tls_ca_file),
    ] {
        if let Some(p) = path {
            *p = readable_pem(flag, p)?;
        }
    }
    if args.provider == crate::provider::Provider::Generic && args.scopes.is_empty() {
        return Err(usage(
            "a generic provider has no preset scopes: give the ones your server wants with \
             --scope (once per scope), e.g. --scope openid --scope email --scope offline_access \
             and the mail scope it names",
        ));
    }
    let account = Account {
        provider: args.provider,
        user: args.user,
        client_id: args.client_id,
        tenant: args.tenant,
        cloud: args.cloud,
        region: args.region,
        services: args.services,
        scopes: args.scopes,
        flow: args.flow,
        client_secret_env: args.client_secret_env,
        client_secret_file: args.client_secret_file,
        client_secret_command: args.client_secret_command,
        client_certificate: args.client_certificate,
        client_key: args.client_key,
        service_account_key: args
            .service_account_key
            .map(|p| std::path::absolute(&p).unwrap_or(p)),
        redirect_uri: args.redirect_uri,
        issuer: args.issuer,
        device_authorization_endpoint: args.device_authorization_endpoint,
        token_endpoint: args.token_endpoint,
        authorization_endpoint: args.authorization_endpoint,
        token_endpoint_auth_method: args.token_endpoint_auth_method,
        tls_ca_file: args.tls_ca_file,
        imap_host: args.imap_host,
        imap_port: args.imap_port,
        imap_tls: args.imap_tls,
        smtp_host: args.smtp_host,
        smtp_port: args.smtp_port,
        smtp_tls: args.smtp_tls,
        pop_host: args.pop_host,
        pop_port: args.pop_port,
        pop_tls: args.pop_tls,
        ..Account::default()
    };
    if let Some(refusal) = super::doctor::placeholder_refusal(&args.account, &account) {
        return Err(usage(format!("not added: {refusal} (--client-id)")));
    }
    if let Some(refusal) = super::doctor::scope_refusal(&args.account, &account) {
        return Err(usage(format!(
            "not added: {refusal} (flags --flow, --services, --scope)"
        )));
    }
    config::append_account(&paths.config, &args.account, &account)?;
    let next = if account.flow() == Flow::Credentials {
        format!(
            "mailtoken token {} (an app-only account needs no login)",
            args.account
        )
    } else {
        format!("mailtoken login {}", args.account)
    };
    eprintln!(
        "Added account `{}` to {}.\nNext: {next}",
        args.account,
        paths.config.display()
    );
    // Told now, not at the login: the Quick start's `pass show ...` on a machine without pass.
    if let Some(cmd) = &account.client_secret_command
        && !crate::shell::can_find(cmd)
    {
        let program = cmd.split_whitespace().next().unwrap_or(cmd);
        eprintln!(
            "warning: `{program}` is not installed or not on PATH, so the client secret cannot be \
             read until it is (or give the secret with --client-secret-file or \
             --client-secret-env: `mailtoken remove {}` and add it again)",
            args.account
        );
    }
    Ok(())
}

/// An absolute path to a readable PEM file, or the error that says which flag is wrong.
fn readable_pem(flag: &str, path: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(path)
        .with_context(|| format!("{flag} {}: cannot make the path absolute", path.display()))?;
    let text = std::fs::read_to_string(&absolute).map_err(|e| {
        usage(format!(
            "{flag} {}: cannot read it: {e}",
            absolute.display()
        ))
    })?;
    if !text.contains("-----BEGIN ") {
        return Err(usage(format!(
            "{flag} {}: not a PEM file (no -----BEGIN line)",
            absolute.display()
        )));
    }
    Ok(absolute)
}

pub fn login(paths: &Paths, args: &LoginArgs) -> Result<()> {
    let acct = config::open(paths, &args.account)?;
    let name = acct.name.as_str();
    // App-only accounts are set up in the config (flow = "credentials"), not per login: `token`
    // must know to fetch without a refresh token.
    let flow = match (args.device, args.browser) {
        (true, _) => Some(Flow::Device),
        (_, true) => Some(Flow::Browser),
        _ => None,
    };
    if flow.is_some() && acct.account.flow() == Flow::Credentials {
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

/// The background process a dead login starts (`relogin = "device"`): its first line on
/// stdout tells the caller how the login started; the rest of its work nobody watches.
pub fn background_login(paths: &Paths, name: &str) -> Result<()> {
    let acct = config::open(paths, name)?;
    flows::relogin::run(&acct, &mut |word| {
        let _ = super::write_stdout(&format!("{word}\n"), "cannot tell the caller");
    })
}

pub fn logout(paths: &Paths, name: &str) -> Result<()> {
    let acct = config::open(paths, name)?;
    let store = &acct.store;
    let removed = if store.dir().exists() || *store.backend() != Backend::File {
        let _lock = store.lock(name, LOCK_TIMEOUT)?;
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

/// The config and its text, read once: `remove` and `rename` change the text they checked.
fn config_and_text(paths: &Paths) -> Result<(config::Config, String)> {
    let text = match std::fs::read_to_string(&paths.config) {
        Ok(text) => text,
        // `load` says what to do about a missing or unreadable file.
        Err(e) => {
            return Err(config::Config::load(&paths.config)
                .err()
                .unwrap_or(e.into()));
        }
    };
    Ok((config::Config::from_text(&paths.config, &text)?, text))
}

/// The lock of the account's background login: none may be storing tokens under the name
/// while it goes or changes.
fn no_background_login(acct: &config::OpenAccount) -> Result<AccountLock> {
    let name = &acct.name;
    acct.store.relogin_lock(name)?.ok_or_else(|| {
        server(format!(
            "a background login of `{name}` is waiting for approval: approve it or let it end \
             (`mailtoken status {name}` shows it), then try again"
        ))
    })
}

pub fn remove(paths: &Paths, name: &str) -> Result<()> {
    let (config, text) = config_and_text(paths)?;
    let acct = config.open(paths, name)?;
    // Checked before anything is touched: a file that cannot be changed safely stops it here.
    let new_text = config::without_account(&paths.config, &text, name)?;
    let store = &acct.store;
    let config_path = paths.config.display();
    if !store.dir().exists() && *store.backend() == Backend::File {
        config::replace(&paths.config, &new_text)?;
        eprintln!("Removed account `{name}` from {config_path} (it had no stored tokens).");
        return Ok(());
    }
    let _relogin = no_background_login(&acct)?;
    let _lock = store.lock(name, LOCK_TIMEOUT)?;
    let tokens = if store.can_erase() {
        if store.remove(name)? {
            "forgot its tokens (the refresh token stays valid at the provider until it expires \
             or you revoke the app's access there)"
        } else {
            "it had no stored tokens"
        }
    } else {
        store.remove_pending(name)?;
        "its tokens stay where `store_load_command` reads them (there is no \
         `store_erase_command`): remove them yourself"
    };
    config::replace(&paths.config, &new_text)?;
    if let Err(e) = store.remove_derived(name) {
        eprintln!("mailtoken: warning: {e:#}");
    }
    eprintln!("Removed account `{name}` from {config_path}; {tokens}.");
    Ok(())
}

/// Rename an account. The tokens are stored under the new name before the config names it,
/// and the old ones go only after: a crash at any point leaves one of the names working.
pub fn rename(paths: &Paths, old: &str, new: &str) -> Result<()> {
    config::validate_account_name(new).map_err(|e| usage(e.to_string()))?;
    if old == new {
        return Err(usage(format!(
            "the account is already called `{new}`: give another new name"
        )));
    }
    let (config, text) = config_and_text(paths)?;
    let acct = config.open(paths, old)?;
    if config.accounts.contains_key(new) {
        return Err(usage(format!(
            "account `{new}` already exists in {}: pick another name, or `mailtoken remove {new}` first",
            paths.config.display()
        )));
    }
    let new_text = config::renamed_account(&paths.config, &text, old, new)?;
    let store = &acct.store;
    let config_path = paths.config.display();
    if !store.dir().exists() && *store.backend() == Backend::File {
        config::replace(&paths.config, &new_text)?;
        eprintln!("Renamed account `{old}` to `{new}` in {config_path} (it had no stored tokens).");
        return Ok(());
    }
    let _relogin = no_background_login(&acct)?;
    // Both locks, always in the same order: no refresh under either name meanwhile.
    let (first, second) = if old < new { (old, new) } else { (new, old) };
    let _locks = (
        store.lock(first, LOCK_TIMEOUT)?,
        store.lock(second, LOCK_TIMEOUT)?,
    );
    if let Some(rescued) = store.rescued(old).first() {
        return Err(server(format!(
            "newer tokens of `{old}` wait in {}: store them first with `mailtoken token {old} \
             --force-refresh`, then rename",
            rescued.display()
        )));
    }
    if store.has_pending(old) {
        store.replay_pending(old);
        if store.has_pending(old) {
            return Err(server(format!(
                "the tokens of `{old}` wait in {} for {} to take them: fix the store (the \
                 warning above says why), then rename",
                store.pending_path(old).display(),
                store.location(old)
            )));
        }
    }
    // A command store's commands move with the section; the others keep tokens by name.
    let by_name = !matches!(store.backend(), Backend::Command { .. });
    let mut moved = false;
    if by_name {
        let tokens = store.load(old).with_context(|| {
            format!("nothing was renamed: the tokens of `{old}` cannot be read")
        })?;
        match store.load(new) {
            Ok(None) => {}
            // A rename that stopped half way left the same tokens there.
            Ok(Some(there)) if Some(&there) == tokens.as_ref() => {}
            Ok(Some(_)) => {
                return Err(usage(format!(
                    "tokens are already stored under `{new}` ({}), from an earlier account of \
                     that name: remove them, or pick another name",
                    store.location(new)
                )));
            }
            Err(e) => {
                return Err(e.context(format!(
                    "nothing was renamed: cannot tell whether tokens are stored under `{new}`"
                )));
            }
        }
        if let Some(tokens) = &tokens {
            store.save(new, tokens).with_context(|| {
                format!("nothing was renamed: cannot store the tokens as `{new}`")
            })?;
            moved = true;
        }
    }
    store.remove_derived(new)?;
    config::replace(&paths.config, &new_text)?;
    if moved && let Err(e) = store.remove(old) {
        eprintln!(
            "mailtoken: warning: the tokens under the old name are still in {}: {e:#}",
            store.location(old)
        );
    }
    if let Err(e) = store.remove_derived(old) {
        eprintln!("mailtoken: warning: {e:#}");
    }
    let tokens = match (by_name, moved) {
        (true, true) => format!("its tokens moved to {}", store.location(new)),
        (true, false) => "it had no stored tokens".to_string(),
        (false, _) => "its store commands keep its tokens".to_string(),
    };
    eprintln!(
        "Renamed account `{old}` to `{new}` in {config_path}; {tokens}. Use the new name in mail \
         programs and scripts (and as the proxy login, if they log in by name)."
    );
    Ok(())
}

pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut command = <crate::cli::Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "mailtoken", &mut script);
    let script = with_account_names(shell, &String::from_utf8_lossy(&script));
    super::write_stdout(&script, "cannot write the completion script")
}

/// The commands whose arguments are account names.
const TAKE_ACCOUNTS: &str =
    "token login status logout remove rename refresh check send-test whoami doctor";

/// clap's script, completing account names too (asked of `mailtoken accounts` as you type, so
/// a new account is known at once): bash and fish get a wrapper, zsh a completion function.
pub fn with_account_names(shell: clap_complete::Shell, script: &str) -> String {
    use clap_complete::Shell;
    match shell {
        Shell::Bash => format!(
            "{script}
# Account names after the commands that take them, from `mailtoken accounts`.
_mailtoken_with_accounts() {{
    _mailtoken \"$@\"
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    if [[ $cur != -* && $prev != -* && $COMP_CWORD -ge 2 &&
          \" {TAKE_ACCOUNTS} \" == *\" ${{COMP_WORDS[1]}} \"* ]]; then
        COMPREPLY=( $(compgen -W \"$(\"${{COMP_WORDS[0]}}\" accounts 2>/dev/null)\" -- \"$cur\") )
    fi
}}
complete -F _mailtoken_with_accounts -o nosort -o bashdefault -o default mailtoken
"
        ),
        Shell::Zsh => {
            let function = "
# Account names, from `mailtoken accounts`.
_mailtoken_account_names() {
    local -a names
    names=(${(f)\"$(mailtoken accounts 2>/dev/null)\"})
    compadd -a names
}
";
            let script = script
                .replace(":account -- Account name from the config:_default", ":account -- Account name from the config:_mailtoken_account_names")
                .replace("::account -- Only this account:_default", "::account -- Only this account:_mailtoken_account_names")
                .replace("::accounts -- Accounts to refresh:_default", "::accounts -- Accounts to refresh:_mailtoken_account_names");
            script.replacen("autoload -U is-at-least\n", &format!("autoload -U is-at-least\n{function}"), 1)
        }
        Shell::Fish => format!(
            "{script}
# Account names after the commands that take them, from `mailtoken accounts`.
complete -c mailtoken -n \"__fish_seen_subcommand_from {TAKE_ACCOUNTS}\" -f -a \"(mailtoken accounts 2>/dev/null)\"
"
        ),
        _ => script.to_string(),
    }
}

/// The account names, one per line: what the completion scripts offer.
pub fn accounts(paths: &Paths) -> Result<()> {
    let config = config::Config::load(&paths.config)?;
    let names: String = config.accounts.keys().map(|n| format!("{n}\n")).collect();
    super::write_stdout(&names, "cannot write the account names")
}
