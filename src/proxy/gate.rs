//! Who may log in through the proxy, and the way to the real server: the local password and
//! its limits, the account a login names, the token, and the upstream login, with one
//! worded refusal for each way that can fail.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::password;
use super::prelogin::{Door, Ended};
use crate::config::{Config, OpenAccount, Paths, ProxySettings};
use crate::error::{self, Kind};
use crate::log::{printable, redact};
use crate::mail::sasl::Mech;
use crate::mail::servers::Server;
use crate::mail::wire::Conn;
use crate::provider::Service;
use crate::store::AccessToken;

/// Failed password checks from one user (or one network address) in a window, before it waits.
pub const PER_SOURCE: u32 = 5;
/// Failed password checks from everyone but the owner in a window, before they all wait: many
/// local users, or all of 127/8, are no way around the limit.
pub const OVERALL: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Argon2 checks running at once: each has 19 MiB of working memory.
const CHECKS_AT_ONCE: usize = 2;
/// How long a login waits for its turn at the password check.
const CHECK_WAIT: Duration = Duration::from_secs(20);
/// A token the server refused is replaced by a forced refresh only if it is at least this old,
/// and at most once per account in this time: a server that refuses every token must not
/// drive one refresh per login.
const FORCE_AFTER: Duration = Duration::from_secs(60);

/// Who connected.
pub struct Caller {
    /// The address, for the failure limits of callers from the network.
    pub ip: IpAddr,
    /// The user that owns the connecting socket, as the kernel says (loopback peers only).
    pub uid: Option<u32>,
    /// The proxy's own user on a loopback listener: no password needed. On a listener on the
    /// network the kernel's word does not count.
    pub owner: bool,
    /// The listener is on the network: no login before TLS.
    pub needs_tls: bool,
}

impl Caller {
    fn source(&self) -> Source {
        match self.uid {
            Some(uid) => Source::Uid(uid),
            None => Source::Addr(self.ip),
        }
    }
}

/// Why a login was refused: the log's reason, and whether the program should try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    WrongPassword,
    LockedOut,
    OtherUser,
    UnknownAccount,
    AmbiguousAccount,
    /// The stored login is missing or the provider refused it.
    NoLogin,
    /// The token server or the mail server cannot be reached, or says "try later".
    Unreachable,
    /// The mail server refused the token.
    UpstreamRefused,
    /// The config or the account cannot be used as written.
    Config,
    /// Too many logins at once.
    Busy,
}

impl Why {
    pub fn reason(self) -> &'static str {
        match self {
            Why::WrongPassword => "wrong password",
            Why::LockedOut => "locked out",
            Why::OtherUser => "other user",
            Why::UnknownAccount => "unknown account",
            Why::AmbiguousAccount => "ambiguous account",
            Why::NoLogin => "no login",
            Why::Unreachable => "upstream unreachable",
            Why::UpstreamRefused => "upstream refused",
            Why::Config => "config",
            Why::Busy => "busy",
        }
    }

    /// What kind of refusal the mail program is told: each protocol has a word for each.
    pub fn answer(self) -> Answer {
        match self {
            Why::Unreachable | Why::LockedOut | Why::Busy => Answer::Later,
            // Trying again changes nothing until someone edits the config: a permanent failure
            // of the system, not of the password the program would then ask for again.
            Why::Config => Answer::Broken,
            Why::WrongPassword
            | Why::OtherUser
            | Why::UnknownAccount
            | Why::AmbiguousAccount
            | Why::NoLogin
            | Why::UpstreamRefused => Answer::Credentials,
        }
    }
}

/// How a refusal is told: IMAP's response codes (RFC 5530), POP3's (RFC 3206), SMTP's reply
/// codes (RFC 4954, 3463).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Try again later: `[UNAVAILABLE]`, `[SYS/TEMP]`, 454.
    Later,
    /// The login itself is refused: `[AUTHENTICATIONFAILED]`, `[AUTH]`, 535.
    Credentials,
    /// A permanent problem of the system (mailtoken's config): `[CONTACTADMIN]`,
    /// `[SYS/PERM]`, 554 5.3.5 ("system incorrectly configured").
    Broken,
}

