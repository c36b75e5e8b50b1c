//! First logins, by the flow the account needs: device code, browser with PKCE, or app-only.
//! The device and browser flows return the tokens, stored here, once, under the account lock;
//! `app_only` fetches and stores its own (it is a refresh as much as a login).

pub mod app_only;
pub mod browser;
pub mod callback;
pub mod device;
pub mod relogin;

use std::time::Duration;

use anyhow::Result;

use crate::config::OpenAccount;
use crate::http::Http;
use crate::oauth;
use crate::provider::Flow;
use crate::shell;
use crate::store::{LOCK_TIMEOUT, Tokens};

#[derive(Clone)]
pub struct LoginOptions {
    /// Overrides the account's flow.
    pub flow: Option<Flow>,
    /// Start the system browser (browser flow); the URL is printed either way.
    pub open_browser: bool,
    /// Device flow: open the verification page in the system browser too.
    pub open_device_page: bool,
    /// Device flow: draw the verification address as a QR code (on a terminal).
    pub qr: bool,
    /// Device flow: put the user code on the clipboard, when there is one.
    pub copy_code: bool,
    /// Read the redirected URL from stdin instead of listening for it.
    pub paste: bool,
    /// How long to wait for the browser's callback.
    pub timeout: Duration,
}

/// Log in and store the new grant, replacing whatever the account had.
pub fn login(acct: &OpenAccount, options: &LoginOptions) -> Result<Tokens> {
    let OpenAccount {
        name,
        account,
        store,
        ..
    } = acct;
    let mut flow = options.flow.unwrap_or_else(|| account.flow());
    if flow == Flow::Credentials {
        return app_only::login(acct);
    }
    store.ensure_writable(name)?;
    // From here until the tokens are in hand, Ctrl-C loses nothing: say so.
    let cancel =
        crate::sys::process::say_on_cancel("\nmailtoken: login cancelled; nothing was stored\n");
    let http = Http::new(account.tls_ca_file().as_deref())?;
    let endpoints = oauth::endpoints(&http, acct)?;
    // A generic server without a device endpoint can still do the browser flow.
    if flow == Flow::Device
        && options.flow.is_none()
        && account.flow.is_none()
        && endpoints.device_authorization.is_none()
        && endpoints.authorization.is_some()
    {
        flow = Flow::Browser;
    }
    let granted = match flow {
        Flow::Device => match device::login(&http, acct, &endpoints, options) {
            Ok(granted) => granted,
            Err(e) => {
                let Some(blocked) = e.downcast_ref::<device::Blocked>().copied() else {
                    return Err(e);
                };
                let situation = Situation {
                    explicit_device: options.flow == Some(Flow::Device),
                    browser_flow: endpoints.authorization.is_some(),
                    ..Situation::here()
                };
                let Some(fallback) = fallback(&situation) else {
                    return Err(blocked.refusal(name));
                };
                eprintln!("mailtoken: {blocked}; continuing with the browser login.");
                let options = LoginOptions {
                    paste: options.paste || fallback.paste,
                    ..options.clone()
                };
                browser::login(&http, acct, &endpoints, &options)?
            }
        },
        Flow::Browser => browser::login(&http, acct, &endpoints, options)?,
        Flow::Credentials => unreachable!("handled above"),
    };
    if granted.refresh_token.is_none() {
        eprintln!(
            "mailtoken: warning: the server sent no refresh token, so this login lasts only until \
             the access token expires. Add offline_access to the scopes if the server supports it."
        );
    }
    // The new grant is stored before a signal may end the process (and then it does).
    drop(cancel);
    store_login(acct, granted)
}

/// Store a new login's grant in place of whatever the account had, under the account lock,
/// with the catchable signals held until it is stored.
fn store_login(acct: &OpenAccount, granted: crate::store::Granted) -> Result<Tokens> {
    let OpenAccount { name, store, .. } = acct;
    let mut tokens = Tokens::empty();
    tokens.update(None, granted);
    tokens.logged_in_at = Some(crate::time::now());
    let _held = crate::sys::process::hold_signals();
    let _lock = store.lock(name, LOCK_TIMEOUT)?;
    store.set_aside_damaged(name)?;
    store.save(name, &tokens)?;
    // The old login's refusal, noted for waiters, is no news now.
    store.clear_failure(name);
    Ok(tokens)
}

/// What decides whether a blocked device login goes on with the browser flow.
#[derive(Debug, Clone, Copy)]
pub struct Situation {
    /// `--device` was passed: the person asked for that flow and no other.
    pub explicit_device: bool,
    /// The account can do the browser flow (it has an authorization endpoint).
    pub browser_flow: bool,
    /// stdin and stderr are terminals: a person is there to take the browser login.
    pub terminal: bool,
    /// A browser can be started here (macOS, or X11/Wayland).
    pub desktop: bool,
    /// Over SSH: a browser started here would show on the wrong screen, if at all.
    pub ssh: bool,
}

