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

/// What a token server granted in one reply.
#[derive(Debug)]
pub struct Granted {
    pub access: AccessToken,
    /// A new refresh token (a rotation, or the login's first); None: keep the old one.
    pub refresh_token: Option<String>,
    /// When the refresh token (the new one, else the old) ends, if the server said.
    pub refresh_token_ends_at: Option<u64>,
}

impl Granted {
    /// An access token alone (app-only accounts have no refresh token).
    pub fn access_only(access: AccessToken) -> Granted {
        Granted {
            access,
            refresh_token: None,
            refresh_token_ends_at: None,
        }
    }
}

/// When a login ends, and how the end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginEnd {
    /// Unix seconds.
    pub at: u64,
    /// The login's whole life, when known: how early to warn is a share of it.
    pub lifetime: Option<u64>,
    /// From the server's reply (else from `login_lifetime_days`).
    pub said_by_server: bool,
}

impl LoginEnd {
    /// "ends in 5 h 0 min (2026-12-02 10:00 UTC, as the token server said)", or "ended ...
    /// ago": how `status` and `notify_command` put it.
    pub fn describe(&self, now: u64) -> String {
        let when = if self.at > now {
            format!("ends in {}", crate::time::format_span(self.at - now))
        } else {
            format!("ended {} ago", crate::time::format_span(now - self.at))
        };
        let source = if self.said_by_server {
            "as the token server said"
        } else {
            "by login_lifetime_days"
        };
        format!("{when} ({}, {source})", crate::time::format_utc(self.at))
    }
}

