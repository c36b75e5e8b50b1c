//! `mailtoken login` with the device flow against the fake OAuth2 server: codes shown, polls
//! paced as the server asks, the outcomes of each answer, and a Ctrl-C that stores nothing.

use crate::support::env::*;
use crate::support::oauth_server::*;
use std::time::{Duration, Instant};

#[track_caller]
fn assert_gap_at_least(a: Instant, b: Instant, min: Duration, what: &str) {
    let gap = b.duration_since(a);
    assert!(gap >= min, "{what}: gap {gap:?} < {min:?}");
}

/// Someone else approved the login: the tokens are stored (the person chose them), and a
/// warning names both users at once; the right person gets no warning.
#[test]
fn a_login_as_someone_else_is_pointed_out() {
    for (who, warned) in [("bob@example.com", true), (USER, false)] {
        let server = FakeServer::start();
        server.set_interval(Some(1));
        server.push_polls(&[Poll::Success]);
        server.set_id_token_email(who);
        let env = TestEnv::new(&server);
        let r = env.run(&["login", ACCOUNT]);
        r.expect_code(0);
        assert_eq!(
            r.stderr
                .contains("warning: the token belongs to bob@example.com"),
            warned,
            "{}",
            r.stderr
        );
        assert!(env.token_path(ACCOUNT).exists());
    }
}

/// Ctrl-C while the device login waits for the person: a line that says nothing was stored,
/// exit 130 as for any interrupted command, and indeed no token file.
#[test]
fn ctrl_c_during_a_login_says_nothing_was_stored() {
    let server = FakeServer::start();
    server.set_interval(Some(1));
    server.set_poll_default(Poll::Pending);
    let env = TestEnv::new(&server);
    let login = Running::spawn(env.command(&["login", ACCOUNT]), "login".into());
    // Waiting for the person once it polls.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.count(Kind::Poll) == 0 {
        assert!(Instant::now() < deadline, "the login never polled");
        std::thread::sleep(Duration::from_millis(20));
    }
    login.signal(libc::SIGINT);
    let r = login.wait(Duration::from_secs(20));
    assert_eq!(r.code, Some(130), "{}", r.all());
    r.assert_stderr_has("login cancelled; nothing was stored");
    assert!(!env.token_path(ACCOUNT).exists());
}

#[test]
fn login_device_flow_success() {
    let server = FakeServer::start();
    server.set_interval(Some(1));
    server.push_polls(&[Poll::Pending, Poll::Success]);
    let env = TestEnv::new(&server);
    assert!(!env.data.exists());

    let before = now_unix();
    let r = env.run(&["login", ACCOUNT]);
    let after = now_unix();
    r.expect_code(0);
    assert_eq!(r.stdout, "", "login must print nothing on stdout");
    r.assert_stderr_has(VERIFICATION_URI);
    r.assert_stderr_has(USER_CODE);
    r.assert_no_leak(&["fake-at-1", "fake-rt-1", DEVICE_CODE]);

    // Protocol.
    let dev = server.requests_of(Kind::Device);
    assert_eq!(dev.len(), 1);
    assert_eq!(dev[0].method, "POST");
    assert_eq!(dev[0].param("client_id"), Some(CLIENT_ID));
    assert_eq!(dev[0].param("scope"), Some(SCOPE));
    let polls = server.requests_of(Kind::Poll);
    assert_eq!(polls.len(), 2);
    for p in &polls {
        assert_eq!(p.param("grant_type"), Some(DEVICE_GRANT));
        assert_eq!(p.param("device_code"), Some(DEVICE_CODE));
        assert_eq!(p.param("client_id"), Some(CLIENT_ID));
    }
    assert_gap_at_least(polls[0].at, polls[1].at, Duration::from_secs(1), "interval");
    assert_eq!(server.count(Kind::Refresh), 0);

    // Store.
    let path = env.token_path(ACCOUNT);
    assert_eq!(mode_of(&path), 0o600, "token file mode");
    assert_eq!(mode_of(&env.data), 0o700, "data dir mode");
    let tok = env.read_token_json(ACCOUNT);
    assert_eq!(tok["version"], 1);
    assert_eq!(tok["access_token"], "fake-at-1");
    assert_eq!(tok["refresh_token"], "fake-rt-1");
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["scope"], SCOPE);
    let exp = tok["expires_at"]
        .as_i64()
        .expect("expires_at is an integer");
    assert!(
        exp >= before + 3600 - 2 && exp <= after + 3600 + 2,
        "expires_at {exp} not ~now+3600 ({before}..{after})"
    );
    assert!(env.stray_files().is_empty(), "{:?}", env.stray_files());

    // The stored token is then served from the cache.
    let total = server.total();
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(0);
    assert_eq!(r.stdout, "fake-at-1\n");
    assert_eq!(
        server.total(),
        total,
        "cached token must not hit the network"
    );
}

