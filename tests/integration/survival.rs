//! Nothing lost, round 2: once a server has answered with a rotated refresh token, the token
//! survives a full disk, a store command that fails, and a SIGTERM in flight.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::support::env::*;
use crate::support::oauth_server::*;

const SEED_RT: &str = "fake-rt-seed";

/// An expired login whose refresh token the server knows.
fn expired_login(env: &TestEnv, server: &FakeServer) {
    server.add_refresh_token(SEED_RT);
    env.write_token(ACCOUNT, "old-at", SEED_RT, now_unix() - 60);
}

fn stored_rt(path: &Path) -> String {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    json["refresh_token"].as_str().unwrap().to_string()
}

/// Wait (bounded) until the server has seen `n` requests of `kind`.
fn wait_for(server: &FakeServer, kind: Kind, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.count(kind) < n {
        assert!(Instant::now() < deadline, "the server never saw {kind:?}");
        sleep(Duration::from_millis(10));
    }
}

/// A tmpfs of `size` mounted on `dir` for one test; needs root (CI runs as root).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs on {}", dir.display());
        Some(Tmpfs(dir.to_path_buf()))
    }

    /// Write a filler file until the file system is full; returns it.
    fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while std::io::Write::write_all(&mut f, &block).is_ok() {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_found_before_the_refresh_token_is_spent() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    let Some(fs) = Tmpfs::mount(&env.data, "64k") else {
        return;
    };
    expired_login(&env, &server);
    let filler = fs.fill();

    let full = env.run(&["token", ACCOUNT]);
    full.expect_code(1);
    full.assert_stderr_has("cannot reserve");
    assert!(full.stdout.is_empty());
    assert_eq!(
        server.count(Kind::Refresh),
        0,
        "no refresh may be asked for when the new tokens could not be stored"
    );
    assert_eq!(stored_rt(&env.token_path(ACCOUNT)), SEED_RT);

    std::fs::remove_file(filler).unwrap();
    let freed = env.run(&["token", ACCOUNT]);
    freed.expect_code(0);
    assert_eq!(server.count(Kind::Refresh), 1);
    let rt = stored_rt(&env.token_path(ACCOUNT));
    assert!(server.is_valid_refresh_token(&rt), "stored {rt}");
}

/// Every signal that ends a process by default and can be held back, sent while a strictly
/// rotating server (the old refresh token dies as the request arrives) takes its time to
/// answer: the signal still ends the process, but only once the rotated token is stored.
#[test]
fn a_signal_during_the_refresh_waits_until_the_rotated_token_is_stored() {
    // Linux's own signals are added below.
    #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
    let mut signals = vec![
        ("TERM", libc::SIGTERM),
        ("INT", libc::SIGINT),
        ("HUP", libc::SIGHUP),
        ("QUIT", libc::SIGQUIT),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("ALRM", libc::SIGALRM),
        ("VTALRM", libc::SIGVTALRM),
        ("PROF", libc::SIGPROF),
        ("XCPU", libc::SIGXCPU),
        ("IO", libc::SIGIO),
    ];
    #[cfg(target_os = "linux")]
    signals.extend([("PWR", libc::SIGPWR), ("RTMIN+3", libc::SIGRTMIN() + 3)]);
    let runs: Vec<_> = signals
        .iter()
        .map(|&(name, signal)| {
            let server = FakeServer::start();
            let env = TestEnv::new(&server);
            expired_login(&env, &server);
            // The server rotates as the request arrives, then takes its time to answer.
            server.set_refresh_delay_ms(1500);
            // A shell starts background jobs with INT and QUIT ignored, and mailtoken keeps
            // an ignored signal ignored: the child gets the default action for this one.
            let mut cmd = env.command(&["token", ACCOUNT]);
            // SAFETY: between fork and exec, signal(2) is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    libc::signal(signal, libc::SIG_DFL);
                    Ok(())
                });
            }
            let child = Running::spawn(cmd, format!("mailtoken token (SIG{name})"));
            (name, signal, server, env, child)
        })
        .collect();
    // Every refresh under way (each server holds its answer 1.5 s), then every signal.
    for (_, _, server, _, _) in &runs {
        wait_for(server, Kind::Refresh, 1);
    }
    sleep(Duration::from_millis(200));
    for (_, signal, _, _, child) in &runs {
        child.signal(*signal);
    }
    for (name, _, server, env, child) in runs {
        let out = child.wait(RUN_TIMEOUT);
        assert_eq!(
            out.code,
            None,
            "SIG{name} still ends the process:\n{}",
            out.all()
        );
        assert!(server.was_revoked(SEED_RT));
        let rt = stored_rt(&env.token_path(ACCOUNT));
        assert!(
            server.is_valid_refresh_token(&rt),
            "SIG{name}: the rotated refresh token must be on disk, found {rt}"
        );
        server.set_refresh_delay_ms(0);
        env.run(&["token", ACCOUNT, "--force-refresh"])
            .expect_code(0);
    }
}

