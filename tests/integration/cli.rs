//! Integration tests: run the built `mailtoken` binary as a separate process
//! against a fake OAuth2 server (tests/common). Every test has its own server
//! and temporary directory, so they are parallel-safe.

use crate::support::env::*;
use crate::support::oauth_server::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

const FAR_FUTURE: i64 = 4_102_444_800; // 2100-01-01

/// Neither stdout nor stderr may contain any of `secrets`.
#[track_caller]
fn assert_no_leak(r: &RunResult, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !r.stderr.contains(s),
            "secret {s:?} leaked on stderr:\n{}",
            r.stderr
        );
        assert!(
            !r.stdout.contains(s),
            "secret {s:?} leaked on stdout:\n{}",
            r.stdout
        );
    }
}

/// Only stderr may not contain `secrets` (stdout legitimately holds the new token).
#[track_caller]
fn assert_no_leak_stderr(r: &RunResult, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !r.stderr.contains(s),
            "secret {s:?} leaked on stderr:\n{}",
            r.stderr
        );
    }
}

#[track_caller]
fn assert_gap_at_least(a: Instant, b: Instant, min: Duration, what: &str) {
    let gap = b.duration_since(a);
    assert!(gap >= min, "{what}: gap {gap:?} < {min:?}");
}

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

/// Entries of the data dir other than the token files and lock files.
fn stray_files(env: &TestEnv) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(&env.data).expect("read data dir") {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if !(name.ends_with(".json") || name.ends_with(".lock")) {
            v.push(name);
        }
    }
    v
}

// ---------------------------------------------------------------------------
// login (device flow)
// ---------------------------------------------------------------------------

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
    assert!(
        status.stdout.contains("received ") && status.stdout.contains(" s ago"),
        "{}",
        status.stdout
    );
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
        assert!(
            status.stdout.contains("the login ends ")
                && status.stdout.contains("as the token server said"),
            "{}",
            status.stdout
        );
    }
}

/// Wait for `child` at most 20 s; its exit status and stderr.
fn finish(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

/// The standard streams as a mail program may leave them (what Rust's runtime used to see to,
/// before `main` started without it): a stdout pipe nobody reads any more gets "cannot write"
/// and exit 1 on the quick path and the full one (not a silent death by SIGPIPE); with all
/// three closed, the files and sockets mailtoken opens do not take their numbers.
#[test]
fn a_stdout_nobody_reads_or_a_closed_one_is_handled() {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-cached", "rt-cached", now_unix() + 3600);
    // Old enough for the first call to leave a snapshot for the quick path.
    std::thread::sleep(Duration::from_millis(2100));
    env.run(&["token", ACCOUNT]).expect_code(0);
    assert!(env.data.join(format!("{ACCOUNT}.config")).exists());
    for quick in ["1", "0"] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut cmd = env.command(&["token", ACCOUNT]);
        cmd.env("MAILTOKEN_QUICK", quick)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped());
        let (status, stderr) = finish(cmd.spawn().unwrap());
        assert_eq!(status.signal(), None, "quick={quick}: killed: {stderr}");
        assert_eq!(status.code(), Some(1), "quick={quick}: {stderr}");
        assert!(
            stderr.contains("cannot write the token to stdout"),
            "quick={quick}: {stderr}"
        );
    }
    // All three closed, and a refresh with --verbose: its lines go nowhere instead of into
    // the lock file, the new token file or the request to the server that took their numbers.
    let mut cmd = env.command(&["-v", "token", "--force-refresh", ACCOUNT]);
    // SAFETY: close is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            for fd in 0..=2 {
                libc::close(fd);
            }
            Ok(())
        });
    }
    server.add_refresh_token("rt-cached");
    let (status, _) = finish(cmd.stderr(Stdio::piped()).spawn().unwrap());
    assert!(status.success(), "{status:?}");
    assert_eq!(server.count(Kind::Refresh), 1);
    let stored = env.read_token_json(ACCOUNT);
    assert!(
        stored["access_token"]
            .as_str()
            .unwrap()
            .starts_with("fake-at-"),
        "{stored}"
    );
    let lock = env.data.join(format!("{ACCOUNT}.lock"));
    // The lock file holds its holder's process id, and nothing else was written into it.
    let held = String::from_utf8(std::fs::read(&lock).unwrap()).unwrap();
    assert!(
        held.ends_with('\n') && held.trim_end().bytes().all(|b| b.is_ascii_digit()),
        "the lock file was written: {held:?}"
    );
}

