//! The device authorization grant (RFC 8628): works anywhere, SSH included.

use std::io::IsTerminal;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::config::OpenAccount;
use crate::error::Kind;
use crate::http::Http;
use crate::oauth::{self, OAuthError, TokenReply};
use crate::provider::Endpoints;
use crate::shell;
use crate::store::Granted;
use crate::time;

use super::{Countdown, LoginOptions};

/// RFC 8628 section 3.5: each `slow_down` adds five seconds to the polling interval.
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// When the server does not say, RFC 8628 says poll every five seconds.
const DEFAULT_INTERVAL: u64 = 5;
/// Never wait longer than this for a person, whatever the server claims.
const MAX_WAIT: Duration = Duration::from_secs(30 * 60);
/// What the person is told when the code ran out, whoever noticed first: us or the server.
const CODE_EXPIRED: &str = "the code expired before the login was approved: run the login again";
/// Transient network errors tolerated in a row while polling.
const MAX_POLL_ERRORS: u32 = 3;

/// Microsoft's refusals of the device-code login that a browser login may pass: Conditional
/// Access blocking the flow itself (53003, also what the "Block device code flow" policy
/// answers), or asking for a registered or compliant device (50097, 53000, 53001), which a
/// code typed on another device cannot show and the browser on this machine may. Left out:
/// 53002 (an approved client app) and 53004 (security info to register), where the browser
/// login is refused alike.
const BLOCKED: [u64; 4] = [50_097, 53_000, 53_001, 53_003];

/// The tenant refuses the device-code login itself: the browser flow is the way in. Carried
/// in an `anyhow::Error` to `flows::login`, which falls back or makes it the refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    /// The AADSTS code.
    pub code: u64,
}

impl Blocked {
    pub fn of(e: &OAuthError) -> Option<Blocked> {
        Blocked::code(e.aadsts()?)
    }

    pub fn code(code: u64) -> Option<Blocked> {
        BLOCKED.contains(&code).then_some(Blocked { code })
    }

    /// The error when there is no falling back: what happened and the fix, in one line.
    pub fn refusal(self, account: &str) -> anyhow::Error {
        crate::error::failure(
            Kind::LoginNeeded,
            format!(
                "{self}: log in with `mailtoken login {account} --browser` (set flow = \"browser\" in the account to make it the default)"
            ),
        )
    }
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = self.code;
        match code {
            50_097 | 53_000 | 53_001 => write!(
                f,
                "the tenant's Conditional Access asks for a managed device, which the device-code login cannot show (AADSTS{code})"
            ),
            _ => write!(
                f,
                "the device-code login is blocked by the tenant's Conditional Access (AADSTS{code})"
            ),
        }
    }
}

impl std::error::Error for Blocked {}

/// The server's refusal as the error to return: `Blocked` when the browser flow may pass.
fn refused(
    e: OAuthError,
    what: &str,
    provider: crate::provider::Provider,
    name: &str,
) -> anyhow::Error {
    match Blocked::of(&e) {
        Some(blocked) => anyhow::Error::new(blocked),
        None => e.into_error(what, provider, name),
    }
}

/// What one poll of the token endpoint said.
pub enum Step<T> {
    Pending,
    SlowDown,
    Done(T),
}

/// Time as the polling loop sees it, so tests can run it without waiting.
pub trait Clock {
    fn elapsed(&self) -> Duration;
    fn sleep(&mut self, d: Duration);
    /// The wait is over (a countdown line is cleared).
    fn done(&mut self) {}
}

/// Poll until the person approves, the code expires, or the server says no.
pub fn poll_device<T>(
    lifetime: Duration,
    interval_secs: u64,
    clock: &mut impl Clock,
    mut poll: impl FnMut() -> Result<Step<T>>,
) -> Result<T> {
    let mut interval = Duration::from_secs(interval_secs.max(1));
    let mut errors = 0;
    loop {
        if clock.elapsed() + interval >= lifetime {
            return Err(crate::error::failure(Kind::LoginNeeded, CODE_EXPIRED));
        }
        clock.sleep(interval);
        match poll() {
            Ok(Step::Done(t)) => return Ok(t),
            Ok(Step::Pending) => errors = 0,
            Ok(Step::SlowDown) => {
                errors = 0;
                interval += SLOW_DOWN_STEP;
            }
            // A dropped connection should not waste a login the person may be finishing now.
            Err(e) if crate::error::exit_code(&e) == Kind::Server.exit_code() => {
                errors += 1;
                if errors >= MAX_POLL_ERRORS {
                    return Err(e);
                }
                interval *= 2;
            }
            Err(e) => return Err(e),
        }
    }
}

