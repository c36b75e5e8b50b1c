//! The proxy's logins upstream: an account two share, try-later, refusals redacted and forced
//! refreshes bounded, and a stop while a refresh is under way.

use std::io::Write;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::proxy::{Proxy, free_port, upstream_keys};
use crate::proxy_guard::Untouched;
use crate::support::env::*;
use crate::support::mail_servers::*;
use crate::support::oauth_server::{FakeServer, Kind, Poll, Refresh, USER_CODE, VERIFICATION_URI};

/// Two accounts with the same user: a login by that user is refused with both names, never
/// sent to one of them; by name it works; the proxy says so when it starts.
#[test]
fn a_user_two_accounts_share_is_never_guessed() {
    let (upstream, seen) = imap_server(xoauth2(USER, TOKEN), true);
    let env = TestEnv::with_store();
    let port = free_port();
    env.write_config(&format!(
        "[proxy]\nimap = \"127.0.0.1:{port}\"\n{}{}",
        account_toml("home", &nowhere(), "smtp_host = \"127.0.0.1\""),
        account_toml("work", &nowhere(), &upstream_keys("imap", upstream))
    ));
    env.write_token("work", TOKEN, REFRESH, FAR_FUTURE);
    env.write_token("home", TOKEN, REFRESH, FAR_FUTURE);
    let proxy = Proxy::launch(env, port);
    let mut c = proxy.connect();
    c.line();
    c.send(&format!("a1 LOGIN {USER} pw"));
    let no = c.line();
    assert!(
        no.starts_with("a1 NO [AUTHENTICATIONFAILED] mailtoken: log in as `home` or `work`"),
        "{no}"
    );
    c.send("a2 LOGIN work pw");
    assert!(c.until("a2 ").last().unwrap().starts_with("a2 OK"));
    c.send("a3 LOGOUT");
    c.until("a3 ");
    assert!(seen.wait().logout);
    let mut proxy = proxy;
    let log = proxy.stop_here();
    log.assert_stderr_has("accounts home, work share the user alice@example.com");
    log.assert_stderr_has("ambiguous account");
    let doctor = proxy.env.run(&["doctor"]);
    assert!(
        doctor
            .all()
            .contains("accounts home, work share the user alice@example.com"),
        "{}",
        doctor.all()
    );
}

/// An upstream that says "try later" stays "try later" for the program in every protocol;
/// and the log has one line per refusal, with its reason and the session's id.
#[test]
fn try_later_stays_try_later() {
    let upstream = raw_mail_server(
        "imap",
        "a2 NO [UNAVAILABLE] Temporary authentication failure",
    );
    let proxy = Proxy::start("imap", upstream, "");
    let mut c = proxy.connect();
    c.line();
    c.send("a1 LOGIN work pw");
    let no = c.line();
    assert!(
        no.starts_with("a1 NO [UNAVAILABLE] mailtoken: try again later"),
        "{no}"
    );
    let log = proxy.stop();
    log.assert_stderr_has("#1 imap 127.0.0.1:")
        .assert_stderr_has("upstream unreachable");

    let upstream = raw_mail_server("smtp", "454 4.7.0 Temporary authentication failure");
    let proxy = Proxy::start("smtp", upstream, "");
    let mut c = proxy.connect();
    c.line();
    c.send(&format!(
        "AUTH PLAIN {}",
        STANDARD.encode(format!("\0{USER}\0pw"))
    ));
    let no = c.line();
    assert!(
        no.starts_with("454 4.7.0 mailtoken: try again later"),
        "{no}"
    );

    let upstream = raw_mail_server("pop", "-ERR [SYS/TEMP] try later");
    let proxy = Proxy::start("pop", upstream, "");
    let mut c = proxy.connect();
    c.line();
    c.send(&format!("USER {USER}"));
    c.line();
    c.send("PASS pw");
    let no = c.line();
    assert!(
        no.starts_with("-ERR [SYS/TEMP] mailtoken: try again later"),
        "{no}"
    );
}

