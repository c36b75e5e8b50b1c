//! `send-test` and `check` against fake mail servers on 127.0.0.1, hostile servers, and every
//! exit code of the README's table. The store is written directly with far-future tokens, so no
//! OAuth server is involved.

use crate::support::env::*;
use crate::support::mail_servers::*;

fn smtp_account(port: u16, tls: &str) -> String {
    account_toml(
        "work",
        &nowhere(),
        &format!("smtp_host = \"127.0.0.1\"\nsmtp_port = {port}\nsmtp_tls = \"{tls}\""),
    )
}

#[test]
fn send_test_authenticates_with_the_exact_xoauth2_string_and_delivers() {
    let expected = format!("AUTH XOAUTH2 {}", xoauth2(USER, TOKEN));
    let (port, seen) = smtp_server(SmtpMode::Accept {
        auth_line: expected.clone(),
    });
    let env = TestEnv::logged_in(&smtp_account(port, "none"));
    let run = env.run(&[
        "send-test",
        "work",
        "--to",
        "bob@example.com",
        "--subject",
        "Hello from the test",
    ]);
    let s = seen.wait();
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(s.auth_line.as_deref(), Some(expected.as_str()));
    assert_eq!(s.mail_from.as_deref(), Some("<alice@example.com>"));
    assert_eq!(s.rcpt_to, ["<bob@example.com>"]);
    let data = s.data.expect("no DATA");
    assert!(data.contains("Subject: Hello from the test"), "{data}");
    assert!(data.contains("To: bob@example.com"), "{data}");
    assert!(data.contains("From: alice@example.com"), "{data}");
    assert!(s.quit);
    for step in [
        "connect",
        "tls",
        "auth",
        "accepted",
        "250 2.0.0 OK queued as FAKE123",
    ] {
        run.assert_stderr_has(step);
    }
    assert!(run.stdout.is_empty(), "{}", run.all());
    run.assert_no_secrets();
}

#[test]
fn send_test_refusal_shows_the_decoded_challenge_and_the_final_reply() {
    let (port, seen) = smtp_server(SmtpMode::Challenge);
    let env = TestEnv::logged_in(&smtp_account(port, "none"));
    let run = env.run(&["send-test", "work", "--to", "bob@example.com"]);
    let s = seen.wait();
    assert_ne!(run.code, Some(0), "{}", run.all());
    run.assert_stderr_has(CHALLENGE_JSON);
    run.assert_stderr_has("Username and Password not accepted");
    run.assert_stderr_has("the token was refused");
    // The client answered the challenge with an empty line and sent no message.
    let auth = s
        .commands
        .iter()
        .position(|c| c.starts_with("AUTH "))
        .unwrap();
    assert_eq!(s.commands[auth + 1], "");
    assert!(s.mail_from.is_none() && s.data.is_none());
    run.assert_no_secrets();
}

#[test]
fn send_test_with_oauthbearer_sends_the_rfc7628_string() {
    let (port, seen) = smtp_server(SmtpMode::AcceptOauthbearer);
    let env = TestEnv::logged_in(&smtp_account(port, "none"));
    let run = env.run(&[
        "send-test",
        "work",
        "--to",
        "bob@example.com",
        "--mech",
        "oauthbearer",
    ]);
    let s = seen.wait();
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(
        s.auth_line.as_deref(),
        Some(oauthbearer_line(port).as_str())
    );
    assert!(s.data.is_some_and(|d| d.contains("OAUTHBEARER")));
    run.assert_no_secrets();
}

#[test]
fn implicit_tls_to_a_plain_server_fails_before_any_token_is_sent() {
    let (port, seen) = smtp_server(SmtpMode::Accept {
        auth_line: String::new(),
    });
    let env = TestEnv::logged_in(&smtp_account(port, "tls"));
    let run = env.run(&["check", "work", "--smtp"]);
    let s = seen.wait();
    assert_eq!(run.code, Some(4), "{}", run.all());
    run.assert_stderr_has("TLS with 127.0.0.1 failed");
    assert!(
        s.auth_line.is_none() && s.commands.is_empty(),
        "{:?}",
        s.commands
    );
}