/// What a device-poll reply means: pending and slow_down are not errors.
fn poll_outcome(
    reply: Result<TokenReply, OAuthError>,
    provider: crate::provider::Provider,
    name: &str,
) -> Result<Step<TokenReply>> {
    match reply {
        Ok(t) => Ok(Step::Done(t)),
        // Before access_denied: Microsoft may send a Conditional Access block as that.
        Err(e) if Blocked::of(&e).is_some() => Err(refused(e, "the device login", provider, name)),
        Err(e) if e.error == "authorization_pending" => Ok(Step::Pending),
        Err(e) if e.error == "slow_down" => Ok(Step::SlowDown),
        Err(e) if e.error == "access_denied" => Err(crate::error::failure(
            Kind::LoginNeeded,
            "the login was declined at the sign-in page; nothing was stored",
        )),
        Err(e) if e.error == "expired_token" => {
            Err(crate::error::failure(Kind::LoginNeeded, CODE_EXPIRED))
        }
        Err(e) => Err(refused(e, "the device login", provider, name)),
    }
}

/// A device login the server has started: what the person is shown, and what polling needs.
pub struct Started<'a> {
    pub auth: oauth::DeviceAuthorization,
    /// How long the code is good for (the server's word, at most `MAX_WAIT`).
    pub lifetime: Duration,
    client: oauth::Client<'a>,
    token_endpoint: String,
    scope: String,
}

/// Ask the server for a device code and the address where the person enters it.
pub fn begin<'a>(http: &Http, acct: &'a OpenAccount, endpoints: &Endpoints) -> Result<Started<'a>> {
    let OpenAccount { name, account, .. } = acct;
    let device_endpoint = endpoints.need_device_authorization(name)?;
    let (token_endpoint, client) = oauth::Client::for_token_endpoint(name, account, endpoints)?;
    let scope = account.scope_param(&account.scopes()?);
    let auth = oauth::device_authorize(http, device_endpoint, &client, &scope)?
        .map_err(|e| refused(e, "starting the device login", account.provider, name))?;
    let lifetime = Duration::from_secs(auth.expires_in.unwrap_or(900)).min(MAX_WAIT);
    Ok(Started {
        auth,
        lifetime,
        client,
        token_endpoint,
        scope,
    })
}

/// Poll until the person approves the started login (the tokens), declines it, or its code
/// runs out (errors that say so).
pub fn wait(
    http: &Http,
    acct: &OpenAccount,
    started: &Started,
    clock: &mut impl Clock,
) -> Result<Granted> {
    let OpenAccount { name, account, .. } = acct;
    let mut sent_at = time::now();
    let reply = poll_device(
        started.lifetime,
        started.auth.interval.unwrap_or(DEFAULT_INTERVAL),
        clock,
        || {
            sent_at = time::now();
            poll_outcome(
                oauth::device_poll(
                    http,
                    &started.token_endpoint,
                    &started.client,
                    &started.auth.device_code,
                )?,
                account.provider,
                name,
            )
        },
    );
    clock.done();
    let reply = reply?;
    super::warn_if_someone_else(account, &reply);
    reply.into_access(sent_at, &started.scope)
}

/// Log in with the device flow: show a URL and a code, wait for the person to approve.
pub fn login(
    http: &Http,
    acct: &OpenAccount,
    endpoints: &Endpoints,
    options: &LoginOptions,
) -> Result<Granted> {
    let started = begin(http, acct, endpoints)?;
    let auth = &started.auth;
    let page = auth
        .verification_uri_complete
        .as_deref()
        .unwrap_or(&auth.verification_uri);
    let tty = std::io::stderr().is_terminal();
    if options.qr
        && tty
        && let Some(code) = qr(page)
    {
        eprintln!("{code}");
    }
    eprintln!("{}", prompt(&acct.name, auth, started.lifetime));
    if options.copy_code && copy_to_clipboard(&auth.user_code) {
        eprintln!("(The code is on the clipboard.)");
    }
    if options.open_device_page {
        super::open_browser(page);
    }
    let mut clock = Countdown::new(started.lifetime, "waiting for approval");
    wait(http, acct, &started, &mut clock)
}

