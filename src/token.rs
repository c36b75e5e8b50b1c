//! Handing out a valid access token: the cached one while it has life left, otherwise one
//! refresh under the account lock, stored before it is printed.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::{Account, Config};
use crate::error::{login_needed, usage};
use crate::http::Http;
use crate::log::debug;
use crate::oauth;
use crate::store::{Store, Tokens, fingerprint};
use crate::time;

/// Longer than the slowest refresh (connect + request timeouts), so a waiter does not give up
/// on a process that is still legitimately working.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(120);

pub struct AccountRef<'a> {
    pub name: &'a str,
    pub account: &'a Account,
    pub config: &'a Config,
    pub store: &'a Store,
}

/// A valid access token for the account, refreshing it if needed (or if `force`).
pub fn get(acct: &AccountRef, force: bool) -> Result<Tokens> {
    let AccountRef {
        name,
        account,
        config,
        store,
    } = *acct;
    let margin = config.refresh_margin(account);

    // The cached path: one read of a file that is only ever replaced whole, so no lock.
    let seen = store.load(name)?;
    let Some(seen) = seen else {
        return Err(login_needed(
            name,
            format!("account `{name}` has no stored login"),
        ));
    };
    if !force && seen.is_fresh(time::now(), margin) {
        debug!(
            "using cached access token {} ({} left)",
            fingerprint(&seen.access_token),
            time::format_span(seen.expires_at.saturating_sub(time::now()))
        );
        return Ok(seen);
    }

    debug!("refresh due; taking the lock for `{name}`");
    let _lock = store.lock(name, LOCK_TIMEOUT)?;
    let current = store
        .load(name)?
        .ok_or_else(|| login_needed(name, format!("account `{name}` was logged out meanwhile")))?;
    // Another process may have refreshed while we waited: its token is as good as ours would be,
    // and refreshing again could race a rotating server.
    let someone_refreshed = current != seen;
    if current.is_fresh(time::now(), margin) && (!force || someone_refreshed) {
        debug!(
            "another process refreshed meanwhile; using {}",
            fingerprint(&current.access_token)
        );
        return Ok(current);
    }
    let refreshed = refresh(acct, &current)?;
    store.save(name, &refreshed)?;
    debug!(
        "stored new access token {} (refresh token {})",
        fingerprint(&refreshed.access_token),
        if refreshed.refresh_token == current.refresh_token {
            "kept"
        } else {
            "rotated"
        }
    );
    Ok(refreshed)
}

/// Ask the server for a new access token. The store is not touched here: on any error the
/// caller keeps what it had.
fn refresh(acct: &AccountRef, current: &Tokens) -> Result<Tokens> {
    let AccountRef { name, account, .. } = *acct;
    let refresh_token = current.refresh_token.clone().ok_or_else(|| {
        login_needed(
            name,
            "the access token expired and the stored login has no refresh token \
             (the server sent none: is offline_access among the scopes?)",
        )
    })?;
    let http = Http::new()?;
    let endpoints = oauth::endpoints(&http, account)?;
    let token_endpoint = endpoints.token.ok_or_else(|| {
        usage(format!(
            "account `{name}` has no token endpoint: set `token_endpoint` or `issuer`"
        ))
    })?;
    let secret = account.client_secret()?;
    let client = oauth::Client {
        id: &account.client_id,
        secret: secret.as_deref(),
    };
    let scope = account.scopes()?.join(" ");
    debug!(
        "refreshing at {token_endpoint} with refresh token {}",
        fingerprint(&refresh_token)
    );
    let sent_at = time::now();
    let reply = oauth::refresh(&http, &token_endpoint, &client, &refresh_token, &scope)
        .with_context(|| format!("account `{name}`"))?
        .map_err(|e| e.into_error("refreshing the access token", account.provider, name))?;
    Ok(reply.into_tokens(sent_at, Some(refresh_token), &scope))
}
