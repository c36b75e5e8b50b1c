//! `send-test`, `check`, `whoami` and `doctor` against fake servers on 127.0.0.1. The token
//! store is written directly with far-future tokens, so no OAuth server is involved.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use crate::support::env::*;
use crate::support::http::HttpRequest;
use crate::support::mail_servers::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn smtp_account(port: u16, tls: &str) -> String {
    account_toml(
        "work",
        &nowhere(),
        &format!("smtp_host = \"127.0.0.1\"\nsmtp_port = {port}\nsmtp_tls = \"{tls}\""),
    )
}

fn env_with(config: &str) -> TestEnv {
    let env = TestEnv::with_store();
    env.write_config(config);
    env.write_token("work", TOKEN, REFRESH, FAR_FUTURE);
    env
}

// ---------------------------------------------------------------------------
// send-test over SMTP
// ---------------------------------------------------------------------------

#[test]
fn send_test_authenticates_with_the_exact_xoauth2_string_and_delivers() {
    let expected = format!("AUTH XOAUTH2 {}", xoauth2(USER, TOKEN));
    let (port, seen) = smtp_server(SmtpMode::Accept {
        auth_line: expected.clone(),
    });
    let env = env_with(&smtp_account(port, "none"));
    let run = env.run(&[
        "send-test",
        "work",
        "--to",
        "bob@example.com",
        "--subject",
        "Hello from the test",
    ]);
    let s = seen.wait();
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(s.auth_line.as_deref(), Some(expected.as_str()));
    assert_eq!(s.mail_from.as_deref(), Some("<alice@example.com>"));
    assert_eq!(s.rcpt_to, ["<bob@example.com>"]);
    let data = s.data.expect("no DATA");
    assert!(data.contains("Subject: Hello from the test"), "{data}");
    assert!(data.contains("To: bob@example.com"), "{data}");
    assert!(data.contains("From: alice@example.com"), "{data}");
    assert!(s.quit);
    for step in [
        "connect",
        "tls",
        "auth",
        "accepted",
        "250 2.0.0 OK queued as FAKE123",
    ] {
        assert!(run.stderr.contains(step), "no `{step}` in:\n{}", run.stderr);
    }
    assert!(run.stdout.is_empty(), "{}", run.all());
    run.assert_no_secrets();
}

#[test]
fn send_test_refusal_shows_the_decoded_challenge_and_the_final_reply() {
    let (port, seen) = smtp_server(SmtpMode::Challenge);
    let env = env_with(&smtp_account(port, "none"));
    let run = env.run(&["send-test", "work", "--to", "bob@example.com"]);
    let s = seen.wait();
    assert_ne!(run.code, Some(0), "{}", run.all());
    assert!(run.stderr.contains(CHALLENGE_JSON), "{}", run.all());
    assert!(
        run.stderr.contains("Username and Password not accepted"),
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains("the token was refused"),
        "{}",
        run.all()
    );
    // The client answered the challenge with an empty line and sent no message.
    let auth = s
        .commands
        .iter()
        .position(|c| c.starts_with("AUTH "))
        .unwrap();
    assert_eq!(s.commands[auth + 1], "");
    assert!(s.mail_from.is_none() && s.data.is_none());
    run.assert_no_secrets();
}

#[test]
fn send_test_with_oauthbearer_sends_the_rfc7628_string() {
    let (port, seen) = smtp_server(SmtpMode::AcceptOauthbearer);
    let env = env_with(&smtp_account(port, "none"));
    let run = env.run(&[
        "send-test",
        "work",
        "--to",
        "bob@example.com",
        "--mech",
        "oauthbearer",
    ]);
    let s = seen.wait();
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(
        s.auth_line.as_deref(),
        Some(oauthbearer_line(port).as_str())
    );
    assert!(s.data.is_some_and(|d| d.contains("OAUTHBEARER")));
    run.assert_no_secrets();
}

#[test]
fn implicit_tls_to_a_plain_server_fails_before_any_token_is_sent() {
    let (port, seen) = smtp_server(SmtpMode::Accept {
        auth_line: String::new(),
    });
    let env = env_with(&smtp_account(port, "tls"));
    let run = env.run(&["check", "work", "--smtp"]);
    let s = seen.wait();
    assert_eq!(run.code, Some(4), "{}", run.all());
    assert!(
        run.stderr.contains("TLS with 127.0.0.1 failed"),
        "{}",
        run.all()
    );
    assert!(
        s.auth_line.is_none() && s.commands.is_empty(),
        "{:?}",
        s.commands
    );
}

