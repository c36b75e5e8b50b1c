//! Other people at the proxy's door: local users guessing and crowding, the network needing
//! the password, the certificate the proxy made, and a thread that cannot be had.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::proxy::{Client, Proxy, free_port, upstream_keys};
use crate::proxy_guard::Untouched;
use crate::support::env::*;
use crate::support::mail_servers::*;

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
        made.assert_stderr_has(&path.display().to_string());
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

/// Where the system does not say which user a connection comes from (macOS and FreeBSD for
/// an ordinary user; Linux with the portable system code forced, as tests/all.sh's second run
/// does): the proxy will not start without a local password, says at start that everyone must
/// give it, and then its own user must give it too. A connection whose owner is unknown is
/// never taken for the owner's. On Linux proper, the owner needs no password.
#[test]
fn where_connections_have_no_known_user_everyone_gives_the_password() {
    let (upstream, seen) = imap_server(xoauth2(USER, TOKEN), true);
    if !cfg!(mailtoken_portable) {
        let proxy = Proxy::start("imap", upstream, "");
        let mut c = proxy.connect();
        c.line();
        c.send("a1 LOGIN alice@example.com anything");
        let ok = c.until("a1 ");
        assert!(ok.last().unwrap().starts_with("a1 OK"), "{ok:?}");
        return;
    }
    let env = TestEnv::with_store();
    env.write_config(&format!(
        "[proxy]\nimap = \"127.0.0.1:{}\"\n{}",
        free_port(),
        account_toml("work", &nowhere(), &upstream_keys("imap", upstream))
    ));
    let refused = env.run(&["proxy"]);
    assert_eq!(refused.code, Some(2), "{}", refused.all());
    refused.assert_stderr_has("every program must give the local password");
    refused.assert_stderr_has("[proxy] password_hash");

    let proxy = proxy_with_password("imap", upstream, "");
    let mut c = proxy.connect();
    c.line();
    c.send("a1 LOGIN alice@example.com anything");
    let no = c.until("a1 ");
    assert!(no.last().unwrap().starts_with("a1 NO"), "{no:?}");
    let mut c = proxy.connect();
    c.line();
    c.send("a1 LOGIN alice@example.com \"office scanner 42\"");
    let ok = c.until("a1 ");
    assert!(ok.last().unwrap().starts_with("a1 OK"), "{ok:?}");
    assert_eq!(
        seen.wait().response.as_deref(),
        Some(xoauth2(USER, TOKEN).as_str())
    );
    let log = proxy.stop();
    log.assert_stderr_has("every connection, yours included, must give the local password");
}
