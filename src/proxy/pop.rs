//! The proxy's POP3 side before login: USER/PASS and AUTH PLAIN (RFC 5034), with or without
//! the initial response, and STLS with local TLS.

use super::imap::decode_plain;
use super::{Caller, Denied, Gate, LoggedIn, conclude};
use crate::mail::wire::Conn;
use crate::provider::Service;

const MAX_COMMANDS: usize = 20;

pub fn front(mut conn: Conn, caller: &Caller, gate: &Gate) -> Option<LoggedIn> {
    conn.write_line("+OK mailtoken proxy ready").ok()?;
    let mut user: Option<String> = None;
    for _ in 0..MAX_COMMANDS {
        let line = conn.read_line().ok()?;
        let (command, rest) = line.split_once(' ').unwrap_or((&line, ""));
        let command = command.to_ascii_uppercase();
        if caller.needs_tls
            && !conn.is_tls()
            && matches!(command.as_str(), "USER" | "PASS" | "AUTH")
        {
            conn.write_line("-ERR [AUTH] STLS first").ok()?;
            continue;
        }
        let credentials = match command.as_str() {
            "CAPA" => {
                let stls = if gate.tls.is_some() && !conn.is_tls() {
                    "STLS\r\n"
                } else {
                    ""
                };
                conn.write_line(&format!("+OK\r\nUSER\r\nSASL PLAIN\r\n{stls}."))
                    .ok()?;
                continue;
            }
            "STLS" => {
                match &gate.tls {
                    Some(tls) if !conn.is_tls() => {
                        conn.write_line("+OK begin TLS now").ok()?;
                        conn = conn.accept_tls(tls.clone()).ok()?;
                    }
                    _ => conn.write_line("-ERR STLS is not available here").ok()?,
                }
                continue;
            }
            "USER" if !rest.is_empty() => {
                user = Some(rest.to_string());
                conn.write_line("+OK").ok()?;
                continue;
            }
            "PASS" => match user.take() {
                Some(user) => (user, rest.to_string()),
                None => {
                    conn.write_line("-ERR USER first").ok()?;
                    continue;
                }
            },
            "AUTH" => {
                let mut words = rest.split_whitespace();
                if !words
                    .next()
                    .is_some_and(|m| m.eq_ignore_ascii_case("PLAIN"))
                {
                    conn.write_line("-ERR only AUTH PLAIN is offered here")
                        .ok()?;
                    continue;
                }
                let response = match words.next() {
                    Some(ir) => ir.to_string(),
                    None => {
                        conn.write_line("+ ").ok()?;
                        conn.read_line().ok()?
                    }
                };
                match decode_plain(&response) {
                    Some(credentials) => credentials,
                    None => {
                        conn.write_line("-ERR not a SASL PLAIN response").ok()?;
                        continue;
                    }
                }
            }
            "QUIT" => {
                let _ = conn.write_line("+OK bye");
                return None;
            }
            "NOOP" => {
                conn.write_line("+OK").ok()?;
                continue;
            }
            _ => {
                conn.write_line("-ERR log in first (USER/PASS or AUTH PLAIN)")
                    .ok()?;
                continue;
            }
        };
        let outcome = gate.login(caller, &credentials.0, &credentials.1, Service::Pop);
        conn = match conclude(conn, outcome, "+OK logged in through mailtoken", |d| {
            let code = match d {
                Denied::Unavailable(_) => "[SYS/TEMP]",
                _ => "[AUTH]",
            };
            format!("-ERR {code} mailtoken: {}", d.text())
        }) {
            Ok(done) => return Some(done),
            Err(conn) => conn,
        };
    }
    let _ = conn.write_line("-ERR too many commands without logging in");
    None
}
