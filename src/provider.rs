//! Provider presets: endpoints, mail scopes, mail servers and the first login's flow for
//! Microsoft (each of its clouds), Google, Yahoo, AOL, Fastmail and Zoho (each of its data
//! centres), and generic servers.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::usage;

/// Microsoft ends a login whose refresh token has not been used for this long.
pub const MICROSOFT_UNUSED_LOGIN_ENDS: u64 = 90 * 86_400;

/// How a provider ends logins of its own accord, in words for `status`; None when it says
/// nothing we know of. (Microsoft: `MICROSOFT_UNUSED_LOGIN_ENDS`, which doctor checks;
/// Google's 7 days for apps in Testing are `login_lifetime_days`' to say, for notify.)
pub fn login_limit(provider: Provider) -> Option<&'static str> {
    match provider {
        Provider::Microsoft => Some("Microsoft ends a login left unused for 90 days"),
        Provider::Google => Some(
            "Google ends a login left unused for 6 months, and after 7 days for an app in Testing",
        ),
        Provider::Yahoo
        | Provider::Aol
        | Provider::Fastmail
        | Provider::Zoho
        | Provider::Generic => None,
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Microsoft,
    Google,
    Yahoo,
    Aol,
    Fastmail,
    Zoho,
    #[default]
    Generic,
}

/// Microsoft's clouds: the global one, and the national clouds, each with its own login,
/// mail and Graph hosts (an app is registered in the cloud it is used in).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Cloud {
    /// Microsoft 365 and Outlook.com (GCC tenants too)
    #[default]
    Global,
    /// US Government GCC High
    Usgov,
    /// US Government DoD
    UsgovDod,
    /// China, operated by 21Vianet
    China,
}

/// Zoho's data centres: an account lives in one, and logs in and reads mail there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Region {
    #[default]
    #[serde(rename = "com")]
    #[value(name = "com")]
    Com,
    #[serde(rename = "eu")]
    #[value(name = "eu")]
    Eu,
    #[serde(rename = "in")]
    #[value(name = "in")]
    In,
    #[serde(rename = "com.au")]
    #[value(name = "com.au")]
    ComAu,
    #[serde(rename = "jp")]
    #[value(name = "jp")]
    Jp,
    #[serde(rename = "com.cn")]
    #[value(name = "com.cn")]
    ComCn,
}

impl Region {
    /// The data centre's domain: `zoho.DOMAIN` hosts its accounts and mail servers.
    pub fn domain(self) -> &'static str {
        match self {
            Region::Com => "com",
            Region::Eu => "eu",
            Region::In => "in",
            Region::ComAu => "com.au",
            Region::Jp => "jp",
            Region::ComCn => "com.cn",
        }
    }
}

/// Where an account's provider serves it, for the providers that serve from several places.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Site {
    pub cloud: Cloud,
    pub region: Region,
}

/// One Microsoft cloud's hosts.
pub struct MicrosoftCloud {
    /// The Entra ID login host.
    pub login: &'static str,
    /// The Exchange Online resource: the prefix of the mail scopes.
    pub resource: &'static str,
    /// The resource as the app-only (client credentials) scope names it.
    pub app_resource: &'static str,
    pub imap_pop: &'static str,
    pub smtp: &'static str,
    pub graph: &'static str,
}

/// The hosts of each Microsoft cloud (learn.microsoft.com, "national clouds"; the DoD and
/// China mail hosts as the README says, checked as far as public sources go).
pub fn microsoft_cloud(cloud: Cloud) -> MicrosoftCloud {
    match cloud {
        Cloud::Global => MicrosoftCloud {
            login: "https://login.microsoftonline.com",
            resource: "https://outlook.office.com",
            app_resource: "https://outlook.office365.com",
            imap_pop: "outlook.office365.com",
            smtp: "smtp.office365.com",
            graph: "https://graph.microsoft.com",
        },
        Cloud::Usgov => MicrosoftCloud {
            login: "https://login.microsoftonline.us",
            resource: "https://outlook.office365.us",
            app_resource: "https://outlook.office365.us",
            imap_pop: "outlook.office365.us",
            smtp: "smtp.office365.us",
            graph: "https://graph.microsoft.us",
        },
        Cloud::UsgovDod => MicrosoftCloud {
            login: "https://login.microsoftonline.us",
            resource: "https://outlook-dod.office365.us",
            app_resource: "https://outlook-dod.office365.us",
            imap_pop: "outlook-dod.office365.us",
            smtp: "outlook-dod.office365.us",
            graph: "https://dod-graph.microsoft.us",
        },
        Cloud::China => MicrosoftCloud {
            login: "https://login.partner.microsoftonline.cn",
            resource: "https://partner.outlook.cn",
            app_resource: "https://partner.outlook.cn",
            imap_pop: "partner.outlook.cn",
            smtp: "smtp.partner.outlook.cn",
            graph: "https://microsoftgraph.chinacloudapi.cn",
        },
    }
}

