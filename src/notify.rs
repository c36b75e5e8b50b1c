//! `notify_command`: telling the person when a login has died, or is about to, so that a
//! timer's `mailtoken refresh` or a mail program's failing calls are not the only witnesses
//! for weeks. Once an hour at most per account; but a background login's address and code
//! (`relogin = "device"`) every time, since it is the way back in.

use std::time::Duration;

use crate::config::{OpenAccount, Relogin};
use crate::log::printable;
use crate::store::{LoginEnd, Tokens};
use crate::time;

/// Between two notifications for one account.
const QUIET: u64 = 3600;
/// How long the caller waits for the command before leaving it to finish on its own.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long a caller with a token in hand waits for another process's lock before leaving
/// the telling to a later call.
const LOCK_PATIENCE: Duration = Duration::from_millis(200);

/// Run the account's notification command for a login that needs a person, unless it ran
/// in the last hour. Called under the account lock, so callers do not race to notify.
pub fn login_needed(acct: &OpenAccount, why: &str) {
    // With `relogin = "device"` the login started next is told instead (or this is said
    // through `relogin_failed`): one message, the one that carries the way in.
    if acct.account.relogin == Some(Relogin::Device) {
        return;
    }
    relogin_failed(acct, why);
}

/// A dead login whose background login could not start (or for which none is set): the
/// person has to run `mailtoken login`. Once an hour at most.
pub fn relogin_failed(acct: &OpenAccount, why: &str) {
    let reason = printable(why.lines().next().unwrap_or(why)).to_string();
    tell(acct, "login-needed", &reason);
}

/// Where to approve a login that a background process has started, and until when. Every
/// time: the process starts once per dead login, and this is the message that ends it.
pub fn login_started(acct: &OpenAccount, uri: &str, complete: Option<&str>, code: &str, left: u64) {
    let reason = format!(
        "open {uri} and enter the code {code} within {} to log in again",
        time::format_span(left)
    );
    let mut env = vec![
        ("MAILTOKEN_VERIFICATION_URI", uri),
        ("MAILTOKEN_USER_CODE", code),
    ];
    if let Some(complete) = complete {
        env.push(("MAILTOKEN_VERIFICATION_URI_COMPLETE", complete));
    }
    run(acct, "login-started", &reason, &env);
}

/// How a background login ended: `login-done` (the new tokens are stored) or `login-failed`
/// (declined, expired, refused), with the reason. Every time, as its start was.
pub fn login_ended(acct: &OpenAccount, done: bool, reason: &str) {
    let event = if done { "login-done" } else { "login-failed" };
    let reason = printable(reason.lines().next().unwrap_or(reason)).to_string();
    run(acct, event, &reason, &[]);
}

/// Whether a call with `tokens` in hand has a login's near end to tell (so that the quick
/// path leaves the call to the full one).
pub fn has_news(acct: &OpenAccount, tokens: &Tokens) -> bool {
    acct.notify.is_some() && ending(acct, tokens, time::now()).is_some()
}

/// Tell the person that the login ends soon (a day ahead, see `Tokens::login_ending`) while
/// they can still log in again without losing a mail. Called without the account lock: it is
/// taken here, briefly, so that concurrent callers tell once.
pub fn login_ending(acct: &OpenAccount, tokens: &Tokens) {
    if acct.notify.is_none() {
        return;
    }
    let now = time::now();
    let Some(end) = ending(acct, tokens, now) else {
        return;
    };
    let Ok(_lock) = acct.store.lock(&acct.name, LOCK_PATIENCE) else {
        return;
    };
    tell(acct, "login-ending", &ending_reason(end, now));
}

fn ending(acct: &OpenAccount, tokens: &Tokens, now: u64) -> Option<LoginEnd> {
    tokens.login_ending(acct.account.login_lifetime_days, now)
}

/// The one line `MAILTOKEN_REASON` holds for a login about to end.
pub fn ending_reason(end: LoginEnd, now: u64) -> String {
    format!(
        "the login {}; log in again to keep mail coming",
        end.describe(now)
    )
}

/// Run the command for `event`, unless it ran in the last hour.
fn tell(acct: &OpenAccount, event: &str, reason: &str) {
    if acct.notify.is_none() {
        return;
    }
    let files = acct.store.files();
    let stamp = files.notified(&acct.name);
    let now = time::now();
    let last = files
        .read_small(&stamp)
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| t.trim().parse::<u64>().ok());
    if !due(last, now) {
        return;
    }
    // Noted first: a command that hangs or fails is not run again at every call.
    let _ = files.replace_small(&stamp, now.to_string().as_bytes());
    run(acct, event, reason, &[]);
}

/// Run the command now, with the event's variables (and `more`) in its environment.
fn run(acct: &OpenAccount, event: &str, reason: &str, more: &[(&str, &str)]) {
    let Some(cmd) = &acct.notify else { return };
    let fix = format!("mailtoken login {}", acct.name);
    let mut env = vec![
        ("MAILTOKEN_ACCOUNT", acct.name.as_str()),
        ("MAILTOKEN_USER", acct.account.user.as_deref().unwrap_or("")),
        ("MAILTOKEN_EVENT", event),
        ("MAILTOKEN_REASON", reason),
        ("MAILTOKEN_FIX", fix.as_str()),
    ];
    env.extend_from_slice(more);
    if !crate::shell::notify(cmd, &env, PATIENCE) {
        eprintln!("mailtoken: notify_command `{cmd}` failed");
    }
}

/// Whether a notification is due, given the last one.
pub fn due(last: Option<u64>, now: u64) -> bool {
    last.is_none_or(|last| now.saturating_sub(last) >= QUIET || last > now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_an_hour_and_again_after_a_clock_jump_back() {
        assert!(due(None, 1000));
        assert!(!due(Some(1000), 1000 + 3599));
        assert!(due(Some(1000), 1000 + 3600));
        assert!(due(Some(5000), 1000));
    }

    #[test]
    fn the_reason_says_when_and_who_said_so() {
        let end = LoginEnd {
            at: 1_800_000_000,
            lifetime: Some(7 * 86_400),
            said_by_server: false,
        };
        let soon = ending_reason(end, end.at - 5 * 3600);
        assert!(soon.starts_with("the login ends in 5 h"), "{soon}");
        assert!(soon.contains("by login_lifetime_days"), "{soon}");
        let past = ending_reason(
            LoginEnd {
                said_by_server: true,
                ..end
            },
            end.at + 60,
        );
        assert!(past.starts_with("the login ended 1 min"), "{past}");
        assert!(past.contains("as the token server said"), "{past}");
    }
}
