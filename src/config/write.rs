//! `mailtoken add`, `remove` and `rename`: the config changed as text (an account appended as
//! TOML, or its sections dropped or renamed by `sections.rs`), which keeps its comments and
//! must still parse before it replaces the file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{Account, Config, validate_account_name};
use crate::error::usage;

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
    validate_account_name(name).map_err(|e| usage(e.to_string()))?;
    account.validate().map_err(|e| usage(format!("{e:#}")))?;
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
            "account `{name}` already exists in {}: edit it there, or `mailtoken remove {name}` \
             first (or `mailtoken rename {name} NEW` to keep it under another name)",
            path.display()
        )));
    }
    let text = existing + &account_toml(name, account)?;
    Config::parse(&text).context("the new config does not parse (this is a bug)")?;
    replace(path, &text)
}

/// The config's text without account `name` (`mailtoken remove`), not yet written.
pub fn without_account(path: &Path, text: &str, name: &str) -> Result<String> {
    let out = super::sections::without_account(text, name).map_err(|e| cannot_edit(path, e))?;
    Config::parse(&out).context("the new config does not parse (this is a bug)")?;
    Ok(out)
}

/// The config's text with account `old` named `new` (`mailtoken rename`), not yet written.
pub fn renamed_account(path: &Path, text: &str, old: &str, new: &str) -> Result<String> {
    validate_account_name(new).map_err(|e| usage(e.to_string()))?;
    let out = super::sections::renamed_account(text, old, new).map_err(|e| cannot_edit(path, e))?;
    Config::parse(&out).context("the new config does not parse (this is a bug)")?;
    Ok(out)
}

fn cannot_edit(path: &Path, e: anyhow::Error) -> anyhow::Error {
    usage(format!(
        "cannot change {} safely: {e}; edit it by hand",
        path.display()
    ))
}

/// Replace the config with `text`: a private temp file beside it, renamed over it, so that a
/// crash leaves the old file or the new one.
pub fn replace(path: &Path, text: &str) -> Result<()> {
    // A config that is a link (into a dotfiles repository, say) stays one: the file it points
    // to is the one replaced.
    let target = link_target(path)?;
    let path = target.as_path();
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

/// The file a path names, following symbolic links (a dangling link names its target too).
fn link_target(path: &Path) -> Result<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let next = std::fs::read_link(&path)
                    .with_context(|| format!("cannot follow {}", path.display()))?;
                path = match path.parent() {
                    Some(dir) => dir.join(next),
                    None => next,
                };
            }
            _ => return Ok(path),
        }
    }
    Err(usage(format!(
        "{} is a loop of symbolic links",
        path.display()
    )))
}
