//! `relogin = "device"`: a call that finds the login dead starts one device login in the
//! background, says where to approve it, tells notify_command, and the login it stores serves
//! the next call.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::env::*;
use crate::support::oauth_server::*;

/// A notify_command that appends `EVENT|URI|CODE|COMPLETE|REASON` for each run to `log`.
fn notify_to(log: &Path) -> String {
    format!(
        "notify_command = 'echo \"$MAILTOKEN_EVENT|$MAILTOKEN_VERIFICATION_URI|$MAILTOKEN_USER_CODE|$MAILTOKEN_VERIFICATION_URI_COMPLETE|$MAILTOKEN_REASON\" >> {}'",
        log.display()
    )
}

fn events(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Wait (at most `most`) until `done` holds.
fn within(most: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + most;
    while !done() {
        assert!(Instant::now() < until, "not within {most:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A dead login (invalid_grant at refresh): the call exits 3 at once naming the address and
/// code of the login it started; a second call finds that login instead of starting another;
/// status shows it; notify_command is told with the event's variables (and never the device
/// code); when the person approves, the background process stores the tokens and the next call
/// prints the new access token. Every device request is counted: exactly one.
#[test]
fn a_dead_login_starts_one_background_login_whose_tokens_serve_the_next_call() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::InvalidGrant);
    server.add_refresh_token("rt-dead");
    server.set_interval(Some(1));
    server.set_poll_default(Poll::Pending);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("notified");
    let env = TestEnv::with_extra(&server, &notify_to(&log), "relogin = \"device\"");
    env.write_token(ACCOUNT, "at-dead", "rt-dead", now_unix() - 5);

    let first = env.run(&["token", ACCOUNT]);
    first.expect_code(3);
    assert_eq!(first.stdout, "");
    first
        .assert_stderr_has("invalid_grant")
        .assert_stderr_has("A new login was started in the background")
        .assert_stderr_has(&format!(
            "open {VERIFICATION_URI} and enter the code {USER_CODE}"
        ));
    first.assert_no_leak(&[DEVICE_CODE, "rt-dead"]);

    let second = env.run(&["token", ACCOUNT]);
    second.expect_code(3);
    second
        .assert_stderr_has("A new login is waiting for approval")
        .assert_stderr_has(USER_CODE);
    env.run(&["status", ACCOUNT]).assert_stdout_has(&format!(
        "new login:     waiting for approval at {VERIFICATION_URI} with the code {USER_CODE}"
    ));
    assert_eq!(
        server.count(Kind::Device),
        1,
        "one background login, not two"
    );
    within(Duration::from_secs(10), "login-started told", || {
        !events(&log).is_empty()
    });
    assert_eq!(
        events(&log)[0],
        format!(
            "login-started|{VERIFICATION_URI}|{USER_CODE}||open {VERIFICATION_URI} and enter the code {USER_CODE} within 10 min to log in again"
        ),
        "the dead login's own login-needed is not told besides"
    );

    // The person approves: the next poll succeeds, the background process stores the login.
    server.set_poll_default(Poll::Success);
    within(
        Duration::from_secs(20),
        "the background login stored",
        || {
            env.token_bytes(ACCOUNT)
                .is_some_and(|b| !String::from_utf8_lossy(&b[..]).contains("rt-dead"))
                && events(&log).len() == 2
        },
    );
    assert!(
        events(&log)[1].starts_with("login-done|"),
        "{:?}",
        events(&log)
    );
    let after = env.run(&["token", ACCOUNT]);
    after.expect_code(0);
    assert!(after.stdout.starts_with("fake-at-"), "{}", after.all());
    assert_eq!(server.count(Kind::Device), 1);
    let stored = env.read_token_json(ACCOUNT);
    assert!(stored["logged_in_at"].as_i64().is_some(), "{stored}");
    assert!(env.stray_files().is_empty(), "{:?}", env.stray_files());
    assert!(!events(&log).concat().contains(DEVICE_CODE));
    assert!(
        !env.run(&["status", ACCOUNT]).stdout.contains("new login:"),
        "a finished login is not shown as waiting"
    );
}

/// The background login could not start (the device endpoint refuses the client): the call
/// still exits 3, with the dead login's words and why no login was started, and
/// notify_command hears `login-needed` as without `relogin`. For ten minutes the calls that
/// follow say so without asking the server again.
#[test]
fn a_background_login_that_cannot_start_says_why_and_tells_login_needed() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::InvalidGrant);
    server.add_refresh_token("rt-dead");
    server.set_fault(
        Kind::Device,
        Fault::json(
            400,
            r#"{"error":"invalid_client","error_description":"no such app"}"#,
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("notified");
    let env = TestEnv::with_extra(&server, &notify_to(&log), "relogin = \"device\"");
    env.write_token(ACCOUNT, "at-dead", "rt-dead", now_unix() - 5);
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(3);
    r.assert_stderr_has("invalid_grant")
        .assert_stderr_has("the background login could not start")
        .assert_stderr_has("invalid_client");
    let told = events(&log);
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].starts_with("login-needed|"), "{told:?}");
    // The calls of the next minutes do not ask the server again: they say what happened.
    let again = env.run(&["token", ACCOUNT]);
    again.expect_code(3);
    again
        .assert_stderr_has("the background login could not start")
        .assert_stderr_has("invalid_client")
        .assert_stderr_has(" s ago; tried again ")
        .assert_stderr_has(" min from now)");
    assert_eq!(server.count(Kind::Device), 1);
    assert_eq!(events(&log).len(), 1, "told once an hour");
    assert!(!env.run(&["status", ACCOUNT]).stdout.contains("new login:"));
}