impl Answer {
    /// The start of the refusal line for `service`, before the words (IMAP after the tag).
    pub fn code(self, service: Service) -> &'static str {
        match (service, self) {
            (Service::Imap, Answer::Later) => "NO [UNAVAILABLE]",
            (Service::Imap, Answer::Credentials) => "NO [AUTHENTICATIONFAILED]",
            (Service::Imap, Answer::Broken) => "NO [CONTACTADMIN]",
            (Service::Pop, Answer::Later) => "-ERR [SYS/TEMP]",
            (Service::Pop, Answer::Credentials) => "-ERR [AUTH]",
            (Service::Pop, Answer::Broken) => "-ERR [SYS/PERM]",
            (Service::Smtp, Answer::Later) => "454 4.7.0",
            (Service::Smtp, Answer::Credentials) => "535 5.7.8",
            (Service::Smtp, Answer::Broken) => "554 5.3.5",
        }
    }
}

/// A refused login: what the program is told (the fix first, short: Alpine shows 80
/// characters), and what the log says.
#[derive(Debug)]
pub struct Denied {
    pub why: Why,
    told: String,
    detail: String,
}

impl Denied {
    fn new(why: Why, told: impl Into<String>, detail: impl Into<String>) -> Denied {
        Denied {
            why,
            told: format!("mailtoken: {}", told.into()),
            detail: detail.into(),
        }
    }

    /// The words for the mail program.
    pub fn text(&self) -> &str {
        &self.told
    }

    /// The refusal's code for `service`, before the words (IMAP: after the tag).
    pub fn code(&self, service: Service) -> &'static str {
        self.why.answer().code(service)
    }
}

/// A login the real server took: the account and the authenticated connection.
pub struct Granted {
    account: String,
    upstream: Conn,
}

impl Granted {
    /// Answer the program's login with `ok` and hand both connections to the relay.
    pub fn admit(self, door: Door, ok: &str) -> Result<LoggedIn, Ended> {
        let client = door.admit(ok)?;
        Ok(LoggedIn {
            account: self.account,
            client,
            upstream: self.upstream,
        })
    }
}

/// A finished login: both connections, ready for the relay.
pub struct LoggedIn {
    pub account: String,
    pub client: Conn,
    pub upstream: Conn,
}

/// Who may log in, and the way to the real server.
pub struct Gate {
    paths: Paths,
    settings: ProxySettings,
    /// Local TLS, for STARTTLS and the implicit-TLS listeners.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    attempts: Mutex<Attempts>,
    checks: Permits,
    forced: Mutex<HashMap<String, Instant>>,
    /// Token calls under way: a refresh among them holds a new refresh token that only this
    /// process has until it is stored, so the proxy does not exit before they end.
    in_flight: AtomicUsize,
}

