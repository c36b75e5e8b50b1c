//! `whoami`: who an access token belongs to, from its JWT claims (read locally, not verified),
//! Microsoft Graph `/me`, or OIDC userinfo. Never the token itself.

use anyhow::{Result, anyhow};
use serde_json::{Map, Value};

use super::verify::app_only_user;
use crate::config::{self, OpenAccount, Paths};
use crate::http::Http;
use crate::log::{fingerprint, printable};
use crate::mail::graph;
use crate::oauth::jwt;
use crate::provider::{self, Provider};
use crate::store::AccessToken;
use crate::time;

pub fn run(paths: &Paths, name: &str) -> Result<()> {
    let acct = config::open(paths, name)?;
    let account = &acct.account;
    let token = crate::token::own(&acct, false)?;
    let now = time::now();
    let mut out = format!(
        "account  {name}\ntoken    {} valid until {} (for {})\n",
        fingerprint(&token.access_token),
        time::format_utc(token.expires_at),
        time::format_span(token.expires_at.saturating_sub(now))
    );
    let mut names = Vec::new();
    if let Some(claims) = jwt::claims(&token.access_token) {
        let lines = describe_claims(&claims);
        names.extend(identities(&lines));
        out.push_str(&render(
            "claims in the token (read locally, not verified):",
            &lines,
        ));
    }
    let lookup = online_lookup(&acct, &token)?;
    let found_online = lookup.is_some();
    if let Some((title, lines)) = lookup {
        names.extend(identities(&lines));
        out.push_str(&render(&title, &lines));
    }
    if let Some(note) = jwt::user_mismatch(account.user.as_deref(), &names) {
        out.push_str(&format!("note: {note}\n"));
    }
    print!("{out}");
    if names.is_empty() && !found_online {
        let fix = if account.provider == Provider::Microsoft {
            format!(
                "add a Graph resource ([accounts.{name}.resources] graph = \
                 [\"https://graph.microsoft.com/User.Read\"])"
            )
        } else {
            "set `userinfo_endpoint` (or `issuer`, whose discovery document names it) and add \
             \"openid\" and \"email\" to `scopes`"
                .to_string()
        };
        return Err(anyhow!(
            "cannot tell who the token belongs to: it is not a readable JWT and there is no \
             {} to ask. Fix: {fix}",
            if account.provider == Provider::Microsoft {
                "Graph scope"
            } else {
                "userinfo endpoint"
            }
        ));
    }
    Ok(())
}

/// A titled list of `(field, value)` lines about the token's owner.
type Profile = (String, Vec<(String, String)>);

/// Graph `/me` when the account can get a Graph token, else OIDC userinfo when there is one.
fn online_lookup(acct: &OpenAccount, own: &AccessToken) -> Result<Option<Profile>> {
    let account = &acct.account;
    if let Ok(want) = graph::want(&acct.name, account) {
        let url = graph::user_path(graph::base(account), app_only_user(acct)?, &[])?;
        let token = crate::token::get(acct, &want, false)?;
        let doc = graph::get_json(
            &Http::new(account.tls_ca_file().as_deref())?,
            &url,
            &token.access_token,
        )?;
        return Ok(Some((
            format!("Microsoft Graph ({url}):"),
            describe_profile(&doc),
        )));
    }
    let wants_oidc = account
        .scopes()?
        .iter()
        .any(|s| matches!(s.as_str(), "openid" | "email" | "profile"));
    let http = Http::new(account.tls_ca_file().as_deref())?;
    // The account's own setting, else what its issuer's discovery document advertises.
    let discovered = match (&account.userinfo_endpoint, &account.issuer) {
        (None, Some(_)) => crate::oauth::endpoints(&http, acct)?.userinfo,
        _ => None,
    };
    let url = match (
        account.userinfo_endpoint.clone().or(discovered),
        account.provider,
    ) {
        (Some(url), _) => url,
        (None, Provider::Google) if wants_oidc => provider::GOOGLE_USERINFO.to_string(),
        _ => return Ok(None),
    };
    crate::provider::validate_endpoint_url("userinfo_endpoint", &url)?;
    let reply = http.bearer(&url, &own.access_token, None)?;
    if !reply.is_success() {
        return Err(anyhow!(
            "userinfo ({url}) answered: {}",
            userinfo_refusal(&reply)
        ));
    }
    let doc: Value = serde_json::from_slice(&reply.body).map_err(|e| {
        crate::error::server(format!("userinfo ({url}) did not answer with JSON: {e}"))
    })?;
    Ok(Some((format!("userinfo ({url}):"), describe_profile(&doc))))
}

