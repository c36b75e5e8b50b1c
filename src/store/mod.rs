//! The token store: where an account's tokens live (a private file, the OS keyring, or the
//! user's commands), and the per-account lock that makes one process the refresher.

mod command;
mod file;
mod keyring;
pub mod lock;
mod tokens;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

pub use lock::{AccountLock, LOCK_TIMEOUT};
pub use tokens::{AccessToken, FORMAT_VERSION, Tokens, parse};

/// Where an account's tokens live. The lock file is always in the data directory, so the
/// one-refresher guarantee holds whatever keeps the secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// `<data dir>/<account>.json`, 0600, replaced atomically.
    #[default]
    File,
    /// The OS keyring: Secret Service, macOS Keychain, Windows Credential Manager.
    Keyring,
    /// User commands (`pass`, `gpg`...): one prints the JSON, one reads it on stdin.
    Command {
        load: String,
        save: String,
        erase: Option<String>,
    },
}

pub use keyring::KEYRING_SERVICE;

/// A store made ready to take new tokens (see `Store::prepare`). Dropped unused, the temp
/// file goes away with it.
pub struct Pending {
    tmp: Option<tempfile::NamedTempFile>,
}

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    backend: Backend,
}

impl Store {
    /// The file store in `dir`.
    pub fn new(dir: PathBuf) -> Store {
        Store::with_backend(dir, Backend::File)
    }

