//! The quick path of `token` (answered from the account's config snapshot and cached token,
//! before the command-line parser is built) against the full path: the same output, errors
//! and exit codes for every flag combination, and a snapshot that serves only while the
//! config file is unchanged.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::support::env::*;

/// `mailtoken --config C --data-dir D ARGS`, with MAILTOKEN_QUICK=0 (the full path always)
/// or without it.
fn run(env: &TestEnv, args: &[&str], quick: bool) -> RunResult {
    let mut cmd = Command::new(bin());
    cmd.arg("--config")
        .arg(&env.config)
        .arg("--data-dir")
        .arg(&env.data)
        .args(args)
        .env_remove("MAILTOKEN_CONFIG")
        .env_remove("MAILTOKEN_DATA_DIR")
        .env_remove("MAILTOKEN_QUICK");
    if !quick {
        cmd.env("MAILTOKEN_QUICK", "0");
    }
    Running::spawn(cmd, format!("mailtoken {args:?}")).wait(RUN_TIMEOUT)
}

fn snapshot(env: &TestEnv, account: &str) -> std::path::PathBuf {
    env.data.join(format!("{account}.config"))
}

/// Accounts `work` (a user, a cached token), `nouser` (a cached token, no user) and `stale`
/// (an expired token, a token endpoint nobody answers), in a config old enough to be
/// snapshotted, with the snapshots made by one full-path call each.
fn setup() -> TestEnv {
    let env = TestEnv::with_store();
    let nouser =
        account_toml("nouser", &nowhere(), "").replace(&format!("user = \"{USER}\"\n"), "");
    env.write_config(&format!(
        "refresh_margin = 60\n\n{}\n{nouser}\n{}",
        account_toml("work", &nowhere(), ""),
        account_toml("stale", &nowhere(), "")
    ));
    env.write_token("work", TOKEN, REFRESH, FAR_FUTURE);
    env.write_token("nouser", TOKEN, REFRESH, FAR_FUTURE);
    env.write_token_bytes(
        "stale",
        serde_json::json!({"version": 1, "access_token": "AT-old-token", "token_type": "Bearer",
                            "expires_at": 1, "refresh_token": REFRESH})
        .to_string()
        .as_bytes(),
    );
    // A config changed less than 2 s ago is not snapshotted (its next change could keep the
    // same timestamps): wait that out once.
    std::thread::sleep(Duration::from_millis(2100));
    for account in ["work", "nouser", "stale"] {
        run(&env, &["token", account], true);
    }
    env
}

#[test]
fn quick_and_full_paths_agree_on_every_flag_combination_and_error() {
    let env = setup();
    assert!(snapshot(&env, "work").exists(), "no snapshot was made");
    let cases: &[&[&str]] = &[
        &["token", "work"],
        &["token", "work", "--format", "raw"],
        &["token", "work", "--format", "xoauth2"],
        &["token", "work", "--format", "oauthbearer"],
        &["token", "work", "--format", "json"],
        &["token", "work", "-f", "xoauth2"],
        &["token", "work", "-fxoauth2"],
        &["token", "work", "--format=oauthbearer"],
        &["token", "--format", "xoauth2", "work"],
        &[
            "token",
            "work",
            "--user",
            "bob@example.com",
            "-f",
            "xoauth2",
        ],
        &[
            "token",
            "work",
            "--user=bob@example.com",
            "--format=oauthbearer",
        ],
        &["token", "work", "--user", "bob\u{1b}[31m", "-f", "xoauth2"],
        &["token", "work", "--user", "", "-f", "xoauth2"],
        &["token", "work", "--user", "-f", "xoauth2"],
        &[
            "token",
            "work",
            "--host",
            "mail.example.com",
            "--port",
            "993",
            "-f",
            "oauthbearer",
        ],
        &["token", "work", "--format", "bogus"],
        &["token", "work", "--format", "raw", "--format", "json"],
        &[
            "token",
            "work",
            "--user",
            "a@example.com",
            "--user",
            "b@example.com",
        ],
        &["token", "work", "extra"],
        &["token", "work", "--"],
        &["token", "--", "work"],
        &["token", "work", "-v"],
        &["token", "work", "--help"],
        &["token", "work", "--scope", "mail"],
        &["token", "work", "--resource", "graph"],
        &["token", "nouser"],
        &["token", "nouser", "-f", "xoauth2"],
        &[
            "token",
            "nouser",
            "--user",
            "carol@example.com",
            "-f",
            "xoauth2",
        ],
        &["token", "stale"],
        &["token", "stale", "-f", "xoauth2"],
        &["token", "missing"],
        &["token", "Bad Name"],
        &["token"],
        &["token", "work", "--force-refresh"],
    ];
    for args in cases {
        let full = run(&env, args, false);
        let quick = run(&env, args, true);
        assert_eq!(
            (quick.code, &quick.stdout, &quick.stderr),
            (full.code, &full.stdout, &full.stderr),
            "{args:?} differs:\nquick: {}\nfull: {}",
            quick.all(),
            full.all()
        );
    }
}