#[test]
fn starttls_is_required_before_any_token_is_sent() {
    let (port, seen) = smtp_server(SmtpMode::NoStarttls);
    let env = env_with(&smtp_account(port, "starttls"));
    let run = env.run(&["send-test", "work", "--to", "bob@example.com"]);
    let s = seen.wait();
    assert_eq!(run.code, Some(4), "{}", run.all());
    assert!(
        run.stderr.contains("does not offer STARTTLS"),
        "{}",
        run.all()
    );
    assert!(s.auth_line.is_none(), "{:?}", s.commands);
}

#[test]
fn plain_text_smtp_is_refused_for_remote_hosts() {
    let env = env_with(&account_toml(
        "work",
        &nowhere(),
        "smtp_host = \"smtp.example.com\"\nsmtp_tls = \"none\"",
    ));
    let run = env.run(&["send-test", "work", "--to", "bob@example.com"]);
    assert_eq!(run.code, Some(2), "{}", run.all());
    assert!(run.stderr.contains("clear text"), "{}", run.all());
}

// ---------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------

#[test]
fn check_smtp_authenticates_and_quits_without_sending() {
    let expected = format!("AUTH XOAUTH2 {}", xoauth2(USER, TOKEN));
    let (port, seen) = smtp_server(SmtpMode::Accept {
        auth_line: expected.clone(),
    });
    let env = env_with(&smtp_account(port, "none"));
    let run = env.run(&["check", "work", "--smtp"]);
    let s = seen.wait();
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(s.auth_line.as_deref(), Some(expected.as_str()));
    assert!(s.quit && s.mail_from.is_none());
    assert!(run.stderr.contains("235 2.7.0 Accepted"), "{}", run.all());
    run.assert_no_secrets();
}

fn imap_account(port: u16) -> String {
    account_toml(
        "work",
        &nowhere(),
        &format!("imap_host = \"127.0.0.1\"\nimap_port = {port}\nimap_tls = \"none\""),
    )
}

#[test]
fn check_imap_with_sasl_ir() {
    let (port, seen) = imap_server(xoauth2(USER, TOKEN), true);
    let env = env_with(&imap_account(port));
    let run = env.run(&["check", "work", "--imap"]);
    let s = seen.wait();
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(
        s.commands[0],
        format!("a2 AUTHENTICATE XOAUTH2 {}", xoauth2(USER, TOKEN))
    );
    assert!(s.logout);
    assert!(
        run.stderr.contains("AUTHENTICATE completed"),
        "{}",
        run.all()
    );
    assert!(run.stderr.contains("LOGOUT completed"), "{}", run.all());
    run.assert_no_secrets();
}

/// A mail server whose certificate a private CA signed: refused as untrusted (a setup
/// problem, exit 2, naming the setting), then trusted through the account's `tls_ca_file`.
#[test]
fn a_private_ca_in_tls_ca_file_is_trusted_for_the_mail_server() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let tls_account = |port: u16, extra: &str| {
        account_toml(
            "work",
            &nowhere(),
            &format!("imap_host = \"localhost\"\nimap_port = {port}\nimap_tls = \"tls\"\n{extra}"),
        )
    };
    let (plain, _) = imap_server(xoauth2(USER, TOKEN), true);
    let env = env_with(&tls_account(tls_front(plain), ""));
    let run = env.run(&["check", "work", "--imap"]);
    assert_eq!(run.code, Some(2), "{}", run.all());
    assert!(run.stderr.contains("tls_ca_file"), "{}", run.all());

    let (plain, seen) = imap_server(xoauth2(USER, TOKEN), true);
    let env = env_with(&tls_account(
        tls_front(plain),
        &format!("tls_ca_file = \"{fixtures}/private-ca.pem\""),
    ));
    let run = env.run(&["check", "work", "--imap"]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert!(seen.wait().logout);
}

#[test]
fn check_imap_without_sasl_ir_uses_capability_and_a_continuation() {
    let (port, seen) = imap_server(xoauth2(USER, TOKEN), false);
    let env = env_with(&imap_account(port));
    let run = env.run(&["check", "work", "--imap"]);
    let s = seen.wait();
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(s.commands[0], "a1 CAPABILITY");
    assert_eq!(s.commands[1], "a2 AUTHENTICATE XOAUTH2");
    assert_eq!(s.response.as_deref(), Some(xoauth2(USER, TOKEN).as_str()));
}

