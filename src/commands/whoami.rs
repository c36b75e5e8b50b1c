//! `whoami`: who an access token belongs to, from its JWT claims (read locally, not verified),
//! Microsoft Graph `/me`, OIDC userinfo, or (Gmail's mail scope alone) the Gmail API's
//! profile. Never the token itself.

use anyhow::{Result, anyhow};
use serde_json::{Map, Value};

use super::verify::app_only_user;
use crate::config::{self, Account, OpenAccount, Paths};
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
            let missing = missing_identity_scopes(&account.scopes()?);
            let add = if missing.is_empty() {
                String::new()
            } else {
                format!(" and add {} to `scopes`", missing.join(" and "))
            };
            format!("set `userinfo_endpoint` (or `issuer`, whose discovery document names it){add}")
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

/// The scopes userinfo needs that `scopes` lacks, quoted as they go into the config.
fn missing_identity_scopes(scopes: &[String]) -> Vec<&'static str> {
    [("openid", "\"openid\""), ("email", "\"email\"")]
        .into_iter()
        .filter(|(scope, _)| !scopes.iter().any(|s| s == scope))
        .map(|(_, quoted)| quoted)
        .collect()
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
        (None, Provider::Google) => return gmail_profile(&http, account, own),
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

/// Gmail's own profile (`users/me/profile`), which the mail scope `https://mail.google.com/`
/// may read: the one way to learn the address of a Google account set up without "openid"
/// and "email" (Google's tokens are opaque). None without that scope.
fn gmail_profile(http: &Http, account: &Account, own: &AccessToken) -> Result<Option<Profile>> {
    if !account
        .scopes()?
        .iter()
        .any(|s| s == provider::GOOGLE_MAIL_SCOPE)
    {
        return Ok(None);
    }
    let base = account
        .gmail_url
        .as_deref()
        .unwrap_or(provider::GMAIL_API)
        .trim_end_matches('/');
    let url = format!("{base}/gmail/v1/users/me/profile");
    crate::provider::validate_endpoint_url("gmail_url", &url)?;
    let reply = http.bearer(&url, &own.access_token, None)?;
    if !reply.is_success() {
        // Google's errors: {"error": {"code": 403, "message": "...", "status": "..."}}.
        let json: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        let said: String = json["error"]["message"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        return Err(anyhow!(
            "the Gmail API ({url}) answered HTTP {}{}{}; fix: enable the Gmail API in the \
             app's Google Cloud project, or add \"openid\" and \"email\" to `scopes` and \
             `mailtoken login` again",
            reply.status,
            if said.is_empty() { "" } else { ": " },
            printable(&said)
        ));
    }
    let address = gmail_address(&reply.body).ok_or_else(|| {
        crate::error::server(format!(
            "the Gmail API ({url}) did not answer with a profile (JSON with an emailAddress)"
        ))
    })?;
    Ok(Some((
        format!("Gmail API ({url}):"),
        vec![("email".to_string(), address)],
    )))
}

/// The address of a Gmail profile reply: a JSON object whose `emailAddress` is a string that
/// looks like one (a line of at most 320 characters with an @), else None.
fn gmail_address(body: &[u8]) -> Option<String> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    let address = doc.get("emailAddress")?.as_str()?;
    let fits = address.len() <= 320
        && address.contains('@')
        && !address.chars().any(|c| c.is_control() || c.is_whitespace());
    fits.then(|| address.to_string())
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
    fn the_scope_advice_names_only_what_is_missing() {
        let scopes = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(missing_identity_scopes(&scopes(&["openid", "email", "mail"])).is_empty());
        assert_eq!(
            missing_identity_scopes(&scopes(&["openid", "mail"])),
            ["\"email\""]
        );
        assert_eq!(
            missing_identity_scopes(&scopes(&["mail"])),
            ["\"openid\"", "\"email\""]
        );
    }

    #[test]
    fn a_gmail_profile_gives_its_address_and_nothing_else_passes() {
        let ok = br#"{"emailAddress":"bob@gmail.com","messagesTotal":5,"historyId":"1"}"#;
        assert_eq!(gmail_address(ok).as_deref(), Some("bob@gmail.com"));
        for bad in [
            &br#"{"emailAddress":5}"#[..],
            br#"{"email":"bob@gmail.com"}"#,
            br#"{"emailAddress":"bob
X-Evil: 1@x"}"#,
            br#"{"emailAddress":"no-at-sign"}"#,
            b"<html>",
            b"[]",
        ] {
            assert_eq!(gmail_address(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let long = format!(r#"{{"emailAddress":"{}@x.com"}}"#, "a".repeat(400));
        assert_eq!(gmail_address(long.as_bytes()), None);
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
