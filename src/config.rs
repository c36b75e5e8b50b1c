//! The TOML config file: accounts and settings, where files live, and the client secret.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::error::usage;
use crate::provider::{self, Endpoints, Flow, Provider, Service};
use crate::servers::TlsMode;
use crate::store::{Backend, Store};

/// Seconds of life a cached access token must still have to be handed out.
pub const DEFAULT_REFRESH_MARGIN: u64 = 300;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub refresh_margin: Option<u64>,
    #[serde(default)]
    pub accounts: BTreeMap<String, Account>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub provider: Provider,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_command: Option<String>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_margin: Option<u64>,
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
    /// Mail servers for `check` and `send-test`, over the provider presets (see servers.rs).
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
    /// Microsoft Graph base URL [default: https://graph.microsoft.com]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph_url: Option<String>,
    /// OpenID Connect userinfo endpoint, for `whoami`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userinfo_endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    File,
    Keyring,
    Command,
}

/// Where the config file and the token store are.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config: PathBuf,
    pub data_dir: PathBuf,
}

impl Paths {
    /// Explicit paths (flags or environment, already merged by clap) win over the XDG defaults.
    pub fn resolve(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<Paths> {
        let dirs = || {
            directories::ProjectDirs::from("", "", "mailtoken")
                .context("cannot find your home directory: pass --config and --data-dir explicitly")
        };
        let config = match config {
            Some(p) => p,
            None => dirs()?.config_dir().join("config.toml"),
        };
        let data_dir = match data_dir {
            Some(p) => p,
            None => dirs()?.data_dir().to_path_buf(),
        };
        Ok(Paths { config, data_dir })
    }
}

impl Paths {
    /// The token store for `account`, with the backend its config names.
    pub fn store_for(&self, account: &Account) -> Store {
        Store::with_backend(self.data_dir.clone(), account.backend())
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(usage(format!(
                    "no config file at {}: add an account with `mailtoken add NAME --provider ... --user ... --client-id ...`",
                    path.display()
                )));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        Config::parse(&text).map_err(|e| usage(format!("{}: {e:#}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        for (name, account) in &config.accounts {
            check_account_name(name)?;
            account
                .check()
                .with_context(|| format!("account `{name}`"))?;
        }
        Ok(config)
    }

    pub fn account(&self, name: &str) -> Result<&Account> {
        self.accounts.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.accounts.keys().map(String::as_str).collect();
            usage(if known.is_empty() {
                format!("no account `{name}`: the config has no accounts yet; add one with `mailtoken add`")
            } else {
                format!("no account `{name}` in the config (known: {})", known.join(", "))
            })
        })
    }

    pub fn refresh_margin(&self, account: &Account) -> u64 {
        account
            .refresh_margin
            .or(self.refresh_margin)
            .unwrap_or(DEFAULT_REFRESH_MARGIN)
    }
}

/// Where a TOML error is, and what it is, without toml's quote of the offending line: that line
/// may hold a secret (`client_secret = "..."` is an unknown key, and a common first guess).
fn toml_error(text: &str, e: &toml::de::Error) -> anyhow::Error {
    let place = e
        .span()
        .and_then(|span| text.get(..span.start))
        .map(|before| {
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("line {line}, column {column}: ")
        });
    anyhow::anyhow!("{}{}", place.unwrap_or_default(), e.message().trim())
}

/// Account names become file names in the store, so keep them to a safe alphabet.
pub fn check_account_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !ok {
        bail!(
            "`{name}` is not a usable account name: use letters, digits and . _ - @ (not starting with a dot)"
        );
    }
    Ok(())
}

