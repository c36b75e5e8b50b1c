//! A scriptable fake OAuth2 server (plain std, hand-rolled HTTP/1.1).
//!
//! Everything here is bounded: sockets have read/write timeouts, the accept
//! loop polls a stop flag, and child processes are killed after a deadline.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::env::*;
use super::http::{HttpRequest, parse_form, read_request, url_encode};

pub const DEVICE_CODE: &str = "fake-device-code-0123";
pub const USER_CODE: &str = "WDJB-MJHT";
pub const VERIFICATION_URI: &str = "https://verify.example.test/device";
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Socket timeout used by the fake server for every read and write.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Fake server: scripting types
// ---------------------------------------------------------------------------

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
    /// GET /.well-known/openid-configuration
    Discovery,
    /// GET /userinfo (OIDC): the user of a bearer token
    Userinfo,
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

#[derive(Clone)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    delay: Duration,
    /// Extra header lines (a redirect's Location).
    headers: Vec<(&'static str, String)>,
    /// Send only this many bytes of the body (Content-Length still announces all of it).
    send_only: Option<usize>,
    /// After what was sent, stay silent this long before closing.
    stall_after: Duration,
    /// Send nothing at all (after `delay`).
    silent: bool,
    /// Send every byte on its own, this long apart.
    trickle: Option<Duration>,
}

impl Response {
    fn json(status: u16, v: serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: v.to_string(),
            ..Response::empty()
        }
    }

    fn error(status: u16, code: &str, desc: &str) -> Response {
        Response::json(
            status,
            serde_json::json!({"error": code, "error_description": desc}),
        )
    }

    fn text(status: u16, content_type: &'static str, body: &str) -> Response {
        Response {
            status,
            content_type,
            body: body.to_string(),
            ..Response::empty()
        }
    }

    fn empty() -> Response {
        Response {
            status: 200,
            content_type: "text/plain",
            body: String::new(),
            delay: Duration::ZERO,
            headers: Vec::new(),
            send_only: None,
            stall_after: Duration::ZERO,
            silent: false,
            trickle: None,
        }
    }

    fn from_fault(fault: &Fault, host: &str) -> Response {
        match fault {
            Fault::Stall(d) => Response {
                delay: *d,
                silent: true,
                ..Response::empty()
            },
            Fault::Reply {
                status,
                content_type,
                body,
            } => Response::text(*status, content_type, body),
            Fault::Redirect { status, path } => Response {
                status: *status,
                headers: vec![("Location", format!("http://{host}{path}"))],
                ..Response::empty()
            },
            Fault::CloseMidReply { sent } => Response {
                send_only: Some(*sent),
                ..Response::json(200, token_like_reply())
            },
            Fault::StallMidReply(d) => {
                let full = Response::json(200, token_like_reply());
                Response {
                    send_only: Some(full.body.len() / 2),
                    stall_after: *d,
                    ..full
                }
            }
            Fault::Trickle(d) => Response {
                trickle: Some(*d),
                ..Response::json(200, token_like_reply())
            },
        }
    }
}

