//! Nothing lost, round 2: once a server has answered with a rotated refresh token, the token
//! survives a full disk, a store command that fails, and a SIGTERM in flight.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

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
    assert!(full.stderr.contains("cannot reserve"), "{}", full.stderr);
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

#[test]
fn sigterm_during_the_refresh_waits_until_the_rotated_token_is_stored() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    expired_login(&env, &server);
    // The server rotates as the request arrives, then takes its time to answer.
    server.set_refresh_delay_ms(1500);
    let child = env.spawn(&["token", ACCOUNT]);
    wait_for(&server, Kind::Refresh, 1);
    sleep(Duration::from_millis(200));
    child.signal(libc::SIGTERM);
    let out = child.wait(RUN_TIMEOUT);
    assert_eq!(
        out.code,
        None,
        "SIGTERM still ends the process:\n{}",
        out.all()
    );
    assert!(server.was_revoked(SEED_RT));
    let rt = stored_rt(&env.token_path(ACCOUNT));
    assert!(
        server.is_valid_refresh_token(&rt),
        "the rotated refresh token must be on disk, found {rt}"
    );
    server.set_refresh_delay_ms(0);
    env.run(&["token", ACCOUNT, "--force-refresh"])
        .expect_code(0);
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
    assert!(first.stderr.contains("vault is locked"), "{}", first.stderr);
    assert!(
        first.stderr.contains(&pending.display().to_string()),
        "the warning names the pending copy:\n{}",
        first.stderr
    );
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
    assert!(status.stdout.contains("30 s before"), "{}", status.stdout);
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
