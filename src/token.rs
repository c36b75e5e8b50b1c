//! Handing out a valid access token: the cached one while it has life left, otherwise one
//! refresh (or app-only fetch) under the account lock, stored before it is printed.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::{Account, Config};
use crate::error::{login_needed, usage};
use crate::http::Http;
use crate::log::debug;
use crate::oauth;
use crate::provider::{Flow, Provider};
use crate::store::{AccessToken, Store, Tokens, fingerprint};
use crate::time;

/// Longer than the slowest refresh (connect + request timeouts), so a waiter does not give up
/// on a process that is still legitimately working.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy)]
pub struct AccountRef<'a> {
    pub name: &'a str,
    pub account: &'a Account,
    pub config: &'a Config,
    pub store: &'a Store,
}

/// Which access token is wanted: the account's own (`key` None) or one for other scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub key: Option<String>,
    pub scopes: Vec<String>,
}

impl Want {
    pub fn own(account: &Account) -> Result<Want> {
        Ok(Want {
            key: None,
            scopes: account.scopes()?,
        })
    }

    /// From `--resource NAME` or `--scope S...`; either may name the account's own scopes.
    pub fn pick(account: &Account, resource: Option<&str>, scopes: &[String]) -> Result<Want> {
        let mut wanted = match resource {
            Some(name) => account.resources.get(name).cloned().ok_or_else(|| {
                let known: Vec<&str> = account.resources.keys().map(String::as_str).collect();
                usage(format!(
                    "the account has no resource `{name}` (known: {}); add it under [accounts.NAME.resources]",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ))
            })?,
            None if scopes.is_empty() => return Want::own(account),
            None => scopes.to_vec(),
        };
        // Microsoft only returns a refresh token (often a rotated one) when asked for it.
        if account.provider == Provider::Microsoft
            && account.flow() != Flow::Credentials
            && !wanted.iter().any(|s| s == "offline_access")
        {
            wanted.push("offline_access".into());
        }
        let own = account.scopes()?;
        if same_scopes(&wanted, &own) {
            return Want::own(account);
        }
        Ok(Want {
            key: Some(wanted.join(" ")),
            scopes: wanted,
        })
    }
}

fn same_scopes(a: &[String], b: &[String]) -> bool {
    let mut a: Vec<&String> = a.iter().collect();
    let mut b: Vec<&String> = b.iter().collect();
    a.sort();
    b.sort();
    a == b
}

/// A valid access token for the account, refreshing it if needed (or if `force`).
pub fn get(acct: &AccountRef, want: &Want, force: bool) -> Result<AccessToken> {
    let AccountRef {
        name,
        account,
        config,
        store,
    } = *acct;
    let margin = config.refresh_margin(account);
    let key = want.key.as_deref();
    let app_only = account.flow() == Flow::Credentials;

    // The cached path: one read of a file that is only ever replaced whole, so no lock.
    let seen = store.load(name)?;
    let seen_access = seen.as_ref().and_then(|t| t.access_for(key)).cloned();
    if let Some(access) = &seen_access
        && !force
        && access.is_fresh(time::now(), margin)
    {
        debug!(
            "using cached access token {} ({} left)",
            fingerprint(&access.access_token),
            time::format_span(access.expires_at.saturating_sub(time::now()))
        );
        return Ok(access.clone());
    }
    if seen.is_none() && !app_only {
        return Err(login_needed(
            name,
            format!("account `{name}` has no stored login"),
        ));
    }

    debug!("new token due; taking the lock for `{name}`");
    let _lock = store.lock(name, LOCK_TIMEOUT)?;
    let current = match store.load(name)? {
        Some(tokens) => tokens,
        None if app_only => Tokens::empty(),
        None => {
            return Err(login_needed(
                name,
                format!("account `{name}` was logged out meanwhile"),
            ));
        }
    };
    // Another process may have refreshed while we waited: its token is as good as ours would
    // be, and refreshing again could race a rotating server.
    if let Some(access) = current.access_for(key)
        && access.is_fresh(time::now(), margin)
        && (!force || Some(access) != seen_access.as_ref())
    {
        debug!(
            "another process refreshed meanwhile; using {}",
            fingerprint(&access.access_token)
        );
        return Ok(access.clone());
    }
    // Made ready before the request: finding the store unwritable after a rotating server
    // has answered would lose the refresh token it just revoked.
    let pending = store.prepare(name)?;
    let (access, rotated) = if app_only {
        fetch_app_only(acct, want)?
    } else {
        refresh(acct, &current, want)?
    };
    debug!(
        "stored new access token {}{}",
        fingerprint(&access.access_token),
        if rotated.is_some() {
            " and a rotated refresh token"
        } else {
            ""
        }
    );
    let mut updated = current;
    updated.update(key, access.clone(), rotated);
    store.commit(name, pending, &updated)?;
    Ok(access)
}

