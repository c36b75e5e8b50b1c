//! Before login, in every front end: one deadline for a person at a password prompt, a small
//! budget of known commands, and the door shut on anything that is not a mail program talking.
//!
//! A web page in the user's own browser runs as the user, so the kernel vouches for it, and it
//! can POST to any loopback port without a preflight (`fetch(..., {mode: "no-cors"})`, a form
//! with `enctype="text/plain"`). Whatever it sends starts with an HTTP request line and
//! headers; a WebSocket starts the same way, DNS rebinding changes only the Host header. So
//! the first line that looks like HTTP, an empty line, or any command the front does not
//! know ends the session before anything after it is read, and bytes sent ahead of a login
//! that followed a refusal are never relayed.

use std::fmt;
use std::time::Duration;

use crate::mail::wire::Conn;
use crate::provider::Service;

/// Commands a client may send before login: a mail program needs a handful (capabilities,
/// STARTTLS, a login or two).
pub const MAX_COMMANDS: usize = 12;

/// Why a session ended before login, for the proxy's log.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The client said goodbye (LOGOUT, QUIT).
    Quit,
    /// The client closed the connection, or a read or write failed.
    Gone(String),
    /// No login within the deadline.
    TimedOut,
    /// Not a mail program: what it sent is named.
    NotMail(&'static str),
    /// A command this front end does not know, which no mail program sends before login.
    Unknown(String),
    TooMany,
    /// The client sent more right behind a login that followed a refusal.
    SentAhead,
    /// A violation of the protocol that leaves the rest of the input meaningless.
    Broken(&'static str),
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Quit => f.write_str("logged out before logging in"),
            Ended::Gone(why) => write!(f, "closed before logging in ({why})"),
            Ended::TimedOut => f.write_str("no login before the deadline"),
            Ended::NotMail(what) => write!(f, "shut out: {what}, not a mail program"),
            Ended::Unknown(command) => write!(
                f,
                "shut out: unknown command `{}` before login",
                crate::log::printable(command)
            ),
            Ended::TooMany => f.write_str("shut out: too many commands without logging in"),
            Ended::SentAhead => f.write_str(
                "shut out: bytes sent ahead of a login that followed a refusal (not relayed)",
            ),
            Ended::Broken(what) => write!(f, "shut out: {what}"),
        }
    }
}

/// What the line says if it is not a mail program talking; None for a plausible command.
pub fn not_mail(line: &str) -> Option<&'static str> {
    const METHODS: &[&str] = &[
        "GET", "POST", "PUT", "OPTIONS", "CONNECT", "HEAD", "DELETE", "PATCH", "TRACE", "PRI",
    ];
    if line.trim().is_empty() {
        return Some("an empty line");
    }
    let first = line.split(' ').next().unwrap_or("");
    if METHODS.iter().any(|m| first.eq_ignore_ascii_case(m)) && line.len() > first.len() {
        return Some("an HTTP request");
    }
    let tail = line.trim_end().to_ascii_uppercase();
    if [" HTTP/1.0", " HTTP/1.1", " HTTP/2", " HTTP/2.0"]
        .iter()
        .any(|v| tail.ends_with(v))
    {
        return Some("an HTTP request");
    }
    // `Host: 127.0.0.1:1587`, `Origin: ...`: no mail command's first word ends in a colon.
    if first.len() > 1
        && first.ends_with(':')
        && first[..first.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Some("an HTTP header");
    }
    // A TLS ClientHello sent to a plain-text port: a program set up for TLS from the first byte.
    if line.as_bytes().first() == Some(&0x16) {
        return Some("a TLS handshake on a plain-text port (use the TLS port, or STARTTLS)");
    }
    None
}

/// The protocol's last words to the client, where they help it (a timeout, a budget spent);
/// none for what is not a mail program.
pub fn goodbye(service: Service, why: &Ended, limit: Duration) -> Option<String> {
    let text = match why {
        Ended::TimedOut => format!(
            "mailtoken proxy: no login within {} s; closing",
            limit.as_secs()
        ),
        Ended::TooMany => "mailtoken proxy: too many commands without logging in".into(),
        Ended::Unknown(_) => "mailtoken proxy: unknown command before login; closing".into(),
        Ended::Broken(what) => format!("mailtoken proxy: {what}; closing"),
        Ended::Quit | Ended::Gone(_) | Ended::NotMail(_) | Ended::SentAhead => return None,
    };
    Some(match (service, why) {
        (Service::Imap, _) => format!("* BYE {text}"),
        (Service::Pop, _) => format!("-ERR {text}"),
        (Service::Smtp, Ended::TimedOut) => format!("421 4.4.2 {text}"),
        (Service::Smtp, _) => format!("421 4.7.0 {text}"),
    })
}

/// A connection's failure, for the log: `Conn` words its errors as a client of a server;
/// here the other side is a mail program.
fn gone(e: &anyhow::Error) -> Ended {
    Ended::Gone(format!("{e:#}").replace("the server", "the program"))
}

/// A connection before login, as every front end reads and answers it.
pub struct Door {
    conn: Conn,
    service: Service,
    limit: Duration,
    commands: usize,
    /// A command was refused: nothing the client sends ahead of a later login is trusted.
    doubtful: bool,
}

