//! The token store: where an account's tokens live (a private file, the OS keyring, or the
//! user's commands), and the per-account lock that makes one process the refresher. The
//! commit protocol is `commit.rs`, the notes for waiters `notes.rs`, the file names of the
//! data directory `dirs.rs`.

mod command;
mod commit;
mod dirs;
mod file;
mod keyring;
pub mod lock;
mod notes;
mod tokens;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

pub use commit::Pending;
pub use dirs::DataDir;
pub use lock::{AccountLock, LOCK_TIMEOUT};
pub use notes::Noted;
pub use tokens::{AccessToken, FORMAT_VERSION, Granted, LoginEnd, MAX_LIFETIME, Tokens, parse};

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

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    backend: Backend,
    /// The directory is mailtoken's own (the XDG default), so a loose mode on it is tightened.
    own_dir: bool,
}

impl Store {
    /// The file store in `dir`.
    pub fn new(dir: PathBuf) -> Store {
        Store::with_backend(dir, Backend::File)
    }

    pub fn with_backend(dir: PathBuf, backend: Backend) -> Store {
        Store {
            dir,
            backend,
            own_dir: true,
        }
    }

    /// A directory the user named is never chmod-ed (it may be shared, or /tmp); one that
    /// others can write is refused all the same.
    pub fn chosen_by_user(mut self, chosen: bool) -> Store {
        self.own_dir = !chosen;
        self
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

    /// The data directory's files, by name.
    pub fn files(&self) -> DataDir<'_> {
        DataDir::new(&self.dir)
    }

    pub fn token_path(&self, account: &str) -> PathBuf {
        self.files().tokens(account)
    }

    pub fn lock_path(&self, account: &str) -> PathBuf {
        self.files().lock(account)
    }

    /// Wait for the account's exclusive lock: hold it across read, refresh and write.
    pub fn lock(&self, account: &str, timeout: Duration) -> Result<AccountLock> {
        self.ensure_dir()?;
        lock::exclusive(&self.lock_path(account), timeout)
    }

    /// As `lock`, but asking `done` whenever the holder lets go: None when it says the lock
    /// is no longer needed (the holder stored what we were waiting for).
    pub fn lock_unless(
        &self,
        account: &str,
        timeout: Duration,
        mut done: impl FnMut() -> bool,
    ) -> Result<Option<AccountLock>> {
        self.ensure_dir()?;
        lock::exclusive_unless(&self.lock_path(account), timeout, &mut done)
    }

    /// The lock of the account's background login, if no such login is running.
    pub fn relogin_lock(&self, account: &str) -> Result<Option<AccountLock>> {
        self.ensure_dir()?;
        lock::try_exclusive(&self.files().relogin_lock(account))
    }

    /// Whether a background login of the account is running (its process holds the lock).
    pub fn relogin_running(&self, account: &str) -> bool {
        lock::is_held(&self.files().relogin_lock(account))
    }

    /// If another process holds the account's lock (refreshing), wait until it lets go and
    /// run `check` then; None when nobody holds it. Creates nothing, for the quick path.
    pub fn after_holder<T>(
        &self,
        account: &str,
        timeout: Duration,
        check: impl FnOnce() -> T,
    ) -> Result<Option<T>> {
        lock::after_holder(&self.lock_path(account), timeout, check)
    }

