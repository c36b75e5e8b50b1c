//! The proxy's IMAP side before login: capabilities of its own (LOGIN and AUTHENTICATE PLAIN;
//! STARTTLS only with local TLS; LOGINDISABLED only where a login would cross the network in
//! clear), LOGIN with quoted strings and literals (`{n}`, `{n+}`), AUTHENTICATE PLAIN with and
//! without SASL-IR.

use super::gate::{Caller, Gate, LoggedIn};
use super::prelogin::{Door, Ended};
use crate::mail::sasl::decode_plain;
use crate::mail::wire::Conn;
use crate::provider::Service;

/// What the client is told before login; after it, the real server's own answers.
pub const CAPABILITIES: &str = "IMAP4rev1 SASL-IR LITERAL+ ID AUTH=PLAIN";

/// The capabilities now: STARTTLS while it is possible, LOGINDISABLED while a login would
/// cross the network in clear.
fn capabilities(conn: &Conn, caller: &Caller, gate: &Gate) -> String {
    let mut caps = CAPABILITIES.to_string();
    if !conn.is_tls() && gate.tls.is_some() {
        caps.push_str(" STARTTLS");
    }
    if caller.needs_tls && !conn.is_tls() {
        caps.push_str(" LOGINDISABLED");
    }
    caps
}
/// The largest literal accepted before login (a user name or a password).
const MAX_LITERAL: usize = 8 * 1024;

/// Serve until the client has logged in, or say why the session ended.
pub fn front(mut door: Door, caller: &Caller, gate: &Gate) -> Result<LoggedIn, Ended> {
    door.say(&format!(
        "* OK [CAPABILITY {}] mailtoken proxy ready",
        capabilities(door.conn(), caller, gate)
    ))?;
    loop {
        let line = door.command()?;
        let Some((tag, command, rest)) = split_command(&line) else {
            return Err(door.unknown(&line));
        };
        let command = command.to_ascii_uppercase();
        if caller.needs_tls
            && !door.conn().is_tls()
            && matches!(command.as_str(), "LOGIN" | "AUTHENTICATE")
        {
            door.refuse(&format!("{tag} NO [PRIVACYREQUIRED] STARTTLS first"))?;
            continue;
        }
        let credentials = match command.as_str() {
            "LOGIN" => login_arguments(&mut door, rest)?
                .ok_or_else(|| format!("{tag} BAD LOGIN needs a user name and a password")),
            "AUTHENTICATE" => {
                authenticate_plain(&mut door, rest)?.map_err(|t| format!("{tag} {t}"))
            }
            "CAPABILITY" => {
                door.say(&format!(
                    "* CAPABILITY {}\r\n{tag} OK CAPABILITY completed",
                    capabilities(door.conn(), caller, gate)
                ))?;
                continue;
            }
            "NOOP" => {
                door.say(&format!("{tag} OK NOOP completed"))?;
                continue;
            }
            "ID" => {
                door.say(&format!(
                    "* ID (\"name\" \"mailtoken\")\r\n{tag} OK ID completed"
                ))?;
                continue;
            }
            "LOGOUT" => {
                let _ = door.say(&format!(
                    "* BYE mailtoken proxy logging out\r\n{tag} OK LOGOUT completed"
                ));
                return Err(Ended::Quit);
            }
            "STARTTLS" => match &gate.tls {
                Some(tls) if !door.conn().is_tls() => {
                    door.say(&format!("{tag} OK begin TLS now"))?;
                    door = door.start_tls(tls.clone())?;
                    continue;
                }
                _ => Err(format!("{tag} BAD STARTTLS is not available here")),
            },
            // Commands of the authenticated state: known, and refused.
            "SELECT" | "EXAMINE" | "LIST" | "LSUB" | "STATUS" | "ENABLE" | "NAMESPACE" => Err(
                format!("{tag} BAD log in first (LOGIN or AUTHENTICATE PLAIN)"),
            ),
            _ => return Err(door.unknown(&command)),
        };
        let (user, password) = match credentials {
            Ok(credentials) => credentials,
            Err(reply) => {
                door.refuse(&reply)?;
                continue;
            }
        };
        door.nothing_ahead()?;
        match gate.login(caller, &user, &password, Service::Imap) {
            Ok(done) => return done.admit(door, &format!("{tag} OK logged in through mailtoken")),
            Err(denied) => {
                let code = denied.code(Service::Imap);
                door.refuse(&format!("{tag} {code} {}", denied.text()))?;
            }
        }
    }
}

