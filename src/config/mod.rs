//! The TOML config file: where files live, loading and checking the accounts, and opening one.

mod account;
mod paths;
mod sections;
pub mod snapshot;
mod validate;
mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub use account::{Account, Relogin, SecretMethod, StoreKind, TlsMode, Want};
pub use paths::Paths;
pub use snapshot::Stamp;
pub use validate::{validate_account_name, validate_user};
pub use write::{account_toml, append_account, renamed_account, replace, without_account};

use crate::error::usage;
use crate::store::Store;

/// Seconds of life a cached access token must still have to be handed out.
pub const DEFAULT_REFRESH_MARGIN: u64 = 300;

/// The top-level keys an account inherits: all that `Config::open` takes from the file's top
/// level, and all that a snapshot (`snapshot.rs`) carries beside the account. One list for
/// both, so that a key added here reaches the cached `token` call too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_margin: Option<u64>,
    /// Run when an account's login has died (see notify.rs); an account's own wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_command: Option<String>,
}

#[derive(Debug, Default)]
pub struct Config {
    pub defaults: Defaults,
    /// Local listeners of `mailtoken proxy`.
    pub proxy: Option<ProxySettings>,
    pub accounts: BTreeMap<String, Account>,
    /// Why the file is not safe to act on (others can write it, or it is not ours), as the
    /// refusal says it: `open` then refuses every account; `status` only looks.
    pub unsafe_file: Option<String>,
}

/// The file as written: the `Defaults` keys at the top level, beside `[proxy]` and the
/// accounts. (Not `#[serde(flatten)]`: it cannot refuse unknown keys, and TOML's line numbers
/// would be lost.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    refresh_margin: Option<u64>,
    notify_command: Option<String>,
    proxy: Option<ProxySettings>,
    #[serde(default)]
    accounts: BTreeMap<String, Account>,
}

impl From<File> for Config {
    fn from(file: File) -> Config {
        // Every field by name: a key added to `File` must be placed here, and any a
        // account may inherit belongs in `Defaults`.
        let File {
            refresh_margin,
            notify_command,
            proxy,
            accounts,
        } = file;
        Config {
            defaults: Defaults {
                refresh_margin,
                notify_command,
            },
            proxy,
            accounts,
            unsafe_file: None,
        }
    }
}

/// `[proxy]`: where `mailtoken proxy` listens, and who may use it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySettings {
    pub imap: Option<String>,
    pub pop: Option<String>,
    pub smtp: Option<String>,
    /// Listeners with TLS from the first byte (with `tls_certificate` and `tls_key`).
    pub imaps: Option<String>,
    pub pops: Option<String>,
    pub smtps: Option<String>,
    /// A certificate (chain) and its key, PEM, for local TLS: implicit on imaps/pops/smtps,
    /// STARTTLS on the others.
    pub tls_certificate: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A local password for clients of other users (and the only way in for them), as an
    /// Argon2 hash from `mailtoken proxy --hash-password`; never the password itself.
    pub password_hash: Option<String>,
    /// Seconds a client has from connecting to logging in (default 300).
    pub login_timeout: Option<u64>,
}

/// One account, ready to use: its settings, its token store and its refresh margin. Every
/// command gets one from `open` (or `Config::open`), the one place that puts it together.
#[derive(Debug, Clone)]
pub struct OpenAccount {
    pub name: String,
    pub account: Account,
    pub store: Store,
    /// Seconds of life a cached access token must still have to be handed out.
    pub margin: u64,
    /// The command that tells the person a login has died: the account's, else the file's.
    pub notify: Option<String>,
    /// Where the account was read from and its data kept: what a program started to carry on
    /// its work (a background login) is told.
    pub paths: Paths,
}