/// A complete-looking token reply whose tokens no test expects to see stored or printed.
fn token_like_reply() -> serde_json::Value {
    serde_json::json!({
        "access_token": "partial-at-secret-0123456789",
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": "partial-rt-secret-0123456789",
        "scope": SCOPE,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        428 => "Precondition Required",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn write_response(stream: &mut impl Write, resp: &Response) -> std::io::Result<()> {
    if resp.silent || resp.trickle.is_some() {
        return Ok(());
    }
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    for (name, value) in &resp.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let body = resp.body.as_bytes();
    stream.write_all(&body[..resp.send_only.unwrap_or(body.len()).min(body.len())])?;
    stream.flush()
}

/// Sleep `d` in small steps, cut short when the server is dropped.
fn pause(shared: &Shared, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !shared.stop.load(Ordering::SeqCst) {
        thread::sleep(
            Duration::from_millis(5).min(until.saturating_duration_since(Instant::now())),
        );
    }
}

fn handle_connection(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let resp = match read_request(&mut stream) {
        Ok(None) => return,
        Ok(Some(req)) => route(&req, shared),
        Err(e) => Response::text(400, "text/plain", &format!("bad request: {e}")),
    };
    // Scripted delay, in small steps so dropping the server cuts it short.
    pause(shared, resp.delay);
    let _ = write_response(&mut stream, &resp);
    if let Some(every) = resp.trickle {
        let whole = Response {
            trickle: None,
            ..resp.clone()
        };
        let mut bytes = Vec::new();
        let _ = write_response(&mut bytes, &whole);
        let body_at = bytes.len() - whole.body.len();
        let _ = stream.write_all(&bytes[..body_at]);
        for &byte in &bytes[body_at..] {
            if shared.stop.load(Ordering::SeqCst) || stream.write_all(&[byte]).is_err() {
                break;
            }
            pause(shared, every);
        }
    }
    pause(shared, resp.stall_after);
    let _ = stream.shutdown(Shutdown::Write);
    // Drain whatever the client might still send so close() does not RST,
    // bounded by the read timeout and a small byte budget.
    let mut sink = [0u8; 1024];
    let mut budget: usize = 64 * 1024;
    while budget > 0 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => budget = budget.saturating_sub(n),
        }
    }
}

fn token_reply(st: &mut State, with_refresh: Option<String>, scope: &str) -> serde_json::Value {
    let at = format!("fake-at-{}", st.next_at);
    st.next_at += 1;
    st.issued_access.push(at.clone());
    let lifetime = st.script.lifetime;
    let expires_in = if st.script.expires_in_as_string {
        serde_json::Value::String(lifetime.to_string())
    } else {
        serde_json::Value::from(lifetime)
    };
    let mut v = serde_json::json!({
        "access_token": at,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": scope,
    });
    if let Some(rt) = with_refresh {
        v["refresh_token"] = serde_json::Value::String(rt);
    }
    for (key, value) in &st.script.reply_fields {
        v[key] = value.clone();
    }
    if let Some(email) = &st.id_token_email {
        let part = |json: serde_json::Value| b64url(json.to_string().as_bytes());
        v["id_token"] = serde_json::Value::String(format!(
            "{}.{}.not-verified",
            part(serde_json::json!({"alg": "RS256"})),
            part(serde_json::json!({"sub": "sub-1", "email": email}))
        ));
    }
    v
}

/// RFC 7636 S256, computed here independently of the binary.
pub fn s256(verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    b64url(digest.as_ref())
}

pub fn b64url(data: &[u8]) -> String {
    b64(data)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Accept the client secret or a client assertion signed by the expected key for `audience`.
fn check_app_auth(
    auth: &AppAuth,
    form: &HashMap<String, String>,
    audience: &str,
) -> Result<(), String> {
    if let Some(secret) = &auth.secret {
        return match form.get("client_secret") {
            Some(s) if s == secret => Ok(()),
            Some(_) => Err("AADSTS7000215: Invalid client secret provided.".into()),
            None => Err("no client_secret".into()),
        };
    }
    let key = auth
        .assertion_key
        .as_ref()
        .ok_or("no client authentication configured")?;
    if form.get("client_assertion_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return Err("missing client_assertion_type".into());
    }
    let jwt = form
        .get("client_assertion")
        .ok_or("missing client_assertion")?;
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err("client_assertion is not a JWT".into());
    }
    let signature = b64url_decode(parts[2]).ok_or("bad signature encoding")?;
    let signed = format!("{}.{}", parts[0], parts[1]);
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "client_assertion signature does not verify".to_string())?;
    let claims: serde_json::Value =
        serde_json::from_slice(&b64url_decode(parts[1]).ok_or("bad claims encoding")?)
            .map_err(|e| e.to_string())?;
    let client = form.get("client_id").cloned().unwrap_or_default();
    if claims["aud"] != audience {
        return Err(format!("aud is {}, not {audience}", claims["aud"]));
    }
    if claims["iss"] != client.as_str() || claims["sub"] != client.as_str() {
        return Err("iss/sub are not the client_id".into());
    }
    if claims["exp"].as_i64().unwrap_or(0) <= now_unix() {
        return Err("assertion expired".into());
    }
    Ok(())
}

fn new_refresh_token(st: &mut State) -> String {
    let rt = format!("fake-rt-{}", st.next_rt);
    st.next_rt += 1;
    st.valid_refresh.insert(rt.clone());
    rt
}

