//! Browser (authorization code + PKCE), client credentials, discovery and per-resource tokens,
//! against the fake OAuth server, with the test playing the browser.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::env::*;
use crate::support::http::{parse_form, url_encode};
use crate::support::oauth_server::*;

const BROWSER_ACCOUNT: &str = "authorization_endpoint = \"{base}/authorize\"\nflow = \"browser\"\n";

fn browser_env(server: &FakeServer) -> TestEnv {
    TestEnv::with_extra(
        server,
        "",
        &BROWSER_ACCOUNT.replace("{base}", &server.base_url()),
    )
}

/// A login in progress, with its stderr read line by line until the authorization URL shows.
struct Login {
    child: Child,
    url: reqwest_free::Url,
    stderr: String,
}

impl Login {
    /// Play the browser once the person has approved: the server issues a code for this
    /// login, the browser brings it back to the listener; then the login's exit code.
    fn come_back(&mut self, server: &FakeServer) -> i32 {
        let redirect = self.url.get("redirect_uri").to_string();
        let code = server.issue_code(self.url.get("code_challenge"), &redirect);
        let query = format!("code={code}&state={}", url_encode(self.url.get("state")));
        let (status, page) = browser_get(&redirect, &callback_path(&redirect, &query));
        assert_eq!(status, 200, "{page}");
        let exit = wait_exit(&mut self.child, Duration::from_secs(20));
        assert_eq!(exit, 0, "stderr so far:\n{}", self.stderr);
        exit
    }

    /// Play the person who pastes the address the browser landed on (the login's stdin must
    /// be piped); then the login's exit code.
    fn paste_back(&mut self, server: &FakeServer) -> i32 {
        let redirect = self.url.get("redirect_uri").to_string();
        let code = server.issue_code(self.url.get("code_challenge"), &redirect);
        let pasted = format!(
            "{redirect}?code={code}&state={}\n",
            url_encode(self.url.get("state"))
        );
        self.child
            .stdin
            .take()
            .unwrap()
            .write_all(pasted.as_bytes())
            .unwrap();
        wait_exit(&mut self.child, Duration::from_secs(20))
    }
}