/// Mail providers that offer no OAuth login to mail programs, with the way in they do offer.
const NO_OAUTH_FOR_MAIL: &[(&str, &str)] = &[
    ("icloud", "iCloud Mail"),
    ("gmx", "GMX"),
    ("webde", "WEB.DE"),
    ("web.de", "WEB.DE"),
];

/// `--provider NAME`: a preset, or for a provider without OAuth for mail the advice to use an
/// app password in the mail program itself (mailtoken has nothing to add there).
pub fn parse_provider(name: &str) -> std::result::Result<Provider, String> {
    if let Some((_, known_as)) = NO_OAUTH_FOR_MAIL
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        return Err(format!(
            "{known_as} has no OAuth login for mail programs: make an app-specific password in \
             its account settings and give it to the mail program directly (no mailtoken needed)"
        ));
    }
    <Provider as clap::ValueEnum>::from_str(name, true).map_err(|_| {
        "the providers are microsoft (Microsoft 365, Outlook.com), google (Gmail, Workspace), \
         yahoo, aol, fastmail, zoho, and generic (any OAuth2/OIDC server)"
            .to_string()
    })
}

/// clap's parser for `--provider`: `parse_provider`, with the presets as the possible values
/// (for help and completion).
#[derive(Debug, Clone, Copy)]
pub struct ProviderArg;

