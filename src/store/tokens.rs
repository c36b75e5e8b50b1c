//! What is stored for an account: access tokens, the refresh token, and the file format.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::log::fingerprint;

pub const FORMAT_VERSION: u32 = 1;

/// No access token is trusted to live longer than this, whatever a server says: a reply's
/// `expires_in` is clamped to it.
pub const MAX_LIFETIME: u64 = 7 * 86_400;

/// One access token and what it is good for.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessToken {
    pub access_token: String,
    pub token_type: String,
    /// Unix seconds.
    pub expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Unix seconds when it was asked for (absent in files written before this was kept): the
    /// token's lifetime, and a clock that went back, are read from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obtained_at: Option<u64>,
}

/// Everything stored for one account: the access token for its own scopes, the refresh token
/// that renews it, and access tokens for other resources minted from the same refresh token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub version: u32,
    /// Absent only for app-only accounts that have fetched tokens for other resources alone.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Unix seconds when the server handed out the stored refresh token (at login, or when it
    /// rotated it); absent in files written before this was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_at: Option<u64>,
    /// Unix seconds of the last refresh the server granted: providers end logins left unused
    /// (Microsoft after 90 days, Google after 6 months).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed_at: Option<u64>,
    /// Keyed by the space-joined scopes they were requested for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, AccessToken>,
}

// Debug output ends up in logs and panics: never show the secrets themselves.
impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("access_token", &fingerprint(&self.access_token))
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .field("obtained_at", &self.obtained_at)
            .finish()
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("access", &self.access)
            .field(
                "refresh_token",
                &self.refresh_token.as_deref().map(fingerprint),
            )
            .field("resources", &self.resources)
            .finish()
    }
}

impl AccessToken {
    /// The seconds of life the server gave it, when known.
    pub fn lifetime(&self) -> Option<u64> {
        self.obtained_at
            .map(|obtained| self.expires_at.saturating_sub(obtained))
    }

    /// The refresh margin that applies to this token: the configured one, but at most half the
    /// token's life, so that tokens of a minute (or of five, with the default 300 s margin) are
    /// not refreshed on every call.
    pub fn margin(&self, configured: u64) -> u64 {
        self.lifetime()
            .map_or(configured, |life| configured.min(life / 2))
    }

    /// Still usable for at least its margin at `now`. A clock that is now before the moment
    /// the token was obtained cannot tell how old it is: that means "refresh now". (Since a
    /// reply's life is clamped to `MAX_LIFETIME`, no token then stays fresh for longer.)
    pub fn is_fresh(&self, now: u64, margin: u64) -> bool {
        if self.obtained_at.is_some_and(|obtained| now < obtained) {
            return false;
        }
        self.expires_at > now.saturating_add(self.margin(margin))
    }
}

impl Tokens {
    pub fn empty() -> Tokens {
        Tokens {
            version: FORMAT_VERSION,
            access: None,
            refresh_token: None,
            refresh_token_at: None,
            refreshed_at: None,
            resources: BTreeMap::new(),
        }
    }

    /// The access token for `resource` (`None`: the account's own scopes).
    pub fn access_for(&self, resource: Option<&str>) -> Option<&AccessToken> {
        match resource {
            None => self.access.as_ref(),
            Some(key) => self.resources.get(key),
        }
    }

    /// Put a new access token in its place, and the refresh token the server sent with it, if
    /// any: a server that sends none means "keep using the old one".
    pub fn update(&mut self, resource: Option<&str>, access: AccessToken, refresh: Option<String>) {
        match resource {
            None => self.access = Some(access),
            Some(key) => {
                self.resources.insert(key.to_string(), access);
            }
        }
        if refresh.is_some() {
            self.refresh_token_at = Some(crate::time::now());
            self.refresh_token = refresh;
        }
    }

    /// When the refresh token was last put to use: the last refresh, else when it was given.
    pub fn refresh_token_used_at(&self) -> Option<u64> {
        self.refreshed_at.max(self.refresh_token_at)
    }
}

pub fn parse(bytes: &[u8]) -> Result<Tokens> {
    let tokens: Tokens = serde_json::from_slice(bytes)?;
    if tokens.version != FORMAT_VERSION {
        bail!(
            "format version {} is not supported by this mailtoken (it reads version {FORMAT_VERSION})",
            tokens.version
        );
    }
    let accesses = tokens.access.iter().chain(tokens.resources.values());
    if accesses.clone().any(|a| a.access_token.is_empty()) {
        bail!("an access token is empty");
    }
    if tokens.refresh_token.is_none() && accesses.count() == 0 {
        bail!("it holds no token at all");
    }
    Ok(tokens)
}