#[test]
fn starttls_is_required_before_any_token_is_sent() {
    let (port, seen) = smtp_server(SmtpMode::NoStarttls);
    let env = TestEnv::logged_in(&smtp_account(port, "starttls"));
    let run = env.run(&["send-test", "work", "--to", "bob@example.com"]);
    let s = seen.wait();
    assert_eq!(run.code, Some(4), "{}", run.all());
    run.assert_stderr_has("does not offer STARTTLS");
    assert!(s.auth_line.is_none(), "{:?}", s.commands);
}

#[test]
fn plain_text_smtp_is_refused_for_remote_hosts() {
    let env = TestEnv::logged_in(&account_toml(
        "work",
        &nowhere(),
        "smtp_host = \"smtp.example.com\"\nsmtp_tls = \"none\"",
    ));
    let run = env.run(&["send-test", "work", "--to", "bob@example.com"]);
    assert_eq!(run.code, Some(2), "{}", run.all());
    run.assert_stderr_has("clear text");
}

#[test]
fn check_smtp_authenticates_and_quits_without_sending() {
    let expected = format!("AUTH XOAUTH2 {}", xoauth2(USER, TOKEN));
    let (port, seen) = smtp_server(SmtpMode::Accept {
        auth_line: expected.clone(),
    });
    let env = TestEnv::logged_in(&smtp_account(port, "none"));
    let run = env.run(&["check", "work", "--smtp"]);
    let s = seen.wait();
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(s.auth_line.as_deref(), Some(expected.as_str()));
    assert!(s.quit && s.mail_from.is_none());
    run.assert_stderr_has("235 2.7.0 Accepted");
    run.assert_no_secrets();
}

fn imap_account(port: u16) -> String {
    account_toml(
        "work",
        &nowhere(),
        &format!("imap_host = \"127.0.0.1\"\nimap_port = {port}\nimap_tls = \"none\""),
    )
}

#[test]
fn check_imap_with_sasl_ir() {
    let (port, seen) = imap_server(xoauth2(USER, TOKEN), true);
    let env = TestEnv::logged_in(&imap_account(port));
    let run = env.run(&["check", "work", "--imap"]);
    let s = seen.wait();
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(
        s.commands[0],
        format!("a2 AUTHENTICATE XOAUTH2 {}", xoauth2(USER, TOKEN))
    );
    assert!(s.logout);
    run.assert_stderr_has("AUTHENTICATE completed");
    run.assert_stderr_has("LOGOUT completed");
    run.assert_no_secrets();
}

/// A mail server whose certificate a private CA signed: refused as untrusted (a setup
/// problem, exit 2, naming the setting), then trusted through the account's `tls_ca_file`.
#[test]
fn a_private_ca_in_tls_ca_file_is_trusted_for_the_mail_server() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let tls_account = |port: u16, extra: &str| {
        account_toml(
            "work",
            &nowhere(),
            &format!("imap_host = \"localhost\"\nimap_port = {port}\nimap_tls = \"tls\"\n{extra}"),
        )
    };
    let (plain, _) = imap_server(xoauth2(USER, TOKEN), true);
    let env = TestEnv::logged_in(&tls_account(tls_front(plain), ""));
    let run = env.run(&["check", "work", "--imap"]);
    assert_eq!(run.code, Some(2), "{}", run.all());
    run.assert_stderr_has("tls_ca_file");

    let (plain, seen) = imap_server(xoauth2(USER, TOKEN), true);
    let env = TestEnv::logged_in(&tls_account(
        tls_front(plain),
        &format!("tls_ca_file = \"{fixtures}/private-ca.pem\""),
    ));
    let run = env.run(&["check", "work", "--imap"]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert!(seen.wait().logout);
}

#[test]
fn check_imap_without_sasl_ir_uses_capability_and_a_continuation() {
    let (port, seen) = imap_server(xoauth2(USER, TOKEN), false);
    let env = TestEnv::logged_in(&imap_account(port));
    let run = env.run(&["check", "work", "--imap"]);
    let s = seen.wait();
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert_eq!(s.commands[0], "a1 CAPABILITY");
    assert_eq!(s.commands[1], "a2 AUTHENTICATE XOAUTH2");
    assert_eq!(s.response.as_deref(), Some(xoauth2(USER, TOKEN).as_str()));
}

