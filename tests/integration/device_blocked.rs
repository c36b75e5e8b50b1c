//! A device login the tenant's Conditional Access blocks (AADSTS53003), in each shape the
//! fake server can answer it: an OAuth error when the login starts or at a poll, or an HTML
//! page. A script gets the refusal and the fix in one line; a person at a terminal goes on
//! with the browser login at once, pasting the address back over SSH.

use std::path::Path;
use std::time::Duration;

use crate::support::env::*;
use crate::support::http::{parse_form, url_encode};
use crate::support::oauth_server::*;

const BLOCKED_JSON: &str = r#"{"error":"access_denied","error_description":"AADSTS53003: Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.\r\nTrace ID: 0000\r\nCorrelation ID: 1111","error_codes":[53003]}"#;

/// Microsoft's sign-in error page, with something that must never be quoted.
const BLOCKED_PAGE: &str = "<!DOCTYPE html><html><head><title>Sign in</title></head><body>\
<div id=\"error\">AADSTS53003: Access has been blocked by Conditional Access policies.</div>\
<script>var $Config={\"sessionId\":\"page-secret-0123\"};</script></body></html>";

/// Where the server blocks the login, and how.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// An OAuth error from the device authorization endpoint.
    JsonAtStart,
    /// An OAuth error at the first poll, after the person entered the code.
    JsonAtPoll,
    /// An HTML page from the device authorization endpoint.
    PageAtStart,
}

const SHAPES: [Shape; 3] = [Shape::JsonAtStart, Shape::JsonAtPoll, Shape::PageAtStart];

/// A server that blocks the device login as `shape` says; its account can do the browser
/// flow too.
fn blocking(shape: Shape) -> (FakeServer, TestEnv) {
    let server = FakeServer::start();
    server.set_interval(Some(1));
    match shape {
        Shape::JsonAtStart => {
            server.set_fault(Kind::Device, Fault::json(400, BLOCKED_JSON));
        }
        Shape::JsonAtPoll => server.set_fault(Kind::Poll, Fault::json(400, BLOCKED_JSON)),
        Shape::PageAtStart => {
            server.set_fault(
                Kind::Device,
                Fault::text(400, "text/html; charset=utf-8", BLOCKED_PAGE),
            );
        }
    }
    let extra = format!(
        "authorization_endpoint = \"{}/authorize\"",
        server.base_url()
    );
    let env = TestEnv::with_extra(&server, "", &extra);
    (server, env)
}

const TOLD: &str =
    "the device-code login is blocked by the tenant's Conditional Access (AADSTS53003)";

/// The one line a script gets: what happened and the fix.
#[track_caller]
fn assert_refusal(output: &str, shape: Shape) {
    let line = output
        .lines()
        .map(str::trim_end)
        .find(|l| l.starts_with("mailtoken: ") && l.contains(TOLD))
        .unwrap_or_else(|| panic!("{shape:?}: no refusal line in:\n{output}"));
    assert_eq!(
        line,
        format!(
            "mailtoken: {TOLD}: log in with `mailtoken login {ACCOUNT} --browser` \
             (set flow = \"browser\" in the account to make it the default)"
        ),
        "{shape:?}"
    );
}

/// Not at a terminal (a script): exit 3 and the refusal with its fix, no browser login
/// started, nothing stored, and nothing of the page quoted.
#[test]
fn a_script_is_told_the_device_login_is_blocked_and_the_fix() {
    for shape in SHAPES {
        let (server, env) = blocking(shape);
        let r = env.run(&["login", ACCOUNT]);
        r.noting(format!("{shape:?}")).expect_code(3);
        assert_refusal(&r.stderr, shape);
        r.assert_stderr_lacks("/authorize?")
            .assert_stderr_lacks("continuing with the browser")
            .assert_no_leak(&["page-secret-0123", "Sign in", DEVICE_CODE]);
        assert_eq!(server.count(Kind::Code), 0, "{shape:?}");
        let polls = match shape {
            Shape::JsonAtPoll => 1,
            _ => 0,
        };
        assert_eq!(server.count(Kind::Poll), polls, "{shape:?}");
        assert!(!env.token_path(ACCOUNT).exists(), "{shape:?}");
    }
}

/// `--device` at a terminal: the person asked for that flow, so it is the refusal again.
#[test]
fn an_explicit_device_login_does_not_fall_back() {
    let (server, env) = blocking(Shape::JsonAtStart);
    let login = Interactive::at_terminal(env.command(&["login", ACCOUNT, "--device"]));
    let r = login.wait(Duration::from_secs(30));
    assert_eq!(r.code, Some(3), "{}", r.all());
    assert_refusal(&r.stdout, Shape::JsonAtStart);
    r.assert_stdout_lacks("/authorize?");
    assert_eq!(server.count(Kind::Code), 0);
}

/// The query of the authorization address in `line`.
fn query_of(line: &str) -> std::collections::HashMap<String, String> {
    let url = line.trim().rsplit(' ').next().unwrap();
    let query = url.split_once('?').map_or("", |(_, q)| q);
    parse_form(query.as_bytes())
}

