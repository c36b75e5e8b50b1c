//! `mailtoken proxy` against the fake IMAP, POP and SMTP servers: a mail program logs in with
//! a user name and any password, the proxy logs in upstream with the stored token, and the
//! session is relayed. Clients are raw sockets, Python's imaplib and smtplib, and another
//! user's process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::support::env::*;
use crate::support::mail_servers::*;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running proxy; killed when dropped.
pub struct Proxy {
    pub env: TestEnv,
    child: Option<Running>,
    pub port: u16,
}

impl Proxy {
    /// The proxy of `env`'s config, which listens on 127.0.0.1:`port` among others.
    pub fn launch(env: TestEnv, port: u16) -> Proxy {
        let mut cmd = std::process::Command::new(bin());
        cmd.arg("--config")
            .arg(&env.config)
            .arg("--data-dir")
            .arg(&env.data)
            .arg("proxy");
        let child = Running::spawn(cmd, "mailtoken proxy".into());
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the proxy never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Proxy {
            env,
            child: Some(child),
            port,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().pid()
    }

    /// The account `work` (user alice@example.com) with its `service` server at `upstream`,
    /// and the proxy listening for `service`.
    pub fn start(service: &str, upstream: u16, extra_proxy: &str) -> Proxy {
        let env = TestEnv::with_store();
        let port = free_port();
        env.write_config(&format!(
            "[proxy]\n{service} = \"127.0.0.1:{port}\"\n{extra_proxy}\n{}",
            account_toml("work", &nowhere(), &upstream_keys(service, upstream))
        ));
        env.write_token("work", TOKEN, REFRESH, FAR_FUTURE);
        Proxy::launch(env, port)
    }

    pub fn connect(&self) -> Client {
        Client::new(TcpStream::connect(("127.0.0.1", self.port)).unwrap())
    }

    /// Stop it as a service manager would, and return its log.
    pub fn stop(mut self) -> RunResult {
        self.stop_here()
    }

    /// `stop`, keeping the proxy's files to look at.
    pub fn stop_here(&mut self) -> RunResult {
        self.stop_with(libc::SIGTERM)
    }

    /// Stop it with `signal`, keeping its files; its log.
    pub fn stop_with(&mut self, signal: i32) -> RunResult {
        self.signal(signal);
        self.wait_exit()
    }

    pub fn signal(&self, signal: i32) {
        self.child.as_ref().unwrap().signal(signal);
    }

    /// Its log, once it has ended by itself (30 s at the most).
    pub fn wait_exit(&mut self) -> RunResult {
        self.child.take().unwrap().wait(Duration::from_secs(30))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            child.signal(libc::SIGKILL);
        }
    }
}

/// An account's keys for its `service` server: plain text on 127.0.0.1:`port`.
pub fn upstream_keys(service: &str, port: u16) -> String {
    format!("{service}_host = \"127.0.0.1\"\n{service}_port = {port}\n{service}_tls = \"none\"")
}

pub struct Client {
    pub reader: BufReader<TcpStream>,
}

impl Client {
    pub fn new(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, line: &str) {
        self.reader
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
    }

    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }

    /// Lines up to and including the first that starts with `prefix`.
    pub fn until(&mut self, prefix: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "the connection ended; got {lines:?}");
            let done = line.starts_with(prefix);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
}

#[test]
fn imap_login_with_a_password_becomes_xoauth2_upstream_and_the_session_is_relayed() {
    let (upstream, seen) = imap_server(xoauth2(USER, TOKEN), true);
    let proxy = Proxy::start("imap", upstream, "");
    let mut c = proxy.connect();
    let greeting = c.line();
    assert!(greeting.starts_with("* OK [CAPABILITY "), "{greeting}");
    assert!(greeting.contains("AUTH=PLAIN"), "{greeting}");
    for absent in ["LOGINDISABLED", "STARTTLS", "XOAUTH2"] {
        assert!(!greeting.contains(absent), "{greeting}");
    }
    c.send("a1 LOGIN \"alice@example.com\" \"any password\"");
    let ok = c.until("a1 ");
    assert!(ok.last().unwrap().starts_with("a1 OK"), "{ok:?}");
    // From here on, the real server answers.
    c.send("a2 CAPABILITY");
    let caps = c.until("a2 ");
    assert!(caps[0].contains("AUTH=XOAUTH2"), "{caps:?}");
    c.send("a3 LOGOUT");
    let bye = c.until("a3 ");
    assert!(bye[0].contains("fake IMAP"), "{bye:?}");
    let s = seen.wait();
    assert_eq!(s.response.as_deref(), Some(xoauth2(USER, TOKEN).as_str()));
    assert!(s.logout);
    let log = proxy.stop();
    assert_eq!(log.code, Some(0), "{}", log.all());
    log.assert_stderr_has("work: logged in");
    log.assert_no_secrets();
}