#[test]
fn check_imap_refusal_shows_no_and_the_challenge() {
    let (port, seen) = imap_server(xoauth2(USER, "some-other-token"), true);
    let env = env_with(&imap_account(port));
    let run = env.run(&["check", "work", "--imap"]);
    let s = seen.wait();
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(run.stderr.contains("Invalid credentials"), "{}", run.all());
    assert!(run.stderr.contains(CHALLENGE_JSON), "{}", run.all());
    assert_eq!(
        s.commands.get(1).map(String::as_str),
        Some(""),
        "{:?}",
        s.commands
    );
    run.assert_no_secrets();
}

#[test]
fn check_pop_and_smtp_together() {
    let (pop_port, pop_seen) = pop_server(xoauth2(USER, TOKEN));
    let (smtp_port, smtp_seen) = smtp_server(SmtpMode::Challenge);
    let env = env_with(&account_toml(
        "work",
        &nowhere(),
        &format!(
            "pop_host = \"127.0.0.1\"\npop_port = {pop_port}\npop_tls = \"none\"\n\
             smtp_host = \"127.0.0.1\"\nsmtp_port = {smtp_port}\nsmtp_tls = \"none\""
        ),
    ));
    let run = env.run(&["check", "work", "--pop", "--smtp"]);
    let pop = pop_seen.wait();
    let _ = smtp_seen.wait();
    assert_eq!(pop.commands[0], "AUTH XOAUTH2");
    assert_eq!(pop.commands[1], xoauth2(USER, TOKEN));
    assert!(pop.quit);
    assert!(run.stderr.contains("pop   ok"), "{}", run.all());
    assert!(run.stderr.contains("smtp  FAILED"), "{}", run.all());
    assert!(
        run.stderr.contains("1 of 2 checks failed (smtp)"),
        "{}",
        run.all()
    );
    assert_eq!(run.code, Some(1));
    run.assert_no_secrets();
}

#[test]
fn check_without_a_login_says_to_log_in() {
    let env = TestEnv::with_store();
    env.write_config(&imap_account(closed_port()));
    let run = env.run(&["check", "work", "--imap"]);
    assert_eq!(run.code, Some(3), "{}", run.all());
    assert!(run.stderr.contains("mailtoken login work"), "{}", run.all());
}

#[test]
fn check_reports_a_server_that_is_down() {
    let env = env_with(&imap_account(closed_port()));
    let run = env.run(&["check", "work", "--imap"]);
    assert_eq!(run.code, Some(4), "{}", run.all());
    assert!(
        run.stderr.contains("cannot connect to 127.0.0.1"),
        "{}",
        run.all()
    );
}

// ---------------------------------------------------------------------------
// Microsoft Graph
// ---------------------------------------------------------------------------

/// An account whose Graph token comes from a named resource, stored beside the own token.
fn graph_env(graph_port: u16, extra: &str) -> TestEnv {
    let env = TestEnv::with_store();
    env.write_config(&account_toml(
        "work",
        &nowhere(),
        &format!(
            "graph_url = \"http://127.0.0.1:{graph_port}\"\n{extra}\n\
             [accounts.work.resources]\ngraph = [\"https://graph.microsoft.com/Mail.Send\"]"
        ),
    ));
    env.write_token_bytes(
        "work",
        serde_json::json!({
            "version": 1,
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_at": FAR_FUTURE,
            "refresh_token": REFRESH,
            "resources": {
                "https://graph.microsoft.com/Mail.Send": {
                    "access_token": GRAPH_TOKEN,
                    "token_type": "Bearer",
                    "expires_at": FAR_FUTURE,
                }
            }
        })
        .to_string()
        .as_bytes(),
    );
    env
}