/// The port of a loopback redirect URI the login listens on (`http://127.0.0.1:PORT/`).
pub fn port_of(redirect: &str) -> u16 {
    redirect
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// Tiny URL helper so the tests do not depend on the crate under test.
mod reqwest_free {
    use super::*;

    pub struct Url {
        pub query: HashMap<String, String>,
    }

    impl Url {
        pub fn parse(text: &str) -> Url {
            let query = text.split_once('?').map_or("", |(_, q)| q);
            Url {
                query: parse_form(query.as_bytes()).into_iter().collect(),
            }
        }

        pub fn get(&self, key: &str) -> &str {
            self.query
                .get(key)
                .unwrap_or_else(|| panic!("authorization URL has no {key}"))
        }
    }
}

fn start_login(env: &TestEnv, extra: &[&str], stdin: Stdio) -> Login {
    let mut args = vec!["login", ACCOUNT, "--no-open"];
    args.extend_from_slice(extra);
    let mut child = env
        .command(&args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn login");
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut stderr = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let url = loop {
        let mut line = String::new();
        // The login itself times out (--timeout), so a missing URL ends in EOF, not a hang.
        if reader.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
            let _ = child.kill();
            panic!("no authorization URL on stderr:\n{stderr}");
        }
        stderr.push_str(&line);
        if line.contains("/authorize?") {
            break reqwest_free::Url::parse(line.trim());
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
        rest
    });
    std::mem::forget(drain);
    Login { child, url, stderr }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> i32 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("login did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Play the browser coming back: GET the redirect URI with `query`. Returns status and body.
fn browser_get(redirect_uri: &str, path_and_query: &str) -> (u16, String) {
    let authority = redirect_uri
        .strip_prefix("http://")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let port: u16 = authority.rsplit_once(':').unwrap().1.parse().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    raw_request(
        addr,
        format!("GET {path_and_query} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
}

fn callback_path(redirect_uri: &str, query: &str) -> String {
    let after = redirect_uri.strip_prefix("http://").unwrap();
    let path = after.find('/').map_or("/", |i| &after[i..]);
    format!("{path}?{query}")
}

#[test]
fn browser_login_exchanges_the_code_with_the_pkce_verifier() {
    let server = FakeServer::start();
    let env = browser_env(&server);
    let mut login = start_login(&env, &["--timeout", "20"], Stdio::null());
    let url = &login.url;
    assert_eq!(url.get("response_type"), "code");
    assert_eq!(url.get("code_challenge_method"), "S256");
    assert_eq!(url.get("client_id"), CLIENT_ID);
    assert_eq!(url.get("scope"), SCOPE);
    let redirect = url.get("redirect_uri").to_string();
    assert!(redirect.starts_with("http://127.0.0.1:"), "{redirect}");
    // The redirect URI in use is named before the address, to check against the registration.
    assert!(
        login
            .stderr
            .contains(&format!("Redirect URI: {redirect} (")),
        "{}",
        login.stderr
    );
    let code = server.issue_code(url.get("code_challenge"), &redirect);

    // A browser asks for other things too; they must not end the login.
    let (status, _) = browser_get(&redirect, "/favicon.ico");
    assert_eq!(status, 404);
    let query = format!("code={code}&state={}", url_encode(url.get("state")));
    let (status, page) = browser_get(&redirect, &callback_path(&redirect, &query));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("close this tab"), "{page}");

    let code_exit = wait_exit(&mut login.child, Duration::from_secs(20));
    assert_eq!(code_exit, 0, "stderr so far:\n{}", login.stderr);
    assert_eq!(server.count(Kind::Code), 1, "{:?}", server.last_refusal());
    let exchange = &server.requests_of(Kind::Code)[0];
    assert_eq!(
        s256(exchange.param("code_verifier").unwrap()),
        url.get("code_challenge")
    );
    let stored = env.read_token_json(ACCOUNT);
    assert!(
        stored["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("fake-rt-")
    );
    // One callback only: the listener is gone once the login is over.
    let port = port_of(&redirect);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    // And the stored grant works for `token` afterwards.
    let out = env.run(&["token", ACCOUNT]);
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), stored["access_token"].as_str().unwrap());
}

fn browser_login_refused(query_for: impl Fn(&str) -> String, expect_status: u16) {
    let server = FakeServer::start();
    let env = browser_env(&server);
    let mut login = start_login(&env, &["--timeout", "20"], Stdio::null());
    let redirect = login.url.get("redirect_uri").to_string();
    let state = login.url.get("state").to_string();
    let (status, _) = browser_get(&redirect, &callback_path(&redirect, &query_for(&state)));
    assert_eq!(status, expect_status);
    assert_eq!(wait_exit(&mut login.child, Duration::from_secs(20)), 3);
    assert_eq!(server.count(Kind::Code), 0);
    assert!(env.token_bytes(ACCOUNT).is_none(), "nothing may be stored");
}

#[test]
fn browser_login_ignores_requests_that_are_not_its_answer() {
    let server = FakeServer::start();
    let env = browser_env(&server);
    let mut login = start_login(&env, &["--timeout", "20"], Stdio::null());
    let redirect = login.url.get("redirect_uri").to_string();
    // An old tab, a page probing the port, a forged answer: each gets a 400, none ends it.
    for stray in ["code=stolen&state=not-the-one", "code=stolen", ""] {
        let (status, _) = browser_get(&redirect, &callback_path(&redirect, stray));
        assert_eq!(status, 400, "{stray}");
    }
    let code = server.issue_code(login.url.get("code_challenge"), &redirect);
    let query = format!("code={code}&state={}", url_encode(login.url.get("state")));
    let (status, _) = browser_get(&redirect, &callback_path(&redirect, &query));
    assert_eq!(status, 200);
    assert_eq!(wait_exit(&mut login.child, Duration::from_secs(20)), 0);
    assert_eq!(server.count(Kind::Code), 1, "{:?}", server.last_refusal());
}

#[test]
fn silent_connections_do_not_hold_the_login_past_its_timeout() {
    let server = FakeServer::start();
    let env = browser_env(&server);
    let mut login = start_login(&env, &["--timeout", "2"], Stdio::null());
    let waiting = Instant::now();
    let redirect = login.url.get("redirect_uri").to_string();
    let port = port_of(&redirect);
    // Three connections that never finish their request (slowloris).
    let _silent: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let _ = s.write_all(b"GET /?state=");
            s
        })
        .collect();
    assert_eq!(wait_exit(&mut login.child, Duration::from_secs(20)), 3);
    let took = waiting.elapsed();
    assert!(
        took < Duration::from_millis(3_500),
        "a 2 s timeout took {took:?}"
    );
}

#[test]
fn a_redirect_uri_on_ipv6_loopback_is_listened_on() {
    let server = FakeServer::start();
    let env = TestEnv::with_extra(
        &server,
        "",
        &format!(
            "{}redirect_uri = \"http://[::1]/cb\"\n",
            BROWSER_ACCOUNT.replace("{base}", &server.base_url())
        ),
    );
    let mut login = start_login(&env, &["--timeout", "20"], Stdio::null());
    let redirect = login.url.get("redirect_uri").to_string();
    assert!(redirect.starts_with("http://[::1]:"), "{redirect}");
    let port: u16 = redirect
        .trim_end_matches("/cb")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let code = server.issue_code(login.url.get("code_challenge"), &redirect);
    let query = format!("code={code}&state={}", url_encode(login.url.get("state")));
    let (status, _) = raw_request(
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        format!("GET /cb?{query} HTTP/1.1\r\nHost: [::1]:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status, 200);
    assert_eq!(wait_exit(&mut login.child, Duration::from_secs(20)), 0);
}

#[test]
fn browser_login_checks_the_issuer_of_the_answer_rfc9207() {
    let server = FakeServer::start();
    let base = server.base_url();
    let env = TestEnv::with_config_text(&format!(
        "[accounts.{ACCOUNT}]\nprovider = \"generic\"\nuser = \"{USER}\"\nclient_id = \"{CLIENT_ID}\"\n\
         issuer = \"{base}\"\nflow = \"browser\"\nscopes = [\"mail\", \"offline_access\"]\n"
    ));
    for (iss, stored) in [
        (Some("http://evil.example"), false),
        (None, false),
        (Some(base.as_str()), true),
    ] {
        let mut login = start_login(&env, &["--timeout", "20"], Stdio::null());
        let redirect = login.url.get("redirect_uri").to_string();
        let code = server.issue_code(login.url.get("code_challenge"), &redirect);
        let mut query = format!("code={code}&state={}", url_encode(login.url.get("state")));
        if let Some(iss) = iss {
            query.push_str(&format!("&iss={}", url_encode(iss)));
        }
        let (status, _) = browser_get(&redirect, &callback_path(&redirect, &query));
        let exit = wait_exit(&mut login.child, Duration::from_secs(20));
        assert_eq!((status == 200, exit == 0), (stored, stored), "iss {iss:?}");
        assert_eq!(env.token_bytes(ACCOUNT).is_some(), stored, "iss {iss:?}");
    }
    assert_eq!(
        server.count(Kind::Code),
        1,
        "only the right issuer's code is exchanged"
    );
}

#[test]
fn browser_login_denied_at_the_consent_page_stores_nothing() {
    browser_login_refused(
        |state| {
            format!(
                "error=access_denied&error_description=user+said+no&state={}",
                url_encode(state)
            )
        },
        400,
    );
}

#[test]
fn browser_login_times_out_when_the_browser_never_comes_back() {
    let server = FakeServer::start();
    let env = browser_env(&server);
    let started = Instant::now();
    let mut login = start_login(&env, &["--timeout", "1"], Stdio::null());
    assert_eq!(wait_exit(&mut login.child, Duration::from_secs(15)), 3);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(env.token_bytes(ACCOUNT).is_none());
}

#[test]
fn browser_login_by_pasting_the_redirected_address() {
    let server = FakeServer::start();
    let env = browser_env(&server);
    let mut login = start_login(&env, &["--paste"], Stdio::piped());
    let redirect = login.url.get("redirect_uri").to_string();
    // No listener: the registered form without a port is sent as it is.
    assert_eq!(redirect, "http://127.0.0.1/");
    assert_eq!(login.paste_back(&server), 0);
    assert_eq!(server.count(Kind::Code), 1, "{:?}", server.last_refusal());
    assert!(env.token_bytes(ACCOUNT).is_some());
}

/// A strict RFC 8252 server (oidc-provider's rule: the registered URI as normalised, the port
/// of a loopback address ignored) takes a generic account's default redirect URI, which has
/// the path; and refuses one it does not know at the login's first look, so the login ends at
/// once (exit 2, saying what to register) instead of waiting out its timeout for a browser
/// that an error page keeps.
#[test]
fn a_strict_server_takes_the_default_redirect_and_an_unknown_one_fails_at_once() {
    let server = FakeServer::start();
    server.set_registered_redirects(&["http://127.0.0.1/"]);
    let env = browser_env(&server);
    let mut login = start_login(&env, &["--timeout", "20"], Stdio::null());
    let redirect = login.url.get("redirect_uri").to_string();
    assert!(
        redirect.starts_with("http://127.0.0.1:") && redirect.ends_with('/'),
        "{redirect}"
    );
    assert!(
        login
            .stderr
            .contains("register http://127.0.0.1/, path and trailing slash as here"),
        "{}",
        login.stderr
    );
    login.come_back(&server);

    let unknown = TestEnv::with_extra(
        &server,
        "",
        &format!(
            "{}\nredirect_uri = \"http://127.0.0.1/callback\"",
            BROWSER_ACCOUNT.replace("{base}", &server.base_url())
        ),
    );
    let started = Instant::now();
    let r = unknown.run(&["login", ACCOUNT, "--no-open", "--timeout", "60"]);
    r.expect_code(2)
        .assert_stderr_has(
            "the server refused the login before any sign-in (HTTP 400, invalid_redirect_uri",
        )
        .assert_stderr_has("register the redirect URI http://127.0.0.1:");
    assert!(started.elapsed() < Duration::from_secs(30), "it waited");
    assert!(unknown.token_bytes(ACCOUNT).is_none());
}

/// A registration that allows only `https://localhost` (Thunderbird-style): the login sends it
/// as it is, listens for nothing, and takes the address the browser was sent to (which does
/// not load) from the person, without --paste being asked for.
#[test]
fn an_https_loopback_redirect_is_pasted() {
    let server = FakeServer::start();
    let env = TestEnv::with_extra(
        &server,
        "",
        &format!(
            "{}\nredirect_uri = \"https://localhost/oauth\"",
            BROWSER_ACCOUNT.replace("{base}", &server.base_url())
        ),
    );
    let mut login = start_login(&env, &[], Stdio::piped());
    let redirect = login.url.get("redirect_uri").to_string();
    assert_eq!(redirect, "https://localhost/oauth");
    assert!(
        login.stderr.contains("the login goes on by pasting"),
        "{}",
        login.stderr
    );
    assert_eq!(login.paste_back(&server), 0);
    let exchange = &server.requests_of(Kind::Code)[0];
    assert_eq!(
        exchange.param("redirect_uri"),
        Some("https://localhost/oauth")
    );
    assert!(env.token_bytes(ACCOUNT).is_some());
    // Not any https address: one on this machine.
    let elsewhere = TestEnv::with_extra(
        &server,
        "",
        &format!(
            "{}\nredirect_uri = \"https://example.com/oauth\"",
            BROWSER_ACCOUNT.replace("{base}", &server.base_url())
        ),
    );
    elsewhere
        .run(&["login", ACCOUNT, "--no-open"])
        .expect_code(2)
        .assert_stderr_has("https://localhost or https://127.0.0.1");
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

fn app_only_env(server: &FakeServer, auth: &str) -> TestEnv {
    TestEnv::with_config_text(&format!(
        "[accounts.{ACCOUNT}]\nprovider = \"generic\"\nuser = \"{USER}\"\nclient_id = \"{CLIENT_ID}\"\n\
         flow = \"credentials\"\ntoken_endpoint = \"{}/token\"\nscopes = [\"api://mail/.default\"]\n{auth}\n",
        server.base_url()
    ))
}

#[test]
fn client_credentials_with_a_secret_fetch_cache_and_fetch_again() {
    let server = FakeServer::start();
    server.set_app_auth(AppAuth {
        secret: Some("app-secret-value".into()),
        assertion_key: None,
    });
    let env = app_only_env(&server, "client_secret_env = \"MT_TEST_APP_SECRET\"");
    let run = |args: &[&str]| {
        let mut cmd = env.command(args);
        cmd.env("MT_TEST_APP_SECRET", "app-secret-value");
        Running::spawn(cmd, "token".into()).wait(RUN_TIMEOUT)
    };
    // No login needed: app-only tokens come without a person.
    let first = run(&["token", ACCOUNT]);
    first.expect_code(0);
    assert_eq!(server.count(Kind::Credentials), 1);
    let request = &server.requests_of(Kind::Credentials)[0];
    assert_eq!(request.param("scope"), Some("api://mail/.default"));
    first.assert_stderr_lacks("app-secret-value");
    let again = run(&["token", ACCOUNT]);
    assert_eq!(again.stdout, first.stdout);
    assert_eq!(server.count(Kind::Credentials), 1, "cached token reused");
    // Near expiry there is no refresh token: a new token is simply fetched.
    let json = env.read_token_json(ACCOUNT);
    assert!(json.get("refresh_token").is_none());
    let mut expired = json.clone();
    expired["expires_at"] = serde_json::json!(now_unix() - 10);
    env.write_token_bytes(ACCOUNT, &serde_json::to_vec(&expired).unwrap());
    let third = run(&["token", ACCOUNT]);
    third.expect_code(0);
    assert_ne!(third.stdout, first.stdout);
    assert_eq!(server.count(Kind::Credentials), 2);
}

#[test]
fn client_credentials_with_a_wrong_secret_is_a_setup_error_with_a_hint() {
    let server = FakeServer::start();
    server.set_app_auth(AppAuth {
        secret: Some("right".into()),
        assertion_key: None,
    });
    let env = app_only_env(&server, "client_secret_env = \"MT_TEST_APP_SECRET\"");
    let mut cmd = env.command(&["token", ACCOUNT]);
    cmd.env("MT_TEST_APP_SECRET", "wrong-secret-id");
    let out = Running::spawn(cmd, "token".into()).wait(RUN_TIMEOUT);
    out.expect_code(2);
    out.assert_stderr_has("AADSTS7000215");
    out.assert_stderr_has("hint:");
    out.assert_stderr_lacks("wrong-secret-id");
    assert!(env.token_bytes(ACCOUNT).is_none());
}

/// A Google Workspace service account (domain-wide delegation): no login, a grant assertion
/// signed with the key file's private key, naming the service account, the mailbox (`user`),
/// the mail scope and the token endpoint, verified by the server with the public key; the
/// token is cached like any app-only one, and the assertion never shows. A key file of another
/// service account than `client_id` says so before anything is sent.
#[test]
fn a_google_service_account_gets_tokens_for_its_mailbox() {
    let server = FakeServer::start();
    server.set_app_auth(AppAuth {
        secret: None,
        assertion_key: Some(std::fs::read(fixture("app-pub.der")).unwrap()),
    });
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("relay.json");
    std::fs::write(
        &key,
        serde_json::json!({
            "type": "service_account",
            "client_email": "relay@proj.iam.gserviceaccount.com",
            "client_id": "1234",
            "private_key": std::fs::read_to_string(fixture("app-key.pem")).unwrap(),
            "private_key_id": "kid-1",
            "token_uri": "https://oauth2.googleapis.com/token",
        })
        .to_string(),
    )
    .unwrap();
    let config = |client_id: &str| {
        format!(
            "[accounts.{ACCOUNT}]\nprovider = \"google\"\nuser = \"{USER}\"\n\
             client_id = \"{client_id}\"\nservice_account_key = \"{}\"\n\
             token_endpoint = \"{}/token\"\n",
            key.display(),
            server.base_url()
        )
    };
    let env = TestEnv::with_config_text(&config("1234"));
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(0);
    assert!(r.stdout.starts_with("fake-at-"), "{}", r.all());
    let grant = &server.requests_of(Kind::JwtBearer)[0];
    assert_eq!(grant.param("client_secret"), None);
    let assertion = grant.param("assertion").unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            assertion.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], USER);
    assert_eq!(claims["iss"], "relay@proj.iam.gserviceaccount.com");
    assert_eq!(claims["scope"], "https://mail.google.com/");
    assert_eq!(claims["aud"], format!("{}/token", server.base_url()));
    r.assert_no_leak(&[assertion]);
    env.run(&["token", ACCOUNT]).expect_code(0);
    assert_eq!(server.count(Kind::JwtBearer), 1, "the cached token is used");
    env.run(&["status", ACCOUNT])
        .assert_stdout_has("credentials login");

    let other = TestEnv::with_config_text(&config("9999"));
    other
        .run(&["token", ACCOUNT])
        .expect_code(2)
        .assert_stderr_has("service account with client ID 1234");
    assert_eq!(server.count(Kind::JwtBearer), 1);

    // A key that cannot sign: a setup error (exit 2) naming the file, and doctor says so.
    std::fs::write(
        &key,
        r#"{"type":"service_account","client_email":"r@p","private_key":"not a key"}"#,
    )
    .unwrap();
    env.run(&["token", ACCOUNT, "--force-refresh"])
        .expect_code(2)
        .assert_stderr_has("relay.json: the service account key's private_key is not a PEM key");
    let doctor = env.run(&["doctor", ACCOUNT]);
    doctor.expect_code(1);
    assert!(
        doctor
            .all()
            .contains("no grant can be signed with the service account key"),
        "{}",
        doctor.all()
    );
}

#[test]
fn client_credentials_with_a_certificate_assertion_verified_by_the_server() {
    let server = FakeServer::start();
    server.set_app_auth(AppAuth {
        secret: None,
        assertion_key: Some(std::fs::read(fixture("app-pub.der")).unwrap()),
    });
    let env = app_only_env(
        &server,
        &format!(
            "client_certificate = \"{}\"\nclient_key = \"{}\"",
            fixture("app-cert.pem"),
            fixture("app-key.pem")
        ),
    );
    let out = env.run(&["login", ACCOUNT]);
    out.expect_code(0);
    assert_eq!(
        server.count(Kind::Credentials),
        1,
        "{:?}",
        server.last_refusal()
    );
    let token = env.run(&["token", ACCOUNT]);
    token.expect_code(0);
    assert!(token.stdout.starts_with("fake-at-"));
    assert_eq!(server.count(Kind::Credentials), 1);
}

#[test]
fn a_certificate_the_server_does_not_know_is_refused() {
    let server = FakeServer::start();
    let mut other_key = std::fs::read(fixture("app-pub.der")).unwrap();
    let last = other_key.len() - 5;
    other_key[last] ^= 0xff;
    server.set_app_auth(AppAuth {
        secret: None,
        assertion_key: Some(other_key),
    });
    let env = app_only_env(
        &server,
        &format!(
            "client_certificate = \"{}\"\nclient_key = \"{}\"",
            fixture("app-cert.pem"),
            fixture("app-key-pkcs1.pem")
        ),
    );
    env.run(&["token", ACCOUNT]).expect_code(2);
    assert_eq!(
        server.last_refusal().as_deref(),
        Some("client_assertion signature does not verify")
    );
}

#[test]
fn microsoft_app_only_scopes_must_end_in_default() {
    let env = TestEnv::with_config_text(
        "[accounts.work]\nprovider = \"microsoft\"\nclient_id = \"id\"\nflow = \"credentials\"\n\
         client_secret_env = \"X\"\nscopes = [\"https://outlook.office.com/IMAP.AccessAsUser.All\"]\n",
    );
    let out = env.run(&["token", ACCOUNT]);
    out.expect_code(2);
    out.assert_stderr_has("/.default");
}

#[test]
fn discovery_finds_the_endpoints_from_the_issuer() {
    let server = FakeServer::start();
    server.push_polls(&[Poll::Success]);
    let env = TestEnv::with_config_text(&format!(
        "[accounts.{ACCOUNT}]\nprovider = \"generic\"\nclient_id = \"{CLIENT_ID}\"\n\
         issuer = \"{}\"\nscopes = [\"mail\", \"offline_access\"]\n",
        server.base_url()
    ));
    env.run(&["login", ACCOUNT]).expect_code(0);
    assert_eq!(server.count(Kind::Discovery), 1);
    assert_eq!(server.count(Kind::Poll), 1);
    assert!(env.token_bytes(ACCOUNT).is_some());
}

#[test]
fn one_refresh_token_mints_tokens_for_another_resource() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Rotate);
    let env = TestEnv::with_extra(
        &server,
        "",
        "[accounts.work.resources]\ngraph = [\"https://graph.example/Mail.Send\"]\n",
    );
    env.write_token(ACCOUNT, "own-at", "fake-rt-seed", now_unix() + 3600);
    server.add_refresh_token("fake-rt-seed");

    let graph = env.run(&["token", ACCOUNT, "--resource", "graph"]);
    graph.expect_code(0);
    assert_eq!(server.count(Kind::Refresh), 1);
    let request = &server.requests_of(Kind::Refresh)[0];
    assert_eq!(
        request.param("scope"),
        Some("https://graph.example/Mail.Send")
    );
    assert_ne!(graph.stdout.trim(), "own-at");

    // The account's own token is untouched and still served from the cache; the rotated
    // refresh token replaced the old one for both.
    let own = env.run(&["token", ACCOUNT]);
    assert_eq!(own.stdout.trim(), "own-at");
    let stored = env.read_token_json(ACCOUNT);
    assert_ne!(stored["refresh_token"], "fake-rt-seed");
    assert!(server.was_revoked("fake-rt-seed"));

    // Asking again, by explicit scope this time, hits the cache.
    let again = env.run(&[
        "token",
        ACCOUNT,
        "--scope",
        "https://graph.example/Mail.Send",
    ]);
    assert_eq!(again.stdout, graph.stdout);
    assert_eq!(server.count(Kind::Refresh), 1);
    env.run(&["token", ACCOUNT, "--resource", "nope"])
        .expect_code(2);
}

