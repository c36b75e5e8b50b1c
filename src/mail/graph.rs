//! Microsoft Graph: `send-test --via graph` (sendMail) and the `/me` lookup of `whoami`.

use anyhow::Result;
use serde_json::{Value, json};

use crate::config::Account;
use crate::config::Want;
use crate::error::{server, usage};
use crate::http::{Http, Reply};
use crate::provider::{self, Cloud, Flow, Provider};

pub fn base(account: &Account) -> &str {
    account.graph_url().trim_end_matches('/')
}

/// A scope for Microsoft Graph: its full URL form, or (Microsoft) a bare permission name,
/// which Entra reads as a Graph permission.
pub fn is_graph_scope(provider: Provider, scope: &str) -> bool {
    let lower = scope.to_ascii_lowercase();
    let clouds = [Cloud::Global, Cloud::Usgov, Cloud::UsgovDod, Cloud::China];
    if clouds.into_iter().any(|cloud| {
        lower
            .strip_prefix(provider::microsoft_cloud(cloud).graph)
            .is_some_and(|rest| rest.starts_with('/'))
    }) {
        return true;
    }
    provider == Provider::Microsoft
        && !lower.contains("://")
        && lower.contains('.')
        && !matches!(
            lower.as_str(),
            "offline_access" | "openid" | "profile" | "email"
        )
}

/// Which token to use for Graph: a resource named `graph` (or any resource with Graph scopes),
/// else the account's own token if its scopes are Graph scopes.
pub fn want(name: &str, account: &Account) -> Result<Want> {
    let graphy = |scopes: &[String]| scopes.iter().any(|s| is_graph_scope(account.provider, s));
    let resource = account
        .resources
        .keys()
        .find(|k| k.as_str() == "graph")
        .or_else(|| {
            account
                .resources
                .iter()
                .find(|(_, scopes)| graphy(scopes))
                .map(|(k, _)| k)
        });
    if let Some(resource) = resource {
        return Want::pick(account, Some(resource), &[]);
    }
    if graphy(&account.scopes()?) {
        return Want::own(account);
    }
    let graph = provider::microsoft_cloud(account.site().cloud).graph;
    let scope = if account.flow() == Flow::Credentials {
        format!("{graph}/.default")
    } else {
        format!("{graph}/Mail.Send\", \"{graph}/User.Read")
    };
    Err(usage(format!(
        "account `{name}` has no Microsoft Graph scope. Add to the config:\n  \
         [accounts.{name}.resources]\n  graph = [\"{scope}\"]\n\
         (the app registration needs that Graph permission; log in again if Microsoft asks for consent)"
    )))
}

/// App-only tokens have no `/me`: they name the mailbox as `/users/{user}`.
pub fn user_path(base: &str, app_only_user: Option<&str>, tail: &[&str]) -> Result<String> {
    let mut url = reqwest::Url::parse(base)
        .map_err(|e| usage(format!("graph_url `{base}` is not a valid URL: {e}")))?;
    {
        let mut segments = url
            .path_segments_mut()
            .map_err(|()| usage(format!("graph_url `{base}` cannot take a path")))?;
        segments.pop_if_empty().push("v1.0");
        match app_only_user {
            Some(user) => segments.extend(["users", user]),
            None => segments.push("me"),
        };
        segments.extend(tail);
    }
    Ok(url.to_string())
}

pub fn send_mail_body(to: &str, subject: &str, text: &str) -> Value {
    json!({
        "message": {
            "subject": subject,
            "body": { "contentType": "Text", "content": text },
            "toRecipients": [ { "emailAddress": { "address": to } } ]
        },
        "saveToSentItems": true
    })
}

/// Graph's error reply `{"error":{"code","message"}}` in a line, with what to do for the usual ones.
pub fn describe_error(reply: &Reply) -> String {
    let json: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let code = json["error"]["code"].as_str().unwrap_or("");
    let message = json["error"]["message"].as_str().unwrap_or("");
    let mut text = if code.is_empty() && message.is_empty() {
        let body = String::from_utf8_lossy(&reply.body);
        let body: String = body.chars().take(300).collect();
        format!("HTTP {}: {}", reply.status, body.trim())
    } else {
        format!("HTTP {} {code}: {message}", reply.status)
    };
    let fix = match reply.status {
        401 => Some(
            "the token was refused: it is not a Graph token (check `aud` with `mailtoken whoami`) or it expired",
        ),
        403 => Some(
            "the token lacks the permission: Mail.Send (delegated, or application with admin consent for app-only)",
        ),
        404 if code.contains("MailboxNotEnabled") || code.contains("ResourceNotFound") => {
            Some("the user has no Exchange Online mailbox, or `user` names another one")
        }
        _ => None,
    };
    if let Some(fix) = fix {
        text.push_str(&format!("\n  fix: {fix}"));
    }
    text
}