/// Ask the server for a new access token with the refresh token. The store is not touched
/// here: on any error the caller keeps what it had.
fn refresh(
    acct: &AccountRef,
    current: &Tokens,
    want: &Want,
) -> Result<(AccessToken, Option<String>)> {
    let AccountRef { name, account, .. } = *acct;
    let refresh_token = current.refresh_token.as_deref().ok_or_else(|| {
        login_needed(
            name,
            "the access token expired and the stored login has no refresh token \
             (the server sent none: is offline_access among the scopes?)",
        )
    })?;
    let http = Http::new()?;
    let token_endpoint = token_endpoint(&http, acct)?;
    let client = oauth::Client::for_account(account, &token_endpoint)?;
    let scope = want.scopes.join(" ");
    debug!(
        "refreshing at {token_endpoint} with refresh token {}",
        fingerprint(refresh_token)
    );
    let sent_at = time::now();
    let reply = oauth::refresh(&http, &token_endpoint, &client, refresh_token, &scope)
        .with_context(|| format!("account `{name}`"))?
        .map_err(|e| e.into_error("refreshing the access token", account.provider, name))?;
    Ok(reply.into_access(sent_at, &scope))
}

/// Client credentials have no refresh token: a new token is simply asked for.
fn fetch_app_only(acct: &AccountRef, want: &Want) -> Result<(AccessToken, Option<String>)> {
    let AccountRef { name, account, .. } = *acct;
    let http = Http::new()?;
    let token_endpoint = token_endpoint(&http, acct)?;
    let client = oauth::Client::for_account(account, &token_endpoint)?;
    let scope = want.scopes.join(" ");
    debug!("fetching an app-only token at {token_endpoint}");
    let sent_at = time::now();
    let reply = oauth::client_credentials(&http, &token_endpoint, &client, &scope)
        .with_context(|| format!("account `{name}`"))?
        .map_err(|e| {
            let mut err = e;
            // With client credentials there is no login to redo: a refusal is a setup problem.
            if err.error == "invalid_grant" {
                err.error = "invalid_client".into();
            }
            err.into_error("fetching an app-only token", account.provider, name)
        })?;
    let (access, _) = reply.into_access(sent_at, &scope);
    Ok((access, None))
}

fn token_endpoint(http: &Http, acct: &AccountRef) -> Result<String> {
    let AccountRef { name, account, .. } = *acct;
    oauth::endpoints(http, account)?.token.ok_or_else(|| {
        usage(format!(
            "account `{name}` has no token endpoint: set `token_endpoint` or `issuer`"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn microsoft() -> Account {
        let config = Config::parse(
            r#"
[accounts.work]
provider = "microsoft"
client_id = "id"
[accounts.work.resources]
graph = ["https://graph.microsoft.com/Mail.Send"]
"#,
        )
        .unwrap();
        config.accounts["work"].clone()
    }

    #[test]
    fn named_resources_get_their_own_key_with_offline_access() {
        let a = microsoft();
        let w = Want::pick(&a, Some("graph"), &[]).unwrap();
        assert_eq!(
            w.key.as_deref(),
            Some("https://graph.microsoft.com/Mail.Send offline_access")
        );
        assert!(Want::pick(&a, Some("nope"), &[]).is_err());
        assert_eq!(Want::pick(&a, None, &[]).unwrap(), Want::own(&a).unwrap());
    }

    #[test]
    fn asking_for_the_own_scopes_in_any_order_is_the_own_token() {
        let a = microsoft();
        let mut own = a.scopes().unwrap();
        own.reverse();
        assert_eq!(Want::pick(&a, None, &own).unwrap().key, None);
    }
}
