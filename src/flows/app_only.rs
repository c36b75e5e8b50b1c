//! `login` for client credentials (RFC 6749 section 4.4): there is no person and no refresh
//! token, so "logging in" is fetching the first app-only token (`oauth::fetch_app_only`, which
//! `token::get` also calls whenever one is due) and storing it.

use anyhow::Result;

use crate::config::{OpenAccount, Want};
use crate::oauth;
use crate::store::{Granted, LOCK_TIMEOUT, Tokens};

/// `login` for an app-only account: fetching a token proves the setup and fills the cache.
pub fn login(acct: &OpenAccount) -> Result<Tokens> {
    let OpenAccount { name, store, .. } = acct;
    let want = Want::own(&acct.account)?;
    let _lock = store.lock(name, LOCK_TIMEOUT)?;
    // A damaged file would fail the load below with advice to log in: the very command that
    // is running. Kept beside, as an interactive login does.
    store.set_aside_damaged(name)?;
    let mut tokens = store.load(name)?.unwrap_or_else(Tokens::empty);
    tokens.update(
        want.key.as_deref(),
        Granted::access_only(oauth::fetch_app_only(acct, &want)?),
    );
    store.save(name, &tokens)?;
    Ok(tokens)
}
