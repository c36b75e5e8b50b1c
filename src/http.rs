//! The HTTP client, built only when a request is actually due (never on the cached path).
//!
//! Every exchange has one deadline, connect to last byte of the body (30 s): a server that
//! stalls, or drips its reply a byte at a time, is given up on then, well before the 120 s
//! that other processes wait for the account lock. `MAILTOKEN_HTTP_TIMEOUT=SECS` (1 to 60)
//! replaces it, and caps the 10 s connect timeout: tests use it to see a stalled server
//! given up on in a second or two.

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::Result;
use reqwest::blocking::{Client, RequestBuilder};

use crate::error::{server, usage};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// See the module documentation. At most 60 s, so that the connect and request timeouts
/// together stay below the lock timeout that other processes wait for a refresher.
pub const TIMEOUT_ENV: &str = "MAILTOKEN_HTTP_TIMEOUT";
/// OAuth replies are a few kilobytes; anything past this is not one.
pub const MAX_BODY: usize = 1 << 20;

pub struct Http {
    client: Client,
    /// The whole exchange, connect to last byte.
    deadline: Duration,
}

/// What came back, read in full (up to `MAX_BODY`) so the caller can parse it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl Http {
    /// A client trusting the system's CAs and, with `ca_file` (an account's `tls_ca_file`),
    /// the CA certificates in that PEM file.
    pub fn new(ca_file: Option<&std::path::Path>) -> Result<Http> {
        // Several crates may pick a rustls provider; ours is ring. An Err only means one is set.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (connect, request) = timeouts(std::env::var(TIMEOUT_ENV).ok().as_deref())?;
        // Our TLS settings: the trust store is read at the first https exchange, not here.
        let mut builder = Client::builder()
            .tls_backend_preconfigured((*crate::tls::client_config_for(ca_file)?).clone())
            .no_proxy();
        for proxy in proxies_from_env()? {
            builder = builder.proxy(proxy);
        }
        let client = builder
            .connect_timeout(connect)
            .timeout(request)
            // A token endpoint that redirects is misconfigured; following it would resend secrets.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mailtoken/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| server(format!("cannot set up HTTPS: {}", error_chain(&e))))?;
        Ok(Http {
            client,
            deadline: request,
        })
    }

    /// POST a form; `authorization`: an `Authorization` header value (client_secret_basic).
    pub fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        authorization: Option<&str>,
    ) -> Result<Reply> {
        let mut request = self
            .client
            .post(url)
            .header("Accept", "application/json")
            .form(form);
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        self.send(request, url)
    }

    pub fn get(&self, url: &str) -> Result<Reply> {
        self.send(
            self.client.get(url).header("Accept", "application/json"),
            url,
        )
    }

    /// A call to an API with an access token (Graph, userinfo): GET, or POST with a JSON body.
    pub fn bearer(
        &self,
        url: &str,
        token: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<Reply> {
        let request = match json {
            None => self.client.get(url),
            Some(body) => self
                .client
                .post(url)
                .header("Content-Type", "application/json")
                .body(body.to_string()),
        };
        self.send(
            request
                .bearer_auth(token)
                .header("Accept", "application/json"),
            url,
        )
    }

    /// The server's clock: the `Date` header of a HEAD request, whatever the status. A server
    /// that cannot be reached is the error, in plain words ("connection refused"): the caller
    /// names the server.
    pub fn server_date(&self, url: &str) -> Result<Option<String>> {
        let response = self
            .client
            .head(url)
            .send()
            .map_err(|e| server(plain_cause(&e)))?;
        Ok(response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }
    /// Send, and read the whole reply (at most `MAX_BODY`) before the deadline.
    fn send(&self, request: RequestBuilder, url: &str) -> Result<Reply> {
        let deadline = Instant::now() + self.deadline;
        // A person at a terminal hears why nothing happens yet; a mail program hears nothing.
        let _notice = SlowNotice::after(
            SLOW,
            format!(
                "mailtoken: waiting for {} (gives up after {} s)",
                host_of(url),
                self.deadline.as_secs()
            ),
        );
        let timed_out = || {
            server(format!(
                "timed out talking to {url}: no complete reply within {} s. Check the network and the endpoint, then try again.",
                self.deadline.as_secs()
            ))
        };
        let mut response = request.timeout(self.deadline).send().map_err(|e| {
            if untrusted_certificate(&e) {
                return usage(format!(
                    "cannot connect to {url}: {}. The server's certificate is not trusted here: \
                     check the address, or, for a private CA, set `tls_ca_file` in the account",
                    plain_cause(&e)
                ));
            }
            let what = if e.is_timeout() {
                "timed out talking to"
            } else if e.is_connect() {
                "cannot connect to"
            } else {
                "request failed to"
            };
            server(format!(
                "{what} {url}: {}. Check the network and the endpoint, then try again.",
                plain_cause(&e)
            ))
        })?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_default();
        let mut body = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if Instant::now() >= deadline {
                return Err(timed_out());
            }
            let n = match response.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) if Instant::now() >= deadline => return Err(timed_out()),
                Err(e) => {
                    return Err(server(format!(
                        "reading the reply from {url} failed: {}",
                        error_chain(&e)
                    )));
                }
            };
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
            if body.len() > MAX_BODY {
                return Err(server(format!(
                    "{url} sent a reply larger than {} KiB: that is not an OAuth reply",
                    MAX_BODY / 1024
                )));
            }
        }
        Ok(Reply {
            status,
            content_type,
            body,
        })
    }
}

