//! SASL for mail servers: the XOAUTH2 and OAUTHBEARER (RFC 7628) initial responses that
//! `token` prints and `check`/`send-test` send, and what a server's refusal means.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The XOAUTH2 initial client response, base64-encoded.
pub fn xoauth2(user: &str, token: &str) -> String {
    STANDARD.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// The OAUTHBEARER initial client response (RFC 7628 section 3.1), base64-encoded.
pub fn oauthbearer(user: &str, host: Option<&str>, port: Option<u16>, token: &str) -> String {
    let mut msg = format!("n,a={},\x01", saslname(user));
    if let Some(host) = host {
        msg.push_str(&format!("host={host}\x01"));
    }
    if let Some(port) = port {
        msg.push_str(&format!("port={port}\x01"));
    }
    msg.push_str(&format!("auth=Bearer {token}\x01\x01"));
    STANDARD.encode(msg)
}

/// RFC 5801 saslname: `,` and `=` are escaped in the GS2 authzid.
fn saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mech {
    /// SASL XOAUTH2 (Google, Microsoft)
    Xoauth2,
    /// SASL OAUTHBEARER, RFC 7628
    Oauthbearer,
}

impl Mech {
    /// The mechanism to use with a server that offers what `offers` says yes to: XOAUTH2 when
    /// it offers it (or neither, as some servers do not advertise it), OAUTHBEARER when it
    /// offers only that.
    pub fn prefer(offers: impl Fn(Mech) -> bool) -> Mech {
        if !offers(Mech::Xoauth2) && offers(Mech::Oauthbearer) {
            Mech::Oauthbearer
        } else {
            Mech::Xoauth2
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mech::Xoauth2 => "XOAUTH2",
            Mech::Oauthbearer => "OAUTHBEARER",
        }
    }

    /// The base64 initial client response.
    pub fn initial_response(self, user: &str, token: &str, host: &str, port: u16) -> String {
        match self {
            Mech::Xoauth2 => xoauth2(user, token),
            Mech::Oauthbearer => oauthbearer(user, Some(host), Some(port), token),
        }
    }

    /// What the client answers to an error challenge so the server sends its final refusal:
    /// an empty line for XOAUTH2, a base64 %x01 for OAUTHBEARER (RFC 7628 section 3.2.3).
    pub fn abort_response(self) -> &'static str {
        match self {
            Mech::Xoauth2 => "",
            Mech::Oauthbearer => "AQ==",
        }
    }
}

/// A server challenge as text: the base64 is decoded when it is base64 (XOAUTH2 and
/// OAUTHBEARER error challenges are base64 JSON), otherwise shown as it came.
pub fn decode_challenge(text: &str) -> String {
    let text = text.trim();
    match STANDARD.decode(text) {
        Ok(bytes) if !text.is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
        _ => text.to_string(),
    }
}