/// The user in a SASL string printed for `token work -f xoauth2`.
fn xoauth2_user(out: &RunResult) -> String {
    let raw = STANDARD.decode(out.stdout.trim()).unwrap();
    let text = String::from_utf8(raw).unwrap();
    text.split('\u{1}')
        .next()
        .unwrap()
        .trim_start_matches("user=")
        .to_string()
}

#[test]
fn the_snapshot_serves_while_the_config_is_unchanged_and_never_after() {
    let env = setup();
    let path = snapshot(&env, "work");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("# mailtoken config snapshot 3: "),
        "{text}"
    );
    assert!(
        !text.contains("nouser") && !text.contains("stale"),
        "{text}"
    );
    assert_private(&path);
    // Proof that the quick path answers from the snapshot: edit the user there (keeping the
    // stamp), and that user is what comes out, while the full path reads the config.
    std::fs::write(&path, text.replace(USER, "snapshot@example.com")).unwrap();
    let args = ["token", "work", "-f", "xoauth2"];
    assert_eq!(
        xoauth2_user(&run(&env, &args, true)),
        "snapshot@example.com"
    );
    assert_eq!(xoauth2_user(&run(&env, &args, false)), USER);
    // Rewrite the config with the same text: a new stamp, so the snapshot is not used (and
    // is not remade either while the file is this fresh).
    let config = std::fs::read_to_string(&env.config).unwrap();
    env.write_config(&config);
    assert_eq!(xoauth2_user(&run(&env, &args, true)), USER);
    // An edit that breaks the config is reported as ever, snapshot or not.
    env.write_config(&config.replace("refresh_margin = 60", "refresh_margin = \"soon\""));
    let broken = run(&env, &["token", "work"], true);
    assert_eq!(broken.code, Some(2), "{}", broken.all());
    broken.assert_stderr_has("line 1");
    assert!(broken.stdout.is_empty());
}

fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
}

