//! `doctor`: a good setup, config and name errors, clock skew against a token server's Date,
//! loose store modes, missing logins and scopes, aging refresh tokens, damaged files.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use crate::support::env::*;
use crate::support::http::HttpRequest;
use crate::support::mail_servers::*;

fn http_date(t: SystemTime) -> String {
    // Formatted by hand (no date crate in the tests): IMF-fixdate.
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let days = secs / 86_400;
    let (y, m, d) = civil(days as i64);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[m as usize - 1],
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A token server that only tells the time, `offset` away from ours.
fn clock_server(offset_secs: i64) -> (u16, Seen<HttpRequest>) {
    let now = SystemTime::now();
    let t = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs((-offset_secs) as u64)
    };
    http_server(405, vec![format!("Date: {}", http_date(t))], String::new())
}

fn doctor_account(token_port: u16, extra: &str) -> String {
    format!(
        "[accounts.work]\nprovider = \"microsoft\"\nuser = \"{USER}\"\nclient_id = \"id\"\n\
         token_endpoint = \"http://127.0.0.1:{token_port}/token\"\n{extra}\n"
    )
}

fn ms_tokens(env: &TestEnv) {
    env.write_token_bytes("work", serde_json::json!({
            "version": 1,
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_at": FAR_FUTURE,
            "refresh_token": REFRESH,
            "scope": "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send",
        }).to_string().as_bytes());
}

#[test]
fn doctor_is_happy_with_a_good_setup() {
    let (port, seen) = clock_server(0);
    let env = TestEnv::with_store();
    env.write_config(&doctor_account(port, ""));
    ms_tokens(&env);
    let run = env.run(&["doctor"]);
    let req = seen.wait();
    assert_eq!(req.method, "HEAD");
    assert_eq!(run.code, Some(0), "{}", run.all());
    run.assert_stdout_has("No problems found");
    run.assert_no_secrets();
}

/// doctor exits as every command does for the same trouble: 2 for a config that does not
/// load or an account that is not in it, 1 for what it found wrong at run time.
#[test]
fn doctor_exits_2_for_config_and_name_errors() {
    let env = TestEnv::with_store();
    env.write_config("[accounts.work]\nprovider = \"nope\"\n");
    let run = env.run(&["doctor"]);
    assert_eq!(run.code, Some(2), "{}", run.all());
    run.assert_stdout_has("does not load");
    let env = TestEnv::logged_in(&account_toml("work", &nowhere(), ""));
    let run = env.run(&["doctor", "missing"]);
    assert_eq!(run.code, Some(2), "{}", run.all());
    run.assert_stdout_has("no such account");
    // The same as `token` says of them.
    assert_eq!(env.run(&["token", "missing"]).code, Some(2));
}

#[test]
fn doctor_reports_clock_skew() {
    let (port, seen) = clock_server(-3600);
    let env = TestEnv::with_store();
    env.write_config(&doctor_account(port, ""));
    ms_tokens(&env);
    let run = env.run(&["doctor", "work"]);
    let _ = seen.wait();
    assert_eq!(run.code, Some(1), "{}", run.all());
    run.assert_stdout_has("clock is 1 h 0 min ahead of");
    run.assert_stdout_has("fix: ");
}

#[test]
fn doctor_names_the_config_line() {
    let env = TestEnv::with_store();
    env.write_config(&doctor_account(closed_port(), "smtp_prot = 587"));
    let run = env.run(&["doctor"]);
    assert_eq!(run.code, Some(2), "{}", run.all());
    run.assert_stdout_has("line 6");
    run.assert_stdout_has("smtp_prot");
}

#[test]
fn doctor_reports_loose_store_modes_and_changes_nothing() {
    let (port, _seen) = clock_server(0);
    let env = TestEnv::with_store();
    env.write_config(&doctor_account(port, ""));
    ms_tokens(&env);
    let path = env.token_path("work");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&env.data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = std::fs::read(&path).unwrap();
    let run = env.run(&["doctor"]);
    assert_eq!(run.code, Some(1), "{}", run.all());
    run.assert_stdout_has("chmod 600");
    run.assert_stdout_has("chmod 700");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o644, "doctor must not change modes");
    assert_eq!(mode(&env.data), 0o755);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    run.assert_no_secrets();
}

#[test]
fn doctor_reports_missing_login_and_offline_access() {
    let (port, _seen) = clock_server(0);
    let env = TestEnv::with_store();
    env.write_config(&doctor_account(
        port,
        "scopes = [\"https://outlook.office.com/IMAP.AccessAsUser.All\"]",
    ));
    let run = env.run(&["doctor"]);
    assert_eq!(run.code, Some(1), "{}", run.all());
    run.assert_stdout_has("error [work]: not logged in");
    run.assert_stdout_has("offline_access is missing");
    run.assert_stdout_has("mailtoken login work");
}

#[test]
fn doctor_warns_about_app_only_scopes_with_a_user_flow() {
    let (port, _seen) = clock_server(0);
    let env = TestEnv::with_store();
    env.write_config(&doctor_account(
        port,
        "scopes = [\"https://outlook.office365.com/.default\", \"offline_access\"]",
    ));
    ms_tokens(&env);
    let run = env.run(&["doctor"]);
    // A warning (and the granted-scope warning) only: exit 0.
    assert_eq!(run.code, Some(0), "{}", run.all());
    run.assert_stdout_has(
        "warning [work]: scope `https://outlook.office365.com/.default` is an app-only",
    );
}