impl Situation {
    /// This process's terminal and environment (the flow facts are the caller's).
    pub fn here() -> Situation {
        use std::io::IsTerminal;
        let set = |var: &str| std::env::var_os(var).is_some_and(|v| !v.is_empty());
        Situation {
            explicit_device: false,
            browser_flow: false,
            terminal: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
            desktop: cfg!(target_os = "macos") || set("DISPLAY") || set("WAYLAND_DISPLAY"),
            ssh: set("SSH_CONNECTION") || set("SSH_TTY"),
        }
    }
}

/// How a blocked device login goes on in the browser flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback {
    /// The person pastes the redirected address back: no browser comes back to this machine.
    pub paste: bool,
}

/// Whether a device login the tenant blocked goes on with the browser flow at once. Not for a
/// script (nobody would open the page, and a login nobody finishes only waits for its
/// timeout) nor against an explicit `--device`: those get the refusal, with the fix.
pub fn fallback(s: &Situation) -> Option<Fallback> {
    (s.terminal && !s.explicit_device && s.browser_flow).then_some(Fallback {
        paste: s.ssh || !s.desktop,
    })
}

/// Best effort: on a machine without a desktop, the printed URL is the way in.
pub fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    if !shell::launch(opener, &[url]) {
        eprintln!("(Could not start `{opener}`: open the address above yourself.)");
    }
}

/// Someone else approved the login (another browser profile was signed in, say): the tokens
/// are still stored, since they are the ones the person chose, but they are told at once
/// rather than at the mail server's refusal.
fn warn_if_someone_else(account: &crate::config::Account, reply: &oauth::TokenReply) {
    if let Some(note) = oauth::jwt::user_mismatch(account.user.as_deref(), &reply.identities()) {
        eprintln!("warning: {note}");
    }
}

/// Real time, with a countdown on stderr while a login waits for the person, when stderr is a
/// terminal: `| waiting for approval, 04:31 left`. The line is cleared when it is dropped.
pub struct Countdown {
    start: std::time::Instant,
    lifetime: Duration,
    what: &'static str,
    tty: bool,
    drawn: Option<std::time::Instant>,
}

impl Countdown {
    pub fn new(lifetime: Duration, what: &'static str) -> Countdown {
        use std::io::IsTerminal;
        Countdown {
            start: std::time::Instant::now(),
            lifetime,
            what,
            tty: std::io::stderr().is_terminal(),
            drawn: None,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn shown(&self) -> bool {
        self.tty
    }

    pub fn draw(&mut self) {
        use std::io::Write;
        if !self.tty {
            return;
        }
        self.drawn = Some(std::time::Instant::now());
        let left = self.lifetime.saturating_sub(self.start.elapsed()).as_secs();
        const SPIN: [char; 4] = ['|', '/', '-', '\\'];
        let spin = SPIN[(self.start.elapsed().as_secs() % 4) as usize];
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{spin} {}, {:02}:{:02} left ",
            self.what,
            left / 60,
            left % 60
        );
        let _ = err.flush();
    }

    /// Draw again if a second has passed since the last time (for a loop that wakes often).
    pub fn tick(&mut self) {
        if self
            .drawn
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            self.draw();
        }
    }

    pub fn clear(&mut self) {
        if self.tty && self.drawn.take().is_some() {
            eprint!("\r\x1b[K");
        }
    }
}

impl Drop for Countdown {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_device_login_goes_on_in_the_browser_only_for_a_person() {
        let person = Situation {
            explicit_device: false,
            browser_flow: true,
            terminal: true,
            desktop: true,
            ssh: false,
        };
        // At a desktop: the browser comes back to this machine's listener.
        assert_eq!(fallback(&person), Some(Fallback { paste: false }));
        // Over SSH, or without a desktop: the address is pasted back.
        for s in [
            Situation {
                ssh: true,
                ..person
            },
            Situation {
                desktop: false,
                ..person
            },
        ] {
            assert_eq!(fallback(&s), Some(Fallback { paste: true }), "{s:?}");
        }
        // A script, an explicit --device, an account without an authorization endpoint.
        for s in [
            Situation {
                terminal: false,
                ..person
            },
            Situation {
                explicit_device: true,
                ..person
            },
            Situation {
                browser_flow: false,
                ..person
            },
        ] {
            assert_eq!(fallback(&s), None, "{s:?}");
        }
    }
}