impl Gate {
    pub fn new(
        paths: Paths,
        settings: ProxySettings,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Gate {
        Gate {
            paths,
            settings,
            tls,
            attempts: Mutex::new(Attempts::default()),
            checks: Permits::new(CHECKS_AT_ONCE),
            forced: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Token calls under way.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Check the local credentials, get the account's token, and log in to its real server.
    /// Each refusal is one line in the log, with its reason.
    pub fn login(
        &self,
        caller: &Caller,
        user: &str,
        password: &str,
        service: Service,
    ) -> std::result::Result<Granted, Denied> {
        let outcome = self.try_login(caller, user, password, service);
        if let Err(denied) = &outcome {
            eprintln!(
                "mailtoken proxy: {}refused `{}`: {}: {}",
                crate::log::context(),
                printable(&user.chars().take(100).collect::<String>()),
                denied.why.reason(),
                printable(&denied.detail)
            );
        }
        outcome
    }

    fn try_login(
        &self,
        caller: &Caller,
        user: &str,
        password: &str,
        service: Service,
    ) -> std::result::Result<Granted, Denied> {
        self.admit(caller, password)?;
        // The config is read at each login, so edits apply without a restart.
        let config = Config::load(&self.paths.config).map_err(|e| {
            Denied::new(
                Why::Config,
                "fix mailtoken's config (run \"mailtoken doctor\")",
                format!("{e:#}"),
            )
        })?;
        let name = config
            .account_for_login(user)
            .map_err(|named| match named.as_slice() {
                [] => Denied::new(
                    Why::UnknownAccount,
                    format!(
                        "log in with an account's user or name: none is `{}`",
                        printable(&user.chars().take(60).collect::<String>())
                    ),
                    "no such account",
                ),
                _ => Denied::new(
                    Why::AmbiguousAccount,
                    format!(
                        "log in as {}: they share this user",
                        named
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                    format!("accounts {} have this user", named.join(", ")),
                ),
            })?;
        let acct = config.open(&self.paths, name).map_err(|e| {
            Denied::new(
                Why::Config,
                format!("fix account `{name}` (run \"mailtoken doctor\")"),
                format!("{e:#}"),
            )
        })?;
        let server = crate::mail::servers::server(&acct.account, service).map_err(|e| {
            Denied::new(
                Why::Config,
                format!("account `{name}` has no {} server", service.name()),
                format!("{e:#}"),
            )
        })?;
        let mailbox = acct
            .account
            .user
            .clone()
            .unwrap_or_else(|| user.to_string());
        let token = self.token(&acct, false)?;
        let first = match log_in_upstream(service, &server, &mailbox, &token.access_token) {
            Ok(upstream) => return Ok(self.granted(&acct, upstream)),
            Err(e) => upstream_denied(&acct.name, &server, &mailbox, &token, e),
        };
        if first.why != Why::UpstreamRefused {
            return Err(first);
        }
        // A token the server refuses may have been revoked just now: one try with a fresh one,
        // or with one another session just fetched.
        let force = self.may_force(&acct.name, &token);
        let fresh = self.token(&acct, force)?;
        if fresh.access_token == token.access_token {
            return Err(first);
        }
        match log_in_upstream(service, &server, &mailbox, &fresh.access_token) {
            Ok(upstream) => Ok(self.granted(&acct, upstream)),
            Err(e) => Err(upstream_denied(&acct.name, &server, &mailbox, &fresh, e)),
        }
    }

    fn granted(&self, acct: &OpenAccount, upstream: Conn) -> Granted {
        Granted {
            account: acct.name.clone(),
            upstream,
        }
    }

    /// The proxy's own user on loopback needs no local password; anyone else needs the
    /// configured one, within the failure limits, one bounded check at a time.
    fn admit(&self, caller: &Caller, password: &str) -> std::result::Result<(), Denied> {
        if caller.owner {
            return Ok(());
        }
        let Some(hash) = &self.settings.password_hash else {
            return Err(Denied::new(
                Why::OtherUser,
                "this proxy serves only the user who runs it (password_hash lets others in)",
                format!("{:?} without a local password configured", caller.source()),
            ));
        };
        let source = caller.source();
        let locked = || {
            Denied::new(
                Why::LockedOut,
                "too many failed logins: wait a minute",
                format!("{source:?}"),
            )
        };
        if !self.attempts().reserve(source, Instant::now()) {
            return Err(locked());
        }
        let Some(mut memory) = self.checks.take(CHECK_WAIT) else {
            self.attempts().settle(source, false, Instant::now());
            return Err(Denied::new(
                Why::Busy,
                "too many logins at once: try again",
                "no turn at the password check",
            ));
        };
        let right = password::verify(password, hash, &mut memory.0);
        self.attempts().settle(source, !right, Instant::now());
        if right {
            Ok(())
        } else {
            Err(Denied::new(
                Why::WrongPassword,
                "wrong local password (the proxy's, not the mailbox's)",
                format!("{source:?}"),
            ))
        }
    }

    fn attempts(&self) -> std::sync::MutexGuard<'_, Attempts> {
        self.attempts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a refused token may be replaced by a forced refresh now (and if so, the time is
    /// noted): not a token younger than `FORCE_AFTER`, not twice for an account within it.
    fn may_force(&self, account: &str, token: &AccessToken) -> bool {
        let age = token
            .obtained_at
            .map(|at| crate::time::now().saturating_sub(at));
        let mut forced = self.forced.lock().unwrap_or_else(|e| e.into_inner());
        forced.retain(|_, at| at.elapsed() < FORCE_AFTER);
        let allowed = may_force(age, forced.get(account).map(Instant::elapsed));
        if allowed {
            forced.insert(account.to_string(), Instant::now());
        }
        allowed
    }

    fn token(&self, acct: &OpenAccount, force: bool) -> std::result::Result<AccessToken, Denied> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let got = token_for(acct, force);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        got
    }
}

/// The rule of `Gate::may_force`: `age` of the refused token (None: unknown, so old), and how
/// long ago this account's last forced refresh was.
pub fn may_force(age_secs: Option<u64>, last_forced: Option<Duration>) -> bool {
    let old_enough = age_secs.is_none_or(|age| age >= FORCE_AFTER.as_secs());
    let not_lately = last_forced.is_none_or(|ago| ago >= FORCE_AFTER);
    old_enough && not_lately
}

fn token_for(acct: &OpenAccount, force: bool) -> std::result::Result<AccessToken, Denied> {
    let name = &acct.name;
    crate::token::own(acct, force).map_err(|e| {
        let detail = format!("{e:#}");
        match error::kind(&e) {
            Some(Kind::LoginNeeded) => Denied::new(
                Why::NoLogin,
                match (crate::flows::relogin::waiting(acct), acct.store.load(name)) {
                    // Shown by the mail program: the way back in, for a person with a phone.
                    (Some(waiting), _) => format!(
                        "a new login waits for approval: open {} and enter the code {}",
                        waiting
                            .verification_uri_complete
                            .as_deref()
                            .unwrap_or(&waiting.verification_uri),
                        waiting.user_code
                    ),
                    (None, Ok(None)) => {
                        format!("run \"mailtoken login {name}\": no login is stored")
                    }
                    _ => format!("run \"mailtoken login {name}\": the provider refused the login"),
                },
                detail,
            ),
            Some(Kind::Usage) => Denied::new(
                Why::Config,
                format!("fix account `{name}` (run \"mailtoken doctor\")"),
                detail,
            ),
            _ => Denied::new(
                Why::Unreachable,
                "try again later: the token server did not answer",
                detail,
            ),
        }
    })
}

/// The refusal for a failed upstream login: "try later" when the server could not be reached
/// or said so, otherwise the token was refused. The server's words are passed on redacted: a
/// server may echo the token.
fn upstream_denied(
    name: &str,
    server: &Server,
    mailbox: &str,
    token: &AccessToken,
    e: anyhow::Error,
) -> Denied {
    let sasl =
        Mech::Xoauth2.initial_response(mailbox, &token.access_token, &server.host, server.port);
    let said = redact(
        format!("{e:#}").lines().next().unwrap_or(""),
        &[&token.access_token, &sasl],
    );
    let said = said.chars().take(200).collect::<String>();
    if error::kind(&e) == Some(Kind::Server) {
        Denied::new(
            Why::Unreachable,
            format!("try again later: {server} did not log in ({said})"),
            said.clone(),
        )
    } else {
        Denied::new(
            Why::UpstreamRefused,
            format!("run \"mailtoken check {name}\": {server} refused the token ({said})"),
            said.clone(),
        )
    }
}

fn log_in_upstream(service: Service, server: &Server, user: &str, token: &str) -> Result<Conn> {
    match service {
        Service::Imap => crate::mail::imap::login(server, user, token),
        Service::Pop => crate::mail::pop::login(server, user, token, Mech::Xoauth2),
        Service::Smtp => {
            let mut session = crate::mail::smtp::open(server)?;
            let mech = Mech::prefer(|m| session.ehlo().offers_auth(m.name()));
            crate::mail::smtp::authenticate(&mut session, server, user, token, mech)?;
            Ok(session.into_conn())
        }
    }
}

/// Whom a failed password check is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A local user, whatever loopback address it connects from.
    Uid(u32),
    /// A host on the network.
    Addr(IpAddr),
}

/// Failures in the current window, and checks under way (counted as failures until they are
/// settled, so parallel tries cannot all pass the limit before the first one fails).
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    failures: u32,
    since: Option<Instant>,
    checking: u32,
}

impl Tally {
    fn roll(&mut self, now: Instant) {
        if self
            .since
            .is_some_and(|since| now.duration_since(since) >= WINDOW)
        {
            (self.failures, self.since) = (0, None);
        }
    }

    fn spent(&self, limit: u32) -> bool {
        self.failures + self.checking >= limit
    }

    fn settle(&mut self, failed: bool, now: Instant) {
        self.checking = self.checking.saturating_sub(1);
        if failed {
            self.failures += 1;
            self.since.get_or_insert(now);
        }
    }
}

/// The failure limits of the local password: per source, and for everyone together.
#[derive(Debug, Default)]
pub struct Attempts {
    by_source: HashMap<Source, Tally>,
    all: Tally,
}

impl Attempts {
    /// Take a place for one check; false: this source, or everyone, must wait.
    pub fn reserve(&mut self, source: Source, now: Instant) -> bool {
        // Forget sources whose window has passed: the map holds only the recent ones.
        self.by_source.retain(|_, t| {
            t.roll(now);
            t.failures > 0 || t.checking > 0
        });
        self.all.roll(now);
        let mine = self.by_source.get(&source).copied().unwrap_or_default();
        if mine.spent(PER_SOURCE) || self.all.spent(OVERALL) {
            return false;
        }
        self.by_source.entry(source).or_default().checking += 1;
        self.all.checking += 1;
        true
    }

    /// The check reserved for `source` is done.
    pub fn settle(&mut self, source: Source, failed: bool, now: Instant) {
        if let Some(t) = self.by_source.get_mut(&source) {
            t.settle(failed, now);
        }
        self.all.settle(failed, now);
    }

    #[cfg(test)]
    fn sources(&self) -> usize {
        self.by_source.len()
    }
}

/// The working memories of the password check, lent one per check: at most as many checks
/// run at once as there are memories, and they are made once.
struct Permits {
    free: Mutex<Vec<password::Memory>>,
    freed: Condvar,
}

struct Permit<'a>(password::Memory, &'a Permits);

impl Permits {
    fn new(n: usize) -> Permits {
        Permits {
            free: Mutex::new((0..n).map(|_| password::Memory::default()).collect()),
            freed: Condvar::new(),
        }
    }

