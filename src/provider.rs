//! Provider presets: endpoints and mail scopes for Microsoft, Google and generic servers.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::error::usage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Microsoft,
    Google,
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Imap,
    Smtp,
    Pop,
}

pub const MICROSOFT_LOGIN: &str = "https://login.microsoftonline.com";
pub const GOOGLE_DEVICE: &str = "https://oauth2.googleapis.com/device/code";
pub const GOOGLE_TOKEN: &str = "https://oauth2.googleapis.com/token";
pub const GOOGLE_AUTHORIZE: &str = "https://accounts.google.com/o/oauth2/v2/auth";
pub const GOOGLE_MAIL_SCOPE: &str = "https://mail.google.com/";

/// The endpoints a flow talks to. Each is optional because not every server offers every flow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    pub device_authorization: Option<String>,
    pub token: Option<String>,
    pub authorization: Option<String>,
}

impl Endpoints {
    /// Fill the gaps in `self` from `other`: explicit settings win over presets and discovery.
    pub fn or(self, other: Endpoints) -> Endpoints {
        Endpoints {
            device_authorization: self.device_authorization.or(other.device_authorization),
            token: self.token.or(other.token),
            authorization: self.authorization.or(other.authorization),
        }
    }
}

pub fn preset_endpoints(provider: Provider, tenant: Option<&str>) -> Endpoints {
    match provider {
        Provider::Microsoft => {
            let base = format!(
                "{MICROSOFT_LOGIN}/{}/oauth2/v2.0",
                tenant.unwrap_or("common")
            );
            Endpoints {
                device_authorization: Some(format!("{base}/devicecode")),
                token: Some(format!("{base}/token")),
                authorization: Some(format!("{base}/authorize")),
            }
        }
        Provider::Google => Endpoints {
            device_authorization: Some(GOOGLE_DEVICE.into()),
            token: Some(GOOGLE_TOKEN.into()),
            authorization: Some(GOOGLE_AUTHORIZE.into()),
        },
        Provider::Generic => Endpoints::default(),
    }
}

/// The scopes to request for `services` on `provider`.
pub fn service_scopes(provider: Provider, services: &[Service]) -> Result<Vec<String>> {
    let services = if services.is_empty() {
        &[Service::Imap, Service::Smtp][..]
    } else {
        services
    };
    match provider {
        Provider::Microsoft => {
            let mut scopes: Vec<String> = services
                .iter()
                .map(|s| {
                    match s {
                        Service::Imap => "https://outlook.office.com/IMAP.AccessAsUser.All",
                        Service::Smtp => "https://outlook.office.com/SMTP.Send",
                        Service::Pop => "https://outlook.office.com/POP.AccessAsUser.All",
                    }
                    .to_string()
                })
                .collect();
            scopes.dedup();
            scopes.push("offline_access".into());
            Ok(scopes)
        }
        // One scope covers IMAP, POP and SMTP; Google grants refresh tokens without offline_access
        // and rejects it as an unknown scope.
        Provider::Google => Ok(vec![GOOGLE_MAIL_SCOPE.into()]),
        Provider::Generic => Err(usage(
            "a generic provider has no preset scopes: set `scopes = [...]` in the account",
        )),
    }
}

/// Accept https everywhere and plain http only towards this machine (local test servers).
pub fn check_endpoint_url(what: &str, url: &str) -> Result<()> {
    let parsed = reqwest::Url::parse(url)
        .with_context(|| format!("{what} `{url}` is not a valid URL"))
        .map_err(|e| usage(format!("{e:#}")))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&parsed) => Ok(()),
        "http" => Err(usage(format!(
            "{what} `{url}` uses plain http: only https is allowed, except for loopback test servers"
        ))),
        other => Err(usage(format!(
            "{what} `{url}` has scheme `{other}`: use https"
        ))),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Where OIDC discovery looks for an issuer's metadata (RFC 8414 / OpenID Connect Discovery).
pub fn discovery_url(issuer: &str) -> String {
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
}

pub fn parse_discovery(issuer: &str, body: &[u8]) -> Result<Endpoints> {
    let doc: Discovery = serde_json::from_slice(body)
        .with_context(|| format!("the OIDC discovery document of `{issuer}` is not valid JSON"))?;
    if let Some(found) = &doc.issuer
        && found.trim_end_matches('/') != issuer.trim_end_matches('/')
    {
        bail!("the discovery document names issuer `{found}`, not `{issuer}`: check `issuer`");
    }
    Ok(Endpoints {
        device_authorization: doc.device_authorization_endpoint,
        token: doc.token_endpoint,
        authorization: doc.authorization_endpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsoft_presets_use_v2_endpoints_for_the_tenant() {
        let e = preset_endpoints(Provider::Microsoft, Some("contoso.onmicrosoft.com"));
        assert_eq!(
            e.token.as_deref(),
            Some("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token")
        );
        assert_eq!(
            e.device_authorization.as_deref(),
            Some(
                "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode"
            )
        );
        let common = preset_endpoints(Provider::Microsoft, None);
        assert!(common.token.unwrap().contains("/common/"));
    }

    #[test]
    fn microsoft_scopes_follow_services_and_add_offline_access() {
        let s = service_scopes(Provider::Microsoft, &[Service::Imap, Service::Pop]).unwrap();
        assert_eq!(
            s,
            [
                "https://outlook.office.com/IMAP.AccessAsUser.All",
                "https://outlook.office.com/POP.AccessAsUser.All",
                "offline_access"
            ]
        );
        let default = service_scopes(Provider::Microsoft, &[]).unwrap();
        assert!(default.contains(&"https://outlook.office.com/SMTP.Send".to_string()));
    }

    #[test]
    fn google_uses_the_single_mail_scope() {
        let s = service_scopes(Provider::Google, &[Service::Smtp]).unwrap();
        assert_eq!(s, ["https://mail.google.com/"]);
        assert!(service_scopes(Provider::Generic, &[Service::Imap]).is_err());
    }

    #[test]
    fn plain_http_only_for_loopback() {
        assert!(check_endpoint_url("token_endpoint", "https://example.com/token").is_ok());
        assert!(check_endpoint_url("token_endpoint", "http://127.0.0.1:8080/t").is_ok());
        assert!(check_endpoint_url("token_endpoint", "http://[::1]:8080/t").is_ok());
        assert!(check_endpoint_url("token_endpoint", "http://localhost/t").is_ok());
        assert!(check_endpoint_url("token_endpoint", "http://example.com/t").is_err());
        assert!(check_endpoint_url("token_endpoint", "http://10.0.0.1/t").is_err());
        assert!(check_endpoint_url("token_endpoint", "ftp://example.com/t").is_err());
        assert!(check_endpoint_url("token_endpoint", "not a url").is_err());
    }

    #[test]
    fn discovery_fills_endpoints_and_checks_the_issuer() {
        let body = br#"{"issuer":"https://id.example.com","token_endpoint":"https://id.example.com/t","device_authorization_endpoint":"https://id.example.com/d"}"#;
        let e = parse_discovery("https://id.example.com/", body).unwrap();
        assert_eq!(e.token.as_deref(), Some("https://id.example.com/t"));
        assert!(parse_discovery("https://other.example.com", body).is_err());
        assert!(parse_discovery("https://id.example.com", b"<html>").is_err());
        assert_eq!(
            discovery_url("https://id.example.com/"),
            "https://id.example.com/.well-known/openid-configuration"
        );
    }
}