impl clap::builder::TypedValueParser for ProviderArg {
    type Value = Provider;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> std::result::Result<Provider, clap::Error> {
        let name = value.to_string_lossy();
        parse_provider(&name).map_err(|why| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid value '{name}' for '--provider': {why}\n"),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        use clap::ValueEnum;
        Some(Box::new(
            Provider::value_variants()
                .iter()
                .filter_map(Provider::to_possible_value),
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Imap,
    Smtp,
    Pop,
}

impl Service {
    /// The name in settings and messages: `imap`, `pop`, `smtp`.
    pub fn name(self) -> &'static str {
        match self {
            Service::Imap => "imap",
            Service::Pop => "pop",
            Service::Smtp => "smtp",
        }
    }

    /// Implicit TLS for IMAP and POP, submission with STARTTLS for SMTP.
    pub fn default_port(self) -> u16 {
        match self {
            Service::Imap => 993,
            Service::Pop => 995,
            Service::Smtp => 587,
        }
    }
}

/// How the first login happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Flow {
    /// Device authorization grant: a URL and a code, entered in any browser (works over SSH)
    Device,
    /// Authorization code + PKCE through a browser and a listener on 127.0.0.1
    Browser,
    /// Client credentials: app-only, no user (a secret or a certificate)
    Credentials,
}

/// Google does not allow the mail scope on its device flow, Yahoo, AOL and Fastmail have none,
/// and Zoho's is its own protocol, not RFC 8628's: they need the browser.
pub fn default_flow(provider: Provider) -> Flow {
    match provider {
        Provider::Google
        | Provider::Yahoo
        | Provider::Aol
        | Provider::Fastmail
        | Provider::Zoho => Flow::Browser,
        Provider::Microsoft | Provider::Generic => Flow::Device,
    }
}

/// Whether the provider lets a mail login happen by device code (Google's device flow refuses
/// the mail scope; Yahoo, AOL and Fastmail have none). A generic server may: discovery says.
pub fn has_device_flow(provider: Provider) -> bool {
    matches!(provider, Provider::Microsoft | Provider::Generic)
}

/// The redirect URI registered for desktop apps, when the account names none. Microsoft's
/// "Mobile and desktop applications" platform takes `http://localhost` with any port; Zoho
/// wants the URI registered exactly, port included, so its preset names one. A generic
/// server gets the path too: `http://127.0.0.1/` is the form a URL takes once normalised, the
/// one a strict RFC 8252 server (oidc-provider) stores and compares with the port removed.
pub fn default_redirect_uri(provider: Provider) -> &'static str {
    match provider {
        Provider::Microsoft => "http://localhost",
        Provider::Zoho => ZOHO_REDIRECT_URI,
        Provider::Google | Provider::Yahoo | Provider::Aol | Provider::Fastmail => {
            "http://127.0.0.1"
        }
        Provider::Generic => "http://127.0.0.1/",
    }
}

/// App-only scopes: client credentials take `RESOURCE/.default`, never delegated scopes.
pub fn app_scopes(provider: Provider, site: Site) -> Result<Vec<String>> {
    match provider {
        Provider::Microsoft => Ok(vec![microsoft_app_scope(site.cloud)]),
        Provider::Google => Err(usage(
            "Google has no client-credentials login for mail: use flow = \"browser\", or a \
             Workspace service account (`service_account_key`)",
        )),
        Provider::Yahoo | Provider::Aol | Provider::Fastmail | Provider::Zoho => {
            Err(usage(format!(
                "{} has no client-credentials login for mail: use flow = \"browser\"",
                provider.name()
            )))
        }
        Provider::Generic => Err(usage(
            "a generic provider has no preset app-only scopes: set `scopes = [...]` in the account",
        )),
    }
}

/// The app-only scope for IMAP, POP and SMTP in a Microsoft cloud.
pub fn microsoft_app_scope(cloud: Cloud) -> String {
    format!("{}/.default", microsoft_cloud(cloud).app_resource)
}
pub const GOOGLE_DEVICE: &str = "https://oauth2.googleapis.com/device/code";
pub const GOOGLE_TOKEN: &str = "https://oauth2.googleapis.com/token";
pub const GOOGLE_AUTHORIZE: &str = "https://accounts.google.com/o/oauth2/v2/auth";
pub const GOOGLE_MAIL_SCOPE: &str = "https://mail.google.com/";
/// Yahoo's and AOL's one scope for IMAP, POP and SMTP (read and write).
pub const YAHOO_MAIL_SCOPE: &str = "mail-w";
pub const FASTMAIL_AUTHORIZE: &str = "https://api.fastmail.com/oauth/authorize";
pub const FASTMAIL_TOKEN: &str = "https://api.fastmail.com/oauth/refresh";
/// Zoho's preset redirect URI, to register with the app as it is.
pub const ZOHO_REDIRECT_URI: &str = "http://localhost:8400/";

impl Provider {
    /// The provider's name, as people know it.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Microsoft => "Microsoft",
            Provider::Google => "Google",
            Provider::Yahoo => "Yahoo",
            Provider::Aol => "AOL",
            Provider::Fastmail => "Fastmail",
            Provider::Zoho => "Zoho",
            Provider::Generic => "a generic provider",
        }
    }
}

/// The endpoints a flow talks to. Each is optional because not every server offers every flow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    pub device_authorization: Option<String>,
    pub token: Option<String>,
    pub authorization: Option<String>,
    /// The issuer an authorization response's `iss` must name (RFC 9207), when known.
    pub issuer: Option<String>,
    /// The issuer always sends `iss` in authorization responses (from discovery).
    pub iss_parameter: bool,
    /// `token_endpoint_auth_methods_supported` of the discovery document; empty if unknown.
    pub auth_methods: Vec<String>,
    /// The OIDC userinfo endpoint (the account's `userinfo_endpoint`, or discovery's).
    pub userinfo: Option<String>,
}

impl Endpoints {
    /// Fill the gaps in `self` from `other`: explicit settings win over presets and discovery.
    pub fn or(self, other: Endpoints) -> Endpoints {
        Endpoints {
            device_authorization: self.device_authorization.or(other.device_authorization),
            token: self.token.or(other.token),
            authorization: self.authorization.or(other.authorization),
            issuer: self.issuer.or(other.issuer),
            iss_parameter: self.iss_parameter || other.iss_parameter,
            userinfo: self.userinfo.or(other.userinfo),
            auth_methods: if self.auth_methods.is_empty() {
                other.auth_methods
            } else {
                self.auth_methods
            },
        }
    }