#[test]
fn a_failing_save_command_keeps_the_rotated_token_pending_until_the_store_takes_it() {
    let server = FakeServer::start();
    let vault = tempfile::tempdir().unwrap();
    let file = vault.path().join("work.json");
    let locked = vault.path().join("locked");
    let (f, l) = (file.display(), locked.display());
    let env = TestEnv::with_extra(
        &server,
        "",
        &format!(
            "store = \"command\"\n\
             store_load_command = \"cat {f}\"\n\
             store_save_command = \"if [ -e {l} ]; then echo vault is locked >&2; exit 1; fi; cat > {f}.tmp && mv {f}.tmp {f}\"\n"
        ),
    );
    server.add_refresh_token(SEED_RT);
    let old = format!(
        r#"{{"version":1,"access_token":"old-at","token_type":"Bearer","expires_at":{},"refresh_token":"{SEED_RT}"}}"#,
        now_unix() - 10
    );
    std::fs::write(&file, &old).unwrap();
    std::fs::write(&locked, "").unwrap();

    let first = env.run(&["token", ACCOUNT]);
    first.expect_code(0);
    assert!(server.was_revoked(SEED_RT), "the server rotated");
    let pending = env.data.join("work.pending.json");
    first.assert_stderr_has("vault is locked");
    first
        .noting("the warning names the pending copy")
        .assert_stderr_has(&pending.display().to_string());
    assert_eq!(std::fs::metadata(&pending).unwrap().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), old);
    let new_token = first.stdout.clone();
    assert_ne!(new_token.trim(), "old-at");

    let second = env.run(&["token", ACCOUNT]);
    second.expect_code(0);
    assert_eq!(
        second.stdout, new_token,
        "the pending tokens are the current ones"
    );
    assert_eq!(server.count(Kind::Refresh), 1);

    std::fs::remove_file(&locked).unwrap();
    env.run(&["token", ACCOUNT]).expect_code(0);
    assert!(
        !pending.exists(),
        "handed to the store, the pending copy goes"
    );
    let rt = stored_rt(&file);
    assert!(server.is_valid_refresh_token(&rt), "vault holds {rt}");
    env.run(&["token", ACCOUNT, "--force-refresh"])
        .expect_code(0);
    assert_eq!(server.count(Kind::Refresh), 2);
}

/// `count` callers of `token` at once, each with `env_vars`; their results.
fn storm(env: &TestEnv, count: usize, env_vars: &[(&str, &str)]) -> Vec<RunResult> {
    let callers: Vec<Running> = (0..count)
        .map(|_| {
            let mut cmd = env.command(&["token", ACCOUNT]);
            for (k, v) in env_vars {
                cmd.env(k, v);
            }
            Running::spawn(cmd, "mailtoken token (storm)".into())
        })
        .collect();
    callers.into_iter().map(|c| c.wait(RUN_TIMEOUT)).collect()
}

