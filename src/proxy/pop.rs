//! The proxy's POP3 side before login: USER/PASS and AUTH PLAIN (RFC 5034), with or without
//! the initial response, and STLS with local TLS.

use super::gate::{Caller, Gate, LoggedIn};
use super::prelogin::{Door, Ended};
use crate::mail::sasl::decode_plain;
use crate::provider::Service;

pub fn front(mut door: Door, caller: &Caller, gate: &Gate) -> Result<LoggedIn, Ended> {
    door.say("+OK mailtoken proxy ready")?;
    let mut user: Option<String> = None;
    loop {
        let line = door.command()?;
        let (command, rest) = line.split_once(' ').unwrap_or((&line, ""));
        let command = command.to_ascii_uppercase();
        if caller.needs_tls
            && !door.conn().is_tls()
            && matches!(command.as_str(), "USER" | "PASS" | "AUTH")
        {
            door.refuse("-ERR [AUTH] STLS first")?;
            continue;
        }
        let credentials = match command.as_str() {
            "CAPA" => {
                let stls = if gate.tls.is_some() && !door.conn().is_tls() {
                    "STLS\r\n"
                } else {
                    ""
                };
                door.say(&format!("+OK\r\nUSER\r\nSASL PLAIN\r\n{stls}."))?;
                continue;
            }
            "STLS" => {
                match &gate.tls {
                    Some(tls) if !door.conn().is_tls() => {
                        door.say("+OK begin TLS now")?;
                        door = door.start_tls(tls.clone())?;
                    }
                    _ => door.refuse("-ERR STLS is not available here")?,
                }
                continue;
            }
            "USER" if !rest.is_empty() => {
                user = Some(rest.to_string());
                door.say("+OK")?;
                continue;
            }
            "PASS" => match user.take() {
                Some(user) => (user, rest.to_string()),
                None => {
                    door.refuse("-ERR USER first")?;
                    continue;
                }
            },
            "AUTH" => {
                let mut words = rest.split_whitespace();
                if !words
                    .next()
                    .is_some_and(|m| m.eq_ignore_ascii_case("PLAIN"))
                {
                    door.refuse("-ERR only AUTH PLAIN is offered here")?;
                    continue;
                }
                let response = match words.next() {
                    Some(ir) => ir.to_string(),
                    None => {
                        door.say("+ ")?;
                        door.line()?
                    }
                };
                match decode_plain(&response) {
                    Some(credentials) => credentials,
                    None => {
                        door.refuse("-ERR not a SASL PLAIN response")?;
                        continue;
                    }
                }
            }
            "QUIT" => {
                let _ = door.say("+OK bye");
                return Err(Ended::Quit);
            }
            "NOOP" => {
                door.say("+OK")?;
                continue;
            }
            // Mail commands of the transaction state, and APOP: known, and refused.
            "USER" | "APOP" | "STAT" | "LIST" | "RETR" | "DELE" | "RSET" | "TOP" | "UIDL" => {
                door.refuse("-ERR log in first (USER/PASS or AUTH PLAIN)")?;
                continue;
            }
            _ => return Err(door.unknown(&command)),
        };
        door.nothing_ahead()?;
        match gate.login(caller, &credentials.0, &credentials.1, Service::Pop) {
            Ok(done) => return done.admit(door, "+OK logged in through mailtoken"),
            Err(denied) => {
                let code = denied.code(Service::Pop);
                door.refuse(&format!("{code} {}", denied.text()))?;
            }
        }
    }
}