#[test]
fn imap_literals_and_authenticate_plain_are_understood() {
    let cases: [&[&str]; 4] = [
        &["a1 LOGIN {17}", "@alice@example.com {2}", "@pw"],
        &["a1 LOGIN {17+}", "alice@example.com {2+}", "pw"],
        &["a1 AUTHENTICATE PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHB3"],
        &["a1 AUTHENTICATE PLAIN", "@AGFsaWNlQGV4YW1wbGUuY29tAHB3"],
    ];
    for lines in cases {
        let (upstream, seen) = imap_server(xoauth2(USER, TOKEN), true);
        let proxy = Proxy::start("imap", upstream, "");
        let mut c = proxy.connect();
        c.line();
        for line in lines {
            // `@` marks a line sent only after the proxy's `+` continuation.
            match line.strip_prefix('@') {
                Some(rest) => {
                    let cont = c.line();
                    assert!(cont.starts_with('+'), "{lines:?}: {cont}");
                    c.send(rest);
                }
                None => c.send(line),
            }
        }
        let reply = c.until("a1 ");
        assert!(
            reply.last().unwrap().starts_with("a1 OK"),
            "{lines:?}: {reply:?}"
        );
        c.send("a2 LOGOUT");
        c.until("a2 ");
        assert!(seen.wait().logout, "{lines:?}");
    }
}

#[test]
fn refusals_say_what_to_do_and_unreachable_servers_are_temporary() {
    // An unknown user: a password error.
    let (upstream, _seen) = imap_server(xoauth2(USER, TOKEN), true);
    let proxy = Proxy::start("imap", upstream, "");
    let mut c = proxy.connect();
    c.line();
    c.send("a1 LOGIN eve@example.com pw");
    let no = c.line();
    assert!(no.starts_with("a1 NO [AUTHENTICATIONFAILED]"), "{no}");
    assert!(
        no.contains("log in with an account's user or name: none is `eve@example.com`"),
        "{no}"
    );
    drop(proxy);

    // The server refuses the token, and no fresh one can be had (the token server is down):
    // that is for later, not "log in again".
    let (upstream, _seen) = imap_server("not-this-token".into(), true);
    let proxy = Proxy::start("imap", upstream, "");
    let mut c = proxy.connect();
    c.line();
    c.send("a1 LOGIN work pw");
    let no = c.line();
    assert!(
        no.starts_with("a1 NO [UNAVAILABLE] mailtoken: try again later"),
        "{no}"
    );
    drop(proxy);

    // The server is down: come back later, not "wrong password".
    let proxy = Proxy::start("imap", closed_port(), "");
    let mut c = proxy.connect();
    c.line();
    c.send("a1 LOGIN work pw");
    let no = c.line();
    assert!(no.starts_with("a1 NO [UNAVAILABLE]"), "{no}");
}