#[test]
fn one_minute_tokens_are_refreshed_once_per_expiry_not_on_every_call() {
    let server = FakeServer::start();
    // The default margin (300 s) is longer than the tokens live (60 s, as with some OIDC
    // servers): the margin applied is at most half the token's life.
    server.set_lifetime(60);
    server.set_refresh_delay_ms(300);
    let env = TestEnv::new(&server);
    expired_login(&env, &server);
    let outputs = storm(&env, 24, &[]);
    for out in &outputs {
        out.expect_code(0);
        assert_eq!(
            out.stdout, outputs[0].stdout,
            "everyone gets the one new token"
        );
    }
    assert_eq!(server.count(Kind::Refresh), 1, "one refresh for the storm");
    let again = env.run(&["token", ACCOUNT]);
    again.expect_code(0);
    assert_eq!(again.stdout, outputs[0].stdout);
    assert_eq!(
        server.count(Kind::Refresh),
        1,
        "the next call uses the cached token"
    );
    let status = env.run(&["status", ACCOUNT]);
    status.assert_stdout_has("30 s before");
}

#[test]
fn waiters_fail_fast_with_the_error_of_a_refresh_that_just_failed() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    expired_login(&env, &server);
    server.set_fault(Kind::Refresh, Fault::Stall(Duration::from_secs(8)));
    let outputs = storm(&env, 3, &[("MAILTOKEN_HTTP_TIMEOUT", "2")]);
    for out in &outputs {
        out.expect_code(4);
    }
    assert_eq!(
        server.count(Kind::Refresh),
        1,
        "the waiters take the first caller's failure instead of repeating it"
    );
    assert!(
        outputs.iter().any(|o| o
            .stderr
            .contains("another mailtoken process just tried and failed")),
        "{:?}",
        outputs.iter().map(|o| &o.stderr).collect::<Vec<_>>()
    );
    // A later call, after the failure, tries again by itself.
    server.clear_fault(Kind::Refresh);
    env.run(&["token", ACCOUNT]).expect_code(0);
}

#[test]
fn a_token_obtained_under_a_clock_that_was_ahead_is_refreshed() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    server.add_refresh_token(SEED_RT);
    // Stored by a refresh while the clock was a day ahead: it looks valid for a day and an
    // hour, but nobody knows how old it really is.
    let ahead = now_unix() + 86_400;
    let json = serde_json::json!({
        "version": 1, "access_token": "at-from-the-future", "token_type": "Bearer",
        "expires_at": ahead + 3600, "obtained_at": ahead, "refresh_token": SEED_RT,
    });
    env.write_token_bytes(ACCOUNT, json.to_string().as_bytes());
    let out = env.run(&["token", ACCOUNT]);
    out.expect_code(0);
    assert_eq!(server.count(Kind::Refresh), 1, "{}", out.stderr);
    assert_ne!(out.stdout.trim(), "at-from-the-future");
}

/// A strictly rotating server answers a refresh with a good new refresh token and an access
/// token that cannot be used (empty, a line break, not Bearer, missing): the call fails (exit
/// 4, try again), but the new refresh token is stored, so the next refresh works instead of
/// meeting invalid_grant with the revoked old one. The next call is a forced refresh, not one
/// the cache could answer.
#[test]
fn a_refused_access_token_does_not_lose_the_rotated_refresh_token() {
    for (field, value) in [
        ("access_token", serde_json::json!("")),
        (
            "access_token",
            serde_json::json!("at-with\r\nX-Injected: 1"),
        ),
        ("token_type", serde_json::json!("mac")),
        ("access_token", serde_json::Value::Null),
    ] {
        let server = FakeServer::start();
        server.set_refresh(Refresh::Rotate);
        let env = TestEnv::new(&server);
        expired_login(&env, &server);
        server.set_reply_field(field, value.clone());
        let r = env.run(&["token", ACCOUNT]);
        assert_eq!(r.code, Some(4), "{field}={value}: {}", r.stderr);
        assert!(r.stdout.is_empty());
        r.noting(format!("{field}={value}"))
            .assert_stderr_has("new refresh token was stored");
        assert!(server.was_revoked(SEED_RT), "the server rotated");
        assert_eq!(
            stored_rt(&env.token_path(ACCOUNT)),
            "fake-rt-1",
            "{field}={value}"
        );
        r.assert_stderr_lacks("fake-rt-1");
        server.clear_reply_field(field);
        let again = env.run(&["token", ACCOUNT, "--force-refresh"]);
        assert_eq!(again.code, Some(0), "{field}={value}: {}", again.stderr);
        assert_eq!(again.stdout, "fake-at-2\n");
        assert_eq!(stored_rt(&env.token_path(ACCOUNT)), "fake-rt-2");
    }
}