#[test]
fn doctor_flags_a_refresh_token_near_or_past_microsofts_90_days() {
    for (days, level, code) in [(80u64, "warning", 0), (95, "error", 1)] {
        let (port, _seen) = clock_server(0);
        let env = TestEnv::with_store();
        env.write_config(&doctor_account(port, ""));
        ms_tokens(&env);
        let old = SystemTime::now() - Duration::from_secs(days * 86_400);
        std::fs::File::options()
            .write(true)
            .open(env.token_path("work"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let run = env.run(&["doctor"]);
        assert_eq!(run.code, Some(code), "{}", run.all());
        let what = format!("{level} [work]: the refresh token was last used {days} days ago");
        run.assert_stdout_has(&what);
    }
}

#[test]
fn doctor_reports_a_damaged_token_file_and_leaves_it() {
    let (port, _seen) = clock_server(0);
    let env = TestEnv::with_store();
    env.write_config(&doctor_account(port, ""));
    std::fs::write(env.token_path("work"), b"{not json").unwrap();
    std::fs::set_permissions(
        env.token_path("work"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let run = env.run(&["doctor"]);
    assert_eq!(run.code, Some(1), "{}", run.all());
    run.assert_stdout_has("is damaged");
    assert_eq!(std::fs::read(env.token_path("work")).unwrap(), b"{not json");
}

/// What breaks `token` or `proxy`, found by doctor: a placeholder client id, a lock file of
/// another user, a data directory that cannot be written, a proxy listener on the network
/// without TLS and a password. And no warning for short-lived tokens, which are handled.
#[test]
fn doctor_finds_what_breaks_token_and_the_proxy() {
    let (port, _seen) = clock_server(0);
    let env = TestEnv::with_store();
    env.write_config(&format!(
        "[proxy]\nimap = \"0.0.0.0:1143\"\nsmtp = \"localhost:x\"\n\n{}",
        doctor_account(port, "").replace("client_id = \"id\"", "client_id = \"YOUR-APP-ID\"")
    ));
    env.write_token_bytes("work", serde_json::json!({
            "version": 1, "access_token": TOKEN, "token_type": "Bearer",
            "obtained_at": 1_000, "expires_at": 1_300, "refresh_token": REFRESH,
            "scope": "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send",
        }).to_string().as_bytes());
    let lock = env.data.join("work.lock");
    std::fs::write(&lock, "").unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let immutable = root
        && std::process::Command::new("chattr")
            .arg("+i")
            .arg(&env.data)
            .status()
            .is_ok_and(|s| s.success());
    if root {
        let ok = std::process::Command::new("chown")
            .arg("65534")
            .arg(&lock)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    let run = env.run(&["doctor"]);
    if immutable {
        std::process::Command::new("chattr")
            .arg("-i")
            .arg(&env.data)
            .status()
            .unwrap();
    }
    let out = run.all();
    // Exit 2: among the errors, settings that cannot work as written.
    assert_eq!(run.code, Some(2), "{out}");
    assert!(
        out.contains("client_id is the example's placeholder `YOUR-APP-ID`"),
        "{out}"
    );
    assert!(
        out.contains("[proxy] imap = \"0.0.0.0:1143\" listens off this machine without local TLS"),
        "{out}"
    );
    assert!(
        out.contains("[proxy] smtp = \"localhost:x\" is not an address"),
        "{out}"
    );
    assert!(!out.contains("refresh_margin"), "a false warning: {out}");
    if root {
        assert!(
            out.contains(&format!(
                "the lock file {} belongs to uid 65534",
                lock.display()
            )),
            "{out}"
        );
    }
    if immutable {
        assert!(
            out.contains(&format!(
                "the token store {} cannot be written",
                env.data.display()
            )),
            "{out}"
        );
    }
}

/// Offline, every server doctor would ask is one line: which one, why, and that the rest was
/// checked all the same; no repetition per address of it, no stack of errors.
#[test]
fn doctor_offline_says_each_unreachable_server_once() {
    let port = closed_port();
    let env = TestEnv::with_store();
    // Two token endpoints on one server: two clock checks, one line.
    env.write_config(&format!(
        "{}\n{}",
        doctor_account(port, ""),
        doctor_account(port, "")
            .replace("[accounts.work]", "[accounts.home]")
            .replace("/token", "/other/token")
    ));
    ms_tokens(&env);
    std::fs::copy(env.token_path("work"), env.token_path("home")).unwrap();
    let run = env.run(&["doctor"]);
    let host = format!("127.0.0.1:{port}");
    let lines: Vec<&str> = run.stdout.lines().filter(|l| l.contains(&host)).collect();
    assert_eq!(lines.len(), 1, "{}", run.all());
    assert!(
        lines[0].starts_with(&format!(
            "warning: cannot reach {host} (connection refused)"
        )),
        "{}",
        run.all()
    );
    assert!(
        lines[0].contains("the rest was checked offline"),
        "{}",
        run.all()
    );
    run.assert_stdout_lacks("error sending request")
        .assert_stdout_lacks("os error")
        .assert_stdout_lacks("cannot check the clock");
    assert_eq!(run.code, Some(0), "{}", run.all());
}
