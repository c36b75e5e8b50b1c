//! What `mailtoken token` prints: the token itself or a SASL string built from it, and the
//! one way anything is written to stdout.

use std::io::Write;

use anyhow::{Context, Result};

use crate::error::usage;
use crate::mail::sasl;
use crate::store::AccessToken;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The access token alone
    #[default]
    Raw,
    /// base64 SASL XOAUTH2 initial response (needs a user)
    Xoauth2,
    /// base64 SASL OAUTHBEARER initial response, RFC 7628 (needs a user)
    Oauthbearer,
    /// {"access_token","token_type","expires_at","scope"}
    Json,
}

pub struct Sasl<'a> {
    pub user: Option<&'a str>,
    pub host: Option<&'a str>,
    pub port: Option<u16>,
}

/// A format that needs a user without one is refused before any network request.
pub fn require_user(format: Format, sasl: &Sasl) -> Result<()> {
    match (format, sasl.user) {
        (Format::Xoauth2 | Format::Oauthbearer, None) => Err(usage(
            "this format needs a user: set `user` in the account or pass --user",
        )),
        _ => Ok(()),
    }
}

/// The exact text for stdout, without the final newline.
pub fn render(format: Format, tokens: &AccessToken, sasl: &Sasl) -> Result<String> {
    require_user(format, sasl)?;
    let user = || sasl.user.unwrap_or_default();
    Ok(match format {
        Format::Raw => tokens.access_token.clone(),
        Format::Xoauth2 => sasl::xoauth2(user(), &tokens.access_token),
        Format::Oauthbearer => {
            sasl::oauthbearer(user(), sasl.host, sasl.port, &tokens.access_token)
        }
        Format::Json => serde_json::json!({
            "access_token": tokens.access_token,
            "token_type": tokens.token_type,
            "expires_at": tokens.expires_at,
            "scope": tokens.scope,
        })
        .to_string(),
    })
}

/// Write `text` to stdout in one piece and flush, so a reader gets all of it or an error.
pub fn write_stdout(text: &str, what: &'static str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> AccessToken {
        AccessToken {
            access_token: "tok".into(),
            token_type: "Bearer".into(),
            expires_at: 42,
            scope: Some("mail".into()),
            obtained_at: None,
        }
    }

    #[test]
    fn formats() {
        let none = Sasl {
            user: None,
            host: None,
            port: None,
        };
        assert_eq!(render(Format::Raw, &tokens(), &none).unwrap(), "tok");
        assert!(render(Format::Xoauth2, &tokens(), &none).is_err());
        let json: serde_json::Value =
            serde_json::from_str(&render(Format::Json, &tokens(), &none).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"access_token":"tok","token_type":"Bearer","expires_at":42,"scope":"mail"})
        );
        let user = Sasl {
            user: Some("u"),
            ..none
        };
        assert_eq!(
            render(Format::Xoauth2, &tokens(), &user).unwrap(),
            sasl::xoauth2("u", "tok")
        );
    }
}
