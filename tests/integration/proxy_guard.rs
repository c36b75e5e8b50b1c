//! The proxy's doors, attacked: a web page in the owner's browser (its exact HTTP requests,
//! sent as the owner), other local users guessing and crowding, a person slow at a password
//! prompt, slow TLS, ambiguous and failing logins, and a stop while a refresh is under way.
//! The real server is a bare listener where the point is that nothing reached it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::proxy::{Client, Proxy, free_port, upstream_keys};
use crate::support::env::*;
use crate::support::mail_servers::*;
use crate::support::oauth_server::{FakeServer, Kind, Refresh};

/// A real server's port that records whether anyone connected: the proxy logs in upstream
/// only by connecting, so no connection means no login and no command.
struct Untouched(TcpListener);

impl Untouched {
    fn new() -> Untouched {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Untouched(listener)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    fn was_reached(&self) -> bool {
        self.0.accept().is_ok()
    }
}

/// The request line and headers Firefox 128 sends for
/// `fetch("http://127.0.0.1:PORT/", {method: "POST", mode: "no-cors", body})` from a page on
/// another site (text/plain: no preflight).
fn firefox(port: u16, body: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
         Accept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\
         Origin: http://attacker.example\r\nConnection: keep-alive\r\nReferer: http://attacker.example/\r\n\
         Sec-Fetch-Dest: empty\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Site: cross-site\r\n\
         Priority: u=4\r\n\r\n{body}",
        body.len()
    )
}

/// The same from Chrome 131.
fn chrome(port: u16, body: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: keep-alive\r\nContent-Length: {}\r\n\
         sec-ch-ua-platform: \"Linux\"\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
         sec-ch-ua: \"Google Chrome\";v=\"131\", \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nsec-ch-ua-mobile: ?0\r\nAccept: */*\r\n\
         Origin: http://attacker.example\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\n\
         Sec-Fetch-Dest: empty\r\nReferer: http://attacker.example/\r\n\
         Accept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n\r\n{body}",
        body.len()
    )
}

/// What a page would POST to each service: a login, then what it is after.
fn attack_body(service: &str) -> String {
    let plain = STANDARD.encode(format!("\0{USER}\0anything"));
    match service {
        "smtp" => format!(
            "EHLO x\r\nAUTH PLAIN {plain}\r\nMAIL FROM:<{USER}>\r\nRCPT TO:<mallory@attacker.example>\r\n\
             DATA\r\nSubject: sent by a web page\r\n\r\nhello\r\n.\r\nQUIT\r\n"
        ),
        "pop" => format!("USER {USER}\r\nPASS anything\r\nDELE 1\r\nDELE 2\r\nQUIT\r\n"),
        _ => format!(
            "a1 LOGIN {USER} anything\r\na2 SELECT INBOX\r\na3 STORE 1:* +FLAGS (\\Deleted)\r\na4 EXPUNGE\r\n"
        ),
    }
}

/// Send `bytes` in one write and read until the proxy closes (bounded): what it answered.
fn send_all_and_read(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A web page's POST, as the owner (these tests run as the proxy's own user): for every
/// service and both browsers' header sets, the session ends at the request line and the
/// real server sees nothing. The same body without the HTTP wrapping does log in: the body
/// is a working attack, and only the HTTP screening stops it.
#[test]
fn a_web_page_in_the_owners_browser_reaches_no_server() {
    for service in ["smtp", "pop", "imap"] {
        for (browser, wrap) in [
            ("firefox", firefox as fn(u16, &str) -> String),
            ("chrome", chrome),
        ] {
            let upstream = Untouched::new();
            let proxy = Proxy::start(service, upstream.port(), "");
            let request = wrap(proxy.port, &attack_body(service));
            let answered = send_all_and_read(proxy.port, request.as_bytes());
            assert!(
                !upstream.was_reached(),
                "{service}/{browser}: the real server was reached; the proxy said {answered:?}"
            );
            assert!(
                answered.lines().count() <= 1,
                "{service}/{browser}: the proxy read past the request line: {answered:?}"
            );
            let log = proxy.stop();
            assert!(
                log.stderr.contains("shut out: an HTTP request"),
                "{service}/{browser}: {}",
                log.all()
            );
        }
        // Control: the body alone is a login the proxy takes to the real server.
        let upstream = Untouched::new();
        let proxy = Proxy::start(service, upstream.port(), "");
        send_all_and_read(proxy.port, attack_body(service).as_bytes());
        assert!(
            upstream.was_reached(),
            "{service}: the control never logged in"
        );
    }
}

