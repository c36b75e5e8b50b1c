//! Handing out a valid access token: the cached one while it has life left, otherwise one
//! refresh (or app-only fetch) under the account lock, stored before it is printed.

use anyhow::{Context, Result};

use crate::config::{OpenAccount, Relogin, Want};
use crate::error::{self, Kind, login_needed, server};
use crate::flows;
use crate::log::{debug, fingerprint};
use crate::notify;
use crate::oauth;
use crate::provider::Flow;
use crate::store::{AccessToken, Backend, Granted, LOCK_TIMEOUT, Tokens};
use crate::sys;
use crate::time;

/// The cached access token of a file store, if it has life left and nothing is to be told:
/// what `get` hands out first, without a refresh or a program run; or, when it is due while
/// another process refreshes, the token that one stores. None means "ask `get`" (other stores
/// included: only file stores are read here, and a file that does not load is left to `get`
/// to report). An error is what `get` would say after the same wait.
pub fn cached(acct: &OpenAccount, want: &Want) -> Result<Option<AccessToken>> {
    if *acct.store.backend() != Backend::File {
        return Ok(None);
    }
    let Ok(Some(seen)) = acct.store.load_file(&acct.name) else {
        return Ok(None);
    };
    if notify::has_news(acct, &seen) {
        return Ok(None);
    }
    let key = want.key.as_deref();
    let seen_access = seen.access_for(key);
    if let Some(access) = fresh(seen_access, acct.margin) {
        return Ok(Some(access.clone()));
    }
    // Due. Waiting out another process's refresh here, in the small program, costs a storm's
    // waiters little more than a cached call; when nobody is refreshing, `get` refreshes.
    let waited_from = time::now_ms();
    let waited = acct.store.after_holder(&acct.name, LOCK_TIMEOUT, || {
        stored_meanwhile(acct, key, seen_access)
    })?;
    match waited {
        Some(Some(access)) => Ok(Some(access)),
        Some(None) => match failed_meanwhile(acct, waited_from) {
            // A dead login that starts its own replacement is the full program's to tell.
            Some(failure)
                if acct.account.relogin == Some(Relogin::Device)
                    && error::kind(&failure) == Some(Kind::LoginNeeded) =>
            {
                Ok(None)
            }
            Some(failure) => Err(failure),
            None => Ok(None),
        },
        None => Ok(None),
    }
}

/// A live token that another process stored since we saw `seen`: ours without a refresh.
/// Used while it lives at all, margin or not: with tokens of a minute, a margin would
/// otherwise send every waiter to the server in turn. File stores only (a keyring or a store
/// command is not asked again at each wake-up).
fn stored_meanwhile(
    acct: &OpenAccount,
    key: Option<&str>,
    seen: Option<&AccessToken>,
) -> Option<AccessToken> {
    if *acct.store.backend() != Backend::File {
        return None;
    }
    let access = acct
        .store
        .load_file(&acct.name)
        .ok()
        .flatten()?
        .access_for(key)
        .cloned()
        .filter(|a| Some(a) != seen && a.expires_at > time::now())?;
    debug!(
        "another process refreshed meanwhile; using {}",
        fingerprint(&access.access_token)
    );
    Some(access)
}

/// A refresh that failed at the server while we waited would fail for us too: said at once,
/// instead of making every waiter wait out the same dead server in turn. A login the provider
/// refused is told as such (exit 3).
fn failed_meanwhile(acct: &OpenAccount, since_ms: u64) -> Option<anyhow::Error> {
    let noted = acct.store.failure_since(&acct.name, since_ms)?;
    Some(if noted.login_needed {
        error::failure(Kind::LoginNeeded, noted.message)
    } else {
        server(format!(
            "another mailtoken process just tried and failed: {}",
            noted.message
        ))
    })
}

fn fresh(access: Option<&AccessToken>, margin: u64) -> Option<&AccessToken> {
    let access = access.filter(|a| a.is_fresh(time::now(), margin))?;
    debug!(
        "using cached access token {} ({} left)",
        fingerprint(&access.access_token),
        time::format_span(access.expires_at.saturating_sub(time::now()))
    );
    Some(access)
}

/// The account's own token (its own scopes, not a `--resource`'s): what `check`, `whoami`,
/// git's credential helper, `refresh` and the proxy ask for.
pub fn own(acct: &OpenAccount, force: bool) -> Result<AccessToken> {
    get(acct, &Want::own(&acct.account)?, force)
}

