//! `status`: each account's login state and token lifetimes, on stdout, never a secret.

use anyhow::Result;

use crate::config::{Account, Config, Paths};
use crate::provider::Flow;
use crate::store::{AccessToken, Store};
use crate::time;

pub fn run(paths: &Paths, only: Option<&str>) -> Result<()> {
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
    let mut unreadable = Vec::new();
    for name in names {
        let acct = config.open(paths, name)?;
        let (block, readable) = status_block(name, &acct.account, &acct.store, acct.margin, now);
        out.push_str(&block);
        if !readable {
            unreadable.push(name);
        }
    }
    print!("{out}");
    // A store that cannot be read is a problem to fix, not a state to report with success.
    if !unreadable.is_empty() {
        return Err(anyhow::anyhow!(
            "the tokens of {} cannot be read (see above)",
            unreadable.join(", ")
        ));
    }
    Ok(())
}

/// The account's report, and whether its tokens could be read.
fn status_block(
    name: &str,
    account: &Account,
    store: &Store,
    margin: u64,
    now: u64,
) -> (String, bool) {
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
            return (text, true);
        }
        Ok(None) => {
            text.push_str(&format!(
                "  logged in:     no (run `mailtoken login {name}`)\n"
            ));
            return (text, true);
        }
        Err(e) => {
            text.push_str(&format!("  logged in:     unknown: {e:#}\n"));
            return (text, false);
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
            "  {label}{life}\n                 scope: {}\n                 renewed {}\n",
            access.scope.as_deref().unwrap_or("-"),
            renewal(access, margin)
        ));
    }
    (text, true)
}

/// When a token is renewed: its margin, and why when that is less than the configured one.
fn renewal(access: &AccessToken, margin: u64) -> String {
    let applied = access.margin(margin);
    match access.lifetime() {
        Some(life) if applied < margin => format!(
            "{} before it expires (half its {} life; refresh_margin is {})",
            time::format_span(applied),
            time::format_span(life),
            time::format_span(margin)
        ),
        _ => format!("{} before it expires", time::format_span(applied)),
    }
}