/// A login within a day of its end (here `login_lifetime_days = 7`, logged in 6.5 days ago)
/// is told by `notify_command` whichever path a call would take: the quick path leaves such
/// a call to the full one, which tells (once an hour) and prints the cached token all the
/// same. Not near its end, nothing is told.
#[test]
fn a_login_near_its_end_is_told_even_when_the_token_is_cached() {
    let env = TestEnv::with_store();
    let log = env.data.with_file_name("told");
    let notify = format!(
        "notify_command = 'printf \"%s|%s|%s\\n\" \"$MAILTOKEN_ACCOUNT\" \"$MAILTOKEN_EVENT\" \"$MAILTOKEN_REASON\" >> {}'\n",
        log.display()
    );
    env.write_config(&format!(
        "{notify}\n{}\n{}",
        account_toml("ending", &nowhere(), "login_lifetime_days = 7"),
        account_toml("lasting", &nowhere(), "login_lifetime_days = 8")
    ));
    let logged_in = now_unix() - 6 * 86_400 - 12 * 3600;
    for account in ["ending", "lasting"] {
        env.write_token_bytes(
            account,
            serde_json::json!({"version": 1, "access_token": TOKEN, "token_type": "Bearer",
                                "expires_at": now_unix() + 3600, "refresh_token": REFRESH,
                                "logged_in_at": logged_in})
            .to_string()
            .as_bytes(),
        );
    }
    // Old enough to be snapshotted by the first call.
    std::thread::sleep(Duration::from_millis(2100));
    let told = || std::fs::read_to_string(&log).unwrap_or_default();
    for account in ["ending", "lasting"] {
        let first = run(&env, &["token", account], true);
        assert_eq!(first.code, Some(0), "{}", first.all());
        assert_eq!(first.stdout, format!("{TOKEN}\n"));
    }
    assert!(snapshot(&env, "ending").exists() && snapshot(&env, "lasting").exists());
    let lines: Vec<String> = told().lines().map(String::from).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let [account, event, reason] = lines[0].splitn(3, '|').collect::<Vec<_>>()[..] else {
        panic!("{lines:?}");
    };
    assert_eq!((account, event), ("ending", "login-ending"));
    assert!(
        reason.starts_with("the login ends in 12 h")
            || reason.starts_with("the login ends in 11 h"),
        "{reason}"
    );
    assert!(reason.contains("by login_lifetime_days"), "{reason}");
    // Within the hour: not told again, and the token still comes.
    let again = run(&env, &["token", "ending"], true);
    assert_eq!(again.stdout, format!("{TOKEN}\n"));
    assert_eq!(told().lines().count(), 1);
    // An hour later (the note of the last telling gone), the call that would be quick tells.
    std::fs::remove_file(env.data.join("ending.notified")).unwrap();
    let later = run(&env, &["token", "ending"], true);
    assert_eq!(later.stdout, format!("{TOKEN}\n"));
    assert_eq!(told().lines().count(), 2, "{}", told());
    assert!(!told().contains(TOKEN) && !told().contains(REFRESH));
}

