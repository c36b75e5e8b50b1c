//! The small program's whole contract: the cached `token` call that `mailtoken` (src/main.rs)
//! answers by itself, and everything that answer trusts to agree with `mailtoken-full`.
//!
//! `quick` answers only when the full program would print the same thing; for anything else
//! it returns None, and `mailtoken` becomes `mailtoken-full` (`shell::become_full`), which
//! starts again from the arguments. What the answer rests on, each held by a test:
//!
//! - **argv**: `[--config P] [--data-dir D] token NAME [--format|-f F] [--user U]`, each flag
//!   at most once, `--flag V` or `--flag=V` (`QuickCall::parse`). `QUICK_FLAGS` lists them; a
//!   unit test below walks clap's definition (`cli::Cli`) and fails on any flag, alias or
//!   `env` of `token` or the global arguments that this path neither reads nor hands over.
//! - **environment**: `QUICK_ENV` (the paths, read as clap reads them), and `MAILTOKEN_QUICK=0`
//!   to turn this path off.
//! - **the config snapshot** (`config/snapshot.rs`, version `snapshot::VERSION`): one
//!   account's table and the top-level `config::Defaults`, valid while the config file's stamp
//!   is unchanged. It goes through `Config::open` like the file does.
//! - **the token file** (`store/tokens.rs`, `FORMAT_VERSION`): read through the store, file
//!   stores only; a keyring or a store command is the full program's.
//! - **the lock protocol** (`store/lock.rs`): a due token is waited for under the shared lock
//!   while another process refreshes (`token::cached`); nobody refreshing sends the call on.
//! - **the build handshake** (`shell.rs`): the full program refuses a front of another build.
//! - **no programs started**: the front links no fork, exec of anything but the full program,
//!   or spawn (an integration test reads its symbols); so no `notify_command` or store command
//!   runs here, and `token::cached` hands anything that would run one to the full path.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;

use crate::config::{self, Paths, Want};
use crate::output::{self, Format, Sasl};
use crate::store::Backend;

/// `token NAME` as mail programs run it, thousands of times a day: answered from the account's
/// config snapshot and its cached token (or the one another process is refreshing), before
/// the command-line parser is even built. None when anything is out of the ordinary (another
/// command or flag, no snapshot of an unchanged config, a token due that nobody is
/// refreshing, a store other than files): then the full path runs, from the start, and says
/// what it always says. What this path prints, the full path would have printed.
pub fn quick(args: &[OsString]) -> Option<Result<()>> {
    // MAILTOKEN_QUICK=0: every call takes the full path (to rule this one out).
    if std::env::var_os("MAILTOKEN_QUICK").is_some_and(|v| v == "0") {
        return None;
    }
    let call = QuickCall::parse(args)?;
    let paths = Paths::resolve(
        call.config.or(from_env("MAILTOKEN_CONFIG")?),
        call.data_dir.or(from_env("MAILTOKEN_DATA_DIR")?),
    )
    .ok()?;
    let acct = config::snapshot::load(&paths, &call.account)?
        .open(&paths, &call.account)
        .ok()?;
    if *acct.store.backend() != Backend::File {
        return None;
    }
    if let Some(user) = &call.user {
        config::validate_user(user).ok()?;
    }
    let sasl = Sasl {
        user: call.user.as_deref().or(acct.account.user.as_deref()),
        host: None,
        port: None,
    };
    output::require_user(call.format, &sasl).ok()?;
    let want = Want::own(&acct.account).ok()?;
    let tokens = match crate::token::cached(&acct, &want) {
        Ok(tokens) => tokens?,
        // After waiting out another process's refresh that failed, or the lock's deadline:
        // the full path would say the same, after waiting again.
        Err(err) => return Some(Err(err)),
    };
    let text = output::render(call.format, &tokens, &sasl).ok()?;
    Some(output::write_stdout(
        &format!("{text}\n"),
        "cannot write the token to stdout",
    ))
}

/// A path from the environment as clap would take it; None (ask the full path) when it is
/// set but empty, which clap may read either way.
fn from_env(var: &str) -> Option<Option<PathBuf>> {
    match std::env::var_os(var) {
        None => Some(None),
        Some(v) if v.is_empty() => None,
        Some(v) => Some(Some(PathBuf::from(v))),
    }
}

/// The flags `QuickCall::parse` reads (long name, short name); any other flag, and any flag
/// given twice, sends the call to the full parser. A test walks clap's definition against it.
pub const QUICK_FLAGS: &[(&str, Option<char>)] = &[
    ("format", Some('f')),
    ("user", None),
    ("config", None),
    ("data-dir", None),
];

/// The variables the quick path reads where clap would (`from_env`); a flag with any other
/// `env` would be answered differently here. A test walks clap's definition against it.
pub const QUICK_ENV: &[&str] = &["MAILTOKEN_CONFIG", "MAILTOKEN_DATA_DIR"];

/// The arguments the quick path takes: `token NAME` with `--format`/`-f`, `--user`, and the
/// global `--config` and `--data-dir`, each at most once, as `--flag VALUE` or `--flag=VALUE`.
#[derive(Debug, Default, PartialEq)]
pub struct QuickCall {
    pub account: String,
    pub format: Format,
    pub user: Option<String>,
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
}