/// `mailtoken` hands every call but the cached token to `mailtoken-full` beside it: without
/// it, a one-line error that says what to do; with one of another build, a refusal (their
/// quick and full paths might disagree); the variable that carries the build is not passed
/// on to the programs mailtoken starts.
#[test]
fn the_front_program_needs_the_full_one_of_its_own_build() {
    let alone = tempfile::tempdir().unwrap();
    let front = alone.path().join("mailtoken");
    std::fs::copy(bin(), &front).unwrap();
    let mut alone_cmd = std::process::Command::new(&front);
    alone_cmd.arg("--version");
    let out = Running::spawn(alone_cmd, "mailtoken alone".into()).wait(RUN_TIMEOUT);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("mailtoken-full") && out.stderr.contains("cargo install"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);

    let full = std::path::Path::new(bin()).with_file_name("mailtoken-full");
    let mut other_build = std::process::Command::new(&full);
    other_build
        .arg("--version")
        .env("MAILTOKEN_BUILD", "another-build");
    let out =
        Running::spawn(other_build, "mailtoken-full of another build".into()).wait(RUN_TIMEOUT);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("different builds"), "{}", out.stderr);

    let server = FakeServer::start();
    server.set_refresh(Refresh::InvalidGrant);
    server.add_refresh_token("rt-dead");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("env");
    let env = TestEnv::with_extra(
        &server,
        &format!("notify_command = 'env > {}'", log.display()),
        "",
    );
    env.write_token(ACCOUNT, "at-dead", "rt-dead", now_unix() - 5);
    env.run(&["token", ACCOUNT]).expect_code(3);
    let seen = std::fs::read_to_string(&log).expect("notify_command ran");
    assert!(seen.contains("MAILTOKEN_ACCOUNT="), "{seen}");
    assert!(!seen.contains("MAILTOKEN_BUILD"), "{seen}");
}

/// Both programs load no library but the C library (and the loader, which is there anyway):
/// loading libgcc_s (Rust's default, for an unwinder that only prints a panic's backtrace
/// here) was a tenth of the cached call.
#[test]
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    not(target_feature = "crt-static")
))]
fn the_programs_need_only_the_c_library() {
    let front = std::path::Path::new(bin());
    for program in [front.to_path_buf(), front.with_file_name("mailtoken-full")] {
        let out = std::process::Command::new("readelf")
            .arg("-d")
            .arg(&program)
            .output()
            .expect("readelf (binutils) runs");
        let dynamic = String::from_utf8_lossy(&out.stdout);
        let needed: Vec<&str> = dynamic.lines().filter(|l| l.contains("(NEEDED)")).collect();
        assert!(
            needed.iter().any(|l| l.contains("[libc.so.6]"))
                && needed
                    .iter()
                    .all(|l| l.contains("[libc.so.6]") || l.contains("[ld-linux")),
            "{}: {needed:?}",
            program.display()
        );
    }
}

