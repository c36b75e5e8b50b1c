//! The one way to an account's token endpoint (`TokenWay`), and the runtime requests made
//! through it that are not a refresh with a refresh token: app-only tokens.

use anyhow::{Context, Result};

use super::{Client, client_credentials};
use crate::config::{OpenAccount, Want};
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

/// A new app-only token for `want` (client credentials). The store is not touched here.
pub fn fetch_app_only(acct: &OpenAccount, want: &Want) -> Result<AccessToken> {
    let OpenAccount { name, account, .. } = acct;
    let way = TokenWay::open(acct)?;
    let scope = account.scope_param(&want.scopes);
    debug!("fetching an app-only token at {}", way.url);
    let sent_at = crate::time::now();
    let reply = client_credentials(&way.http, &way.url, &way.client, &scope)
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