impl Account {
    /// Checks that need no network: a config that fails here cannot work at all.
    pub fn check(&self) -> Result<()> {
        if self.client_id.trim().is_empty() {
            bail!("`client_id` is empty");
        }
        let secrets = [
            self.client_secret_env.is_some(),
            self.client_secret_file.is_some(),
            self.client_secret_command.is_some(),
        ];
        if secrets.iter().filter(|s| **s).count() > 1 {
            bail!(
                "set only one of `client_secret_env`, `client_secret_file`, `client_secret_command`"
            );
        }
        let has_certificate = match (&self.client_certificate, &self.client_key) {
            (Some(_), Some(_)) => true,
            (None, None) => false,
            _ => bail!("`client_certificate` and `client_key` go together: set both"),
        };
        if self.flow() == Flow::Credentials {
            if !has_certificate && !secrets.contains(&true) {
                bail!(
                    "flow = \"credentials\" needs a client secret (`client_secret_env`, `_file` or `_command`) or a certificate (`client_certificate` and `client_key`)"
                );
            }
            for scope in self.scopes()? {
                if self.provider == Provider::Microsoft && !scope.ends_with("/.default") {
                    bail!(
                        "scope `{scope}` cannot be used with client credentials: app-only scopes end in /.default (for IMAP/SMTP: {})",
                        provider::MICROSOFT_APP_SCOPE
                    );
                }
            }
        }
        if let Some(uri) = &self.redirect_uri {
            let parsed = reqwest::Url::parse(uri)
                .with_context(|| format!("redirect_uri `{uri}` is not a valid URL"))?;
            if parsed.scheme() != "http" || !provider::is_loopback(&parsed) {
                bail!(
                    "redirect_uri `{uri}` must be http://127.0.0.1, http://[::1] or http://localhost (with an optional port and path): mailtoken listens on this machine"
                );
            }
        }
        let commands = self.store_load_command.is_some()
            || self.store_save_command.is_some()
            || self.store_erase_command.is_some();
        match self.store {
            Some(StoreKind::Command)
                if self.store_load_command.is_none() || self.store_save_command.is_none() =>
            {
                bail!(
                    "store = \"command\" needs `store_load_command` (prints the tokens) and `store_save_command` (reads them on stdin)"
                );
            }
            Some(StoreKind::File | StoreKind::Keyring) | None if commands => {
                bail!("`store_*_command` settings need store = \"command\"")
            }
            _ => {}
        }
        for (name, scopes) in &self.resources {
            if scopes.is_empty() {
                bail!("resource `{name}` has no scopes");
            }
        }
        if self.tenant.is_some() && self.provider != Provider::Microsoft {
            bail!("`tenant` only applies to provider = \"microsoft\"");
        }
        self.scopes()?;
        crate::servers::check(self)?;
        if self.provider == Provider::Generic
            && self.issuer.is_none()
            && self.token_endpoint.is_none()
        {
            bail!("a generic provider needs `issuer` (for OIDC discovery) or `token_endpoint`");
        }
        for (what, url) in [
            ("issuer", &self.issuer),
            (
                "device_authorization_endpoint",
                &self.device_authorization_endpoint,
            ),
            ("token_endpoint", &self.token_endpoint),
            ("authorization_endpoint", &self.authorization_endpoint),
        ] {
            if let Some(url) = url {
                provider::check_endpoint_url(what, url)?;
            }
        }
        Ok(())
    }

    pub fn flow(&self) -> Flow {
        self.flow
            .unwrap_or_else(|| provider::default_flow(self.provider))
    }

    /// The account's own scopes: explicit ones, or the preset for its services and flow.
    pub fn scopes(&self) -> Result<Vec<String>> {
        if !self.scopes.is_empty() {
            Ok(self.scopes.clone())
        } else if self.flow() == Flow::Credentials {
            provider::app_scopes(self.provider)
        } else {
            provider::service_scopes(self.provider, &self.services)
        }
    }