/// The small program starts no other program: it can only become the full one (exec), never
/// fork or spawn, so nothing it reads (a snapshot, a token file) can make it run a command.
/// Read off its dynamic symbols; the full program, which does run commands, is the control.
#[test]
fn the_small_program_cannot_start_a_program() {
    let starts = [
        "fork",
        "vfork",
        "posix_spawn",
        "posix_spawnp",
        "system",
        "popen",
        "clone",
        "clone3",
    ];
    let symbols = |program: &std::path::Path| -> Vec<String> {
        let out = std::process::Command::new("readelf")
            .args(["--dyn-syms", "-W"])
            .arg(program)
            .output()
            .expect("readelf (binutils) runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(7))
            .map(|s| s.split('@').next().unwrap_or(s).to_string())
            .filter(|s| starts.contains(&s.as_str()))
            .collect()
    };
    let front = std::path::Path::new(bin());
    assert_eq!(symbols(front), Vec::<String>::new(), "{}", front.display());
    assert!(!symbols(&front.with_file_name("mailtoken-full")).is_empty());
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
    assert!(
        r.stderr.contains("login cancelled; nothing was stored"),
        "{}",
        r.stderr
    );
    assert!(!env.token_path(ACCOUNT).exists());
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
    assert!(!piped.stderr.contains(&waiting), "{}", piped.stderr);
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
    assert!(tty.stdout.contains(&waiting), "{}", tty.all());
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
    assert!(
        r.stderr.contains(VERIFICATION_URI),
        "stderr lacks URL:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(USER_CODE),
        "stderr lacks user code:\n{}",
        r.stderr
    );
    assert_no_leak(&r, &["fake-at-1", "fake-rt-1", DEVICE_CODE]);

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
    assert!(stray_files(&env).is_empty(), "{:?}", stray_files(&env));

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
    assert!(
        r.stderr.contains(VERIFICATION_URI),
        "verification_url not shown:\n{}",
        r.stderr
    );
    assert!(r.stderr.contains(USER_CODE), "{}", r.stderr);
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

// ---------------------------------------------------------------------------
// token: cache and refresh
// ---------------------------------------------------------------------------

#[test]
fn token_cached_makes_zero_requests() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    let bytes = env.write_token(ACCOUNT, "at-cached-7f3a", "rt-cached-91bc", FAR_FUTURE);
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(0);
    assert_eq!(r.stdout, "at-cached-7f3a\n");
    assert_no_leak_stderr(&r, &["at-cached-7f3a", "rt-cached-91bc"]);
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
    assert_no_leak_stderr(&r, &["rt-seed-rot", "fake-rt-1", "fake-at-1"]);
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
    assert!(stray_files(&env).is_empty(), "{:?}", stray_files(&env));

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
    assert_no_leak(&r, &["s3cr3t-from-env", "rt-sec"]);
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
        assert_no_leak(&r, &["s3cr3t:with/odd&chars", "rt-basic"]);
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

// ---------------------------------------------------------------------------
// token: failures
// ---------------------------------------------------------------------------

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
    assert!(
        r.stderr.contains("mailtoken login work"),
        "stderr should tell the user to run `mailtoken login work`:\n{}",
        r.stderr
    );
    assert_no_leak(&r, &["at-ig-secret", "rt-ig-secret"]);
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
    assert_no_leak(&r, &["at-trouble-secret", "rt-trouble-secret"]);
    if let Some(s) = extra_secret {
        assert_no_leak(&r, &[s]);
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
    assert_no_leak(&r, &["at-cr-secret", "rt-cr-secret"]);
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
    assert_no_leak(&r, &["at-slow-secret", "rt-slow-secret"]);
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
    assert_no_leak_stderr(
        &r,
        &[
            "at-verbose-old",
            "rt-verbose-seed",
            "fake-at-1",
            "fake-rt-1",
        ],
    );
}

#[test]
fn http_endpoint_on_non_loopback_host_rejected_exit_2() {
    let env = TestEnv::with_config_text(&account_toml(ACCOUNT, "http://mail.invalid", ""));
    let bytes = env.write_token(ACCOUNT, "at-nl-secret", "rt-nl-secret", now_unix() - 60);
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(2);
    assert_eq!(r.stdout, "");
    assert_no_leak(&r, &["at-nl-secret", "rt-nl-secret"]);
    assert_eq!(env.token_bytes(ACCOUNT).as_deref(), Some(bytes.as_slice()));
}

#[test]
fn no_token_stored_exit_3() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(3);
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr.contains("mailtoken login work"),
        "stderr should say to run `mailtoken login work`:\n{}",
        r.stderr
    );
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
    assert!(
        r.stderr.contains("work.json"),
        "error should name the token file:\n{}",
        r.stderr
    );
    if let Some(s) = secret {
        assert_no_leak(&r, &[s]);
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
    assert_no_leak_stderr(&r, &["at-perm-1", "rt-perm-1"]);
    match r.code {
        Some(0) => {
            assert_eq!(r.stdout, "at-perm-1\n");
            assert_eq!(mode_of(&path), 0o600, "mode must be fixed to 0600");
        }
        Some(c) if c != 0 => assert_eq!(r.stdout, "", "refused run must print nothing"),
        other => panic!("killed by signal? {other:?}\n{}", r.stderr),
    }
}

// ---------------------------------------------------------------------------
// concurrency
// ---------------------------------------------------------------------------

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
    assert!(stray_files(&env).is_empty(), "{:?}", stray_files(&env));
}

// ---------------------------------------------------------------------------
// output formats
// ---------------------------------------------------------------------------