/// A FIFO or a dangling symbolic link (pointing out of the data directory) in the place of
/// each file of the data directory: no call hangs on it, none creates a file through the
/// link, and each ends with a word about it or a token.
#[test]
fn fifos_and_symlinks_in_the_data_directory_hang_nothing_and_lead_nowhere() {
    for file in ["lock", "failed", "pending.json", "config", "discovery.json"] {
        for kind in ["fifo", "symlink", "fifo, server down"] {
            let server = FakeServer::start();
            // A refresh that fails is noted in NAME.failed for the callers waiting.
            server.set_refresh(if kind.ends_with("down") {
                Refresh::ServerError
            } else {
                Refresh::Rotate
            });
            let env = TestEnv::new(&server);
            expired_login(&env, &server);
            let path = env.data.join(format!("{ACCOUNT}.{file}"));
            let outside = env.dir.path().join(format!("outside-{file}"));
            match kind {
                "fifo" | "fifo, server down" => {
                    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
                    // SAFETY: mkfifo reads the path it is given.
                    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
                }
                _ => std::os::unix::fs::symlink(&outside, &path).unwrap(),
            }
            let started = Instant::now();
            let r = env.run(&["token", ACCOUNT]);
            let what = format!("{kind} at {ACCOUNT}.{file}");
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{what}: {:?}",
                started.elapsed()
            );
            assert!(
                !outside.exists(),
                "{what}: a file was created through the link"
            );
            match r.code {
                Some(0) => assert_eq!(r.stdout, "fake-at-1\n", "{what}"),
                Some(4) if kind.ends_with("down") => {}
                _ => {
                    r.noting(&what)
                        .assert_stderr_has(&format!("{ACCOUNT}.{file}"))
                        .assert_stderr_has("remove it");
                }
            }
        }
    }
}

/// A login the provider has revoked, met by 100 callers at once: one request reaches the
/// server, every caller exits 3, a later caller asks nothing, `status` and `doctor` say the
/// login is dead and what to run; a new login works at once.
#[test]
fn a_revoked_login_met_by_a_hundred_callers_costs_one_request() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::InvalidGrant);
    let env = TestEnv::new(&server);
    expired_login(&env, &server);
    // Before: the login looks fine.
    let status = env.run(&["status", ACCOUNT]);
    status.assert_stdout_has("logged in:     yes");
    let runs = storm(&env, 100, &[]);
    for r in &runs {
        assert_eq!(r.code, Some(3), "{}", r.all());
        assert!(r.stdout.is_empty());
        r.assert_stderr_has("mailtoken login work");
    }
    assert_eq!(
        server.count(Kind::Refresh),
        1,
        "one request for 100 callers"
    );
    let later = env.run(&["token", ACCOUNT]);
    assert_eq!(later.code, Some(3), "{}", later.all());
    assert_eq!(
        server.count(Kind::Refresh),
        1,
        "nothing asked again with a refused token"
    );
    let status = env.run(&["status", ACCOUNT]);
    status
        .assert_stdout_has("logged in:     no: the provider refused the login")
        .assert_stdout_has("mailtoken login work");
    let doctor = env.run(&["doctor", ACCOUNT]);
    assert_ne!(doctor.code, Some(0), "{}", doctor.all());
    assert!(
        doctor
            .all()
            .contains("the provider refused the stored login"),
        "{}",
        doctor.all()
    );
    // A new login (another refresh token) is not taken for the dead one.
    server.set_refresh(Refresh::Keep);
    server.add_refresh_token("rt-new-login");
    env.write_token(ACCOUNT, "at-new", "rt-new-login", now_unix() - 60);
    let fresh = env.run(&["token", ACCOUNT]);
    assert_eq!(fresh.code, Some(0), "{}", fresh.all());
    assert_eq!(server.count(Kind::Refresh), 2);
}