/// While another process refreshes (here the test holds the account lock), a caller whose
/// token is due waits in the small `mailtoken` program and takes the token that process
/// stores, or reports its failure, without starting `mailtoken-full` (absent here: starting
/// it would fail). With nobody refreshing, the call goes on to the full program.
#[test]
fn a_due_token_is_waited_for_in_the_small_program() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let env = TestEnv::with_store();
    env.write_config(&account_toml("work", &nowhere(), ""));
    env.write_token_bytes(
        "work",
        serde_json::json!({"version": 1, "access_token": TOKEN, "token_type": "Bearer",
                            "expires_at": now_unix() + 3600, "refresh_token": REFRESH})
        .to_string()
        .as_bytes(),
    );
    // A snapshot for the quick path, made by a full-path call once the config is 2 s old.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(run(&env, &["token", "work"], true).code, Some(0));
    assert!(snapshot(&env, "work").exists());
    let alone = tempfile::tempdir().unwrap();
    let front = alone.path().join("mailtoken");
    std::fs::copy(bin(), &front).unwrap();
    let lock_path = env.data.join("work.lock");
    let token_path = env.data.join("work.json");
    // Due, and another process (this test) holds the lock; it then stores a token, or notes
    // a failure, and lets go: what the caller says, run as `program`.
    let wait_out = |outcome: &str, program: &std::path::Path, quick: bool| {
        env.write_token_bytes(
            "work",
            serde_json::json!({"version": 1, "access_token": "AT-expired", "token_type": "Bearer",
                                "expires_at": 1, "refresh_token": REFRESH})
            .to_string()
            .as_bytes(),
        );
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .unwrap();
        // SAFETY: flock on a descriptor this test owns.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let mut cmd = Command::new(program);
        cmd.arg("--config")
            .arg(&env.config)
            .arg("--data-dir")
            .arg(&env.data)
            .args(["token", "work"])
            .env("MAILTOKEN_QUICK", if quick { "1" } else { "0" });
        let waiter = Running::spawn(cmd, format!("mailtoken token work ({outcome})"));
        std::thread::sleep(Duration::from_millis(300));
        if outcome == "stored" {
            let fresh = serde_json::json!({"version": 1, "access_token": "AT-refreshed",
                "token_type": "Bearer", "expires_at": now_unix() + 3600, "refresh_token": REFRESH});
            let temp = env.data.join("work.json.test-tmp");
            let mut file = std::fs::File::create(&temp).unwrap();
            file.write_all(fresh.to_string().as_bytes()).unwrap();
            std::fs::rename(&temp, &token_path).unwrap();
        } else {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            let note = serde_json::json!({"at_ms": now_ms, "error": "the token server said no"});
            std::fs::write(env.data.join("work.failed"), note.to_string()).unwrap();
        }
        drop(lock);
        waiter.wait(RUN_TIMEOUT)
    };
    for (outcome, code) in [("stored", Some(0)), ("failed", Some(4))] {
        let out = wait_out(outcome, &front, true);
        assert_eq!(out.code, code, "{outcome}: {}", out.all());
        out.assert_stderr_lacks("mailtoken-full");
        if outcome == "stored" {
            assert_eq!(out.stdout, "AT-refreshed\n");
        } else {
            out.assert_stderr_has("just tried and failed");
            assert!(out.stdout.is_empty());
        }
        // The full path, waiting the same way, says the same.
        let full = wait_out(outcome, std::path::Path::new(bin()), false);
        assert_eq!(
            (full.code, &full.stdout, &full.stderr),
            (out.code, &out.stdout, &out.stderr),
            "{outcome}"
        );
    }
    // Nobody refreshing: on to the full program (which this copy lacks, and says so).
    let mut cmd = Command::new(&front);
    cmd.arg("--config")
        .arg(&env.config)
        .arg("--data-dir")
        .arg(&env.data)
        .args(["token", "work"]);
    let out = Running::spawn(cmd, "mailtoken token work (due)".into()).wait(RUN_TIMEOUT);
    out.assert_stderr_has("mailtoken-full");
}

/// What the full path refuses, the quick path refuses with the same words, however well the
/// snapshot and the cached token would serve: a config others can write, a data directory
/// others can write or that another user owns.
#[test]
fn the_quick_path_refuses_what_the_full_path_refuses() {
    use std::os::unix::fs::PermissionsExt;
    let env = setup();
    let set_mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    type Step<'a> = Box<dyn Fn() + 'a>;
    let mut cases: Vec<(&str, Step, Step)> = vec![
        (
            "config 666",
            Box::new(|| set_mode(&env.config, 0o666)),
            Box::new(|| set_mode(&env.config, 0o600)),
        ),
        (
            "data directory 777",
            Box::new(|| set_mode(&env.data, 0o777)),
            Box::new(|| set_mode(&env.data, 0o700)),
        ),
    ];
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let chown = |uid: &str| {
            let ok = std::process::Command::new("chown")
                .arg(uid)
                .arg(&env.data)
                .status()
                .unwrap()
                .success();
            assert!(ok);
        };
        cases.push((
            "data directory of another user",
            Box::new(move || chown("65534")),
            Box::new(move || chown("0")),
        ));
    }
    for (what, break_it, mend_it) in cases {
        break_it();
        let quick = run(&env, &["token", "work"], true);
        let full = run(&env, &["token", "work"], false);
        mend_it();
        assert!(matches!(quick.code, Some(1 | 2)), "{what}: {}", quick.all());
        assert!(quick.stdout.is_empty(), "{what}: {}", quick.all());
        assert_eq!(
            (quick.code, &quick.stderr),
            (full.code, &full.stderr),
            "{what}"
        );
    }
}
