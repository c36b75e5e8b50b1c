//! POP with a token: `check --pop` (connect, AUTH per RFC 5034, QUIT) and the proxy's upstream
//! login (connect, AUTH, hand the session over).

use anyhow::Result;

use crate::error::server;
use crate::log::fingerprint;
use crate::mail::sasl::{self, Mech, refusal};
use crate::mail::servers::Server;
use crate::mail::wire::{self, report};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok(String),
    Err(String),
    /// `+ challenge`: the server wants the next SASL step.
    Continue(String),
}

pub fn parse(line: &str) -> Option<Reply> {
    let rest = |prefix: &str| {
        line.strip_prefix(prefix)
            .map(|r| r.trim_start().to_string())
    };
    if let Some(text) = rest("+OK") {
        Some(Reply::Ok(text))
    } else if let Some(text) = rest("-ERR") {
        Some(Reply::Err(text))
    } else {
        rest("+").map(Reply::Continue)
    }
}

fn read(conn: &mut wire::Conn) -> Result<Reply> {
    let line = conn.read_line()?;
    parse(&line).ok_or_else(|| server(format!("not a POP3 reply: {line}")))
}

pub fn check(srv: &Server, user: &str, token: &str, mech: Mech) -> Result<()> {
    let mut conn = login(srv, user, token, mech)?;
    conn.write_line("QUIT")?;
    match read(&mut conn)? {
        Reply::Ok(text) => report("pop", "quit", format!("+OK {text}")),
        other => report("pop", "quit", format!("{other:?}")),
    }
    Ok(())
}

/// Connect and authenticate with the token (RFC 5034); the connection stays open.
pub fn login(srv: &Server, user: &str, token: &str, mech: Mech) -> Result<wire::Conn> {
    let mut conn = wire::open("pop", srv)?;
    match read(&mut conn)? {
        Reply::Ok(text) => report("pop", "greeting", format!("+OK {text}")),
        other => return Err(server(format!("not a POP3 greeting: {other:?}"))),
    }
    report(
        "pop",
        "auth",
        format!(
            "AUTH {} as {user} with token {}",
            mech.name(),
            fingerprint(token)
        ),
    );
    // Initial response after the empty challenge: the form Microsoft documents for POP.
    conn.write_line(&format!("AUTH {}", mech.name()))?;
    match read(&mut conn)? {
        Reply::Continue(_) => {}
        Reply::Err(text) => return Err(refusal("POP", &format!("-ERR {text}"), None)),
        Reply::Ok(text) => return Err(server(format!("unexpected +OK {text} before the token"))),
    }
    conn.write_line(&mech.initial_response(user, token, &srv.host, srv.port))?;
    let mut reply = read(&mut conn)?;
    let mut challenge = None;
    if let Reply::Continue(text) = &reply {
        challenge = Some(sasl::decode_challenge(text));
        conn.write_line(mech.abort_response())?;
        reply = read(&mut conn)?;
    }
    match reply {
        Reply::Ok(text) => report("pop", "auth", format!("accepted: +OK {text}")),
        Reply::Err(text) => return Err(refusal("POP", &format!("-ERR {text}"), challenge)),
        Reply::Continue(_) => return Err(server("the POP server kept asking for more")),
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pop_replies() {
        assert_eq!(parse("+OK ready"), Some(Reply::Ok("ready".into())));
        assert_eq!(parse("+OK"), Some(Reply::Ok(String::new())));
        assert_eq!(
            parse("-ERR Authentication failure"),
            Some(Reply::Err("Authentication failure".into()))
        );
        assert_eq!(parse("+ eyJ9"), Some(Reply::Continue("eyJ9".into())));
        assert_eq!(parse("+ "), Some(Reply::Continue(String::new())));
        assert_eq!(parse("* OK imap"), None);
    }
}
