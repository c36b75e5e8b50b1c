//! The file backend: `<data dir>/<account>.json`, 0600, replaced whole through a temp file.

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::tokens::{Tokens, parse};
use crate::sys::files::{is_link, is_unread_fifo, no_follow};

/// Random characters in a temp file's name: `.NAME.PID.XXXXXX.tmp`. Stale ones are recognised
/// by this exact shape, so that `.work.x.1.XXXXXX.tmp` (account `work.x`) is not taken for
/// `work`'s; the writer's PID says whether it may still be writing.
const TEMP_RAND: usize = 6;

/// The PID in one of `account`'s temp file names, `Some(None)` for the shape of earlier
/// versions (no PID), `None` for anything else.
fn own_temp_pid(file_name: &str, account: &str) -> Option<Option<u32>> {
    let rest = file_name
        .strip_prefix('.')?
        .strip_prefix(account)?
        .strip_prefix('.')?
        .strip_suffix(".tmp")?;
    let random = |r: &str| r.len() == TEMP_RAND && r.bytes().all(|b| b.is_ascii_alphanumeric());
    match rest.split_once('.') {
        Some((pid, r))
            if random(r) && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) =>
        {
            pid.parse().ok().map(Some)
        }
        None if random(rest) => Some(None),
        _ => None,
    }
}

/// No token file is larger than this (a few kilobytes is usual).
pub const MAX_FILE: u64 = 1 << 20;

pub fn load(path: &Path, account: &str) -> Result<Option<Tokens>> {
    let Some((bytes, _)) = read_checked(path, true)? else {
        return Ok(None);
    };
    parse(&bytes).map(Some).with_context(|| {
        format!(
            "the token file {} is damaged; it was left untouched. Move it aside and run `mailtoken login {account}`",
            path.display()
        )
    })
}

/// A token file's bytes, after checking what it is on the open file itself: not a link
/// (O_NOFOLLOW), not a FIFO or device that would hang or never end (O_NONBLOCK, then
/// fstat), not someone else's, at most `MAX_FILE`. With `tighten`, loose modes are set to 0600
/// with a warning (`doctor` only looks).
pub fn read_checked(path: &Path, tighten: bool) -> Result<Option<(Vec<u8>, fs::Metadata)>> {
    let file = match no_follow(fs::OpenOptions::new().read(true)).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if is_link(&e) => bail!(
            "{} is a symbolic link: mailtoken reads token files only where they are, so move \
             the real file there",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{} is not a regular file: move it aside and log in again",
            path.display()
        );
    }
    ensure_private(&file, &meta, path, tighten)?;
    if meta.len() > MAX_FILE {
        bail!(
            "{} is {} bytes, far more than any token file: move it aside and log in again",
            path.display(),
            meta.len()
        );
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&file)
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE {
        bail!(
            "{} grew past {MAX_FILE} bytes while being read",
            path.display()
        );
    }
    Ok(Some((bytes, meta)))
}

pub fn new_temp(dir: &Path, account: &str) -> Result<tempfile::NamedTempFile> {
    // tempfile creates the file 0600, so the secret is never readable by others.
    tempfile::Builder::new()
        .prefix(&format!(".{account}.{}.", std::process::id()))
        .rand_bytes(TEMP_RAND)
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))
}

/// Temp files of writers that were killed: they hold tokens. Only files of processes that no
/// longer exist are removed: under the lock nobody else writes, unless someone removed the
/// lock file meanwhile, and then the other writer's temp file must survive. Best effort.
pub fn remove_stale_temps(dir: &Path, account: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = match entry
            .file_name()
            .to_str()
            .and_then(|name| own_temp_pid(name, account))
        {
            Some(Some(pid)) => pid != std::process::id() && !crate::sys::process::exists(pid),
            Some(None) => true,
            None => false,
        };
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Whether another live process is writing `account`'s tokens in `dir` now (its temp file is
/// there): a refresh under way that the lock did not keep us from, because someone removed
/// the lock file while it was held.
pub fn writer_elsewhere(dir: &Path, account: &str) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        entry
            .file_name()
            .to_str()
            .and_then(|name| own_temp_pid(name, account))
            .flatten()
            .is_some_and(|pid| pid != std::process::id() && crate::sys::process::exists(pid))
    })
}