impl QuickCall {
    /// None for anything else: the full parser decides about it.
    pub fn parse(args: &[OsString]) -> Option<QuickCall> {
        let mut words = args.iter().skip(1).map(|a| a.to_str());
        let mut call = QuickCall::default();
        let (mut account, mut format) = (None, None);
        let mut subcommand = false;
        while let Some(word) = words.next() {
            let word = word?;
            let (flag, inline) = match word.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
                _ => (word, None),
            };
            let mut value = || inline.map(Some).unwrap_or_else(|| words.next().flatten());
            match flag {
                "token" if !subcommand && inline.is_none() => subcommand = true,
                "--format" | "-f" if subcommand && format.is_none() => {
                    format = Some(<Format as clap::ValueEnum>::from_str(value()?, false).ok()?);
                }
                "--user" if subcommand && call.user.is_none() => {
                    call.user = Some(value()?.to_string());
                }
                "--config" if call.config.is_none() => call.config = Some(value()?.into()),
                "--data-dir" if call.data_dir.is_none() => call.data_dir = Some(value()?.into()),
                _ if subcommand
                    && account.is_none()
                    && inline.is_none()
                    && !word.starts_with('-') =>
                {
                    account = Some(word.to_string());
                }
                _ => return None,
            }
        }
        call.account = account?;
        call.format = format.unwrap_or_default();
        // A value that looks like a flag is clap's to judge (it may refuse it).
        [
            call.user.as_deref(),
            call.config.as_ref().and_then(|p| p.to_str()),
            call.data_dir.as_ref().and_then(|p| p.to_str()),
        ]
        .iter()
        .flatten()
        .all(|v| !v.starts_with('-') && !v.is_empty())
        .then_some(call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag and variable of `token` and of the global arguments, from clap's own
    /// definition: one the quick path reads must be read with the same names (no alias it
    /// does not know); any other must send the call to the full parser; and no `env` may be
    /// one the quick path does not read (it would answer without it).
    #[test]
    fn the_quick_path_reads_or_hands_over_every_flag_and_variable_of_token() {
        use clap::CommandFactory;
        let cli = crate::cli::Cli::command();
        let token = cli.find_subcommand("token").expect("a token subcommand");
        for arg in cli.get_arguments().chain(token.get_arguments()) {
            let id = arg.get_id().as_str();
            if let Some(env) = arg.get_env() {
                assert!(
                    QUICK_ENV.iter().any(|v| env == *v),
                    "--{id} reads {env:?}, which the quick path does not"
                );
            }
            if arg.is_positional() {
                continue;
            }
            let long = arg.get_long().unwrap_or(id);
            match QUICK_FLAGS.iter().find(|(l, _)| *l == long) {
                Some((_, short)) => {
                    assert_eq!(arg.get_short(), *short, "--{long}: its short name");
                    assert_eq!(
                        arg.get_all_aliases().map(|a| a.len()).unwrap_or(0),
                        0,
                        "--{long} has aliases the quick path does not read"
                    );
                    assert_eq!(
                        arg.get_all_short_aliases().map(|a| a.len()).unwrap_or(0),
                        0,
                        "-{short:?} has aliases the quick path does not read"
                    );
                }
                None => {
                    let mut spellings = vec![format!("--{long}")];
                    spellings.extend(arg.get_short().map(|c| format!("-{c}")));
                    spellings.extend(
                        arg.get_all_aliases()
                            .unwrap_or_default()
                            .iter()
                            .map(|a| format!("--{a}")),
                    );
                    for flag in spellings {
                        for words in [
                            vec!["token", "work", flag.as_str()],
                            vec![flag.as_str(), "token", "work"],
                            vec!["token", "work", flag.as_str(), "x"],
                        ] {
                            assert_eq!(parse(&words), None, "{words:?} was not handed over");
                        }
                    }
                }
            }
        }
    }

    fn parse(words: &[&str]) -> Option<QuickCall> {
        let args: Vec<OsString> = std::iter::once("mailtoken")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect();
        QuickCall::parse(&args)
    }

    #[test]
    fn the_usual_calls_are_taken() {
        let plain = parse(&["token", "work"]).unwrap();
        assert_eq!(
            (plain.account.as_str(), plain.format),
            ("work", Format::Raw)
        );
        for words in [
            &["token", "work", "--format", "xoauth2"][..],
            &["token", "work", "-f", "xoauth2"],
            &["token", "--format=xoauth2", "work"],
        ] {
            assert_eq!(parse(words).unwrap().format, Format::Xoauth2, "{words:?}");
        }
        let full = parse(&[
            "--config",
            "/c.toml",
            "token",
            "work",
            "--user=u@example.com",
            "--data-dir",
            "/d",
        ])
        .unwrap();
        assert_eq!(full.user.as_deref(), Some("u@example.com"));
        assert_eq!(full.config, Some(PathBuf::from("/c.toml")));
        assert_eq!(full.data_dir, Some(PathBuf::from("/d")));
    }

    #[test]
    fn anything_else_is_left_to_the_full_parser() {
        for words in [
            &[][..],
            &["token"],
            &["status", "work"],
            &["work", "token"],
            &["token", "work", "other"],
            &["token", "work", "--format", "bogus"],
            &["token", "work", "--format"],
            &["token", "work", "-fxoauth2"],
            &["token", "work", "-f", "raw", "-f", "json"],
            &["token", "work", "--user", "a", "--user", "b"],
            &["token", "work", "--user", "-v"],
            &["token", "work", "--user="],
            &["token", "work", "--force-refresh"],
            &["token", "work", "--scope", "mail"],
            &["token", "work", "-v"],
            &["-v", "token", "work"],
            &["token", "work", "--help"],
            &["token", "--", "work"],
            &["token", "-work"],
            &["--config", "a", "--config", "b", "token", "work"],
            &["--config=", "token", "work"],
        ] {
            assert_eq!(parse(words), None, "{words:?}");
        }
    }
}
