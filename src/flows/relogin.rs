//! `relogin = "device"`: a call that finds the login dead starts a device login in the background.
//!
//! The call (`token`, the proxy, `refresh`) starts `mailtoken-full background-login NAME` and
//! fails at once (exit 3), saying where to approve the login; the background process asks for
//! the device code, records the address and code (`NAME.relogin.json`: nothing secret; or why
//! it could not start, which spares the server the same request for ten minutes), tells
//! `notify_command`, polls until the person approves or the code runs out, and stores the tokens
//! as `mailtoken login` does. It holds `NAME.relogin.lock` throughout: one such login per
//! account at a time, and calls in the meantime point at it instead of starting another.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::config::{OpenAccount, Relogin};
use crate::error::{self, Kind};
use crate::http::Http;
use crate::log::printable;
use crate::notify;
use crate::oauth;
use crate::time;

use super::device;

/// How long a call waits for the background process to say its login has started: one
/// device-authorization request, bounded by the HTTP client's timeouts.
const PATIENCE: Duration = Duration::from_secs(45);
/// How long a call waits for the record of a login another process is starting right now.
const RECORD_PATIENCE: Duration = Duration::from_secs(10);
/// The background process's first line: its login started (and is recorded).
pub const STARTED: &str = "started";
/// The background process's first line: another one holds the account's background login.
pub const RUNNING: &str = "running";
/// The background process's first line when it could not start: this, then why.
pub const FAILED: &str = "failed: ";
/// The hidden subcommand the background process runs.
pub const SUBCOMMAND: &str = "background-login";
/// How long after a background login could not start no other is tried: every call would
/// otherwise ask the server again for a device code it refuses (a tenant that blocks the
/// device flow, a client it does not know).
const RETRY_AFTER: u64 = 600;

/// The record of a background login that could not start, kept in place of a `Waiting`.
#[derive(Debug, Serialize, Deserialize)]
struct Failed {
    failed_at: u64,
    why: String,
}

/// A login waiting for approval, as its background process recorded it: what the person is
/// shown anyway (the device code, which is secret, stays in that process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    pub verification_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_uri_complete: Option<String>,
    pub user_code: String,
    /// When the code runs out (Unix seconds).
    pub expires_at: u64,
    /// When the login the background one replaces was made (its `logged_in_at`, if it says):
    /// a login stored with another time (one made by hand) takes the background one's place.
    #[serde(default)]
    pub replaces: Option<u64>,
}

impl Waiting {
    /// From the server's device authorization, refused if it is not something to show a
    /// person and put in a notifier's environment: short, printable, an https address.
    pub fn from_server(
        auth: &oauth::DeviceAuthorization,
        lifetime: u64,
        now: u64,
    ) -> Result<Waiting> {
        let shown = |what: &str, value: &str, most: usize| -> Result<()> {
            if value.is_empty()
                || value.len() > most
                || !value.chars().all(|c| c.is_ascii_graphic())
            {
                bail!(
                    "the server's device login has an unusable {what}: empty, over {most} characters, or not printable"
                );
            }
            Ok(())
        };
        let address = |what: &str, value: &str| -> Result<()> {
            shown(what, value, 2048)?;
            let url = reqwest::Url::parse(value)
                .ok()
                .filter(|u| u.scheme() == "https" || crate::provider::is_loopback(u));
            if url.is_none() {
                bail!("the server's device login {what} is not an https address");
            }
            Ok(())
        };
        address("verification address", &auth.verification_uri)?;
        if let Some(complete) = &auth.verification_uri_complete {
            address("complete verification address", complete)?;
        }
        shown("user code", &auth.user_code, 64)?;
        Ok(Waiting {
            verification_uri: auth.verification_uri.clone(),
            verification_uri_complete: auth.verification_uri_complete.clone(),
            user_code: auth.user_code.clone(),
            expires_at: now + lifetime,
            replaces: None,
        })
    }
}

/// What a call that found the login dead fails with: with `relogin = "device"`, where to
/// approve the login it started (or found waiting); otherwise `dead` as it is.
pub fn after_dead_login(acct: &OpenAccount, dead: anyhow::Error) -> anyhow::Error {
    if acct.account.relogin != Some(Relogin::Device)
        || error::kind(&dead) != Some(Kind::LoginNeeded)
    {
        return dead;
    }
    let why = format!("{dead:#}");
    let why = why.lines().next().unwrap_or("the login has ended");
    match start(acct) {
        Ok((waiting, new)) => error::failure(
            Kind::LoginNeeded,
            tell(&acct.name, why, &waiting, new, time::now()),
        ),
        Err(err) => {
            let message = format!(
                "{dead:#}\n(relogin = \"device\": the background login could not start: {err:#})"
            );
            notify::relogin_failed(acct, &message);
            error::failure(Kind::LoginNeeded, message)
        }
    }
}

