//! The proxy's SMTP side before login: EHLO with AUTH PLAIN and LOGIN (and STARTTLS with local
//! TLS), and the two AUTH exchanges, with or without the initial response.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::gate::{Caller, Gate, LoggedIn};
use super::prelogin::{Door, Ended};
use crate::mail::sasl::decode_plain;
use crate::provider::Service;

/// What EHLO offers: what the proxy accepts, and what the usual submission servers do after.
pub const EXTENSIONS: &[&str] = &[
    "PIPELINING",
    "8BITMIME",
    "ENHANCEDSTATUSCODES",
    "AUTH PLAIN LOGIN",
];

pub fn front(mut door: Door, caller: &Caller, gate: &Gate) -> Result<LoggedIn, Ended> {
    door.say("220 mailtoken proxy ESMTP ready")?;
    loop {
        let line = door.command()?;
        let (command, rest) = line.split_once(' ').unwrap_or((&line, ""));
        let command = command.to_ascii_uppercase();
        if caller.needs_tls && !door.conn().is_tls() && command == "AUTH" {
            door.refuse("530 5.7.0 Must issue a STARTTLS command first")?;
            continue;
        }
        let credentials = match command.as_str() {
            "EHLO" => {
                let mut extensions: Vec<&str> = EXTENSIONS.to_vec();
                if gate.tls.is_some() && !door.conn().is_tls() {
                    extensions.insert(0, "STARTTLS");
                }
                let mut reply = String::from("250-mailtoken proxy");
                for (i, ext) in extensions.iter().enumerate() {
                    let sep = if i + 1 == extensions.len() { ' ' } else { '-' };
                    reply.push_str(&format!("\r\n250{sep}{ext}"));
                }
                door.say(&reply)?;
                continue;
            }
            "HELO" => {
                door.say("250 mailtoken proxy")?;
                continue;
            }
            "NOOP" | "RSET" => {
                door.say("250 2.0.0 OK")?;
                continue;
            }
            "QUIT" => {
                let _ = door.say("221 2.0.0 bye");
                return Err(Ended::Quit);
            }
            "STARTTLS" => {
                match &gate.tls {
                    Some(tls) if !door.conn().is_tls() => {
                        door.say("220 2.0.0 begin TLS now")?;
                        door = door.start_tls(tls.clone())?;
                    }
                    _ => door.refuse("454 4.7.0 TLS is not available here")?,
                }
                continue;
            }
            // Mail commands a program may try before it logs in: known, and refused.
            "MAIL" | "RCPT" | "DATA" | "VRFY" | "EXPN" | "HELP" | "BDAT" => {
                door.refuse("530 5.7.0 log in first (AUTH PLAIN or AUTH LOGIN)")?;
                continue;
            }
            "AUTH" => match auth(&mut door, rest)? {
                Ok(credentials) => credentials,
                Err(reply) => {
                    door.refuse(&reply)?;
                    continue;
                }
            },
            _ => return Err(door.unknown(&command)),
        };
        door.nothing_ahead()?;
        match gate.login(caller, &credentials.0, &credentials.1, Service::Smtp) {
            Ok(done) => return done.admit(door, "235 2.7.0 logged in through mailtoken"),
            Err(denied) => {
                let code = denied.code(Service::Smtp);
                door.refuse(&format!("{code} {}", denied.text()))?;
            }
        }
    }
}

/// One AUTH exchange: the credentials, or the reply that refuses it.
fn auth(door: &mut Door, rest: &str) -> Result<Result<(String, String), String>, Ended> {
    let mut words = rest.split_whitespace();
    let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
    let initial = words.next().map(str::to_string);
    let mut ask = |prompt: &str| -> Result<String, Ended> {
        door.say(&format!("334 {prompt}"))?;
        door.line()
    };
    let cancelled = || Err("501 5.7.0 AUTH cancelled".to_string());
    Ok(match mechanism.as_str() {
        "PLAIN" => {
            let response = match initial {
                Some(ir) => ir,
                None => ask("")?,
            };
            if response == "*" {
                return Ok(cancelled());
            }
            decode_plain(&response).ok_or_else(|| "501 5.5.2 not a SASL PLAIN response".into())
        }
        "LOGIN" => {
            let user = match initial {
                Some(ir) => ir,
                None => ask(&STANDARD.encode("Username:"))?,
            };
            if user == "*" {
                return Ok(cancelled());
            }
            let password = ask(&STANDARD.encode("Password:"))?;
            if password == "*" {
                return Ok(cancelled());
            }
            let decode = |b64: &str| {
                STANDARD
                    .decode(b64.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
            };
            match (decode(&user), decode(&password)) {
                (Some(u), Some(p)) if !u.is_empty() => Ok((u, p)),
                _ => Err("501 5.5.2 not base64".into()),
            }
        }
        _ => Err("504 5.5.4 only AUTH PLAIN and AUTH LOGIN are offered here".into()),
    })
}
