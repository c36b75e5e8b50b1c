//! Bad local input: damaged or foreign token files, a lock file that is a directory, a data
//! directory that cannot be written, broken configs. Each must be a clear error that names
//! the file (and the line, for the config), with the documented exit code, nothing
//! overwritten, and, where the store cannot be written, no refresh token spent on a server.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::env::*;
use crate::support::oauth_server::*;

const SEED_AT: &str = "at-local-seed-secret";
const SEED_RT: &str = "rt-local-seed-secret";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Token files that do not parse. Each is kept byte for byte; none may cause a request.
const DAMAGED: &[(&str, &[u8])] = &[
    ("garbage", b"\x00\xffnot json\n"),
    ("empty", b""),
    (
        "truncated",
        br#"{"version":1,"access_token":"at-local-seed-secret","token_type":"Bearer","expi"#,
    ),
    (
        "a newer format",
        br#"{"version":2,"refresh_token":"rt-local-seed-secret"}"#,
    ),
    ("no token at all", br#"{"version":1}"#),
    ("a JSON array", b"[1,2,3]"),
    (
        "an access token of the wrong type",
        br#"{"version":1,"access_token":7,"token_type":"Bearer","expires_at":1}"#,
    ),
];

#[test]
fn damaged_token_files_are_named_kept_and_never_refreshed() {
    let server = FakeServer::start();
    server.add_refresh_token(SEED_RT);
    for (what, bytes) in DAMAGED {
        let env = TestEnv::new(&server);
        let path = env.write_token_bytes(ACCOUNT, bytes);
        for args in [
            &["token", ACCOUNT][..],
            &["token", ACCOUNT, "--force-refresh"],
            &["refresh", ACCOUNT],
        ] {
            let r = env.run(args);
            let context = format!("{what}, `{}`:\n{}", args.join(" "), r.stderr);
            assert_eq!(r.code, Some(1), "{context}");
            r.noting(what)
                .assert_stderr_has(&path.display().to_string())
                .assert_stderr_has("damaged")
                .assert_stderr_lacks(SEED_AT)
                .assert_stderr_lacks(SEED_RT);
            assert_eq!(std::fs::read(&path).unwrap(), *bytes, "{context}");
        }
        // status reports the problem in full, and its exit code says there is one.
        let status = env.run(&["status", ACCOUNT]);
        status.expect_code(1);
        status.assert_stdout_has("damaged");
    }
    assert_eq!(
        server.total(),
        0,
        "a damaged store must not lead to any request"
    );
}

#[test]
fn a_directory_where_the_token_file_belongs_is_an_error_naming_it() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    env.ensure_data_dir();
    std::fs::create_dir(env.token_path(ACCOUNT)).unwrap();
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(1);
    r.assert_stderr_has("work.json");
    assert!(env.token_path(ACCOUNT).is_dir());
    assert_eq!(server.total(), 0);
}

#[test]
fn a_token_file_another_user_owns_is_refused_and_left_alone() {
    if !is_root() {
        eprintln!("skipped: changing a file's owner needs root");
        return;
    }
    let server = FakeServer::start();
    server.add_refresh_token(SEED_RT);
    let env = TestEnv::new(&server);
    // Expired, so that using it would also mean replacing it with a file we own.
    let bytes = env.write_token(ACCOUNT, SEED_AT, SEED_RT, now_unix() - 60);
    let path = env.token_path(ACCOUNT);
    std::os::unix::fs::chown(&path, Some(4242), Some(4242)).unwrap();
    for args in [&["token", ACCOUNT][..], &["refresh", ACCOUNT]] {
        let r = env.run(args);
        assert_eq!(r.code, Some(1), "`{}`:\n{}", args.join(" "), r.stderr);
        r.assert_stderr_has("uid 4242");
        r.assert_stderr_has(&path.display().to_string());
        assert_eq!(r.stdout, "", "a foreign token must not be printed");
    }
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), 4242);
    assert_eq!(server.total(), 0);
}

#[test]
fn a_lock_file_that_is_a_directory_stops_the_refresh_before_any_request() {
    let server = FakeServer::start();
    server.add_refresh_token(SEED_RT);
    let env = TestEnv::new(&server);
    let bytes = env.write_token(ACCOUNT, SEED_AT, SEED_RT, now_unix() - 60);
    std::fs::create_dir(env.data.join("work.lock")).unwrap();
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(1);
    r.assert_stderr_has("work.lock");
    r.assert_stderr_has("is a directory");
    assert_eq!(env.token_bytes(ACCOUNT).unwrap(), bytes);
    assert_eq!(server.total(), 0);
    // A cached token needs no lock, so it is still handed out.
    env.write_token(ACCOUNT, SEED_AT, SEED_RT, now_unix() + 3600);
    let cached = env.run(&["token", ACCOUNT]);
    cached.expect_code(0);
    assert_eq!(cached.stdout.trim(), SEED_AT);
}

