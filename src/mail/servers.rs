//! Where an account's mail servers are: provider presets, overridden per account.

use std::fmt;

use anyhow::Result;

use crate::config::{Account, TlsMode};
use crate::error::usage;
use crate::provider::{self, Service};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// A private CA the account trusts besides the system's (`tls_ca_file`).
    pub ca_file: Option<std::path::PathBuf>,
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

/// The server to talk to for `service`: account settings first, then the provider preset.
pub fn server(account: &Account, service: Service) -> Result<Server> {
    let name = service.name();
    let (host, port, tls) = account.mail_overrides(service);
    let preset = provider::mail_server(account.provider, account.site(), service);
    let Some(host) = host.or(preset.as_ref().map(|p| p.0.as_str())) else {
        return Err(usage(format!(
            "this account has no {name} server: set `{name}_host` (and `{name}_port`) in the account"
        )));
    };
    let port = port
        .or(preset.as_ref().map(|p| p.1))
        .unwrap_or_else(|| service.default_port());
    let tls = tls.unwrap_or_else(|| default_tls(service, port));
    Ok(Server {
        host: host.to_string(),
        port,
        tls,
        ca_file: account.tls_ca_file(),
    })
}

/// SMTP on 465 is implicit TLS, any other SMTP port STARTTLS; IMAP and POP use implicit TLS.
pub fn default_tls(service: Service, port: u16) -> TlsMode {
    match (service, port) {
        (Service::Smtp, 465) => TlsMode::Tls,
        (Service::Smtp, _) => TlsMode::Starttls,
        _ => TlsMode::Tls,
    }
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
                tls: TlsMode::Starttls,
                ca_file: None,
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
    fn generic_accounts_need_hosts() {
        let text = "[accounts.a]\nprovider = \"generic\"\nclient_id = \"x\"\ntoken_endpoint = \"https://t\"\nscopes = [\"s\"]\n";
        let a = Config::parse(text).unwrap().accounts["a"].clone();
        let err = server(&a, Service::Imap).unwrap_err().to_string();
        assert!(err.contains("imap_host"), "{err}");
    }
}
