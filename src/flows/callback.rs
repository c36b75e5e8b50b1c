//! The browser's way back (RFC 8252): the registered redirect URI, the loopback listener that
//! catches the redirect, and the checks on what it carries.

use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::sleep;
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
    pub host: String,
    pub port: Option<u16>,
    pub path: String,
}

impl Redirect {
    pub fn parse(uri: &str) -> Result<Redirect> {
        let rest = uri
            .strip_prefix("http://")
            .ok_or_else(|| usage(format!("redirect_uri `{uri}` must start with http://")))?;
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
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// What the app sends: the registered form, exactly as written, with the real port.
    pub fn uri(&self, port: u16) -> String {
        format!("http://{}:{port}{}", self.host, self.path)
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

/// Read a redirect target (`/path?query`, or a whole pasted URL). `Ok(None)`: some other
/// request (a browser asking for /favicon.ico), not the callback.
pub fn parse_callback(target: &str, path: &str, state: &str) -> Result<Option<Callback>> {
    let target = target.trim();
    let target = match target.find("://") {
        Some(i) => {
            let after = &target[i + 3..];
            after.find('/').map_or("/", |j| &after[j..])
        }
        None => target,
    };
    let (got_path, query) = target.split_once('?').unwrap_or((target, ""));
    if got_path != path {
        return Ok(None);
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
    if get("state").as_deref() != Some(state) {
        return Err(failure(
            Kind::LoginNeeded,
            "the browser came back with the wrong `state`, so this reply is not from the login \
             just started (an old tab, or a forged request). Nothing was stored; log in again.",
        ));
    }
    if let Some(error) = get("error") {
        return Ok(Some(Callback::Denied {
            error,
            description: get("error_description"),
        }));
    }
    match get("code") {
        Some(code) if !code.is_empty() => Ok(Some(Callback::Code(code))),
        _ => bail!("the browser came back without an authorization code"),
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
        // RFC 8252 section 8.3: listen on the loopback address only, never on all interfaces.
        let port = redirect.port.unwrap_or(0);
        TcpListener::bind(("127.0.0.1", port))
            .map(Catcher::Listener)
            .with_context(|| format!("cannot listen on 127.0.0.1:{port} for the browser's reply (is another login running?); `--paste` works without a listener"))
    }

    pub fn listens(&self) -> bool {
        matches!(self, Catcher::Listener(_))
    }

    /// The redirect URI to send: with the port we listen on, or as registered when pasting.
    pub fn redirect_uri(&self, redirect: &Redirect) -> Result<String> {
        Ok(match self {
            Catcher::Listener(l) => redirect.uri(l.local_addr()?.port()),
            Catcher::Paste => match redirect.port {
                None => format!("http://{}{}", redirect.host, redirect.path),
                Some(port) => redirect.uri(port),
            },
        })
    }

    /// Wait for the browser (or the person) to bring the answer back.
    pub fn receive(
        self,
        redirect: &Redirect,
        redirect_uri: &str,
        state: &str,
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
                match parse_callback(&line, redirect.callback_path(), state)? {
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
                wait_for_callback(&listener, redirect.callback_path(), state, timeout)
            }
        }
    }
}

/// Accept connections until the callback arrives or `timeout` passes. Other requests (a
/// favicon) get a 404; the first request on the callback path decides, right or wrong.
fn wait_for_callback(
    listener: &TcpListener,
    path: &str,
    state: &str,
    timeout: Duration,
) -> Result<Callback> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Some(reply) = serve_one(stream, path, state)? {
                    return Ok(reply);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(failure(
                        Kind::LoginNeeded,
                        format!(
                            "no reply from the browser within {}; nothing was stored. Log in again (use --paste if the browser runs on another machine)",
                            time::format_span(timeout.as_secs())
                        ),
                    ));
                }
                sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).context("the login listener failed"),
        }
    }
}

fn serve_one(mut stream: TcpStream, path: &str, state: &str) -> Result<Option<Callback>> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let Some(target) = read_target(&mut stream) else {
        return Ok(None);
    };
    let outcome = parse_callback(&target, path, state);
    let (status, page) = match &outcome {
        Ok(None) => ("404 Not Found", "Not found."),
        Ok(Some(Callback::Code(_))) => (
            "200 OK",
            "mailtoken: login complete. You can close this tab and return to the terminal.",
        ),
        Ok(Some(Callback::Denied { .. })) | Err(_) => (
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
    outcome
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
        assert!(Redirect::parse("https://localhost").is_err());
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
