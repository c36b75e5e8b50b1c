//! A scriptable fake OAuth2 server (plain std, hand-rolled HTTP/1.1).
//!
//! Everything here is bounded: sockets have read/write timeouts, the accept
//! loop polls a stop flag, and child processes are killed after a deadline.

mod answers;
mod client;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use answers::handle_connection;
pub use client::*;

pub const DEVICE_CODE: &str = "fake-device-code-0123";

pub const USER_CODE: &str = "WDJB-MJHT";

pub const VERIFICATION_URI: &str = "https://verify.example.test/device";

pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Socket timeout used by the fake server for every read and write.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// One answer of the token endpoint to a device-code poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// HTTP 400 {"error":"authorization_pending"}
    Pending,
    /// HTTP 428 {"error":"authorization_pending"} (Google style)
    Pending428,
    /// HTTP 400 {"error":"slow_down"}
    SlowDown,
    /// HTTP 200 with fresh access + refresh tokens
    Success,
    /// HTTP 400 {"error":"expired_token"}
    Expired,
    /// HTTP 400 {"error":"access_denied"}
    Denied,
}

/// How the token endpoint answers a (valid) refresh_token grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// New access token and a new refresh token; the old refresh token is revoked.
    Rotate,
    /// New access token, no refresh_token in the reply; the old one stays valid.
    Keep,
    /// HTTP 400 {"error":"invalid_grant"}
    InvalidGrant,
    /// HTTP 500 with a plain-text body.
    ServerError,
    /// HTTP 200 with an HTML page instead of JSON.
    Html,
    /// HTTP 200 application/json with a truncated JSON document.
    MalformedJson,
}

/// What kind of request the server saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Device,
    Poll,
    Refresh,
    /// grant_type=authorization_code (browser login)
    Code,
    /// grant_type=client_credentials (app-only)
    Credentials,
    /// grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer (a Google service account)
    JwtBearer,
    /// GET /.well-known/openid-configuration
    Discovery,
    /// GET /userinfo (OIDC): the user of a bearer token
    Userinfo,
    /// GET /authorize: the sign-in page a browser (or a login's first look) asks for
    Authorize,
    Other,
}

/// One request as seen by the server.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub kind: Kind,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub form: HashMap<String, String>,
    pub at: Instant,
}

impl Recorded {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.form.get(key).map(String::as_str)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Body in the malformed-JSON reply. It contains a token-looking string so
/// tests can check that the client does not echo it to stderr.
pub const MALFORMED_JSON_BODY: &str =
    r#"{"access_token":"leaky-at-from-malformed-reply","token_type":"Bearer","expires_in":36"#;

pub const HTML_BODY: &str = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>\
<body><h1>Bad Gateway</h1><p>upstream unavailable</p></body></html>";

pub const SERVER_ERROR_BODY: &str = "Internal Server Error";

/// A fault the server answers one kind of request with, instead of its normal answer, for as
/// long as it is set (see `FakeServer::set_fault`). The request is recorded but not acted on:
/// a faulted refresh rotates nothing, a faulted code exchange spends no code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Hold the connection this long without answering, then close it.
    Stall(Duration),
    /// Any status, with a body of this content type.
    Reply {
        status: u16,
        content_type: &'static str,
        body: String,
    },
    /// A redirect to `path` on this server. 307 and 308 tell a client to resend the POST
    /// body, secrets included, so following one would be a leak.
    Redirect { status: u16, path: &'static str },
    /// Announce the whole body in Content-Length, send the first `sent` bytes, close.
    CloseMidReply { sent: usize },
    /// Announce the whole body, send half of it, then go silent for this long.
    StallMidReply(Duration),
    /// Send the head of a good reply at once, then its body one byte per interval.
    Trickle(Duration),
}

impl Fault {
    pub fn json(status: u16, body: &str) -> Fault {
        Fault::Reply {
            status,
            content_type: "application/json",
            body: body.to_string(),
        }
    }

    pub fn text(status: u16, content_type: &'static str, body: &str) -> Fault {
        Fault::Reply {
            status,
            content_type,
            body: body.to_string(),
        }
    }