/// Load the config and open the account `name` in it.
pub fn open(paths: &Paths, name: &str) -> Result<OpenAccount> {
    Config::load(&paths.config)?.open(paths, name)
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        Config::read(path).map(|(config, _)| config)
    }

    /// Load the config, with the file's stamp at the time (for `snapshot::save`).
    pub fn read(path: &Path) -> Result<(Config, Option<Stamp>)> {
        let mut file = match std::fs::File::open(path) {
            Ok(file) => file,
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
        // The stamp before the read: a change during it gives the next reader another stamp.
        let stamp = file.metadata().ok().map(|meta| Stamp::of(&meta));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let config = Config::from_text(path, &text)?;
        Ok((config, stamp))
    }

    /// The config in `text`, read from `path`: parsed, checked, and made safe to act on.
    pub fn from_text(path: &Path, text: &str) -> Result<Config> {
        let config =
            Config::parse(text).map_err(|e| usage(format!("{}: {e:#}", path.display())))?;
        Ok(config.made_safe(path))
    }

    /// The steps every config takes before use, read from the file or from a snapshot of it
    /// (`snapshot::load`): whether the file is safe to act on, and the variables that hold
    /// secrets kept from the programs mailtoken starts.
    fn made_safe(mut self, path: &Path) -> Config {
        self.unsafe_file = unsafe_file(path);
        for account in self.accounts.values() {
            if let Some(var) = &account.client_secret_env {
                crate::shell::withhold_env(var);
            }
        }
        self
    }

    pub fn parse(text: &str) -> Result<Config> {
        let file: File = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let config = Config::from(file);
        for (name, account) in &config.accounts {
            validate_account_name(name)?;
            account
                .validate()
                .with_context(|| format!("account `{name}`"))?;
        }
        Ok(config)
    }

    /// The first command setting in the file, named for a message: "`notify_command`" or
    /// "`client_secret_command` of account `work`".
    pub fn first_command(&self) -> Option<String> {
        if self.defaults.notify_command.is_some() {
            return Some("`notify_command`".into());
        }
        self.accounts.iter().find_map(|(name, a)| {
            [
                ("client_secret_command", &a.client_secret_command),
                ("store_load_command", &a.store_load_command),
                ("store_save_command", &a.store_save_command),
                ("store_erase_command", &a.store_erase_command),
                ("notify_command", &a.notify_command),
            ]
            .into_iter()
            .find(|(_, cmd)| cmd.is_some())
            .map(|(setting, _)| format!("`{setting}` of account `{name}`"))
        })
    }

    /// The account a mail program names when it logs in to the proxy: by its `user`
    /// (case-insensitively, as mail servers compare them), else by its name.
    /// The account a proxied login names: by its name, or by its `user` when exactly one
    /// account has it. Never a guess: with two accounts of that user, the names of both.
    pub fn account_for_login(&self, login: &str) -> Result<&str, Vec<&str>> {
        if let Some((name, _)) = self.accounts.get_key_value(login) {
            return Ok(name);
        }
        let named: Vec<&str> = self
            .accounts
            .iter()
            .filter(|(_, a)| {
                a.user
                    .as_deref()
                    .is_some_and(|u| u.eq_ignore_ascii_case(login))
            })
            .map(|(name, _)| name.as_str())
            .collect();
        match named.as_slice() {
            [one] => Ok(one),
            _ => Err(named),
        }
    }

    /// Users that more than one account has, with those accounts' names: a proxied login by
    /// such a user must name its account.
    pub fn shared_users(&self) -> Vec<(String, Vec<&str>)> {
        let mut by_user: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (name, account) in &self.accounts {
            if let Some(user) = &account.user {
                by_user
                    .entry(user.to_ascii_lowercase())
                    .or_default()
                    .push(name);
            }
        }
        by_user.retain(|_, names| names.len() > 1);
        by_user.into_iter().collect()
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

    /// The account `name` with its store and margin.
    pub fn open(&self, paths: &Paths, name: &str) -> Result<OpenAccount> {
        if let Some(refusal) = &self.unsafe_file {
            return Err(usage(refusal.clone()));
        }
        self.look(paths, name)
    }

    /// The account `name` opened to be looked at (`status`), from a config `open` may refuse:
    /// nothing of it may be sent anywhere or run.
    pub fn look(&self, paths: &Paths, name: &str) -> Result<OpenAccount> {
        let account = self.account(name)?;
        Ok(OpenAccount {
            name: name.to_string(),
            store: Store::with_backend(paths.data_dir.clone(), account.backend())
                .chosen_by_user(paths.data_dir_chosen),
            margin: self.refresh_margin(account),
            notify: account
                .notify_command
                .clone()
                .or_else(|| self.defaults.notify_command.clone()),
            account: account.clone(),
            paths: paths.clone(),
        })
    }

    /// Every account in the config, opened, in name order.
    pub fn open_all(&self, paths: &Paths) -> Result<Vec<OpenAccount>> {
        self.accounts
            .keys()
            .map(|name| self.open(paths, name))
            .collect()
    }

    pub fn refresh_margin(&self, account: &Account) -> u64 {
        account
            .refresh_margin
            .or(self.defaults.refresh_margin)
            .unwrap_or(DEFAULT_REFRESH_MARGIN)
    }
}

/// What makes a config file unsafe to act on (other users can write it, or it is not ours),
/// and its fix, in words. None when it is private enough (or cannot be examined, as when it
/// is not there).
pub fn shared_config(path: &Path) -> Option<(String, String)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let me = crate::sys::uid();
    if meta.uid() != me {
        let sudo = std::env::var("SUDO_USER")
            .map(|u| format!(" (you are uid {me} through sudo: run it as {u}, without sudo)"))
            .unwrap_or_default();
        return Some((
            format!("belongs to uid {}, not to you (uid {me})", meta.uid()),
            format!(
                "run mailtoken as the user who owns it{sudo}, or give it a config of your own \
                 with --config"
            ),
        ));
    }
    let mode = meta.mode() & 0o777;
    (mode & 0o022 != 0).then(|| {
        (
            format!("can be written by other users (mode {mode:03o})"),
            format!("`chmod go-w {}`", path.display()),
        )
    })
}

