//! Secret hygiene: no access token, refresh token, client secret, authorization code, PKCE
//! verifier or device code on stderr, whatever the command and with --verbose (a #fingerprint
//! is all that may show); no flag that takes a secret on the command line (argv is visible to
//! every user); the browser login's listener on 127.0.0.1 only, gone after one callback.

use std::io::Write;
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use crate::support::env::*;
use crate::support::http::{parse_form, url_encode};
use crate::support::oauth_server::*;
use clap::CommandFactory;

const CLIENT_SECRET: &str = "hy-client-secret-value";
const SECRET_ENV: &str = "MT_HY_SECRET";

/// Three accounts on one fake server: device login, browser login, app-only.
fn config(server: &FakeServer) -> String {
    let base = server.base_url();
    let work = account_toml(
        "work",
        &base,
        &format!("client_secret_env = \"{SECRET_ENV}\""),
    );
    let web = account_toml(
        "web",
        &base,
        &format!("flow = \"browser\"\nauthorization_endpoint = \"{base}/authorize\""),
    );
    format!(
        "{work}\n{web}\n[accounts.app]\nprovider = \"generic\"\nclient_id = \"{CLIENT_ID}\"\n\
         flow = \"credentials\"\ntoken_endpoint = \"{base}/token\"\n\
         scopes = [\"api://mail/.default\"]\nclient_secret_env = \"{SECRET_ENV}\"\n"
    )
}

/// One finished command, and whether its stdout may carry the current access token.
struct Ran {
    args: String,
    result: RunResult,
    prints_token: bool,
}

struct Session<'a> {
    env: &'a TestEnv,
    runs: Vec<Ran>,
}

impl Session<'_> {
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = self.env.command(&["--verbose"]);
        cmd.args(args).env(SECRET_ENV, CLIENT_SECRET);
        cmd
    }

    fn run(&mut self, args: &[&str]) -> &RunResult {
        let result = Running::spawn(self.command(args), args.join(" ")).wait(RUN_TIMEOUT);
        self.record(args, result)
    }

    fn record(&mut self, args: &[&str], result: RunResult) -> &RunResult {
        let prints_token = matches!(args[0], "token" | "git-credential");
        self.runs.push(Ran {
            args: args.join(" "),
            result,
            prints_token,
        });
        &self.runs.last().unwrap().result
    }
}

#[test]
fn every_command_under_verbose_keeps_secrets_off_stderr() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Rotate);
    server.push_polls(&[Poll::Pending, Poll::Success]);
    server.set_app_auth(AppAuth {
        secret: Some(CLIENT_SECRET.into()),
        assertion_key: None,
    });
    let env = TestEnv::with_config_text(&config(&server));
    let mut s = Session {
        env: &env,
        runs: Vec::new(),
    };
    let token_endpoint = server.url("/token");

    s.run(&[
        "add",
        "extra",
        "--provider",
        "generic",
        "--client-id",
        "c",
        "--token-endpoint",
        &token_endpoint,
        "--scope",
        "mail",
        "--client-secret-env",
        SECRET_ENV,
    ])
    .expect_code(0);
    s.run(&["login", "work"]).expect_code(0);
    for format in ["raw", "xoauth2", "oauthbearer", "json"] {
        s.run(&["token", "work", "--format", format]).expect_code(0);
    }
    s.run(&["token", "work", "--force-refresh"]).expect_code(0);
    s.run(&["status"]).expect_code(0);
    s.run(&["refresh", "work"]).expect_code(0);
    s.run(&["doctor", "work"]);
    s.run(&["whoami", "work"]);
    s.run(&["token", "app"]).expect_code(0);
    s.run(&["login", "app"]).expect_code(0);

    // git's credential helper protocol, on stdin.
    let mut git = s.command(&["git-credential", "--account", "work", "get"]);
    git.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = git.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"protocol=smtp\nhost=mail.example.com\nusername=alice@example.com\n\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let git_result = RunResult::from_output("mailtoken git-credential get", out);
    s.record(&["git-credential", "get"], git_result)
        .expect_code(0);

    // Browser login, the code pasted back by hand.
    let mut web = Interactive::spawn(s.command(&["login", "web", "--paste", "--no-open"]));
    let line = web.wait_for_line("/authorize?", Duration::from_secs(20));
    let query = parse_form(line.trim().split_once('?').unwrap().1.as_bytes());
    let code = server.issue_code(&query["code_challenge"], &query["redirect_uri"]);
    web.type_line(&format!(
        "{}?code={code}&state={}",
        query["redirect_uri"],
        url_encode(&query["state"])
    ));
    s.record(&["login", "web"], web.wait(RUN_TIMEOUT))
        .expect_code(0);

    // Failures print server text and our own; neither may carry a secret.
    env.write_token("work", "at-hy-expired", "rt-hy-unknown", now_unix() - 60);
    s.run(&["token", "work"]).expect_code(3);
    // A refused refresh token is never sent again: a login with another one meets the
    // broken server.
    env.write_token("work", "at-hy-expired", "rt-hy-later", now_unix() - 60);
    server.add_refresh_token("rt-hy-later");
    server.set_refresh(Refresh::MalformedJson);
    s.run(&["token", "work"]).expect_code(4);
    s.run(&["refresh", "--all"]);
    s.run(&["logout", "work"]).expect_code(0);

    // Everything secret the run has seen, known only now.
    let mut secrets: Vec<String> = server.issued_access_tokens();
    secrets.extend((1..=20).map(|n| format!("fake-rt-{n}")));
    secrets.extend([
        CLIENT_SECRET.to_string(),
        code,
        DEVICE_CODE.to_string(),
        "at-hy-expired".into(),
        "rt-hy-unknown".into(),
        "rt-hy-later".into(),
        MALFORMED_JSON_BODY[17..45].to_string(),
    ]);
    let exchange = &server.requests_of(Kind::Code)[0];
    secrets.push(exchange.param("code_verifier").unwrap().to_string());
    assert!(secrets.iter().all(|s| s.len() >= 8), "{secrets:?}");

    let mut fingerprints = 0;
    for ran in &s.runs {
        for secret in &secrets {
            ran.result.assert_stderr_lacks(secret.as_str());
            if !ran.prints_token {
                ran.result.assert_stdout_lacks(secret.as_str());
            }
        }
        if ran.prints_token {
            ran.result
                .noting(format!("`{}` printed more than the access token", ran.args))
                .assert_stdout_lacks("fake-rt-")
                .assert_stdout_lacks(CLIENT_SECRET);
        }
        fingerprints += ran.result.stderr.matches(" #").count();
    }
    // --verbose really talked about the tokens, by fingerprint.
    assert!(
        fingerprints >= 5,
        "only {fingerprints} #fingerprints in verbose output"
    );
}