    pub fn with_backend(dir: PathBuf, backend: Backend) -> Store {
        Store { dir, backend }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Where the account's tokens are, for people to read.
    pub fn location(&self, account: &str) -> String {
        match &self.backend {
            Backend::File => self.token_path(account).display().to_string(),
            Backend::Keyring => {
                format!("OS keyring (service `{KEYRING_SERVICE}`, user `{account}`)")
            }
            Backend::Command { load, .. } => format!("command `{load}`"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn token_path(&self, account: &str) -> PathBuf {
        self.dir.join(format!("{account}.json"))
    }

    pub fn lock_path(&self, account: &str) -> PathBuf {
        self.dir.join(format!("{account}.lock"))
    }

    /// Wait for the account's exclusive lock: hold it across read, refresh and write.
    pub fn lock(&self, account: &str, timeout: Duration) -> Result<AccountLock> {
        self.ensure_dir()?;
        lock::exclusive(&self.lock_path(account), timeout)
    }

    /// The stored tokens, or `None` when the account has never logged in. Tokens that do not
    /// parse are an error and are left exactly as they are: they may hold the only refresh token.
    pub fn load(&self, account: &str) -> Result<Option<Tokens>> {
        let bytes = match &self.backend {
            Backend::File => return file::load(&self.token_path(account), account),
            Backend::Keyring => keyring::load(account)?,
            Backend::Command { load, .. } => command::load(load)?,
        };
        match bytes {
            None => Ok(None),
            Some(bytes) => parse(&bytes).map(Some).with_context(|| {
                format!(
                    "the tokens in {} are damaged; they were left untouched. Remove them and run `mailtoken login {account}`",
                    self.location(account)
                )
            }),
        }
    }

    /// Replace the account's tokens atomically: a crash leaves the old file or the new one.
    pub fn save(&self, account: &str, tokens: &Tokens) -> Result<()> {
        match &self.backend {
            Backend::File => {
                let tmp = self.new_temp(account)?;
                self.write_file(account, tmp, tokens)
            }
            Backend::Keyring => keyring::save(account, tokens),
            Backend::Command { save, .. } => command::save(save, tokens),
        }
    }

    /// Get ready to store new tokens *before* asking the server for them: a rotating server
    /// revokes the old refresh token as it answers, so a store found unwritable only afterwards
    /// would lose the login. For files this creates the temp file now. Call it under the lock.
    pub fn prepare(&self, account: &str) -> Result<Pending> {
        Ok(Pending {
            tmp: match self.backend {
                Backend::File => Some(self.new_temp(account)?),
                _ => None,
            },
        })
    }

    /// Store the tokens through what `prepare` made ready.
    pub fn commit(&self, account: &str, pending: Pending, tokens: &Tokens) -> Result<()> {
        match pending.tmp {
            Some(tmp) => self.write_file(account, tmp, tokens),
            None => self.save(account, tokens),
        }
    }

    /// Whether new tokens could be stored now (no lock needed): checked before an interactive
    /// login, so that nobody approves a login whose tokens cannot be kept.
    pub fn ensure_writable(&self) -> Result<()> {
        if self.backend != Backend::File {
            return Ok(());
        }
        self.ensure_dir()?;
        tempfile::Builder::new()
            .prefix(".mailtoken-probe.")
            .tempfile_in(&self.dir)
            .map(drop)
            .with_context(|| format!("cannot create a file in {}", self.dir.display()))
    }

    fn new_temp(&self, account: &str) -> Result<tempfile::NamedTempFile> {
        self.ensure_dir()?;
        file::remove_stale_temps(&self.dir, account);
        file::new_temp(&self.dir, account)
    }

    fn write_file(
        &self,
        account: &str,
        tmp: tempfile::NamedTempFile,
        tokens: &Tokens,
    ) -> Result<()> {
        file::write(&self.dir, &self.token_path(account), tmp, tokens)
    }

    /// Forget an account's tokens. Returns whether there was anything to forget.
    pub fn remove(&self, account: &str) -> Result<bool> {
        match &self.backend {
            Backend::File => {}
            Backend::Keyring => return keyring::remove(account),
            Backend::Command { erase: None, .. } => bail!(
                "this account stores its tokens through commands but has no `store_erase_command`: remove them yourself"
            ),
            Backend::Command {
                erase: Some(erase), ..
            } => {
                command::erase(erase)?;
                return Ok(true);
            }
        }
        file::remove_stale_temps(&self.dir, account);
        file::remove(&self.dir, &self.token_path(account))
    }

    pub fn ensure_dir(&self) -> Result<()> {
        file::ensure_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::fingerprint;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn access(token: &str) -> AccessToken {
        AccessToken {
            access_token: token.into(),
            token_type: "Bearer".into(),
            expires_at: 2_000_000_000,
            scope: Some("mail".into()),
        }
    }

    fn sample() -> Tokens {
        let mut t = Tokens::empty();
        t.update(None, access("at-secret"), Some("rt-secret".into()));
        t.update(Some("graph"), access("graph-secret"), None);
        t
    }

    #[test]
    fn save_then_load_round_trips_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path().join("store"));
        assert!(store.load("a").unwrap().is_none());
        store.save("a", &sample()).unwrap();
        assert_eq!(store.load("a").unwrap(), Some(sample()));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.token_path("a")), 0o600);
        assert_eq!(mode(store.dir()), 0o700);
        assert!(store.remove("a").unwrap());
        assert!(!store.remove("a").unwrap());
    }

    #[test]
    fn version_one_files_without_resources_still_load() {
        let t = parse(br#"{"version":1,"access_token":"a","token_type":"Bearer","expires_at":5,"refresh_token":"r"}"#).unwrap();
        assert_eq!(t.access_for(None).unwrap().access_token, "a");
        assert!(t.resources.is_empty() && t.access_for(Some("x")).is_none());
        let app_only = parse(br#"{"version":1,"resources":{"s":{"access_token":"a","token_type":"Bearer","expires_at":5}}}"#).unwrap();
        assert!(app_only.access_for(None).is_none());
        assert_eq!(app_only.access_for(Some("s")).unwrap().access_token, "a");
        let mut rotated = sample();
        rotated.update(Some("graph"), access("g2"), Some("rt-2".into()));
        assert_eq!(rotated.refresh_token.as_deref(), Some("rt-2"));
        assert_eq!(rotated.access_for(None), sample().access_for(None));
    }

    #[test]
    fn command_backend_round_trips_through_shell_commands() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("vault");
        let f = file.display();
        let store = Store::with_backend(
            tmp.path().join("data"),
            Backend::Command {
                load: format!("cat {f} 2>/dev/null || true"),
                save: format!("cat > {f}.new && mv {f}.new {f}"),
                erase: Some(format!("rm -f {f}")),
            },
        );
        assert!(store.load("a").unwrap().is_none());
        store.save("a", &sample()).unwrap();
        assert_eq!(store.load("a").unwrap(), Some(sample()));
        assert!(store.location("a").starts_with("command `cat "));
        assert!(store.remove("a").unwrap());
        assert!(store.load("a").unwrap().is_none());
        let failing = Store::with_backend(
            tmp.path().to_path_buf(),
            Backend::Command {
                load: "echo '{broken'".into(),
                save: "exit 7".into(),
                erase: None,
            },
        );
        assert!(format!("{:#}", failing.load("a").unwrap_err()).contains("damaged"));
        assert!(failing.save("a", &sample()).is_err());
        assert!(failing.remove("a").is_err());
    }

    #[test]
    fn loose_modes_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path().to_path_buf());
        store.save("a", &sample()).unwrap();
        let path = store.token_path("a");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        store.load("a").unwrap().unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn damaged_files_are_reported_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path().to_path_buf());
        let junk: [&[u8]; 7] = [
            b"",
            b"{",
            b"\x00\xff",
            b"{\"version\":2}",
            b"{\"version\":1}",
            b"[]",
            b"{\"version\":1,\"access_token\":\"\",\"token_type\":\"B\",\"expires_at\":1}",
        ];
        for junk in junk {
            fs::write(store.token_path("a"), junk).unwrap();
            let err = format!("{:#}", store.load("a").unwrap_err());
            assert!(err.contains("damaged"), "{err}");
            assert_eq!(fs::read(store.token_path("a")).unwrap(), junk);
        }
    }

    #[test]
    fn freshness_respects_the_margin() {
        let t = sample().access.unwrap();
        assert!(t.is_fresh(t.expires_at - 301, 300));
        assert!(!t.is_fresh(t.expires_at - 300, 300));
        assert!(!t.is_fresh(u64::MAX, 300));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let shown = format!("{:?}", sample());
        assert!(
            !shown.contains("at-secret") && !shown.contains("rt-secret"),
            "{shown}"
        );
        assert_ne!(fingerprint("a"), fingerprint("b"));
    }
}
