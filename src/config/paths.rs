//! Where the config file and the token store are: the flags and variables, else XDG's places.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where the config file and the token store are.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config: PathBuf,
    pub data_dir: PathBuf,
    /// The data directory was named by --data-dir or MAILTOKEN_DATA_DIR, not the XDG default:
    /// it may be shared with other things, so its mode is the user's business.
    pub data_dir_chosen: bool,
}

impl Paths {
    /// Explicit paths (flags or environment, already merged by clap) win over the XDG defaults.
    pub fn resolve(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<Paths> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let default = |var: &str, fallback: &str| {
            xdg_dir(std::env::var_os(var), home.as_deref(), fallback).with_context(|| {
                format!(
                    "cannot find your home directory (HOME is {}): set HOME, or pass --config \
                     and --data-dir",
                    if home.is_some() {
                        "not an absolute path"
                    } else {
                        "not set"
                    }
                )
            })
        };
        let config = match config {
            Some(p) => p,
            None => default("XDG_CONFIG_HOME", ".config")?.join("config.toml"),
        };
        let data_dir_chosen = data_dir.is_some();
        let data_dir = match data_dir {
            Some(p) => p,
            None => default("XDG_DATA_HOME", ".local/share")?,
        };
        Ok(Paths {
            config,
            data_dir,
            data_dir_chosen,
        })
    }
}

/// `mailtoken` in the XDG base directory `value` (an environment variable's), else in
/// `fallback` under the home directory. The same on every Unix, macOS included: mail programs
/// from Homebrew (neomutt, msmtp, aerc's config) and dotfiles shared with Linux machines
/// expect ~/.config there, not ~/Library. A relative value is ignored, as the XDG spec says;
/// None when there is no absolute home to fall back on.
fn xdg_dir(
    value: Option<std::ffi::OsString>,
    home: Option<&Path>,
    fallback: &str,
) -> Option<PathBuf> {
    let base = match value.map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => home.filter(|h| h.is_absolute())?.join(fallback),
    };
    Some(base.join("mailtoken"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_paths_follow_xdg_and_ignore_relative_values() {
        let home = Path::new("/home/me");
        let at = |value: Option<&str>, home| xdg_dir(value.map(Into::into), home, ".config");
        assert_eq!(
            at(None, Some(home)),
            Some(PathBuf::from("/home/me/.config/mailtoken"))
        );
        assert_eq!(
            at(Some("/x/conf"), Some(home)),
            Some(PathBuf::from("/x/conf/mailtoken"))
        );
        assert_eq!(
            at(Some("conf"), Some(home)),
            Some(PathBuf::from("/home/me/.config/mailtoken"))
        );
        assert_eq!(
            at(Some(""), Some(home)),
            Some(PathBuf::from("/home/me/.config/mailtoken"))
        );
        assert_eq!(at(None, None), None);
        assert_eq!(at(None, Some(Path::new("rel"))), None);
        assert_eq!(
            at(Some("/x/conf"), None),
            Some(PathBuf::from("/x/conf/mailtoken"))
        );
    }
}