/// `TAG COMMAND rest`.
pub fn split_command(line: &str) -> Option<(&str, &str, &str)> {
    let (tag, rest) = line.split_once(' ')?;
    let (command, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    (!tag.is_empty() && !command.is_empty()).then_some((tag, command, rest))
}

/// One IMAP string at the start of `text`: an atom, a quoted string, or a literal marker.
#[derive(Debug, PartialEq, Eq)]
pub enum Token {
    Text(String, usize),
    /// `{n}` (the client waits for a continuation) or `{n+}`; ends the line.
    Literal {
        size: usize,
        plus: bool,
    },
}

/// The text's bytes a `Text` token used count from after any leading spaces.
pub fn next_token(text: &str) -> Option<Token> {
    let text = text.trim_start_matches(' ');
    if let Some(rest) = text.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.push(chars.next()?.1),
                // The opening quote, the characters up to here, the closing quote.
                '"' => return Some(Token::Text(value, i + 2)),
                c => value.push(c),
            }
        }
        return None;
    }
    if let Some(rest) = text.strip_prefix('{') {
        let inner = rest.strip_suffix('}')?;
        let (digits, plus) = match inner.strip_suffix('+') {
            Some(d) => (d, true),
            None => (inner, false),
        };
        let size = digits.parse().ok()?;
        return Some(Token::Literal { size, plus });
    }
    let end = text.find(' ').unwrap_or(text.len());
    (end > 0).then(|| Token::Text(text[..end].to_string(), end))
}

/// LOGIN's two arguments, reading literals from the client as they come; None: not two
/// arguments. A literal too large for a password ends the session: its bytes would otherwise
/// be read as commands.
fn login_arguments(door: &mut Door, rest: &str) -> Result<Option<(String, String)>, Ended> {
    let mut args = Vec::new();
    let mut line = rest.to_string();
    while args.len() < 2 {
        match next_token(&line) {
            None => return Ok(None),
            Some(Token::Text(value, used)) => {
                args.push(value);
                let trimmed = line.trim_start_matches(' ');
                line = trimmed[used.min(trimmed.len())..].to_string();
            }
            Some(Token::Literal { size, plus }) => {
                if size > MAX_LITERAL {
                    return Err(door.shut(Ended::Broken("a literal too large for a login")));
                }
                if !plus {
                    door.say("+ go ahead")?;
                }
                let bytes = door.bytes(size)?;
                let Ok(text) = String::from_utf8(bytes) else {
                    return Err(door.shut(Ended::Broken("a login literal that is not UTF-8")));
                };
                args.push(text);
                line = door.line()?;
            }
        }
    }
    let mut args = args.into_iter();
    Ok(args.next().zip(args.next()))
}

/// AUTHENTICATE PLAIN, with the initial response on the line (SASL-IR) or after a `+`: the
/// credentials, or the refusal to send.
fn authenticate_plain(
    door: &mut Door,
    rest: &str,
) -> Result<Result<(String, String), String>, Ended> {
    let mut words = rest.split_whitespace();
    if !words
        .next()
        .is_some_and(|m| m.eq_ignore_ascii_case("PLAIN"))
    {
        return Ok(Err("NO only AUTHENTICATE PLAIN is offered here".into()));
    }
    let response = match words.next() {
        Some(ir) => ir.to_string(),
        None => {
            door.say("+ ")?;
            door.line()?
        }
    };
    if response == "*" {
        return Ok(Err("BAD AUTHENTICATE cancelled".into()));
    }
    Ok(decode_plain(&response).ok_or_else(|| "BAD not a SASL PLAIN response".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_into_tag_command_and_rest() {
        assert_eq!(
            split_command("a1 LOGIN me pw"),
            Some(("a1", "LOGIN", "me pw"))
        );
        assert_eq!(
            split_command("a2 CAPABILITY"),
            Some(("a2", "CAPABILITY", ""))
        );
        assert_eq!(split_command("nonsense"), None);
        assert_eq!(split_command(" x"), None);
    }

    #[test]
    fn atoms_quoted_strings_and_literals() {
        assert_eq!(next_token("me pw"), Some(Token::Text("me".into(), 2)));
        assert_eq!(
            next_token("\"a \\\"b\\\\\" rest"),
            Some(Token::Text("a \"b\\".into(), 9))
        );
        assert_eq!(
            next_token("{12}"),
            Some(Token::Literal {
                size: 12,
                plus: false
            })
        );
        assert_eq!(
            next_token("{3+}"),
            Some(Token::Literal {
                size: 3,
                plus: true
            })
        );
        assert_eq!(next_token("\"unterminated"), None);
        assert_eq!(next_token("{x}"), None);
        assert_eq!(next_token(""), None);
    }
}