#[test]
fn login_pending_slow_down_success_backs_off() {
    let server = FakeServer::start();
    server.set_interval(Some(1));
    server.push_polls(&[Poll::Pending, Poll::SlowDown, Poll::Success]);
    let env = TestEnv::new(&server);

    let r = env.run(&["login", ACCOUNT]);
    r.expect_code(0);
    assert_eq!(r.stdout, "");
    let t = server.poll_times();
    assert_eq!(t.len(), 3, "expected exactly 3 polls");
    let before = t[1].duration_since(t[0]);
    let after = t[2].duration_since(t[1]);
    assert!(
        before >= Duration::from_secs(1),
        "gap before slow_down {before:?} < interval 1 s"
    );
    assert!(
        after >= Duration::from_secs(6),
        "gap after slow_down {after:?} < 1 s + 5 s"
    );
    // >= 5 s longer than before; 250 ms slack for scheduling jitter inflating `before`.
    assert!(
        after + Duration::from_millis(250) >= before + Duration::from_secs(5),
        "slow_down did not add 5 s: before {before:?}, after {after:?}"
    );
    assert_eq!(env.read_token_json(ACCOUNT)["access_token"], "fake-at-1");
}

#[test]
fn login_google_style_428_pending_and_verification_url() {
    let server = FakeServer::start();
    server.set_google_spelling(true);
    server.set_interval(Some(0)); // client must still wait max(0, 1) = 1 s
    server.push_polls(&[Poll::Pending428, Poll::Pending428, Poll::Success]);
    let env = TestEnv::new(&server);

    let r = env.run(&["login", ACCOUNT]);
    r.expect_code(0);
    assert_eq!(r.stdout, "");
    r.noting("verification_url not shown")
        .assert_stderr_has(VERIFICATION_URI);
    r.assert_stderr_has(USER_CODE);
    let t = server.poll_times();
    assert_eq!(t.len(), 3);
    assert_gap_at_least(t[0], t[1], Duration::from_secs(1), "interval 0 -> 1 s");
    assert_gap_at_least(t[1], t[2], Duration::from_secs(1), "interval 0 -> 1 s");
    let tok = env.read_token_json(ACCOUNT);
    assert_eq!(tok["access_token"], "fake-at-1");
    assert_eq!(tok["refresh_token"], "fake-rt-1");
}

fn login_fails_with(polls: &[Poll]) {
    let server = FakeServer::start();
    server.push_polls(polls);
    server.set_poll_default(Poll::Success); // a client that ignores the error would succeed
    let env = TestEnv::new(&server);
    let r = env.run(&["login", ACCOUNT]);
    r.expect_code(3);
    assert_eq!(r.stdout, "");
    assert_eq!(
        server.count(Kind::Poll),
        polls.len(),
        "client kept polling after a terminal error"
    );
    assert!(
        !env.token_path(ACCOUNT).exists(),
        "nothing may be stored after a failed login"
    );
}

#[test]
fn login_expired_token_exit_3() {
    login_fails_with(&[Poll::Pending, Poll::Expired]);
}

#[test]
fn login_access_denied_exit_3() {
    login_fails_with(&[Poll::Denied]);
}