/// A config the proxy cannot use is no password problem and will not mend by itself: each
/// protocol hears a permanent failure of the system, not "try later" nor "wrong password".
#[test]
fn a_config_problem_is_a_permanent_failure_in_every_protocol() {
    for (service, login, code) in [
        (
            "pop",
            vec!["USER work", "PASS pw"],
            "-ERR [SYS/PERM] mailtoken: fix mailtoken's config",
        ),
        (
            "imap",
            vec!["a1 LOGIN work pw"],
            "a1 NO [CONTACTADMIN] mailtoken: fix mailtoken's config",
        ),
        (
            "smtp",
            vec!["EHLO me", "AUTH PLAIN AHdvcmsAcHc="],
            "554 5.3.5 mailtoken: fix mailtoken's config",
        ),
    ] {
        // Nothing listens upstream: the refusal comes before any connection to it.
        let proxy = Proxy::start(service, closed_port(), "");
        let text = std::fs::read_to_string(&proxy.env.config).unwrap();
        proxy
            .env
            .write_config(&format!("{text}\nno_such_key = 1\n"));
        let mut c = proxy.connect();
        c.line();
        let mut last = String::new();
        for line in login {
            c.send(line);
            last = loop {
                let reply = c.line();
                // SMTP's EHLO answers in several lines.
                if !reply.starts_with("250-") {
                    break reply;
                }
            };
        }
        assert!(last.starts_with(code), "{service}: {last}");
    }
}

#[test]
fn pop_user_pass_logs_in_upstream_and_relays() {
    let (upstream, seen) = pop_server(xoauth2(USER, TOKEN));
    let proxy = Proxy::start("pop", upstream, "");
    let mut c = proxy.connect();
    assert!(c.line().starts_with("+OK"));
    c.send("CAPA");
    let capa = c.until(".");
    assert!(capa.contains(&"USER".to_string()), "{capa:?}");
    c.send("USER alice@example.com");
    assert_eq!(c.line(), "+OK");
    c.send("PASS whatever");
    assert!(c.line().starts_with("+OK logged in"));
    c.send("QUIT");
    assert_eq!(c.line(), "+OK bye");
    assert!(seen.wait().quit);
}

#[test]
fn smtp_auth_plain_and_login_then_the_message_goes_upstream() {
    for auth in ["plain", "login"] {
        let (upstream, seen) = smtp_server(SmtpMode::Accept {
            auth_line: format!("AUTH XOAUTH2 {}", xoauth2(USER, TOKEN)),
        });
        let proxy = Proxy::start("smtp", upstream, "");
        let mut c = proxy.connect();
        assert!(c.line().starts_with("220 "));
        c.send("EHLO client.example");
        let ehlo = c.until("250 ");
        assert!(
            ehlo.iter().any(|l| l.contains("AUTH PLAIN LOGIN")),
            "{ehlo:?}"
        );
        assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")), "{ehlo:?}");
        if auth == "plain" {
            c.send(&format!(
                "AUTH PLAIN {}",
                STANDARD.encode("\0alice@example.com\0pw")
            ));
        } else {
            c.send("AUTH LOGIN");
            assert!(c.line().starts_with("334 "));
            c.send(&STANDARD.encode("alice@example.com"));
            assert!(c.line().starts_with("334 "));
            c.send(&STANDARD.encode("pw"));
        }
        let ok = c.line();
        assert!(ok.starts_with("235 "), "{auth}: {ok}");
        c.send("MAIL FROM:<alice@example.com>");
        assert!(c.line().starts_with("250"));
        c.send("RCPT TO:<bob@example.com>");
        assert!(c.line().starts_with("250"));
        c.send("DATA");
        assert!(c.line().starts_with("354"));
        c.send("Subject: through the proxy\r\n\r\nhello\r\n.");
        assert!(c.line().starts_with("250"));
        c.send("QUIT");
        assert!(c.line().starts_with("221"));
        let s = seen.wait();
        assert!(s.data.unwrap().contains("through the proxy"), "{auth}");
    }
}