/// A mail server that greets, takes authentications, and answers each with `refusal`, where
/// `{token}` stands for the token the proxy sent (a server that echoes it).
fn raw_mail_server(service: &'static str, refusal: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let deadline = Instant::now() + WAIT;
        listener.set_nonblocking(true).unwrap();
        while Instant::now() < deadline {
            let Ok((s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut r = std::io::BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut line = String::new();
            let mut token = String::new();
            let greeting: &[u8] = match service {
                "imap" => b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] raw\r\n",
                "pop" => b"+OK raw\r\n",
                _ => b"220 raw ESMTP\r\n",
            };
            let _ = w.write_all(greeting);
            loop {
                line.clear();
                if std::io::BufRead::read_line(&mut r, &mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(sent) = line.split_whitespace().find_map(bearer_of) {
                    token = sent;
                }
                let refusal = refusal.replace("{token}", &token);
                let reply = match (service, line.split(' ').next().unwrap_or("")) {
                    ("smtp", "EHLO") => "250-raw\r\n250 AUTH XOAUTH2".to_string(),
                    ("pop", "AUTH") if line.trim() == "AUTH XOAUTH2" => "+ ".to_string(),
                    ("pop", _) => refusal.to_string(),
                    _ => refusal.to_string(),
                };
                let _ = w.write_all(format!("{reply}\r\n").as_bytes());
            }
        }
    });
    port
}

/// The token in an XOAUTH2 initial response.
fn bearer_of(word: &str) -> Option<String> {
    let text = String::from_utf8(STANDARD.decode(word).ok()?).ok()?;
    let rest = text.split("auth=Bearer ").nth(1)?;
    Some(rest.split('\x01').next()?.to_string())
}

/// A proxy for `service` whose account `work` refreshes at `server` and logs in to a real
/// server on `upstream`, with `tokens` stored.
fn proxy_with_token_server(
    server: &FakeServer,
    service: &str,
    upstream: u16,
    tokens: serde_json::Value,
) -> Proxy {
    proxy_with_account_keys(server, service, upstream, tokens, "")
}

/// As `proxy_with_token_server`, with more keys in the account.
fn proxy_with_account_keys(
    server: &FakeServer,
    service: &str,
    upstream: u16,
    tokens: serde_json::Value,
    keys: &str,
) -> Proxy {
    let env = TestEnv::with_store();
    let port = free_port();
    env.write_config(&format!(
        "[proxy]\n{service} = \"127.0.0.1:{port}\"\n{}",
        account_toml(
            "work",
            &server.base_url(),
            &format!("{}\n{keys}", upstream_keys(service, upstream))
        )
    ));
    env.write_token_bytes("work", tokens.to_string().as_bytes());
    Proxy::launch(env, port)
}

/// A server that refuses a token may echo it: the program and the log get it redacted. A
/// fresh token is fetched once for the refused one, and a second refused login within the
/// minute asks the token server for nothing.
#[test]
fn refusals_are_redacted_and_forced_refreshes_are_bounded() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Keep);
    server.add_refresh_token("rt-seed-proxy");
    let upstream = raw_mail_server(
        "imap",
        "a2 NO [AUTHENTICATIONFAILED] token {token} dXNlcj1hbGljZUBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciBBVC1zZWNyZXQ= refused",
    );
    let proxy = proxy_with_token_server(
        &server,
        "imap",
        upstream,
        serde_json::json!({
            "version": 1, "access_token": TOKEN, "token_type": "Bearer",
            "expires_at": FAR_FUTURE, "refresh_token": "rt-seed-proxy",
            "obtained_at": now_unix() - 600,
        }),
    );
    for _ in 0..3 {
        let mut c = proxy.connect();
        c.line();
        c.send("a1 LOGIN work pw");
        let no = c.line();
        assert!(
            no.starts_with("a1 NO [AUTHENTICATIONFAILED] mailtoken: run \"mailtoken check work\""),
            "{no}"
        );
        assert!(
            !no.contains(TOKEN) && !no.contains("fake-at") && !no.contains("dXNlcj1"),
            "{no}"
        );
    }
    assert_eq!(
        server.count(Kind::Refresh),
        1,
        "one forced refresh for three refusals"
    );
    let log = proxy.stop();
    log.assert_no_secrets();
    assert!(!log.all().contains("fake-at-1"), "{}", log.all());
    assert_eq!(
        log.stderr.matches("upstream refused").count(),
        3,
        "{}",
        log.all()
    );
}