#[test]
fn a_data_dir_under_a_regular_file_is_an_error_naming_it() {
    let server = FakeServer::start();
    server.push_polls(&[Poll::Success]);
    let env = TestEnv::new(&server);
    let blocker = env.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "a regular file").unwrap();
    let data = blocker.join("data");
    let run = |args: &[&str]| {
        let mut cmd = env.bare_command();
        cmd.arg("--config")
            .arg(&env.config)
            .arg("--data-dir")
            .arg(&data);
        cmd.args(args);
        Running::spawn(cmd, args.join(" ")).wait(RUN_TIMEOUT)
    };
    let login = run(&["login", ACCOUNT]);
    login.expect_code(1);
    login.assert_stderr_has("not-a-dir");
    assert_eq!(
        server.total(),
        0,
        "nobody should approve a login whose tokens cannot be stored"
    );
    let token = run(&["token", ACCOUNT]);
    token.expect_code(1);
    token.assert_stderr_has("not-a-dir");
    assert_eq!(std::fs::read_to_string(&blocker).unwrap(), "a regular file");
}

/// A directory nothing can be created in, even by root (chattr +i), or by mode 0500 for
/// others. Undone on drop so the temp dir can be removed.
struct Unwritable(PathBuf);

impl Unwritable {
    fn make(dir: &Path) -> Option<Unwritable> {
        let ok = if is_root() {
            Command::new("chattr")
                .arg("+i")
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success())
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o500)).is_ok()
        };
        let guard = Unwritable(dir.to_path_buf());
        (ok && std::fs::write(dir.join("probe"), "").is_err()).then_some(guard)
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o700));
    }
}

#[test]
fn an_unwritable_data_dir_is_found_before_the_server_spends_the_refresh_token() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Rotate);
    server.add_refresh_token(SEED_RT);
    server.push_polls(&[Poll::Success]);
    let env = TestEnv::new(&server);
    let bytes = env.write_token(ACCOUNT, SEED_AT, SEED_RT, now_unix() - 60);
    // The lock file exists from earlier runs, as it would in real use.
    std::fs::write(env.data.join("work.lock"), "").unwrap();
    let Some(_guard) = Unwritable::make(&env.data) else {
        eprintln!("skipped: cannot make a directory unwritable here");
        return;
    };
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(1);
    r.assert_stderr_has(&env.data.display().to_string());
    assert_eq!(
        server.count(Kind::Refresh),
        0,
        "the refresh must not be sent when its answer cannot be stored"
    );
    assert!(server.is_valid_refresh_token(SEED_RT));
    assert_eq!(env.token_bytes(ACCOUNT).unwrap(), bytes);

    let login = env.run(&["login", ACCOUNT]);
    login.expect_code(1);
    assert_eq!(
        server.count(Kind::Device),
        0,
        "no login that cannot be stored"
    );
}

/// Configs that cannot be read: each names the file and the line.
const BAD_CONFIGS: &[(&str, &str, &str)] = &[
    (
        "an unknown key",
        "[accounts.work]\nprovider = \"generic\"\nclient_id = \"x\"\ntoken_endpoint = \"http://127.0.0.1:9/t\"\nscopes = [\"m\"]\nrefresh_marign = 5\n",
        "line 6",
    ),
    (
        "an unknown top-level key",
        "verbose = true\n[accounts.work]\nprovider = \"generic\"\nclient_id = \"x\"\n",
        "line 1",
    ),
    (
        "a string where a list belongs",
        "[accounts.work]\nprovider = \"generic\"\nclient_id = \"x\"\ntoken_endpoint = \"http://127.0.0.1:9/t\"\nscopes = \"mail\"\n",
        "line 5",
    ),
    (
        "a negative margin",
        "refresh_margin = -5\n[accounts.work]\nprovider = \"google\"\nclient_id = \"x\"\n",
        "line 1",
    ),
    (
        "an unknown provider",
        "[accounts.work]\nprovider = \"outlook\"\nclient_id = \"x\"\n",
        "line 2",
    ),
    (
        "the same account twice",
        "[accounts.work]\nprovider = \"google\"\nclient_id = \"x\"\n\n[accounts.work]\nprovider = \"google\"\nclient_id = \"y\"\n",
        "line 5",
    ),
    (
        "a key twice",
        "[accounts.work]\nprovider = \"google\"\nclient_id = \"x\"\nclient_id = \"y\"\n",
        "line 4",
    ),
    (
        "a client secret written into the config",
        "[accounts.work]\nprovider = \"google\"\nclient_id = \"x\"\nclient_secret = \"cfg-secret-value-123\"\n",
        "line 4",
    ),
];

#[test]
fn broken_configs_name_file_and_line_and_change_nothing() {
    for (what, text, line) in BAD_CONFIGS {
        let env = TestEnv::with_config_text(text);
        let token = env.write_token(ACCOUNT, SEED_AT, SEED_RT, now_unix() - 60);
        let config_path = env.config.display().to_string();
        for args in [
            &["token", ACCOUNT][..],
            &["login", ACCOUNT],
            &["refresh", "--all"],
            &["add", "other", "--provider", "google", "--client-id", "y"],
        ] {
            let r = env.run(args);
            let context = format!("{what}, `{}`:\n{}", args.join(" "), r.stderr);
            assert_eq!(r.code, Some(2), "{context}");
            // toml quotes the offending line by default; that line may hold a secret.
            r.noting(what)
                .assert_stderr_has(&config_path)
                .assert_stderr_has(line)
                .assert_stderr_lacks("cfg-secret-value-123");
            assert_eq!(
                std::fs::read_to_string(&env.config).unwrap(),
                *text,
                "{context}"
            );
            assert_eq!(env.token_bytes(ACCOUNT).unwrap(), token, "{context}");
        }
    }
}