fn route(req: &HttpRequest, shared: &Shared) -> Response {
    let form = parse_form(&req.body);
    let path = req.path().to_string();
    let grant = form.get("grant_type").cloned().unwrap_or_default();
    let kind = match (req.method.as_str(), path.as_str()) {
        ("POST", "/device") => Kind::Device,
        ("POST", "/token") if grant == DEVICE_GRANT => Kind::Poll,
        ("POST", "/token") if grant == "refresh_token" => Kind::Refresh,
        ("POST", "/token") if grant == "authorization_code" => Kind::Code,
        ("POST", "/token") if grant == "client_credentials" => Kind::Credentials,
        ("GET", "/.well-known/openid-configuration") => Kind::Discovery,
        ("GET", "/userinfo") => Kind::Userinfo,
        _ => Kind::Other,
    };
    let mut st = lock(&shared.state);
    st.requests.push(Recorded {
        kind,
        method: req.method.clone(),
        path: path.clone(),
        headers: req.headers.clone(),
        form: form.clone(),
        at: Instant::now(),
    });
    let scope = form
        .get("scope")
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| SCOPE.to_string());
    // The client names itself in the form, or in a Basic header (client_secret_basic).
    let client_ok = form.get("client_id").is_some_and(|c| !c.is_empty())
        || req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).ok()
            })
            .is_some_and(|pair| pair.contains(&b':'));
    if let Some(fault) = st.faults.get(&kind) {
        return Response::from_fault(fault, req.header("host").unwrap_or("127.0.0.1"));
    }
    match kind {
        Kind::Other => {
            if path == "/device" || path == "/token" {
                if req.method != "POST" {
                    Response::error(405, "invalid_request", "POST required")
                } else {
                    Response::error(400, "unsupported_grant_type", "unknown grant_type")
                }
            } else {
                Response::text(404, "text/plain", "not found")
            }
        }
        Kind::Discovery => {
            let base = format!("http://{}", req.header("host").unwrap_or("127.0.0.1"));
            Response::json(
                200,
                serde_json::json!({
                    "issuer": base,
                    "token_endpoint": format!("{base}/token"),
                    "device_authorization_endpoint": format!("{base}/device"),
                    "authorization_endpoint": format!("{base}/authorize"),
                    "authorization_response_iss_parameter_supported": true,
                    "token_endpoint_auth_methods_supported": st.auth_methods,
                    "userinfo_endpoint": format!("{base}/userinfo"),
                }),
            )
        }
        Kind::Userinfo => match req.header("authorization") {
            Some(bearer) if bearer.starts_with("Bearer ") => {
                Response::json(200, serde_json::json!({"sub": "sub-1", "email": USER}))
            }
            _ => Response::error(401, "invalid_token", "no bearer token"),
        },
        _ if !client_ok => Response::error(400, "invalid_client", "client_id missing"),
        Kind::Code => {
            let code = form.get("code").cloned().unwrap_or_default();
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let Some(issued) = st.codes.remove(&code) else {
                return Response::error(400, "invalid_grant", "unknown or used code");
            };
            if s256(&verifier) != issued.challenge {
                st.last_refusal = Some("PKCE verifier does not match the challenge".into());
                return Response::error(400, "invalid_grant", "PKCE verification failed");
            }
            if form.get("redirect_uri") != Some(&issued.redirect_uri) {
                st.last_refusal =
                    Some("redirect_uri differs from the authorization request".into());
                return Response::error(400, "invalid_grant", "redirect_uri mismatch");
            }
            let rt = new_refresh_token(&mut st);
            let v = token_reply(&mut st, Some(rt), &scope);
            Response::json(200, v)
        }
        Kind::Credentials => {
            let host = req.header("host").unwrap_or("127.0.0.1").to_string();
            let audience = format!("http://{host}/token");
            match check_app_auth(&st.app_auth, &form, &audience) {
                Ok(()) => {
                    let v = token_reply(&mut st, None, &scope);
                    Response::json(200, v)
                }
                Err(why) => {
                    st.last_refusal = Some(why.clone());
                    Response::error(401, "invalid_client", &why)
                }
            }
        }
        Kind::Device => {
            let key = if st.script.google_spelling {
                "verification_url"
            } else {
                "verification_uri"
            };
            let mut v = serde_json::json!({
                "device_code": DEVICE_CODE,
                "user_code": USER_CODE,
                "expires_in": 600,
            });
            v[key] = serde_json::Value::String(VERIFICATION_URI.to_string());
            if let Some(i) = st.script.interval {
                v["interval"] = serde_json::Value::from(i);
            }
            Response::json(200, v)
        }
        Kind::Poll => {
            if form.get("device_code").map(String::as_str) != Some(DEVICE_CODE) {
                return Response::error(400, "invalid_grant", "unknown device_code");
            }
            let answer = st
                .script
                .polls
                .pop_front()
                .unwrap_or(st.script.poll_default);
            match answer {
                Poll::Pending => Response::error(400, "authorization_pending", "waiting"),
                Poll::Pending428 => Response::error(428, "authorization_pending", "waiting"),
                Poll::SlowDown => Response::error(400, "slow_down", "polling too fast"),
                Poll::Expired => Response::error(400, "expired_token", "device code expired"),
                Poll::Denied => Response::error(400, "access_denied", "user said no"),
                Poll::Success => {
                    let rt = new_refresh_token(&mut st);
                    let v = token_reply(&mut st, Some(rt), &scope);
                    Response::json(200, v)
                }
            }
        }
        Kind::Refresh => {
            let delay = st.script.refresh_delay;
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            let mut resp = if !st.valid_refresh.contains(&presented) {
                Response::error(400, "invalid_grant", "refresh token unknown or revoked")
            } else {
                match st.script.refresh {
                    Refresh::Rotate => {
                        st.valid_refresh.remove(&presented);
                        st.revoked_refresh.insert(presented);
                        let rt = new_refresh_token(&mut st);
                        let v = token_reply(&mut st, Some(rt), &scope);
                        Response::json(200, v)
                    }
                    Refresh::Keep => {
                        let v = token_reply(&mut st, None, &scope);
                        Response::json(200, v)
                    }
                    Refresh::InvalidGrant => Response::error(
                        400,
                        "invalid_grant",
                        "AADSTS70008: The refresh token has expired",
                    ),
                    Refresh::ServerError => Response::text(500, "text/plain", SERVER_ERROR_BODY),
                    Refresh::Html => Response::text(200, "text/html", HTML_BODY),
                    Refresh::MalformedJson => {
                        Response::text(200, "application/json", MALFORMED_JSON_BODY)
                    }
                }
            };
            resp.delay = delay;
            resp
        }
    }
}

