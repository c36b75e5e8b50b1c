//! Microsoft Graph's `send-test` and `whoami` (Graph, JWT claims, OIDC userinfo) against fake
//! HTTP servers on 127.0.0.1, with a stored far-future login.

use crate::support::env::*;
use crate::support::mail_servers::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The test message, sent through Graph.
const SEND_BY_GRAPH: [&str; 6] = [
    "send-test",
    "work",
    "--via",
    "graph",
    "--to",
    "bob@example.com",
];

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
    let run = env.run(&[&SEND_BY_GRAPH[..], &["--subject", "Graph test"]].concat());
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
    run.assert_stderr_has("HTTP 202");
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
    let run = env.run(&SEND_BY_GRAPH);
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
    let run = env.run(&SEND_BY_GRAPH);
    let _ = seen.wait();
    assert_eq!(run.code, Some(1), "{}", run.all());
    run.assert_stderr_has("HTTP 403 ErrorAccessDenied");
    run.assert_stderr_has("Mail.Send");
    run.assert_no_secrets();
}

#[test]
fn graph_without_a_graph_scope_says_what_to_add() {
    let env = TestEnv::logged_in(&account_toml("work", &nowhere(), ""));
    let run = env.run(&SEND_BY_GRAPH);
    assert_eq!(run.code, Some(2), "{}", run.all());
    run.assert_stderr_has("[accounts.work.resources]");
}

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
    run.assert_stdout_has("mallory@example.com");
    run.assert_stdout_has("Mallory");
    run.assert_stdout_has("but the account's `user` is alice@example.com");
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
    run.assert_stdout_has("alice@example.com");
    run.assert_stdout_has("IMAP.AccessAsUser.All SMTP.Send");
    run.assert_stdout_has("2100-01-01 00:00:00 UTC");
    run.assert_stdout_lacks("but the account");
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
    let env = TestEnv::logged_in(&account_toml(
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
    run.assert_stdout_has("email");
    run.assert_no_secrets();
}

/// A generic account with an `issuer`: the userinfo endpoint comes from discovery; a 403
/// insufficient_scope gets the fix of the account's own scopes, not a Graph permission.
#[test]
fn whoami_finds_userinfo_by_discovery_and_explains_a_missing_scope() {
    use crate::support::oauth_server::{FakeServer, Fault, Kind};
    let server = FakeServer::start();
    let env = TestEnv::with_extra(&server, "", &format!("issuer = \"{}\"", server.base_url()));
    env.write_token(ACCOUNT, "opaque-at", "rt", FAR_FUTURE);
    let run = Running::spawn(env.command(&["whoami", ACCOUNT]), "whoami".into()).wait(RUN_TIMEOUT);
    assert_eq!(run.code, Some(0), "{}", run.all());
    run.assert_stdout_has(&format!("{}/userinfo", server.base_url()));
    run.assert_stdout_has(USER);

    server.set_fault(
        Kind::Userinfo,
        Fault::json(
            403,
            r#"{"error":"insufficient_scope","error_description":"openid is needed"}"#,
        ),
    );
    let run = Running::spawn(env.command(&["whoami", ACCOUNT]), "whoami".into()).wait(RUN_TIMEOUT);
    assert_eq!(run.code, Some(1), "{}", run.all());
    run.assert_stderr_has("insufficient_scope");
    run.assert_stderr_has("\"openid\"");
    run.assert_stderr_lacks("Mail.Send");
    run.assert_stderr_lacks("Graph");
}

#[test]
fn whoami_with_an_opaque_token_and_no_lookup_says_so() {
    let env = TestEnv::logged_in(&account_toml("work", &nowhere(), ""));
    let run = env.run(&["whoami", "work"]);
    assert_eq!(run.code, Some(1), "{}", run.all());
    run.assert_stderr_has("cannot tell who the token belongs to");
    run.assert_no_secrets();
}

/// Scopes that already hold "openid" and "email": the advice is about the endpoint only.
#[test]
fn whoami_advises_only_the_scopes_that_are_missing() {
    let config = account_toml("work", &nowhere(), "").replace(
        "scopes = [\"mail\", \"offline_access\"]",
        "scopes = [\"openid\", \"email\", \"mail\", \"offline_access\"]",
    );
    let env = TestEnv::logged_in(&config);
    let run = env.run(&["whoami", "work"]);
    assert_eq!(run.code, Some(1), "{}", run.all());
    run.assert_stderr_has("set `userinfo_endpoint`");
    run.assert_stderr_lacks("\"openid\"");
    run.assert_stderr_lacks("\"email\"");

    let env = TestEnv::logged_in(&account_toml("work", &nowhere(), ""));
    let run = env.run(&["whoami", "work"]);
    run.assert_stderr_has("add \"openid\" and \"email\" to `scopes`");
}

/// A Gmail account as the README sets it up (the mail scope alone, an opaque token): the
/// Gmail API's profile names the mailbox.
#[test]
fn whoami_of_a_gmail_account_with_the_mail_scope_only_asks_the_gmail_profile() {
    let (port, seen) = http_server(
        200,
        vec![],
        r#"{"emailAddress":"bob@gmail.com","messagesTotal":3,"threadsTotal":2,"historyId":"9"}"#
            .into(),
    );
    let env = TestEnv::with_store();
    env.write_config(&format!(
        "[accounts.gmail]\nprovider = \"google\"\nuser = \"bob@gmail.com\"\nclient_id = \"id\"\n\
         token_endpoint = \"{}/token\"\ngmail_url = \"http://127.0.0.1:{port}\"\n",
        nowhere()
    ));
    env.write_token_bytes(
        "gmail",
        serde_json::json!({
            "version": 1, "access_token": TOKEN, "token_type": "Bearer",
            "expires_at": FAR_FUTURE, "refresh_token": REFRESH,
            "scope": "https://mail.google.com/",
        })
        .to_string()
        .as_bytes(),
    );
    let run = env.run(&["whoami", "gmail"]);
    let req = seen.wait();
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(req.target, "/gmail/v1/users/me/profile");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    run.assert_stdout_has("Gmail API");
    run.assert_stdout_has("bob@gmail.com");
    run.assert_stdout_lacks("note:");
    run.assert_no_secrets();
}
