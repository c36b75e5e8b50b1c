//! Where an account's mail servers are: provider presets, overridden per account.

use std::fmt;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::config::Account;
use crate::error::usage;
use crate::provider::{self, Service};

/// How a connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS (SMTP submission on 587)
    Starttls,
    /// TLS from the first byte (993, 995, 465)
    Tls,
    /// No TLS at all: only for test servers on this machine
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tls = match self.tls {
            TlsMode::Starttls => "STARTTLS",
            TlsMode::Tls => "TLS",
            TlsMode::None => "no TLS",
        };
        write!(f, "{}:{} ({tls})", self.host, self.port)
    }
}

pub fn service_name(service: Service) -> &'static str {
    match service {
        Service::Imap => "imap",
        Service::Pop => "pop",
        Service::Smtp => "smtp",
    }
}

/// The account's overrides for one service: host, port, TLS mode.
fn overrides(account: &Account, service: Service) -> (Option<&str>, Option<u16>, Option<TlsMode>) {
    match service {
        Service::Imap => (
            account.imap_host.as_deref(),
            account.imap_port,
            account.imap_tls,
        ),
        Service::Pop => (
            account.pop_host.as_deref(),
            account.pop_port,
            account.pop_tls,
        ),
        Service::Smtp => (
            account.smtp_host.as_deref(),
            account.smtp_port,
            account.smtp_tls,
        ),
    }
}

/// The server to talk to for `service`: account settings first, then the provider preset.
pub fn server(account: &Account, service: Service) -> Result<Server> {
    let name = service_name(service);
    let (host, port, tls) = overrides(account, service);
    let preset = provider::mail_server(account.provider, service);
    let Some(host) = host.or(preset.map(|p| p.0)) else {
        return Err(usage(format!(
            "this account has no {name} server: set `{name}_host` (and `{name}_port`) in the account"
        )));
    };
    let port = port
        .or(preset.map(|p| p.1))
        .unwrap_or_else(|| default_port(service));
    let tls = tls.unwrap_or_else(|| default_tls(service, port));
    Ok(Server {
        host: host.to_string(),
        port,
        tls,
    })
}

fn default_port(service: Service) -> u16 {
    match service {
        Service::Imap => 993,
        Service::Pop => 995,
        Service::Smtp => 587,
    }
}

/// SMTP on 465 is implicit TLS, any other SMTP port STARTTLS; IMAP and POP use implicit TLS.
pub fn default_tls(service: Service, port: u16) -> TlsMode {
    match (service, port) {
        (Service::Smtp, 465) => TlsMode::Tls,
        (Service::Smtp, _) => TlsMode::Starttls,
        _ => TlsMode::Tls,
    }
}

pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Config checks: plain text only towards this machine, no STARTTLS where we do not speak it.
pub fn check(account: &Account) -> Result<()> {
    for service in [Service::Imap, Service::Pop, Service::Smtp] {
        let name = service_name(service);
        let (host, _, tls) = overrides(account, service);
        if let Some(host) = host
            && (host.is_empty() || host.contains(char::is_whitespace))
        {
            bail!("`{name}_host` `{host}` is not a host name");
        }
        let host = host.or(provider::mail_server(account.provider, service).map(|p| p.0));
        if tls == Some(TlsMode::None) && !host.is_some_and(is_loopback_host) {
            bail!(
                "`{name}_tls = \"none\"` would send the token in clear text: it is only allowed for \
                 test servers on this machine (127.0.0.1, ::1, localhost)"
            );
        }
        if tls == Some(TlsMode::Starttls) && service != Service::Smtp {
            bail!(
                "`{name}_tls = \"starttls\"` is not supported for {}: use \"tls\" (port {})",
                name.to_uppercase(),
                default_port(service)
            );
        }
    }
    for (what, url) in [
        ("graph_url", &account.graph_url),
        ("userinfo_endpoint", &account.userinfo_endpoint),
    ] {
        if let Some(url) = url {
            provider::check_endpoint_url(what, url)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn account(extra: &str) -> Result<Account> {
        let text = format!("[accounts.a]\nprovider = \"microsoft\"\nclient_id = \"x\"\n{extra}\n");
        Ok(Config::parse(&text)?.accounts["a"].clone())
    }

    #[test]
    fn presets_and_overrides() {
        let a = account("").unwrap();
        let smtp = server(&a, Service::Smtp).unwrap();
        assert_eq!(
            smtp,
            Server {
                host: "smtp.office365.com".into(),
                port: 587,
                tls: TlsMode::Starttls
            }
        );
        assert_eq!(server(&a, Service::Imap).unwrap().port, 993);
        assert_eq!(server(&a, Service::Pop).unwrap().port, 995);
        let a = account(
            "smtp_port = 465\nimap_host = \"127.0.0.1\"\nimap_port = 1143\nimap_tls = \"none\"",
        )
        .unwrap();
        assert_eq!(server(&a, Service::Smtp).unwrap().tls, TlsMode::Tls);
        let imap = server(&a, Service::Imap).unwrap();
        assert_eq!(imap.to_string(), "127.0.0.1:1143 (no TLS)");
    }

    #[test]
    fn plain_text_only_to_loopback() {
        assert!(account("smtp_host = \"127.0.0.1\"\nsmtp_tls = \"none\"").is_ok());
        assert!(account("smtp_host = \"localhost\"\nsmtp_tls = \"none\"").is_ok());
        assert!(account("smtp_host = \"[::1]\"\nsmtp_tls = \"none\"").is_ok());
        assert!(account("smtp_tls = \"none\"").is_err());
        assert!(account("smtp_host = \"10.0.0.1\"\nsmtp_tls = \"none\"").is_err());
        assert!(account("imap_tls = \"starttls\"").is_err());
        assert!(account("smtp_tls = \"maybe\"").is_err());
        assert!(account("graph_url = \"http://example.com\"").is_err());
        assert!(account("graph_url = \"http://127.0.0.1:9\"").is_ok());
    }

    #[test]
    fn generic_accounts_need_hosts() {
        let text = "[accounts.a]\nprovider = \"generic\"\nclient_id = \"x\"\ntoken_endpoint = \"https://t\"\nscopes = [\"s\"]\n";
        let a = Config::parse(text).unwrap().accounts["a"].clone();
        let err = server(&a, Service::Imap).unwrap_err().to_string();
        assert!(err.contains("imap_host"), "{err}");
    }
}
