//! `mailtoken token` with a stored login: the cached token, refreshes (rotating or not, when
//! due, forced, with a client secret), what a refresh records and tells, and 32 callers at once.

use crate::support::env::*;
use crate::support::oauth_server::*;

#[track_caller]
fn assert_refresh_form(r: &Recorded, rt: &str) {
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/token");
    assert_eq!(r.param("grant_type"), Some("refresh_token"));
    assert_eq!(r.param("refresh_token"), Some(rt));
    assert_eq!(r.param("client_id"), Some(CLIENT_ID));
    assert_eq!(r.param("scope"), Some(SCOPE));
    assert_eq!(r.param("client_secret"), None, "no secret is configured");
}

/// An `issuer` account fetches the discovery document once a day, not at every refresh; a
/// failure at the token server makes the next refresh fetch it again.
#[test]
fn the_discovery_document_is_kept_and_fetched_again_after_a_failure() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Keep);
    server.add_refresh_token("rt-disc");
    // No token endpoint in the account: it comes from discovery.
    let env = TestEnv::with_config_text(&format!(
        "[accounts.{ACCOUNT}]\nprovider = \"generic\"\nuser = \"{USER}\"\n\
         client_id = \"{CLIENT_ID}\"\nissuer = \"{}\"\nscopes = [\"mail\", \"offline_access\"]\n",
        server.base_url()
    ));
    env.write_token(ACCOUNT, "at-disc", "rt-disc", now_unix() - 5);
    for _ in 0..3 {
        env.run(&["token", ACCOUNT, "--force-refresh"])
            .expect_code(0);
    }
    assert_eq!(server.count(Kind::Refresh), 3);
    assert_eq!(
        server.count(Kind::Discovery),
        1,
        "the document was fetched again"
    );
    let kept = env.data.join(format!("{ACCOUNT}.discovery.json"));
    assert_eq!(mode_of(&kept), 0o600);

    server.set_fault(
        Kind::Refresh,
        Fault::json(503, r#"{"error":"temporarily_unavailable"}"#),
    );
    env.run(&["token", ACCOUNT, "--force-refresh"])
        .expect_code(4);
    server.clear_fault(Kind::Refresh);
    env.run(&["token", ACCOUNT, "--force-refresh"])
        .expect_code(0);
    assert_eq!(
        server.count(Kind::Discovery),
        2,
        "not fetched again after the failure"
    );
}

/// The store keeps when the refresh token was given and last used; `status` shows both.
#[test]
fn a_refresh_records_when_the_refresh_token_was_given_and_used() {
    let server = FakeServer::start();
    server.add_refresh_token("rt-age");
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-age", "rt-age", now_unix() - 5);
    let before = now_unix();
    env.run(&["token", ACCOUNT]).expect_code(0);
    let stored = env.read_token_json(ACCOUNT);
    for key in ["refresh_token_at", "refreshed_at"] {
        let at = stored[key]
            .as_i64()
            .unwrap_or_else(|| panic!("no {key}: {stored}"));
        assert!(at >= before && at <= now_unix(), "{key} = {at}");
    }
    let status = env.run(&["status", ACCOUNT]);
    status.expect_code(0);
    // Just now: seconds ago, whatever the machine's load.
    status
        .assert_stdout_has("received ")
        .assert_stdout_has(" s ago");
}