    /// The token endpoint, or the error that says how to give one.
    pub fn need_token(&self, account: &str) -> Result<&str> {
        need(&self.token, "token_endpoint", account, "")
    }

    pub fn need_authorization(&self, account: &str) -> Result<&str> {
        need(&self.authorization, "authorization_endpoint", account, "")
    }

    pub fn need_device_authorization(&self, account: &str) -> Result<&str> {
        need(
            &self.device_authorization,
            "device_authorization_endpoint",
            account,
            ", or use `--browser`",
        )
    }
}

fn need<'a>(url: &'a Option<String>, key: &str, account: &str, or: &str) -> Result<&'a str> {
    url.as_deref().ok_or_else(|| {
        usage(format!(
            "account `{account}` has no {key}: set it, or `issuer` for discovery{or}"
        ))
    })
}

pub fn preset_endpoints(provider: Provider, site: Site, tenant: Option<&str>) -> Endpoints {
    match provider {
        Provider::Microsoft => {
            let base = format!(
                "{}/{}/oauth2/v2.0",
                microsoft_cloud(site.cloud).login,
                tenant.unwrap_or("common")
            );
            Endpoints {
                device_authorization: Some(format!("{base}/devicecode")),
                token: Some(format!("{base}/token")),
                authorization: Some(format!("{base}/authorize")),
                ..Endpoints::default()
            }
        }
        Provider::Google => Endpoints {
            device_authorization: Some(GOOGLE_DEVICE.into()),
            token: Some(GOOGLE_TOKEN.into()),
            authorization: Some(GOOGLE_AUTHORIZE.into()),
            ..Endpoints::default()
        },
        // Yahoo and AOL (one company) run the same service under two names.
        Provider::Yahoo | Provider::Aol => {
            let base = if provider == Provider::Yahoo {
                "https://api.login.yahoo.com/oauth2"
            } else {
                "https://api.login.aol.com/oauth2"
            };
            Endpoints {
                token: Some(format!("{base}/get_token")),
                authorization: Some(format!("{base}/request_auth")),
                ..Endpoints::default()
            }
        }
        Provider::Fastmail => Endpoints {
            token: Some(FASTMAIL_TOKEN.into()),
            authorization: Some(FASTMAIL_AUTHORIZE.into()),
            ..Endpoints::default()
        },
        Provider::Zoho => {
            let base = format!("https://accounts.zoho.{}/oauth/v2", site.region.domain());
            Endpoints {
                token: Some(format!("{base}/token")),
                authorization: Some(format!("{base}/auth")),
                ..Endpoints::default()
            }
        }
        Provider::Generic => Endpoints::default(),
    }
}

/// The scopes to request for `services` on `provider`.
pub fn service_scopes(provider: Provider, site: Site, services: &[Service]) -> Result<Vec<String>> {
    let services = if services.is_empty() {
        &[Service::Imap, Service::Smtp][..]
    } else {
        services
    };
    match provider {
        Provider::Microsoft => {
            let resource = microsoft_cloud(site.cloud).resource;
            let mut scopes: Vec<String> = services
                .iter()
                .map(|s| {
                    let permission = match s {
                        Service::Imap => "IMAP.AccessAsUser.All",
                        Service::Smtp => "SMTP.Send",
                        Service::Pop => "POP.AccessAsUser.All",
                    };
                    format!("{resource}/{permission}")
                })
                .collect();
            scopes.dedup();
            scopes.push("offline_access".into());
            Ok(scopes)
        }
        // One scope covers IMAP, POP and SMTP; Google grants refresh tokens without offline_access
        // and rejects it as an unknown scope.
        Provider::Google => Ok(vec![GOOGLE_MAIL_SCOPE.into()]),
        // Yahoo and AOL: one scope too, and refresh tokens without asking.
        Provider::Yahoo | Provider::Aol => Ok(vec![YAHOO_MAIL_SCOPE.into()]),
        // Fastmail: one scope per protocol.
        Provider::Fastmail => Ok(services
            .iter()
            .map(|s| format!("https://www.fastmail.com/dev/protocol-{}", s.name()))
            .collect()),
        // Zoho: one scope per protocol, and refresh tokens with access_type=offline.
        Provider::Zoho => Ok(services
            .iter()
            .map(|s| format!("ZOHOMAIL.PROTOCOL.{}", s.name().to_uppercase()))
            .collect()),
        Provider::Generic => Err(usage(
            "a generic provider has no preset scopes: set `scopes = [...]` in the account",
        )),
    }
}