/// Each screen on its own: a header line, an empty line, an unknown command, a TLS hello on
/// the plain port; and a login that follows a refused command with more sent right behind
/// it. None reaches the real server.
#[test]
fn headers_blank_lines_unknown_commands_and_sent_ahead_logins_reach_no_server() {
    let plain = STANDARD.encode(format!("\0{USER}\0x"));
    let cases: &[(&str, String)] = &[
        (
            "smtp",
            format!("Host: 127.0.0.1\r\nAUTH PLAIN {plain}\r\nMAIL FROM:<x>\r\n"),
        ),
        (
            "smtp",
            format!("\r\nAUTH PLAIN {plain}\r\nMAIL FROM:<x>\r\n"),
        ),
        (
            "smtp",
            format!("XYZZY\r\nAUTH PLAIN {plain}\r\nMAIL FROM:<x>\r\n"),
        ),
        (
            "smtp",
            format!("MAIL FROM:<x>\r\nAUTH PLAIN {plain}\r\nMAIL FROM:<x>\r\n"),
        ),
        (
            "pop",
            format!("Origin: http://a.example\r\nUSER {USER}\r\nPASS x\r\nDELE 1\r\n"),
        ),
        ("pop", format!("FOO\r\nUSER {USER}\r\nPASS x\r\nDELE 1\r\n")),
        (
            "pop",
            format!("PASS x\r\nUSER {USER}\r\nPASS x\r\nDELE 1\r\n"),
        ),
        (
            "imap",
            format!("a0 FROB\r\na1 LOGIN {USER} x\r\na2 EXPUNGE\r\n"),
        ),
        (
            "imap",
            format!("a0 AUTHENTICATE CRAM-MD5\r\na1 LOGIN {USER} x\r\na2 EXPUNGE\r\n"),
        ),
        (
            "imap",
            format!("\u{16}\u{3}\u{1}\0\r\na1 LOGIN {USER} x\r\n"),
        ),
    ];
    for (service, input) in cases {
        let upstream = Untouched::new();
        let proxy = Proxy::start(service, upstream.port(), "");
        let answered = send_all_and_read(proxy.port, input.as_bytes());
        assert!(
            !upstream.was_reached(),
            "{service} {input:?}: the real server was reached; the proxy said {answered:?}"
        );
    }
}

/// An oversized literal in LOGIN ends the session: its bytes are never read as commands.
#[test]
fn the_bytes_of_a_refused_literal_are_not_run_as_commands() {
    let upstream = Untouched::new();
    let proxy = Proxy::start("imap", upstream.port(), "");
    let inner = format!("a2 LOGIN {USER} x\r\n").repeat(600);
    let input = format!("a1 LOGIN {{{}+}}\r\n{inner}", inner.len());
    let answered = send_all_and_read(proxy.port, input.as_bytes());
    assert!(!upstream.was_reached(), "{answered}");
    assert!(
        answered.contains("* BYE mailtoken proxy: a literal too large"),
        "{answered}"
    );
}

/// A person who takes longer than the old 20-second read limit at Alpine's password prompt:
/// with the default deadline the login still works.
#[test]
fn a_person_may_take_half_a_minute_to_type_the_password() {
    let (upstream, seen) = imap_server(xoauth2(USER, TOKEN), true);
    let proxy = Proxy::start("imap", upstream, "");
    let mut c = proxy.connect();
    c.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    assert!(c.line().starts_with("* OK"));
    c.send("1 CAPABILITY");
    c.until("1 ");
    std::thread::sleep(Duration::from_secs(25));
    c.send("2 LOGIN alice@example.com typed-slowly");
    let ok = c.until("2 ");
    assert!(ok.last().unwrap().starts_with("2 OK"), "{ok:?}");
    c.send("3 LOGOUT");
    c.until("3 ");
    assert!(seen.wait().logout);
}