/// At a terminal, the browser wait shows how long is left (the device flow's countdown);
/// without a reply it ends at --timeout, nothing stored.
#[test]
fn the_browser_wait_counts_down_at_a_terminal() {
    let server = FakeServer::start();
    let env = browser_env(&server);
    let line = env
        .command(&["login", ACCOUNT, "--no-open", "--timeout", "2"])
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("script");
    // script(1) gives the login a terminal; its exit status is the login's.
    cmd.args(["-qec", &format!("{} {line}", bin()), "/dev/null"]);
    let out = Running::spawn(cmd, "login at a terminal".into()).wait(Duration::from_secs(30));
    assert_eq!(out.code, Some(3), "{}", out.all());
    out.assert_stdout_has("waiting for the browser, 00:0");
    assert!(!env.token_path(ACCOUNT).exists());
}

/// The Yahoo preset, with the fake server standing in for Yahoo's endpoints (explicit ones
/// win over a preset's): the address the person opens asks for Yahoo's mail scope, none of
/// Google's extras and the account's `extra_authorize_params`, and the code, then each
/// refresh, goes with the app's client secret.
#[test]
fn the_yahoo_preset_asks_for_its_scope_and_sends_its_secret() {
    let server = FakeServer::start();
    let base = server.base_url();
    let env = TestEnv::with_config_text(&format!(
        "[accounts.{ACCOUNT}]\nprovider = \"yahoo\"\nuser = \"{USER}\"\n\
         client_id = \"{CLIENT_ID}\"\nclient_secret_command = \"printf s3cret\"\n\
         token_endpoint = \"{base}/token\"\nauthorization_endpoint = \"{base}/authorize\"\n\
         extra_authorize_params = {{ prompt = \"select_account\" }}\n"
    ));
    let mut login = start_login(&env, &["--timeout", "20"], Stdio::null());
    let url = &login.url;
    assert_eq!(url.get("scope"), "mail-w");
    // The account's own parameters reach the sign-in page.
    assert_eq!(url.get("prompt"), "select_account");
    assert_eq!(url.get("code_challenge_method"), "S256");
    assert!(!url.query.contains_key("access_type"), "{:?}", url.query);
    login.come_back(&server);
    let exchange = &server.requests_of(Kind::Code)[0];
    assert_eq!(exchange.param("client_secret"), Some("s3cret"));
    assert_eq!(exchange.param("client_id"), Some(CLIENT_ID));

    env.run(&["token", ACCOUNT, "--force-refresh"])
        .expect_code(0);
    let refresh = &server.requests_of(Kind::Refresh)[0];
    assert_eq!(refresh.param("client_secret"), Some("s3cret"));
}