/// The scope parameter of a request for `scopes`: space-separated (RFC 6749 3.3), except at
/// Zoho, which reads commas.
pub fn scope_param(provider: Provider, scopes: &[String]) -> String {
    scopes.join(if provider == Provider::Zoho { "," } else { " " })
}

/// The provider's mail server for a service: host and port (TLS mode follows from the port).
pub fn mail_server(provider: Provider, site: Site, service: Service) -> Option<(String, u16)> {
    let port = service.default_port();
    match provider {
        Provider::Microsoft => {
            let cloud = microsoft_cloud(site.cloud);
            let host = match service {
                Service::Imap | Service::Pop => cloud.imap_pop,
                Service::Smtp => cloud.smtp,
            };
            Some((host.to_string(), port))
        }
        // Accounts of one's own domain use imappro/poppro/smtppro (README).
        Provider::Zoho => Some((
            format!("{}.zoho.{}", service.name(), site.region.domain()),
            port,
        )),
        _ => fixed_mail_server(provider, service).map(|(host, port)| (host.to_string(), port)),
    }
}

fn fixed_mail_server(provider: Provider, service: Service) -> Option<(&'static str, u16)> {
    match (provider, service) {
        (Provider::Google, Service::Imap) => Some(("imap.gmail.com", 993)),
        (Provider::Google, Service::Pop) => Some(("pop.gmail.com", 995)),
        (Provider::Google, Service::Smtp) => Some(("smtp.gmail.com", 587)),
        (Provider::Yahoo, Service::Imap) => Some(("imap.mail.yahoo.com", 993)),
        (Provider::Yahoo, Service::Pop) => Some(("pop.mail.yahoo.com", 995)),
        (Provider::Yahoo, Service::Smtp) => Some(("smtp.mail.yahoo.com", 587)),
        (Provider::Aol, Service::Imap) => Some(("imap.aol.com", 993)),
        (Provider::Aol, Service::Pop) => Some(("pop.aol.com", 995)),
        (Provider::Aol, Service::Smtp) => Some(("smtp.aol.com", 587)),
        (Provider::Fastmail, Service::Imap) => Some(("imap.fastmail.com", 993)),
        (Provider::Fastmail, Service::Pop) => Some(("pop.fastmail.com", 995)),
        (Provider::Fastmail, Service::Smtp) => Some(("smtp.fastmail.com", 587)),
        (Provider::Microsoft | Provider::Zoho | Provider::Generic, _) => None,
    }
}
/// Google's OpenID Connect userinfo endpoint (answers only for tokens with openid/email scopes).
pub const GOOGLE_USERINFO: &str = "https://openidconnect.googleapis.com/v1/userinfo";
/// The Gmail API, whose `users/me/profile` names the mailbox of a mail-scope-only token.
pub const GMAIL_API: &str = "https://gmail.googleapis.com";