#[test]
fn graph_send_test_posts_sendmail_with_the_graph_token() {
    let (port, seen) = http_server(202, vec![], String::new());
    let env = graph_env(port, "");
    let run = env.run(&[
        "send-test",
        "work",
        "--via",
        "graph",
        "--to",
        "bob@example.com",
        "--subject",
        "Graph test",
    ]);
    let req = seen.wait();
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(req.method, "POST");
    assert_eq!(req.target, "/v1.0/me/sendMail");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {GRAPH_TOKEN}").as_str())
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&req.body_text()).unwrap();
    assert_eq!(body["message"]["subject"], "Graph test");
    assert_eq!(
        body["message"]["toRecipients"][0]["emailAddress"]["address"],
        "bob@example.com"
    );
    assert_eq!(body["message"]["body"]["contentType"], "Text");
    assert!(run.stderr.contains("HTTP 202"), "{}", run.all());
    run.assert_no_secrets();
}

#[test]
fn graph_send_test_for_app_only_uses_the_users_path() {
    let (port, seen) = http_server(202, vec![], String::new());
    let env = TestEnv::with_store();
    env.write_config(&account_toml(
        "work", &nowhere(),
        &format!(
            "graph_url = \"http://127.0.0.1:{port}\"\nflow = \"credentials\"\nclient_secret_env = \"MAILTOKEN_TEST_UNUSED\"\n"
        ),
    ).replace(
        "scopes = [\"mail\", \"offline_access\"]",
        "scopes = [\"https://graph.microsoft.com/.default\"]",
    ));
    env.write_token("work", GRAPH_TOKEN, REFRESH, FAR_FUTURE);
    let run = env.run(&[
        "send-test",
        "work",
        "--via",
        "graph",
        "--to",
        "bob@example.com",
    ]);
    let req = seen.wait();
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(req.target, "/v1.0/users/alice@example.com/sendMail");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {GRAPH_TOKEN}").as_str())
    );
}

#[test]
fn graph_refusal_shows_graphs_error() {
    let (port, seen) = http_server(
        403,
        vec![],
        r#"{"error":{"code":"ErrorAccessDenied","message":"Access is denied. Check credentials and try again."}}"#.into(),
    );
    let env = graph_env(port, "");
    let run = env.run(&[
        "send-test",
        "work",
        "--via",
        "graph",
        "--to",
        "bob@example.com",
    ]);
    let _ = seen.wait();
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(
        run.stderr.contains("HTTP 403 ErrorAccessDenied"),
        "{}",
        run.all()
    );
    assert!(run.stderr.contains("Mail.Send"), "{}", run.all());
    run.assert_no_secrets();
}

#[test]
fn graph_without_a_graph_scope_says_what_to_add() {
    let env = env_with(&account_toml("work", &nowhere(), ""));
    let run = env.run(&[
        "send-test",
        "work",
        "--via",
        "graph",
        "--to",
        "bob@example.com",
    ]);
    assert_eq!(run.code, Some(2), "{}", run.all());
    assert!(
        run.stderr.contains("[accounts.work.resources]"),
        "{}",
        run.all()
    );
}

// ---------------------------------------------------------------------------
// whoami
// ---------------------------------------------------------------------------

#[test]
fn whoami_asks_graph_me_and_notes_a_user_mismatch() {
    let (port, seen) = http_server(
        200,
        vec![],
        r#"{"displayName":"Mallory","userPrincipalName":"mallory@example.com","id":"42"}"#.into(),
    );
    let env = graph_env(port, "");
    let run = env.run(&["whoami", "work"]);
    let req = seen.wait();
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(req.method, "GET");
    assert_eq!(req.target, "/v1.0/me");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {GRAPH_TOKEN}").as_str())
    );
    assert!(run.stdout.contains("mallory@example.com"), "{}", run.all());
    assert!(run.stdout.contains("Mallory"), "{}", run.all());
    assert!(
        run.stdout
            .contains("but the account's `user` is alice@example.com"),
        "{}",
        run.all()
    );
    run.assert_no_secrets();
}

