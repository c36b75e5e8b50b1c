//! `notify_command`: telling the person when a login has died (the provider refused the
//! refresh token, or there is none left), so that a timer's `mailtoken refresh` or a mail
//! program's failing calls are not the only witnesses for weeks. Once an hour at most.

use std::time::Duration;

use crate::config::OpenAccount;
use crate::log::printable;
use crate::store;
use crate::time;

/// Between two notifications for one account.
const QUIET: u64 = 3600;
/// How long the caller waits for the command before leaving it to finish on its own.
const PATIENCE: Duration = Duration::from_secs(5);

/// Run the account's notification command for a login that needs a person, unless it ran
/// in the last hour. Called under the account lock, so callers do not race to notify.
pub fn login_needed(acct: &OpenAccount, why: &str) {
    let Some(cmd) = &acct.notify else { return };
    let dir = acct.store.dir();
    let stamp = dir.join(format!("{}.notified", acct.name));
    let now = time::now();
    let last = store::read_private_file(&stamp)
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| t.trim().parse::<u64>().ok());
    if !due(last, now) {
        return;
    }
    // Noted first: a command that hangs or fails is not run again at every call.
    let _ = store::replace_private_file(dir, &stamp, now.to_string().as_bytes());
    let reason = printable(why.lines().next().unwrap_or(why)).to_string();
    let fix = format!("mailtoken login {}", acct.name);
    let env = [
        ("MAILTOKEN_ACCOUNT", acct.name.as_str()),
        ("MAILTOKEN_USER", acct.account.user.as_deref().unwrap_or("")),
        ("MAILTOKEN_REASON", reason.as_str()),
        ("MAILTOKEN_FIX", fix.as_str()),
    ];
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
    #[test]
    fn once_an_hour_and_again_after_a_clock_jump_back() {
        use super::due;
        assert!(due(None, 1000));
        assert!(!due(Some(1000), 1000 + 3599));
        assert!(due(Some(1000), 1000 + 3600));
        assert!(due(Some(5000), 1000));
    }
}
