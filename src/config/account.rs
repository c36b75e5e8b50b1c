//! One account's settings as written in the config, what follows from them (flow, scopes,
//! endpoints, store), its client secret, and which of its tokens a caller wants.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::error::usage;
use crate::provider::{self, Cloud, Endpoints, Flow, Provider, Region, Service, Site};
use crate::shell;
use crate::store::Backend;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub provider: Provider,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Microsoft: the cloud the tenant lives in (national clouds have their own hosts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud: Option<Cloud>,
    /// Zoho: the data centre the account lives in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    /// Empty when the key is absent (IMAP and SMTP then); `services = []` is refused.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "some_services"
    )]
    pub services: Vec<Service>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_command: Option<String>,
    /// A PEM file of CA certificates trusted besides the system's, for this account's token
    /// endpoints and mail servers (a private CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// How the client secret reaches the token endpoint; by default, what the discovery
    /// document offers (post when it offers both, or says nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_method: Option<SecretMethod>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<Flow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_authorization_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<String>,
    /// More parameters for the browser flow's authorization address (`domain_hint`, `prompt =
    /// "select_account"`, a `login_hint` other than `user`): what a provider's sign-in page
    /// reads. The protocol's own parameters cannot be set here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_authorize_params: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_margin: Option<u64>,
    /// A shell command run when this account's login has died (the file's `notify_command`
    /// otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_command: Option<String>,
    /// Days a login lasts at this provider when its token server does not say (7 for a Google
    /// app in Testing): `notify_command` is run when the end is a day away.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_lifetime_days: Option<u32>,
    /// What a call that finds the login dead does besides failing: "device" starts a device
    /// login in the background and tells `notify_command` where to approve it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relogin: Option<Relogin>,
    /// Google Workspace: a service account's JSON key. The account then gets app-only tokens
    /// for `user`'s mailbox (domain-wide delegation), with no login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account_key: Option<PathBuf>,
    /// Where the tokens live: "file" (default), "keyring" or "command".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_load_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_save_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_erase_command: Option<String>,
    /// Other scope sets the same refresh token can mint tokens for, by name (Graph, say).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, Vec<String>>,
    /// Mail servers for `check` and `send-test`, over the provider presets (see mail/servers.rs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap_tls: Option<TlsMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pop_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pop_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pop_tls: Option<TlsMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_tls: Option<TlsMode>,
    /// Microsoft Graph base URL [default: the account's cloud's, https://graph.microsoft.com]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph_url: Option<String>,
    /// OpenID Connect userinfo endpoint, for `whoami`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userinfo_endpoint: Option<String>,
    /// Gmail API base URL, for `whoami` [default: https://gmail.googleapis.com]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gmail_url: Option<String>,
}

/// A new login started by the call that finds the old one dead (flows/relogin.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Relogin {
    /// Nothing: the call fails and a person runs `mailtoken login` (the default).
    Off,
    /// A device login in the background, its address and code sent to `notify_command`:
    /// approvable from a phone, with no terminal.
    Device,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    File,
    Keyring,
    Command,
}

/// RFC 6749 section 2.3.1: the secret in an HTTP Basic `Authorization` header (which every
/// server must accept) or in the form body (which Microsoft and Google take).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum SecretMethod {
    ClientSecretBasic,
    ClientSecretPost,
}

/// How a connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS (SMTP submission on 587)
    Starttls,
    /// TLS from the first byte (993, 995, 465)
    Tls,
    /// No TLS at all: only for test servers on this machine
    None,
}

impl Account {
    pub fn flow(&self) -> Flow {
        self.flow.unwrap_or_else(|| {
            // A service account has no person to log in: its tokens are app-only.
            if self.service_account_key.is_some() {
                Flow::Credentials
            } else {
                provider::default_flow(self.provider)
            }
        })
    }

    /// The service account key file, `~` expanded.
    pub fn service_account_key(&self) -> Option<PathBuf> {
        self.service_account_key.as_deref().map(expand_home)
    }

    /// The account's own scopes: explicit ones, or the preset for its services and flow.
    pub fn scopes(&self) -> Result<Vec<String>> {
        if !self.scopes.is_empty() {
            Ok(self.scopes.clone())
        } else if self.service_account_key.is_some() {
            Ok(vec![provider::GOOGLE_MAIL_SCOPE.into()])
        } else if self.flow() == Flow::Credentials {
            provider::app_scopes(self.provider, self.site())
        } else {
            provider::service_scopes(self.provider, self.site(), &self.services)
        }
    }

    /// The token store backend the account asks for; `validate` made sure it is complete.
    pub fn backend(&self) -> Backend {
        match (
            self.store,
            &self.store_load_command,
            &self.store_save_command,
        ) {
            (Some(StoreKind::Keyring), _, _) => Backend::Keyring,
            (Some(StoreKind::Command), Some(load), Some(save)) => Backend::Command {
                load: load.clone(),
                save: save.clone(),
                erase: self.store_erase_command.clone(),
            },
            _ => Backend::File,
        }
    }

    /// The account's own settings for one mail service: host, port, TLS mode.
    pub fn mail_overrides(&self, service: Service) -> (Option<&str>, Option<u16>, Option<TlsMode>) {
        match service {
            Service::Imap => (self.imap_host.as_deref(), self.imap_port, self.imap_tls),
            Service::Pop => (self.pop_host.as_deref(), self.pop_port, self.pop_tls),
            Service::Smtp => (self.smtp_host.as_deref(), self.smtp_port, self.smtp_tls),
        }
    }

    /// Where the provider serves the account: its Microsoft cloud, its Zoho data centre.
    pub fn site(&self) -> Site {
        Site {
            cloud: self.cloud.unwrap_or_default(),
            region: self.region.unwrap_or_default(),
        }
    }

