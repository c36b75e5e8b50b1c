//! The command line itself: output formats, status, logout and add, and what the programs
//! need of their system (a stdout nobody reads, the C library, the front program's own build).

use crate::support::env::*;
use crate::support::oauth_server::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

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

/// `--version` names what ran, for a report or a package's test: the version, the build both
/// programs carry (as the handshake between them checks it) and the platform; `-V` the
/// version alone.
#[test]
fn the_version_names_the_build_and_the_platform() {
    let run = |flag: &str| {
        let out = std::process::Command::new(bin())
            .arg(flag)
            .output()
            .unwrap();
        assert!(out.status.success(), "{flag}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(run("-V"), format!("mailtoken {version}\n"));
    let long = run("--version");
    let build = long
        .strip_prefix(&format!("mailtoken {version} (build "))
        .and_then(|rest| rest.split_once(", "))
        .unwrap_or_else(|| panic!("{long}"));
    assert_eq!(build.0.len(), 16, "{long}");
    assert!(build.0.bytes().all(|b| b.is_ascii_hexdigit()), "{long}");
    assert!(build.1.starts_with(std::env::consts::ARCH), "{long}");
    assert!(build.1.ends_with(")\n"), "{long}");
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
    out.assert_stderr_has("mailtoken-full")
        .assert_stderr_has("cargo install");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);

    let full = std::path::Path::new(bin()).with_file_name("mailtoken-full");
    let mut other_build = std::process::Command::new(&full);
    other_build
        .arg("--version")
        .env("MAILTOKEN_BUILD", "another-build");
    let out =
        Running::spawn(other_build, "mailtoken-full of another build".into()).wait(RUN_TIMEOUT);
    assert_eq!(out.code, Some(1), "{}", out.all());
    out.assert_stderr_has("different builds");

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
    r.assert_no_leak(&["rt-json-secret"]);
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

#[test]
fn status_never_prints_secrets() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-status-SECRET", "rt-status-SECRET", FAR_FUTURE);
    for args in [vec!["status"], vec!["status", ACCOUNT]] {
        let r = env.run(&args);
        r.expect_code(0);
        r.noting("status should mention the account")
            .assert_stdout_has(ACCOUNT);
        r.assert_no_leak(&["at-status-SECRET", "rt-status-SECRET"]);
    }
    // Expired token: still no secrets.
    env.write_token(
        ACCOUNT,
        "at-status-SECRET",
        "rt-status-SECRET",
        now_unix() - 100,
    );
    let r = env.run(&["status", ACCOUNT]);
    r.assert_no_leak(&["at-status-SECRET", "rt-status-SECRET"]);
}

#[test]
fn logout_removes_token_file() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-lo", "rt-lo", FAR_FUTURE);
    let r = env.run(&["logout", ACCOUNT]);
    r.expect_code(0);
    r.assert_no_leak(&["at-lo", "rt-lo"]);
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
    r.assert_no_leak(&["fake-at-1", "rt-added"]);

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