#[test]
fn whoami_reads_jwt_claims_locally() {
    let claims = r#"{"upn":"alice@example.com","aud":"https://outlook.office.com","scp":"IMAP.AccessAsUser.All SMTP.Send","exp":4102444800}"#;
    let jwt = format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let env = TestEnv::with_store();
    env.write_config(&account_toml("work", &nowhere(), ""));
    env.write_token("work", &jwt, REFRESH, FAR_FUTURE);
    let run = env.run(&["whoami", "work"]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert!(run.stdout.contains("alice@example.com"), "{}", run.all());
    assert!(
        run.stdout.contains("IMAP.AccessAsUser.All SMTP.Send"),
        "{}",
        run.all()
    );
    assert!(
        run.stdout.contains("2100-01-01 00:00:00 UTC"),
        "{}",
        run.all()
    );
    assert!(!run.stdout.contains("but the account"), "{}", run.all());
    assert!(
        !run.all().contains(&jwt),
        "the token itself was printed:\n{}",
        run.all()
    );
}

#[test]
fn whoami_uses_userinfo() {
    let (port, seen) = http_server(
        200,
        vec![],
        r#"{"sub":"123","email":"alice@example.com"}"#.into(),
    );
    let env = env_with(&account_toml(
        "work",
        &nowhere(),
        &format!("userinfo_endpoint = \"http://127.0.0.1:{port}/userinfo\""),
    ));
    let run = env.run(&["whoami", "work"]);
    let req = seen.wait();
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(req.target, "/userinfo");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert!(run.stdout.contains("email"), "{}", run.all());
    run.assert_no_secrets();
}

/// A generic account with an `issuer`: the userinfo endpoint comes from discovery; a 403
/// insufficient_scope gets the fix of the account's own scopes, not a Graph permission.
#[test]
fn whoami_finds_userinfo_by_discovery_and_explains_a_missing_scope() {
    use crate::support::oauth_server::{FakeServer, Fault, Kind};
    let server = FakeServer::start();
    let env = TestEnv::with_extra(&server, "", &format!("issuer = \"{}\"", server.base_url()));
    env.write_token(ACCOUNT, "opaque-at", "rt", FAR_FUTURE as i64);
    let run = Running::spawn(env.command(&["whoami", ACCOUNT]), "whoami".into()).wait(RUN_TIMEOUT);
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert!(
        run.stdout
            .contains(&format!("{}/userinfo", server.base_url())),
        "{}",
        run.all()
    );
    assert!(run.stdout.contains(USER), "{}", run.all());

    server.set_fault(
        Kind::Userinfo,
        Fault::json(
            403,
            r#"{"error":"insufficient_scope","error_description":"openid is needed"}"#,
        ),
    );
    let run = Running::spawn(env.command(&["whoami", ACCOUNT]), "whoami".into()).wait(RUN_TIMEOUT);
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(run.stderr.contains("insufficient_scope"), "{}", run.all());
    assert!(run.stderr.contains("\"openid\""), "{}", run.all());
    assert!(!run.stderr.contains("Mail.Send"), "{}", run.all());
    assert!(!run.stderr.contains("Graph"), "{}", run.all());
}

#[test]
fn whoami_with_an_opaque_token_and_no_lookup_says_so() {
    let env = env_with(&account_toml("work", &nowhere(), ""));
    let run = env.run(&["whoami", "work"]);
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(
        run.stderr.contains("cannot tell who the token belongs to"),
        "{}",
        run.all()
    );
    run.assert_no_secrets();
}

// ---------------------------------------------------------------------------
// doctor
// ---------------------------------------------------------------------------

fn http_date(t: SystemTime) -> String {
    // Formatted by hand (no date crate in the tests): IMF-fixdate.
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let days = secs / 86_400;
    let (y, m, d) = civil(days as i64);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[m as usize - 1],
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A token server that only tells the time, `offset` away from ours.
fn clock_server(offset_secs: i64) -> (u16, Seen<HttpRequest>) {
    let now = SystemTime::now();
    let t = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs((-offset_secs) as u64)
    };
    http_server(405, vec![format!("Date: {}", http_date(t))], String::new())
}

fn doctor_account(token_port: u16, extra: &str) -> String {
    format!(
        "[accounts.work]\nprovider = \"microsoft\"\nuser = \"{USER}\"\nclient_id = \"id\"\n\
         token_endpoint = \"http://127.0.0.1:{token_port}/token\"\n{extra}\n"
    )
}

fn ms_tokens(env: &TestEnv) {
    env.write_token_bytes("work", serde_json::json!({
            "version": 1,
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_at": FAR_FUTURE,
            "refresh_token": REFRESH,
            "scope": "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send",
        }).to_string().as_bytes());
}

#[test]
fn doctor_is_happy_with_a_good_setup() {
    let (port, seen) = clock_server(0);
    let env = TestEnv::with_store();
    env.write_config(&doctor_account(port, ""));
    ms_tokens(&env);
    let run = env.run(&["doctor"]);
    let req = seen.wait();
    assert_eq!(req.method, "HEAD");
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert!(run.stdout.contains("No problems found"), "{}", run.all());
    run.assert_no_secrets();
}

/// doctor exits as every command does for the same trouble: 2 for a config that does not
/// load or an account that is not in it, 1 for what it found wrong at run time.
#[test]
fn doctor_exits_2_for_config_and_name_errors() {
    let env = TestEnv::with_store();
    env.write_config("[accounts.work]\nprovider = \"nope\"\n");
    let run = env.run(&["doctor"]);
    assert_eq!(run.code, Some(2), "{}", run.all());
    assert!(run.stdout.contains("does not load"), "{}", run.all());
    let env = env_with(&account_toml("work", &nowhere(), ""));
    let run = env.run(&["doctor", "missing"]);
    assert_eq!(run.code, Some(2), "{}", run.all());
    assert!(run.stdout.contains("no such account"), "{}", run.all());
    // The same as `token` says of them.
    assert_eq!(env.run(&["token", "missing"]).code, Some(2));
}

#[test]
fn doctor_reports_clock_skew() {
    let (port, seen) = clock_server(-3600);
    let env = TestEnv::with_store();
    env.write_config(&doctor_account(port, ""));
    ms_tokens(&env);
    let run = env.run(&["doctor", "work"]);
    let _ = seen.wait();
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(
        run.stdout.contains("clock is 1 h 0 min ahead of"),
        "{}",
        run.all()
    );
    assert!(run.stdout.contains("fix: "), "{}", run.all());
}

#[test]
fn doctor_names_the_config_line() {
    let env = TestEnv::with_store();
    env.write_config(&doctor_account(closed_port(), "smtp_prot = 587"));
    let run = env.run(&["doctor"]);
    assert_eq!(run.code, Some(2), "{}", run.all());
    assert!(run.stdout.contains("line 6"), "{}", run.all());
    assert!(run.stdout.contains("smtp_prot"), "{}", run.all());
}

#[test]
fn doctor_reports_loose_store_modes_and_changes_nothing() {
    let (port, _seen) = clock_server(0);
    let env = TestEnv::with_store();
    env.write_config(&doctor_account(port, ""));
    ms_tokens(&env);
    let path = env.token_path("work");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&env.data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = std::fs::read(&path).unwrap();
    let run = env.run(&["doctor"]);
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(run.stdout.contains("chmod 600"), "{}", run.all());
    assert!(run.stdout.contains("chmod 700"), "{}", run.all());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o644, "doctor must not change modes");
    assert_eq!(mode(&env.data), 0o755);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    run.assert_no_secrets();
}