#[test]
fn check_imap_refusal_shows_no_and_the_challenge() {
    let (port, seen) = imap_server(xoauth2(USER, "some-other-token"), true);
    let env = TestEnv::logged_in(&imap_account(port));
    let run = env.run(&["check", "work", "--imap"]);
    let s = seen.wait();
    assert_eq!(run.code, Some(1), "{}", run.all());
    run.assert_stderr_has("Invalid credentials");
    run.assert_stderr_has(CHALLENGE_JSON);
    assert_eq!(
        s.commands.get(1).map(String::as_str),
        Some(""),
        "{:?}",
        s.commands
    );
    run.assert_no_secrets();
}

#[test]
fn check_pop_and_smtp_together() {
    let (pop_port, pop_seen) = pop_server(xoauth2(USER, TOKEN));
    let (smtp_port, smtp_seen) = smtp_server(SmtpMode::Challenge);
    let env = TestEnv::logged_in(&account_toml(
        "work",
        &nowhere(),
        &format!(
            "pop_host = \"127.0.0.1\"\npop_port = {pop_port}\npop_tls = \"none\"\n\
             smtp_host = \"127.0.0.1\"\nsmtp_port = {smtp_port}\nsmtp_tls = \"none\""
        ),
    ));
    let run = env.run(&["check", "work", "--pop", "--smtp"]);
    let pop = pop_seen.wait();
    let _ = smtp_seen.wait();
    assert_eq!(pop.commands[0], "AUTH XOAUTH2");
    assert_eq!(pop.commands[1], xoauth2(USER, TOKEN));
    assert!(pop.quit);
    run.assert_stderr_has("pop   ok");
    run.assert_stderr_has("smtp  FAILED");
    run.assert_stderr_has("1 of 2 checks failed (smtp)");
    assert_eq!(run.code, Some(1));
    run.assert_no_secrets();
}

#[test]
fn check_without_a_login_says_to_log_in() {
    let env = TestEnv::with_store();
    env.write_config(&imap_account(closed_port()));
    let run = env.run(&["check", "work", "--imap"]);
    assert_eq!(run.code, Some(3), "{}", run.all());
    run.assert_stderr_has("mailtoken login work");
}

#[test]
fn check_reports_a_server_that_is_down() {
    let env = TestEnv::logged_in(&imap_account(closed_port()));
    let run = env.run(&["check", "work", "--imap"]);
    assert_eq!(run.code, Some(4), "{}", run.all());
    run.assert_stderr_has("cannot connect to 127.0.0.1");
}

#[test]
fn an_smtp_line_without_end_is_cut_off_not_buffered() {
    // 4 MiB of greeting and no line end: the reader must stop at its line limit.
    let mut flood = b"220 ".to_vec();
    flood.extend(std::iter::repeat_n(b'x', 4 << 20));
    let (port, seen) = raw_server(flood);
    let env = TestEnv::logged_in(&smtp_account(port, "none"));
    let run = env.run(&["check", "work", "--smtp"]);
    let _ = seen.wait();
    assert_eq!(run.code, Some(4), "{}", run.all());
    run.assert_stderr_has("over-long line");
    run.assert_no_secrets();
}

#[test]
fn a_non_ascii_imap_greeting_is_an_error_not_a_crash() {
    let (port, seen) = raw_server("* OK aéééé [CAPABILITY ééé\r\n".as_bytes().to_vec());
    let env = TestEnv::logged_in(&imap_account(port));
    let run = env.run(&["check", "work", "--imap"]);
    let _ = seen.wait();
    assert_eq!(run.code, Some(4), "{}", run.all());
    run.assert_stderr_lacks("panicked");
}