/// A config that another user can write, or owns, is theirs to point at their own token
/// server (and receive the refresh token) or to fill with commands run as us: no account of
/// it is opened for use (see `Config::open`). `status` and `doctor` read it all the same, to
/// say so. The refusal, in words.
fn unsafe_file(path: &Path) -> Option<String> {
    let (problem, fix) = shared_config(path)?;
    Some(format!(
        "{} {problem}: another user could send your logins to their own server or run \
         commands as you. Fix: {fix}",
        path.display()
    ))
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
    let message = e.message().trim();
    let message = match (message.starts_with("duplicate key"), e.span()) {
        (true, Some(span)) => duplicate(text, span),
        _ => shorter_message(message),
    };
    anyhow::anyhow!("{}{message}", place.unwrap_or_default())
}

/// What toml calls a "duplicate key", named: an account defined twice, or a key set twice.
fn duplicate(text: &str, span: std::ops::Range<usize>) -> String {
    let key = text
        .get(span.clone())
        .unwrap_or("")
        .trim_matches(['"', '\'']);
    let line_start = text
        .get(..span.start)
        .map_or(0, |b| b.rfind('\n').map_or(0, |i| i + 1));
    let line = text.get(line_start..span.start).unwrap_or("").trim_start();
    if line.starts_with("[accounts.") {
        format!(
            "the account `{key}` is defined twice: keep one [accounts.{key}] table (merge \
             the two), or give the other a new name"
        )
    } else {
        format!("`{key}` is set twice in the same table: keep one")
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`, ..." lists every key (three dozen for
/// an account): name the closest one instead, as a spelling fix.
fn shorter_message(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return plain_types(message);
    };
    let Some((unknown, expected)) = rest.split_once("`, expected one of ") else {
        return message.to_string();
    };
    let closest = expected
        .split(", ")
        .map(|k| k.trim_matches('`'))
        .min_by_key(|k| edit_distance(unknown, k));
    match closest {
        Some(key) if edit_distance(unknown, key) <= 3 => {
            format!("unknown key `{unknown}`: did you mean `{key}`?")
        }
        _ => format!("unknown key `{unknown}` (`man mailtoken.toml` lists the keys)"),
    }
}

