//! The fake server's side of a connection: reading the request, choosing the answer the
//! script asks for (faults included) and sending it, bounded in time.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::support::env::*;
use crate::support::http::{HttpRequest, parse_form, read_request};

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

pub(super) fn handle_connection(mut stream: TcpStream, shared: &Shared) {
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

/// A JWT-bearer grant as Google checks it: signed by the service account's key, for this
/// token endpoint, living an hour at most, naming a mailbox and a scope. The scope granted.
fn check_grant_assertion(
    auth: &AppAuth,
    form: &HashMap<String, String>,
    audience: &str,
) -> Result<String, String> {
    let key = auth
        .assertion_key
        .as_ref()
        .ok_or("no service account key configured")?;
    let jwt = form.get("assertion").ok_or("missing assertion")?;
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err("assertion is not a JWT".into());
    }
    let signature = b64url_decode(parts[2]).ok_or("bad signature encoding")?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .map_err(|_| "assertion signature does not verify".to_string())?;
    let claims: serde_json::Value =
        serde_json::from_slice(&b64url_decode(parts[1]).ok_or("bad claims encoding")?)
            .map_err(|e| e.to_string())?;
    if claims["aud"] != audience {
        return Err(format!("aud is {}, not {audience}", claims["aud"]));
    }
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    if exp <= now_unix() || exp - iat > 3600 {
        return Err("assertion expired or lives over an hour".into());
    }
    if !claims["sub"].is_string() || !claims["iss"].is_string() {
        return Err("assertion names no sub or iss".into());
    }
    claims["scope"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "assertion names no scope".into())
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
        ("POST", "/token") if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            Kind::JwtBearer
        }
        ("GET", "/.well-known/openid-configuration") => Kind::Discovery,
        ("GET", "/userinfo") => Kind::Userinfo,
        ("GET", "/authorize") => Kind::Authorize,
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
        Kind::Authorize => {
            let query = req.target.split_once('?').map_or("", |(_, q)| q);
            let params = parse_form(query.as_bytes());
            let sent = params.get("redirect_uri").cloned().unwrap_or_default();
            // RFC 8252 section 7.3: a loopback IP literal matches with any port.
            let portless = match sent.split_once("://") {
                Some((scheme, rest)) => {
                    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                    let host = match authority.rsplit_once(':') {
                        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
                        _ => authority,
                    };
                    format!("{scheme}://{host}{path}")
                }
                None => sent.clone(),
            };
            match &st.registered_redirects {
                Some(known) if !known.contains(&portless) => Response::error(
                    400,
                    "invalid_redirect_uri",
                    "redirect_uri did not match any of the client's registered redirect_uris",
                ),
                _ => Response::text(200, "text/html", "<html><body>Sign in</body></html>"),
            }
        }
        Kind::Userinfo => match req.header("authorization") {
            Some(bearer) if bearer.starts_with("Bearer ") => {
                Response::json(200, serde_json::json!({"sub": "sub-1", "email": USER}))
            }
            _ => Response::error(401, "invalid_token", "no bearer token"),
        },
        // A grant assertion names its client itself (RFC 7523 section 3.1).
        _ if !client_ok && kind != Kind::JwtBearer => {
            Response::error(400, "invalid_client", "client_id missing")
        }
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
        Kind::JwtBearer => {
            let host = req.header("host").unwrap_or("127.0.0.1").to_string();
            let audience = format!("http://{host}/token");
            match check_grant_assertion(&st.app_auth, &form, &audience) {
                Ok(scope) => {
                    let v = token_reply(&mut st, None, &scope);
                    Response::json(200, v)
                }
                Err(why) => {
                    st.last_refusal = Some(why.clone());
                    Response::error(400, "invalid_grant", &why)
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