/// Accept https everywhere and plain http only towards this machine (local test servers).
pub fn validate_endpoint_url(what: &str, url: &str) -> Result<()> {
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

/// Whether a URL points at this machine.
pub fn is_loopback(url: &reqwest::Url) -> bool {
    url.host_str().is_some_and(is_loopback_host)
}

/// `localhost`, `127.x.y.z`, `::1` or `[::1]`: a host on this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsoft_presets_use_v2_endpoints_for_the_tenant() {
        let e = preset_endpoints(
            Provider::Microsoft,
            Site::default(),
            Some("contoso.onmicrosoft.com"),
        );
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
        let common = preset_endpoints(Provider::Microsoft, Site::default(), None);
        assert!(common.token.unwrap().contains("/common/"));
    }

    #[test]
    fn microsoft_scopes_follow_services_and_add_offline_access() {
        let s = service_scopes(
            Provider::Microsoft,
            Site::default(),
            &[Service::Imap, Service::Pop],
        )
        .unwrap();
        assert_eq!(
            s,
            [
                "https://outlook.office.com/IMAP.AccessAsUser.All",
                "https://outlook.office.com/POP.AccessAsUser.All",
                "offline_access"
            ]
        );
        let default = service_scopes(Provider::Microsoft, Site::default(), &[]).unwrap();
        assert!(default.contains(&"https://outlook.office.com/SMTP.Send".to_string()));
    }

    #[test]
    fn google_uses_the_single_mail_scope() {
        let s = service_scopes(Provider::Google, Site::default(), &[Service::Smtp]).unwrap();
        assert_eq!(s, ["https://mail.google.com/"]);
        assert!(service_scopes(Provider::Generic, Site::default(), &[Service::Imap]).is_err());
    }

    #[test]
    fn plain_http_only_for_loopback() {
        assert!(validate_endpoint_url("token_endpoint", "https://example.com/token").is_ok());
        assert!(validate_endpoint_url("token_endpoint", "http://127.0.0.1:8080/t").is_ok());
        assert!(validate_endpoint_url("token_endpoint", "http://[::1]:8080/t").is_ok());
        assert!(validate_endpoint_url("token_endpoint", "http://localhost/t").is_ok());
        assert!(validate_endpoint_url("token_endpoint", "http://example.com/t").is_err());
        assert!(validate_endpoint_url("token_endpoint", "http://10.0.0.1/t").is_err());
        assert!(validate_endpoint_url("token_endpoint", "ftp://example.com/t").is_err());
        assert!(validate_endpoint_url("token_endpoint", "not a url").is_err());
    }

    #[test]
    fn providers_without_oauth_for_mail_get_the_advice_instead() {
        assert_eq!(parse_provider("Google"), Ok(Provider::Google));
        for name in ["icloud", "GMX", "webde", "web.de"] {
            let advice = parse_provider(name).unwrap_err();
            assert!(advice.contains("app-specific password"), "{name}: {advice}");
        }
        assert!(parse_provider("yahooo").unwrap_err().contains("generic"));
    }

    /// Each preset's whole set-up, as its provider documents it: where to log in and fetch
    /// tokens, what to ask for, which servers, and how the first login happens.
    #[test]
    fn yahoo_aol_and_fastmail_presets() {
        for (provider, host) in [(Provider::Yahoo, "yahoo.com"), (Provider::Aol, "aol.com")] {
            let e = preset_endpoints(provider, Site::default(), None);
            assert_eq!(
                e.authorization.as_deref(),
                Some(format!("https://api.login.{host}/oauth2/request_auth").as_str())
            );
            assert_eq!(
                e.token.as_deref(),
                Some(format!("https://api.login.{host}/oauth2/get_token").as_str())
            );
            assert_eq!(e.device_authorization, None);
            assert_eq!(
                service_scopes(provider, Site::default(), &[]).unwrap(),
                ["mail-w"]
            );
            assert_eq!(default_flow(provider), Flow::Browser);
            assert!(app_scopes(provider, Site::default()).is_err());
        }
        assert_eq!(
            mail_server(Provider::Yahoo, Site::default(), Service::Imap),
            Some(("imap.mail.yahoo.com".to_string(), 993))
        );
        assert_eq!(
            mail_server(Provider::Aol, Site::default(), Service::Smtp),
            Some(("smtp.aol.com".to_string(), 587))
        );
        let f = preset_endpoints(Provider::Fastmail, Site::default(), None);
        assert_eq!(
            f.authorization.as_deref(),
            Some("https://api.fastmail.com/oauth/authorize")
        );
        assert_eq!(
            f.token.as_deref(),
            Some("https://api.fastmail.com/oauth/refresh")
        );
        assert_eq!(
            service_scopes(
                Provider::Fastmail,
                Site::default(),
                &[Service::Imap, Service::Smtp]
            )
            .unwrap(),
            [
                "https://www.fastmail.com/dev/protocol-imap",
                "https://www.fastmail.com/dev/protocol-smtp"
            ]
        );
        assert_eq!(default_flow(Provider::Fastmail), Flow::Browser);
        assert_eq!(
            mail_server(Provider::Fastmail, Site::default(), Service::Pop),
            Some(("pop.fastmail.com".to_string(), 995))
        );
    }

    /// Each Microsoft cloud's login host, mail scopes, servers and app-only scope; Graph too.
    #[test]
    fn microsoft_national_clouds_swap_every_host() {
        let site = |cloud| Site {
            cloud,
            ..Site::default()
        };
        for (cloud, login, resource, imap, smtp) in [
            (
                Cloud::Usgov,
                "https://login.microsoftonline.us",
                "https://outlook.office365.us",
                "outlook.office365.us",
                "smtp.office365.us",
            ),
            (
                Cloud::UsgovDod,
                "https://login.microsoftonline.us",
                "https://outlook-dod.office365.us",
                "outlook-dod.office365.us",
                "outlook-dod.office365.us",
            ),
            (
                Cloud::China,
                "https://login.partner.microsoftonline.cn",
                "https://partner.outlook.cn",
                "partner.outlook.cn",
                "smtp.partner.outlook.cn",
            ),
        ] {
            let e = preset_endpoints(Provider::Microsoft, site(cloud), Some("contoso"));
            assert_eq!(
                e.device_authorization.unwrap(),
                format!("{login}/contoso/oauth2/v2.0/devicecode")
            );
            assert_eq!(
                e.token.unwrap(),
                format!("{login}/contoso/oauth2/v2.0/token")
            );
            assert_eq!(
                service_scopes(
                    Provider::Microsoft,
                    site(cloud),
                    &[Service::Imap, Service::Smtp]
                )
                .unwrap(),
                [
                    format!("{resource}/IMAP.AccessAsUser.All"),
                    format!("{resource}/SMTP.Send"),
                    "offline_access".to_string()
                ]
            );
            assert_eq!(
                app_scopes(Provider::Microsoft, site(cloud)).unwrap(),
                [format!("{resource}/.default")]
            );
            assert_eq!(
                mail_server(Provider::Microsoft, site(cloud), Service::Pop),
                Some((imap.to_string(), 995))
            );
            assert_eq!(
                mail_server(Provider::Microsoft, site(cloud), Service::Smtp),
                Some((smtp.to_string(), 587))
            );
        }
        // The global cloud is as before: outlook.office.com scopes, office365.com app scope.
        assert_eq!(
            app_scopes(Provider::Microsoft, Site::default()).unwrap(),
            ["https://outlook.office365.com/.default"]
        );
        assert_eq!(
            microsoft_cloud(Cloud::China).graph,
            "https://microsoftgraph.chinacloudapi.cn"
        );
    }

    /// Zoho in each data centre: accounts.zoho.REGION, a scope per protocol sent comma-separated,
    /// the data centre's mail servers, the browser flow.
    #[test]
    fn zoho_lives_in_its_data_centre() {
        let eu = Site {
            region: Region::Eu,
            ..Site::default()
        };
        let e = preset_endpoints(Provider::Zoho, eu, None);
        assert_eq!(
            e.authorization.unwrap(),
            "https://accounts.zoho.eu/oauth/v2/auth"
        );
        assert_eq!(e.token.unwrap(), "https://accounts.zoho.eu/oauth/v2/token");
        assert_eq!(e.device_authorization, None);
        let scopes = service_scopes(Provider::Zoho, eu, &[Service::Imap, Service::Smtp]).unwrap();
        assert_eq!(scopes, ["ZOHOMAIL.PROTOCOL.IMAP", "ZOHOMAIL.PROTOCOL.SMTP"]);
        assert_eq!(
            scope_param(Provider::Zoho, &scopes),
            "ZOHOMAIL.PROTOCOL.IMAP,ZOHOMAIL.PROTOCOL.SMTP"
        );
        assert_eq!(scope_param(Provider::Fastmail, &scopes), scopes.join(" "));
        let au = Site {
            region: Region::ComAu,
            ..Site::default()
        };
        assert_eq!(
            mail_server(Provider::Zoho, au, Service::Imap),
            Some(("imap.zoho.com.au".to_string(), 993))
        );
        assert_eq!(
            preset_endpoints(Provider::Zoho, Site::default(), None)
                .token
                .unwrap(),
            "https://accounts.zoho.com/oauth/v2/token"
        );
        assert_eq!(default_flow(Provider::Zoho), Flow::Browser);
        assert!(!has_device_flow(Provider::Zoho));
    }
}