    /// The scope parameter of a request for `scopes`, as the provider reads it.
    pub fn scope_param(&self, scopes: &[String]) -> String {
        provider::scope_param(self.provider, scopes)
    }

    /// Microsoft Graph for this account: its `graph_url`, else its cloud's.
    pub fn graph_url(&self) -> &str {
        self.graph_url
            .as_deref()
            .unwrap_or_else(|| provider::microsoft_cloud(self.site().cloud).graph)
    }

    pub fn redirect_uri(&self) -> &str {
        self.redirect_uri
            .as_deref()
            .unwrap_or_else(|| provider::default_redirect_uri(self.provider))
    }

    /// Endpoints from explicit settings, then from the provider preset. Discovery (for an
    /// `issuer`) fills what is still missing, at the moment a request is due.
    pub fn configured_endpoints(&self) -> Endpoints {
        Endpoints {
            device_authorization: self.device_authorization_endpoint.clone(),
            token: self.token_endpoint.clone(),
            authorization: self.authorization_endpoint.clone(),
            issuer: self.issuer.clone(),
            iss_parameter: false,
            auth_methods: Vec::new(),
            userinfo: self.userinfo_endpoint.clone(),
        }
        .or(provider::preset_endpoints(
            self.provider,
            self.site(),
            self.tenant.as_deref(),
        ))
    }

    /// The client secret, if the account has one. Read only when a request needs it, never
    /// from argv, never logged.
    pub fn client_secret(&self) -> Result<Option<String>> {
        if let Some(var) = &self.client_secret_env {
            let value = std::env::var(var).map_err(|_| {
                usage(format!(
                    "client_secret_env names `{var}`, but that variable is not set"
                ))
            })?;
            return Ok(Some(value.trim().to_string()));
        }
        if let Some(path) = &self.client_secret_file {
            let path = expand_home(path);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!("cannot read the client secret from {}", path.display())
            })?;
            return Ok(Some(first_line(&text)?));
        }
        if let Some(cmd) = &self.client_secret_command {
            let out = shell::run("client_secret_command", cmd, None)?;
            let text = String::from_utf8(out)
                .context("client_secret_command printed something that is not UTF-8")?;
            return Ok(Some(first_line(&text)?));
        }
        Ok(None)
    }
}

fn first_line(text: &str) -> Result<String> {
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        bail!("the client secret is empty");
    }
    Ok(line.to_string())
}

/// `services` as written, which must name at least one: an empty list would otherwise mean
/// the default services, the opposite of what it says.
fn some_services<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Service>, D::Error> {
    let services = Vec::<Service>::deserialize(d)?;
    if services.is_empty() {
        return Err(serde::de::Error::custom(
            "`services = []` names no service: list at least one of \"imap\", \"smtp\", \"pop\", or remove the line for IMAP and SMTP",
        ));
    }
    Ok(services)
}

impl Account {
    /// `tls_ca_file`, with a leading `~` made the home directory.
    pub fn tls_ca_file(&self) -> Option<PathBuf> {
        self.tls_ca_file.as_deref().map(expand_home)
    }
}

fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

/// Which access token is wanted: the account's own (`key` None) or one for other scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub key: Option<String>,
    pub scopes: Vec<String>,
}

impl Want {
    pub fn own(account: &Account) -> Result<Want> {
        Ok(Want {
            key: None,
            scopes: account.scopes()?,
        })
    }

    /// From `--resource NAME` or `--scope S...`; either may name the account's own scopes.
    pub fn pick(account: &Account, resource: Option<&str>, scopes: &[String]) -> Result<Want> {
        let mut wanted = match resource {
            Some(name) => account.resources.get(name).cloned().ok_or_else(|| {
                let known: Vec<&str> = account.resources.keys().map(String::as_str).collect();
                usage(format!(
                    "the account has no resource `{name}` (known: {}); add it under [accounts.NAME.resources]",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ))
            })?,
            None if scopes.is_empty() => return Want::own(account),
            None => scopes.to_vec(),
        };
        // Microsoft only returns a refresh token (often a rotated one) when asked for it.
        if account.provider == Provider::Microsoft
            && account.flow() != Flow::Credentials
            && !wanted.iter().any(|s| s == "offline_access")
        {
            wanted.push("offline_access".into());
        }
        let own = account.scopes()?;
        if same_scopes(&wanted, &own) {
            return Want::own(account);
        }
        Ok(Want {
            key: Some(wanted.join(" ")),
            scopes: wanted,
        })
    }
}

fn same_scopes(a: &[String], b: &[String]) -> bool {
    let mut a: Vec<&String> = a.iter().collect();
    let mut b: Vec<&String> = b.iter().collect();
    a.sort();
    b.sort();
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn microsoft() -> Account {
        let config = Config::parse(
            r#"
[accounts.work]
provider = "microsoft"
client_id = "id"
[accounts.work.resources]
graph = ["https://graph.microsoft.com/Mail.Send"]
"#,
        )
        .unwrap();
        config.accounts["work"].clone()
    }

    #[test]
    fn named_resources_get_their_own_key_with_offline_access() {
        let a = microsoft();
        let w = Want::pick(&a, Some("graph"), &[]).unwrap();
        assert_eq!(
            w.key.as_deref(),
            Some("https://graph.microsoft.com/Mail.Send offline_access")
        );
        assert!(Want::pick(&a, Some("nope"), &[]).is_err());
        assert_eq!(Want::pick(&a, None, &[]).unwrap(), Want::own(&a).unwrap());
    }

    #[test]
    fn asking_for_the_own_scopes_in_any_order_is_the_own_token() {
        let a = microsoft();
        let mut own = a.scopes().unwrap();
        own.reverse();
        assert_eq!(Want::pick(&a, None, &own).unwrap().key, None);
    }
}
