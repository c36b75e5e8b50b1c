//! The token store: one JSON file per account, replaced atomically, private to the user.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::lock::{self, AccountLock};

pub const FORMAT_VERSION: u32 = 1;

/// One access token and what it is good for.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessToken {
    pub access_token: String,
    pub token_type: String,
    /// Unix seconds.
    pub expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Everything stored for one account: the access token for its own scopes, the refresh token
/// that renews it, and access tokens for other resources minted from the same refresh token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub version: u32,
    /// Absent only for app-only accounts that have fetched tokens for other resources alone.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Keyed by the space-joined scopes they were requested for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, AccessToken>,
}

// Debug output ends up in logs and panics: never show the secrets themselves.
impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("access_token", &fingerprint(&self.access_token))
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish()
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("access", &self.access)
            .field(
                "refresh_token",
                &self.refresh_token.as_deref().map(fingerprint),
            )
            .field("resources", &self.resources)
            .finish()
    }
}

impl AccessToken {
    /// Still usable for at least `margin` more seconds at `now`.
    pub fn is_fresh(&self, now: u64, margin: u64) -> bool {
        self.expires_at > now.saturating_add(margin)
    }
}

impl Tokens {
    pub fn empty() -> Tokens {
        Tokens {
            version: FORMAT_VERSION,
            access: None,
            refresh_token: None,
            resources: BTreeMap::new(),
        }
    }

    /// The access token for `resource` (`None`: the account's own scopes).
    pub fn access_for(&self, resource: Option<&str>) -> Option<&AccessToken> {
        match resource {
            None => self.access.as_ref(),
            Some(key) => self.resources.get(key),
        }
    }

    /// Put a new access token in its place, and the refresh token the server sent with it, if
    /// any: a server that sends none means "keep using the old one".
    pub fn update(&mut self, resource: Option<&str>, access: AccessToken, refresh: Option<String>) {
        match resource {
            None => self.access = Some(access),
            Some(key) => {
                self.resources.insert(key.to_string(), access);
            }
        }
        if refresh.is_some() {
            self.refresh_token = refresh;
        }
    }
}

/// A short, stable tag for a secret so logs can tell tokens apart without showing them.
pub fn fingerprint(secret: &str) -> String {
    // FNV-1a: fixed, dependency-free, and one-way enough for an 8-hex-digit tag.
    let hash = secret.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("#{:08x}", hash >> 32)
}

pub fn parse(bytes: &[u8]) -> Result<Tokens> {
    let tokens: Tokens = serde_json::from_slice(bytes)?;
    if tokens.version != FORMAT_VERSION {
        bail!(
            "format version {} is not supported by this mailtoken (it reads version {FORMAT_VERSION})",
            tokens.version
        );
    }
    let accesses = tokens.access.iter().chain(tokens.resources.values());
    if accesses.clone().any(|a| a.access_token.is_empty()) {
        bail!("an access token is empty");
    }
    if tokens.refresh_token.is_none() && accesses.count() == 0 {
        bail!("it holds no token at all");
    }
    Ok(tokens)
}

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

/// The keyring service name; the account name is the keyring "user".
pub const KEYRING_SERVICE: &str = "mailtoken";

/// A store made ready to take new tokens (see `Store::prepare`). Dropped unused, the temp
/// file goes away with it.
pub struct Pending {
    tmp: Option<tempfile::NamedTempFile>,
}

/// Random characters in a temp file's name: `.NAME.XXXXXX.tmp`. Stale ones are recognised by
/// this exact shape, so that `.work.x.XXXXXX.tmp` (account `work.x`) is not taken for `work`'s.
const TEMP_RAND: usize = 6;