impl Door {
    pub fn new(conn: Conn, service: Service, limit: Duration) -> Door {
        Door {
            conn,
            service,
            limit,
            commands: 0,
            doubtful: false,
        }
    }

    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// End the session: the protocol's last words where they help, and the reason for the log.
    pub fn shut(&mut self, why: Ended) -> Ended {
        if let Some(line) = goodbye(self.service, &why, self.limit) {
            let _ = self.conn.write_line(&line);
        }
        why
    }

    /// The next command line, within the budget and the deadline; what is not a mail program
    /// talking ends the session here.
    pub fn command(&mut self) -> Result<String, Ended> {
        if self.commands >= MAX_COMMANDS {
            return Err(self.shut(Ended::TooMany));
        }
        self.commands += 1;
        let line = self.line()?;
        match not_mail(&line) {
            Some(what) => Err(Ended::NotMail(what)),
            None => Ok(line),
        }
    }

    /// A line inside an exchange (a SASL response, the rest of a LOGIN after a literal).
    pub fn line(&mut self) -> Result<String, Ended> {
        match self.conn.read_line() {
            Ok(line) => Ok(line),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Exactly `n` bytes (an IMAP literal).
    pub fn bytes(&mut self, n: usize) -> Result<Vec<u8>, Ended> {
        match self.conn.read_bytes(n) {
            Ok(bytes) => Ok(bytes),
            Err(e) => Err(self.failed(e)),
        }
    }

    fn failed(&mut self, e: anyhow::Error) -> Ended {
        if self.conn.expired() {
            self.shut(Ended::TimedOut)
        } else {
            gone(&e)
        }
    }

    /// Answer a command.
    pub fn say(&mut self, line: &str) -> Result<(), Ended> {
        self.conn.write_line(line).map_err(|e| gone(&e))
    }

    /// Refuse a command: answer it, and trust nothing sent ahead of a later login.
    pub fn refuse(&mut self, line: &str) -> Result<(), Ended> {
        self.doubtful = true;
        self.say(line)
    }

    /// A command this front end does not know: no mail program sends one before login.
    pub fn unknown(&mut self, command: &str) -> Ended {
        self.shut(Ended::Unknown(command.chars().take(40).collect()))
    }

    /// Before a login is tried, and again before it is granted: after a refusal, a client
    /// that does not wait for the answer is not a mail program at a prompt.
    pub fn nothing_ahead(&self) -> Result<(), Ended> {
        if self.doubtful && self.conn.input_waiting() {
            return Err(Ended::SentAhead);
        }
        Ok(())
    }

    /// Switch to the proxy's own TLS (STARTTLS, STLS), within the same deadline.
    pub fn start_tls(self, tls: std::sync::Arc<rustls::ServerConfig>) -> Result<Door, Ended> {
        let Door {
            conn,
            service,
            limit,
            commands,
            doubtful,
        } = self;
        let expired_before = conn.expired();
        match conn.accept_tls(tls) {
            Ok(conn) => Ok(Door {
                conn,
                service,
                limit,
                commands,
                doubtful,
            }),
            Err(_) if expired_before => Err(Ended::TimedOut),
            Err(e) => Err(gone(&e)),
        }
    }

    /// The login is granted: answer `ok` and hand the connection over, unless the client
    /// sent more ahead of the answer after a refusal.
    pub fn admit(mut self, ok: &str) -> Result<Conn, Ended> {
        self.nothing_ahead()?;
        self.say(ok)?;
        Ok(self.conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_browsers_send_is_not_mail() {
        for line in [
            "POST / HTTP/1.1",
            "GET /chat HTTP/1.1",
            "OPTIONS * HTTP/1.1",
            "CONNECT 127.0.0.1:1587 HTTP/1.1",
            "PUT /x",
            "a1 LOGIN x HTTP/1.0",
            "Host: 127.0.0.1:1587",
            "host: localhost",
            "Content-Type: text/plain;charset=UTF-8",
            "Sec-Fetch-Mode: no-cors",
            "Upgrade: websocket",
            "",
            "   ",
            "\u{16}\u{3}\u{1}\u{2}\0",
        ] {
            assert!(not_mail(line).is_some(), "{line:?}");
        }
    }

    #[test]
    fn what_mail_programs_send_before_login_passes() {
        for line in [
            "EHLO client.example",
            "AUTH PLAIN AGFsaWNlAHB3",
            "MAIL FROM:<alice@example.com>",
            "a1 LOGIN alice@example.com \"pw: with colon\"",
            "A001 CAPABILITY",
            "USER alice@example.com",
            "PASS hunter2",
            "AGFsaWNlAHB3",
            "*",
            "CAPA",
            "1 ID (\"name\" \"Alpine\")",
        ] {
            assert_eq!(not_mail(line), None, "{line:?}");
        }
    }

    #[test]
    fn last_words_are_the_protocols_own() {
        let limit = Duration::from_secs(300);
        assert_eq!(
            goodbye(Service::Imap, &Ended::TimedOut, limit).unwrap(),
            "* BYE mailtoken proxy: no login within 300 s; closing"
        );
        assert!(
            goodbye(Service::Smtp, &Ended::TimedOut, limit)
                .unwrap()
                .starts_with("421 4.4.2 ")
        );
        assert!(
            goodbye(Service::Pop, &Ended::TooMany, limit)
                .unwrap()
                .starts_with("-ERR ")
        );
        assert_eq!(
            goodbye(Service::Smtp, &Ended::NotMail("an HTTP request"), limit),
            None
        );
    }
}