    /// The stored tokens, or `None` when the account has never logged in. Tokens that do not
    /// parse are an error and are left exactly as they are: they may hold the only refresh token.
    pub fn load(&self, account: &str) -> Result<Option<Tokens>> {
        // Tokens waiting for the keyring or command store are newer than what it holds.
        if self.backend != Backend::File
            && let Some(tokens) = file::load(&self.pending_path(account), account)?
        {
            return Ok(Some(tokens));
        }
        let bytes = match &self.backend {
            Backend::File => return self.load_file(account),
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

    /// The tokens of a file store, without reaching for the other stores' code (a keyring's
    /// D-Bus client is most of a program): what the cached call reads.
    pub fn load_file(&self, account: &str) -> Result<Option<Tokens>> {
        debug_assert!(self.backend == Backend::File);
        file::check_dir(&self.dir)?;
        file::load(&self.token_path(account), account)
    }

    /// Replace the account's tokens atomically: a crash leaves the old file or the new one.
    pub fn save(&self, account: &str, tokens: &Tokens) -> Result<()> {
        match &self.backend {
            Backend::File => {
                let tmp = self.new_temp(account)?;
                file::write(&self.dir, &self.token_path(account), tmp, tokens)
            }
            Backend::Keyring => keyring::save(account, tokens),
            Backend::Command { save, .. } => command::save(save, tokens),
        }
    }

    /// Before a new login replaces them: tokens that cannot be read are not overwritten but
    /// kept beside, as `NAME.json.damaged-TIME` (they may hold the only refresh token). Says
    /// so on stderr. File store only; call it under the lock.
    pub fn set_aside_damaged(&self, account: &str) -> Result<()> {
        if self.backend != Backend::File || self.load(account).is_ok() {
            return Ok(());
        }
        let path = self.token_path(account);
        let aside = self.files().damaged(account, crate::time::now());
        fs::rename(&path, &aside)
            .with_context(|| format!("cannot move the damaged {} aside", path.display()))?;
        eprintln!(
            "mailtoken: the token file {} could not be read; it was kept as {}",
            path.display(),
            aside.display()
        );
        Ok(())
    }

    /// The account's token file as it is, checked like `load` checks it but changed in
    /// nothing: for `doctor`, which also judges its mode and age.
    pub fn inspect_file(&self, account: &str) -> Result<Option<(Vec<u8>, fs::Metadata)>> {
        file::read_checked(&self.token_path(account), false)
    }

    /// Whether new tokens could be stored now (no lock needed): checked before an interactive
    /// login, so that nobody approves a login whose tokens cannot be kept. The data directory
    /// holds the lock (and, for a keyring or command store, the tokens they refuse) whatever
    /// the store; a keyring or a load command must answer.
    pub fn ensure_writable(&self, account: &str) -> Result<()> {
        self.ensure_dir()?;
        tempfile::Builder::new()
            .prefix(".mailtoken-probe.")
            .tempfile_in(&self.dir)
            .map(drop)
            .with_context(|| format!("cannot create a file in {}", self.dir.display()))?;
        match &self.backend {
            Backend::File => Ok(()),
            Backend::Keyring => keyring::load(account).map(drop),
            Backend::Command { load, .. } => command::load(load).map(drop),
        }
    }

    fn new_temp(&self, account: &str) -> Result<tempfile::NamedTempFile> {
        self.ensure_dir()?;
        file::remove_stale_temps(&self.dir, account);
        file::new_temp(&self.dir, account)
    }

    /// Whether `remove` can forget the tokens: a command store needs its erase command.
    pub fn can_erase(&self) -> bool {
        !matches!(self.backend, Backend::Command { erase: None, .. })
    }

    /// Remove the tokens that wait for a keyring or command store (none wait for a file store).
    pub fn remove_pending(&self, account: &str) -> Result<bool> {
        if self.backend == Backend::File {
            return Ok(false);
        }
        file::remove(&self.dir, &self.pending_path(account))
    }

    /// Remove the account's files that hold no tokens (`DataDir::derived`); missing ones are
    /// fine.
    pub fn remove_derived(&self, account: &str) -> Result<()> {
        for path in self.files().derived(account) {
            file::remove(&self.dir, &path)?;
        }
        Ok(())
    }

    /// Forget an account's tokens. Returns whether there was anything to forget.
    pub fn remove(&self, account: &str) -> Result<bool> {
        self.remove_pending(account)?;
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
        file::ensure_dir(&self.dir, self.own_dir)
    }
}

/// Tokens for the store's tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn access(token: &str) -> AccessToken {
        AccessToken {
            access_token: token.into(),
            token_type: "Bearer".into(),
            expires_at: 2_000_000_000,
            scope: Some("mail".into()),
            obtained_at: None,
        }
    }

    pub fn granted(token: &str, refresh_token: Option<&str>) -> Granted {
        Granted {
            refresh_token: refresh_token.map(Into::into),
            ..Granted::access_only(access(token))
        }
    }

    /// An account's own tokens (`at-secret`, `rt-secret`) and one of a resource.
    pub fn sample() -> Tokens {
        let mut t = Tokens::empty();
        t.update(None, granted("at-secret", Some("rt-secret")));
        t.update(Some("graph"), granted("graph-secret", None));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

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
        rotated.update(Some("graph"), granted("g2", Some("rt-2")));
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
    fn only_temp_files_of_writers_that_are_gone_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path().to_path_buf());
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        gone.wait().unwrap();
        // PID 1 (init) is always there, as a writer that is still busy would be.
        let names = [
            format!(".a.{gone_pid}.AbC123.tmp"),
            ".a.1.XyZ789.tmp".to_string(),
            ".a.Old123.tmp".to_string(),
            format!(".a.x.{gone_pid}.AbC123.tmp"),
        ];
        for name in &names {
            fs::write(tmp.path().join(name), "{}").unwrap();
        }
        let pending = store.prepare("a", &sample()).unwrap();
        drop(pending);
        let left: Vec<bool> = names.iter().map(|n| tmp.path().join(n).exists()).collect();
        assert_eq!(left, [false, true, false, true], "{names:?}");
    }
}