/// Words that mark a value as secret when they appear in an argument's name.
const SECRET_WORDS: &[&str] = &[
    "secret",
    "password",
    "passwd",
    "token",
    "code",
    "assertion",
    "key",
    "credential",
    "bearer",
];

/// Arguments whose names sound secret but whose values are not: each says where the secret
/// is found instead (a variable's name, a file, a command), or is an address or a choice.
const NOT_SECRET: &[(&str, &str)] = &[
    ("client_secret_env", "VAR"),
    ("client_secret_file", "PATH"),
    ("client_secret_command", "CMD"),
    ("client_key", "PATH"),
    ("service_account_key", "PATH"),
    ("token_endpoint", "URL"),
    ("device_authorization_endpoint", "URL"),
    ("token_endpoint_auth_method", "METHOD"),
];

#[test]
fn no_flag_takes_a_secret_value() {
    fn walk(cmd: &clap::Command, path: &str, found: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if !arg.get_action().takes_values() {
                continue;
            }
            let id = arg.get_id().as_str();
            let value_name = arg
                .get_value_names()
                .and_then(|v| v.first())
                .map(|v| v.as_str())
                .unwrap_or("");
            let sounds_secret = SECRET_WORDS.iter().any(|w| id.contains(w));
            let allowed = NOT_SECRET
                .iter()
                .any(|(name, value)| *name == id && *value == value_name);
            if sounds_secret && !allowed {
                found.push(format!("{path} --{id} <{value_name}>"));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), found);
        }
    }
    let cli = mailtoken::cli::Cli::command();
    let mut found = Vec::new();
    walk(&cli, "mailtoken", &mut found);
    assert!(
        found.is_empty(),
        "flags that would take a secret on the command line (visible in ps): {found:?}"
    );
    // The walk does see the arguments it lets through.
    let add = cli.find_subcommand("add").unwrap();
    assert!(
        add.get_arguments()
            .any(|a| a.get_id() == "client_secret_env")
    );
}

/// Listening sockets on `port` in /proc/net/tcp or tcp6, as hex local addresses.
fn listeners(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
                continue;
            };
            let (addr, p) = local.rsplit_once(':').unwrap();
            // 0A: LISTEN
            if *state == "0A" && u16::from_str_radix(p, 16) == Ok(port) {
                found.push(format!("{table} {addr}"));
            }
        }
    }
    found
}

