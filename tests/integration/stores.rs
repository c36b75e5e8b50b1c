//! The token store backends other than the file: user commands and the OS keyring. The lock
//! file stays in the data directory, so one process refreshes while the others wait.

use std::thread::sleep;
use std::time::Duration;

use crate::support::env::*;
use crate::support::oauth_server::*;

/// Log in, reuse the cached token, then let 16 callers meet an expired token at once: one
/// refresh, one token for all, the rotated refresh token stored in the backend.
fn exercise_backend(env: &TestEnv, server: &FakeServer, read_back: impl Fn() -> Option<String>) {
    server.push_polls(&[Poll::Success]);
    server.set_lifetime(4);
    env.run(&["login", ACCOUNT]).expect_code(0);
    assert!(
        env.token_bytes(ACCOUNT).is_none(),
        "no token file when another store is used"
    );
    let stored = read_back().expect("the backend holds the tokens after login");
    let login_rt = serde_json::from_str::<serde_json::Value>(&stored).unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();

    let first = env.run(&["token", ACCOUNT]);
    first.expect_code(0);
    assert_eq!(server.count(Kind::Refresh), 0, "cached token reused");

    sleep(Duration::from_millis(4_500));
    server.set_refresh_delay_ms(300);
    let callers: Vec<Running> = (0..16).map(|_| env.spawn(&["token", ACCOUNT])).collect();
    let outputs: Vec<RunResult> = callers.into_iter().map(|c| c.wait(RUN_TIMEOUT)).collect();
    for out in &outputs {
        out.expect_code(0);
        assert_eq!(out.stdout, outputs[0].stdout);
    }
    assert_ne!(outputs[0].stdout, first.stdout);
    assert_eq!(server.count(Kind::Refresh), 1, "exactly one refresh");
    assert!(server.was_revoked(&login_rt));
    let after: serde_json::Value = serde_json::from_str(&read_back().unwrap()).unwrap();
    assert_ne!(after["refresh_token"], login_rt.as_str());
    assert!(server.is_valid_refresh_token(after["refresh_token"].as_str().unwrap()));

    let status = env.run(&["status", ACCOUNT]);
    status.assert_stdout_has("logged in:     yes");
    env.run(&["logout", ACCOUNT]).expect_code(0);
    assert!(read_back().is_none_or(|s| s.trim().is_empty()));
    env.run(&["token", ACCOUNT]).expect_code(3);
}

#[test]
fn command_store_keeps_tokens_where_the_commands_say() {
    let server = FakeServer::start();
    let vault = tempfile::tempdir().unwrap();
    let file = vault.path().join("work.json");
    let f = file.display();
    let env = TestEnv::with_extra(
        &server,
        "refresh_margin = 0\n",
        &format!(
            "store = \"command\"\n\
             store_load_command = \"cat {f} 2>/dev/null || true\"\n\
             store_save_command = \"cat > {f}.tmp && mv {f}.tmp {f}\"\n\
             store_erase_command = \"rm -f {f}\"\n"
        ),
    );
    exercise_backend(&env, &server, || std::fs::read_to_string(&file).ok());
}

#[test]
fn store_commands_without_store_command_are_a_config_error() {
    let env = TestEnv::with_config_text(
        "[accounts.work]\nprovider = \"google\"\nclient_id = \"x\"\nstore_load_command = \"cat f\"\n",
    );
    let out = env.run(&["status"]);
    out.expect_code(2);
    out.assert_stderr_has("store = \"command\"");
}

/// Needs a Secret Service on the session bus: `bash tests/keyring.sh` runs it inside
/// `dbus-run-session` with an unlocked GNOME Keyring, as CI does.
#[test]
#[ignore = "needs a Secret Service; run by tests/keyring.sh"]
fn keyring_store_against_a_real_secret_service() {
    let server = FakeServer::start();
    let env = TestEnv::with_extra(&server, "refresh_margin = 0\n", "store = \"keyring\"\n");
    let lookup = || {
        let out = std::process::Command::new("secret-tool")
            .args(["lookup", "service", "mailtoken", "username", ACCOUNT])
            .output()
            .expect("secret-tool (libsecret-tools) is installed by tests/keyring.sh");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    exercise_backend(&env, &server, lookup);
}