/// A login that died (the provider refused the refresh token) runs `notify_command` with the
/// account, its user and the reason in its environment, its output kept off our stdout; the
/// next failure within the hour does not run it again.
#[test]
fn notify_command_tells_once_an_hour_that_a_login_died() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::InvalidGrant);
    server.add_refresh_token("rt-dead");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("notified");
    let env = TestEnv::with_extra(
        &server,
        &format!(
            "notify_command = \"echo to-stdout; printf '%s|%s|%s|%s\\\\n' \\\"$MAILTOKEN_ACCOUNT\\\" \\\"$MAILTOKEN_USER\\\" \\\"$MAILTOKEN_FIX\\\" \\\"$MAILTOKEN_REASON\\\" >> {}\"",
            log.display()
        ),
        "",
    );
    env.write_token(ACCOUNT, "at-dead", "rt-dead", now_unix() - 5);
    for first in [true, false] {
        let r = env.run(&["token", ACCOUNT]);
        r.expect_code(3);
        assert_eq!(r.stdout, "", "the command's output reached stdout");
        // Its output goes to stderr; the second time it is not run at all.
        assert_eq!(r.stderr.contains("to-stdout"), first, "{}", r.stderr);
    }
    let lines = std::fs::read_to_string(&log).expect("notify_command did not run");
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let fields: Vec<&str> = lines[0].splitn(4, '|').collect();
    assert_eq!(
        fields[..3],
        [ACCOUNT, USER, &format!("mailtoken login {ACCOUNT}")[..]]
    );
    assert!(!fields[3].is_empty(), "{lines:?}");
    assert!(!lines[0].contains("rt-dead"), "{lines:?}");
}

/// A token server that says the refresh token ends in 5 hours (Google's
/// `refresh_token_expires_in`): the refresh stores that end, `notify_command` is told with
/// the event `login-ending` after the new token is stored, and `status` shows the end. An end
/// 30 days away is not news.
#[test]
fn a_refresh_token_end_said_by_the_server_is_kept_and_told() {
    for (days_left, told) in [(0, true), (30, false)] {
        let server = FakeServer::start();
        server.set_refresh(Refresh::Keep);
        let left = if days_left == 0 {
            5 * 3600
        } else {
            days_left * 86_400
        };
        server.set_reply_field("refresh_token_expires_in", serde_json::json!(left));
        server.add_refresh_token("rt-ending");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("notified");
        let env = TestEnv::with_extra(
            &server,
            &format!(
                "notify_command = 'echo \"$MAILTOKEN_EVENT|$MAILTOKEN_REASON\" >> {}'",
                log.display()
            ),
            "",
        );
        env.write_token(ACCOUNT, "at-old", "rt-ending", now_unix() - 5);
        let before = now_unix();
        let r = env.run(&["token", ACCOUNT]);
        r.expect_code(0);
        assert!(r.stdout.starts_with("fake-at-"), "{}", r.all());
        let stored = env.read_token_json(ACCOUNT);
        let ends = stored["refresh_token_ends_at"]
            .as_i64()
            .expect("end stored");
        assert!(
            ends >= before + left && ends <= now_unix() + left,
            "{stored}"
        );
        let lines = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(!lines.is_empty(), told, "{lines}");
        if told {
            assert!(
                lines.starts_with("login-ending|the login ends in 4 h 59 min")
                    || lines.starts_with("login-ending|the login ends in 5 h 0 min"),
                "{lines}"
            );
            assert!(lines.contains("as the token server said"), "{lines}");
        }
        let status = env.run(&["status", ACCOUNT]);
        status
            .assert_stdout_has("the login ends ")
            .assert_stdout_has("as the token server said");
    }
}

/// A refresh that takes a while tells a person at a terminal what it waits for; the same run
/// with stderr not a terminal (a mail program) prints no such line.
#[test]
fn a_slow_refresh_says_what_it_waits_for_at_a_terminal_only() {
    let server = FakeServer::start();
    server.set_refresh_delay_ms(1500);
    server.add_refresh_token("rt-slow");
    let env = TestEnv::new(&server);
    let waiting = format!("waiting for 127.0.0.1:{}", server.port());
    env.write_token(ACCOUNT, "at-slow", "rt-slow", now_unix() - 5);
    let piped = env.run(&["token", ACCOUNT]);
    piped.expect_code(0);
    piped.assert_stderr_lacks(&waiting);
    // script(1) gives the command a terminal.
    env.write_token(ACCOUNT, "at-slow", "fake-rt-1", now_unix() - 5);
    let line = env
        .command(&["token", ACCOUNT])
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &format!("{} {line}", bin()), "/dev/null"]);
    let tty = Running::spawn(cmd, "token at a terminal".into()).wait(RUN_TIMEOUT);
    assert_eq!(tty.code, Some(0), "{}", tty.all());
    tty.assert_stdout_has(&waiting);
}