/// The proxies the usual variables name (`https_proxy`, `http_proxy`, `all_proxy`, upper or
/// lower case, with `no_proxy`), but never for this machine: a proxy would otherwise receive
/// the refresh token sent to a loopback test server in plain http.
fn proxies_from_env() -> Result<Vec<reqwest::Proxy>> {
    fn var(names: &[&'static str]) -> Option<(&'static str, String)> {
        names.iter().find_map(|&n| {
            std::env::var(n)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| (n, v))
        })
    }
    let bypass = format!(
        "{},localhost,127.0.0.0/8,::1",
        var(&["no_proxy", "NO_PROXY"])
            .map(|(_, v)| v)
            .unwrap_or_default()
    );
    type Make = fn(String) -> reqwest::Result<reqwest::Proxy>;
    let kinds: [(&[&'static str], Make); 3] = [
        (&["https_proxy", "HTTPS_PROXY"], |u| {
            reqwest::Proxy::https(u)
        }),
        (&["http_proxy", "HTTP_PROXY"], |u| reqwest::Proxy::http(u)),
        (&["all_proxy", "ALL_PROXY"], |u| reqwest::Proxy::all(u)),
    ];
    let mut proxies = Vec::new();
    for (names, make) in kinds {
        if let Some((name, url)) = var(names) {
            let proxy = make(url.clone())
                .map_err(|_| usage(format!("{name}=`{url}` is not a proxy URL")))?;
            proxies.push(proxy.no_proxy(reqwest::NoProxy::from_string(&bypass)));
        }
    }
    Ok(proxies)
}

/// The connect and request timeouts, from the value of `MAILTOKEN_HTTP_TIMEOUT` if set.
fn timeouts(setting: Option<&str>) -> Result<(Duration, Duration)> {
    let Some(text) = setting else {
        return Ok((CONNECT_TIMEOUT, REQUEST_TIMEOUT));
    };
    match text.trim().parse::<u64>() {
        Ok(secs @ 1..=60) => {
            let request = Duration::from_secs(secs);
            Ok((CONNECT_TIMEOUT.min(request), request))
        }
        _ => Err(usage(format!(
            "{TIMEOUT_ENV}=`{text}` is not a number of seconds from 1 to 60"
        ))),
    }
}

/// Whether the TLS handshake failed on the server's certificate (somewhere in the chain).
fn untrusted_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        let rustls_error = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if matches!(rustls_error, Some(rustls::Error::InvalidCertificate(_))) {
            return true;
        }
        next = err.source();
    }
    false
}

/// reqwest's top-level message is vague ("error sending request"); the cause is in the chain.
/// How long an exchange goes before a person at a terminal is told it is still going.
const SLOW: Duration = Duration::from_secs(1);

/// A line on stderr if the exchange is still going after a while, and only if stderr is a
/// terminal. Dropping it (the exchange is over) cancels the line.
struct SlowNotice(Option<std::sync::mpsc::Sender<()>>);

impl SlowNotice {
    fn after(delay: Duration, text: String) -> SlowNotice {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return SlowNotice(None);
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(delay) {
                eprintln!("{text}");
            }
        });
        SlowNotice(Some(tx))
    }
}

impl Drop for SlowNotice {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// The host (and port) of a URL, for messages.
/// The `host[:port]` of a URL, for a message.
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// The root cause of a failed exchange in plain words, for a one-line message that names the
/// URL once: the innermost error's text ("connection refused", "failed to lookup address
/// information: ..."), without the errno reqwest's chain ends with.
fn plain_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(source) = last.source() {
        last = source;
    }
    let text = last.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        // "Connection refused" reads as a sentence's middle: lower-case its first word.
        Some(first) if chars.clone().next().is_some_and(char::is_lowercase) => {
            first.to_lowercase().chain(chars).collect()
        }
        _ => text.to_string(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One line, the URL once, the cause in plain words: what a refused connection reads as.
    #[test]
    fn a_refused_connection_is_said_in_one_line_with_the_url_once() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/token");
        let err = Http::new(None)
            .unwrap()
            .post_form(&url, &[("a", "b")], None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "cannot connect to {url}: connection refused. Check the network and the \
                 endpoint, then try again."
            )
        );
    }

    #[test]
    fn the_timeout_setting_is_checked() {
        assert_eq!(timeouts(None).unwrap(), (CONNECT_TIMEOUT, REQUEST_TIMEOUT));
        let two = Duration::from_secs(2);
        assert_eq!(timeouts(Some("2")).unwrap(), (two, two));
        let sixty = Duration::from_secs(60);
        assert_eq!(timeouts(Some(" 60 ")).unwrap(), (CONNECT_TIMEOUT, sixty));
        for bad in ["0", "61", "-1", "1.5", "soon", ""] {
            let err = timeouts(Some(bad)).unwrap_err();
            assert_eq!(crate::error::exit_code(&err), crate::error::EXIT_USAGE);
            assert!(err.to_string().contains(TIMEOUT_ENV), "{err}");
        }
    }
}