/// Independent standard base64 (with padding), for computing test vectors.
pub fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Send one raw HTTP request to `addr` and return (status, body). For selftests.
pub fn raw_request(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).expect("write request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read response");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("response head");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "missing Connection: close in {head:?}"
    );
    (status, body.to_string())
}

/// POST a form to the fake server (client side for selftests).
pub fn post_form(addr: SocketAddr, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let body = form
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_request(addr, raw.as_bytes())
}

/// A child whose stderr is followed line by line while it runs and whose stdin stays open:
/// for logins where the test reads the prompt and then answers (pastes an address).
pub struct Interactive {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    err: Option<JoinHandle<String>>,
    out: Option<JoinHandle<String>>,
    started: Instant,
}

impl Interactive {
    pub fn spawn(mut cmd: Command) -> Interactive {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mailtoken");
        let (tx, lines) = std::sync::mpsc::channel();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let err = thread::spawn(move || {
            use std::io::BufRead;
            let (mut all, mut line) = (String::new(), String::new());
            while stderr.read_line(&mut line).unwrap_or(0) > 0 {
                let _ = tx.send(line.clone());
                all.push_str(&line);
                line.clear();
            }
            all
        });
        let mut stdout = child.stdout.take().unwrap();
        let out = thread::spawn(move || {
            let mut all = String::new();
            let _ = stdout.read_to_string(&mut all);
            all
        });
        Interactive {
            child,
            lines,
            err: Some(err),
            out: Some(out),
            started: Instant::now(),
        }
    }

    /// The first stderr line containing `needle`; panics after `timeout`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line with {needle:?} on stderr within {timeout:?}"),
            }
        }
    }

    /// Write one line to stdin and close it.
    pub fn type_line(&mut self, line: &str) {
        let mut stdin = self.child.stdin.take().expect("stdin already closed");
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// Wait for the exit, at most `timeout` from the start; kill and panic past it.
    pub fn wait(mut self, timeout: Duration) -> RunResult {
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if self.started.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("mailtoken did not finish within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        drop(self.child.stdin.take());
        RunResult {
            code: status.code(),
            stdout: self.out.take().unwrap().join().unwrap(),
            stderr: self.err.take().unwrap().join().unwrap(),
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
