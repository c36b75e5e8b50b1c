//! Where an account's OAuth endpoints are: its settings, the provider preset, then OpenID
//! Connect discovery for an `issuer`, whose document is kept a day beside the account's
//! tokens (`NAME.discovery.json`, 0600) so a refresh is one request, not two.

use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::config::OpenAccount;
use crate::error::{server, usage};
use crate::http::Http;
use crate::provider::{self, Endpoints};

/// How long a fetched discovery document is used before it is fetched again.
const KEEP: u64 = 24 * 3600;

/// The account's endpoints: explicit settings, then presets, then OIDC discovery for an
/// `issuer` (the kept document, or one GET, made only when a request is due anyway).
pub fn endpoints(http: &Http, acct: &OpenAccount) -> Result<Endpoints> {
    let account = &acct.account;
    let mut endpoints = account.configured_endpoints();
    if let Some(issuer) = &account.issuer {
        let complete = endpoints.token.is_some()
            && endpoints.device_authorization.is_some()
            && endpoints.authorization.is_some();
        if !complete {
            let found = match kept(acct, issuer) {
                Some(found) => found,
                None => fetch(http, acct, issuer)?,
            };
            endpoints = endpoints.or(found);
        }
    }
    for (what, url) in [
        (
            "device_authorization_endpoint",
            &endpoints.device_authorization,
        ),
        ("token_endpoint", &endpoints.token),
        ("authorization_endpoint", &endpoints.authorization),
    ] {
        if let Some(url) = url {
            provider::validate_endpoint_url(what, url)?;
        }
    }
    Ok(endpoints)
}

/// The document as kept: for which issuer, when, and the server's bytes.
#[derive(Serialize, Deserialize)]
struct Kept {
    issuer: String,
    fetched_at: u64,
    document: serde_json::Value,
}

fn kept_path(acct: &OpenAccount) -> PathBuf {
    acct.store.files().discovery(&acct.name)
}

/// The kept document of `issuer`, if there is one of the last day that still parses.
fn kept(acct: &OpenAccount, issuer: &str) -> Option<Endpoints> {
    let bytes = acct.store.files().read_small(&kept_path(acct))?;
    let kept: Kept = serde_json::from_slice(&bytes).ok()?;
    let age = crate::time::now().checked_sub(kept.fetched_at)?;
    if kept.issuer != issuer || age >= KEEP {
        return None;
    }
    parse(issuer, kept.document.to_string().as_bytes()).ok()
}

/// GET the document, check it, and keep it (best effort: without it, the next call asks again).
fn fetch(http: &Http, acct: &OpenAccount, issuer: &str) -> Result<Endpoints> {
    let url = url(issuer);
    let reply = http.get(&url)?;
    if !reply.is_success() {
        return Err(server(format!(
            "OIDC discovery at {url} failed: HTTP {}. Check `issuer`.",
            reply.status
        )));
    }
    let found = parse(issuer, &reply.body)?;
    if let Ok(document) = serde_json::from_slice(&reply.body) {
        let kept = Kept {
            issuer: issuer.to_string(),
            fetched_at: crate::time::now(),
            document,
        };
        let path = kept_path(acct);
        if acct.store.dir().is_dir()
            && let Ok(bytes) = serde_json::to_vec(&kept)
        {
            let _ = acct.store.files().replace_small(&path, &bytes);
        }
    }
    Ok(found)
}

/// After a failure at the token server, the kept document may be what is wrong (the server
/// moved its endpoints): the next request fetches it again.
pub fn forget(acct: &OpenAccount) {
    let _ = std::fs::remove_file(kept_path(acct));
}

/// Where OIDC discovery looks for an issuer's metadata (RFC 8414 / OpenID Connect Discovery).
pub fn url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

#[derive(Debug, Deserialize)]
pub struct Discovery {
    pub issuer: Option<String>,
    pub token_endpoint: Option<String>,
    pub device_authorization_endpoint: Option<String>,
    pub authorization_endpoint: Option<String>,
    /// RFC 9207: authorization responses always carry `iss`.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: Option<bool>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub userinfo_endpoint: Option<String>,
}

/// A document that does not parse is the server's trouble (exit 4, like any malformed reply);
/// one naming another issuer means `issuer` is set wrong (exit 2).
pub fn parse(issuer: &str, body: &[u8]) -> Result<Endpoints> {
    let doc: Discovery = serde_json::from_slice(body).map_err(|e| {
        crate::error::server(format!(
            "the OIDC discovery document of `{issuer}` is not valid JSON: {e}"
        ))
    })?;
    if let Some(found) = &doc.issuer
        && found.trim_end_matches('/') != issuer.trim_end_matches('/')
    {
        return Err(usage(format!(
            "the discovery document names issuer `{found}`, not `{issuer}`: check `issuer`"
        )));
    }
    Ok(Endpoints {
        device_authorization: doc.device_authorization_endpoint,
        token: doc.token_endpoint,
        authorization: doc.authorization_endpoint,
        issuer: Some(doc.issuer.unwrap_or_else(|| issuer.to_string())),
        iss_parameter: doc
            .authorization_response_iss_parameter_supported
            .unwrap_or(false),
        auth_methods: doc.token_endpoint_auth_methods_supported,
        userinfo: doc.userinfo_endpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_fills_endpoints_and_checks_the_issuer() {
        let body = br#"{"issuer":"https://id.example.com","token_endpoint":"https://id.example.com/t","device_authorization_endpoint":"https://id.example.com/d"}"#;
        let e = parse("https://id.example.com/", body).unwrap();
        assert_eq!(e.token.as_deref(), Some("https://id.example.com/t"));
        let exit = |r: Result<Endpoints>| crate::error::exit_code(&r.unwrap_err());
        assert_eq!(exit(parse("https://other.example.com", body)), 2);
        assert_eq!(exit(parse("https://id.example.com", b"<html>")), 4);
        assert_eq!(
            url("https://id.example.com/"),
            "https://id.example.com/.well-known/openid-configuration"
        );
    }
}