    /// A well-formed token reply padded past 1 MiB: no OAuth reply is that large.
    pub fn huge() -> Fault {
        let padding = "A".repeat(1_100_000);
        Fault::json(
            200,
            &format!(
                r#"{{"access_token":"huge-at-secret","token_type":"Bearer","expires_in":3600,"padding":"{padding}"}}"#
            ),
        )
    }
}

struct Script {
    polls: VecDeque<Poll>,
    /// Answer when the poll queue is empty (keeps a broken client from polling forever).
    poll_default: Poll,
    refresh: Refresh,
    refresh_delay: Duration,
    expires_in_as_string: bool,
    lifetime: i64,
    interval: Option<i64>,
    google_spelling: bool,
    /// Added to every token reply.
    reply_fields: serde_json::Map<String, serde_json::Value>,
}

/// An authorization code the "browser" was given, with what the exchange must match.
struct IssuedCode {
    challenge: String,
    redirect_uri: String,
}

/// How a client-credentials request must authenticate.
#[derive(Clone, Default)]
pub struct AppAuth {
    /// The client_secret to accept.
    pub secret: Option<String>,
    /// DER RSAPublicKey that a client_assertion JWT must verify with.
    pub assertion_key: Option<Vec<u8>>,
}

struct State {
    script: Script,
    codes: HashMap<String, IssuedCode>,
    app_auth: AppAuth,
    /// See `set_registered_redirects`.
    registered_redirects: Option<Vec<String>>,
    /// Why the last assertion or code exchange was refused, for test messages.
    last_refusal: Option<String>,
    requests: Vec<Recorded>,
    valid_refresh: HashSet<String>,
    revoked_refresh: HashSet<String>,
    issued_access: Vec<String>,
    next_at: u64,
    next_rt: u64,
    faults: HashMap<Kind, Fault>,
    /// `token_endpoint_auth_methods_supported` in the discovery document.
    auth_methods: Vec<String>,
    /// Token replies carry an ID token naming this user.
    id_token_email: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    /// Connection threads with a clone of their socket, so Drop can shut
    /// the socket down and unblock a read that is waiting on an idle client.
    conns: Mutex<Vec<(JoinHandle<()>, Option<TcpStream>)>>,
    stop: AtomicBool,
    /// Connections accepted and not yet finished.
    active: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fake OAuth2 authorization server on 127.0.0.1:<random port>.
///
/// Dropping it stops the accept loop and joins every connection thread
/// (each bounded by socket timeouts and the scripted delay).
pub struct FakeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeServer {
    pub fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake server");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                script: Script {
                    polls: VecDeque::new(),
                    poll_default: Poll::Expired,
                    refresh: Refresh::Rotate,
                    refresh_delay: Duration::ZERO,
                    expires_in_as_string: false,
                    reply_fields: serde_json::Map::new(),
                    lifetime: 3600,
                    interval: Some(1),
                    google_spelling: false,
                },
                codes: HashMap::new(),
                app_auth: AppAuth::default(),
                registered_redirects: None,
                last_refusal: None,
                requests: Vec::new(),
                valid_refresh: HashSet::new(),
                revoked_refresh: HashSet::new(),
                issued_access: Vec::new(),
                next_at: 1,
                next_rt: 1,
                faults: HashMap::new(),
                auth_methods: Vec::new(),
                id_token_email: None,
            }),
            conns: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("fake-oauth-accept-{}", addr.port()))
                .spawn(move || accept_loop(listener, shared))
                .expect("spawn accept thread")
        };
        FakeServer {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    // ----- scripting -----

    /// Append answers to the device-poll queue.
    pub fn push_polls(&self, polls: &[Poll]) {
        self.state().script.polls.extend(polls.iter().copied());
    }

    /// Answer used once the poll queue is empty (default: `Poll::Expired`).
    pub fn set_poll_default(&self, p: Poll) {
        self.state().script.poll_default = p;
    }

    pub fn set_refresh(&self, r: Refresh) {
        self.state().script.refresh = r;
    }

    /// Delay before answering a refresh request.
    pub fn set_refresh_delay_ms(&self, ms: u64) {
        self.state().script.refresh_delay = Duration::from_millis(ms);
    }

    pub fn set_expires_in_as_string(&self, yes: bool) {
        self.state().script.expires_in_as_string = yes;
    }

    /// A field added to every token reply (`refresh_token_expires_in`, say).
    pub fn set_reply_field(&self, key: &str, value: serde_json::Value) {
        self.state().script.reply_fields.insert(key.into(), value);
    }

    /// Undo `set_reply_field`: the field is the server's own again.
    pub fn clear_reply_field(&self, key: &str) {
        self.state().script.reply_fields.remove(key);
    }

    /// `expires_in` handed out with every access token (default 3600).
    pub fn set_lifetime(&self, secs: i64) {
        self.state().script.lifetime = secs;
    }

    /// `interval` in the device-authorization reply; `None` omits the field.
    pub fn set_interval(&self, interval: Option<i64>) {
        self.state().script.interval = interval;
    }

    /// Use Google's `verification_url` instead of `verification_uri`.
    /// Hand out an authorization code, as the authorization endpoint would after a login.
    pub fn issue_code(&self, challenge: &str, redirect_uri: &str) -> String {
        let mut st = self.state();
        let code = format!("fake-code-{}", st.codes.len() + 1);
        st.codes.insert(
            code.clone(),
            IssuedCode {
                challenge: challenge.to_string(),
                redirect_uri: redirect_uri.to_string(),
            },
        );
        code
    }

    /// Answer every request of `kind` with `fault` until `clear_fault(kind)`.
    pub fn set_fault(&self, kind: Kind, fault: Fault) {
        self.state().faults.insert(kind, fault);
    }

    pub fn clear_fault(&self, kind: Kind) {
        self.state().faults.remove(&kind);
    }

    /// Wait (at most `timeout`) until no connection has been open for 15 ms (the accept loop
    /// polls every 2 ms). A client killed
    /// right after writing its request leaves it in the socket, and the server still acts on
    /// it: call this before asking what the server saw.
    pub fn wait_idle(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline {
            if self.shared.active.load(Ordering::SeqCst) != 0 {
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= Duration::from_millis(15) {
                return;
            }
            thread::sleep(Duration::from_millis(2));
        }
        panic!("the fake server was still busy after {timeout:?}");
    }

    /// Token replies from now on carry an ID token for `email`.
    pub fn set_id_token_email(&self, email: &str) {
        lock(&self.shared.state).id_token_email = Some(email.to_string());
    }

    /// What the discovery document says of client authentication at the token endpoint.
    pub fn set_auth_methods(&self, methods: &[&str]) {
        lock(&self.shared.state).auth_methods = methods.iter().map(|m| m.to_string()).collect();
    }

    /// The redirect URIs the client has registered: GET /authorize refuses others (with the
    /// port of a loopback address removed, RFC 8252 section 7.3) as oidc-provider does, 400
    /// and `invalid_redirect_uri`. Unset: every one is taken.
    pub fn set_registered_redirects(&self, uris: &[&str]) {
        self.state().registered_redirects = Some(uris.iter().map(|u| u.to_string()).collect());
    }

    pub fn set_app_auth(&self, auth: AppAuth) {
        self.state().app_auth = auth;
    }

    pub fn last_refusal(&self) -> Option<String> {
        self.state().last_refusal.clone()
    }

    pub fn set_google_spelling(&self, yes: bool) {
        self.state().script.google_spelling = yes;
    }

    /// Make the server accept `rt` as a valid refresh token (e.g. one a test
    /// wrote into a token file).
    pub fn add_refresh_token(&self, rt: &str) {
        self.state().valid_refresh.insert(rt.to_string());
    }

    // ----- inspection -----

    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    pub fn requests_of(&self, kind: Kind) -> Vec<Recorded> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.kind == kind)
            .cloned()
            .collect()
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.kind == kind)
            .count()
    }

    pub fn total(&self) -> usize {
        self.state().requests.len()
    }

    /// Arrival time of every device poll, in order.
    pub fn poll_times(&self) -> Vec<Instant> {
        self.requests_of(Kind::Poll).iter().map(|r| r.at).collect()
    }

    pub fn is_valid_refresh_token(&self, rt: &str) -> bool {
        self.state().valid_refresh.contains(rt)
    }

    pub fn was_revoked(&self, rt: &str) -> bool {
        self.state().revoked_refresh.contains(rt)
    }

    /// Access tokens handed out so far, in order.
    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.state().issued_access.clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let conns: Vec<_> = lock(&self.shared.conns).drain(..).collect();
        for (_, s) in &conns {
            if let Some(s) = s {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        for (h, _) in conns {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let clone = stream.try_clone().ok();
                let shared2 = Arc::clone(&shared);
                shared.active.fetch_add(1, Ordering::SeqCst);
                let spawned =
                    thread::Builder::new()
                        .name("fake-oauth-conn".into())
                        .spawn(move || {
                            handle_connection(stream, &shared2);
                            shared2.active.fetch_sub(1, Ordering::SeqCst);
                        });
                if spawned.is_err() {
                    shared.active.fetch_sub(1, Ordering::SeqCst);
                }
                if let Ok(h) = spawned {
                    let mut conns = lock(&shared.conns);
                    conns.retain(|(h, _)| !h.is_finished());
                    conns.push((h, clone));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}
