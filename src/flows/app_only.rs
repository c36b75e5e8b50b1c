//! Client credentials (RFC 6749 section 4.4): app-only tokens, asked for whenever one is due.
//! There is no person and no refresh token, so "logging in" is fetching the first token.

use anyhow::{Context, Result};

use crate::config::{OpenAccount, Want};
use crate::http::Http;
use crate::log::debug;
use crate::oauth;
use crate::store::{AccessToken, Granted, LOCK_TIMEOUT, Tokens};
use crate::time;

/// A new app-only token for `want`. The store is not touched here.
pub fn fetch(acct: &OpenAccount, want: &Want) -> Result<AccessToken> {
    let OpenAccount { name, account, .. } = acct;
    let http = Http::new(account.tls_ca_file().as_deref())?;
    let endpoints = oauth::endpoints(&http, acct)?;
    let token_endpoint = endpoints.need_token(name)?;
    let client = oauth::Client::for_account(account, token_endpoint, &endpoints)?;
    let scope = want.scopes.join(" ");
    debug!("fetching an app-only token at {token_endpoint}");
    let sent_at = time::now();
    let reply = oauth::client_credentials(&http, token_endpoint, &client, &scope)
        .with_context(|| format!("account `{name}`"))?
        .map_err(|mut err| {
            // With client credentials there is no login to redo: a refusal is a setup problem.
            if err.error == "invalid_grant" {
                err.error = "invalid_client".into();
            }
            err.into_error("fetching an app-only token", account.provider, name)
        })?;
    Ok(reply.into_access(sent_at, &scope)?.access)
}

/// `login` for an app-only account: fetching a token proves the setup and fills the cache.
pub fn login(acct: &OpenAccount) -> Result<Tokens> {
    let OpenAccount { name, store, .. } = acct;
    let want = Want::own(&acct.account)?;
    let _lock = store.lock(name, LOCK_TIMEOUT)?;
    // A damaged file would fail the load below with advice to log in: the very command that
    // is running. Kept beside, as an interactive login does.
    store.set_aside_damaged(name)?;
    let mut tokens = store.load(name)?.unwrap_or_else(Tokens::empty);
    tokens.update(
        want.key.as_deref(),
        Granted::access_only(fetch(acct, &want)?),
    );
    store.save(name, &tokens)?;
    Ok(tokens)
}