/// The address as a QR code for a phone's camera, drawn with half-block characters.
pub fn qr(text: &str) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    // Light modules drawn dark: terminals are usually light text on dark, and scanners need
    // the code's dark modules to show up dark.
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// Hand the user code to the desktop's clipboard tool, if one is there. Gives up quietly.
fn copy_to_clipboard(text: &str) -> bool {
    let wayland = std::env::var_os("WAYLAND_DISPLAY").is_some();
    let x11 = std::env::var_os("DISPLAY").is_some();
    let tools: &[(&str, &[&str])] = if cfg!(target_os = "macos") {
        &[("pbcopy", &[])]
    } else if wayland {
        &[("wl-copy", &[])]
    } else if x11 {
        &[
            ("xclip", &["-selection", "clipboard"]),
            ("xsel", &["--clipboard", "--input"]),
        ]
    } else {
        &[]
    };
    // Clipboard tools may stay around to serve the selection; do not wait for them long.
    tools
        .iter()
        .any(|(tool, args)| shell::feed(tool, args, text, Duration::from_secs(2)))
}

fn prompt(name: &str, auth: &oauth::DeviceAuthorization, lifetime: Duration) -> String {
    let mut text = format!(
        "To log in account `{name}`, open this page in a browser (on any device):\n\n    {}\n\nand enter the code:\n\n    {}\n",
        auth.verification_uri, auth.user_code
    );
    if let Some(complete) = &auth.verification_uri_complete {
        text.push_str(&format!(
            "\nOr open this address, which carries the code already:\n\n    {complete}\n"
        ));
    }
    text.push_str(&format!(
        "\nThe code is valid for {}. Waiting for the login to be approved (Ctrl-C to cancel)...",
        time::format_span(lifetime.as_secs())
    ));
    text
}

impl Clock for Countdown {
    fn elapsed(&self) -> Duration {
        Countdown::elapsed(self)
    }

    fn done(&mut self) {
        self.clear();
    }

