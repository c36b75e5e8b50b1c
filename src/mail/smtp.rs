//! SMTP for `send-test`, `check --smtp` and the proxy's upstream login: our own small client on `wire::Conn`, so that every
//! reply line is bounded, the session has a deadline, STARTTLS is checked for injected data,
//! and each step (connect, TLS, auth, accepted) is reported with the server's own words.
//! The message itself is built by lettre's builder.

use anyhow::{Context, Result};
use lettre::Message;
use lettre::message::header::ContentType;

use crate::config::TlsMode;
use crate::error::{server, usage};
use crate::log::{fingerprint, printable};
use crate::mail::sasl::{self, Mech, refusal};
use crate::mail::servers::Server;
use crate::mail::wire::{self, Conn, report};

/// Lines in one reply (EHLO lists a dozen extensions); more is not a mail server.
const MAX_REPLY_LINES: usize = 100;
/// What we call ourselves in EHLO: RFC 5321 allows an address literal when there is no name
/// worth giving, and a client's host name is nobody's business here.
const EHLO_NAME: &str = "[127.0.0.1]";

/// What `send-test` sends.
pub struct TestMail<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub subject: &'a str,
    pub body: String,
}

/// One SMTP reply: its code and its lines' texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// `250 2.0.0 OK queued`: the reply as one line (several lines joined with " / ").
    pub fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" / "))
            .trim()
            .to_string()
    }

    /// The extensions an EHLO reply lists, upper-cased (the first line is the greeting).
    pub fn extensions(&self) -> Vec<String> {
        self.lines
            .iter()
            .skip(1)
            .map(|l| l.to_ascii_uppercase())
            .collect()
    }

    /// Whether EHLO offered `AUTH` with `mech`.
    pub fn offers_auth(&self, mech: &str) -> bool {
        self.extensions().iter().any(|ext| {
            let mut words = ext.split_whitespace();
            words.next() == Some("AUTH") && words.any(|m| m == mech)
        })
    }
}

/// One reply line: `250-text` (more follow) or `250 text` (the last). None: not SMTP.
pub fn parse_line(line: &str) -> Option<(u16, bool, &str)> {
    let code = line.get(..3)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (more, text) = match line.as_bytes().get(3) {
        None => (false, ""),
        Some(b' ') => (false, &line[4..]),
        Some(b'-') => (true, &line[4..]),
        Some(_) => return None,
    };
    Some((code.parse().ok()?, more, text))
}

fn read_reply(conn: &mut Conn) -> Result<Reply> {
    let mut lines = Vec::new();
    for _ in 0..MAX_REPLY_LINES {
        let line = conn.read_line()?;
        let Some((code, more, text)) = parse_line(&line) else {
            return Err(server(format!("not an SMTP reply: {}", printable(&line))));
        };
        lines.push(text.to_string());
        if !more {
            return Ok(Reply { code, lines });
        }
    }
    Err(server("the SMTP server sent too many lines in one reply"))
}

fn command(conn: &mut Conn, line: &str) -> Result<Reply> {
    conn.write_line(line)?;
    read_reply(conn)
}

/// A reply that must be positive, or the step fails with the server's words.
fn expect(conn: &mut Conn, line: &str, what: &str, srv: &Server) -> Result<Reply> {
    let reply = command(conn, line)?;
    if !reply.is_positive() {
        return Err(server(format!(
            "{what} at {}:{} failed: {}",
            srv.host,
            srv.port,
            printable(&reply.text())
        )));
    }
    Ok(reply)
}

/// An open session: the connection and what the last EHLO offered.
pub struct Session {
    conn: Conn,
    ehlo: Reply,
}

impl Session {
    /// What the server's last EHLO offered.
    pub fn ehlo(&self) -> &Reply {
        &self.ehlo
    }

    /// The connection, for the proxy to relay once authenticated.
    pub fn into_conn(self) -> Conn {
        self.conn
    }
}

