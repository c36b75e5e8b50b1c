//! The proxy's SMTP side before login: EHLO with AUTH PLAIN and LOGIN (and STARTTLS with local
//! TLS), and the two AUTH exchanges, with or without the initial response.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::imap::decode_plain;
use super::{Caller, Denied, Gate, LoggedIn, conclude};
use crate::mail::wire::Conn;
use crate::provider::Service;

const MAX_COMMANDS: usize = 20;

/// What EHLO offers: what the proxy accepts, and what the usual submission servers do after.
pub const EXTENSIONS: &[&str] = &[
    "PIPELINING",
    "8BITMIME",
    "ENHANCEDSTATUSCODES",
    "AUTH PLAIN LOGIN",
];

pub fn front(mut conn: Conn, caller: &Caller, gate: &Gate) -> Option<LoggedIn> {
    conn.write_line("220 mailtoken proxy ESMTP ready").ok()?;
    for _ in 0..MAX_COMMANDS {
        let line = conn.read_line().ok()?;
        let (command, rest) = line.split_once(' ').unwrap_or((&line, ""));
        let command = command.to_ascii_uppercase();
        if caller.needs_tls && !conn.is_tls() && command == "AUTH" {
            conn.write_line("530 5.7.0 Must issue a STARTTLS command first")
                .ok()?;
            continue;
        }
        let credentials = match command.as_str() {
            "EHLO" => {
                let mut extensions: Vec<&str> = EXTENSIONS.to_vec();
                if gate.tls.is_some() && !conn.is_tls() {
                    extensions.insert(0, "STARTTLS");
                }
                let mut reply = String::from("250-mailtoken proxy");
                for (i, ext) in extensions.iter().enumerate() {
                    let sep = if i + 1 == extensions.len() { ' ' } else { '-' };
                    reply.push_str(&format!("\r\n250{sep}{ext}"));
                }
                conn.write_line(&reply).ok()?;
                continue;
            }
            "HELO" => {
                conn.write_line("250 mailtoken proxy").ok()?;
                continue;
            }
            "NOOP" | "RSET" => {
                conn.write_line("250 2.0.0 OK").ok()?;
                continue;
            }
            "QUIT" => {
                let _ = conn.write_line("221 2.0.0 bye");
                return None;
            }
            "STARTTLS" => {
                match &gate.tls {
                    Some(tls) if !conn.is_tls() => {
                        conn.write_line("220 2.0.0 begin TLS now").ok()?;
                        conn = conn.accept_tls(tls.clone()).ok()?;
                    }
                    _ => conn
                        .write_line("454 4.7.0 TLS is not available here")
                        .ok()?,
                }
                continue;
            }
            "AUTH" => match auth(&mut conn, rest)? {
                Ok(credentials) => credentials,
                Err(reply) => {
                    conn.write_line(&reply).ok()?;
                    continue;
                }
            },
            _ => {
                conn.write_line("530 5.7.0 log in first (AUTH PLAIN or AUTH LOGIN)")
                    .ok()?;
                continue;
            }
        };
        let outcome = gate.login(caller, &credentials.0, &credentials.1, Service::Smtp);
        conn = match conclude(
            conn,
            outcome,
            "235 2.7.0 logged in through mailtoken",
            |d| {
                let code = match d {
                    Denied::Unavailable(_) => "454 4.7.0",
                    _ => "535 5.7.8",
                };
                format!("{code} mailtoken: {}", d.text())
            },
        ) {
            Ok(done) => return Some(done),
            Err(conn) => conn,
        };
    }
    let _ = conn.write_line("421 4.7.0 too many commands without logging in");
    None
}

/// One AUTH exchange: the credentials, or the reply that refuses it. `None`: the client went.
fn auth(conn: &mut Conn, rest: &str) -> Option<Result<(String, String), String>> {
    let mut words = rest.split_whitespace();
    let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
    let initial = words.next().map(str::to_string);
    let mut ask = |prompt: &str| -> Option<String> {
        conn.write_line(&format!("334 {prompt}")).ok()?;
        conn.read_line().ok()
    };
    let cancelled = || Err("501 5.7.0 AUTH cancelled".to_string());
    Some(match mechanism.as_str() {
        "PLAIN" => {
            let response = match initial {
                Some(ir) => ir,
                None => ask("")?,
            };
            if response == "*" {
                return Some(cancelled());
            }
            decode_plain(&response).ok_or_else(|| "501 5.5.2 not a SASL PLAIN response".into())
        }
        "LOGIN" => {
            let user = match initial {
                Some(ir) => ir,
                None => ask(&STANDARD.encode("Username:"))?,
            };
            if user == "*" {
                return Some(cancelled());
            }
            let password = ask(&STANDARD.encode("Password:"))?;
            if password == "*" {
                return Some(cancelled());
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