/// A refresh token the provider refuses (invalid_grant) is the one case that says "log in".
#[test]
fn only_a_refused_login_says_log_in_again() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::InvalidGrant);
    server.add_refresh_token("rt-dead");
    let upstream = Untouched::new();
    let proxy = proxy_with_token_server(
        &server,
        "smtp",
        upstream.port(),
        serde_json::json!({
            "version": 1, "access_token": "at-old", "token_type": "Bearer",
            "expires_at": now_unix() - 10, "refresh_token": "rt-dead",
        }),
    );
    let mut c = proxy.connect();
    c.line();
    c.send(&format!(
        "AUTH PLAIN {}",
        STANDARD.encode(format!("\0{USER}\0pw"))
    ));
    let no = c.line();
    assert_eq!(
        no,
        "535 5.7.8 mailtoken: run \"mailtoken login work\": the provider refused the login"
    );
    assert!(!upstream.was_reached());
}

/// With `relogin = "device"` the same refusal starts a background login, and the mail program
/// is told where to approve it (what a person reads in Alpine's or Thunderbird's error box).
#[test]
fn a_dead_login_with_relogin_tells_the_mail_program_where_to_approve() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::InvalidGrant);
    server.add_refresh_token("rt-dead");
    server.set_poll_default(Poll::Pending);
    let upstream = Untouched::new();
    let proxy = proxy_with_account_keys(
        &server,
        "smtp",
        upstream.port(),
        serde_json::json!({
            "version": 1, "access_token": "at-old", "token_type": "Bearer",
            "expires_at": now_unix() - 10, "refresh_token": "rt-dead",
        }),
        "relogin = \"device\"",
    );
    for _ in 0..2 {
        let mut c = proxy.connect();
        c.line();
        c.send(&format!(
            "AUTH PLAIN {}",
            STANDARD.encode(format!("\0{USER}\0pw"))
        ));
        assert_eq!(
            c.line(),
            format!(
                "535 5.7.8 mailtoken: a new login waits for approval: open {VERIFICATION_URI} and enter the code {USER_CODE}"
            )
        );
    }
    assert_eq!(server.count(Kind::Device), 1);
    assert!(!upstream.was_reached());
}

/// SIGTERM (or QUIT, USR1: any usual signal) while a session's refresh is under way at a
/// slow, strictly rotating token server: the proxy waits for it past its 10-second grace, so
/// the rotated refresh token is stored, not lost. The proxies run side by side.
#[test]
fn a_stop_during_a_refresh_keeps_the_rotated_refresh_token() {
    let runs: Vec<_> = [libc::SIGTERM, libc::SIGQUIT, libc::SIGUSR1]
        .into_iter()
        .map(|signal| {
            let server = FakeServer::start();
            server.set_refresh(Refresh::Rotate);
            server.set_refresh_delay_ms(13_000);
            server.add_refresh_token("rt-before-stop");
            let upstream = Untouched::new();
            let proxy = proxy_with_token_server(
                &server,
                "imap",
                upstream.port(),
                serde_json::json!({
                    "version": 1, "access_token": "at-old", "token_type": "Bearer",
                    "expires_at": now_unix() - 10, "refresh_token": "rt-before-stop",
                }),
            );
            let mut c = proxy.connect();
            c.line();
            c.send("a1 LOGIN work pw");
            (signal, server, proxy, c, upstream)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    for (signal, server, proxy, _, _) in &runs {
        while server.count(Kind::Refresh) == 0 {
            assert!(Instant::now() < deadline, "no refresh started");
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy.signal(*signal);
    }
    for (signal, server, mut proxy, c, _upstream) in runs {
        let data = proxy.env.token_path("work");
        let log = proxy.wait_exit();
        assert_eq!(log.code, Some(0), "signal {signal}: {}", log.all());
        assert!(server.was_revoked("rt-before-stop"));
        let stored: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&data).unwrap()).unwrap();
        assert_eq!(
            stored["refresh_token"],
            "fake-rt-1",
            "signal {signal}: {}",
            log.all()
        );
        drop(c);
    }
}
