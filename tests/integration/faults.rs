//! The fault matrix: every request mailtoken makes (device authorization, device poll,
//! refresh, code exchange, client credentials, OIDC discovery) against every way a server
//! or the network fails. Each must end in a clear message, the documented exit code (4:
//! network or server trouble; 2 where the server says the setup cannot work), no secret on
//! stderr, and the store exactly as it was.
//!
//! Timeouts: every run sets MAILTOKEN_HTTP_TIMEOUT=2 (see src/http.rs) so that a stalled
//! server is given up on in 2 s rather than the default 30 s.

use std::time::Duration;

use crate::support::env::*;
use crate::support::http::{parse_form, url_encode};
use crate::support::oauth_server::*;

const HTTP_TIMEOUT: &str = "2";
const SEED_AT: &str = "at-fm-seed-secret";
const SEED_RT: &str = "rt-fm-seed-secret";
const CLIENT_SECRET: &str = "fm-client-secret-value";
const PASTED_CODE: &str = "fake-code-fm-secret";

/// Strings that must never reach stderr, whatever failed.
const SECRETS: &[&str] = &[
    SEED_AT,
    SEED_RT,
    CLIENT_SECRET,
    PASTED_CODE,
    DEVICE_CODE,
    "leaky-at",
    "partial-at-secret",
    "partial-rt-secret",
    "huge-at-secret",
];

/// The requests mailtoken makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Req {
    DeviceAuthorization,
    DevicePoll,
    Refresh,
    CodeExchange,
    ClientCredentials,
    Discovery,
}

impl Req {
    fn kind(self) -> Kind {
        match self {
            Req::DeviceAuthorization => Kind::Device,
            Req::DevicePoll => Kind::Poll,
            Req::Refresh => Kind::Refresh,
            Req::CodeExchange => Kind::Code,
            Req::ClientCredentials => Kind::Credentials,
            Req::Discovery => Kind::Discovery,
        }
    }

    /// The config, with the endpoint under test at `faulty` and the others at `good`.
    fn config(self, good: &str, faulty: &str) -> String {
        let head = format!(
            "[accounts.{ACCOUNT}]\nprovider = \"generic\"\nuser = \"{USER}\"\nclient_id = \"{CLIENT_ID}\"\n"
        );
        let rest = match self {
            Req::DeviceAuthorization | Req::DevicePoll | Req::Refresh => {
                let device = if self == Req::DeviceAuthorization {
                    faulty
                } else {
                    good
                };
                let token = if self == Req::DeviceAuthorization {
                    good
                } else {
                    faulty
                };
                format!(
                    "device_authorization_endpoint = \"{device}/device\"\ntoken_endpoint = \"{token}/token\"\n\
                     scopes = [\"mail\", \"offline_access\"]\n"
                )
            }
            Req::CodeExchange => format!(
                "flow = \"browser\"\nauthorization_endpoint = \"{good}/authorize\"\n\
                 token_endpoint = \"{faulty}/token\"\nscopes = [\"mail\", \"offline_access\"]\n"
            ),
            Req::ClientCredentials => format!(
                "flow = \"credentials\"\ntoken_endpoint = \"{faulty}/token\"\n\
                 scopes = [\"api://mail/.default\"]\nclient_secret_env = \"MT_FM_SECRET\"\n"
            ),
            Req::Discovery => {
                format!("issuer = \"{faulty}\"\nscopes = [\"mail\", \"offline_access\"]\n")
            }
        };
        head + &rest
    }

    /// What is stored before the run: an old login for the login flows, an expired token
    /// for the others (so that the request is due).
    fn seed(self, env: &TestEnv, server: &FakeServer) -> Vec<u8> {
        server.add_refresh_token(SEED_RT);
        match self {
            Req::DeviceAuthorization | Req::DevicePoll | Req::CodeExchange => {
                env.write_token(ACCOUNT, SEED_AT, SEED_RT, now_unix() + 3600)
            }
            Req::Refresh | Req::Discovery => {
                env.write_token(ACCOUNT, SEED_AT, SEED_RT, now_unix() - 60)
            }
            Req::ClientCredentials => {
                let json = serde_json::json!({"version": 1, "access_token": SEED_AT,
                    "token_type": "Bearer", "expires_at": now_unix() - 60});
                let bytes = serde_json::to_vec(&json).unwrap();
                env.write_token_bytes(ACCOUNT, &bytes);
                bytes
            }
        }
    }

    fn args(self) -> Vec<&'static str> {
        match self {
            Req::DeviceAuthorization | Req::DevicePoll => vec!["login", ACCOUNT],
            Req::CodeExchange => vec!["login", ACCOUNT, "--paste", "--no-open"],
            _ => vec!["token", ACCOUNT],
        }
    }
}