    fn sleep(&mut self, d: Duration) {
        if !self.shown() {
            return sleep(d);
        }
        let until = Instant::now() + d;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            self.draw();
            sleep(left.min(Duration::from_secs(1)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{EXIT_LOGIN, exit_code, server};

    #[derive(Default)]
    struct FakeClock {
        now: Duration,
        sleeps: Vec<u64>,
    }

    impl Clock for FakeClock {
        fn elapsed(&self) -> Duration {
            self.now
        }
        fn sleep(&mut self, d: Duration) {
            self.now += d;
            self.sleeps.push(d.as_secs());
        }
    }

    fn script(
        steps: Vec<Result<Step<&'static str>>>,
    ) -> impl FnMut() -> Result<Step<&'static str>> {
        let mut steps = steps.into_iter();
        move || steps.next().expect("polled past the script")
    }

    #[test]
    fn pending_then_slow_down_then_success() {
        let mut clock = FakeClock::default();
        let got = poll_device(
            Duration::from_secs(600),
            2,
            &mut clock,
            script(vec![
                Ok(Step::Pending),
                Ok(Step::SlowDown),
                Ok(Step::Pending),
                Ok(Step::Done("t")),
            ]),
        )
        .unwrap();
        assert_eq!(got, "t");
        assert_eq!(clock.sleeps, [2, 2, 7, 7]);
    }

    #[test]
    fn qr_code_is_drawn_with_a_quiet_zone() {
        let code = qr("https://microsoft.com/devicelogin").unwrap();
        let lines: Vec<&str> = code.lines().collect();
        // A QR code is 4v+17 modules square, plus a 4-module quiet zone on each side; two rows
        // of modules share one line of text.
        let width = lines[0].chars().count();
        assert_eq!((width - 8 - 17) % 4, 0, "width {width}");
        assert_eq!(lines.len(), width.div_ceil(2));
        assert!(lines.iter().all(|l| l.chars().count() == width));
        assert!(code.contains('▀') || code.contains('▄'));
    }

    #[test]
    fn zero_interval_is_raised_to_one_second() {
        let mut clock = FakeClock::default();
        poll_device(
            Duration::from_secs(60),
            0,
            &mut clock,
            script(vec![Ok(Step::Done("t"))]),
        )
        .unwrap();
        assert_eq!(clock.sleeps, [1]);
    }

    #[test]
    fn gives_up_when_the_code_expires() {
        let mut clock = FakeClock::default();
        let err = poll_device(Duration::from_secs(12), 5, &mut clock, || {
            Ok(Step::<()>::Pending)
        })
        .unwrap_err();
        assert_eq!(exit_code(&err), EXIT_LOGIN);
        assert_eq!(clock.sleeps, [5, 5]);
    }

    #[test]
    fn rides_out_two_network_errors_but_not_three() {
        let mut clock = FakeClock::default();
        let got = poll_device(
            Duration::from_secs(600),
            1,
            &mut clock,
            script(vec![
                Err(server("reset")),
                Err(server("reset")),
                Ok(Step::Done("t")),
            ]),
        )
        .unwrap();
        assert_eq!(got, "t");
        assert_eq!(clock.sleeps, [1, 2, 4]);
        let err = poll_device(
            Duration::from_secs(600),
            1,
            &mut FakeClock::default(),
            script(vec![Err(server("a")), Err(server("b")), Err(server("c"))]),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "c");
    }

    fn microsoft(json: &str) -> OAuthError {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_conditional_access_block_is_told_apart_from_a_denial() {
        for json in [
            r#"{"error":"access_denied","error_description":"AADSTS53003: Access has been blocked by Conditional Access policies.","error_codes":[53003]}"#,
            r#"{"error":"invalid_grant","error_description":"AADSTS53003: Access has been blocked."}"#,
            r#"{"error":"interaction_required","error_codes":[50097]}"#,
        ] {
            let err = poll_outcome(
                Err(microsoft(json)),
                crate::provider::Provider::Microsoft,
                "w",
            )
            .err()
            .unwrap();
            assert!(err.downcast_ref::<Blocked>().is_some(), "{json}: {err}");
        }
        // Refusals the browser login would meet alike stay what they were.
        let err = poll_outcome(
            Err(microsoft(
                r#"{"error":"access_denied","error_codes":[53002]}"#,
            )),
            crate::provider::Provider::Microsoft,
            "w",
        )
        .err()
        .unwrap();
        assert!(err.downcast_ref::<Blocked>().is_none());
        assert!(err.to_string().contains("declined"), "{err}");
    }

    #[test]
    fn the_refusal_says_what_happened_and_the_fix_in_one_line() {
        let err = Blocked { code: 53_003 }.refusal("work");
        assert_eq!(exit_code(&err), EXIT_LOGIN);
        assert_eq!(
            err.to_string(),
            "the device-code login is blocked by the tenant's Conditional Access (AADSTS53003): \
             log in with `mailtoken login work --browser` (set flow = \"browser\" in the account \
             to make it the default)"
        );
        let managed = Blocked::code(53_000).unwrap().to_string();
        assert!(managed.contains("managed device") && managed.ends_with("(AADSTS53000)"));
        assert_eq!(Blocked::code(70_000), None);
    }

    #[test]
    fn denial_and_expiry_end_the_login() {
        let err = |e: &str| {
            poll_outcome(
                Err(OAuthError {
                    status: 400,
                    error: e.into(),
                    error_description: None,
                    error_codes: vec![],
                }),
                crate::provider::Provider::Generic,
                "a",
            )
        };
        assert!(matches!(err("authorization_pending"), Ok(Step::Pending)));
        assert!(matches!(err("slow_down"), Ok(Step::SlowDown)));
        for e in ["access_denied", "expired_token"] {
            assert_eq!(exit_code(&err(e).err().unwrap()), EXIT_LOGIN);
        }
        assert_eq!(exit_code(&err("invalid_client").err().unwrap()), 2);
    }
}
