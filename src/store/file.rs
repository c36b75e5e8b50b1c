//! The file backend: `<data dir>/<account>.json`, 0600, replaced whole through a temp file.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::tokens::{Tokens, parse};

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

pub fn load(path: &Path, account: &str) -> Result<Option<Tokens>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    ensure_private(path)?;
    parse(&bytes).map(Some).with_context(|| {
        format!(
            "the token file {} is damaged; it was left untouched. Move it aside and run `mailtoken login {account}`",
            path.display()
        )
    })
}

pub fn new_temp(dir: &Path, account: &str) -> Result<tempfile::NamedTempFile> {
    // tempfile creates the file 0600, so the secret is never readable by others.
    tempfile::Builder::new()
        .prefix(&format!(".{account}."))
        .rand_bytes(TEMP_RAND)
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))
}

/// Temp files of writers that were killed: they hold tokens, and only the lock holder
/// writes, so under the lock any that exist are stale. Best effort.
pub fn remove_stale_temps(dir: &Path, account: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
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

/// Write a small private file in place (0600): notes, not tokens.
pub fn write_small(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reserve `room` bytes for the file, so that writing the tokens later cannot run out of space.
pub fn reserve(file: &File, room: u64) -> Result<()> {
    let len = libc::off_t::try_from(room).context("reservation too large")?;
    // SAFETY: posix_fallocate only reads the descriptor and the two lengths.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        errno => Err(std::io::Error::from_raw_os_error(errno).into()),
    }
}

/// Write the tokens into `tmp` (over any reserved room, trimmed after), flush, and rename it
/// over `path`: a crash leaves the old file or the new one, never a mix.
pub fn write(
    dir: &Path,
    path: &Path,
    mut tmp: tempfile::NamedTempFile,
    tokens: &Tokens,
) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(tokens)?;
    json.push(b'\n');
    tmp.write_all(&json)
        .context("cannot write the new token file")?;
    tmp.as_file()
        .set_len(json.len() as u64)
        .context("cannot write the new token file")?;
    tmp.as_file()
        .sync_all()
        .context("cannot flush the new token file to disk")?;
    tmp.persist(path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    sync_dir(dir)
}

pub fn remove(dir: &Path, path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

pub fn ensure_dir(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            if meta.permissions().mode() & 0o077 != 0 {
                warn_fix_mode(dir, 0o700)?;
            }
            Ok(())
        }
        Ok(_) => bail!("the token store {} is not a directory", dir.display()),
        Err(e) if e.kind() == ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display())),
        Err(e) => Err(e).with_context(|| format!("cannot use {}", dir.display())),
    }
}

/// A directory only we can use, created 0700 if missing; one that exists must already be
/// ours and private (this may be under a shared /tmp, where others could have made it first).
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    if let Err(e) = fs::DirBuilder::new().mode(0o700).create(dir)
        && e.kind() != ErrorKind::AlreadyExists
    {
        return Err(e).with_context(|| format!("cannot create {}", dir.display()));
    }
    let meta =
        fs::symlink_metadata(dir).with_context(|| format!("cannot use {}", dir.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me || meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} is not a private directory of yours (mode 700): refusing to put tokens there",
            dir.display()
        );
    }
    Ok(())
}

/// Like OpenSSH with private keys, but forgiving: tighten a token file others can read and say so.
/// A file someone else owns is refused outright: they could have written it (their refresh
/// token, so your mail client would read their mail or send as them), and replacing it would
/// hand the file to us behind their back.
fn ensure_private(path: &Path) -> Result<()> {
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
