//! The token store: where an account's tokens live (a private file, the OS keyring, or the
//! user's commands), and the per-account lock that makes one process the refresher.

mod command;
mod dirs;
mod file;
mod keyring;
pub mod lock;
mod tokens;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

pub use dirs::DataDir;
pub use lock::{AccountLock, LOCK_TIMEOUT};
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

/// A failure another process noted.
pub struct Noted {
    pub message: String,
    /// The provider refused the login (not a server that failed).
    pub login_needed: bool,
}

/// A refresh token's stand-in in a note: SHA-256, 16 bytes of it in hex. One-way, and long
/// enough that a new login's token is never taken for a dead one.
fn token_digest(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A store made ready to take new tokens (see `Store::prepare`): a private temp file in the
/// data directory with room for them already reserved. Dropped unused, it goes away.
pub struct Pending {
    tmp: tempfile::NamedTempFile,
}

/// The least room reserved for new tokens, and how much more than the current tokens: a
/// rotated reply may carry longer tokens than the last one.
const RESERVE_MIN: u64 = 16 * 1024;
const RESERVE_SLACK: u64 = 8 * 1024;

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

    /// Get ready to store new tokens *before* asking the server for them: a rotating server
    /// revokes the old refresh token as it answers, so a store found unwritable (or a disk
    /// found full) only afterwards would lose the login. This creates the temp file the new
    /// tokens will go through and reserves room for them. Call it under the lock.
    pub fn prepare(&self, account: &str, current: &Tokens) -> Result<Pending> {
        let tmp = self.new_temp(account)?;
        let size = serde_json::to_vec_pretty(current)?.len() as u64;
        let room = (2 * size + RESERVE_SLACK).max(RESERVE_MIN);
        file::reserve(tmp.as_file(), room).with_context(|| {
            format!(
                "cannot reserve {} KiB in {} for new tokens, so none were asked for: free some space and try again",
                room / 1024,
                self.dir.display()
            )
        })?;
        Ok(Pending { tmp })
    }

    /// Store the tokens through what `prepare` made ready. For the keyring and command stores
    /// the tokens first become a private pending file in the data directory, removed once the
    /// real store has taken them; if it refuses, the pending file stays, `load` reads it, and
    /// the next call under the lock hands it to the store again (`replay_pending`).
    pub fn commit(&self, account: &str, pending: Pending, tokens: &Tokens) -> Result<()> {
        let target = match self.backend {
            Backend::File => self.token_path(account),
            _ => self.pending_path(account),
        };
        if let Err(e) = file::write(&self.dir, &target, pending.tmp, tokens) {
            return Err(rescue(account, tokens, &target, e));
        }
        if self.backend != Backend::File {
            self.replay_pending(account);
        }
        Ok(())
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

    /// Where new tokens wait for a keyring or command store that has not taken them yet.
    pub fn pending_path(&self, account: &str) -> PathBuf {
        self.files().pending(account)
    }

    /// Whether new tokens are waiting for the keyring or command store (never for files).
    pub fn has_pending(&self, account: &str) -> bool {
        self.backend != Backend::File && self.pending_path(account).exists()
    }

    /// Hand waiting tokens to the keyring or command store; call it under the lock. A store
    /// that still refuses is reported, and the tokens keep waiting: nothing is lost.
    pub fn replay_pending(&self, account: &str) {
        let path = self.pending_path(account);
        let saved = file::load(&path, account).and_then(|tokens| match tokens {
            Some(tokens) => self.save(account, &tokens),
            None => Ok(()),
        });
        match saved {
            Ok(()) => {
                if let Err(e) = file::remove(&self.dir, &path) {
                    eprintln!("mailtoken: warning: {e:#}");
                }
            }
            Err(e) => eprintln!(
                "mailtoken: warning: the new tokens of `{account}` could not be saved to {}: {e:#}\n\
                 They are safe in {} and will be handed to the store again on the next call.",
                self.location(account),
                path.display()
            ),
        }
    }

    /// Where the last refresh failure at the server is noted, for the processes that waited
    /// for the lock meanwhile.
    fn failure_path(&self, account: &str) -> PathBuf {
        self.files().failure(account)
    }

    /// Note (under the lock) that a refresh just failed at the server, with the error. Best
    /// effort: without the note, waiters simply try themselves.
    pub fn note_failure(&self, account: &str, message: &str) {
        self.write_note(account, message, None);
    }

    /// Note (under the lock) that the provider refused `refresh_token`: the login is dead. No
    /// process asks the server with that token again (a hundred callers meeting a revoked
    /// login make one request), and `status` and `doctor` say so, until a login stores
    /// another.
    pub fn note_login_needed(&self, account: &str, message: &str, refresh_token: &str) {
        self.write_note(account, message, Some(refresh_token));
    }

    fn write_note(&self, account: &str, message: &str, dead: Option<&str>) {
        let mut note = serde_json::json!({ "at_ms": crate::time::now_ms(), "error": message });
        if let Some(token) = dead {
            note["dead_refresh_token"] = token_digest(token).into();
        }
        let _ = self
            .files()
            .replace_small(&self.failure_path(account), note.to_string().as_bytes());
    }

    fn read_note(&self, account: &str) -> Option<serde_json::Value> {
        let bytes = self.files().read_small(&self.failure_path(account))?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The failure noted at or after `since_ms` (milliseconds), if any.
    pub fn failure_since(&self, account: &str, since_ms: u64) -> Option<Noted> {
        let note = self.read_note(account)?;
        (note["at_ms"].as_u64()? >= since_ms).then(|| Noted {
            message: note["error"].as_str().unwrap_or("").to_string(),
            login_needed: note["dead_refresh_token"].is_string(),
        })
    }

    /// What the provider said when it refused `refresh_token`, if it did (see
    /// `note_login_needed`): that login is dead.
    pub fn refused_login(&self, account: &str, refresh_token: &str) -> Option<String> {
        let note = self.read_note(account)?;
        (note["dead_refresh_token"].as_str()? == token_digest(refresh_token))
            .then(|| note["error"].as_str().unwrap_or("").to_string())
    }

    pub fn clear_failure(&self, account: &str) {
        let _ = fs::remove_file(self.failure_path(account));
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

    /// Forget an account's tokens. Returns whether there was anything to forget.
    pub fn remove(&self, account: &str) -> Result<bool> {
        if self.backend != Backend::File {
            file::remove(&self.dir, &self.pending_path(account))?;
        }
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

impl Store {
    /// Wait (at most `most`, polling) until no other process is writing `account`'s tokens;
    /// whether one was. For a refusal that may only mean another process rotated the refresh
    /// token a moment ago, its new one not yet stored.
    pub fn wait_for_other_writers(&self, account: &str, most: Duration) -> bool {
        let until = std::time::Instant::now() + most;
        let mut waited = false;
        while file::writer_elsewhere(&self.dir, account) && std::time::Instant::now() < until {
            waited = true;
            std::thread::sleep(Duration::from_millis(50));
        }
        waited
    }

    /// Tokens of `account` a failed commit rescued (see `rescue`), newest first.
    pub fn rescued(&self, account: &str) -> Vec<PathBuf> {
        rescued_in(&rescue_dir(), account)
    }

    /// Under the lock, before a refresh: tokens rescued by a commit that could not write them
    /// hold the live refresh token (the server had rotated it), so they are stored first and
    /// used from here on; the rescued copies go once stored. None when there are none, or
    /// they hold the same refresh token as `current`, or they cannot be stored yet (they stay,
    /// and `status` and `doctor` keep saying where).
    pub fn replay_rescued(&self, account: &str, current: &Tokens) -> Option<Tokens> {
        let found = self.rescued(account);
        let newest = found.first()?;
        let tokens = file::load(newest, account).ok()??;
        if tokens.refresh_token.is_none() || tokens.refresh_token == current.refresh_token {
            return None;
        }
        self.save(account, &tokens).ok()?;
        for path in &found {
            let _ = fs::remove_file(path);
        }
        eprintln!(
            "mailtoken: stored the tokens of `{account}` rescued to {} when they could not be \
             written",
            newest.display()
        );
        Some(tokens)
    }
}

/// The rescued copies of `account`'s tokens in `dir`, newest first (their names end in the
/// time they were written).
fn rescued_in(dir: &Path, account: &str) -> Vec<PathBuf> {
    let prefix = format!("{account}.rescued-");
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let at = name
                .strip_prefix(&prefix)?
                .strip_suffix(".json")?
                .parse()
                .ok()?;
            Some((at, entry.path()))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, path)| path).collect()
}

/// The last resort when new tokens cannot be written where they belong: a copy in the
/// user's runtime directory (another file system than a full data directory, usually), and an
/// error that says loudly where it is. Never the tokens themselves on the terminal.
fn rescue(account: &str, tokens: &Tokens, target: &Path, cause: anyhow::Error) -> anyhow::Error {
    rescue_in(&rescue_dir(), account, tokens, target, cause)
}

fn rescue_in(
    dir: &Path,
    account: &str,
    tokens: &Tokens,
    target: &Path,
    cause: anyhow::Error,
) -> anyhow::Error {
    let copy = file::ensure_private_dir(dir).and_then(|()| {
        let tmp = file::new_temp(dir, account)?;
        let path = dir.join(format!("{account}.rescued-{}.json", crate::time::now()));
        file::write(dir, &path, tmp, tokens)?;
        Ok(path)
    });
    match copy {
        Ok(path) => anyhow::anyhow!(
            "the new tokens of `{account}` could not be written to {} ({cause:#}).\n\
             THE ONLY COPY of the new refresh token is in {}: once {} can be written again, \
             move it there (`mv {} {}`), or a new login will be needed.",
            target.display(),
            path.display(),
            target.display(),
            path.display(),
            target.display()
        ),
        Err(e) => anyhow::anyhow!(
            "the new tokens of `{account}` could not be written to {} ({cause:#}), nor rescued \
             to {} ({e:#}): a new login will be needed (`mailtoken login {account}`)",
            target.display(),
            dir.display()
        ),
    }
}

/// `$XDG_RUNTIME_DIR/mailtoken`, else a per-user directory under the system temp directory.
fn rescue_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(run) if !run.is_empty() => PathBuf::from(run).join("mailtoken"),
        // SAFETY: geteuid has no preconditions and cannot fail.
        _ => std::env::temp_dir().join(format!("mailtoken-{}", unsafe { libc::geteuid() })),
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
            obtained_at: None,
        }
    }

    fn granted(token: &str, refresh_token: Option<&str>) -> Granted {
        Granted {
            refresh_token: refresh_token.map(Into::into),
            ..Granted::access_only(access(token))
        }
    }

    fn sample() -> Tokens {
        let mut t = Tokens::empty();
        t.update(None, granted("at-secret", Some("rt-secret")));
        t.update(Some("graph"), granted("graph-secret", None));
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
    fn tokens_that_cannot_be_stored_are_rescued_privately_and_the_error_says_where() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rescue");
        let target = tmp.path().join("data/a.json");
        let err = rescue_in(&dir, "a", &sample(), &target, anyhow::anyhow!("disk full"));
        let msg = format!("{err:#}");
        let copy = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        assert!(msg.contains(&copy.display().to_string()), "{msg}");
        assert!(msg.contains("disk full") && msg.contains("mv "), "{msg}");
        assert!(!msg.contains("rt-secret"), "{msg}");
        assert_eq!(parse(&fs::read(&copy).unwrap()).unwrap(), sample());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&dir), mode(&copy)), (0o700, 0o600));
        // A rescue directory someone else could have prepared is not used.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = rescue_in(&dir, "a", &sample(), &target, anyhow::anyhow!("disk full"));
        assert!(format!("{err:#}").contains("nor rescued"), "{err:#}");
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

    #[test]
    fn room_for_new_tokens_is_reserved_before_the_request() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path().to_path_buf());
        let pending = store.prepare("a", &sample()).unwrap();
        assert!(pending.tmp.as_file().metadata().unwrap().len() >= RESERVE_MIN);
        store.commit("a", pending, &sample()).unwrap();
        let written = fs::read(store.token_path("a")).unwrap();
        assert_eq!(parse(&written).unwrap(), sample(), "no padding left behind");
    }

    #[test]
    fn freshness_respects_the_margin() {
        let t = sample().access.unwrap();
        assert!(t.is_fresh(t.expires_at - 301, 300));
        assert!(!t.is_fresh(t.expires_at - 300, 300));
        assert!(!t.is_fresh(u64::MAX, 300));
    }

    #[test]
    fn short_lived_tokens_get_at_most_half_their_life_as_margin() {
        let minute = AccessToken {
            obtained_at: Some(1_000),
            expires_at: 1_060,
            ..access("short")
        };
        assert_eq!(minute.margin(300), 30);
        assert!(minute.is_fresh(1_001, 300), "just obtained: fresh");
        assert!(minute.is_fresh(1_029, 300));
        assert!(!minute.is_fresh(1_030, 300));
        let hour = AccessToken {
            obtained_at: Some(0),
            expires_at: 3_600,
            ..access("long")
        };
        assert_eq!(hour.margin(300), 300);
        assert_eq!(access("unknown life").margin(300), 300);
    }

    #[test]
    fn a_clock_that_went_wrong_means_refresh_now() {
        let t = AccessToken {
            obtained_at: Some(100_000),
            expires_at: 103_600,
            ..access("t")
        };
        assert!(t.is_fresh(100_000, 300));
        // The clock went back a day: the token's age is unknown.
        assert!(!t.is_fresh(100_000 - 86_400, 300));
        // Obtained under a clock 74 years ahead: stale as soon as the clock is right again.
        let from_2100 = AccessToken {
            obtained_at: Some(4_102_444_800),
            expires_at: 4_102_448_400,
            ..access("t")
        };
        assert!(!from_2100.is_fresh(1_800_000_000, 300));
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