fn failed(what: &str, reply: &Reply) -> anyhow::Error {
    let text = format!("{what} failed: {}", describe_error(reply));
    if reply.status >= 500 {
        server(text)
    } else {
        anyhow::anyhow!(text)
    }
}

/// POST sendMail; Graph answers 202 Accepted with no body.
pub fn send_mail(http: &Http, url: &str, token: &str, body: &Value) -> Result<u16> {
    let reply = http.bearer(url, token, Some(body))?;
    if !reply.is_success() {
        return Err(failed("Graph sendMail", &reply));
    }
    Ok(reply.status)
}

/// GET a Graph or userinfo document as JSON.
pub fn get_json(http: &Http, url: &str, token: &str) -> Result<Value> {
    let reply = http.bearer(url, token, None)?;
    if !reply.is_success() {
        return Err(failed(&format!("GET {url}"), &reply));
    }
    serde_json::from_slice(&reply.body)
        .map_err(|e| server(format!("{url} did not answer with JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn graph_scopes() {
        assert!(is_graph_scope(
            Provider::Generic,
            "https://graph.microsoft.com/Mail.Send"
        ));
        assert!(is_graph_scope(Provider::Microsoft, "Mail.Send"));
        assert!(is_graph_scope(
            Provider::Microsoft,
            "https://graph.microsoft.us/Mail.Send"
        ));
        assert!(!is_graph_scope(
            Provider::Microsoft,
            "https://graph.microsoft.usx/Mail.Send"
        ));
        assert!(!is_graph_scope(Provider::Microsoft, "offline_access"));
        assert!(!is_graph_scope(
            Provider::Microsoft,
            "https://outlook.office.com/SMTP.Send"
        ));
        assert!(!is_graph_scope(Provider::Google, "Mail.Send"));
    }

    #[test]
    fn urls_for_me_and_app_only_users() {
        assert_eq!(
            user_path("https://graph.microsoft.com", None, &["sendMail"]).unwrap(),
            "https://graph.microsoft.com/v1.0/me/sendMail"
        );
        assert_eq!(
            user_path("http://127.0.0.1:8080/", Some("a b@x.com"), &["sendMail"]).unwrap(),
            "http://127.0.0.1:8080/v1.0/users/a%20b@x.com/sendMail"
        );
        assert_eq!(
            user_path("http://127.0.0.1:1/base", None, &[]).unwrap(),
            "http://127.0.0.1:1/base/v1.0/me"
        );
    }

    #[test]
    fn the_graph_token_comes_from_a_resource_or_the_own_scopes() {
        let config = Config::parse(
            r#"
[accounts.res]
provider = "microsoft"
client_id = "id"
[accounts.res.resources]
mail = ["https://graph.microsoft.com/Mail.Send"]

[accounts.own]
provider = "microsoft"
client_id = "id"
scopes = ["https://graph.microsoft.com/Mail.Send", "offline_access"]

[accounts.none]
provider = "microsoft"
client_id = "id"
"#,
        )
        .unwrap();
        let w = want("res", &config.accounts["res"]).unwrap();
        assert!(w.key.unwrap().contains("graph.microsoft.com/Mail.Send"));
        assert_eq!(want("own", &config.accounts["own"]).unwrap().key, None);
        let err = want("none", &config.accounts["none"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("[accounts.none.resources]"), "{err}");
    }

    #[test]
    fn errors_are_described_with_fixes() {
        let reply = Reply {
            status: 403,
            content_type: "application/json".into(),
            body: br#"{"error":{"code":"ErrorAccessDenied","message":"Access is denied."}}"#
                .to_vec(),
        };
        let text = describe_error(&reply);
        assert!(
            text.contains("HTTP 403 ErrorAccessDenied: Access is denied."),
            "{text}"
        );
        assert!(text.contains("Mail.Send"), "{text}");
        let reply = Reply {
            status: 500,
            content_type: "text/html".into(),
            body: b"<html>oops</html>".to_vec(),
        };
        assert!(describe_error(&reply).contains("HTTP 500: <html>oops</html>"));
    }

    #[test]
    fn send_mail_body_shape() {
        let b = send_mail_body("to@example.com", "S", "T");
        assert_eq!(
            b["message"]["toRecipients"][0]["emailAddress"]["address"],
            "to@example.com"
        );
        assert_eq!(b["message"]["body"]["contentType"], "Text");
    }
}
