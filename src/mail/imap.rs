//! IMAP with a token: `check --imap` (connect, AUTHENTICATE, LOGOUT) and the proxy's upstream
//! login (connect, AUTHENTICATE, hand the session over). The protocol pieces are plain
//! functions; the I/O around them is thin.

use anyhow::Result;

use crate::error::server;
use crate::log::fingerprint;
use crate::mail::sasl::{self, Mech};
use crate::mail::servers::Server;
use crate::mail::wire::{self, Conn, report};

/// Lines read while waiting for one tagged reply; a real server needs a handful.
const MAX_LINES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `* ...`
    Untagged(String),
    /// `+ ...` (a continuation request, maybe with a base64 challenge)
    Continuation(String),
    /// `TAG OK|NO|BAD text`
    Tagged {
        tag: String,
        status: Status,
        text: String,
    },
    /// Anything else: a broken or foreign server.
    Other(String),
}

pub fn parse(line: &str) -> Response {
    if let Some(rest) = line.strip_prefix("* ") {
        return Response::Untagged(rest.to_string());
    }
    if line == "+" || line.starts_with("+ ") {
        return Response::Continuation(line[1..].trim_start().to_string());
    }
    let mut parts = line.splitn(3, ' ');
    let (Some(tag), Some(word)) = (parts.next(), parts.next()) else {
        return Response::Other(line.to_string());
    };
    let status = match word.to_ascii_uppercase().as_str() {
        "OK" => Status::Ok,
        "NO" => Status::No,
        "BAD" => Status::Bad,
        _ => return Response::Other(line.to_string()),
    };
    Response::Tagged {
        tag: tag.to_string(),
        status,
        text: parts.next().unwrap_or("").to_string(),
    }
}

/// Capabilities from `* CAPABILITY ...` or a greeting's `* OK [CAPABILITY ...]`, upper-cased.
pub fn capabilities(untagged: &str) -> Option<Vec<String>> {
    let list = if let Some(rest) = strip_prefix_ci(untagged, "CAPABILITY ") {
        rest
    } else {
        let code = untagged.split_once('[')?.1.split_once(']')?.0;
        strip_prefix_ci(code, "CAPABILITY ")?
    };
    Some(
        list.split_whitespace()
            .map(str::to_ascii_uppercase)
            .collect(),
    )
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // `get`, not slicing: the server's text may have a multi-byte character right there.
    s.get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(prefix))
        .and_then(|_| s.get(prefix.len()..))
}

/// `TAG AUTHENTICATE MECH [initial-response]` (RFC 9051, SASL-IR RFC 4959), without CRLF.
pub fn authenticate_command(tag: &str, mech: Mech, initial: Option<&str>) -> String {
    match initial {
        Some(ir) => format!("{tag} AUTHENTICATE {} {ir}", mech.name()),
        None => format!("{tag} AUTHENTICATE {}", mech.name()),
    }
}

fn unexpected(reply: &Response) -> anyhow::Error {
    server(format!("unexpected IMAP reply: {reply:?}"))
}

fn too_many_lines() -> anyhow::Error {
    server("the IMAP server sent too many lines")
}

/// Read until the reply tagged `tag`, collecting the untagged lines before it.
fn until_tagged(conn: &mut Conn, tag: &str) -> Result<(Vec<String>, Status, String)> {
    let mut untagged = Vec::new();
    for _ in 0..MAX_LINES {
        match parse(&conn.read_line()?) {
            Response::Untagged(text) => untagged.push(text),
            Response::Tagged {
                tag: t,
                status,
                text,
            } if t == tag => {
                return Ok((untagged, status, text));
            }
            other => return Err(unexpected(&other)),
        }
    }
    Err(too_many_lines())
}

/// `check --imap`: connect, authenticate with the token, log out.
pub fn check(srv: &Server, user: &str, token: &str, mech: Mech) -> Result<()> {
    let (mut conn, caps) = open(srv)?;
    authenticate(&mut conn, &caps, srv, user, token, mech)?;
    logout(&mut conn)
}

/// Connect and authenticate with the token, by the mechanism the server offers (XOAUTH2 when
/// it offers both, or neither): the proxy's way in.
pub fn login(srv: &Server, user: &str, token: &str) -> Result<Conn> {
    let (mut conn, caps) = open(srv)?;
    let mech = Mech::prefer(|m| caps.iter().any(|c| *c == format!("AUTH={}", m.name())));
    authenticate(&mut conn, &caps, srv, user, token, mech)?;
    Ok(conn)
}

/// Connect, read the greeting, and learn the capabilities (from the greeting when it has them).
fn open(srv: &Server) -> Result<(Conn, Vec<String>)> {
    let mut conn = wire::open("imap", srv)?;
    let greeting = conn.read_line()?;
    let caps = match parse(&greeting) {
        Response::Untagged(text) if text.starts_with("OK") || text.starts_with("PREAUTH") => {
            report("imap", "greeting", &text);
            capabilities(&text)
        }
        _ => return Err(server(format!("not an IMAP greeting: {greeting}"))),
    };
    let caps = match caps {
        Some(caps) => caps,
        None => {
            conn.write_line("a1 CAPABILITY")?;
            let (lines, status, text) = until_tagged(&mut conn, "a1")?;
            if status != Status::Ok {
                return Err(server(format!("CAPABILITY failed: {text}")));
            }
            lines
                .iter()
                .find_map(|l| capabilities(l))
                .unwrap_or_default()
        }
    };
    Ok((conn, caps))
}