/// Rust's names for types ("expected u64") in the words of a config file's reader.
fn plain_types(message: &str) -> String {
    [
        ("expected u64", "expected a number"),
        ("expected u16", "expected a port number (0-65535)"),
        (
            "expected a sequence",
            "expected a list, like [\"a\", \"b\"]",
        ),
        ("expected a boolean", "expected true or false"),
        (
            "expected a map",
            "expected a table, like { graph = [\"https://graph.microsoft.com/Mail.Send\"] }",
        ),
        // A number where one of a few words goes (`imap_tls = 5`).
        (
            "wanted string or table",
            "expected a word in quotes, like \"tls\"",
        ),
    ]
    .iter()
    .fold(message.to_string(), |text, (rust, plain)| {
        text.replace(rust, plain)
    })
}

/// Levenshtein distance, for spelling suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Provider;

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
    fn a_duplicate_account_or_key_is_named() {
        let twice =
            format!("{SAMPLE}\n[accounts.work]\nprovider = \"google\"\nclient_id = \"y\"\n");
        let err = Config::parse(&twice).unwrap_err().to_string();
        assert!(err.contains("the account `work` is defined twice"), "{err}");
        let err = Config::parse(&SAMPLE.replace(
            "refresh_margin = 10",
            "refresh_margin = 10\nrefresh_margin = 11",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("`refresh_margin` is set twice"), "{err}");
    }

    #[test]
    fn an_empty_services_list_is_refused_a_missing_one_is_the_default() {
        let err = Config::parse(&SAMPLE.replace(r#"services = ["imap", "smtp"]"#, "services = []"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("names no service"), "{err}");
        assert!(err.starts_with("line 9"), "{err}");
        let config = Config::parse(&SAMPLE.replace(r#"services = ["imap", "smtp"]"#, "")).unwrap();
        assert!(config.accounts["work"].services.is_empty());
        assert!(
            config.accounts["work"]
                .scopes()
                .unwrap()
                .iter()
                .any(|s| s.contains("IMAP"))
        );
    }

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
        assert!(msg.contains("did you mean `client_secret_env`?"), "{msg}");
        assert!(msg.len() < 200, "{msg}");
        let err = Config::parse("refresh_margin = \"soon\"").unwrap_err();
        assert!(format!("{err:#}").contains("line 1"));
        assert!(format!("{err:#}").contains("expected a number"), "{err:#}");
        let err = Config::parse(
            "[accounts.a]\nprovider = \"google\"\nclient_id = \"x\"\nscopes = \"mail\"\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("expected a list"), "{err:#}");
        for (line, plain) in [
            ("resources = \"x\"", "expected a table"),
            ("imap_tls = 5", "expected a word in quotes"),
        ] {
            let err = Config::parse(&format!(
                "[accounts.a]\nprovider = \"google\"\nclient_id = \"x\"\n{line}\n"
            ))
            .unwrap_err();
            assert!(format!("{err:#}").contains(plain), "{err:#}");
        }
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
    fn adding_through_a_symlinked_config_keeps_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("dotfiles/mailtoken.toml");
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(&real, "# mine\n").unwrap();
        let link = dir.path().join("config.toml");
        std::os::unix::fs::symlink("dotfiles/mailtoken.toml", &link).unwrap();
        let account = Config::parse(SAMPLE).unwrap().accounts["work"].clone();
        append_account(&link, "work", &account).unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let text = std::fs::read_to_string(&real).unwrap();
        assert!(
            text.starts_with("# mine\n") && text.contains("[accounts.work]"),
            "{text}"
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