    /// The token store backend the account asks for; `check` made sure it is complete.
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
        }
        .or(provider::preset_endpoints(
            self.provider,
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
            let out = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .with_context(|| format!("cannot run client_secret_command `{cmd}`"))?;
            if !out.status.success() {
                bail!("client_secret_command `{cmd}` failed ({})", out.status);
            }
            let text = String::from_utf8(out.stdout)
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

fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

/// The TOML text `mailtoken add` appends for a new account.
pub fn account_toml(name: &str, account: &Account) -> Result<String> {
    // Serialised under its full path so that nested tables get the right headers.
    #[derive(Serialize)]
    struct Wrapper<'a> {
        accounts: BTreeMap<&'a str, &'a Account>,
    }
    let wrapper = Wrapper {
        accounts: BTreeMap::from([(name, account)]),
    };
    let body = toml::to_string(&wrapper).context("cannot write the account as TOML")?;
    Ok(format!("\n{body}"))
}

/// Append an account to the config file, creating it if needed. The existing text is kept as
/// it is (comments included), and the result must still parse before it replaces the file.
pub fn append_account(path: &Path, name: &str, account: &Account) -> Result<()> {
    check_account_name(name).map_err(|e| usage(e.to_string()))?;
    account.check().map_err(|e| usage(format!("{e:#}")))?;
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let current = Config::parse(&existing).map_err(|e| {
        usage(format!(
            "{}: {e:#}; fix it before adding accounts",
            path.display()
        ))
    })?;
    if current.accounts.contains_key(name) {
        return Err(usage(format!(
            "account `{name}` already exists in {}",
            path.display()
        )));
    }
    let text = existing + &account_toml(name, account)?;
    Config::parse(&text).context("the new config does not parse (this is a bug)")?;

    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".config.toml.")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
refresh_margin = 120

[accounts.work]
provider = "microsoft"
user = "me@example.com"
client_id = "11111111-2222-3333-4444-555555555555"
tenant = "organizations"
services = ["imap", "smtp"]

[accounts.test]
provider = "generic"
client_id = "cli"
token_endpoint = "http://127.0.0.1:9/token"
scopes = ["mail"]
refresh_margin = 10
"#;

    #[test]
    fn parses_accounts_and_margins() {
        let c = Config::parse(SAMPLE).unwrap();
        let work = c.account("work").unwrap();
        assert_eq!(work.provider, Provider::Microsoft);
        assert_eq!(c.refresh_margin(work), 120);
        assert_eq!(c.refresh_margin(c.account("test").unwrap()), 10);
        assert!(
            work.configured_endpoints()
                .token
                .unwrap()
                .contains("/organizations/")
        );
        let err = c.account("nope").unwrap_err().to_string();
        assert!(err.contains("known: test, work"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_types_name_the_line() {
        let err = Config::parse(
            "[accounts.a]\nprovider = \"google\"\nclient_id = \"x\"\nclinet_secret_env = \"X\"\n",
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("line 4"), "{msg}");
        assert!(msg.contains("clinet_secret_env"), "{msg}");
        let err = Config::parse("refresh_margin = \"soon\"").unwrap_err();
        assert!(format!("{err:#}").contains("line 1"));
    }

    #[test]
    fn rejects_configs_that_cannot_work() {
        let cases = [
            "[accounts.a]\nprovider = \"generic\"\nclient_id = \"x\"\nscopes = [\"s\"]\n",
            "[accounts.a]\nprovider = \"generic\"\nclient_id = \"x\"\ntoken_endpoint = \"https://x/t\"\n",
            "[accounts.a]\nprovider = \"google\"\nclient_id = \"x\"\ntenant = \"common\"\n",
            "[accounts.a]\nprovider = \"google\"\nclient_id = \"\"\n",
            "[accounts.a]\nprovider = \"google\"\nclient_id = \"x\"\ntoken_endpoint = \"http://example.com/t\"\n",
            "[accounts.a]\nprovider = \"google\"\nclient_id = \"x\"\nclient_secret_env = \"A\"\nclient_secret_file = \"/b\"\n",
            "[accounts.\"../x\"]\nprovider = \"google\"\nclient_id = \"x\"\n",
        ];
        for case in cases {
            assert!(Config::parse(case).is_err(), "accepted:\n{case}");
        }
    }

    #[test]
    fn appended_account_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        let account = Config::parse(SAMPLE).unwrap().accounts["work"].clone();
        append_account(&path, "work", &account).unwrap();
        append_account(&path, "other.me", &account).unwrap();
        let again = append_account(&path, "work", &account).unwrap_err();
        assert!(again.to_string().contains("already exists"));
        let c = Config::load(&path).unwrap();
        assert_eq!(c.accounts.len(), 2);
        assert_eq!(
            c.accounts["other.me"].tenant.as_deref(),
            Some("organizations")
        );
    }

    #[test]
    fn secret_sources() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut a = Config::parse(SAMPLE).unwrap().accounts["test"].clone();
        assert_eq!(a.client_secret().unwrap(), None);
        a.client_secret_file = Some(file);
        assert_eq!(a.client_secret().unwrap().as_deref(), Some("s3cret"));
        a.client_secret_file = None;
        a.client_secret_command = Some("printf 'from-cmd\\n'".into());
        assert_eq!(a.client_secret().unwrap().as_deref(), Some("from-cmd"));
        a.client_secret_command = Some("exit 3".into());
        assert!(a.client_secret().is_err());
        a.client_secret_command = None;
        a.client_secret_env = Some("MAILTOKEN_TEST_SURELY_UNSET".into());
        assert!(a.client_secret().is_err());
    }
}