#[test]
fn format_xoauth2_google_documented_vector() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    let t = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg";
    env.write_token(ACCOUNT, t, "rt-g", FAR_FUTURE);
    let expected = "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==";
    // Our own encoder agrees with Google's published vector.
    assert_eq!(
        b64(format!("user=someuser@example.com\x01auth=Bearer {t}\x01\x01").as_bytes()),
        expected
    );
    let r = env.run(&[
        "token",
        ACCOUNT,
        "--format",
        "xoauth2",
        "--user",
        "someuser@example.com",
    ]);
    r.expect_code(0);
    assert_eq!(r.stdout, format!("{expected}\n"));
    assert_eq!(server.total(), 0);
}

#[test]
fn format_xoauth2_config_user_and_user_override() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    let t = "at-x2-Zq9";
    env.write_token(ACCOUNT, t, "rt-x2", FAR_FUTURE);

    let r = env.run(&["token", ACCOUNT, "--format", "xoauth2"]);
    r.expect_code(0);
    let want = b64(format!("user={USER}\x01auth=Bearer {t}\x01\x01").as_bytes());
    assert_eq!(r.stdout, format!("{want}\n"));

    let r = env.run(&[
        "token",
        ACCOUNT,
        "--format",
        "xoauth2",
        "--user",
        "bob@other.example",
    ]);
    r.expect_code(0);
    let want = b64(format!("user=bob@other.example\x01auth=Bearer {t}\x01\x01").as_bytes());
    assert_eq!(r.stdout, format!("{want}\n"));
    assert_eq!(server.total(), 0);
}

#[test]
fn format_oauthbearer_with_host_and_port() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    let t = "at-ob-44";
    env.write_token(ACCOUNT, t, "rt-ob", FAR_FUTURE);
    let r = env.run(&[
        "token",
        ACCOUNT,
        "--format",
        "oauthbearer",
        "--host",
        "imap.example.com",
        "--port",
        "993",
    ]);
    r.expect_code(0);
    let want = b64(format!(
        "n,a={USER},\x01host=imap.example.com\x01port=993\x01auth=Bearer {t}\x01\x01"
    )
    .as_bytes());
    assert_eq!(r.stdout, format!("{want}\n"));

    // --user applies here too.
    let r = env.run(&[
        "token",
        ACCOUNT,
        "--format",
        "oauthbearer",
        "--host",
        "smtp.example.com",
        "--port",
        "587",
        "--user",
        "carol@example.org",
    ]);
    r.expect_code(0);
    let want = b64(format!(
        "n,a=carol@example.org,\x01host=smtp.example.com\x01port=587\x01auth=Bearer {t}\x01\x01"
    )
    .as_bytes());
    assert_eq!(r.stdout, format!("{want}\n"));
}

#[test]
fn format_oauthbearer_without_host_and_port() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    let t = "at-ob-nohost";
    env.write_token(ACCOUNT, t, "rt-ob", FAR_FUTURE);
    let r = env.run(&["token", ACCOUNT, "--format", "oauthbearer"]);
    r.expect_code(0);
    let want = b64(format!("n,a={USER},\x01auth=Bearer {t}\x01\x01").as_bytes());
    assert_eq!(r.stdout, format!("{want}\n"));
}

#[test]
fn format_json_has_the_four_fields() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-json-1", "rt-json-secret", FAR_FUTURE);
    let r = env.run(&["token", ACCOUNT, "--format", "json"]);
    r.expect_code(0);
    assert!(r.stdout.ends_with('\n') && !r.stdout.ends_with("\n\n"));
    assert_eq!(r.stdout.trim_end().lines().count(), 1, "one line of JSON");
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim_end())
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", r.stdout));
    let obj = v.as_object().expect("JSON object");
    assert_eq!(obj["access_token"], "at-json-1");
    assert_eq!(obj["token_type"], "Bearer");
    assert_eq!(obj["expires_at"].as_i64(), Some(FAR_FUTURE));
    assert_eq!(obj["scope"], SCOPE);
    assert_eq!(obj.len(), 4, "exactly the four fields: {obj:?}");
    assert_no_leak(&r, &["rt-json-secret"]);
}

#[test]
fn unknown_format_exit_2() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-uf", "rt-uf", FAR_FUTURE);
    let r = env.run(&["token", ACCOUNT, "--format", "plain-text-please"]);
    r.expect_code(2);
    assert_eq!(r.stdout, "");
    assert_eq!(server.total(), 0);
}

#[test]
fn unknown_account_exit_2() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-ua", "rt-ua", FAR_FUTURE);
    let r = env.run(&["token", "nosuchaccount"]);
    r.expect_code(2);
    assert_eq!(r.stdout, "");
    let r = env.run(&["login", "nosuchaccount"]);
    r.expect_code(2);
    assert_eq!(server.total(), 0);
}

