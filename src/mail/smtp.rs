//! SMTP for `send-test` and `check --smtp`, with lettre's step-by-step connection so each step
//! (connect, TLS, auth, accepted) can be reported and a refusal shows the server's own words.
//!
//! XOAUTH2 goes through lettre's `Mechanism::Xoauth2` (the token is the password). lettre has
//! no OAUTHBEARER mechanism, so that one is sent as a raw `AUTH OAUTHBEARER` command on the
//! same lettre connection: the server's replies are parsed by lettre all the same.

use anyhow::{Context, Result};
use lettre::Message;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{SmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::Auth;
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;

use crate::config::TlsMode;
use crate::error::{server, usage};
use crate::log::fingerprint;
use crate::mail::sasl::{self, Mech, refusal};
use crate::mail::servers::Server;
use crate::mail::wire::{NO_TLS, TIMEOUT, report};

/// What `send-test` sends.
pub struct TestMail<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub subject: &'a str,
    pub body: String,
}

/// `250 2.0.0 OK queued`: a reply as one line.
pub fn reply_text(r: &Response) -> String {
    let lines: Vec<&str> = r.message().collect();
    format!("{} {}", r.code(), lines.join(" / "))
        .trim()
        .to_string()
}

fn lettre_error(srv: &Server, what: &str, e: &lettre::transport::smtp::Error) -> anyhow::Error {
    server(format!("{what} {}:{} failed: {e}", srv.host, srv.port))
}

/// Connect, greet, and secure the connection as configured.
pub fn open(srv: &Server) -> Result<SmtpConnection> {
    let hello = ClientId::default();
    let addr = (srv.host.as_str(), srv.port);
    let params = || {
        TlsParameters::new(srv.host.clone())
            .map_err(|e| server(format!("cannot set up TLS for {}: {e}", srv.host)))
    };
    let mut conn = match srv.tls {
        TlsMode::Tls => {
            let tls = params()?;
            let conn = SmtpConnection::connect(addr, Some(TIMEOUT), &hello, Some(&tls), None)
                .map_err(|e| lettre_error(srv, "connecting with TLS to", &e))?;
            report(
                "smtp",
                "connect",
                format!("connected to {}:{}", srv.host, srv.port),
            );
            report("smtp", "tls", "implicit TLS, certificate verified");
            conn
        }
        TlsMode::Starttls | TlsMode::None => {
            let conn = SmtpConnection::connect(addr, Some(TIMEOUT), &hello, None, None)
                .map_err(|e| lettre_error(srv, "connecting to", &e))?;
            report(
                "smtp",
                "connect",
                format!("connected to {}:{}", srv.host, srv.port),
            );
            conn
        }
    };
    report("smtp", "ehlo", conn.server_info());
    match srv.tls {
        TlsMode::Starttls => {
            if !conn.can_starttls() {
                conn.abort();
                return Err(server(format!(
                    "{}:{} does not offer STARTTLS, so the token cannot be sent safely. \
                     Check smtp_host/smtp_port (587 is STARTTLS, 465 is implicit TLS: smtp_tls = \"tls\")",
                    srv.host, srv.port
                )));
            }
            conn.starttls(&params()?, &hello)
                .map_err(|e| lettre_error(srv, "STARTTLS with", &e))?;
            report("smtp", "tls", "STARTTLS done, certificate verified");
            report("smtp", "ehlo", conn.server_info());
        }
        TlsMode::None => report("smtp", "tls", NO_TLS),
        TlsMode::Tls => {}
    }
    Ok(conn)
}

/// The AUTH command line, CRLF included.
pub fn auth_command(mech: Mech, user: &str, token: &str, srv: &Server) -> Result<String> {
    Ok(match mech {
        Mech::Xoauth2 => Auth::new(
            Mechanism::Xoauth2,
            Credentials::new(user.to_string(), token.to_string()),
            None,
        )
        .context("cannot build the XOAUTH2 command")?
        .to_string(),
        Mech::Oauthbearer => format!(
            "AUTH OAUTHBEARER {}\r\n",
            mech.initial_response(user, token, &srv.host, srv.port)
        ),
    })
}

pub fn authenticate(
    conn: &mut SmtpConnection,
    srv: &Server,
    user: &str,
    token: &str,
    mech: Mech,
) -> Result<()> {
    if mech == Mech::Xoauth2
        && !conn
            .server_info()
            .supports_auth_mechanism(Mechanism::Xoauth2)
    {
        report(
            "smtp",
            "auth",
            "the server does not advertise AUTH XOAUTH2 (trying anyway)",
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
    match conn.command(auth_command(mech, user, token, srv)?) {
        Ok(r) if r.has_code(334) => {
            // An error challenge: base64 JSON saying why. Answer it so the server ends the
            // exchange with its final reply, and show both.
            let challenge = sasl::decode_challenge(r.first_word().unwrap_or(""));
            let last = match conn.command(format!("{}\r\n", mech.abort_response())) {
                Ok(r) => reply_text(&r),
                Err(e) => e.to_string(),
            };
            conn.abort();
            Err(refusal("SMTP", &last, Some(challenge)))
        }
        Ok(r) if r.code().to_string().starts_with('2') => {
            report("smtp", "auth", format!("accepted: {}", reply_text(&r)));
            Ok(())
        }
        Ok(r) => {
            conn.abort();
            Err(refusal("SMTP", &reply_text(&r), None))
        }
        Err(e) if e.is_permanent() || e.is_transient() => {
            conn.abort();
            Err(refusal("SMTP", &e.to_string(), None))
        }
        Err(e) => Err(lettre_error(srv, "authenticating at", &e)),
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

/// `check --smtp`: connect, authenticate, quit.
pub fn check(srv: &Server, user: &str, token: &str, mech: Mech) -> Result<()> {
    let mut conn = open(srv)?;
    authenticate(&mut conn, srv, user, token, mech)?;
    quit(&mut conn);
    Ok(())
}

/// `send-test`: connect, authenticate, send one message, quit.
pub fn send(srv: &Server, token: &str, mech: Mech, mail: &TestMail) -> Result<()> {
    let message = build_message(mail)?;
    let mut conn = open(srv)?;
    authenticate(&mut conn, srv, mail.from, token, mech)?;
    let reply = conn
        .send(message.envelope(), &message.formatted())
        .map_err(|e| {
            anyhow::anyhow!(
                "the SMTP server did not take the message: {e}{}",
                sasl::hint(&e.to_string())
                    .map(|h| format!("\n  fix: {h}"))
                    .unwrap_or_default()
            )
        })?;
    report("smtp", "accepted", reply_text(&reply));
    quit(&mut conn);
    Ok(())
}

fn quit(conn: &mut SmtpConnection) {
    match conn.quit() {
        Ok(r) => report("smtp", "quit", reply_text(&r)),
        Err(e) => report("smtp", "quit", format!("(ignored) {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::sasl;

    fn srv() -> Server {
        Server {
            host: "smtp.example.com".into(),
            port: 587,
            tls: TlsMode::Starttls,
        }
    }

    #[test]
    fn auth_commands_carry_the_sasl_strings() {
        assert_eq!(
            auth_command(Mech::Xoauth2, "u@example.com", "tok", &srv()).unwrap(),
            format!("AUTH XOAUTH2 {}\r\n", sasl::xoauth2("u@example.com", "tok"))
        );
        assert_eq!(
            auth_command(Mech::Oauthbearer, "u@example.com", "tok", &srv()).unwrap(),
            format!(
                "AUTH OAUTHBEARER {}\r\n",
                sasl::oauthbearer("u@example.com", Some("smtp.example.com"), Some(587), "tok")
            )
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