/// Connect, greet, and secure the connection as configured.
pub fn open(srv: &Server) -> Result<Session> {
    let mut conn = wire::open("smtp", srv)?;
    let greeting = read_reply(&mut conn)?;
    report("smtp", "greeting", greeting.text());
    if greeting.code != 220 {
        return Err(server(format!(
            "{}:{} did not greet as an SMTP server: {}",
            srv.host,
            srv.port,
            printable(&greeting.text())
        )));
    }
    let mut ehlo = expect(&mut conn, &format!("EHLO {EHLO_NAME}"), "EHLO", srv)?;
    report("smtp", "ehlo", ehlo.text());
    if srv.tls == TlsMode::Starttls {
        if !ehlo.extensions().iter().any(|e| e == "STARTTLS") {
            let _ = conn.write_line("QUIT");
            return Err(server(format!(
                "{}:{} does not offer STARTTLS, so the token cannot be sent safely. \
                 Check smtp_host/smtp_port (587 is STARTTLS, 465 is implicit TLS: smtp_tls = \"tls\")",
                srv.host, srv.port
            )));
        }
        expect(&mut conn, "STARTTLS", "STARTTLS", srv)?;
        conn = conn.starttls(srv)?;
        report("smtp", "tls", conn.tls_summary(&srv.host));
        ehlo = expect(&mut conn, &format!("EHLO {EHLO_NAME}"), "EHLO", srv)?;
        report("smtp", "ehlo", ehlo.text());
    }
    Ok(Session { conn, ehlo })
}

/// The AUTH command line, without CRLF.
pub fn auth_command(mech: Mech, user: &str, token: &str, srv: &Server) -> String {
    format!(
        "AUTH {} {}",
        mech.name(),
        mech.initial_response(user, token, &srv.host, srv.port)
    )
}

pub fn authenticate(
    session: &mut Session,
    srv: &Server,
    user: &str,
    token: &str,
    mech: Mech,
) -> Result<()> {
    if !session.ehlo.offers_auth(mech.name()) {
        report(
            "smtp",
            "auth",
            format!(
                "the server does not advertise AUTH {} (trying anyway)",
                mech.name()
            ),
        );
    }
    report(
        "smtp",
        "auth",
        format!(
            "AUTH {} as {user} with token {}",
            mech.name(),
            fingerprint(token)
        ),
    );
    let conn = &mut session.conn;
    let reply = command(conn, &auth_command(mech, user, token, srv))?;
    match reply.code {
        // An error challenge: base64 JSON saying why. Answer it so the server ends the
        // exchange with its final reply, and show both.
        334 => {
            let first = reply.lines.first().map(String::as_str).unwrap_or("");
            let challenge = sasl::decode_challenge(first.split_whitespace().next().unwrap_or(""));
            let last = match command(conn, mech.abort_response()) {
                Ok(r) => r.text(),
                Err(e) => e.to_string(),
            };
            Err(refusal("SMTP", &printable(&last), Some(challenge)))
        }
        200..=299 => {
            report(
                "smtp",
                "auth",
                format!("accepted: {}", printable(&reply.text())),
            );
            Ok(())
        }
        _ => Err(refusal("SMTP", &printable(&reply.text()), None)),
    }
}

pub fn build_message(mail: &TestMail) -> Result<Message> {
    let from = mail.from.parse().map_err(|e| {
        usage(format!(
            "`{}` is not a usable sender address: {e}",
            mail.from
        ))
    })?;
    let to = mail.to.parse().map_err(|e| {
        usage(format!(
            "`{}` is not a usable address for --to: {e}",
            mail.to
        ))
    })?;
    Message::builder()
        .from(from)
        .to(to)
        .subject(mail.subject)
        .message_id(None)
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body.clone())
        .context("cannot build the test message")
}