/// The Zoho preset in the EU data centre, with the fake server standing in for
/// accounts.zoho.eu: the address asks for a scope per protocol, comma-separated as Zoho reads
/// them, with access_type=offline and consent (a refresh token at every login, not only the
/// first), and the code and each refresh go with the client secret.
#[test]
fn the_zoho_preset_asks_for_its_scopes_offline_and_sends_its_secret() {
    let server = FakeServer::start();
    let base = server.base_url();
    let env = TestEnv::with_config_text(&format!(
        "[accounts.{ACCOUNT}]\nprovider = \"zoho\"\nregion = \"eu\"\nuser = \"{USER}\"\n\
         client_id = \"{CLIENT_ID}\"\nclient_secret_command = \"printf s3cret\"\n\
         services = [\"imap\", \"pop\", \"smtp\"]\nredirect_uri = \"http://127.0.0.1/\"\n\
         token_endpoint = \"{base}/token\"\nauthorization_endpoint = \"{base}/authorize\"\n"
    ));
    let mut login = start_login(&env, &["--timeout", "20"], Stdio::null());
    let url = &login.url;
    assert_eq!(
        url.get("scope"),
        "ZOHOMAIL.PROTOCOL.IMAP,ZOHOMAIL.PROTOCOL.POP,ZOHOMAIL.PROTOCOL.SMTP"
    );
    assert_eq!(url.get("access_type"), "offline");
    assert_eq!(url.get("prompt"), "consent");
    assert_eq!(url.get("code_challenge_method"), "S256");
    let redirect = url.get("redirect_uri").to_string();
    login.come_back(&server);
    let exchange = &server.requests_of(Kind::Code)[0];
    assert_eq!(exchange.param("client_secret"), Some("s3cret"));
    assert_eq!(exchange.param("redirect_uri"), Some(redirect.as_str()));
    env.run(&["token", ACCOUNT, "--force-refresh"])
        .expect_code(0);
    let refresh = &server.requests_of(Kind::Refresh)[0];
    assert_eq!(refresh.param("client_secret"), Some("s3cret"));
}

/// A Microsoft account in the China cloud asks, at its device login, for the mail scopes of
/// partner.outlook.cn (the fake server standing in for login.partner.microsoftonline.cn,
/// whose address the preset builds: unit-tested in provider.rs).
#[test]
fn a_national_cloud_account_asks_for_its_clouds_scopes() {
    let server = FakeServer::start();
    server.set_interval(Some(1));
    server.push_polls(&[Poll::Success]);
    let base = server.base_url();
    let env = TestEnv::with_config_text(&format!(
        "[accounts.{ACCOUNT}]\nprovider = \"microsoft\"\ncloud = \"china\"\nuser = \"{USER}\"\n\
         client_id = \"{CLIENT_ID}\"\n\
         device_authorization_endpoint = \"{base}/device\"\ntoken_endpoint = \"{base}/token\"\n"
    ));
    env.run(&["login", ACCOUNT]).expect_code(0);
    let device = &server.requests_of(Kind::Device)[0];
    assert_eq!(
        device.param("scope"),
        Some(
            "https://partner.outlook.cn/IMAP.AccessAsUser.All https://partner.outlook.cn/SMTP.Send offline_access"
        )
    );
}
