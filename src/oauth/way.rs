//! The one way to an account's token endpoint (`TokenWay`), and the runtime requests made
//! through it that are not a refresh with a refresh token: app-only tokens.

use std::path::Path;

use anyhow::{Context, Result};

use super::{Client, client_credentials, jwt, jwt_bearer};
use crate::config::{Account, OpenAccount, Want};
use crate::error::usage;
use crate::http::Http;
use crate::log::debug;
use crate::provider::Endpoints;
use crate::store::AccessToken;

/// The way to an account's token endpoint, made once for every request there: the HTTP
/// client (with the account's CA), the endpoints (discovered if need be), the token endpoint,
/// and the client with its credentials (a secret fetched, or an assertion signed, for it).
pub struct TokenWay<'a> {
    pub http: Http,
    pub endpoints: Endpoints,
    pub url: String,
    pub client: Client<'a>,
}

impl<'a> TokenWay<'a> {
    pub fn open(acct: &'a OpenAccount) -> Result<TokenWay<'a>> {
        let http = Http::new(acct.account.tls_ca_file().as_deref())?;
        let endpoints = super::endpoints(&http, acct)?;
        let (url, client) = Client::for_token_endpoint(&acct.name, &acct.account, &endpoints)?;
        Ok(TokenWay {
            http,
            endpoints,
            url,
            client,
        })
    }
}

/// A service account's grant assertion for `audience`, made from its key file; a key that
/// cannot make one is a setup problem (exit 2), said with the file's name.
fn service_account_grant(
    account: &Account,
    path: &Path,
    scope: &str,
    audience: &str,
    now: u64,
) -> Result<String> {
    let key = jwt::ServiceAccountKey::read(path).map_err(|e| usage(format!("{e:#}")))?;
    if let Some(id) = key
        .client_id
        .as_deref()
        .filter(|id| *id != account.client_id)
    {
        return Err(usage(format!(
            "{} is the key of the service account with client ID {id}, but the account says \
             client_id = \"{}\": use the one domain-wide delegation lists",
            path.display(),
            account.client_id
        )));
    }
    let mailbox = account
        .user
        .as_deref()
        .ok_or_else(|| usage("a service account needs `user`: the mailbox to act for"))?;
    jwt::service_account_assertion(&key, mailbox, scope, audience, now)
        .map_err(|e| usage(format!("{}: {e:#}", path.display())))
}

/// Whether the account's service account key can sign a grant (for `doctor`): nothing is sent.
pub fn service_account_assertion(account: &Account, path: &Path, now: u64) -> Result<String> {
    let scope = account.scope_param(&account.scopes()?);
    service_account_grant(
        account,
        path,
        &scope,
        "https://token-endpoint.invalid/",
        now,
    )
}

/// A new app-only token for `want` (client credentials, or a Google service account's signed
/// grant). The store is not touched here.
pub fn fetch_app_only(acct: &OpenAccount, want: &Want) -> Result<AccessToken> {
    let OpenAccount { name, account, .. } = acct;
    let way = TokenWay::open(acct)?;
    let scope = account.scope_param(&want.scopes);
    debug!("fetching an app-only token at {}", way.url);
    let sent_at = crate::time::now();
    let reply = match account.service_account_key() {
        Some(path) => {
            let assertion = service_account_grant(account, &path, &scope, &way.url, sent_at)?;
            jwt_bearer(&way.http, &way.url, &way.client, &assertion)
        }
        None => client_credentials(&way.http, &way.url, &way.client, &scope),
    }
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
