//! `whoami`: who an access token belongs to, from its JWT claims (read locally, not verified),
//! Microsoft Graph `/me`, or OIDC userinfo. Never the token itself.

use anyhow::{Result, anyhow};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::verify::{app_only_user, own_token};
use crate::config::{self, OpenAccount, Paths};
use crate::http::Http;
use crate::log::{fingerprint, printable};
use crate::mail::graph;
use crate::provider::{self, Provider};
use crate::store::AccessToken;
use crate::time;

pub fn run(paths: &Paths, name: &str) -> Result<()> {
    let acct = config::open(paths, name)?;
    let account = &acct.account;
    let token = own_token(&acct)?;
    let now = time::now();
    let mut out = format!(
        "account  {name}\ntoken    {} valid until {} (for {})\n",
        fingerprint(&token.access_token),
        time::format_utc(token.expires_at),
        time::format_span(token.expires_at.saturating_sub(now))
    );
    let mut names = Vec::new();
    if let Some(claims) = jwt_claims(&token.access_token) {
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
    if let Some(note) = user_mismatch(account.user.as_deref(), &names) {
        out.push_str(&format!("note: {note}\n"));
    }
    print!("{out}");
    if names.is_empty() && !found_online {
        return Err(anyhow!(
            "cannot tell who the token belongs to: it is not a readable JWT and the account \
             has no Graph scope or userinfo endpoint. Fix: add a Graph resource \
             ([accounts.{name}.resources] graph = [\"https://graph.microsoft.com/User.Read\"]) \
             or set `userinfo_endpoint` with openid/email scopes"
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
        let doc = graph::get_json(&Http::new()?, &url, &token.access_token)?;
        return Ok(Some((
            format!("Microsoft Graph ({url}):"),
            describe_profile(&doc),
        )));
    }
    let wants_oidc = account
        .scopes()?
        .iter()
        .any(|s| matches!(s.as_str(), "openid" | "email" | "profile"));
    let url = match (&account.userinfo_endpoint, account.provider) {
        (Some(url), _) => url.clone(),
        (None, Provider::Google) if wants_oidc => provider::GOOGLE_USERINFO.to_string(),
        _ => return Ok(None),
    };
    let doc = graph::get_json(&Http::new()?, &url, &own.access_token)?;
    Ok(Some((format!("userinfo ({url}):"), describe_profile(&doc))))
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

/// The payload of a signed JWT (three base64url parts), if the token is one. Encrypted or
/// opaque tokens (Google's, Microsoft's personal-account tokens) give `None`.
pub fn jwt_claims(token: &str) -> Option<Map<String, Value>> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

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
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "upn"
                    | "unique_name"
                    | "preferred_username"
                    | "email"
                    | "mail"
                    | "userPrincipalName"
            )
        })
        .map(|(_, v)| v.clone())
        .collect()
}

/// A note when the token is someone else's than `user`: XOAUTH2 would then be refused.
pub fn user_mismatch(user: Option<&str>, names: &[String]) -> Option<String> {
    let user = user?;
    if names.is_empty() || names.iter().any(|n| n.eq_ignore_ascii_case(user)) {
        return None;
    }
    Some(format!(
        "the token belongs to {}, but the account's `user` is {user}: mail servers will refuse \
         the login. Fix `user`, or log in again as {user}.",
        names[0]
    ))
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
        let claims = jwt_claims(&t).unwrap();
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
        assert!(jwt_claims("ya29.opaque-google-token").is_none());
        assert!(jwt_claims("a.b.c.d.e").is_none());
        assert!(jwt_claims("x.bm90IGpzb24.y").is_none());
    }

    #[test]
    fn profiles_and_mismatches() {
        let me = serde_json::json!({"displayName":"Alice","userPrincipalName":"alice@x.com","mail":null,"id":"1"});
        let lines = describe_profile(&me);
        assert_eq!(lines.len(), 3);
        let names = identities(&lines);
        assert_eq!(user_mismatch(Some("ALICE@x.com"), &names), None);
        assert!(
            user_mismatch(Some("bob@x.com"), &names)
                .unwrap()
                .contains("alice@x.com")
        );
        assert_eq!(user_mismatch(None, &names), None);
        assert_eq!(user_mismatch(Some("bob@x.com"), &[]), None);
    }
}
