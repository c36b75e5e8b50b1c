//! The commands around the token: refresh for timers, git's credential helper, completions.

use std::io::Write;
use std::process::Stdio;

use crate::support::env::*;
use crate::support::oauth_server::*;

fn two_accounts(server: &FakeServer) -> TestEnv {
    TestEnv::with_config_text(&format!(
        "{}\n{}",
        account_toml("work", &server.base_url(), ""),
        account_toml("home", &server.base_url(), "user = \"bob@example.com\"")
            .replace(&format!("user = \"{USER}\"\n"), "")
    ))
}

#[test]
fn refresh_all_renews_every_login_and_names_those_needing_a_person() {
    let server = FakeServer::start();
    let env = two_accounts(&server);
    env.write_token("work", "old-at", "fake-rt-seed", now_unix() + 3600);
    server.add_refresh_token("fake-rt-seed");
    // `home` never logged in.
    let out = env.run(&["refresh", "--all"]);
    out.expect_code(3);
    out.assert_stderr_has("work: refreshed");
    out.assert_stderr_has("A new login is needed for: home");
    assert_eq!(
        out.stderr.matches("new login is needed").count(),
        1,
        "said once per account:\n{}",
        out.stderr
    );
    // Even a fresh access token is renewed: the point is to use the refresh token.
    assert_eq!(server.count(Kind::Refresh), 1);
    assert!(server.was_revoked("fake-rt-seed"));
    assert_ne!(env.read_token_json("work")["access_token"], "old-at");
    assert!(out.stdout.is_empty());

    env.run(&["refresh", "work"]).expect_code(0);
    assert_eq!(server.count(Kind::Refresh), 2);
    env.run(&["refresh"]).expect_code(2);
}

fn git_credential(env: &TestEnv, args: &[&str], input: &str) -> RunResult {
    let mut cmd = env.command(args);
    cmd.stdin(Stdio::piped());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    RunResult::from_output(&format!("mailtoken {}", args.join(" ")), out)
}

#[test]
fn git_credential_answers_get_with_the_token_for_the_matching_user() {
    let server = FakeServer::start();
    let env = two_accounts(&server);
    env.write_token("home", "home-at", "rt", now_unix() + 3600);
    env.write_token("work", "work-at", "rt2", now_unix() + 3600);
    let request = "protocol=smtp\nhost=smtp.example.com:587\nusername=bob@example.com\n\n";
    let out = git_credential(&env, &["git-credential", "get"], request);
    out.expect_code(0);
    assert_eq!(out.stdout, "username=bob@example.com\npassword=home-at\n");

    let named = git_credential(
        &env,
        &["git-credential", "--account", "work", "get"],
        "protocol=smtp\n\n",
    );
    assert_eq!(named.stdout, format!("username={USER}\npassword=work-at\n"));

    // Someone else's username: stay silent so git asks its next helper.
    let other = git_credential(
        &env,
        &["git-credential", "get"],
        "username=eve@example.com\n\n",
    );
    other.expect_code(0);
    assert!(other.stdout.is_empty());
    // git must never store or erase a token through us.
    let store = git_credential(&env, &["git-credential", "store"], request);
    store.expect_code(0);
    assert!(store.stdout.is_empty());
    assert_eq!(server.total(), 0);
}

#[test]
fn completions_are_generated_for_each_shell() {
    let env = TestEnv::empty();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run(&["completions", shell]);
        out.expect_code(0);
        out.assert_stdout_has("mailtoken");
        out.assert_stdout_has("force-refresh");
    }
    env.run(&["completions", "tcsh"]).expect_code(2);
}

/// `git credential fill` with mailtoken as the only helper, in an isolated git setup.
fn git_fill(env: &TestEnv, request: &str) -> std::process::Output {
    let helper = format!(
        "!{} --config {} --data-dir {} git-credential",
        bin(),
        env.config.display(),
        env.data.display()
    );
    let mut child = std::process::Command::new("git")
        .args(["-c", "credential.helper=", "-c"])
        .arg(format!("credential.helper={helper}"))
        .args(["credential", "fill"])
        .env("HOME", &env.home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_real_git_gets_the_mail_token_for_smtp_only() {
    let server = FakeServer::start();
    let env = two_accounts(&server);
    env.write_token("home", "home-at", "rt", now_unix() + 3600);
    env.write_token("work", "work-at", "rt2", now_unix() + 3600);
    let https = git_fill(
        &env,
        "protocol=https\nhost=github.com\nusername=bob@example.com\n\n",
    );
    let shown = String::from_utf8_lossy(&https.stdout).into_owned()
        + &String::from_utf8_lossy(&https.stderr);
    assert!(!https.status.success(), "git found a password: {shown}");
    assert!(!shown.contains("home-at"), "{shown}");

    let smtp = git_fill(
        &env,
        "protocol=smtp\nhost=smtp.example.com:587\nusername=bob@example.com\n\n",
    );
    let out = String::from_utf8_lossy(&smtp.stdout);
    assert!(smtp.status.success(), "{out}");
    assert!(out.contains("password=home-at\n"), "{out}");
}