/// The login waiting for approval and whether this call started it: the one a background
/// process holds already, else a new one.
fn start(acct: &OpenAccount) -> Result<(Waiting, bool)> {
    if let Some(waiting) = waiting(acct) {
        return Ok((waiting, false));
    }
    let now = time::now();
    if let Some(failed) = failed_lately(acct, now) {
        bail!(
            "{} ({} ago; tried again {} from now)",
            printable(&failed.why),
            time::format_span(now - failed.failed_at),
            time::format_span(failed.failed_at + RETRY_AFTER - now)
        );
    }
    let paths = &acct.paths;
    let mut args = vec![OsStr::new("--config"), paths.config.as_os_str()];
    // An XDG default is found again by the program from the same environment; a directory
    // named by flag is named again (and keeps what being named means for its mode).
    if paths.data_dir_chosen {
        args.extend([OsStr::new("--data-dir"), paths.data_dir.as_os_str()]);
    }
    args.extend([OsStr::new(SUBCOMMAND), OsStr::new(&acct.name)]);
    let said = crate::shell::start_full_in_background(&args, PATIENCE)?;
    match said.as_str() {
        STARTED => waiting(acct)
            .map(|waiting| (waiting, true))
            .context("the background login said it started but left no record of where"),
        RUNNING => {
            // Another call's background process has the lock and is asking for its code.
            let until = Instant::now() + RECORD_PATIENCE;
            loop {
                if let Some(waiting) = waiting(acct) {
                    return Ok((waiting, false));
                }
                if Instant::now() >= until || !acct.store.relogin_running(&acct.name) {
                    bail!(
                        "another background login was starting, and did not say where to approve it"
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        other => bail!("{}", printable(other.strip_prefix(FAILED).unwrap_or(other))),
    }
}

/// The login waiting for approval, if a background process is running one (for `status`).
pub fn waiting(acct: &OpenAccount) -> Option<Waiting> {
    if !acct.store.relogin_running(&acct.name) {
        return None;
    }
    let files = acct.store.files();
    let bytes = files.read_small(&files.relogin(&acct.name))?;
    let waiting: Waiting = serde_json::from_slice(&bytes).ok()?;
    (waiting.expires_at > time::now() && !replaced(acct, waiting.replaces)).then_some(waiting)
}

/// When the account's stored login was made, if it says.
fn logged_in_at(acct: &OpenAccount) -> Option<u64> {
    acct.store
        .load(&acct.name)
        .ok()
        .flatten()
        .and_then(|tokens| tokens.logged_in_at)
}

/// Whether another login than the dead one (made at `dead`) has been stored (one made by hand
/// while the background login waited): the background login is then no longer needed.
/// Compared by the login's own time, not the clock's: a second is too coarse to order them.
fn replaced(acct: &OpenAccount, dead: Option<u64>) -> bool {
    logged_in_at(acct).is_some_and(|at| Some(at) != dead)
}

/// Real time for the background login's polling, in which the code runs out at once when a
/// login made meanwhile by hand has taken its place.
struct Watching<'a> {
    start: Instant,
    acct: &'a OpenAccount,
    dead: Option<u64>,
    replaced: bool,
}

impl device::Clock for Watching<'_> {
    fn elapsed(&self) -> Duration {
        if self.replaced {
            Duration::MAX / 2
        } else {
            self.start.elapsed()
        }
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
        self.replaced = replaced(self.acct, self.dead);
    }
}

/// A background login that could not start less than `RETRY_AFTER` ago (and none running).
fn failed_lately(acct: &OpenAccount, now: u64) -> Option<Failed> {
    let files = acct.store.files();
    let bytes = files.read_small(&files.relogin(&acct.name))?;
    let failed: Failed = serde_json::from_slice(&bytes).ok()?;
    (failed.failed_at <= now && now - failed.failed_at < RETRY_AFTER).then_some(failed)
}

/// The failing call's message: why, and where the new login waits.
pub fn tell(name: &str, why: &str, waiting: &Waiting, new: bool, now: u64) -> String {
    let what = if new {
        "A new login was started in the background"
    } else {
        "A new login is waiting for approval"
    };
    let page = waiting
        .verification_uri_complete
        .as_deref()
        .unwrap_or(&waiting.verification_uri);
    format!(
        "{why}\n{what}: open {page} and enter the code {} within {} (or run `mailtoken login {name}`)",
        waiting.user_code,
        time::format_span(waiting.expires_at.saturating_sub(now)),
    )
}

/// The background process: start a device login, `say` how that went (one line: `STARTED`,
/// `RUNNING` or `FAILED` and why), then wait for the person and store the tokens.
pub fn run(acct: &OpenAccount, say: &mut dyn FnMut(&str)) -> Result<()> {
    let name = &acct.name;
    let Some(_running) = acct.store.relogin_lock(name)? else {
        say(RUNNING);
        return Ok(());
    };
    let files = acct.store.files();
    let record = files.relogin(name);
    let begun = (|| {
        let http = Http::new(acct.account.tls_ca_file().as_deref())?;
        let endpoints = oauth::endpoints(&http, acct)?;
        let started = device::begin(&http, acct, &endpoints)?;
        let mut waiting =
            Waiting::from_server(&started.auth, started.lifetime.as_secs(), time::now())?;
        waiting.replaces = logged_in_at(acct);
        files.replace_small(&record, &serde_json::to_vec(&waiting)?)?;
        Ok::<_, anyhow::Error>((http, started, waiting))
    })();
    let (http, started, waiting) = match begun {
        Ok(begun) => begun,
        Err(err) => {
            let why = format!("{err:#}");
            let why = why.lines().next().unwrap_or("").to_string();
            // Kept, so that the calls of the next minutes do not ask the server again.
            let failed = Failed {
                failed_at: time::now(),
                why: why.clone(),
            };
            let _ = files.replace_small(&record, &serde_json::to_vec(&failed)?);
            say(&format!("{FAILED}{why}"));
            return Err(err);
        }
    };
    say(STARTED);
    notify::login_started(
        acct,
        &waiting.verification_uri,
        waiting.verification_uri_complete.as_deref(),
        &waiting.user_code,
        started.lifetime.as_secs(),
    );
    let mut clock = Watching {
        start: Instant::now(),
        acct,
        dead: waiting.replaces,
        replaced: false,
    };
    let stored = device::wait(&http, acct, &started, &mut clock);
    if clock.replaced {
        let _ = std::fs::remove_file(&record);
        notify::login_ended(acct, true, "a login made meanwhile took its place");
        return Ok(());
    }
    let stored = stored.and_then(|granted| super::store_login(acct, granted));
    // Gone before the lock is let go: a record without its process would point at a dead code.
    let _ = std::fs::remove_file(&record);
    match &stored {
        Ok(_) => notify::login_ended(acct, true, "the new login is stored"),
        Err(err) => notify::login_ended(acct, false, &format!("{err:#}")),
    }
    stored.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(uri: &str, code: &str) -> oauth::DeviceAuthorization {
        serde_json::from_value(serde_json::json!({
            "device_code": "dc-secret",
            "user_code": code,
            "verification_uri": uri,
            "expires_in": 900,
        }))
        .unwrap()
    }

    #[test]
    fn what_the_server_shows_must_be_showable() {
        let w = Waiting::from_server(
            &auth("https://microsoft.com/devicelogin", "ABCD-EFGH"),
            900,
            100,
        )
        .unwrap();
        assert_eq!(w.expires_at, 1000);
        assert!(!serde_json::to_string(&w).unwrap().contains("dc-secret"));
        for (uri, code) in [
            ("http://evil.example/device", "ABCD"),
            ("https://x.example/\u{1b}[2J", "ABCD"),
            ("https://x.example/device", "AB\nCD"),
            ("https://x.example/device", ""),
            ("javascript:alert(1)", "ABCD"),
        ] {
            assert!(
                Waiting::from_server(&auth(uri, code), 900, 0).is_err(),
                "{uri} {code:?}"
            );
        }
        let long = "A".repeat(65);
        assert!(Waiting::from_server(&auth("https://x.example/d", &long), 900, 0).is_err());
    }

    #[test]
    fn the_failing_call_says_where_to_approve() {
        let waiting = Waiting {
            verification_uri: "https://microsoft.com/devicelogin".into(),
            verification_uri_complete: None,
            user_code: "ABCD-EFGH".into(),
            expires_at: 1000 + 14 * 60,
            replaces: None,
        };
        let text = tell(
            "work",
            "refreshing was refused: invalid_grant",
            &waiting,
            true,
            1000,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "refreshing was refused: invalid_grant");
        assert!(lines[1].starts_with("A new login was started"), "{text}");
        assert!(
            lines[1].contains(
                "open https://microsoft.com/devicelogin and enter the code ABCD-EFGH within 14 min"
            ),
            "{text}"
        );
        assert!(lines[1].contains("mailtoken login work"), "{text}");
        let complete = Waiting {
            verification_uri_complete: Some("https://microsoft.com/devicelogin?code=ABCD".into()),
            ..waiting
        };
        let text = tell("work", "dead", &complete, false, 1000);
        assert!(
            text.contains(
                "is waiting for approval: open https://microsoft.com/devicelogin?code=ABCD"
            ),
            "{text}"
        );
    }
}
