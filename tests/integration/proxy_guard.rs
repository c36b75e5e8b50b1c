//! The proxy's doors, attacked: a web page in the owner's browser (its exact HTTP requests,
//! sent as the owner), stray lines before a login, a person slow at a password prompt and slow
//! TLS. The real server is a bare listener where the point is that nothing reached it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::proxy::{Proxy, free_port};
use crate::support::env::*;
use crate::support::mail_servers::*;

/// A real server's port that records whether anyone connected: the proxy logs in upstream
/// only by connecting, so no connection means no login and no command.
pub(crate) struct Untouched(TcpListener);

impl Untouched {
    pub(crate) fn new() -> Untouched {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Untouched(listener)
    }

    pub(crate) fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    pub(crate) fn was_reached(&self) -> bool {
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
            log.noting(format!("{service}/{browser}"))
                .assert_stderr_has("shut out: an HTTP request");
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
    out.assert_stderr_has("password_hash is not a hash from `mailtoken proxy --hash-password`");
}
