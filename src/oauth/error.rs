//! The token endpoint's error replies (RFC 6749 section 5.2), turned into messages a user can
//! act on: the failure kind behind the exit code, the server's words, and a hint.

use serde::Deserialize;

use crate::error::{Kind, failure};
use crate::provider::Provider;

/// RFC 6749 section 5.2 error reply, with Microsoft's extras.
#[derive(Debug, Clone, Deserialize)]
pub struct OAuthError {
    #[serde(skip)]
    pub status: u16,
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default)]
    pub error_codes: Vec<u64>,
}

impl OAuthError {
    /// The error with any secret value from `sent` replaced in its description.
    pub fn redacted(mut self, sent: &[(&str, &str)]) -> OAuthError {
        for (key, value) in sent {
            // Short values (a user code, say) would blank out ordinary words.
            if SECRET_FIELDS.contains(key) && value.len() >= 8 {
                self.error = self.error.replace(value, "[redacted]");
                if let Some(desc) = &mut self.error_description {
                    *desc = desc.replace(value, "[redacted]");
                }
            }
        }
        self
    }

    /// Microsoft's AADSTS number, from `error_codes` or the description.
    pub fn aadsts(&self) -> Option<u64> {
        if let Some(code) = self.error_codes.first() {
            return Some(*code);
        }
        let desc = self.error_description.as_deref()?;
        let digits: String = desc
            .split("AADSTS")
            .nth(1)?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    }

    /// Microsoft's descriptions run on with trace and correlation IDs; the first line says it.
    pub fn short_description(&self) -> Option<&str> {
        let desc = self.error_description.as_deref()?;
        let first = desc.split(['\r', '\n']).next().unwrap_or(desc).trim();
        let first = first.split(" Trace ID:").next().unwrap_or(first).trim();
        (!first.is_empty()).then_some(first)
    }

    pub fn kind(&self) -> Kind {
        match self.error.as_str() {
            "invalid_grant"
            | "interaction_required"
            | "login_required"
            | "consent_required"
            | "expired_token"
            | "access_denied" => Kind::LoginNeeded,
            "invalid_client"
            | "unauthorized_client"
            | "invalid_scope"
            | "unsupported_grant_type"
            | "invalid_request" => Kind::Usage,
            _ => Kind::Server,
        }
    }

    /// What to do about it, in plain words, where we know.
    pub fn hint(&self, provider: Provider) -> Option<&'static str> {
        let by_code = match self.aadsts() {
            Some(7_000_215) => Some(
                "the client secret is wrong. Entra shows a secret's \"Secret ID\" and its \"Value\": use the Value.",
            ),
            Some(70_000 | 700_082 | 700_084 | 50_173 | 50_133) => Some(
                "the refresh token expired or was revoked (password change, inactivity, or an admin). Log in again.",
            ),
            Some(65_001) => Some(
                "the app has not been granted these permissions. Sign in once and accept, or ask an admin to grant consent for the tenant.",
            ),
            Some(50_020) => Some(
                "this account is not in the app's tenant. Use tenant = \"common\" (any account), \"consumers\" (personal accounts) or your organisation's tenant id.",
            ),
            Some(700_016) => Some(
                "no app with this client_id exists in this tenant. Check client_id, and the tenant the app is registered in.",
            ),
            Some(90_002 | 50_059) => Some("the tenant was not found. Check `tenant`."),
            Some(53_003) => Some(
                "Conditional Access blocked the sign-in. Where the tenant blocks the device-code login (and the refreshes of logins made with it), log in with `mailtoken login NAME --browser`; flow = \"browser\" in the account makes that the default (the app registration then needs the \"Mobile and desktop applications\" platform with redirect http://localhost). Otherwise ask your tenant admin which rules apply to this app.",
            ),
            Some(7_000_218) => Some(
                "the app wants a client secret. For device login, turn on \"Allow public client flows\" in the app registration (Authentication), or set client_secret_env/_file/_command.",
            ),
            Some(70_011) => Some(
                "a requested scope is not valid for this app. Check `services`/`scopes`; app-only scopes must end in /.default.",
            ),
            Some(50_076 | 50_079) => {
                Some("multi-factor authentication is now required. Log in again.")
            }
            _ => None,
        };
        by_code.or(match (provider, self.error.as_str()) {
            (Provider::Google, "invalid_grant") => Some(
                "Google revoked or expired the refresh token. Apps left in \"Testing\" publishing status get refresh tokens that expire after 7 days: publish the app to keep logins.",
            ),
            (Provider::Google, "invalid_scope") => Some(
                "Google's device flow does not allow the mail scope https://mail.google.com/; Gmail needs the browser flow.",
            ),
            (_, "unauthorized_client") => Some(
                "the server does not let this client use this grant. For device login with Microsoft, turn on \"Allow public client flows\" in the app registration.",
            ),
            (_, "invalid_client") => Some(
                "the server does not accept this client_id or client secret. Check both.",
            ),
            _ => None,
        })
    }

    /// The error as a complete message, the server's own words included.
    pub fn into_error(self, what: &str, provider: Provider, account: &str) -> anyhow::Error {
        let mut msg = format!("{what} was refused: {}", self.error);
        if let Some(desc) = self.short_description() {
            msg.push_str(&format!(" ({desc})"));
        }
        if let Some(hint) = self.hint(provider) {
            let hint = hint.replace("login NAME", &format!("login {account}"));
            msg.push_str(&format!("\nhint: {hint}"));
        }
        match self.kind() {
            Kind::LoginNeeded => crate::error::login_needed(account, msg),
            kind => failure(kind, msg),
        }
    }
}