/// One way of failing. `fault: None` means nothing listens at the endpoint.
struct Case {
    what: &'static str,
    fault: Option<Fault>,
}

fn cases() -> Vec<Case> {
    let long = Duration::from_secs(30);
    let case = |what, fault| Case {
        what,
        fault: Some(fault),
    };
    vec![
        Case {
            what: "connection refused",
            fault: None,
        },
        case("no answer (timeout)", Fault::Stall(long)),
        case(
            "stall in the middle of the body",
            Fault::StallMidReply(long),
        ),
        case(
            "connection closed mid-reply",
            Fault::CloseMidReply { sent: 30 },
        ),
        case(
            "500 plain text",
            Fault::text(500, "text/plain", SERVER_ERROR_BODY),
        ),
        case(
            "503 with an OAuth JSON error",
            Fault::json(
                503,
                r#"{"error":"temporarily_unavailable","error_description":"down for maintenance"}"#,
            ),
        ),
        case(
            "503 with other JSON",
            Fault::json(503, r#"{"message":"Service Unavailable","code":503}"#),
        ),
        case("502 HTML page", Fault::text(502, "text/html", HTML_BODY)),
        case("200 HTML page", Fault::text(200, "text/html", HTML_BODY)),
        case("200 truncated JSON", Fault::json(200, MALFORMED_JSON_BODY)),
        case(
            "200 malformed JSON",
            Fault::json(200, r#"{"access_token": leaky-at-unquoted, }"#),
        ),
        case("200 empty body", Fault::json(200, "")),
        case(
            "200 missing fields",
            Fault::json(
                200,
                r#"{"token_type":"Bearer","expires_in":3600,"interval":5}"#,
            ),
        ),
        case(
            "200 wrong types",
            Fault::json(
                200,
                r#"{"access_token":{"x":"leaky-at-nested"},"device_code":7,"token_endpoint":7,"issuer":7,"expires_in":[1]}"#,
            ),
        ),
        case("200 larger than 1 MiB", Fault::huge()),
        case(
            "the reply drips in a byte at a time",
            Fault::Trickle(Duration::from_millis(200)),
        ),
        case(
            "200 with an empty access token",
            Fault::json(
                200,
                r#"{"access_token":"","token_type":"Bearer","expires_in":3600,"refresh_token":"partial-rt-secret-empty"}"#,
            ),
        ),
        case(
            "200 with a line break in the token",
            Fault::json(
                200,
                r#"{"access_token":"leaky-at-crlf\r\nX-Injected: 1","token_type":"Bearer","expires_in":3600}"#,
            ),
        ),
        case(
            "200 with token_type mac",
            Fault::json(
                200,
                r#"{"access_token":"leaky-at-mac","token_type":"mac","expires_in":3600}"#,
            ),
        ),
        case(
            "307 redirect (would resend the form)",
            Fault::Redirect {
                status: 307,
                path: "/elsewhere",
            },
        ),
        case(
            "302 redirect",
            Fault::Redirect {
                status: 302,
                path: "/elsewhere",
            },
        ),
    ]
}

/// The exit code the documentation promises for `case` on `req`.
fn expected_exit(req: Req, case: &Case) -> i32 {
    match (req, case.what) {
        // A discovery document that names no token endpoint: the issuer cannot be used as set.
        (
            Req::Discovery,
            "200 missing fields"
            | "200 with an empty access token"
            | "200 with a line break in the token"
            | "200 with token_type mac",
        ) => 2,
        _ => 4,
    }
}

/// The run under test: verbose, with short HTTP timeouts and the client secret at hand.
fn spawn(env: &TestEnv, req: Req) -> Interactive {
    let mut cmd = env.command(&req.args());
    cmd.arg("--verbose")
        .env("MAILTOKEN_HTTP_TIMEOUT", HTTP_TIMEOUT)
        .env("MT_FM_SECRET", CLIENT_SECRET);
    Interactive::spawn(cmd)
}

/// Play the person who pastes the address the browser was sent to (the code is made up:
/// the faulted exchange never looks at it).
fn paste_callback(proc: &mut Interactive) {
    let url = proc.wait_for_line("/authorize?", Duration::from_secs(20));
    let (_, query) = url.trim().split_once("/authorize?").unwrap();
    let state = parse_form(query.as_bytes())["state"].clone();
    proc.type_line(&format!(
        "http://127.0.0.1/?code={PASTED_CODE}&state={}",
        url_encode(&state)
    ));
}

/// Run every fault case for `req` at once, each with its own server and directory, and
/// check each outcome. Returns (case, first line of the message) for the record.
fn matrix(req: Req) {
    let runs: Vec<_> = cases()
        .into_iter()
        .map(|case| {
            let server = FakeServer::start();
            server.set_app_auth(AppAuth {
                secret: Some(CLIENT_SECRET.into()),
                assertion_key: None,
            });
            let faulty = match &case.fault {
                Some(fault) => {
                    server.set_fault(req.kind(), fault.clone());
                    server.base_url()
                }
                None => format!("http://127.0.0.1:{}", closed_port()),
            };
            let env = TestEnv::with_config_text(&req.config(&server.base_url(), &faulty));
            let before = req.seed(&env, &server);
            let mut proc = spawn(&env, req);
            if req == Req::CodeExchange {
                paste_callback(&mut proc);
            }
            (case, server, env, before, proc)
        })
        .collect();

    let mut failures = Vec::new();
    for (case, server, env, before, proc) in runs {
        let r = proc.wait(Duration::from_secs(40));
        let what = format!("{req:?} / {}", case.what);
        eprintln!(
            "{what}: exit {:?} after {:?}\n    {}",
            r.code,
            r.elapsed,
            r.stderr
                .lines()
                .rev()
                .find(|l| l.starts_with("mailtoken: "))
                .unwrap_or("")
        );
        let mut problems = Vec::new();
        let want = expected_exit(req, &case);
        if r.code != Some(want) {
            problems.push(format!("exit {:?}, not {want}", r.code));
        }
        if !r.stdout.is_empty() {
            problems.push(format!("stdout not empty: {:?}", r.stdout));
        }
        let message = r
            .stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("mailtoken: ") && !l.contains(" #"))
            .unwrap_or("");
        if message.len() < 30 {
            problems.push("no clear error message on stderr".into());
        }
        for secret in SECRETS {
            if r.stderr.contains(secret) {
                problems.push(format!("{secret} on stderr"));
            }
        }
        // A refresh reply refused for its access token leaves its new refresh token stored
        // (the server may have revoked the old one); everything else leaves the store as it was.
        if req == Req::Refresh && case.what == "200 with an empty access token" {
            if env.read_token_json(ACCOUNT)["refresh_token"] != "partial-rt-secret-empty" {
                problems.push("the new refresh token of the refused reply was not kept".into());
            }
        } else if env.token_bytes(ACCOUNT).as_deref() != Some(before.as_slice()) {
            problems.push("the store changed".into());
        }
        if !server.is_valid_refresh_token(SEED_RT) {
            problems.push("the stored refresh token was spent".into());
        }
        if server.requests().iter().any(|r| r.path == "/elsewhere") {
            problems.push("a redirect was followed".into());
        }
        if case.fault.is_some() && server.count(req.kind()) == 0 {
            problems.push("the faulted request was never made".into());
        }
        if !problems.is_empty() {
            failures.push(format!("{what}: {}\n{}", problems.join("; "), r.stderr));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn faults_in_device_authorization() {
    matrix(Req::DeviceAuthorization);
}

#[test]
fn faults_in_device_polling() {
    matrix(Req::DevicePoll);
}

#[test]
fn faults_in_refresh() {
    matrix(Req::Refresh);
}

#[test]
fn faults_in_code_exchange() {
    matrix(Req::CodeExchange);
}

#[test]
fn faults_in_client_credentials() {
    matrix(Req::ClientCredentials);
}

#[test]
fn faults_in_oidc_discovery() {
    matrix(Req::Discovery);
}

/// `expires_in` as a string (older Azure AD) is a valid reply, wherever tokens are issued.
#[test]
fn expires_in_as_a_string_is_understood_by_every_token_request() {
    for req in [
        Req::DevicePoll,
        Req::Refresh,
        Req::CodeExchange,
        Req::ClientCredentials,
    ] {
        let server = FakeServer::start();
        server.set_expires_in_as_string(true);
        server.push_polls(&[Poll::Success]);
        server.set_app_auth(AppAuth {
            secret: Some(CLIENT_SECRET.into()),
            assertion_key: None,
        });
        let env = TestEnv::with_config_text(&req.config(&server.base_url(), &server.base_url()));
        req.seed(&env, &server);
        if req == Req::CodeExchange {
            // The pasted code was never issued, so a scripted reply stands in for the exchange.
            server.set_fault(
                Kind::Code,
                Fault::json(
                    200,
                    r#"{"access_token":"fake-at-code","token_type":"Bearer","expires_in":"3600","refresh_token":"fake-rt-code"}"#,
                ),
            );
        }
        let mut proc = spawn(&env, req);
        if req == Req::CodeExchange {
            paste_callback(&mut proc);
        }
        let r = proc.wait(Duration::from_secs(30));
        assert_eq!(r.code, Some(0), "{req:?}\n{}", r.stderr);
        let stored = env.read_token_json(ACCOUNT);
        let left = stored["expires_at"].as_i64().unwrap() - now_unix();
        assert!(
            (3500..=3600).contains(&left),
            "{req:?}: expires in {left} s"
        );
    }
}