fn is_own_temp(file_name: &str, account: &str) -> bool {
    file_name
        .strip_prefix('.')
        .and_then(|n| n.strip_prefix(account))
        .and_then(|n| n.strip_prefix('.'))
        .and_then(|n| n.strip_suffix(".tmp"))
        .is_some_and(|r| r.len() == TEMP_RAND && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

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

    /// The stored tokens, or `None` when the account has never logged in. A file that does not
    /// parse is an error and is left exactly as it is: it may hold the only refresh token.
    pub fn load(&self, account: &str) -> Result<Option<Tokens>> {
        let bytes = match &self.backend {
            Backend::File => return self.load_file(account),
            Backend::Keyring => keyring_load(account)?,
            Backend::Command { load, .. } => command_load(load)?,
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

    fn load_file(&self, account: &str) -> Result<Option<Tokens>> {
        let path = self.token_path(account);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        check_private(&path)?;
        parse(&bytes).map(Some).with_context(|| {
            format!(
                "the token file {} is damaged; it was left untouched. Move it aside and run `mailtoken login {account}`",
                path.display()
            )
        })
    }

    /// Replace the account's tokens atomically: a crash leaves the old file or the new one.
    pub fn save(&self, account: &str, tokens: &Tokens) -> Result<()> {
        match &self.backend {
            Backend::File => self.save_file(account, tokens),
            Backend::Keyring => keyring_save(account, tokens),
            Backend::Command { save, .. } => command_save(save, tokens),
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
    pub fn check_writable(&self) -> Result<()> {
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

    fn save_file(&self, account: &str, tokens: &Tokens) -> Result<()> {
        let tmp = self.new_temp(account)?;
        self.write_file(account, tmp, tokens)
    }

    fn new_temp(&self, account: &str) -> Result<tempfile::NamedTempFile> {
        self.ensure_dir()?;
        self.remove_stale_temps(account);
        // tempfile creates the file 0600, so the secret is never readable by others.
        tempfile::Builder::new()
            .prefix(&format!(".{account}."))
            .rand_bytes(TEMP_RAND)
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .with_context(|| format!("cannot create a file in {}", self.dir.display()))
    }

    /// Temp files of writers that were killed: they hold tokens, and only the lock holder
    /// writes, so under the lock any that exist are stale. Best effort.
    fn remove_stale_temps(&self, account: &str) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|name| is_own_temp(name, account))
            {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn write_file(
        &self,
        account: &str,
        mut tmp: tempfile::NamedTempFile,
        tokens: &Tokens,
    ) -> Result<()> {
        let path = self.token_path(account);
        let json = serde_json::to_vec_pretty(tokens)?;
        tmp.write_all(&json)?;
        tmp.write_all(b"\n")?;
        tmp.as_file()
            .sync_all()
            .context("cannot flush the new token file to disk")?;
        tmp.persist(&path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        sync_dir(&self.dir)
    }

    /// Forget an account's tokens. Returns whether there was anything to forget.
    pub fn remove(&self, account: &str) -> Result<bool> {
        match &self.backend {
            Backend::File => {}
            Backend::Keyring => return keyring_remove(account),
            Backend::Command { erase: None, .. } => bail!(
                "this account stores its tokens through commands but has no `store_erase_command`: remove them yourself"
            ),
            Backend::Command {
                erase: Some(erase), ..
            } => {
                run_shell(erase, None)?;
                return Ok(true);
            }
        }
        self.remove_stale_temps(account);
        let path = self.token_path(account);
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.dir)?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }

    pub fn ensure_dir(&self) -> Result<()> {
        match fs::metadata(&self.dir) {
            Ok(meta) if meta.is_dir() => {
                if meta.permissions().mode() & 0o077 != 0 {
                    warn_fix_mode(&self.dir, 0o700)?;
                }
                Ok(())
            }
            Ok(_) => bail!("the token store {} is not a directory", self.dir.display()),
            Err(e) if e.kind() == ErrorKind::NotFound => fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .with_context(|| format!("cannot create {}", self.dir.display())),
            Err(e) => Err(e).with_context(|| format!("cannot use {}", self.dir.display())),
        }
    }
}

/// Run a user's store command through the shell, feeding `input`; its stdout comes back.
fn run_shell(cmd: &str, input: Option<&[u8]>) -> Result<Vec<u8>> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run store command `{cmd}`"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input)
            .with_context(|| format!("store command `{cmd}` did not take its input"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("store command `{cmd}` failed"))?;
    if !out.status.success() {
        bail!("store command `{cmd}` failed ({})", out.status);
    }
    Ok(out.stdout)
}

/// Empty output means "nothing stored", so `pass show x 2>/dev/null || true` works as a loader.
fn command_load(cmd: &str) -> Result<Option<Vec<u8>>> {
    let out = run_shell(cmd, None)?;
    Ok((!out.iter().all(u8::is_ascii_whitespace)).then_some(out))
}

fn command_save(cmd: &str, tokens: &Tokens) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(tokens)?;
    json.push(b'\n');
    run_shell(cmd, Some(&json)).map(drop)
}

fn keyring_entry(account: &str) -> Result<keyring::Entry> {
    keyring::Entry::new(KEYRING_SERVICE, account).map_err(|e| {
        anyhow::anyhow!(
            "the OS keyring is not available ({e}). On Linux it needs a running Secret Service              (GNOME Keyring, KeePassXC) on the session D-Bus; or use the file store"
        )
    })
}

fn keyring_load(account: &str) -> Result<Option<Vec<u8>>> {
    match keyring_entry(account)?.get_password() {
        Ok(text) => Ok(Some(text.into_bytes())),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(anyhow::anyhow!(
            "cannot read `{account}` from the OS keyring: {e}"
        )),
    }
}

fn keyring_save(account: &str, tokens: &Tokens) -> Result<()> {
    let json = serde_json::to_string(tokens)?;
    keyring_entry(account)?
        .set_password(&json)
        .map_err(|e| anyhow::anyhow!("cannot write `{account}` to the OS keyring: {e}"))
}

fn keyring_remove(account: &str) -> Result<bool> {
    match keyring_entry(account)?.delete_credential() {
        Ok(()) => Ok(true),
        Err(keyring::Error::NoEntry) => Ok(false),
        Err(e) => Err(anyhow::anyhow!(
            "cannot remove `{account}` from the OS keyring: {e}"
        )),
    }
}

/// Like OpenSSH with private keys, but forgiving: tighten a token file others can read and say so.
/// A file someone else owns is refused outright: they could have written it (their refresh
/// token, so your mail client would read their mail or send as them), and replacing it would
/// hand the file to us behind their back.
fn check_private(path: &Path) -> Result<()> {
    let meta = fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        bail!(
            "the token file {} belongs to uid {}, not to you (uid {me}); mailtoken does not use \
             token files other users own. If it is yours, `chown` it; otherwise move it aside \
             and log in again",
            path.display(),
            meta.uid()
        );
    }
    if meta.permissions().mode() & 0o077 != 0 {
        warn_fix_mode(path, 0o600)?;
    }
    Ok(())
}

fn warn_fix_mode(path: &Path, mode: u32) -> Result<()> {
    let old = fs::metadata(path)?.permissions().mode() & 0o777;
    eprintln!(
        "mailtoken: warning: {} was accessible to other users (mode {old:03o}); set it to {mode:03o}. \
         If others may have read it, log in again to replace the tokens.",
        path.display()
    );
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot restrict the permissions of {}", path.display()))
}

/// Make a rename durable: the directory entry itself must reach the disk.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot flush {} to disk", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