#[test]
fn token_cached_makes_zero_requests() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    let bytes = env.write_token(ACCOUNT, "at-cached-7f3a", "rt-cached-91bc", FAR_FUTURE);
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(0);
    assert_eq!(r.stdout, "at-cached-7f3a\n");
    r.assert_no_leak_on_stderr(&["at-cached-7f3a", "rt-cached-91bc"]);
    assert_eq!(server.total(), 0, "cached token must not hit the network");
    assert_eq!(env.token_bytes(ACCOUNT).unwrap(), bytes);

    // Same with an explicit --format raw.
    let r = env.run(&["token", ACCOUNT, "--format", "raw"]);
    r.expect_code(0);
    assert_eq!(r.stdout, "at-cached-7f3a\n");
    assert_eq!(server.total(), 0);
}

#[test]
fn token_env_vars_select_config_and_data_dir() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-env-3c1d", "rt-env-x", FAR_FUTURE);
    let r = env.run_with_env_vars(&["token", ACCOUNT]);
    r.expect_code(0);
    assert_eq!(r.stdout, "at-env-3c1d\n");
    assert_eq!(server.total(), 0);
}

#[test]
fn token_refresh_with_rotation() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Rotate);
    server.add_refresh_token("rt-seed-rot");
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-old-rot", "rt-seed-rot", now_unix() - 60);

    let before = now_unix();
    let r = env.run(&["token", ACCOUNT]);
    let after = now_unix();
    r.expect_code(0);
    assert_eq!(r.stdout, "fake-at-1\n");
    r.assert_no_leak_on_stderr(&["rt-seed-rot", "fake-rt-1", "fake-at-1"]);
    let reqs = server.requests_of(Kind::Refresh);
    assert_eq!(reqs.len(), 1);
    assert_refresh_form(&reqs[0], "rt-seed-rot");
    assert_eq!(server.total(), 1);

    assert!(server.was_revoked("rt-seed-rot"));
    let tok = env.read_token_json(ACCOUNT);
    assert_eq!(tok["access_token"], "fake-at-1");
    assert_eq!(tok["refresh_token"], "fake-rt-1", "rotated token stored");
    assert_eq!(tok["version"], 1);
    let exp = tok["expires_at"].as_i64().expect("expires_at integer");
    assert!(exp >= before + 3600 - 2 && exp <= after + 3600 + 2, "{exp}");
    assert_eq!(mode_of(&env.token_path(ACCOUNT)), 0o600);
    assert!(env.stray_files().is_empty(), "{:?}", env.stray_files());

    // Next refresh must use the rotated token (the old one is revoked).
    let r = env.run(&["token", ACCOUNT, "--force-refresh"]);
    r.expect_code(0);
    assert_eq!(r.stdout, "fake-at-2\n");
    let reqs = server.requests_of(Kind::Refresh);
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].param("refresh_token"), Some("fake-rt-1"));
    assert_eq!(env.read_token_json(ACCOUNT)["refresh_token"], "fake-rt-2");
}

#[test]
fn token_refresh_without_rotation_keeps_refresh_token() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Keep);
    server.set_lifetime(1800);
    server.add_refresh_token("rt-seed-keep");
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-old-keep", "rt-seed-keep", now_unix() - 5);

    let before = now_unix();
    let r = env.run(&["token", ACCOUNT]);
    let after = now_unix();
    r.expect_code(0);
    assert_eq!(r.stdout, "fake-at-1\n");
    assert_eq!(server.count(Kind::Refresh), 1);
    assert_refresh_form(&server.requests_of(Kind::Refresh)[0], "rt-seed-keep");
    let tok = env.read_token_json(ACCOUNT);
    assert_eq!(tok["access_token"], "fake-at-1");
    assert_eq!(
        tok["refresh_token"], "rt-seed-keep",
        "old refresh token must be kept"
    );
    let exp = tok["expires_at"].as_i64().expect("expires_at integer");
    assert!(exp >= before + 1800 - 2 && exp <= after + 1800 + 2, "{exp}");

    // Now fresh: cached, no new request.
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(0);
    assert_eq!(r.stdout, "fake-at-1\n");
    assert_eq!(server.total(), 1);
}