#[test]
fn the_browser_listener_binds_loopback_only_and_answers_one_callback() {
    for redirect in [None, Some("http://localhost"), Some("http://127.0.0.1/cb")] {
        let server = FakeServer::start();
        let extra = match redirect {
            Some(uri) => format!("\nredirect_uri = \"{uri}\""),
            None => String::new(),
        };
        let env = TestEnv::with_config_text(&account_toml(
            ACCOUNT,
            &server.base_url(),
            &format!(
                "flow = \"browser\"\nauthorization_endpoint = \"{}/authorize\"{extra}",
                server.base_url()
            ),
        ));
        let mut login =
            Interactive::spawn(env.command(&["login", ACCOUNT, "--no-open", "--timeout", "20"]));
        let line = login.wait_for_line("/authorize?", Duration::from_secs(20));
        let query = parse_form(line.trim().split_once('?').unwrap().1.as_bytes());
        let uri = &query["redirect_uri"];
        let authority = uri
            .strip_prefix("http://")
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        let port: u16 = authority.rsplit_once(':').unwrap().1.parse().unwrap();
        let path = uri.split_once(authority).unwrap().1;
        let path = if path.is_empty() { "/" } else { path };

        // Exactly one listening socket, on 127.0.0.1 (0100007F), none on any other address.
        assert_eq!(
            listeners(port),
            vec![format!("/proc/net/tcp 0100007F")],
            "{uri}"
        );

        // Stray requests (the browser's favicon, a forged answer) are answered and the login
        // goes on; its own answer ends it, here a refusal at the consent page.
        let addr = ([127, 0, 0, 1], port).into();
        let get = |target: &str| {
            raw_request(
                addr,
                format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
        };
        assert_eq!(get("/favicon.ico").0, 404);
        assert_eq!(get(&format!("{path}?code=forged&state=forged")).0, 400);
        let state = url_encode(&query["state"]);
        assert_eq!(
            get(&format!("{path}?error=access_denied&state={state}")).0,
            400
        );
        let r = login.wait(Duration::from_secs(20));
        assert_eq!(r.code, Some(3), "{uri}\n{}", r.stderr);
        r.assert_stderr_has("access_denied");
        assert!(
            TcpStream::connect(addr).is_err(),
            "{uri}: the listener outlived its callback"
        );
        assert_eq!(
            server.count(Kind::Code),
            0,
            "a forged callback was exchanged"
        );
        assert!(env.token_bytes(ACCOUNT).is_none());
    }
}

#[test]
fn a_proxy_from_the_environment_never_sees_a_request_to_this_machine() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    server.add_refresh_token("rt-proxy-seed");
    env.write_token(ACCOUNT, "old-at", "rt-proxy-seed", now_unix() - 60);
    // A "proxy" that counts who connects to it and never answers.
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    proxy.set_nonblocking(true).unwrap();
    let url = format!("http://127.0.0.1:{}", proxy.local_addr().unwrap().port());
    let mut cmd = env.command(&["token", ACCOUNT]);
    for var in ["NO_PROXY", "no_proxy"] {
        cmd.env_remove(var);
    }
    for var in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        cmd.env(var, &url);
    }
    cmd.env("MAILTOKEN_HTTP_TIMEOUT", "3");
    let out = Running::spawn(cmd, "token behind a proxy".into()).wait(RUN_TIMEOUT);
    let proxied = proxy.accept().is_ok();
    out.expect_code(0);
    assert!(!proxied, "the refresh token went through the proxy");
    assert_eq!(server.count(Kind::Refresh), 1);
}

#[test]
fn the_client_secret_variable_is_not_passed_to_store_commands() {
    let server = FakeServer::start();
    let vault = tempfile::tempdir().unwrap();
    let seen_env = vault.path().join("env");
    let env = TestEnv::with_extra(
        &server,
        "",
        &format!(
            "client_secret_env = \"MT_HYGIENE_SECRET\"\nstore = \"command\"\n\
             store_load_command = \"env > {}; echo\"\nstore_save_command = \"cat > /dev/null\"\n",
            seen_env.display()
        ),
    );
    let mut cmd = env.command(&["status", ACCOUNT]);
    cmd.env("MT_HYGIENE_SECRET", "client-secret-in-env-0123");
    Running::spawn(cmd, "status".into())
        .wait(RUN_TIMEOUT)
        .expect_code(0);
    let seen = std::fs::read_to_string(&seen_env).expect("the load command ran");
    assert!(seen.contains("PATH="), "{seen}");
    assert!(!seen.contains("client-secret-in-env-0123"), "{seen}");
}

#[test]
fn a_user_with_control_characters_cannot_inject_sasl_fields() {
    let server = FakeServer::start();
    let env = TestEnv::new(&server);
    env.write_token(ACCOUNT, "at-user", "rt-user", now_unix() + 3600);
    for user in ["eve\u{1}auth=Bearer forged", "eve\r\nA1 LOGOUT"] {
        let out = env.run(&["token", ACCOUNT, "--format", "xoauth2", "--user", user]);
        out.expect_code(2);
        assert!(out.stdout.is_empty());
        out.assert_stderr_has("--user");
    }
}

#[test]
fn core_dumps_are_off_so_a_crash_cannot_write_tokens_to_disk() {
    let env = TestEnv::empty();
    std::fs::write(&env.config, "").unwrap();
    // A run that waits (git's request on stdin), started with core dumps allowed.
    let mut cmd = env.command(&["git-credential", "get"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_CORE, &mut limit);
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_CORE, &limit);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let limits = format!("/proc/{}/limits", child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let core = loop {
        std::thread::sleep(Duration::from_millis(50));
        let text = std::fs::read_to_string(&limits).unwrap_or_default();
        let line = text
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap_or("")
            .to_string();
        if line.split_whitespace().nth(4) == Some("0") || std::time::Instant::now() > deadline {
            break line;
        }
    };
    drop(child.stdin.take());
    let _ = child.wait();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(fields.get(4..6), Some(&["0", "0"][..]), "{core}");
}