#[test]
fn python_imaplib_and_smtplib_log_in_through_the_proxy() {
    let (imap_up, imap_seen) = imap_server(xoauth2(USER, TOKEN), false);
    let imap = Proxy::start("imap", imap_up, "");
    let (smtp_up, smtp_seen) = smtp_server(SmtpMode::Accept {
        auth_line: format!("AUTH XOAUTH2 {}", xoauth2(USER, TOKEN)),
    });
    let smtp = Proxy::start("smtp", smtp_up, "");
    let script = format!(
        "import imaplib, smtplib\n\
         m = imaplib.IMAP4('127.0.0.1', {imap})\n\
         m.login('alice@example.com', 'any')\n\
         m.logout()\n\
         s = smtplib.SMTP('127.0.0.1', {smtp})\n\
         s.login('alice@example.com', 'any')\n\
         s.sendmail('alice@example.com', ['bob@example.com'], 'Subject: py\\r\\n\\r\\nhi\\r\\n')\n\
         s.quit()\n",
        imap = imap.port,
        smtp = smtp.port
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
    assert!(imap_seen.wait().logout);
    assert!(
        smtp_seen
            .wait()
            .data
            .is_some_and(|d| d.contains("Subject: py"))
    );
}

#[test]
fn another_user_is_turned_away_without_a_local_password() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: running a client as `nobody` needs root (CI runs as root)");
        return;
    }
    let (upstream, _seen) = imap_server(xoauth2(USER, TOKEN), true);
    let proxy = Proxy::start("imap", upstream, "");
    let reply = login_as_nobody(proxy.port, "guess");
    assert!(reply.starts_with("a1 NO [AUTHENTICATIONFAILED]"), "{reply}");
    assert!(
        reply.contains("serves only the user who runs it"),
        "{reply}"
    );
}

#[test]
fn an_oversized_literal_and_a_silent_client_hold_up_nobody() {
    let (upstream, seen) = imap_server(xoauth2(USER, TOKEN), true);
    let proxy = Proxy::start("imap", upstream, "");
    // A client that connects and says nothing.
    let _silent = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    let mut big = proxy.connect();
    big.line();
    big.send("a1 LOGIN {100000000}");
    let refused = big.line();
    assert!(refused.contains("literal too large"), "{refused}");
    let mut rest = Vec::new();
    let _ = big.reader.read_to_end(&mut rest);
    // Meanwhile a real client logs in at once.
    let mut c = proxy.connect();
    c.line();
    c.send("a1 LOGIN work pw");
    assert!(c.until("a1 ").last().unwrap().starts_with("a1 OK"));
    c.send("a2 LOGOUT");
    c.until("a2 ");
    assert!(seen.wait().logout);
}

/// A client that connects and never logs in is let go after `login_timeout`; a real one
/// connecting afterwards is served.
#[test]
fn a_client_that_never_logs_in_is_let_go_after_the_login_timeout() {
    let (upstream, seen) = imap_server(xoauth2(USER, TOKEN), true);
    let proxy = Proxy::start("imap", upstream, "login_timeout = 1");
    let mut silent = proxy.connect();
    assert!(silent.line().starts_with("* OK"));
    // The proxy closes the connection (the client's own read timeout is 10 s).
    let mut rest = String::new();
    silent
        .reader
        .read_to_string(&mut rest)
        .expect("the proxy closed the connection");
    let mut c = proxy.connect();
    c.line();
    c.send("a1 LOGIN work pw");
    assert!(c.until("a1 ").last().unwrap().starts_with("a1 OK"));
    c.send("a2 LOGOUT");
    c.until("a2 ");
    assert!(seen.wait().logout);
    let log = proxy.stop();
    assert!(
        log.stderr.contains("closed before logging in")
            || log.stderr.contains("deadline")
            || log.stderr.contains("did not finish"),
        "{}",
        log.all()
    );
}

fn tls_settings() -> String {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    format!(
        "tls_certificate = \"{}\"\ntls_key = \"{}\"\n",
        fixtures.join("app-cert.pem").display(),
        fixtures.join("app-key.pem").display()
    )
}

