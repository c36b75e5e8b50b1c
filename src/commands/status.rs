//! `status`: each account's login state and token lifetimes, on stdout, never a secret.

use anyhow::Result;

use crate::config::{Account, Config, Paths};
use crate::provider::Flow;
use crate::store::{AccessToken, Store, Tokens};
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
    if let Some(refusal) = &config.unsafe_file {
        eprintln!("mailtoken: {refusal}\nNo account is used until then; status only looks.");
    }
    let now = time::now();
    let mut out = String::new();
    let mut unreadable = Vec::new();
    for name in names {
        let acct = config.look(paths, name)?;
        let (block, readable) = if config.unsafe_file.is_some()
            && matches!(acct.store.backend(), crate::store::Backend::Command { .. })
        {
            // The store's command comes from the file others can write: not run.
            (
                format!(
                    "{name}\n  store:         {}\n  logged in:     unknown (its load command is not run from this config)\n",
                    acct.store.location(name)
                ),
                true,
            )
        } else {
            status_block(name, &acct.account, &acct.store, acct.margin, now)
        };
        out.push_str(&block);
        if let Some(waiting) = crate::flows::relogin::waiting(&acct) {
            out.push_str(&waiting_line(&waiting, now));
        }
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

/// A background login's line (`relogin = "device"`): where it waits for the person.
fn waiting_line(waiting: &crate::flows::relogin::Waiting, now: u64) -> String {
    format!(
        "  new login:     waiting for approval at {} with the code {}, {} left\n",
        crate::log::printable(
            waiting
                .verification_uri_complete
                .as_deref()
                .unwrap_or(&waiting.verification_uri)
        ),
        crate::log::printable(&waiting.user_code),
        time::format_span(waiting.expires_at.saturating_sub(now))
    )
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
    for rescued in store.rescued(name) {
        text.push_str(&format!(
            "  RESCUED:       {} holds newer tokens that could not be stored; the next \
             refresh stores them (or: mv {} {})\n",
            rescued.display(),
            rescued.display(),
            store.token_path(name).display()
        ));
    }
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
    if let Some(refused) = tokens
        .refresh_token
        .as_deref()
        .and_then(|rt| store.refused_login(name, rt))
    {
        let said = refused.lines().next().unwrap_or("").to_string();
        text.push_str(&format!(
            "  logged in:     no: the provider refused the login (run `mailtoken login {name}`)\n  \
             it said:       {}\n",
            crate::log::printable(&said)
        ));
        return (text, true);
    }
    let refresh = match (&tokens.refresh_token, account.flow()) {
        (_, Flow::Credentials) => "none needed (app-only)".to_string(),
        (Some(_), _) => format!(
            "stored (renews access tokens when needed){}",
            refresh_token_age(&tokens, account, now)
        ),
        (None, _) => "none: a new login is needed once the access token expires".to_string(),
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

/// How old the refresh token is, when it was last used, how long the provider lets a login go
/// unused (the nudge to keep `mailtoken refresh --all` on a timer), and when the login ends
/// whatever its use, where that is known.
pub fn refresh_token_age(tokens: &Tokens, account: &Account, now: u64) -> String {
    let ago = |t: u64| format!("{} ago", time::format_span(now.saturating_sub(t)));
    let mut text = match (tokens.refresh_token_at, tokens.refresh_token_used_at()) {
        (Some(given), Some(used)) if used > given => {
            format!(
                "\n                 received {}, last used {}",
                ago(given),
                ago(used)
            )
        }
        (Some(given), _) => format!("\n                 received {}, not used since", ago(given)),
        (None, Some(used)) => format!("\n                 last used {}", ago(used)),
        (None, None) => String::new(),
    };
    let limit = crate::provider::login_limit(account.provider);
    if let Some(limit) = limit {
        text.push_str(&format!(
            "\n                 ({limit}; a timer running `mailtoken refresh --all` keeps it in use)"
        ));
    }
    if let Some(end) = tokens.login_end(account.login_lifetime_days) {
        text.push_str(&format!(
            "\n                 the login {}",
            end.describe(now)
        ));
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Provider;

    #[test]
    fn the_refresh_token_age_and_the_provider_limit_are_shown() {
        let now = 1_800_000_000;
        let of = |provider| Account {
            provider,
            ..Account::default()
        };
        let mut tokens = Tokens::empty();
        tokens.refresh_token = Some("rt".into());
        tokens.refresh_token_at = Some(now - 12 * 86_400);
        tokens.refreshed_at = Some(now - 2 * 3600);
        let google = refresh_token_age(&tokens, &of(Provider::Google), now);
        assert!(
            google.contains("received 12 d 0 h ago, last used 2 h 0 min ago"),
            "{google}"
        );
        assert!(google.contains("7 days for an app in Testing"), "{google}");
        let microsoft = refresh_token_age(&tokens, &of(Provider::Microsoft), now);
        assert!(microsoft.contains("unused for 90 days"), "{microsoft}");
        tokens.refreshed_at = None;
        let generic = refresh_token_age(&tokens, &of(Provider::Generic), now);
        assert_eq!(generic.trim(), "received 12 d 0 h ago, not used since");
        // A file from before the dates were kept: nothing made up.
        let old = refresh_token_age(&Tokens::empty(), &of(Provider::Generic), now);
        assert_eq!(old, "");
        // A known end: the server's, else the configured lifetime's, whichever comes first.
        tokens.refresh_token_ends_at = Some(now + 3 * 86_400);
        let said = refresh_token_age(&tokens, &of(Provider::Google), now);
        assert!(said.contains("the login ends in 3 d 0 h ("), "{said}");
        assert!(said.contains(" UTC, as the token server said)"), "{said}");
        tokens.logged_in_at = Some(now - 6 * 86_400);
        let testing = Account {
            login_lifetime_days: Some(7),
            ..of(Provider::Google)
        };
        let configured = refresh_token_age(&tokens, &testing, now);
        assert!(configured.contains("ends in 1 d 0 h ("), "{configured}");
        assert!(
            configured.contains(" UTC, by login_lifetime_days)"),
            "{configured}"
        );
    }
}