/// A plain-words reading of a decoded error challenge such as
/// `{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`.
pub fn explain_challenge(decoded: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(decoded).ok()?;
    let status = match &json["status"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let scope = json["scope"].as_str();
    let why = match status.as_str() {
        "400" => "the server could not read the request (is the user right?)".to_string(),
        "401" => "the token was refused: it expired, was revoked, belongs to another user than \
                  `user`, or lacks the scope"
            .to_string(),
        "403" => "the token is valid but does not allow mail access for this user".to_string(),
        "invalid_token" => "the token was refused (expired, revoked or for another user)".into(),
        "insufficient_scope" => "the token lacks the scope this server needs".into(),
        other => format!("status {other}"),
    };
    Some(match scope {
        Some(scope) => format!("{why}; the server wants scope `{scope}`"),
        None => why,
    })
}

/// SASL PLAIN (RFC 4616), as a client sends it: base64 of `authzid NUL authcid NUL password`;
/// the user (authcid) and the password.
pub fn decode_plain(b64: &str) -> Option<(String, String)> {
    let bytes = STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.split('\0');
    let (_authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || user.is_empty() {
        return None;
    }
    Some((user.to_string(), password.to_string()))
}

/// What to do about a refusal the server explained in words we recognise.
pub fn hint(reply: &str) -> Option<&'static str> {
    let lower = reply.to_ascii_lowercase();
    if lower.contains("smtpclientauthentication is disabled")
        || lower.contains("smtp client authentication is disabled")
    {
        return Some(
            "SMTP AUTH is switched off for this mailbox or tenant: an Exchange admin can enable it \
             (Set-CASMailbox -Identity USER -SmtpClientAuthenticationDisabled $false)",
        );
    }
    if lower.contains("5.7.139") || lower.contains("authentication unsuccessful") {
        return Some(
            "Microsoft refused the login: check that `user` is the mailbox the token belongs to \
             (`mailtoken whoami`), that the token has the SMTP.Send/IMAP scope, and that SMTP AUTH \
             or IMAP is enabled for the mailbox",
        );
    }
    // Google's own words; 5.7.8 alone is RFC 4954's code for any refused login.
    if lower.contains("username and password not accepted") {
        return Some(
            "Google refused the login: check that `user` is the account the token belongs to and \
             that the token has scope https://mail.google.com/",
        );
    }
    if lower.contains("5.7.8") {
        return Some(
            "the server refused the token: check that `user` is the mailbox the token belongs to \
             (`mailtoken whoami`) and that the token has the server's mail scope",
        );
    }
    None
}

/// Whether a refusal says "not now" rather than "not this token": IMAP's `[UNAVAILABLE]` and
/// `[INUSE]` (RFC 5530), POP's `[SYS/TEMP]` and `[IN-USE]` (RFC 3206), SMTP's 4xx (RFC 4954's
/// 454 4.7.0 "temporary authentication failure").
pub fn temporary(reply: &str) -> bool {
    let upper = reply.to_ascii_uppercase();
    let smtp_4xx = reply.len() >= 4
        && reply.as_bytes()[0] == b'4'
        && reply.as_bytes()[1..3].iter().all(u8::is_ascii_digit)
        && matches!(reply.as_bytes()[3], b' ' | b'-');
    smtp_4xx
        || ["[UNAVAILABLE]", "[INUSE]", "[SYS/TEMP]", "[IN-USE]"]
            .iter()
            .any(|code| upper.contains(code))
}

/// The error for a refused login: the server's words, its decoded challenge, and what to do.
/// A refusal that says "try later" is a server failure (exit 4), not a token to replace.
pub fn refusal(proto: &str, reply: &str, challenge: Option<String>) -> anyhow::Error {
    if temporary(reply) {
        return crate::error::server(format!(
            "the {proto} server cannot log you in just now: {reply}; try again later"
        ));
    }
    let mut msg = format!("the {proto} server refused the login: {reply}");
    if let Some(ch) = challenge {
        msg.push_str(&format!("\n  server challenge: {}", ch.trim()));
        if let Some(why) = explain_challenge(&ch) {
            msg.push_str(&format!("\n  meaning: {why}"));
        }
    }
    if let Some(hint) = hint(reply) {
        msg.push_str(&format!("\n  fix: {hint}"));
    }
    anyhow::anyhow!(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preferred_mechanism_is_xoauth2_unless_only_oauthbearer_is_offered() {
        assert_eq!(Mech::prefer(|_| false), Mech::Xoauth2);
        assert_eq!(Mech::prefer(|_| true), Mech::Xoauth2);
        assert_eq!(Mech::prefer(|m| m == Mech::Oauthbearer), Mech::Oauthbearer);
        assert_eq!(Mech::prefer(|m| m == Mech::Xoauth2), Mech::Xoauth2);
    }

    #[test]
    fn sasl_plain_responses() {
        let b64 = STANDARD.encode("\0me@example.com\0secret");
        assert_eq!(
            decode_plain(&b64),
            Some(("me@example.com".into(), "secret".into()))
        );
        let with_authzid = STANDARD.encode("admin\0me\0pw");
        assert_eq!(
            decode_plain(&with_authzid),
            Some(("me".into(), "pw".into()))
        );
        assert_eq!(decode_plain("not base64!"), None);
        assert_eq!(decode_plain(&STANDARD.encode("only-one-part")), None);
    }

    #[test]
    fn try_later_refusals_are_told_from_refused_tokens() {
        for reply in [
            "a2 NO [UNAVAILABLE] Temporary authentication failure",
            "-ERR [SYS/TEMP] try later",
            "-ERR [IN-USE] mailbox locked",
            "454 4.7.0 Temporary authentication failure",
        ] {
            assert!(temporary(reply), "{reply}");
            let err = refusal("X", reply, None);
            assert_eq!(
                crate::error::kind(&err),
                Some(crate::error::Kind::Server),
                "{reply}"
            );
        }
        for reply in [
            "a2 NO [AUTHENTICATIONFAILED] Authentication failed.",
            "535 5.7.8 Username and Password not accepted",
            "-ERR [AUTH] no",
            "-ERR 4 messages",
        ] {
            assert!(!temporary(reply), "{reply}");
            assert_eq!(crate::error::kind(&refusal("X", reply, None)), None);
        }
    }

    #[test]
    fn responses_match_the_sasl_module() {
        assert_eq!(
            Mech::Xoauth2.initial_response("u", "t", "h", 1),
            xoauth2("u", "t")
        );
        assert_eq!(
            Mech::Oauthbearer.initial_response("u", "t", "h", 1),
            oauthbearer("u", Some("h"), Some(1), "t")
        );
        assert_eq!(
            STANDARD.decode(Mech::Oauthbearer.abort_response()).unwrap(),
            b"\x01"
        );
        assert_eq!(Mech::Xoauth2.abort_response(), "");
    }

    #[test]
    fn google_error_challenge_is_decoded_and_explained() {
        // Google's documented XOAUTH2 error challenge.
        let b64 = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIG1hYyIsInNjb3BlIjoiaHR0cHM6Ly9tYWlsLmdvb2dsZS5jb20vIn0K";
        let decoded = decode_challenge(b64);
        assert_eq!(
            decoded.trim(),
            r#"{"status":"401","schemes":"bearer mac","scope":"https://mail.google.com/"}"#
        );
        let why = explain_challenge(&decoded).unwrap();
        assert!(
            why.contains("refused") && why.contains("https://mail.google.com/"),
            "{why}"
        );
        assert_eq!(decode_challenge("not base64!"), "not base64!");
        assert_eq!(explain_challenge("plain words"), None);
        let rfc = explain_challenge(r#"{"status":"invalid_token"}"#).unwrap();
        assert!(rfc.contains("refused"));
    }

    #[test]
    fn known_refusals_get_hints() {
        assert!(
            hint("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.")
                .unwrap()
                .contains("Set-CASMailbox")
        );
        assert!(
            hint("535-5.7.8 Username and Password not accepted.")
                .unwrap()
                .contains("Google")
        );
        let generic = hint("535 5.7.8 Authentication credentials invalid").unwrap();
        assert!(!generic.contains("Google"), "{generic}");
        assert!(hint("250 fine").is_none());
    }

    #[test]
    fn xoauth2_matches_googles_documented_example() {
        assert_eq!(
            xoauth2(
                "someuser@example.com",
                "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
            ),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
    }

    #[test]
    fn oauthbearer_matches_rfc7628_example() {
        // The initial response in RFC 7628 section 4.1, byte for byte.
        assert_eq!(
            oauthbearer(
                "user@example.com",
                Some("server.example.com"),
                Some(143),
                "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
            ),
            "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
        );
        assert_eq!(
            oauthbearer("a,b=c", None, None, "t"),
            STANDARD.encode("n,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01")
        );
    }
}