/// A config that other users can write, with no command in it, is refused for a refresh:
/// another user could have pointed the token endpoint at their own server and received the
/// refresh token. Nothing reaches any server; the message says what is wrong and the fix.
/// A config another user owns is refused with the right words (not "chmod").
#[test]
fn a_config_others_can_write_sends_no_secret_anywhere() {
    use std::os::unix::fs::PermissionsExt;
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    expired_login(&env, &server);
    std::fs::set_permissions(&env.config, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = env.run(&["token", ACCOUNT]);
    assert_eq!(r.code, Some(2), "{}", r.all());
    r.assert_stderr_has("can be written by other users (mode 666)")
        .assert_stderr_has(&format!("chmod go-w {}", env.config.display()));
    assert_eq!(server.total(), 0, "a request was sent");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::fs::set_permissions(&env.config, std::fs::Permissions::from_mode(0o600)).unwrap();
        let chown = Command::new("chown")
            .args(["65534"])
            .arg(&env.config)
            .status()
            .unwrap();
        assert!(chown.success());
        let mut cmd = env.command(&["token", ACCOUNT]);
        cmd.env("SUDO_USER", "alice");
        let r = Running::spawn(cmd, "mailtoken token".into()).wait(RUN_TIMEOUT);
        assert_eq!(r.code, Some(2), "{}", r.all());
        r.assert_stderr_has("belongs to uid 65534, not to you (uid 0)")
            .assert_stderr_has("through sudo: run it as alice, without sudo")
            .assert_stderr_lacks("chmod");
        assert_eq!(server.total(), 0, "a request was sent");
    }
    std::fs::set_permissions(&env.config, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A caller at a terminal that finds the lock held for more than a second says which process
/// holds it (its id and command line), then carries on when the holder is done.
#[test]
fn a_caller_at_a_terminal_names_the_process_it_waits_for() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Rotate);
    let env = TestEnv::new(&server);
    expired_login(&env, &server);
    server.set_refresh_delay_ms(3000);
    let first = env.spawn(&["token", ACCOUNT]);
    wait_for(&server, Kind::Refresh, 1);
    // `script` gives the second caller a terminal; its output is the terminal's.
    let command = format!(
        "{} --config {} --data-dir {} token {ACCOUNT}",
        bin(),
        env.config.display(),
        env.data.display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &command, "/dev/null"]);
    let second = Running::spawn(cmd, "mailtoken token (at a terminal)".into()).wait(RUN_TIMEOUT);
    let first_pid = first.pid();
    let first = first.wait(RUN_TIMEOUT);
    assert_eq!(first.code, Some(0), "{}", first.all());
    assert_eq!(second.code, Some(0), "{}", second.all());
    let said = second.stdout.replace('\r', "");
    assert!(
        said.contains(&format!("mailtoken: waiting for process {first_pid} ("))
            && said.contains(&format!("token {ACCOUNT}) to finish with")),
        "{said}"
    );
    assert!(said.ends_with("fake-at-1\n"), "{said}");
    assert_eq!(server.count(Kind::Refresh), 1);
}