/// A valid access token for the account, refreshing it if needed (or if `force`). A login
/// found dead starts its own replacement in the background where the account says so
/// (`relogin = "device"`), and the error says where to approve it.
pub fn get(acct: &OpenAccount, want: &Want, force: bool) -> Result<AccessToken> {
    obtain(acct, want, force).map_err(|dead| flows::relogin::after_dead_login(acct, dead))
}

/// `get`'s story: the cached token, else the lock, a second look, one refresh, the commit.
fn obtain(acct: &OpenAccount, want: &Want, force: bool) -> Result<AccessToken> {
    let OpenAccount {
        name,
        account,
        store,
        margin,
        ..
    } = acct;
    let margin = *margin;
    let key = want.key.as_deref();
    let app_only = account.flow() == Flow::Credentials;

    // New tokens a keyring or command store refused last time: hand them over again first.
    if store.has_pending(name) {
        let _lock = store.lock(name, LOCK_TIMEOUT)?;
        store.replay_pending(name);
    }

    // The cached path: one read of a file that is only ever replaced whole, so no lock.
    let seen = store.load(name)?;
    let seen_access = seen.as_ref().and_then(|t| t.access_for(key)).cloned();
    if !force && let Some(access) = fresh(seen_access.as_ref(), margin) {
        // A login that ends soon (its refresh token's end, said or configured) is told while
        // the person can still log in again.
        if let Some(seen) = &seen {
            notify::login_ending(acct, seen);
        }
        return Ok(access.clone());
    }
    if seen.is_none() && !app_only {
        return Err(login_needed(
            name,
            format!("account `{name}` has no stored login"),
        ));
    }

    debug!("new token due; taking the lock for `{name}`");
    let waited_from = time::now_ms();
    // Let go together with the other waiters when the holder is done: if it stored a new token
    // meanwhile, that one is ours without queueing for the exclusive lock.
    let mut stored = None;
    let lock = store.lock_unless(name, LOCK_TIMEOUT, || {
        stored = stored_meanwhile(acct, key, seen_access.as_ref());
        stored.is_some()
    })?;
    let Some(lock) = lock else {
        return Ok(stored.expect("the wait ended on a stored token"));
    };
    if let Some(failure) = failed_meanwhile(acct, waited_from) {
        return Err(failure);
    }
    let current = match store.load(name)? {
        Some(tokens) => tokens,
        None if app_only => Tokens::empty(),
        None => {
            return Err(login_needed(
                name,
                format!("account `{name}` was logged out meanwhile"),
            ));
        }
    };
    // Another process may have refreshed while we waited: its token is as good as ours would
    // be, and refreshing again could race a rotating server. A token stored since we first
    // looked is used while it lives at all, margin or not: with tokens of a minute, a margin
    // would otherwise send every waiter to the server in turn.
    if let Some(access) = current.access_for(key)
        && ((Some(access) != seen_access.as_ref() && access.expires_at > time::now())
            || (!force && access.is_fresh(time::now(), margin)))
    {
        debug!(
            "another process refreshed meanwhile; using {}",
            fingerprint(&access.access_token)
        );
        return Ok(access.clone());
    }
    // Tokens rescued when a refresh could not store them hold the live refresh token.
    let current = store.replay_rescued(name, &current).unwrap_or(current);
    if let Some(access) = current.access_for(key)
        && Some(access) != seen_access.as_ref()
        && access.expires_at > time::now()
        && !force
    {
        return Ok(access.clone());
    }
    // A refresh token the provider has refused is not sent again: the login is dead until a
    // new one replaces it (each of a hundred callers would otherwise ask, and be refused).
    if let Some(refused) = current
        .refresh_token
        .as_deref()
        .and_then(|rt| store.refused_login(name, rt))
    {
        return Err(error::failure(Kind::LoginNeeded, refused));
    }
    // Made ready before the request, room for the new tokens included: finding the store
    // unwritable (or the disk full) after a rotating server has answered would lose the refresh
    // token it just revoked.
    let pending = store.prepare(name, &current)?;
    // From the request to the commit, the new refresh token lives only in this process: a
    // SIGTERM then waits until it is stored (and then ends the process, as it would have).
    let held = sys::process::hold_signals();
    let sent_refresh_token = current.refresh_token.clone();
    let fetched = if app_only {
        oauth::fetch_app_only(acct, want)
            .map(Granted::access_only)
            .map_err(Refused::from)
    } else {
        refresh(acct, &current, want)
    };
    let granted = match fetched {
        Ok(fetched) => fetched,
        Err(Refused { err, kept }) => {
            // The server rotated the refresh token in a reply refused for its access token:
            // the new one is the login now, stored before the failure is told.
            let err = match kept {
                Some(kept) => {
                    let mut updated = current;
                    updated.take_refresh_token(kept.refresh_token, kept.ends_at);
                    store.commit(name, pending, &updated)?;
                    debug!("kept the new refresh token of a refused reply");
                    server(format!(
                        "{err:#}\nIts new refresh token was stored, so the login is kept: try again."
                    ))
                }
                None => err,
            };
            // Nothing new is in memory now: a signal may end the process during what follows.
            drop(held);
            match error::kind(&err) {
                Some(Kind::Server) => {
                    store.note_failure(name, &format!("{err:#}"));
                    oauth::discovery::forget(acct);
                }
                Some(Kind::LoginNeeded) => {
                    // Refused as rotated already? A process that took a lock file removed
                    // meanwhile may be storing the next login, or have stored it: then it is
                    // ours. (Its request is bounded by the HTTP timeouts.)
                    store.wait_for_other_writers(name, LOCK_TIMEOUT);
                    if let Ok(Some(now)) = store.load(name)
                        && now.refresh_token != sent_refresh_token
                        && let Some(access) = now.access_for(key)
                        && access.expires_at > time::now()
                    {
                        debug!("refused, but another process stored a new login meanwhile");
                        return Ok(access.clone());
                    }
                    if let Some(rt) = &sent_refresh_token {
                        store.note_login_needed(name, &format!("{err:#}"), rt);
                    }
                    notify::login_needed(acct, &format!("{err:#}"));
                }
                _ => {}
            }
            return Err(err);
        }
    };
    let access = granted.access.clone();
    let rotated_note = if granted.refresh_token.is_some() {
        " and a rotated refresh token"
    } else {
        ""
    };
    let mut updated = current;
    updated.update(key, granted);
    if !app_only {
        updated.refreshed_at = Some(time::now());
    }
    store.commit(name, pending, &updated)?;
    store.clear_failure(name);
    debug!(
        "stored new access token {}{rotated_note}",
        fingerprint(&access.access_token)
    );
    drop(held);
    drop(lock);
    // A refresh moves a login's end only when the server says so (or a rotation clears it).
    notify::login_ending(acct, &updated);
    Ok(access)
}

