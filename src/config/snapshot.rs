//! One account's settings (its table and the top-level ones) kept beside its tokens, valid
//! while the config file is the same file with the same stamp: the cached `token` call reads
//! this instead of parsing and checking every account of a large config.
//!
//! A snapshot is written only from a config that was just loaded and checked whole, so a
//! config that does not load has no valid snapshot, and the full path reports it as ever. It
//! is JSON, which the `mailtoken` front program reads already for the tokens: no TOML parser
//! or config checks on the cached call.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Account, Config, Defaults, Paths};
use crate::store::DataDir;

/// What a snapshot holds: the settings `Config::open` reads for one account, which are its
/// table and the top level's `Defaults`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    defaults: Defaults,
    account: Account,
}

/// What tells a config file's content apart without reading it: the same file (device and
/// inode), size, modification and change times to the nanosecond (a chmod or chown changes
/// the latter), owner, and who is reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    uid: u32,
    reader: u32,
}

/// The snapshot format's version, in its first line: a snapshot of another version is not
/// used (and the next full call writes a new one).
pub const VERSION: u32 = 3;

/// A file changed less than this long ago may change again within the file system's
/// timestamp granularity and keep its stamp (git's "racy index" problem): no snapshot of it.
const SETTLED: Duration = Duration::from_secs(2);

impl Stamp {
    pub fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            uid: meta.uid(),
            reader: crate::sys::uid(),
        }
    }

    /// The snapshot's first line.
    pub fn line(&self) -> String {
        format!(
            "# mailtoken config snapshot {VERSION}: {} {} {} {}.{:09} {}.{:09} {} {}",
            self.dev,
            self.ino,
            self.size,
            self.mtime.0,
            self.mtime.1,
            self.ctime.0,
            self.ctime.1,
            self.uid,
            self.reader
        )
    }

    /// Whether the file has been left alone long enough for its stamp to tell its content.
    pub fn settled(&self, now: SystemTime) -> bool {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let latest = self.mtime.max(self.ctime);
        let changed = Duration::new(
            u64::try_from(latest.0).unwrap_or(u64::MAX),
            u32::try_from(latest.1).unwrap_or(0),
        );
        now.checked_sub(changed).is_some_and(|age| age >= SETTLED)
    }
}

fn path(paths: &Paths, name: &str) -> PathBuf {
    DataDir::new(&paths.data_dir).snapshot(name)
}

/// The config with only the account `name`, from its snapshot, if that matches the config
/// file as it is now; None otherwise (and the caller loads the file).
pub fn load(paths: &Paths, name: &str) -> Option<Config> {
    let stamp = Stamp::of(&fs::metadata(&paths.config).ok()?);
    let bytes = DataDir::new(&paths.data_dir).read_small(&path(paths, name))?;
    let (first, settings) = std::str::from_utf8(&bytes).ok()?.split_once('\n')?;
    if first != stamp.line() {
        return None;
    }
    let settings: Settings = serde_json::from_str(settings).ok()?;
    let config = Config {
        defaults: settings.defaults,
        proxy: None,
        accounts: BTreeMap::from([(name.to_string(), settings.account)]),
        unsafe_file: None,
    };
    Some(config.made_safe(&paths.config))
}

/// Keep a snapshot of the account `name` of `config`, just loaded and checked whole from a
/// file with `stamp`, unless one is there already or the file is too fresh to stamp. Best
/// effort: without a snapshot, the next call only takes longer.
pub fn save(paths: &Paths, config: &Config, name: &str, stamp: Option<&Stamp>) {
    let Some(stamp) = stamp else { return };
    if !stamp.settled(SystemTime::now()) || !paths.data_dir.is_dir() {
        return;
    }
    let path = path(paths, name);
    let first = stamp.line();
    if let Some(old) = DataDir::new(&paths.data_dir).read_small(&path)
        && old.starts_with(format!("{first}\n").as_bytes())
    {
        return;
    }
    let Some(json) = settings_of(config, name) else {
        return;
    };
    let _ =
        DataDir::new(&paths.data_dir).replace_small(&path, format!("{first}\n{json}\n").as_bytes());
}