#[test]
fn token_refresh_expires_in_as_string() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Keep);
    server.set_expires_in_as_string(true);
    server.set_lifetime(3599);
    server.add_refresh_token("rt-seed-str");
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-old-str", "rt-seed-str", now_unix() - 5);

    let before = now_unix();
    let r = env.run(&["token", ACCOUNT]);
    let after = now_unix();
    r.expect_code(0);
    assert_eq!(r.stdout, "fake-at-1\n");
    let exp = env.read_token_json(ACCOUNT)["expires_at"]
        .as_i64()
        .expect("expires_at stored as an integer");
    assert!(exp >= before + 3599 - 2 && exp <= after + 3599 + 2, "{exp}");
}

#[test]
fn token_force_refresh_refreshes_fresh_token() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Keep);
    server.add_refresh_token("rt-seed-force");
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-fresh-force", "rt-seed-force", FAR_FUTURE);

    let r = env.run(&["token", ACCOUNT, "--force-refresh"]);
    r.expect_code(0);
    assert_eq!(r.stdout, "fake-at-1\n");
    assert_eq!(server.count(Kind::Refresh), 1);
    assert_refresh_form(&server.requests_of(Kind::Refresh)[0], "rt-seed-force");
    assert_eq!(env.read_token_json(ACCOUNT)["access_token"], "fake-at-1");
}

#[test]
fn refresh_margin_default_global_and_per_account() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Keep);
    server.add_refresh_token("rt-m");

    // Default margin 300: 200 s left -> refresh.
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-m-200", "rt-m", now_unix() + 200);
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(0);
    assert_eq!(r.stdout, "fake-at-1\n", "200 s left < default margin 300 s");
    assert_eq!(server.count(Kind::Refresh), 1);

    // Default margin 300: 1000 s left -> cached.
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-m-1000", "rt-m", now_unix() + 1000);
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(0);
    assert_eq!(r.stdout, "at-m-1000\n");
    assert_eq!(server.count(Kind::Refresh), 1);

    // Global margin 100: 200 s left -> cached.
    let env = TestEnv::with_extra(&server, "refresh_margin = 100", "");
    env.write_token(ACCOUNT, "at-m-g", "rt-m", now_unix() + 200);
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(0);
    assert_eq!(r.stdout, "at-m-g\n", "global refresh_margin = 100 ignored");
    assert_eq!(server.count(Kind::Refresh), 1);

    // Per-account margin 2000 overrides global 100: 1000 s left -> refresh.
    let env = TestEnv::with_extra(&server, "refresh_margin = 100", "refresh_margin = 2000");
    env.write_token(ACCOUNT, "at-m-acct", "rt-m", now_unix() + 1000);
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(0);
    assert_eq!(
        r.stdout, "fake-at-2\n",
        "per-account refresh_margin = 2000 ignored"
    );
    assert_eq!(server.count(Kind::Refresh), 2);
}

#[test]
fn client_secret_env_is_sent_on_refresh() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Keep);
    server.add_refresh_token("rt-sec");
    let env = TestEnv::with_extra(&server, "", "client_secret_env = \"MT_IT_SECRET\"");
    env.write_token(ACCOUNT, "at-sec-old", "rt-sec", now_unix() - 5);
    let mut cmd = env.command(&["token", ACCOUNT]);
    cmd.env("MT_IT_SECRET", "s3cr3t-from-env");
    let r = Running::spawn(cmd, "token with secret".into()).wait(RUN_TIMEOUT);
    r.expect_code(0);
    assert_eq!(r.stdout, "fake-at-1\n");
    let reqs = server.requests_of(Kind::Refresh);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].param("client_secret"), Some("s3cr3t-from-env"));
    r.assert_no_leak(&["s3cr3t-from-env", "rt-sec"]);
}

