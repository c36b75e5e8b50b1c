//! The commit protocol: new tokens go through a temp file made ready (with room reserved)
//! before the request, are committed by rename, wait in a pending file for a keyring or
//! command store that refuses them, and are rescued to the runtime directory when the data
//! directory cannot take them; the next refresh replays what waits. A refresh refused because
//! another process rotated the token meanwhile waits for that one's new tokens.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::{Backend, Store, Tokens, file};

/// A store made ready to take new tokens (see `Store::prepare`): a private temp file in the
/// data directory with room for them already reserved. Dropped unused, it goes away.
pub struct Pending {
    tmp: tempfile::NamedTempFile,
}

/// The least room reserved for new tokens, and how much more than the current tokens: a
/// rotated reply may carry longer tokens than the last one.
const RESERVE_MIN: u64 = 16 * 1024;
const RESERVE_SLACK: u64 = 8 * 1024;

impl Store {
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
        rescued_in(&super::dirs::rescue_dir(), account)
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
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let at = super::dirs::rescued_at(&name, account)?;
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
    rescue_in(&super::dirs::rescue_dir(), account, tokens, target, cause)
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
        let path = super::dirs::rescued(dir, account, crate::time::now());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::sample;
    use crate::store::parse;
    use std::os::unix::fs::PermissionsExt;

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
    fn room_for_new_tokens_is_reserved_before_the_request() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path().to_path_buf());
        let pending = store.prepare("a", &sample()).unwrap();
        assert!(pending.tmp.as_file().metadata().unwrap().len() >= RESERVE_MIN);
        store.commit("a", pending, &sample()).unwrap();
        let written = fs::read(store.token_path("a")).unwrap();
        assert_eq!(parse(&written).unwrap(), sample(), "no padding left behind");
    }
}