#[test]
fn doctor_reports_missing_login_and_offline_access() {
    let (port, _seen) = clock_server(0);
    let env = TestEnv::with_store();
    env.write_config(&doctor_account(
        port,
        "scopes = [\"https://outlook.office.com/IMAP.AccessAsUser.All\"]",
    ));
    let run = env.run(&["doctor"]);
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(
        run.stdout.contains("error [work]: not logged in"),
        "{}",
        run.all()
    );
    assert!(
        run.stdout.contains("offline_access is missing"),
        "{}",
        run.all()
    );
    assert!(run.stdout.contains("mailtoken login work"), "{}", run.all());
}

#[test]
fn doctor_warns_about_app_only_scopes_with_a_user_flow() {
    let (port, _seen) = clock_server(0);
    let env = TestEnv::with_store();
    env.write_config(&doctor_account(
        port,
        "scopes = [\"https://outlook.office365.com/.default\", \"offline_access\"]",
    ));
    ms_tokens(&env);
    let run = env.run(&["doctor"]);
    // A warning (and the granted-scope warning) only: exit 0.
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert!(
        run.stdout.contains(
            "warning [work]: scope `https://outlook.office365.com/.default` is an app-only"
        ),
        "{}",
        run.all()
    );
}

#[test]
fn doctor_flags_a_refresh_token_near_or_past_microsofts_90_days() {
    for (days, level, code) in [(80u64, "warning", 0), (95, "error", 1)] {
        let (port, _seen) = clock_server(0);
        let env = TestEnv::with_store();
        env.write_config(&doctor_account(port, ""));
        ms_tokens(&env);
        let old = SystemTime::now() - Duration::from_secs(days * 86_400);
        std::fs::File::options()
            .write(true)
            .open(env.token_path("work"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let run = env.run(&["doctor"]);
        assert_eq!(run.code, Some(code), "{}", run.all());
        let what = format!("{level} [work]: the refresh token was last used {days} days ago");
        assert!(run.stdout.contains(&what), "{}", run.all());
    }
}

#[test]
fn doctor_reports_a_damaged_token_file_and_leaves_it() {
    let (port, _seen) = clock_server(0);
    let env = TestEnv::with_store();
    env.write_config(&doctor_account(port, ""));
    std::fs::write(env.token_path("work"), b"{not json").unwrap();
    std::fs::set_permissions(
        env.token_path("work"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let run = env.run(&["doctor"]);
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(run.stdout.contains("is damaged"), "{}", run.all());
    assert_eq!(std::fs::read(env.token_path("work")).unwrap(), b"{not json");
}

// ---------------------------------------------------------------------------
// Hostile servers
// ---------------------------------------------------------------------------

#[test]
fn an_smtp_line_without_end_is_cut_off_not_buffered() {
    // 4 MiB of greeting and no line end: the reader must stop at its line limit.
    let mut flood = b"220 ".to_vec();
    flood.extend(std::iter::repeat_n(b'x', 4 << 20));
    let (port, seen) = raw_server(flood);
    let env = env_with(&smtp_account(port, "none"));
    let run = env.run(&["check", "work", "--smtp"]);
    let _ = seen.wait();
    assert_eq!(run.code, Some(4), "{}", run.all());
    assert!(run.stderr.contains("over-long line"), "{}", run.all());
    run.assert_no_secrets();
}

#[test]
fn a_non_ascii_imap_greeting_is_an_error_not_a_crash() {
    let (port, seen) = raw_server("* OK aéééé [CAPABILITY ééé\r\n".as_bytes().to_vec());
    let env = env_with(&imap_account(port));
    let run = env.run(&["check", "work", "--imap"]);
    let _ = seen.wait();
    assert_eq!(run.code, Some(4), "{}", run.all());
    assert!(!run.stderr.contains("panicked"), "{}", run.all());
}

#[test]
fn escape_sequences_from_a_server_are_shown_not_obeyed() {
    let (port, seen) = raw_server(b"220 \x1b[2J\x1b]0;owned\x07 ready\r\n".to_vec());
    let env = env_with(&smtp_account(port, "none"));
    let run = env.run(&["check", "work", "--smtp"]);
    let _ = seen.wait();
    assert!(!run.stderr.contains('\x1b'), "{:?}", run.stderr);
    assert!(run.stderr.contains("\\u{1b}[2J"), "{}", run.all());
}

/// What breaks `token` or `proxy`, found by doctor: a placeholder client id, a lock file of
/// another user, a data directory that cannot be written, a proxy listener on the network
/// without TLS and a password. And no warning for short-lived tokens, which are handled.
#[test]
fn doctor_finds_what_breaks_token_and_the_proxy() {
    let (port, _seen) = clock_server(0);
    let env = TestEnv::with_store();
    env.write_config(&format!(
        "[proxy]\nimap = \"0.0.0.0:1143\"\nsmtp = \"localhost:x\"\n\n{}",
        doctor_account(port, "").replace("client_id = \"id\"", "client_id = \"YOUR-APP-ID\"")
    ));
    env.write_token_bytes("work", serde_json::json!({
            "version": 1, "access_token": TOKEN, "token_type": "Bearer",
            "obtained_at": 1_000, "expires_at": 1_300, "refresh_token": REFRESH,
            "scope": "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send",
        }).to_string().as_bytes());
    let lock = env.data.join("work.lock");
    std::fs::write(&lock, "").unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let immutable = root
        && std::process::Command::new("chattr")
            .arg("+i")
            .arg(&env.data)
            .status()
            .is_ok_and(|s| s.success());
    if root {
        let ok = std::process::Command::new("chown")
            .arg("65534")
            .arg(&lock)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    let run = env.run(&["doctor"]);
    if immutable {
        std::process::Command::new("chattr")
            .arg("-i")
            .arg(&env.data)
            .status()
            .unwrap();
    }
    let out = run.all();
    // Exit 2: among the errors, settings that cannot work as written.
    assert_eq!(run.code, Some(2), "{out}");
    assert!(
        out.contains("client_id is the example's placeholder `YOUR-APP-ID`"),
        "{out}"
    );
    assert!(
        out.contains("[proxy] imap = \"0.0.0.0:1143\" listens off this machine without local TLS"),
        "{out}"
    );
    assert!(
        out.contains("[proxy] smtp = \"localhost:x\" is not an address"),
        "{out}"
    );
    assert!(!out.contains("refresh_margin"), "a false warning: {out}");
    if root {
        assert!(
            out.contains(&format!(
                "the lock file {} belongs to uid 65534",
                lock.display()
            )),
            "{out}"
        );
    }
    if immutable {
        assert!(
            out.contains(&format!(
                "the token store {} cannot be written",
                env.data.display()
            )),
            "{out}"
        );
    }
}

/// Every row of the README's exit-code table, by a command a person runs: 0 a cached token;
/// 1 a corrupt token store; 2 a bad flag, a bad config, and an untrusted certificate for one
/// check and for two (the summary of several checks keeps the code); 3 no stored login; 4 a
/// token server that refuses connections, and two mail servers that do.
#[test]
fn every_row_of_the_exit_code_table() {
    let table = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for row in [
        "| 0 | success",
        "| 1 | other failure",
        "| 2 | usage or configuration error (including a server certificate that is not trusted here)",
        "| 3 | a new login is needed",
        "| 4 | network or server trouble",
    ] {
        assert!(table.contains(row), "the README's table changed: {row}");
    }
    let untrusted = |services: &[&str]| {
        let mut keys = String::new();
        for service in services {
            let (plain, _) = imap_server(xoauth2(USER, TOKEN), true);
            keys.push_str(&format!(
                "{service}_host = \"localhost\"\n{service}_port = {}\n{service}_tls = \"tls\"\n",
                tls_front(plain)
            ));
        }
        env_with(&account_toml("work", &nowhere(), &keys))
    };
    let down = |services: &[&str]| {
        let keys: String = services
            .iter()
            .map(|s| {
                format!(
                    "{s}_host = \"127.0.0.1\"\n{s}_port = {}\n{s}_tls = \"none\"\n",
                    closed_port()
                )
            })
            .collect();
        env_with(&account_toml("work", &nowhere(), &keys))
    };
    let plain = || env_with(&account_toml("work", &nowhere(), ""));
    let cases: Vec<(i32, &str, TestEnv, Vec<&str>)> = vec![
        (0, "a cached token", plain(), vec!["token", "work"]),
        (
            1,
            "a corrupt token store",
            {
                let env = plain();
                std::fs::write(env.token_path("work"), "{ not json").unwrap();
                env
            },
            vec!["token", "work"],
        ),
        (
            2,
            "a bad flag",
            plain(),
            vec!["token", "work", "--format", "nope"],
        ),
        (
            2,
            "a config that does not load",
            {
                let env = TestEnv::with_store();
                env.write_config("refresh_margin = \"soon\"\n");
                env
            },
            vec!["token", "work"],
        ),
        (
            2,
            "an untrusted certificate, one check",
            untrusted(&["imap"]),
            vec!["check", "work", "--imap"],
        ),
        (
            2,
            "an untrusted certificate, two checks",
            untrusted(&["imap", "smtp"]),
            vec!["check", "work", "--imap", "--smtp"],
        ),
        (
            3,
            "no stored login",
            {
                let env = plain();
                std::fs::remove_file(env.token_path("work")).unwrap();
                env
            },
            vec!["token", "work"],
        ),
        (
            4,
            "a token server that refuses connections",
            {
                let env = plain();
                env.write_token_bytes("work", serde_json::json!({"version": 1, "access_token": "old", "token_type": "Bearer", "expires_at": 1, "refresh_token": REFRESH}).to_string().as_bytes());
                env
            },
            vec!["token", "work"],
        ),
        (
            4,
            "two mail servers that refuse connections",
            down(&["imap", "smtp"]),
            vec!["check", "work", "--imap", "--smtp"],
        ),
    ];
    for (code, what, env, args) in cases {
        let run = env.run(&args);
        assert_eq!(run.code, Some(code), "{what}: {}", run.all());
        if code != 0 {
            assert!(run.stdout.is_empty(), "{what}: {}", run.all());
            assert!(
                run.stderr.starts_with("mailtoken: ")
                    || run.stderr.contains("\nmailtoken: ")
                    || run.stderr.contains("error:"),
                "{what}: {}",
                run.all()
            );
        }
    }
}