/// The data directory turns unwritable while a strictly rotating server answers: the new
/// tokens are rescued to $XDG_RUNTIME_DIR and the error says where. `status` and `doctor`
/// say so too; the next refresh, once the directory can be written, stores them first and
/// refreshes with their (live) refresh token instead of the revoked one.
#[test]
fn rescued_tokens_are_told_and_replayed_by_the_next_refresh() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: chattr +i needs root (CI runs as root)");
        return;
    }
    let server = FakeServer::start();
    server.set_refresh(Refresh::Rotate);
    let env = TestEnv::new(&server);
    expired_login(&env, &server);
    let runtime = env.dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let chattr = |flag: &str| {
        let ok = Command::new("chattr").arg(flag).arg(&env.data).status();
        ok.is_ok_and(|s| s.success())
    };
    server.set_refresh_delay_ms(1000);
    let mut cmd = env.command(&["token", ACCOUNT]);
    cmd.env("XDG_RUNTIME_DIR", &runtime);
    let child = Running::spawn(cmd, "mailtoken token (store goes read-only)".into());
    wait_for(&server, Kind::Refresh, 1);
    if !chattr("+i") {
        eprintln!("skipped: chattr +i does not work on this file system");
        return;
    }
    let r = child.wait(RUN_TIMEOUT);
    assert!(chattr("-i"));
    assert_ne!(r.code, Some(0), "{}", r.all());
    r.assert_stderr_has("THE ONLY COPY");
    assert_eq!(
        stored_rt(&env.token_path(ACCOUNT)),
        SEED_RT,
        "the old login on disk"
    );
    assert!(server.was_revoked(SEED_RT));
    let status = {
        let mut cmd = env.command(&["status", ACCOUNT]);
        cmd.env("XDG_RUNTIME_DIR", &runtime);
        Running::spawn(cmd, "status".into()).wait(RUN_TIMEOUT)
    };
    status.assert_stdout_has("RESCUED:");
    server.set_refresh_delay_ms(0);
    let mut cmd = env.command(&["token", ACCOUNT, "--force-refresh"]);
    cmd.env("XDG_RUNTIME_DIR", &runtime);
    let again = Running::spawn(cmd, "mailtoken token (replay)".into()).wait(RUN_TIMEOUT);
    assert_eq!(again.code, Some(0), "{}", again.all());
    again.assert_stderr_has("stored the tokens of `work` rescued");
    assert_eq!(again.stdout, "fake-at-2\n");
    assert_eq!(stored_rt(&env.token_path(ACCOUNT)), "fake-rt-2");
    assert_eq!(
        std::fs::read_dir(runtime.join("mailtoken"))
            .unwrap()
            .count(),
        0,
        "the rescued copy stays"
    );
}

/// The lock file removed while a refresh holds it, and 20 callers arrive: they lock a new
/// file and one of them asks the server with the refresh token the first refresh is rotating.
/// It is refused, but waits for the first refresh's new tokens instead of declaring the login
/// dead: every caller gets a token, two requests in all, none told to log in again.
#[test]
fn a_lock_file_removed_mid_refresh_costs_one_request_and_no_false_login() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Rotate);
    let env = TestEnv::new(&server);
    expired_login(&env, &server);
    server.set_refresh_delay_ms(1500);
    let first = env.spawn(&["token", ACCOUNT]);
    wait_for(&server, Kind::Refresh, 1);
    std::fs::remove_file(env.data.join(format!("{ACCOUNT}.lock"))).unwrap();
    server.set_refresh_delay_ms(0);
    let others = storm(&env, 20, &[]);
    let first = first.wait(RUN_TIMEOUT);
    assert_eq!(first.code, Some(0), "{}", first.all());
    for r in &others {
        assert_eq!(r.code, Some(0), "{}", r.all());
        assert_eq!(r.stdout, "fake-at-1\n", "{}", r.all());
    }
    assert!(
        server.count(Kind::Refresh) <= 2,
        "{} requests",
        server.count(Kind::Refresh)
    );
    assert_eq!(stored_rt(&env.token_path(ACCOUNT)), "fake-rt-1");
}

/// A config others can write stops every account's logins and tokens, but `status` still
/// shows every account (and the problem): one unsafe file is told, not a wall of errors.
#[test]
fn status_shows_every_account_of_a_config_others_can_write() {
    use std::os::unix::fs::PermissionsExt;
    let server = FakeServer::start();
    let env = TestEnv::with_extra(
        &server,
        "",
        "client_secret_command = \"sleep 30; echo secret\"\n",
    );
    env.write_token(ACCOUNT, "at-fine", "rt-fine", now_unix() + 3600);
    std::fs::set_permissions(&env.config, std::fs::Permissions::from_mode(0o646)).unwrap();
    let status = env.run(&["status"]);
    assert_eq!(status.code, Some(0), "{}", status.all());
    status.assert_stdout_has("logged in:     yes");
    status.assert_stderr_has("can be written by other users (mode 646)");
    assert!(
        status.elapsed < Duration::from_secs(10),
        "the secret command ran"
    );
    let token = env.run(&["token", ACCOUNT]);
    assert_eq!(token.code, Some(2), "{}", token.all());
    assert!(token.stdout.is_empty());
    std::fs::set_permissions(&env.config, std::fs::Permissions::from_mode(0o600)).unwrap();
}