/// At a terminal over SSH: the one line, then the browser login at once, in paste mode (no
/// listener: the redirect URI is the registered one, without a port); the pasted address
/// completes the login.
#[test]
fn at_a_terminal_over_ssh_the_login_goes_on_by_pasting_the_address() {
    for shape in SHAPES {
        let (server, env) = blocking(shape);
        let mut cmd = env.command(&["login", ACCOUNT]);
        cmd.env("SSH_CONNECTION", "192.0.2.1 50000 192.0.2.2 22")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        let mut login = Interactive::at_terminal(cmd);
        let told = login.wait_for_line(TOLD, Duration::from_secs(30));
        // At a poll, the line follows the countdown's, cleared with "\r\x1b[K".
        let told = told.trim_end().rsplit("\x1b[K").next().unwrap();
        assert_eq!(
            told,
            format!("mailtoken: {TOLD}; continuing with the browser login."),
            "{shape:?}"
        );
        let query = query_of(&login.wait_for_line("/authorize?", Duration::from_secs(20)));
        let redirect = query["redirect_uri"].clone();
        assert_eq!(
            redirect, "http://127.0.0.1/",
            "{shape:?}: paste mode sends no port"
        );
        login.wait_for_line("paste it here", Duration::from_secs(20));
        let code = server.issue_code(&query["code_challenge"], &redirect);
        login.type_line_and_wait(&format!(
            "{redirect}?code={code}&state={}",
            url_encode(&query["state"])
        ));
        let r = login.wait(Duration::from_secs(30));
        assert_eq!(r.code, Some(0), "{shape:?}: {}", r.all());
        r.assert_stdout_has(&format!("Logged in account `{ACCOUNT}`"))
            .assert_no_leak(&["page-secret-0123"]);
        assert_eq!(server.count(Kind::Code), 1, "{:?}", server.last_refusal());
        assert!(env.token_path(ACCOUNT).exists(), "{shape:?}");
    }
}

/// At a terminal on a desktop (DISPLAY set, not over SSH): the browser is started on the
/// address, and its return to the loopback listener completes the login.
#[test]
fn at_a_desktop_the_browser_is_started_and_caught() {
    let (server, env) = blocking(Shape::PageAtStart);
    let bin_dir = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let opened = env.dir.path().join("opened");
    fake_opener(&bin_dir.join("xdg-open"), &opened);
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = env.command(&["login", ACCOUNT]);
    cmd.env("DISPLAY", ":99")
        .env("PATH", path)
        .env_remove("SSH_CONNECTION")
        .env_remove("SSH_TTY");
    let mut login = Interactive::at_terminal(cmd);
    login.wait_for_line(TOLD, Duration::from_secs(30));
    let line = login.wait_for_line("/authorize?", Duration::from_secs(20));
    let query = query_of(&line);
    let redirect = query["redirect_uri"].clone();
    assert!(redirect.starts_with("http://127.0.0.1:"), "{redirect}");
    let code = server.issue_code(&query["code_challenge"], &redirect);
    let port = crate::flows::port_of(&redirect);
    let (status, page) = raw_request(
        ([127, 0, 0, 1], port).into(),
        format!(
            "GET /?code={code}&state={} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n",
            url_encode(&query["state"])
        )
        .as_bytes(),
    );
    assert_eq!(status, 200, "{page}");
    let r = login.wait(Duration::from_secs(30));
    assert_eq!(r.code, Some(0), "{}", r.all());
    let opened = std::fs::read_to_string(&opened).expect("the browser was not started");
    assert!(
        opened.contains("/authorize?") && opened.contains(&url_encode(&query["state"])),
        "{opened}"
    );
    assert!(env.token_path(ACCOUNT).exists());
}

/// An `xdg-open` that writes the address it was given to `log`.
fn fake_opener(path: &Path, log: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(
        path,
        format!("#!/bin/sh\nprintf '%s\\n' \"$1\" > '{}'\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A refresh that Conditional Access refuses (a tenant that blocks the device-code login
/// refuses the refreshes of logins made with it): `token` says to log in in the browser, and
/// `doctor` how to make that the account's default.
#[test]
fn a_blocked_refresh_points_at_the_browser_login_and_doctor_at_the_default() {
    let server = FakeServer::start();
    let blocked = BLOCKED_JSON.replace("access_denied", "invalid_grant");
    server.set_fault(Kind::Refresh, Fault::json(400, &blocked));
    let env = TestEnv::with_extra(&server, "", "");
    env.write_token(ACCOUNT, TOKEN, REFRESH, now_unix() - 10);
    let r = env.run(&["token", ACCOUNT]);
    r.expect_code(3)
        .assert_stderr_has(&format!("`mailtoken login {ACCOUNT} --browser`"))
        .assert_no_secrets();
    let r = env.run(&["doctor", ACCOUNT]);
    r.assert_stdout_has("the provider refused the stored login")
        .assert_stdout_has(&format!(
            "fix: `mailtoken login {ACCOUNT} --browser`; to make the browser login the default, \
             set flow = \"browser\" in [accounts.{ACCOUNT}]"
        ))
        .assert_stdout_has("Mobile and desktop applications");
}