    /// A memory, waiting at most `wait` for one to be given back.
    fn take(&self, wait: Duration) -> Option<Permit<'_>> {
        let guard = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let (mut free, _) = self
            .freed
            .wait_timeout_while(guard, wait, |free| free.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        Some(Permit(free.pop()?, self))
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let memory = std::mem::take(&mut self.0);
        self.1
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(memory);
        self.1.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_tries_cannot_pass_the_limit_before_the_first_fails() {
        let mut a = Attempts::default();
        let now = Instant::now();
        let me = Source::Uid(1000);
        let reserved = (0..50).filter(|_| a.reserve(me, now)).count();
        assert_eq!(reserved, PER_SOURCE as usize);
        for _ in 0..reserved {
            a.settle(me, true, now);
        }
        assert!(!a.reserve(me, now + Duration::from_secs(59)));
        // The window passes; the source is forgotten and may try again.
        assert!(a.reserve(me, now + WINDOW));
        a.settle(me, false, now + WINDOW);
        assert!(a.reserve(me, now + WINDOW));
    }

    #[test]
    fn many_sources_together_meet_the_overall_limit_and_are_forgotten() {
        let mut a = Attempts::default();
        let now = Instant::now();
        let mut passed = 0;
        for i in 0..200u8 {
            let from = Source::Addr(IpAddr::from([127, 0, 0, i]));
            if a.reserve(from, now) {
                passed += 1;
                a.settle(from, true, now);
            }
        }
        assert_eq!(passed, OVERALL);
        assert!(!a.reserve(Source::Uid(1001), now));
        assert!(a.sources() <= OVERALL as usize);
        assert!(a.reserve(Source::Uid(1001), now + WINDOW));
        assert_eq!(a.sources(), 1);
    }

    #[test]
    fn a_refused_token_is_forced_only_when_old_and_not_lately() {
        let minute = FORCE_AFTER.as_secs();
        assert!(may_force(None, None));
        assert!(may_force(Some(minute), None));
        assert!(!may_force(Some(minute - 1), None));
        assert!(!may_force(Some(3600), Some(Duration::from_secs(10))));
        assert!(may_force(Some(3600), Some(FORCE_AFTER)));
    }

    #[test]
    fn the_check_waits_its_turn_and_gives_up_at_its_deadline() {
        let permits = Permits::new(1);
        let held = permits.take(Duration::ZERO).unwrap();
        let started = Instant::now();
        assert!(permits.take(Duration::from_millis(100)).is_none());
        assert!(started.elapsed() >= Duration::from_millis(100));
        drop(held);
        assert!(permits.take(Duration::ZERO).is_some());
    }

    #[test]
    fn refusals_put_the_fix_first_and_fit_alpine() {
        let d = Denied::new(
            Why::NoLogin,
            "run \"mailtoken login work\": the provider refused the login",
            "invalid_grant",
        );
        assert!(
            d.text()
                .starts_with("mailtoken: run \"mailtoken login work\"")
        );
        assert!(d.text().len() <= 80, "{}", d.text());
        assert_eq!(d.code(Service::Pop), "-ERR [AUTH]");
        assert_eq!(Why::Unreachable.answer(), Answer::Later);
    }

    #[test]
    fn a_config_problem_is_permanent_and_no_password_problem_in_every_protocol() {
        let codes =
            |why: Why| [Service::Imap, Service::Pop, Service::Smtp].map(|s| why.answer().code(s));
        assert_eq!(
            codes(Why::Config),
            ["NO [CONTACTADMIN]", "-ERR [SYS/PERM]", "554 5.3.5"]
        );
        assert_eq!(
            codes(Why::Busy),
            ["NO [UNAVAILABLE]", "-ERR [SYS/TEMP]", "454 4.7.0"]
        );
        assert_eq!(
            codes(Why::WrongPassword),
            ["NO [AUTHENTICATIONFAILED]", "-ERR [AUTH]", "535 5.7.8"]
        );
    }
}