/// Python's TLS clients against the proxy's own certificate (a test certificate, so not
/// verified here): STARTTLS for IMAP and SMTP, and TLS from the first byte for IMAP.
#[test]
fn local_tls_starttls_and_implicit_tls_with_python_clients() {
    let (imap_up, imap_seen) = imap_server(xoauth2(USER, TOKEN), true);
    let starttls = Proxy::start("imap", imap_up, &tls_settings());
    let (imaps_up, imaps_seen) = imap_server(xoauth2(USER, TOKEN), true);
    let imaps_port = free_port();
    let implicit = Proxy::start(
        "imap",
        imaps_up,
        &format!("imaps = \"127.0.0.1:{imaps_port}\"\n{}", tls_settings()),
    );
    let (smtp_up, smtp_seen) = smtp_server(SmtpMode::Accept {
        auth_line: format!("AUTH XOAUTH2 {}", xoauth2(USER, TOKEN)),
    });
    let smtp = Proxy::start("smtp", smtp_up, &tls_settings());
    let script = format!(
        "import imaplib, smtplib, ssl\n\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n\
         ctx.check_hostname = False\n\
         ctx.verify_mode = ssl.CERT_NONE\n\
         m = imaplib.IMAP4('127.0.0.1', {imap})\n\
         assert 'STARTTLS' in m.capabilities, m.capabilities\n\
         m.starttls(ssl_context=ctx)\n\
         assert 'STARTTLS' not in m.capabilities, m.capabilities\n\
         m.login('alice@example.com', 'any')\n\
         m.logout()\n\
         m = imaplib.IMAP4_SSL('127.0.0.1', {imaps}, ssl_context=ctx)\n\
         m.login('alice@example.com', 'any')\n\
         m.logout()\n\
         s = smtplib.SMTP('127.0.0.1', {smtp})\n\
         s.starttls(context=ctx)\n\
         s.login('alice@example.com', 'any')\n\
         s.sendmail('alice@example.com', ['bob@example.com'], 'Subject: tls\\r\\n\\r\\nhi\\r\\n')\n\
         s.quit()\n",
        imap = starttls.port,
        imaps = imaps_port,
        smtp = smtp.port
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
    assert!(imap_seen.wait().logout);
    assert!(imaps_seen.wait().logout);
    assert!(
        smtp_seen
            .wait()
            .data
            .is_some_and(|d| d.contains("Subject: tls"))
    );
    drop(implicit);
}

/// 200 programs log in at once and each gets its own relayed session: nobody is turned away,
/// no session gets another's replies, and the proxy's log has a line for each.
#[test]
fn two_hundred_sessions_at_once() {
    const N: usize = 200;
    let (upstream, ended) = imap_server_for(N, xoauth2(USER, TOKEN));
    let proxy = Proxy::start("imap", upstream, "");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(N));
    let clients: Vec<_> = (0..N)
        .map(|i| {
            let (barrier, port) = (barrier.clone(), proxy.port);
            std::thread::spawn(move || {
                let mut c = Client::new(TcpStream::connect(("127.0.0.1", port)).unwrap());
                c.line();
                // All logged in before any goes on: 200 relays open at the same moment.
                c.send("a1 LOGIN alice@example.com any");
                let ok = c.until("a1 ");
                barrier.wait();
                c.send(&format!("a2 X-ECHO client-{i}"));
                let echo = c.until("a2 ");
                c.send("a3 LOGOUT");
                c.until("a3 ");
                (ok, echo, i)
            })
        })
        .collect();
    for client in clients {
        let (ok, echo, i) = client.join().expect("a client failed");
        assert!(ok.last().unwrap().starts_with("a1 OK"), "{ok:?}");
        assert!(echo[1].ends_with(&format!("client-{i}")), "{echo:?}");
    }
    let sessions: Vec<_> = (0..N).map(|_| ended.recv_timeout(WAIT).unwrap()).collect();
    assert!(sessions.iter().all(|s| s.logout));
    let log = proxy.stop();
    assert_eq!(
        log.stderr.matches("work: logged in").count(),
        N,
        "{}",
        log.all()
    );
}

