//! `mailtoken token` when something is wrong: a refused or broken server, no login, a damaged
//! or exposed token file; each with its exit code, its message, and no secret shown.

use crate::support::env::*;
use crate::support::oauth_server::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn token_invalid_grant_exit_3_store_untouched() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::InvalidGrant);
    server.add_refresh_token("rt-ig-secret");
    let env = TestEnv::new(&server);
    let bytes = env.write_token(ACCOUNT, "at-ig-secret", "rt-ig-secret", now_unix() - 60);

    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(3);
    assert_eq!(r.stdout, "");
    r.noting("stderr should tell the user to run `mailtoken login work`")
        .assert_stderr_has("mailtoken login work");
    r.assert_no_leak(&["at-ig-secret", "rt-ig-secret"]);
    assert_eq!(server.count(Kind::Refresh), 1);
    assert_eq!(
        env.token_bytes(ACCOUNT).as_deref(),
        Some(bytes.as_slice()),
        "token file must be byte-for-byte unchanged"
    );
}

fn token_server_trouble(mode: Refresh, extra_secret: Option<&str>) {
    let server = FakeServer::start();
    server.set_refresh(mode);
    server.add_refresh_token("rt-trouble-secret");
    let env = TestEnv::new(&server);
    let bytes = env.write_token(
        ACCOUNT,
        "at-trouble-secret",
        "rt-trouble-secret",
        now_unix() - 60,
    );
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(4);
    assert_eq!(r.stdout, "");
    assert!(!r.stderr.trim().is_empty(), "expected an error message");
    r.assert_no_leak(&["at-trouble-secret", "rt-trouble-secret"]);
    if let Some(s) = extra_secret {
        r.assert_no_leak(&[s]);
    }
    assert!(server.count(Kind::Refresh) >= 1);
    assert_eq!(
        env.token_bytes(ACCOUNT).as_deref(),
        Some(bytes.as_slice()),
        "token file must be byte-for-byte unchanged"
    );
}

#[test]
fn token_server_500_exit_4() {
    token_server_trouble(Refresh::ServerError, None);
}

#[test]
fn token_html_reply_exit_4() {
    token_server_trouble(Refresh::Html, None);
}

#[test]
fn token_malformed_json_exit_4() {
    // The truncated body contains an access-token-looking value; it must not be echoed.
    token_server_trouble(
        Refresh::MalformedJson,
        Some("leaky-at-from-malformed-reply"),
    );
}

#[test]
fn token_connection_refused_exit_4() {
    let port = closed_port();
    let env = TestEnv::with_config_text(&account_toml(
        ACCOUNT,
        &format!("http://127.0.0.1:{port}"),
        "",
    ));
    let bytes = env.write_token(ACCOUNT, "at-cr-secret", "rt-cr-secret", now_unix() - 60);
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(4);
    assert_eq!(r.stdout, "");
    assert!(!r.stderr.trim().is_empty());
    r.assert_no_leak(&["at-cr-secret", "rt-cr-secret"]);
    assert_eq!(env.token_bytes(ACCOUNT).as_deref(), Some(bytes.as_slice()));
}

#[test]
fn token_server_never_answers_times_out_exit_4() {
    // The spec maps a timeout to exit 4 but does not fix its length; the run
    // helper kills the client after 60 s, so it must give up before that.
    let server = FakeServer::start();
    server.add_refresh_token("rt-slow-secret");
    server.set_refresh_delay_ms(120_000);
    let env = TestEnv::new(&server);
    let bytes = env.write_token(ACCOUNT, "at-slow-secret", "rt-slow-secret", now_unix() - 60);
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(4);
    assert_eq!(r.stdout, "");
    r.assert_no_leak(&["at-slow-secret", "rt-slow-secret"]);
    assert_eq!(server.count(Kind::Refresh), 1);
    assert_eq!(env.token_bytes(ACCOUNT).as_deref(), Some(bytes.as_slice()));
}

#[test]
fn verbose_refresh_does_not_leak_secrets() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Rotate);
    server.add_refresh_token("rt-verbose-seed");
    let env = TestEnv::new(&server);
    env.write_token(
        ACCOUNT,
        "at-verbose-old",
        "rt-verbose-seed",
        now_unix() - 60,
    );
    let r = env.run(&["--verbose", "token", ACCOUNT]);
    r.expect_code(0);
    assert_eq!(r.stdout, "fake-at-1\n");
    r.assert_no_leak_on_stderr(&[
        "at-verbose-old",
        "rt-verbose-seed",
        "fake-at-1",
        "fake-rt-1",
    ]);
}

#[test]
fn http_endpoint_on_non_loopback_host_rejected_exit_2() {
    let env = TestEnv::with_config_text(&account_toml(ACCOUNT, "http://mail.invalid", ""));
    let bytes = env.write_token(ACCOUNT, "at-nl-secret", "rt-nl-secret", now_unix() - 60);
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(2);
    assert_eq!(r.stdout, "");
    r.assert_no_leak(&["at-nl-secret", "rt-nl-secret"]);
    assert_eq!(env.token_bytes(ACCOUNT).as_deref(), Some(bytes.as_slice()));
}

#[test]
fn no_token_stored_exit_3() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(3);
    assert_eq!(r.stdout, "");
    r.noting("stderr should say to run `mailtoken login work`")
        .assert_stderr_has("mailtoken login work");
    assert_eq!(server.total(), 0);
}

fn corrupt_store(content: &[u8], secret: Option<&str>) {
    let server = FakeServer::start();
    server.add_refresh_token("rt-corrupt");
    let env = TestEnv::new(&server);
    let path = env.write_token_bytes(ACCOUNT, content);
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(1);
    assert_eq!(r.stdout, "");
    r.noting("error should name the token file")
        .assert_stderr_has("work.json");
    if let Some(s) = secret {
        r.assert_no_leak(&[s]);
    }
    assert_eq!(
        std::fs::read(&path).expect("token file must still exist"),
        content,
        "corrupt file must be left byte-for-byte untouched"
    );
    assert_eq!(server.total(), 0, "no network request with a corrupt store");
}

#[test]
fn corrupt_token_file_garbage_exit_1() {
    corrupt_store(b"\x00\xffthis is not json at all\n\x7f", None);
}

#[test]
fn corrupt_token_file_empty_exit_1() {
    corrupt_store(b"", None);
}

#[test]
fn corrupt_token_file_truncated_json_exit_1() {
    corrupt_store(
        br#"{"version":1,"access_token":"at-trunc-secret-55","token_type":"Bearer","expires_at":18934"#,
        Some("at-trunc-secret-55"),
    );
}

#[test]
fn token_file_readable_by_others_fixed_or_refused_with_warning() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-perm-1", "rt-perm-1", FAR_FUTURE);
    let path = env.token_path(ACCOUNT);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let r = env.run(&["token", ACCOUNT]);
    let err = r.stderr.to_lowercase();
    assert!(
        ["permission", "mode", "0600", "0644", "readable", "insecure"]
            .iter()
            .any(|w| err.contains(w)),
        "expected a permissions warning on stderr:\n{}",
        r.stderr
    );
    r.assert_no_leak_on_stderr(&["at-perm-1", "rt-perm-1"]);
    match r.code {
        Some(0) => {
            assert_eq!(r.stdout, "at-perm-1\n");
            assert_eq!(mode_of(&path), 0o600, "mode must be fixed to 0600");
        }
        Some(c) if c != 0 => assert_eq!(r.stdout, "", "refused run must print nothing"),
        other => panic!("killed by signal? {other:?}\n{}", r.stderr),
    }
}