/// client_secret_basic: the id and secret in an Authorization header, none in the form; set
/// in the account, or taken from a discovery document that offers only that.
#[test]
fn client_secret_basic_when_configured_or_the_only_method_offered() {
    for (setting, offered) in [
        (
            "token_endpoint_auth_method = \"client_secret_basic\"\n",
            &[][..],
        ),
        ("", &["client_secret_basic"][..]),
    ] {
        let server = FakeServer::start();
        server.set_refresh(Refresh::Keep);
        server.add_refresh_token("rt-basic");
        server.set_auth_methods(offered);
        let env = TestEnv::with_extra(
            &server,
            "",
            &format!(
                "client_secret_env = \"MT_IT_SECRET\"\nissuer = \"{}\"\n{setting}",
                server.base_url()
            ),
        );
        env.write_token(ACCOUNT, "at-basic-old", "rt-basic", now_unix() - 5);
        let mut cmd = env.command(&["token", ACCOUNT]);
        cmd.env("MT_IT_SECRET", "s3cr3t:with/odd&chars");
        let r = Running::spawn(cmd, "token, secret by Basic".into()).wait(RUN_TIMEOUT);
        r.expect_code(0);
        let reqs = server.requests_of(Kind::Refresh);
        assert_eq!(reqs.len(), 1, "{setting:?}");
        // RFC 6749 2.3.1: each part form-urlencoded, then base64 of "id:secret".
        let expected = format!(
            "Basic {}",
            b64(b"mailtoken-test:s3cr3t%3Awith%2Fodd%26chars")
        );
        assert_eq!(
            reqs[0].header("authorization"),
            Some(expected.as_str()),
            "{setting:?}"
        );
        assert_eq!(reqs[0].param("client_secret"), None, "{setting:?}");
        assert_eq!(reqs[0].param("client_id"), None, "{setting:?}");
        r.assert_no_leak(&["s3cr3t:with/odd&chars", "rt-basic"]);
    }
    // Offered both: the form, as before (what Microsoft and Google take).
    let server = FakeServer::start();
    server.set_refresh(Refresh::Keep);
    server.add_refresh_token("rt-post");
    server.set_auth_methods(&["client_secret_basic", "client_secret_post"]);
    let env = TestEnv::with_extra(
        &server,
        "",
        &format!(
            "client_secret_env = \"MT_IT_SECRET\"\nissuer = \"{}\"\n",
            server.base_url()
        ),
    );
    env.write_token(ACCOUNT, "at-post-old", "rt-post", now_unix() - 5);
    let mut cmd = env.command(&["token", ACCOUNT]);
    cmd.env("MT_IT_SECRET", "s3cr3t-post");
    Running::spawn(cmd, "token, secret in the form".into())
        .wait(RUN_TIMEOUT)
        .expect_code(0);
    let reqs = server.requests_of(Kind::Refresh);
    assert_eq!(reqs[0].param("client_secret"), Some("s3cr3t-post"));
    assert_eq!(reqs[0].header("authorization"), None);
}

#[test]
fn parallel_32_processes_single_refresh() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Rotate);
    server.set_refresh_delay_ms(300);
    server.add_refresh_token("rt-par-seed");
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-par-old", "rt-par-seed", now_unix() - 60);

    let children: Vec<Running> = (0..32).map(|_| env.spawn(&["token", ACCOUNT])).collect();
    let results: Vec<RunResult> = children.into_iter().map(|c| c.wait(RUN_TIMEOUT)).collect();

    for (i, r) in results.iter().enumerate() {
        assert_eq!(
            r.code,
            Some(0),
            "process {i} failed\n--- stderr ---\n{}",
            r.stderr
        );
        assert_eq!(r.stdout, "fake-at-1\n", "process {i} printed another token");
    }
    assert_eq!(
        server.count(Kind::Refresh),
        1,
        "exactly one refresh request expected"
    );
    let tok = env.read_token_json(ACCOUNT);
    assert_eq!(tok["access_token"], "fake-at-1");
    assert_eq!(tok["refresh_token"], "fake-rt-1");
    assert!(env.stray_files().is_empty(), "{:?}", env.stray_files());
}
