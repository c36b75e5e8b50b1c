//! The data directory: the name of every file mailtoken keeps there, and the one way to read
//! or replace a small private file of it. Nothing else builds a path in the directory.
//!
//! Per account NAME: `NAME.json` (tokens), `NAME.lock`, `NAME.pending.json` (tokens a keyring
//! or command store has not taken yet), `NAME.failed` (the last refresh failure, for waiters),
//! `NAME.config` (the quick path's snapshot), `NAME.discovery.json` (an OIDC discovery
//! document), `NAME.notified` (when notify_command last ran), `NAME.json.damaged-TIME` (a
//! token file that could not be read, kept aside), `NAME.relogin.json` and
//! `NAME.relogin.lock` (a background login waiting for approval: its address and code, or
//! why the last one could not start; and the lock its process holds while it runs). For the proxy: `proxy-ca.pem`,
//! `proxy-cert.pem`, `proxy-key.pem`. Writers' temp files start with a dot.
//!
//! And one directory beside it, for when the data directory cannot take new tokens (a full
//! disk): the rescue directory, with `NAME.rescued-TIME.json`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A data directory, by the names of its files.
#[derive(Debug, Clone, Copy)]
pub struct DataDir<'a>(&'a Path);

/// Where new tokens are written when the data directory cannot take them:
/// `$XDG_RUNTIME_DIR/mailtoken` (another file system than a full data directory, usually),
/// else a per-user directory under the system temp directory.
pub fn rescue_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(run) if !run.is_empty() => PathBuf::from(run).join("mailtoken"),
        _ => std::env::temp_dir().join(format!("mailtoken-{}", crate::sys::uid())),
    }
}

/// A rescued copy of `account`'s tokens in `dir`, written at `at` (Unix seconds).
pub fn rescued(dir: &Path, account: &str, at: u64) -> PathBuf {
    dir.join(format!("{account}.rescued-{at}.json"))
}

/// When the file named `file_name` was rescued, if it is a rescued copy of `account`'s tokens.
pub fn rescued_at(file_name: &str, account: &str) -> Option<u64> {
    file_name
        .strip_prefix(account)?
        .strip_prefix(".rescued-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

impl<'a> DataDir<'a> {
    pub fn new(dir: &'a Path) -> DataDir<'a> {
        DataDir(dir)
    }

    pub fn path(&self) -> &'a Path {
        self.0
    }

    fn named(&self, account: &str, suffix: &str) -> PathBuf {
        self.0.join(format!("{account}{suffix}"))
    }

    pub fn tokens(&self, account: &str) -> PathBuf {
        self.named(account, ".json")
    }

    pub fn lock(&self, account: &str) -> PathBuf {
        self.named(account, ".lock")
    }

    pub fn pending(&self, account: &str) -> PathBuf {
        self.named(account, ".pending.json")
    }

    pub fn failure(&self, account: &str) -> PathBuf {
        self.named(account, ".failed")
    }

    pub fn snapshot(&self, account: &str) -> PathBuf {
        self.named(account, ".config")
    }

    pub fn discovery(&self, account: &str) -> PathBuf {
        self.named(account, ".discovery.json")
    }

    pub fn notified(&self, account: &str) -> PathBuf {
        self.named(account, ".notified")
    }

    pub fn relogin(&self, account: &str) -> PathBuf {
        self.named(account, ".relogin.json")
    }

    pub fn relogin_lock(&self, account: &str) -> PathBuf {
        self.named(account, ".relogin.lock")
    }

    /// The account's files that hold no tokens and are made again when needed (the snapshot,
    /// the discovery cache, the notes): what goes when the account is removed or renamed.
    /// Not the lock files, which a process may hold at that moment.
    pub fn derived(&self, account: &str) -> [PathBuf; 5] {
        [
            self.snapshot(account),
            self.discovery(account),
            self.notified(account),
            self.failure(account),
            self.relogin(account),
        ]
    }

    pub fn damaged(&self, account: &str, at: u64) -> PathBuf {
        self.named(account, &format!(".json.damaged-{at}"))
    }

    pub fn proxy_ca(&self) -> PathBuf {
        self.0.join("proxy-ca.pem")
    }

    pub fn proxy_certificate(&self) -> PathBuf {
        self.0.join("proxy-cert.pem")
    }

    pub fn proxy_key(&self) -> PathBuf {
        self.0.join("proxy-key.pem")
    }

    /// A small private file of the directory that holds no tokens (a snapshot, a note), read
    /// with the care of a token file (no symbolic link, no FIFO, ours, private, small); None if
    /// it is not there or fails any of that.
    pub fn read_small(&self, path: &Path) -> Option<Vec<u8>> {
        debug_assert!(path.parent() == Some(self.0));
        super::file::read_checked(path, false)
            .ok()
            .flatten()
            .map(|(bytes, _)| bytes)
    }

    /// Replace a small private file of the directory whole: written to a 0600 temp file there
    /// and renamed over `path` (whatever stood there, a link or a FIFO, is replaced, never
    /// followed or opened). Not flushed to disk: it can always be made again.
    pub fn replace_small(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        debug_assert!(path.parent() == Some(self.0));
        let mut tmp = tempfile::Builder::new()
            .prefix(".new.")
            .suffix(".tmp")
            .tempfile_in(self.0)
            .with_context(|| format!("cannot create a file in {}", self.0.display()))?;
        tmp.write_all(bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        tmp.persist(path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        Ok(())
    }
}