/// Form fields whose values are secrets: never to be shown, even when a server echoes them.
const SECRET_FIELDS: [&str; 7] = [
    "assertion",
    "refresh_token",
    "client_secret",
    "client_assertion",
    "code",
    "code_verifier",
    "device_code",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_secrets_are_blanked_out_of_error_text() {
        let e = OAuthError {
            status: 400,
            error: "invalid_grant".into(),
            error_description: Some("refresh token rt-0123456789 is revoked (client cid)".into()),
            error_codes: vec![],
        }
        .redacted(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "rt-0123456789"),
            ("client_id", "cid"),
        ]);
        assert_eq!(
            e.error_description.as_deref(),
            Some("refresh token [redacted] is revoked (client cid)")
        );
        let e = OAuthError {
            status: 400,
            error: "bad_token:rt-0123456789".into(),
            error_description: None,
            error_codes: vec![],
        }
        .redacted(&[("refresh_token", "rt-0123456789")]);
        assert_eq!(e.error, "bad_token:[redacted]");
    }

    #[test]
    fn microsoft_codes_become_hints() {
        let e: OAuthError = serde_json::from_str(
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: abc\r\nCorrelation ID: def","error_codes":[7000215]}"#,
        )
        .unwrap();
        assert_eq!(e.aadsts(), Some(7_000_215));
        assert_eq!(
            e.short_description(),
            Some("AADSTS7000215: Invalid client secret provided.")
        );
        assert!(e.hint(Provider::Microsoft).unwrap().contains("Value"));
        let msg = e
            .into_error("refreshing", Provider::Microsoft, "work")
            .to_string();
        assert!(
            msg.contains("AADSTS7000215") && msg.contains("hint:"),
            "{msg}"
        );
        assert!(!msg.contains("Trace ID"), "{msg}");

        let e: OAuthError = serde_json::from_str(
            r#"{"error":"invalid_grant","error_description":"AADSTS70000: The provided grant has expired."}"#,
        )
        .unwrap();
        assert_eq!(e.aadsts(), Some(70_000));
        let err = e.into_error("refreshing", Provider::Microsoft, "work");
        assert_eq!(crate::error::exit_code(&err), crate::error::EXIT_LOGIN);
        assert!(err.to_string().contains("mailtoken login work"));
    }

    #[test]
    fn a_conditional_access_block_names_the_browser_login_of_the_account() {
        let e: OAuthError = serde_json::from_str(
            r#"{"error":"invalid_grant","error_description":"AADSTS53003: Access has been blocked by Conditional Access policies.","error_codes":[53003]}"#,
        )
        .unwrap();
        let msg = e
            .into_error("refreshing", Provider::Microsoft, "work")
            .to_string();
        assert!(msg.contains("`mailtoken login work --browser`"), "{msg}");
        assert!(msg.contains("flow = \"browser\""), "{msg}");
        assert!(!msg.contains("NAME"), "{msg}");
    }

    #[test]
    fn google_testing_apps_get_their_hint() {
        let e = OAuthError {
            status: 400,
            error: "invalid_grant".into(),
            error_description: Some("Token has been expired or revoked.".into()),
            error_codes: vec![],
        };
        assert!(e.hint(Provider::Google).unwrap().contains("7 days"));
        assert!(e.hint(Provider::Generic).is_none());
    }
}