/// AUTHENTICATE with the token (SASL-IR when offered); a refusal shows the server's challenge.
fn authenticate(
    conn: &mut Conn,
    caps: &[String],
    srv: &Server,
    user: &str,
    token: &str,
    mech: Mech,
) -> Result<()> {
    let wanted = format!("AUTH={}", mech.name());
    report(
        "imap",
        "caps",
        if caps.contains(&wanted) {
            format!("{wanted} offered")
        } else {
            format!("{wanted} not advertised (trying anyway)")
        },
    );
    let initial = mech.initial_response(user, token, &srv.host, srv.port);
    report(
        "imap",
        "auth",
        format!(
            "AUTHENTICATE {} as {user} with token {}",
            mech.name(),
            fingerprint(token)
        ),
    );
    if caps.iter().any(|c| c == "SASL-IR") {
        conn.write_line(&authenticate_command("a2", mech, Some(&initial)))?;
    } else {
        conn.write_line(&authenticate_command("a2", mech, None))?;
        match parse(&conn.read_line()?) {
            Response::Continuation(_) => conn.write_line(&initial)?,
            other => return Err(server(format!("AUTHENTICATE was not accepted: {other:?}"))),
        }
    }
    let mut challenge = None;
    for _ in 0..MAX_LINES {
        match parse(&conn.read_line()?) {
            Response::Untagged(_) => {}
            Response::Continuation(text) if challenge.is_none() => {
                challenge = Some(sasl::decode_challenge(&text));
                conn.write_line(mech.abort_response())?;
            }
            Response::Tagged {
                tag,
                status: Status::Ok,
                text,
            } if tag == "a2" => {
                report("imap", "auth", format!("accepted: {text}"));
                return Ok(());
            }
            Response::Tagged { tag, text, .. } if tag == "a2" => {
                return Err(sasl::refusal(
                    "IMAP",
                    &format!("{tag} NO {text}"),
                    challenge,
                ));
            }
            other => return Err(unexpected(&other)),
        }
    }
    Err(too_many_lines())
}

fn logout(conn: &mut Conn) -> Result<()> {
    conn.write_line("a3 LOGOUT")?;
    let (_, _, text) = until_tagged(conn, "a3")?;
    report("imap", "logout", text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_reply_kinds() {
        assert_eq!(
            parse("* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ready"),
            Response::Untagged("OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ready".into())
        );
        assert_eq!(parse("+ eyJ9"), Response::Continuation("eyJ9".into()));
        assert_eq!(parse("+"), Response::Continuation(String::new()));
        assert_eq!(
            parse("a2 no [AUTHENTICATIONFAILED] Invalid credentials (Failure)"),
            Response::Tagged {
                tag: "a2".into(),
                status: Status::No,
                text: "[AUTHENTICATIONFAILED] Invalid credentials (Failure)".into()
            }
        );
        assert_eq!(
            parse("a3 OK"),
            Response::Tagged {
                tag: "a3".into(),
                status: Status::Ok,
                text: String::new()
            }
        );
        assert!(matches!(parse("HTTP/1.1 400"), Response::Other(_)));
        assert!(matches!(parse("garbage"), Response::Other(_)));
    }

    #[test]
    fn capabilities_from_greeting_or_reply() {
        let caps = capabilities("OK [CAPABILITY IMAP4rev1 SASL-IR auth=xoauth2] hi").unwrap();
        assert_eq!(caps, ["IMAP4REV1", "SASL-IR", "AUTH=XOAUTH2"]);
        assert_eq!(
            capabilities("CAPABILITY IMAP4rev1 AUTH=PLAIN").unwrap(),
            ["IMAP4REV1", "AUTH=PLAIN"]
        );
        assert_eq!(capabilities("OK ready"), None);
        assert_eq!(capabilities("OK [ALERT] x"), None);
        assert_eq!(capabilities("OK aéééé [CAPABILITY ééé"), None);
        assert_eq!(capabilities("CAPABILITé x"), None);
    }

    #[test]
    fn authenticate_commands() {
        assert_eq!(
            authenticate_command("a2", Mech::Xoauth2, Some("abc=")),
            "a2 AUTHENTICATE XOAUTH2 abc="
        );
        assert_eq!(
            authenticate_command("a2", Mech::Oauthbearer, None),
            "a2 AUTHENTICATE OAUTHBEARER"
        );
    }

    #[test]
    fn refusals_show_the_decoded_challenge() {
        let msg = sasl::refusal(
            "IMAP",
            "a2 NO [AUTHENTICATIONFAILED] Invalid credentials",
            Some(
                r#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#.into(),
            ),
        )
        .to_string();
        assert!(msg.contains("Invalid credentials"), "{msg}");
        assert!(msg.contains(r#""status":"401""#), "{msg}");
        assert!(msg.contains("meaning: the token was refused"), "{msg}");
    }
}