#[test]
fn escape_sequences_from_a_server_are_shown_not_obeyed() {
    let (port, seen) = raw_server(b"220 \x1b[2J\x1b]0;owned\x07 ready\r\n".to_vec());
    let env = TestEnv::logged_in(&smtp_account(port, "none"));
    let run = env.run(&["check", "work", "--smtp"]);
    let _ = seen.wait();
    run.assert_stderr_lacks("\x1b");
    run.assert_stderr_has("\\u{1b}[2J");
}

/// Every row of the README's exit-code table, by a command a person runs: 0 a cached token;
/// 1 a corrupt token store; 2 a bad flag, a bad config, and an untrusted certificate for one
/// check and for two (the summary of several checks keeps the code); 3 no stored login; 4 a
/// token server that refuses connections, and two mail servers that do.
#[test]
fn every_row_of_the_exit_code_table() {
    let table = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for row in [
        "| 0 | success",
        "| 1 | other failure",
        "| 2 | usage or configuration error (including a server certificate that is not trusted here)",
        "| 3 | a new login is needed",
        "| 4 | network or server trouble",
    ] {
        assert!(table.contains(row), "the README's table changed: {row}");
    }
    let untrusted = |services: &[&str]| {
        let mut keys = String::new();
        for service in services {
            let (plain, _) = imap_server(xoauth2(USER, TOKEN), true);
            keys.push_str(&format!(
                "{service}_host = \"localhost\"\n{service}_port = {}\n{service}_tls = \"tls\"\n",
                tls_front(plain)
            ));
        }
        TestEnv::logged_in(&account_toml("work", &nowhere(), &keys))
    };
    let down = |services: &[&str]| {
        let keys: String = services
            .iter()
            .map(|s| {
                format!(
                    "{s}_host = \"127.0.0.1\"\n{s}_port = {}\n{s}_tls = \"none\"\n",
                    closed_port()
                )
            })
            .collect();
        TestEnv::logged_in(&account_toml("work", &nowhere(), &keys))
    };
    let plain = || TestEnv::logged_in(&account_toml("work", &nowhere(), ""));
    let cases: Vec<(i32, &str, TestEnv, Vec<&str>)> = vec![
        (0, "a cached token", plain(), vec!["token", "work"]),
        (
            1,
            "a corrupt token store",
            {
                let env = plain();
                std::fs::write(env.token_path("work"), "{ not json").unwrap();
                env
            },
            vec!["token", "work"],
        ),
        (
            2,
            "a bad flag",
            plain(),
            vec!["token", "work", "--format", "nope"],
        ),
        (
            2,
            "a config that does not load",
            {
                let env = TestEnv::with_store();
                env.write_config("refresh_margin = \"soon\"\n");
                env
            },
            vec!["token", "work"],
        ),
        (
            2,
            "an untrusted certificate, one check",
            untrusted(&["imap"]),
            vec!["check", "work", "--imap"],
        ),
        (
            2,
            "an untrusted certificate, two checks",
            untrusted(&["imap", "smtp"]),
            vec!["check", "work", "--imap", "--smtp"],
        ),
        (
            3,
            "no stored login",
            {
                let env = plain();
                std::fs::remove_file(env.token_path("work")).unwrap();
                env
            },
            vec!["token", "work"],
        ),
        (
            4,
            "a token server that refuses connections",
            {
                let env = plain();
                env.write_token_bytes("work", serde_json::json!({"version": 1, "access_token": "old", "token_type": "Bearer", "expires_at": 1, "refresh_token": REFRESH}).to_string().as_bytes());
                env
            },
            vec!["token", "work"],
        ),
        (
            4,
            "two mail servers that refuse connections",
            down(&["imap", "smtp"]),
            vec!["check", "work", "--imap", "--smtp"],
        ),
    ];
    for (code, what, env, args) in cases {
        let run = env.run(&args);
        assert_eq!(run.code, Some(code), "{what}: {}", run.all());
        if code != 0 {
            assert!(run.stdout.is_empty(), "{what}: {}", run.all());
            assert!(
                run.stderr.starts_with("mailtoken: ")
                    || run.stderr.contains("\nmailtoken: ")
                    || run.stderr.contains("error:"),
                "{what}: {}",
                run.all()
            );
        }
    }
}