/// Megabytes each way over the proxy's own TLS: the decrypting side takes in far more than
/// the 16 KiB rustls holds as plaintext per read, and must hand it on in order, none lost.
#[test]
fn megabytes_pass_both_ways_over_local_tls() {
    let (imap_up, seen) = imap_server(xoauth2(USER, TOKEN), true);
    let imaps_port = free_port();
    let proxy = Proxy::start(
        "imap",
        imap_up,
        &format!("imaps = \"127.0.0.1:{imaps_port}\"\n{}", tls_settings()),
    );
    let script = format!(
        "import socket, ssl\n\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n\
         ctx.check_hostname = False\n\
         ctx.verify_mode = ssl.CERT_NONE\n\
         s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {imaps}), timeout=30))\n\
         f = s.makefile('rwb')\n\
         f.readline()\n\
         f.write(b'a1 LOGIN alice@example.com any\\r\\n'); f.flush()\n\
         assert f.readline().startswith(b'a1 OK')\n\
         line = b'a2 X-ECHO ' + bytes(range(97, 123)) * ((4 << 20) // 26)\n\
         f.write(line + b'\\r\\n'); f.flush()\n\
         assert f.readline() == b'* X-ECHO {{%d}}\\r\\n' % len(line)\n\
         assert f.read(len(line)) == line, 'the echo differs'\n\
         assert f.readline() == b'\\r\\n'\n\
         assert f.readline().startswith(b'a2 OK')\n\
         f.write(b'a3 LOGOUT\\r\\n'); f.flush()\n\
         while not f.readline().startswith(b'a3 '): pass\n",
        imaps = imaps_port
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    let log = proxy.stop();
    assert!(
        out.status.success(),
        "{}\nproxy: {}",
        String::from_utf8_lossy(&out.stderr),
        log.stderr
    );
    assert!(seen.wait().logout);
}

#[test]
fn a_listener_off_this_machine_needs_local_tls_and_a_password() {
    let env = TestEnv::with_store();
    env.write_config(&format!(
        "[proxy]\nimap = \"0.0.0.0:{}\"\n{}",
        free_port(),
        account_toml("work", &nowhere(), "")
    ));
    let out = env.run(&["proxy"]);
    assert_eq!(out.code, Some(2), "{}", out.all());
    out.assert_stderr_has("needs local TLS");
}

/// As `nobody`, with bash's own /dev/tcp (no interpreter from root's home needed): one IMAP
/// LOGIN with `password`; the proxy's reply line.
fn login_as_nobody(port: u16, password: &str) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port}; read -r greeting <&3; \
         printf 'a1 LOGIN alice@example.com \"{password}\"\\r\\n' >&3; read -r reply <&3; echo \"$reply\""
    );
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"])
        .args(["bash", "-c", &script])
        .env("HOME", "/")
        .output()
        .expect("setpriv");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn another_user_with_the_local_password_gets_in_and_guessing_is_slowed_down() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: running a client as `nobody` needs root (CI runs as root)");
        return;
    }
    let hash = {
        let env = TestEnv::with_store();
        let mut cmd = std::process::Command::new(bin());
        cmd.arg("--config")
            .arg(&env.config)
            .args(["proxy", "--hash-password"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"office scanner 42\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let (upstream, seen) = imap_server(xoauth2(USER, TOKEN), true);
    let proxy = Proxy::start("imap", upstream, &format!("password_hash = \"{hash}\""));
    let ok = login_as_nobody(proxy.port, "office scanner 42");
    assert!(ok.starts_with("a1 OK"), "{ok}");
    assert!(seen.wait().response.is_some());
    for _ in 0..5 {
        let no = login_as_nobody(proxy.port, "guess");
        assert!(no.contains("wrong local password"), "{no}");
    }
    let slowed = login_as_nobody(proxy.port, "office scanner 42");
    assert!(slowed.contains("too many failed logins"), "{slowed}");
}

#[test]
fn an_upstream_that_closes_mid_session_ends_the_client_session() {
    // The fake server ends the session after LOGOUT, whatever the client does next.
    let (upstream, seen) = imap_server(xoauth2(USER, TOKEN), true);
    let proxy = Proxy::start("imap", upstream, "");
    let mut c = proxy.connect();
    c.line();
    c.send("a1 LOGIN work pw");
    c.until("a1 ");
    c.send("a2 LOGOUT");
    c.until("a2 ");
    assert!(seen.wait().logout);
    // The server is gone: the client sees its connection end, promptly.
    let started = Instant::now();
    let mut rest = String::new();
    let _ = c.reader.read_to_string(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(5), "{rest}");
    let log = proxy.stop();
    log.assert_stderr_has("work: logged in");
}