/// Open a lock file of the data directory (creating it, 0600, when `create`): never through
/// a symbolic link (one could make us create a file outside the directory), never blocking on
/// a FIFO, and only a regular file of ours. None: not there, and not to be created.
pub fn open_lock(path: &Path, create: bool) -> Result<Option<File>> {
    let mut options = fs::OpenOptions::new();
    no_follow(options.read(true));
    if create {
        options.write(true).create(true).truncate(false).mode(0o600);
    }
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) if !create && e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if is_link(&e) => bail!(
            "the lock file {} is a symbolic link: remove it (mailtoken makes a new one)",
            path.display()
        ),
        // A FIFO with nobody reading it, opened for writing without blocking.
        Err(e) if is_unread_fifo(&e) => bail!(
            "the lock file {} is not a regular file: remove it (mailtoken makes a new one)",
            path.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot open the lock file {}", path.display()));
        }
    };
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "the lock file {} is not a regular file: remove it (mailtoken makes a new one)",
            path.display()
        );
    }
    let me = crate::sys::uid();
    if meta.uid() != me {
        bail!(
            "the lock file {} belongs to uid {}, not to you (uid {me}): remove it (as that user \
             or root); mailtoken makes a new one",
            path.display(),
            meta.uid()
        );
    }
    Ok(Some(file))
}

/// Reserve `room` bytes for the file, so that writing the tokens later cannot run out of space.
pub fn reserve(file: &File, room: u64) -> Result<()> {
    Ok(crate::sys::files::reserve(file, room)?)
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

/// The data directory, created 0700 if missing. One that someone else owns, or that others
/// can write to (they could replace or delete the tokens, or the lock), is refused; one that
/// others can only read is tightened when it is mailtoken's own (`tighten`).
pub fn ensure_dir(dir: &Path, tighten: bool) -> Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            refuse_shared_dir(dir, &meta)?;
            let mode = meta.permissions().mode() & 0o7777;
            if tighten && mode & 0o077 != 0 {
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

/// Before tokens are read from `dir`: a directory another user owns, or others can write,
/// may hold tokens they put there (theirs, so your mail would go to their mailbox). Nothing
/// there yet is no problem here.
pub fn check_dir(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => refuse_shared_dir(dir, &meta),
        Ok(_) => bail!("the token store {} is not a directory", dir.display()),
        Err(_) => Ok(()),
    }
}

fn refuse_shared_dir(dir: &Path, meta: &fs::Metadata) -> Result<()> {
    let me = crate::sys::uid();
    let mode = meta.permissions().mode() & 0o7777;
    if meta.uid() != me {
        bail!(
            "the token store {} belongs to uid {}, not to you (uid {me}): use a directory of \
             your own (--data-dir)",
            dir.display(),
            meta.uid()
        );
    }
    if mode & 0o022 != 0 {
        bail!(
            "other users can write to the token store {} (mode {mode:04o}): they could replace \
             or remove your tokens. Use a private directory (`mkdir -m 700 DIR`, then \
             --data-dir DIR)",
            dir.display()
        );
    }
    Ok(())
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
    let me = crate::sys::uid();
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
fn ensure_private(file: &File, meta: &fs::Metadata, path: &Path, tighten: bool) -> Result<()> {
    let me = crate::sys::uid();
    if meta.uid() != me {
        bail!(
            "the token file {} belongs to uid {}, not to you (uid {me}); mailtoken does not use \
             token files other users own. If it is yours, `chown` it; otherwise move it aside \
             and log in again",
            path.display(),
            meta.uid()
        );
    }
    let mode = meta.permissions().mode() & 0o777;
    if tighten && mode & 0o077 != 0 {
        warn_loose(path, mode, 0o600);
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict the permissions of {}", path.display()))?;
    }
    Ok(())
}

fn warn_loose(path: &Path, old: u32, new: u32) {
    eprintln!(
        "mailtoken: warning: {} was accessible to other users (mode {old:03o}); set it to {new:03o}. \
         If others may have read it, log in again to replace the tokens.",
        path.display()
    );
}

fn warn_fix_mode(path: &Path, mode: u32) -> Result<()> {
    let old = fs::metadata(path)?.permissions().mode() & 0o777;
    warn_loose(path, old, mode);
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot restrict the permissions of {}", path.display()))
}

/// Make a rename durable: the directory entry itself must reach the disk.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot flush {} to disk", dir.display()))
}
