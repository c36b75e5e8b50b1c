//! The browser's way back (RFC 8252): the registered redirect URI, the loopback listener that
//! catches the redirect, and the checks on what it carries.

use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::error::{Kind, failure, usage};
use crate::time;

/// The request head a browser sends is small; anything larger is not our callback.
const MAX_REQUEST: usize = 16 * 1024;

/// The configured redirect URI split into what to bind and what to send. The port comes from
/// the URI when it names one (a provider that wants a fixed one), otherwise the OS picks.
#[derive(Debug, PartialEq, Eq)]
pub struct Redirect {
    /// `https://localhost`, as registrations made for Thunderbird-style apps allow: nothing on
    /// this machine answers it, so the person pastes the address the browser was sent to.
    pub https: bool,
    pub host: String,
    pub port: Option<u16>,
    pub path: String,
}

impl Redirect {
    pub fn parse(uri: &str) -> Result<Redirect> {
        let (https, rest) = match (uri.strip_prefix("http://"), uri.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => {
                return Err(usage(format!(
                    "redirect_uri `{uri}` must start with http:// (or https:// for --paste)"
                )));
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && !p.contains(']') => (
                h,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| usage(format!("redirect_uri `{uri}` has a bad port `{p}`")))?,
                ),
            ),
            _ => (authority, None),
        };
        Ok(Redirect {
            https,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// What the app sends: the registered form, exactly as written, with the real port.
    pub fn uri(&self, port: u16) -> String {
        format!("{}://{}:{port}{}", self.scheme(), self.host, self.path)
    }

    fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// The form to register: as configured, without a port unless it names one.
    pub fn registered_form(&self) -> String {
        match self.port {
            Some(port) => self.uri(port),
            None => format!("{}://{}{}", self.scheme(), self.host, self.path),
        }
    }

    /// The path the callback arrives on.
    pub fn callback_path(&self) -> &str {
        if self.path.is_empty() {
            "/"
        } else {
            &self.path
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Callback {
    Code(String),
    Denied {
        error: String,
        description: Option<String>,
    },
}

/// What the redirect must carry to be this login's: its path, its `state`, and (RFC 9207)
/// the issuer, when it is known.
#[derive(Debug, Clone)]
pub struct Expected {
    pub path: String,
    pub state: String,
    /// The issuer an `iss` parameter must name.
    pub issuer: Option<String>,
    /// The server said it always sends `iss` (`authorization_response_iss_parameter_supported`).
    pub iss_required: bool,
}

/// How a request to the redirect URI reads.
#[derive(Debug)]
pub enum Reading {
    /// Another path (a browser asking for /favicon.ico).
    OtherPath,
    /// The callback path without this login's `state`: an old tab, a page probing the port.
    WrongState,
    /// This login's answer: a code, a refusal, or an answer that cannot be used.
    Ours(Result<Callback>),
}

/// Read a redirect target (`/path?query`, or a whole pasted URL).
pub fn read(target: &str, expected: &Expected) -> Reading {
    let target = target.trim();
    let target = match target.find("://") {
        Some(i) => {
            let after = &target[i + 3..];
            after.find('/').map_or("/", |j| &after[j..])
        }
        None => target,
    };
    let (got_path, query) = target.split_once('?').unwrap_or((target, ""));
    if got_path != expected.path {
        return Reading::OtherPath;
    }
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    if get("state").as_deref() != Some(expected.state.as_str()) {
        return Reading::WrongState;
    }
    Reading::Ours(ours(
        get("iss"),
        get("error"),
        get("error_description"),
        get("code"),
        expected,
    ))
}

fn ours(
    iss: Option<String>,
    error: Option<String>,
    description: Option<String>,
    code: Option<String>,
    expected: &Expected,
) -> Result<Callback> {
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    match (&expected.issuer, iss) {
        (Some(issuer), Some(iss)) if !same(issuer, &iss) => {
            return Err(failure(
                Kind::LoginNeeded,
                format!(
                    "the browser's reply names the issuer `{iss}`, not `{issuer}` (RFC 9207): it \
                     may come from another server. Nothing was stored; log in again."
                ),
            ));
        }
        (Some(issuer), None) if expected.iss_required => {
            return Err(failure(
                Kind::LoginNeeded,
                format!(
                    "the browser's reply has no `iss`, though `{issuer}` says it always sends one \
                     (RFC 9207). Nothing was stored; log in again."
                ),
            ));
        }
        _ => {}
    }
    if let Some(error) = error {
        return Ok(Callback::Denied { error, description });
    }
    match code {
        Some(code) if !code.is_empty() => Ok(Callback::Code(code)),
        _ => bail!("the browser came back without an authorization code"),
    }
}

/// A pasted address, or a target with only path and `state` to check. `Ok(None)`: another
/// path; a wrong `state` is an error here, since the person pasted it on purpose.
pub fn parse_callback(target: &str, path: &str, state: &str) -> Result<Option<Callback>> {
    let expected = Expected {
        path: path.to_string(),
        state: state.to_string(),
        issuer: None,
        iss_required: false,
    };
    parse_with(target, &expected)
}

fn parse_with(target: &str, expected: &Expected) -> Result<Option<Callback>> {
    match read(target, expected) {
        Reading::OtherPath => Ok(None),
        Reading::WrongState => Err(failure(
            Kind::LoginNeeded,
            "the browser came back with the wrong `state`, so this reply is not from the login \
             just started (an old tab, or a forged request). Nothing was stored; log in again.",
        )),
        Reading::Ours(answer) => answer.map(Some),
    }
}

/// How the browser's answer comes back: to a listener on this machine, or pasted by hand
/// (the browser runs elsewhere).
pub enum Catcher {
    Listener(TcpListener),
    Paste,
}

impl Catcher {
    pub fn open(redirect: &Redirect, paste: bool) -> Result<Catcher> {
        if paste {
            return Ok(Catcher::Paste);
        }
        // RFC 8252 section 8.3: listen on the loopback address only, never on all interfaces;
        // on the IPv6 one when the registered redirect names it.
        let port = redirect.port.unwrap_or(0);
        let ip = if redirect.host == "[::1]" {
            "::1"
        } else {
            "127.0.0.1"
        };
        TcpListener::bind((ip, port))
            .map(Catcher::Listener)
            .with_context(|| format!("cannot listen on {}:{port} for the browser's reply (is another login running?); `--paste` works without a listener", redirect.host))
    }

    pub fn listens(&self) -> bool {
        matches!(self, Catcher::Listener(_))
    }

    /// The redirect URI to send: with the port we listen on, or as registered when pasting.
    pub fn redirect_uri(&self, redirect: &Redirect) -> Result<String> {
        Ok(match self {
            Catcher::Listener(l) => redirect.uri(l.local_addr()?.port()),
            Catcher::Paste => redirect.registered_form(),
        })
    }

    /// Wait for the browser (or the person) to bring the answer back.
    pub fn receive(
        self,
        redirect_uri: &str,
        expected: &Expected,
        timeout: Duration,
    ) -> Result<Callback> {
        match self {
            Catcher::Paste => {
                eprintln!(
                    "After the login, the browser goes to a page that does not load ({redirect_uri}...).\n\
                     Copy that page's whole address from the address bar and paste it here:"
                );
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("cannot read the pasted address")?;
                match parse_with(&line, expected)? {
                    Some(reply) => Ok(reply),
                    None => bail!(
                        "the pasted address does not go to {redirect_uri}: paste the address the browser was sent to after the login"
                    ),
                }
            }
            Catcher::Listener(listener) => {
                eprintln!(
                    "Waiting up to {} for the browser to come back to {redirect_uri} (Ctrl-C to cancel)...",
                    time::format_span(timeout.as_secs())
                );
                wait_for_callback(&listener, expected, timeout)
            }
        }
    }
}

/// Connections served at once; more are closed unanswered (a browser needs one or two).
const MAX_CONNECTIONS: usize = 16;
/// How long one connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Accept connections until this login's answer arrives or `timeout` passes, to the
/// millisecond: each connection is read on its own thread, so a slow or silent one holds up
/// nothing. Requests that are not this login's (a favicon, a page probing the port, an old
/// tab) are answered and ignored.
fn wait_for_callback(
    listener: &TcpListener,
    expected: &Expected,
    timeout: Duration,
) -> Result<Callback> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let (tx, rx) = mpsc::channel::<Option<Result<Callback>>>();
    let busy = Arc::new(AtomicUsize::new(0));
    let mut told_stray = false;
    let mut countdown = super::Countdown::new(timeout, "waiting for the browser");
    loop {
        countdown.tick();
        let now = Instant::now();
        if now >= deadline {
            return Err(failure(
                Kind::LoginNeeded,
                format!(
                    "no reply from the browser within {}; nothing was stored. Log in again (use --paste if the browser runs on another machine)",
                    time::format_span(timeout.as_secs())
                ),
            ));
        }
        match listener.accept() {
            Ok((stream, _)) if busy.load(Ordering::SeqCst) < MAX_CONNECTIONS => {
                busy.fetch_add(1, Ordering::SeqCst);
                let (tx, busy, expected) = (tx.clone(), Arc::clone(&busy), expected.clone());
                thread::spawn(move || {
                    let _ = tx.send(serve_one(stream, &expected));
                    busy.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("the login listener failed"),
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(20));
        match rx.recv_timeout(wait) {
            Ok(Some(answer)) => return answer,
            Ok(None) if !told_stray => {
                told_stray = true;
                countdown.clear();
                eprintln!(
                    "(Ignored a request to the login listener that was not this login's answer; still waiting.)"
                );
            }
            _ => {}
        }
    }
}

/// Answer one connection. `Some`: this login's answer; `None`: anything else.
fn serve_one(mut stream: TcpStream, expected: &Expected) -> Option<Result<Callback>> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let reading = match read_target(&mut stream) {
        Some(target) => read(&target, expected),
        None => Reading::OtherPath,
    };
    let (status, page) = match &reading {
        Reading::OtherPath => ("404 Not Found", "Not found."),
        Reading::WrongState => (
            "400 Bad Request",
            "mailtoken: this is not the reply of the login in progress.",
        ),
        Reading::Ours(Ok(Callback::Code(_))) => (
            "200 OK",
            "mailtoken: login complete. You can close this tab and return to the terminal.",
        ),
        Reading::Ours(_) => (
            "400 Bad Request",
            "mailtoken: the login did not complete. See the terminal for details.",
        ),
    };
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>mailtoken</title><p style=\"font:16px sans-serif;margin:3em\">{page}</p>"
    );
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
        html.len()
    );
    match reading {
        Reading::Ours(answer) => Some(answer),
        _ => None,
    }
}

/// The request target of a GET, or None for anything that is not a readable request.
fn read_target(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut parts = head.lines().next()?.split(' ');
    match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) => Some(target.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_keeps_the_registered_form() {
        let r = Redirect::parse("http://localhost").unwrap();
        assert_eq!(r.uri(5000), "http://localhost:5000");
        assert_eq!(r.callback_path(), "/");
        let r = Redirect::parse("http://127.0.0.1:8400/callback").unwrap();
        assert_eq!(r.port, Some(8400));
        assert_eq!(r.uri(8400), "http://127.0.0.1:8400/callback");
        assert_eq!(r.callback_path(), "/callback");
        let r = Redirect::parse("http://[::1]:9/").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("[::1]", Some(9)));
        assert!(Redirect::parse("http://localhost:x").is_err());
        let r = Redirect::parse("https://localhost/oauth").unwrap();
        assert!(r.https);
        assert_eq!(r.uri(443), "https://localhost:443/oauth");
        assert!(Redirect::parse("ftp://localhost").is_err());
    }

    #[test]
    fn callbacks_are_checked_against_state_and_path() {
        let ok = parse_callback("/cb?code=abc&state=s1", "/cb", "s1").unwrap();
        assert_eq!(ok, Some(Callback::Code("abc".into())));
        let pasted = parse_callback(
            "http://localhost:1234/cb?state=s1&code=a%2Bb\n",
            "/cb",
            "s1",
        )
        .unwrap();
        assert_eq!(pasted, Some(Callback::Code("a+b".into())));
        assert_eq!(parse_callback("/favicon.ico", "/cb", "s1").unwrap(), None);
        let err = parse_callback("/cb?code=abc&state=other", "/cb", "s1").unwrap_err();
        assert_eq!(crate::error::exit_code(&err), crate::error::EXIT_LOGIN);
        assert!(parse_callback("/cb?code=abc", "/cb", "s1").is_err());
        let denied = parse_callback(
            "/cb?error=access_denied&error_description=no&state=s1",
            "/cb",
            "s1",
        )
        .unwrap();
        assert_eq!(
            denied,
            Some(Callback::Denied {
                error: "access_denied".into(),
                description: Some("no".into())
            })
        );
    }
}