/// A login is said to end soon a day before its end, or a quarter of its life before for
/// shorter ones (a server's 30-minute idle limit is no news a day ahead).
const WARN_BEFORE: u64 = 86_400;

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
    /// Unix seconds of the login (a person's consent): a `login_lifetime_days` counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logged_in_at: Option<u64>,
    /// Unix seconds when the server said the stored refresh token ends (Google's
    /// `refresh_token_expires_in`, Keycloak's `refresh_expires_in`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_ends_at: Option<u64>,
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
            logged_in_at: None,
            refresh_token_ends_at: None,
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
    pub fn update(&mut self, resource: Option<&str>, granted: Granted) {
        match resource {
            None => self.access = Some(granted.access),
            Some(key) => {
                self.resources.insert(key.to_string(), granted.access);
            }
        }
        match granted.refresh_token {
            Some(token) => self.take_refresh_token(token, granted.refresh_token_ends_at),
            None if granted.refresh_token_ends_at.is_some() => {
                self.refresh_token_ends_at = granted.refresh_token_ends_at;
            }
            None => {}
        }
    }

    /// A new refresh token from the server: the login from now on.
    pub fn take_refresh_token(&mut self, token: String, ends_at: Option<u64>) {
        self.refresh_token_at = Some(crate::time::now());
        self.refresh_token = Some(token);
        // A new refresh token without an end said has none we know of.
        self.refresh_token_ends_at = ends_at;
    }

    /// When the refresh token was last put to use: the last refresh, else when it was given.
    pub fn refresh_token_used_at(&self) -> Option<u64> {
        self.refreshed_at.max(self.refresh_token_at)
    }

    /// When the login ends, the sooner of what the server said and what `login_lifetime_days`
    /// (counted from the login) says; None when neither is known. Refresh tokens that only
    /// end when left unused are not here: using them moves the end.
    pub fn login_end(&self, lifetime_days: Option<u32>) -> Option<LoginEnd> {
        self.login_ends(lifetime_days).min_by_key(|end| end.at)
    }

    /// The login's end, if it is near enough at `now` to tell the person (or already past):
    /// each known end with its own warning time.
    pub fn login_ending(&self, lifetime_days: Option<u32>, now: u64) -> Option<LoginEnd> {
        self.refresh_token.as_ref()?;
        self.login_ends(lifetime_days)
            .filter(|end| {
                let warn = end
                    .lifetime
                    .map_or(WARN_BEFORE, |life| WARN_BEFORE.min(life / 4));
                end.at <= now.saturating_add(warn)
            })
            .min_by_key(|end| end.at)
    }

    fn login_ends(&self, lifetime_days: Option<u32>) -> impl Iterator<Item = LoginEnd> {
        let said = self.refresh_token_ends_at.map(|at| LoginEnd {
            at,
            lifetime: self.refresh_token_at.map(|given| at.saturating_sub(given)),
            said_by_server: true,
        });
        let configured = lifetime_days.and_then(|days| {
            let lifetime = u64::from(days) * 86_400;
            let from = self.logged_in_at.or(self.refresh_token_at)?;
            Some(LoginEnd {
                at: from.saturating_add(lifetime),
                lifetime: Some(lifetime),
                said_by_server: false,
            })
        });
        [said, configured].into_iter().flatten()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{access, sample};

    const NOW: u64 = 1_800_000_000;

    fn granted(refresh_token: Option<&str>, ends: Option<u64>) -> Granted {
        Granted {
            access: AccessToken {
                access_token: "at".into(),
                token_type: "Bearer".into(),
                expires_at: NOW + 3600,
                scope: None,
                obtained_at: Some(NOW),
            },
            refresh_token: refresh_token.map(Into::into),
            refresh_token_ends_at: ends,
        }
    }

    #[test]
    fn a_refresh_token_keeps_its_end_until_a_new_one_or_a_new_end_comes() {
        let mut t = Tokens::empty();
        t.update(None, granted(Some("rt-1"), Some(NOW + 100)));
        assert_eq!(t.refresh_token_ends_at, Some(NOW + 100));
        // No rotation, no word on the end: the old end stands.
        t.update(None, granted(None, None));
        assert_eq!(t.refresh_token_ends_at, Some(NOW + 100));
        // No rotation, a new end (Google counting down): taken.
        t.update(None, granted(None, Some(NOW + 50)));
        assert_eq!(t.refresh_token_ends_at, Some(NOW + 50));
        // A rotation without an end: the new token's end is not known.
        t.update(None, granted(Some("rt-2"), None));
        assert_eq!(t.refresh_token_ends_at, None);
    }

    #[test]
    fn a_login_ends_soon_a_day_ahead_or_a_quarter_of_its_life_ahead() {
        let mut t = Tokens::empty();
        t.refresh_token = Some("rt".into());
        t.logged_in_at = Some(NOW - 6 * 86_400);
        t.refresh_token_at = t.logged_in_at;
        // Nothing known: nothing to tell.
        assert_eq!(t.login_ending(None, NOW), None);
        // 7 days configured, 6 gone: within the last day.
        let end = t.login_ending(Some(7), NOW).expect("ending");
        assert_eq!((end.at, end.said_by_server), (NOW + 86_400, false));
        assert_eq!(t.login_ending(Some(8), NOW), None);
        // Counted from the login, not from a later rotation.
        t.refresh_token_at = Some(NOW - 3600);
        assert!(t.login_ending(Some(7), NOW).is_some());
        // A server's short end (30 min) is told in its last quarter only.
        t.refresh_token_ends_at = Some(NOW + 1800);
        assert_eq!(t.login_ending(None, NOW - 3600 + 1), None);
        let said = t
            .login_ending(None, NOW + 1800 - 450)
            .expect("last quarter");
        assert!(said.said_by_server);
        // Each end is told in its own time: the configured one now, the server's sooner one
        // once in its last quarter; a past end is still told.
        assert_eq!(
            t.login_ending(Some(7), NOW).map(|e| e.at),
            Some(NOW + 86_400)
        );
        let both = t
            .login_ending(Some(7), NOW + 1800 - 450)
            .expect("both near");
        assert_eq!(both.at, NOW + 1800);
        assert_eq!(t.login_end(Some(7)).map(|e| e.at), Some(NOW + 1800));
        assert!(t.login_ending(None, NOW + 5000).is_some());
        // Without a refresh token there is no login to keep.
        t.refresh_token = None;
        assert_eq!(t.login_ending(Some(7), NOW), None);
    }

    #[test]
    fn freshness_respects_the_margin() {
        let t = sample().access.unwrap();
        assert!(t.is_fresh(t.expires_at - 301, 300));
        assert!(!t.is_fresh(t.expires_at - 300, 300));
        assert!(!t.is_fresh(u64::MAX, 300));
    }

    #[test]
    fn short_lived_tokens_get_at_most_half_their_life_as_margin() {
        let minute = AccessToken {
            obtained_at: Some(1_000),
            expires_at: 1_060,
            ..access("short")
        };
        assert_eq!(minute.margin(300), 30);
        assert!(minute.is_fresh(1_001, 300), "just obtained: fresh");
        assert!(minute.is_fresh(1_029, 300));
        assert!(!minute.is_fresh(1_030, 300));
        let hour = AccessToken {
            obtained_at: Some(0),
            expires_at: 3_600,
            ..access("long")
        };
        assert_eq!(hour.margin(300), 300);
        assert_eq!(access("unknown life").margin(300), 300);
    }

    #[test]
    fn a_clock_that_went_wrong_means_refresh_now() {
        let t = AccessToken {
            obtained_at: Some(100_000),
            expires_at: 103_600,
            ..access("t")
        };
        assert!(t.is_fresh(100_000, 300));
        // The clock went back a day: the token's age is unknown.
        assert!(!t.is_fresh(100_000 - 86_400, 300));
        // Obtained under a clock 74 years ahead: stale as soon as the clock is right again.
        let from_2100 = AccessToken {
            obtained_at: Some(4_102_444_800),
            expires_at: 4_102_448_400,
            ..access("t")
        };
        assert!(!from_2100.is_fresh(1_800_000_000, 300));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let shown = format!("{:?}", sample());
        assert!(
            !shown.contains("at-secret") && !shown.contains("rt-secret"),
            "{shown}"
        );
        assert_ne!(crate::log::fingerprint("a"), crate::log::fingerprint("b"));
    }
}