/// The message as DATA carries it: CRLF line ends, lines starting with a dot doubled
/// (RFC 5321 section 4.5.2), and the final `.` line.
pub fn data_block(message: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(message);
    let mut out = Vec::with_capacity(message.len() + 8);
    for line in text.split_terminator('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// `check --smtp`: connect, authenticate, quit.
pub fn check(srv: &Server, user: &str, token: &str, mech: Mech) -> Result<()> {
    let mut session = open(srv)?;
    authenticate(&mut session, srv, user, token, mech)?;
    quit(&mut session);
    Ok(())
}

/// `send-test`: connect, authenticate, send one message, quit.
pub fn send(srv: &Server, token: &str, mech: Mech, mail: &TestMail) -> Result<()> {
    let message = build_message(mail)?;
    let mut session = open(srv)?;
    authenticate(&mut session, srv, mail.from, token, mech)?;
    let conn = &mut session.conn;
    let refused = |reply: Reply| {
        let text = printable(&reply.text()).into_owned();
        anyhow::anyhow!(
            "the SMTP server did not take the message: {text}{}",
            sasl::hint(&text)
                .map(|h| format!("\n  fix: {h}"))
                .unwrap_or_default()
        )
    };
    let reply = command(conn, &format!("MAIL FROM:<{}>", mail.from))?;
    if !reply.is_positive() {
        return Err(refused(reply));
    }
    let reply = command(conn, &format!("RCPT TO:<{}>", mail.to))?;
    if !reply.is_positive() {
        return Err(refused(reply));
    }
    let reply = command(conn, "DATA")?;
    if reply.code != 354 {
        return Err(refused(reply));
    }
    conn.write_raw(&data_block(&message.formatted()))?;
    let reply = read_reply(conn)?;
    if !reply.is_positive() {
        return Err(refused(reply));
    }
    report("smtp", "accepted", reply.text());
    quit(&mut session);
    Ok(())
}

fn quit(session: &mut Session) {
    match command(&mut session.conn, "QUIT") {
        Ok(r) => report("smtp", "quit", r.text()),
        Err(e) => report("smtp", "quit", format!("(ignored) {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv() -> Server {
        Server {
            host: "smtp.example.com".into(),
            port: 587,
            tls: TlsMode::Starttls,
            ca_file: None,
        }
    }

    #[test]
    fn auth_commands_carry_the_sasl_strings() {
        assert_eq!(
            auth_command(Mech::Xoauth2, "u@example.com", "tok", &srv()),
            format!("AUTH XOAUTH2 {}", sasl::xoauth2("u@example.com", "tok"))
        );
        assert_eq!(
            auth_command(Mech::Oauthbearer, "u@example.com", "tok", &srv()),
            format!(
                "AUTH OAUTHBEARER {}",
                sasl::oauthbearer("u@example.com", Some("smtp.example.com"), Some(587), "tok")
            )
        );
    }

    #[test]
    fn reply_lines_are_parsed_strictly() {
        assert_eq!(parse_line("250-8BITMIME"), Some((250, true, "8BITMIME")));
        assert_eq!(
            parse_line("235 2.7.0 Accepted"),
            Some((235, false, "2.7.0 Accepted"))
        );
        assert_eq!(parse_line("221"), Some((221, false, "")));
        assert_eq!(parse_line("25x ok"), None);
        assert_eq!(parse_line("2500 ok"), None);
        assert_eq!(parse_line("é50 ok"), None);
        assert_eq!(parse_line(""), None);
        let ehlo = Reply {
            code: 250,
            lines: vec!["mx".into(), "starttls".into(), "AUTH PLAIN XOAUTH2".into()],
        };
        assert!(ehlo.offers_auth("XOAUTH2") && !ehlo.offers_auth("OAUTHBEARER"));
        assert_eq!(ehlo.text(), "250 mx / starttls / AUTH PLAIN XOAUTH2");
    }

    #[test]
    fn data_is_dot_stuffed_with_crlf() {
        assert_eq!(
            data_block(b"Subject: x\r\n\r\n.hidden\nline\n"),
            b"Subject: x\r\n\r\n..hidden\r\nline\r\n.\r\n"
        );
    }

    #[test]
    fn test_messages_are_built_or_refused() {
        let mail = TestMail {
            from: "a@example.com",
            to: "b@example.com",
            subject: "hello",
            body: "body text".into(),
        };
        let text = String::from_utf8(build_message(&mail).unwrap().formatted()).unwrap();
        assert!(text.contains("Subject: hello\r\n"), "{text}");
        assert!(text.contains("To: b@example.com\r\n"), "{text}");
        assert!(text.contains("Message-ID: <"), "{text}");
        let bad = TestMail {
            to: "not an address",
            ..mail
        };
        assert!(build_message(&bad).is_err());
    }
}