/// Token "files" that are not files, or are far too big: each is refused at once, by
/// `token`, `status` and `doctor`, without a read that hangs or fills memory.
#[test]
fn fifos_links_to_devices_and_huge_files_are_refused_without_reading_them() {
    let server = FakeServer::start();
    type Make = fn(&Path);
    let cases: [(&str, Make, &str); 3] = [
        (
            "a FIFO",
            |p| {
                let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: a valid C string path; mkfifo only creates a file.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            },
            "not a regular file",
        ),
        (
            "a link to /dev/zero",
            |p| std::os::unix::fs::symlink("/dev/zero", p).unwrap(),
            "symbolic link",
        ),
        (
            "a 1 GB sparse file",
            |p| {
                let f = std::fs::File::create(p).unwrap();
                f.set_len(1 << 30).unwrap();
                std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .unwrap();
            },
            "far more than any token file",
        ),
    ];
    for (what, make, says) in cases {
        let env = TestEnv::new(&server);
        env.ensure_data_dir();
        make(&env.token_path(ACCOUNT));
        for args in [
            &["token", ACCOUNT][..],
            &["status", ACCOUNT],
            &["doctor", ACCOUNT],
        ] {
            let out = Running::spawn(env.command(args), format!("{what}: {args:?}"))
                .wait(Duration::from_secs(20));
            assert_ne!(out.code, Some(0), "{what}: {args:?}");
            assert!(out.all().contains(says), "{what}: {args:?}\n{}", out.all());
        }
    }
    assert_eq!(server.count(Kind::Refresh), 0);
}

#[test]
fn a_data_dir_given_on_the_command_line_is_never_chmod_ed_and_refused_if_others_can_write() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    std::fs::create_dir_all(&env.data).unwrap();
    let set = |mode: u32| {
        std::fs::set_permissions(
            &env.data,
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .unwrap()
    };
    // As /tmp is: everyone may write. As root, tightening it would lock every user out.
    set(0o1777);
    let out = env.run(&["login", ACCOUNT]);
    out.expect_code(1);
    out.assert_stderr_has("other users can write");
    assert_eq!(env.data.metadata().unwrap().mode() & 0o7777, 0o1777);
    assert_eq!(server.total(), 0, "nothing asked of the server");

    // Readable by others only: used as it is (the token files themselves are 0600).
    set(0o755);
    server.push_polls(&[Poll::Success]);
    env.run(&["login", ACCOUNT]).expect_code(0);
    assert_eq!(env.data.metadata().unwrap().mode() & 0o7777, 0o755);
    assert_eq!(mode_of(&env.token_path(ACCOUNT)), 0o600);
}

#[test]
fn the_default_data_dir_is_mailtokens_own_and_is_tightened() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    let default = env.home.join(".local/share/mailtoken");
    std::fs::create_dir_all(&default).unwrap();
    std::fs::set_permissions(
        &default,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    server.push_polls(&[Poll::Success]);
    let mut cmd = env.bare_command();
    cmd.arg("--config")
        .arg(&env.config)
        .args(["login", ACCOUNT]);
    let out = Running::spawn(cmd, "login with the default data dir".into()).wait(RUN_TIMEOUT);
    out.expect_code(0);
    assert_eq!(mode_of(&default), 0o700);
    out.assert_stderr_has("was accessible to other users");
}

#[test]
fn commands_in_a_config_others_can_write_are_never_run() {
    let server = FakeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let env = TestEnv::with_extra(
        &server,
        "",
        &format!(
            "store = \"command\"\nstore_load_command = \"touch {}; echo\"\n\
             store_save_command = \"cat > /dev/null\"\n",
            ran.display()
        ),
    );
    let chmod = |mode: u32| {
        std::fs::set_permissions(
            &env.config,
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .unwrap()
    };
    chmod(0o666);
    // status only looks: it says what is wrong and runs nothing; token refuses.
    let look = env.run(&["status", ACCOUNT]);
    look.expect_code(0);
    look.assert_stdout_has("its load command is not run");
    look.assert_stderr_has("chmod go-w");
    let out = env.run(&["token", ACCOUNT]);
    out.expect_code(2);
    out.assert_stderr_has("can be written by other users");
    out.assert_stderr_has("chmod go-w");
    assert!(!ran.exists(), "the command ran");
    let doctor = env.run(&["doctor"]);
    doctor.assert_stdout_has("can be written by other users");
    assert!(!ran.exists(), "doctor ran the command");

    chmod(0o600);
    env.run(&["status", ACCOUNT]).expect_code(0);
    assert!(ran.exists());
}