/// An OIDC userinfo refusal in a line, with what to do: these are OAuth bearer errors
/// (RFC 6750), not Graph's, so the fix is a scope of the account's own, not a Graph permission.
fn userinfo_refusal(reply: &crate::http::Reply) -> String {
    let json: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let error = json["error"].as_str().unwrap_or("");
    let description = json["error_description"].as_str().unwrap_or("");
    let mut text = format!("HTTP {}", reply.status);
    if !error.is_empty() {
        text.push_str(&format!(" {}", printable(error)));
    }
    if !description.is_empty() {
        text.push_str(&format!(": {}", printable(description)));
    }
    let fix = match (reply.status, error) {
        (_, "insufficient_scope") | (403, _) => {
            "the token lacks the scope userinfo needs: add \"openid\" (and \"email\") to \
             `scopes`, then `mailtoken login` again"
        }
        (401, _) | (_, "invalid_token") => {
            "userinfo refused the token: it may be meant for the mail server only (another \
             audience), or expired; `mailtoken token --force-refresh` tells which"
        }
        _ => return text,
    };
    format!("{text}\n  fix: {fix}")
}

/// The claims that say who and what a token is for, in the order shown.
const CLAIMS: &[&str] = &[
    "upn",
    "unique_name",
    "preferred_username",
    "email",
    "name",
    "oid",
    "sub",
    "tid",
    "appid",
    "azp",
    "app_displayname",
    "aud",
    "iss",
    "scp",
    "scope",
    "roles",
    "iat",
    "exp",
];

/// Profile fields of Graph `/me` and OIDC userinfo.
const PROFILE: &[&str] = &[
    "displayName",
    "userPrincipalName",
    "mail",
    "id",
    "name",
    "email",
    "email_verified",
    "preferred_username",
    "sub",
];

fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(show).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

/// `(name, value)` lines for the identity claims present.
pub fn describe_claims(claims: &Map<String, Value>) -> Vec<(String, String)> {
    CLAIMS
        .iter()
        .filter_map(|&k| {
            let v = claims.get(k)?;
            let text = match (k, v.as_u64()) {
                ("iat" | "exp", Some(secs)) => time::format_utc(secs),
                _ => show(v),
            };
            Some((k.to_string(), text))
        })
        .collect()
}

pub fn describe_profile(doc: &Value) -> Vec<(String, String)> {
    PROFILE
        .iter()
        .filter_map(|&k| {
            let v = doc.get(k)?;
            (!v.is_null()).then(|| (k.to_string(), show(v)))
        })
        .collect()
}

/// The mail addresses a token or profile names, to compare with the account's `user`.
pub fn identities(lines: &[(String, String)]) -> Vec<String> {
    lines
        .iter()
        .filter(|(k, _)| jwt::IDENTITY_FIELDS.contains(&k.as_str()))
        .map(|(_, v)| v.clone())
        .collect()
}

/// The values come from the token and the server: control characters are shown, not obeyed.
pub fn render(title: &str, lines: &[(String, String)]) -> String {
    let mut out = format!("{}\n", printable(title));
    for (k, v) in lines {
        out.push_str(&format!("  {:<20} {}\n", printable(k), printable(v)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn reads_jwt_claims_and_ignores_opaque_tokens() {
        let t = jwt(
            r#"{"upn":"a@x.com","scp":"IMAP.AccessAsUser.All SMTP.Send","exp":0,"roles":["r1","r2"],"secret_thing":1}"#,
        );
        let claims = jwt::claims(&t).unwrap();
        let lines = describe_claims(&claims);
        assert_eq!(
            lines,
            [
                ("upn".to_string(), "a@x.com".to_string()),
                ("scp".into(), "IMAP.AccessAsUser.All SMTP.Send".into()),
                ("roles".into(), "r1 r2".into()),
                ("exp".into(), "1970-01-01 00:00:00 UTC".into()),
            ]
        );
        assert_eq!(identities(&lines), ["a@x.com"]);
        assert!(jwt::claims("ya29.opaque-google-token").is_none());
        assert!(jwt::claims("a.b.c.d.e").is_none());
        assert!(jwt::claims("x.bm90IGpzb24.y").is_none());
    }

    #[test]
    fn profiles_and_mismatches() {
        let me = serde_json::json!({"displayName":"Alice","userPrincipalName":"alice@x.com","mail":null,"id":"1"});
        let lines = describe_profile(&me);
        assert_eq!(lines.len(), 3);
        let names = identities(&lines);
        assert_eq!(jwt::user_mismatch(Some("ALICE@x.com"), &names), None);
        assert!(
            jwt::user_mismatch(Some("bob@x.com"), &names)
                .unwrap()
                .contains("alice@x.com")
        );
        assert_eq!(jwt::user_mismatch(None, &names), None);
        assert_eq!(jwt::user_mismatch(Some("bob@x.com"), &[]), None);
    }
}