/// When the deadline passes, each protocol says so before it closes.
#[test]
fn the_login_deadline_is_said_in_each_protocol() {
    for (service, greeting, goodbye) in [
        ("imap", "* OK", "* BYE mailtoken proxy: no login within 2 s"),
        ("pop", "+OK", "-ERR mailtoken proxy: no login within 2 s"),
        (
            "smtp",
            "220 ",
            "421 4.4.2 mailtoken proxy: no login within 2 s",
        ),
    ] {
        let upstream = Untouched::new();
        let proxy = Proxy::start(service, upstream.port(), "login_timeout = 2");
        let mut c = proxy.connect();
        assert!(c.line().starts_with(greeting));
        let started = Instant::now();
        let last = c.line();
        assert!(last.starts_with(goodbye), "{service}: {last}");
        assert!(started.elapsed() < Duration::from_secs(6), "{service}");
    }
}

/// A client that drips its TLS handshake a byte at a time is let go at the login deadline.
#[test]
fn a_dripping_tls_handshake_is_let_go_at_the_deadline() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let imaps = free_port();
    let upstream = Untouched::new();
    let proxy = Proxy::start(
        "imap",
        upstream.port(),
        &format!(
            "imaps = \"127.0.0.1:{imaps}\"\nlogin_timeout = 2\ntls_certificate = \"{}\"\ntls_key = \"{}\"\n",
            fixtures.join("app-cert.pem").display(),
            fixtures.join("app-key.pem").display()
        ),
    );
    let mut s = TcpStream::connect(("127.0.0.1", imaps)).unwrap();
    // A TLS record header announcing a 512-byte ClientHello, then a byte every 200 ms.
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
        if s.write_all(&[0x01]).is_err() {
            closed = true;
            break;
        }
    }
    assert!(closed, "the handshake was still open after 10 s");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    drop(proxy);
}

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
    assert!(
        log.stderr
            .contains("accounts home, work share the user alice@example.com"),
        "{}",
        log.all()
    );
    assert!(log.stderr.contains("ambiguous account"), "{}", log.all());
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
    assert!(
        log.stderr.contains("#1 imap 127.0.0.1:") && log.stderr.contains("upstream unreachable"),
        "{}",
        log.all()
    );

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
    let env = TestEnv::with_store();
    let port = free_port();
    env.write_config(&format!(
        "[proxy]\n{service} = \"127.0.0.1:{port}\"\n{}",
        account_toml(
            "work",
            &server.base_url(),
            &upstream_keys(service, upstream)
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

#[test]
fn a_malformed_password_hash_is_refused_at_start() {
    let env = TestEnv::with_store();
    env.write_config(&format!(
        "[proxy]\nimap = \"127.0.0.1:{}\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA\"\n{}",
        free_port(),
        account_toml("work", &nowhere(), "")
    ));
    let out = env.run(&["proxy"]);
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(
        out.stderr
            .contains("password_hash is not a hash from `mailtoken proxy --hash-password`"),
        "{}",
        out.all()
    );
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: running clients as `nobody` needs root (CI runs as root)");
    }
    root
}

/// A Python script run as `nobody` (Debian's python3, which `nobody` can read), its stdout.
fn as_nobody(script: &str) -> String {
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"])
        .args(["/usr/bin/python3", "-c", script])
        .env("HOME", "/")
        .output()
        .expect("setpriv");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn proxy_with_password(service: &str, upstream: u16, extra: &str) -> Proxy {
    // The hash of "office scanner 42", made once with `mailtoken proxy --hash-password`.
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$4CByLrH8K1AHsR0rYGxufA$dzAv0SE64HDR0zzMF3FbgOMH3vOlcIcwAyB+/UTQUxU";
    Proxy::start(
        service,
        upstream,
        &format!("password_hash = \"{hash}\"\n{extra}"),
    )
}

/// Peak memory of a process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Another local user guessing from 120 loopback addresses at once: 5 guesses are checked,
/// the rest wait, and the checks run a few at a time (memory stays bounded).
#[test]
fn another_user_guessing_from_all_of_127_8_gets_five_checks() {
    if !as_root() {
        return;
    }
    let upstream = Untouched::new();
    let proxy = proxy_with_password("imap", upstream.port(), "");
    let before = peak_kib(proxy.pid());
    let script = format!(
        "import socket, threading\n\
         out = []\n\
         def guess(i):\n\
         \x20   try:\n\
         \x20       s = socket.socket(); s.settimeout(60)\n\
         \x20       s.bind(('127.0.{{}}.{{}}'.format(i // 200, 1 + i % 200), 0))\n\
         \x20       s.connect(('127.0.0.1', {port}))\n\
         \x20       f = s.makefile('rwb'); greeting = f.readline()\n\
         \x20       if greeting.startswith(b'* BYE'):\n\
         \x20           out.append(greeting.decode()); return\n\
         \x20       f.write(b'a1 LOGIN alice@example.com guess%d\\r\\n' % i); f.flush()\n\
         \x20       out.append(f.readline().decode())\n\
         \x20   except OSError as e:\n\
         \x20       out.append('failed: %r\\n' % e)\n\
         ts = [threading.Thread(target=guess, args=(i,)) for i in range(120)]\n\
         [t.start() for t in ts]; [t.join() for t in ts]\n\
         print(''.join(out))\n",
        port = proxy.port
    );
    let replies = as_nobody(&script);
    let checked = replies.matches("wrong local password").count();
    let waited = replies.matches("too many failed logins").count();
    let turned_away = replies.matches("busy: too many sessions").count();
    assert_eq!(checked, 5, "{replies}");
    assert_eq!(checked + waited + turned_away, 120, "{replies}");
    let grown = peak_kib(proxy.pid()).saturating_sub(before);
    assert!(grown < 64 * 1024, "the proxy grew by {grown} KiB");
    assert!(!upstream.was_reached());
}

/// Another local user holding every connection it can: the owner still gets in.
#[test]
fn another_user_cannot_crowd_the_owner_out() {
    if !as_root() {
        return;
    }
    let (upstream, seen) = imap_server(xoauth2(USER, TOKEN), true);
    let proxy = proxy_with_password("imap", upstream, "");
    let port = proxy.port;
    let crowd = std::thread::spawn(move || {
        as_nobody(&format!(
            "import socket, time\n\
             held = []\n\
             for i in range(300):\n\
             \x20   try:\n\
             \x20       s = socket.create_connection(('127.0.0.1', {port}), timeout=5); held.append(s)\n\
             \x20   except OSError: pass\n\
             print(len(held), flush=True)\n\
             time.sleep(8)\n"
        ))
    });
    std::thread::sleep(Duration::from_secs(3));
    let mut c = Client::new(TcpStream::connect(("127.0.0.1", port)).unwrap());
    let greeting = c.line();
    assert!(greeting.starts_with("* OK"), "{greeting}");
    c.send("a1 LOGIN work pw");
    assert!(c.until("a1 ").last().unwrap().starts_with("a1 OK"));
    c.send("a2 LOGOUT");
    c.until("a2 ");
    assert!(seen.wait().logout);
    crowd.join().unwrap();
}

/// On a listener that is not on loopback, the owner's own programs need the password too.
#[test]
fn on_the_network_the_owner_needs_the_password_too() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let upstream = Untouched::new();
    let port = free_port();
    let proxy = proxy_with_password(
        "pop",
        upstream.port(),
        &format!(
            "imaps = \"0.0.0.0:{port}\"\ntls_certificate = \"{}\"\ntls_key = \"{}\"\n",
            fixtures.join("app-cert.pem").display(),
            fixtures.join("app-key.pem").display()
        ),
    );
    let script = format!(
        "import imaplib, ssl\n\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n\
         ctx.check_hostname = False\n\
         ctx.verify_mode = ssl.CERT_NONE\n\
         m = imaplib.IMAP4_SSL('127.0.0.1', {port}, ssl_context=ctx)\n\
         try:\n\
         \x20   m.login('alice@example.com', 'not the password')\n\
         \x20   print('IN')\n\
         except imaplib.IMAP4.error as e:\n\
         \x20   print('REFUSED', e)\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("REFUSED") && said.contains("wrong local password"),
        "{said}"
    );
    assert!(!upstream.was_reached());
    drop(proxy);
}

/// `proxy --make-certificate`: a client that trusts only the CA it wrote verifies the proxy's
/// TLS for localhost (host name checked), and the key is private.
#[test]
fn the_made_certificate_is_trusted_by_a_client_that_trusts_its_ca() {
    use std::os::unix::fs::PermissionsExt;
    let (upstream, seen) = imap_server(xoauth2(USER, TOKEN), true);
    let env = TestEnv::with_store();
    let made = env.run(&["proxy", "--make-certificate"]);
    assert_eq!(made.code, Some(0), "{}", made.all());
    assert_eq!(made.stdout, "");
    let (ca, cert, key) = (
        env.data.join("proxy-ca.pem"),
        env.data.join("proxy-cert.pem"),
        env.data.join("proxy-key.pem"),
    );
    for path in [&ca, &cert, &key] {
        assert!(
            made.stderr.contains(&path.display().to_string()),
            "{}",
            made.all()
        );
    }
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        !std::fs::read_to_string(&ca)
            .unwrap()
            .contains("PRIVATE KEY")
    );
    let (port, imaps) = (free_port(), free_port());
    env.write_config(&format!(
        "[proxy]\nimap = \"127.0.0.1:{port}\"\nimaps = \"127.0.0.1:{imaps}\"\n\
         tls_certificate = \"{}\"\ntls_key = \"{}\"\n{}",
        cert.display(),
        key.display(),
        account_toml("work", &nowhere(), &upstream_keys("imap", upstream))
    ));
    env.write_token("work", TOKEN, REFRESH, FAR_FUTURE);
    let proxy = Proxy::launch(env, port);
    let script = format!(
        "import imaplib, ssl\n\
         ctx = ssl.create_default_context(cafile={ca:?})\n\
         m = imaplib.IMAP4_SSL('localhost', {imaps}, ssl_context=ctx)\n\
         m.login('work', 'any')\n\
         m.logout()\n",
        ca = ca.display().to_string()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(seen.wait().logout);
    drop(proxy);
}

/// When no thread can be had for a session (a limit on the proxy user's threads, reached
/// here by connections from another user), that connection is turned away and the proxy
/// lives on, serving the next one once threads are free. The proxy runs as a uid of its own
/// (no other process has it) with RLIMIT_NPROC 3: its main thread and two sessions.
#[test]
fn a_thread_that_cannot_be_had_turns_one_connection_away_not_the_proxy() {
    use std::os::unix::fs::PermissionsExt;
    if !as_root() {
        return;
    }
    const UID: &str = "4242";
    let env = TestEnv::with_store();
    let port = free_port();
    let upstream = Untouched::new();
    env.write_config(&format!(
        "[proxy]\nimap = \"127.0.0.1:{port}\"\n{}",
        account_toml("work", &nowhere(), &upstream_keys("imap", upstream.port()))
    ));
    // The programs, where that uid can run them whatever the checkout's modes.
    let bin_dir = env.dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let front = std::path::Path::new(bin());
    for name in ["mailtoken", "mailtoken-full"] {
        std::fs::copy(front.with_file_name(name), bin_dir.join(name)).unwrap();
    }
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let chown = std::process::Command::new("chown")
        .args(["-R", &format!("{UID}:{UID}")])
        .arg(env.dir.path())
        .status()
        .unwrap();
    assert!(chown.success());
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args([
        "--nproc=3:3",
        "--",
        "setpriv",
        "--reuid",
        UID,
        "--regid",
        UID,
        "--clear-groups",
    ])
    .arg(bin_dir.join("mailtoken"))
    .arg("--config")
    .arg(&env.config)
    .arg("--data-dir")
    .arg(&env.data)
    .arg("proxy")
    .env("HOME", env.dir.path());
    let child = Running::spawn(cmd, "mailtoken proxy (uid 4242)".into());
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the proxy never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The probe above took a thread for a moment: let it end.
    std::thread::sleep(Duration::from_millis(500));
    let greeted = |c: &mut Client| {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut c.reader, &mut line);
        line.starts_with("* OK")
    };
    let mut held: Vec<Client> = (0..4)
        .map(|_| Client::new(TcpStream::connect(("127.0.0.1", port)).unwrap()))
        .collect();
    let answered: Vec<bool> = held.iter_mut().map(greeted).collect();
    assert_eq!(
        answered,
        [true, true, false, false],
        "two threads, then none"
    );
    // Alive: the held sessions end when their clients go, and a new one is served.
    held.clear();
    std::thread::sleep(Duration::from_millis(500));
    let mut next = Client::new(TcpStream::connect(("127.0.0.1", port)).unwrap());
    assert!(
        greeted(&mut next),
        "the proxy did not serve after the threads came back"
    );
    drop(next);
    child.signal(libc::SIGTERM);
    let log = child.wait(Duration::from_secs(30));
    assert_eq!(log.code, Some(0), "{}", log.all());
    assert_eq!(
        log.stderr
            .matches("turned away: cannot start a thread")
            .count(),
        2,
        "{}",
        log.all()
    );
}