/// The snapshot's JSON for the account `name` of `config`.
fn settings_of(config: &Config, name: &str) -> Option<String> {
    serde_json::to_string(&Settings {
        defaults: config.defaults.clone(),
        account: config.accounts.get(name)?.clone(),
    })
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
refresh_margin = 120

[proxy]
imap = "127.0.0.1:1143"

[accounts.work]
provider = "microsoft"
user = "me@example.com"
client_id = "00000000-0000-0000-0000-000000000000"
scopes = ["https://outlook.office365.com/IMAP.AccessAsUser.All", "offline_access"]

[accounts.home]
provider = "google"
user = "me@gmail.com"
client_id = "abc.apps.googleusercontent.com"
client_secret_command = "pass show gmail"
store = "keyring"
refresh_margin = 60
"#;

    #[test]
    fn the_settings_load_to_the_same_account_and_settings() {
        let whole = Config::parse(CONFIG).unwrap();
        for name in ["work", "home"] {
            let json = settings_of(&whole, name).unwrap();
            let part: Settings = serde_json::from_str(&json).unwrap();
            assert_eq!(
                format!("{:?}", part.account),
                format!("{:?}", whole.accounts[name])
            );
            assert_eq!(part.defaults, whole.defaults);
        }
        assert!(settings_of(&whole, "nobody").is_none());
    }

    fn paths(dir: &std::path::Path) -> Paths {
        Paths {
            config: dir.join("config.toml"),
            data_dir: dir.join("data"),
            data_dir_chosen: true,
        }
    }

    /// Write the config and date it `age` back.
    fn write_config(paths: &Paths, text: &str, age: Duration) {
        fs::write(&paths.config, text).unwrap();
        let file = fs::File::options().write(true).open(&paths.config).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn a_snapshot_serves_while_the_file_is_unchanged_and_never_after() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        fs::create_dir(&paths.data_dir).unwrap();
        write_config(&paths, CONFIG, Duration::ZERO);
        // The ctime of a file just written is now: too fresh to stamp.
        let (config, stamp) = Config::read(&paths.config).unwrap();
        save(&paths, &config, "work", stamp.as_ref());
        assert!(load(&paths, "work").is_none(), "a fresh file was stamped");
        // Settled (stamped as if read 3 s from now): the snapshot is written and read back.
        let (config, stamp) = Config::read(&paths.config).unwrap();
        let mut stamp = stamp.unwrap();
        stamp.mtime.0 -= 3;
        stamp.ctime.0 -= 3;
        let line = stamp.line();
        save(&paths, &config, "work", Some(&stamp));
        let text = fs::read_to_string(path(&paths, "work")).unwrap();
        assert!(text.starts_with(&line), "{text}");
        assert!(!text.contains("home"), "{text}");
        // Its stamp is not the file's (we aged it by hand), so it does not serve...
        assert!(load(&paths, "work").is_none());
        // ...while one with the file's own stamp does.
        let real = Stamp::of(&fs::metadata(&paths.config).unwrap()).line();
        fs::write(path(&paths, "work"), text.replacen(&line, &real, 1)).unwrap();
        let config = load(&paths, "work").expect("the snapshot of an unchanged file");
        assert_eq!(config.accounts.len(), 1);
        assert_eq!(config.defaults.refresh_margin, Some(120));
        // Any change to the file (same size even) and it is ignored.
        let edited = CONFIG.replace("refresh_margin = 120", "refresh_margin = 121");
        write_config(&paths, &edited, Duration::ZERO);
        assert!(load(&paths, "work").is_none());
        // As is one for another account name.
        assert!(load(&paths, "home").is_none());
    }

    #[test]
    fn a_snapshot_that_no_longer_parses_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        fs::create_dir(&paths.data_dir).unwrap();
        write_config(&paths, CONFIG, Duration::ZERO);
        let real = Stamp::of(&fs::metadata(&paths.config).unwrap()).line();
        fs::write(
            path(&paths, "work"),
            format!("{real}\n{{\"account\":{{\"provider\":1}}}}\n"),
        )
        .unwrap();
        assert!(load(&paths, "work").is_none());
    }
}
