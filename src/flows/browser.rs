//! Authorization code + PKCE (RFC 7636) through the system browser, with the redirect caught
//! by a one-shot listener on 127.0.0.1 (RFC 8252), or pasted back by hand.

use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

use super::LoginOptions;
use crate::error::{Kind, failure, usage};
use crate::http::Http;
use crate::oauth;
use crate::provider::{Endpoints, Provider};
use crate::store::AccessToken;
use crate::time;
use crate::token::AccountRef;

/// The request head a browser sends is small; anything larger is not our callback.
const MAX_REQUEST: usize = 16 * 1024;

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

/// RFC 7636 S256: the verifier is 43 characters of base64url from 32 random bytes.
pub fn pkce(random: [u8; 32]) -> Pkce {
    let verifier = URL_SAFE_NO_PAD.encode(random);
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    Pkce {
        verifier,
        challenge,
    }
}

pub struct AuthRequest<'a> {
    pub endpoint: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub state: &'a str,
    pub challenge: &'a str,
    pub provider: Provider,
    pub login_hint: Option<&'a str>,
}

pub fn authorization_url(req: &AuthRequest) -> Result<String> {
    let mut url = reqwest::Url::parse(req.endpoint)
        .with_context(|| format!("authorization_endpoint `{}` is not a URL", req.endpoint))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", req.client_id)
            .append_pair("redirect_uri", req.redirect_uri)
            .append_pair("scope", req.scope)
            .append_pair("state", req.state)
            .append_pair("code_challenge", req.challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(hint) = req.login_hint {
            q.append_pair("login_hint", hint);
        }
        match req.provider {
            // Without these Google hands out a refresh token only on the very first consent.
            Provider::Google => {
                q.append_pair("access_type", "offline")
                    .append_pair("prompt", "consent");
            }
            // OpenID Connect Core 11: a server ignores offline_access unless consent is
            // prompted for. Microsoft issues refresh tokens without it.
            Provider::Generic if req.scope.split(' ').any(|s| s == "offline_access") => {
                q.append_pair("prompt", "consent");
            }
            _ => {}
        }
    }
    Ok(url.into())
}

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

pub fn login(
    http: &Http,
    acct: &AccountRef,
    endpoints: &Endpoints,
    options: &LoginOptions,
) -> Result<(AccessToken, Option<String>)> {
    let AccountRef { name, account, .. } = *acct;
    let auth_endpoint = endpoints.authorization.as_deref().ok_or_else(|| {
        usage(format!(
            "account `{name}` has no authorization_endpoint: set it, or `issuer` for discovery"
        ))
    })?;
    let token_endpoint = super::token_endpoint(name, endpoints)?;
    let redirect = Redirect::parse(account.redirect_uri())?;
    // RFC 8252 section 8.3: listen on the loopback address only, never on all interfaces.
    let listener = if options.paste {
        None
    } else {
        let port = redirect.port.unwrap_or(0);
        Some(
            TcpListener::bind(("127.0.0.1", port))
                .with_context(|| format!("cannot listen on 127.0.0.1:{port} for the browser's reply (is another login running?); `--paste` works without a listener"))?,
        )
    };
    let port = match &listener {
        Some(l) => l.local_addr()?.port(),
        None => redirect.port.unwrap_or(80),
    };
    let redirect_uri = if options.paste && redirect.port.is_none() {
        format!("http://{}{}", redirect.host, redirect.path)
    } else {
        redirect.uri(port)
    };

    let rng = SystemRandom::new();
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    let pkce = pkce(bytes);
    let mut state_bytes = [0u8; 16];
    rng.fill(&mut state_bytes)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    let state = URL_SAFE_NO_PAD.encode(state_bytes);
    let scope = account.scopes()?.join(" ");
    let url = authorization_url(&AuthRequest {
        endpoint: auth_endpoint,
        client_id: &account.client_id,
        redirect_uri: &redirect_uri,
        scope: &scope,
        state: &state,
        challenge: &pkce.challenge,
        provider: account.provider,
        login_hint: account.user.as_deref(),
    })?;

    eprintln!(
        "To log in account `{name}`, open this address in a browser on this machine:\n\n    {url}\n"
    );
    let code = match listener {
        None => {
            eprintln!(
                "After the login, the browser goes to a page that does not load ({redirect_uri}...).\n\
                 Copy that page's whole address from the address bar and paste it here:"
            );
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the pasted address")?;
            match parse_callback(&line, redirect.callback_path(), &state)? {
                Some(reply) => code_from(reply, account.provider, name)?,
                None => bail!(
                    "the pasted address does not go to {redirect_uri}: paste the address the browser was sent to after the login"
                ),
            }
        }
        Some(listener) => {
            if options.open_browser {
                super::open_browser(&url);
            }
            eprintln!(
                "Waiting up to {} for the browser to come back to {redirect_uri} (Ctrl-C to cancel)...",
                time::format_span(options.timeout.as_secs())
            );
            let reply =
                wait_for_callback(&listener, redirect.callback_path(), &state, options.timeout)?;
            code_from(reply, account.provider, name)?
        }
    };

    let client = oauth::Client::for_account(account, token_endpoint)?;
    let sent_at = time::now();
    let reply = oauth::exchange_code(
        http,
        token_endpoint,
        &client,
        &code,
        &redirect_uri,
        &pkce.verifier,
    )?
    .map_err(|e| e.into_error("exchanging the authorization code", account.provider, name))?;
    Ok(reply.into_access(sent_at, &scope))
}

fn code_from(reply: Callback, provider: Provider, name: &str) -> Result<String> {
    match reply {
        Callback::Code(code) => Ok(code),
        Callback::Denied { error, description } => Err(oauth::OAuthError {
            status: 0,
            error,
            error_description: description,
            error_codes: vec![],
        }
        .into_error("the browser login", provider, name)),
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
    fn pkce_matches_rfc7636_appendix_b() {
        let random = [
            116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212,
            37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121,
        ];
        let p = pkce(random);
        assert_eq!(p.verifier, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(p.challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

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

    #[test]
    fn authorization_url_carries_pkce_and_google_extras() {
        let req = AuthRequest {
            endpoint: "https://accounts.google.com/o/oauth2/v2/auth",
            client_id: "id",
            redirect_uri: "http://127.0.0.1:5000",
            scope: "https://mail.google.com/",
            state: "st",
            challenge: "ch",
            provider: Provider::Google,
            login_hint: Some("me@gmail.com"),
        };
        let url = reqwest::Url::parse(&authorization_url(&req).unwrap()).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"], "ch");
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:5000");
        assert_eq!(q["access_type"], "offline");
        assert_eq!(q["login_hint"], "me@gmail.com");
        let url = authorization_url(&AuthRequest {
            provider: Provider::Microsoft,
            ..req
        })
        .unwrap();
        assert!(!url.contains("access_type"));
        assert!(!url.contains("prompt="));
        let generic = |scope| {
            authorization_url(&AuthRequest {
                provider: Provider::Generic,
                scope,
                ..req
            })
            .unwrap()
        };
        assert!(generic("mail offline_access").contains("prompt=consent"));
        assert!(!generic("mail").contains("prompt="));
    }
}