// ---------------------------------------------------------------------------
// status, logout, add
// ---------------------------------------------------------------------------

#[test]
fn status_never_prints_secrets() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-status-SECRET", "rt-status-SECRET", FAR_FUTURE);
    for args in [vec!["status"], vec!["status", ACCOUNT]] {
        let r = env.run(&args);
        r.expect_code(0);
        assert!(
            r.stdout.contains(ACCOUNT),
            "status should mention the account:\n{}",
            r.stdout
        );
        assert_no_leak(&r, &["at-status-SECRET", "rt-status-SECRET"]);
    }
    // Expired token: still no secrets.
    env.write_token(
        ACCOUNT,
        "at-status-SECRET",
        "rt-status-SECRET",
        now_unix() - 100,
    );
    let r = env.run(&["status", ACCOUNT]);
    assert_no_leak(&r, &["at-status-SECRET", "rt-status-SECRET"]);
}

#[test]
fn logout_removes_token_file() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-lo", "rt-lo", FAR_FUTURE);
    let r = env.run(&["logout", ACCOUNT]);
    r.expect_code(0);
    assert_no_leak(&r, &["at-lo", "rt-lo"]);
    assert!(!env.token_path(ACCOUNT).exists(), "token file still there");
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(3);
    assert_eq!(r.stdout, "");
}

fn add_args<'a>(name: &'a str, client_id: &'a str, dev: &'a str, tok: &'a str) -> Vec<&'a str> {
    vec![
        "add",
        name,
        "--provider",
        "generic",
        "--user",
        "bob@example.com",
        "--client-id",
        client_id,
        "--device-authorization-endpoint",
        dev,
        "--token-endpoint",
        tok,
        "--scope",
        "mail",
        "--scope",
        "offline_access",
    ]
}

#[test]
fn add_creates_config_usable_by_token_and_status() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Keep);
    server.add_refresh_token("rt-added");
    let env = TestEnv::empty();
    assert!(!env.config.exists());
    let dev = server.url("/device");
    let tok = server.url("/token");

    let r = env.run(&add_args("personal", "cid-personal", &dev, &tok));
    r.expect_code(0);
    assert!(env.config.exists(), "add must create the config file");
    let r = env.run(&add_args("second", "cid-second", &dev, &tok));
    r.expect_code(0);
    let text = std::fs::read_to_string(&env.config).unwrap();
    let parsed: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("config is not valid TOML ({e}):\n{text}"));
    let accounts = parsed["accounts"].as_table().expect("[accounts]");
    assert!(accounts.contains_key("personal") && accounts.contains_key("second"));

    // The added account works for refresh (endpoint, client_id, scopes taken from it).
    env.write_token("personal", "at-added-old", "rt-added", now_unix() - 60);
    let r = env.run(&["token", "personal"]);
    r.expect_code(0);
    assert_eq!(r.stdout, "fake-at-1\n");
    let reqs = server.requests_of(Kind::Refresh);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].param("client_id"), Some("cid-personal"));
    assert_eq!(reqs[0].param("scope"), Some(SCOPE));
    assert_eq!(reqs[0].param("refresh_token"), Some("rt-added"));

    // ...and the user from `add` is used for xoauth2.
    let r = env.run(&["token", "personal", "--format", "xoauth2"]);
    r.expect_code(0);
    let want = b64("user=bob@example.com\x01auth=Bearer fake-at-1\x01\x01".as_bytes());
    assert_eq!(r.stdout, format!("{want}\n"));

    let r = env.run(&["status", "personal"]);
    r.expect_code(0);
    assert_no_leak(&r, &["fake-at-1", "rt-added"]);

    // Duplicate name refused, config unchanged.
    let before = std::fs::read(&env.config).unwrap();
    let r = env.run(&add_args("personal", "cid-dup", &dev, &tok));
    r.expect_code(2);
    assert_eq!(std::fs::read(&env.config).unwrap(), before);
}

#[test]
fn add_refuses_existing_name_exit_2() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    let before = std::fs::read(&env.config).unwrap();
    let dev = server.url("/device");
    let tok = server.url("/token");
    let r = env.run(&add_args(ACCOUNT, "cid-dup", &dev, &tok));
    r.expect_code(2);
    assert_eq!(
        std::fs::read(&env.config).unwrap(),
        before,
        "config must be unchanged"
    );
}