/// Without `relogin`, a dead login starts nothing.
#[test]
fn without_relogin_a_dead_login_starts_nothing() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::InvalidGrant);
    server.add_refresh_token("rt-dead");
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-dead", "rt-dead", now_unix() - 5);
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(3);
    r.assert_stderr_lacks("background");
    assert_eq!(server.count(Kind::Device), 0);
}

/// Eight mail programs find the login dead at once: each is told where to approve, and the
/// server sees one device login.
#[test]
fn calls_at_once_start_one_background_login() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::InvalidGrant);
    server.add_refresh_token("rt-dead");
    server.set_poll_default(Poll::Pending);
    let env = TestEnv::with_extra(&server, "", "relogin = \"device\"");
    env.write_token(ACCOUNT, "at-dead", "rt-dead", now_unix() - 5);
    let calls: Vec<_> = (0..8).map(|_| env.spawn(&["token", ACCOUNT])).collect();
    for call in calls {
        let r = call.wait(Duration::from_secs(60));
        r.expect_code(3);
        r.assert_stderr_has(&format!("enter the code {USER_CODE}"));
    }
    assert_eq!(server.count(Kind::Device), 1);
}

/// contrib/notify/mailtoken-notify, run as notify_command runs it for `login-started`, with
/// stand-ins for notify-send, qrencode, curl and sendmail on PATH: the desktop notification
/// carries the QR code of the complete address, the ntfy push opens it when tapped, the mail
/// goes to the address named, and each says the code.
#[test]
fn the_contrib_notifier_reaches_the_desktop_the_phone_and_the_mailbox() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let record = dir.path().join("record");
    for tool in ["notify-send", "qrencode", "curl", "sendmail"] {
        let path = bin.join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\n{{ printf '{tool}'; printf ' [%s]' \"$@\"; echo; [ {tool} = sendmail ] && cat; }} >> {}\nexit 0\n",
                record.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/notify/mailtoken-notify");
    let complete = format!("{VERIFICATION_URI}?code={USER_CODE}");
    let status = std::process::Command::new("sh")
        .arg(&script)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("TMPDIR", dir.path())
        .env("MAILTOKEN_ACCOUNT", "work")
        .env("MAILTOKEN_EVENT", "login-started")
        .env("MAILTOKEN_VERIFICATION_URI", VERIFICATION_URI)
        .env("MAILTOKEN_VERIFICATION_URI_COMPLETE", &complete)
        .env("MAILTOKEN_USER_CODE", USER_CODE)
        .env("MAILTOKEN_REASON", "open it")
        .env("MAILTOKEN_FIX", "mailtoken login work")
        .env("MAILTOKEN_NTFY", "https://ntfy.example/topic")
        .env("MAILTOKEN_NOTIFY_MAIL", "me@elsewhere.example")
        .status()
        .unwrap();
    assert!(status.success());
    let said = std::fs::read_to_string(&record).unwrap();
    let body = format!("Open {VERIFICATION_URI} and enter the code {USER_CODE}");
    let title = "mailtoken: approve the new login of work";
    assert!(said.contains("qrencode [-s] [6] [-o] ["), "{said}");
    assert!(said.contains(&format!("] [{complete}]")), "{said}");
    assert!(
        said.contains("notify-send [-u] [critical] [-i] [")
            && said.contains(&format!("] [{title}] [{body}]")),
        "{said}"
    );
    assert!(said.contains(&format!("[Click: {complete}]")), "{said}");
    assert!(said.contains("[https://ntfy.example/topic]"), "{said}");
    assert!(
        said.contains(&format!(
            "sendmail [me@elsewhere.example]\nSubject: {title}\n\n{body}\n"
        )),
        "{said}"
    );
    // The QR image is gone with the script.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("mailtoken-qr"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `doctor` warns of a `relogin` with nobody to tell: the address and code would reach the
/// person only in a mail program's error.
#[test]
fn doctor_warns_of_a_relogin_without_a_notifier() {
    let server = FakeServer::start();
    let silent = TestEnv::with_extra(&server, "", "relogin = \"device\"");
    let warned = silent.run(&["doctor", ACCOUNT]);
    assert!(
        warned
            .all()
            .contains("relogin = \"device\" without notify_command"),
        "{}",
        warned.all()
    );
    let told = TestEnv::with_extra(&server, "notify_command = \"true\"", "relogin = \"device\"");
    told.run(&["doctor", ACCOUNT])
        .assert_stdout_lacks("without notify_command")
        .assert_stderr_lacks("without notify_command");
}

/// A login made by hand while the background login waits takes its place: `status` no longer
/// shows a login waiting, the background process ends at its next poll (its lock let go, its
/// record gone) without storing anything over the new login, and notify_command hears that.
#[test]
fn a_login_by_hand_ends_the_background_one() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::InvalidGrant);
    server.add_refresh_token("rt-dead");
    server.set_interval(Some(1));
    server.set_poll_default(Poll::Pending);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("notified");
    let env = TestEnv::with_extra(&server, &notify_to(&log), "relogin = \"device\"");
    env.write_token(ACCOUNT, "at-dead", "rt-dead", now_unix() - 5);
    env.run(&["token", ACCOUNT]).expect_code(3);
    env.run(&["status", ACCOUNT])
        .assert_stdout_has("new login:     waiting");
    // What `mailtoken login` stores (its own device login would share the fake server's
    // answers with the background one): a new grant, logged in now.
    let by_hand = serde_json::json!({
        "version": 1, "access_token": "at-by-hand", "token_type": "Bearer",
        "expires_at": now_unix() + 3600, "refresh_token": "rt-by-hand", "scope": SCOPE,
        "logged_in_at": now_unix(),
    });
    env.write_token_bytes(ACCOUNT, by_hand.to_string().as_bytes());
    assert!(
        !env.run(&["status", ACCOUNT]).stdout.contains("new login:"),
        "a replaced login is not shown as waiting"
    );
    let record = env.data.join(format!("{ACCOUNT}.relogin.json"));
    within(
        Duration::from_secs(20),
        "the background login ended",
        || !record.exists() && events(&log).len() == 2,
    );
    assert!(
        events(&log)[1].starts_with("login-done|"),
        "{:?}",
        events(&log)
    );
    assert!(events(&log)[1].ends_with("a login made meanwhile took its place"));
    // Approving the old code now stores nothing: its process is gone.
    server.set_poll_default(Poll::Success);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(env.read_token_json(ACCOUNT)["refresh_token"], "rt-by-hand");
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(0);
    assert_eq!(r.stdout, "at-by-hand\n");
}