/// A refresh that failed, and the new refresh token its reply carried if it must be kept.
struct Refused {
    err: anyhow::Error,
    kept: Option<oauth::Salvaged>,
}

impl From<anyhow::Error> for Refused {
    fn from(err: anyhow::Error) -> Refused {
        Refused { err, kept: None }
    }
}

/// Ask the server for a new access token with the refresh token. The store is not touched
/// here: on an error the caller keeps what it had, and the reply's new refresh token if the
/// rest of the reply was refused.
fn refresh(
    acct: &OpenAccount,
    current: &Tokens,
    want: &Want,
) -> std::result::Result<Granted, Refused> {
    let OpenAccount { name, account, .. } = acct;
    let refresh_token = current.refresh_token.as_deref().ok_or_else(|| {
        login_needed(
            name,
            "the access token expired and the stored login has no refresh token \
             (the server sent none: is offline_access among the scopes?)",
        )
    })?;
    let way = oauth::TokenWay::open(acct)?;
    let scope = account.scope_param(&want.scopes);
    debug!(
        "refreshing at {} with refresh token {}",
        way.url,
        fingerprint(refresh_token)
    );
    let sent_at = time::now();
    let reply = oauth::refresh(&way.http, &way.url, &way.client, refresh_token, &scope)
        .with_context(|| format!("account `{name}`"))?
        .map_err(|e| e.into_error("refreshing the access token", account.provider, name))?;
    let kept = reply.salvage(sent_at);
    reply
        .into_access(sent_at, &scope)
        .map_err(|err| Refused { err, kept })
}
