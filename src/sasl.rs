//! SASL initial responses for mail servers: XOAUTH2 (Google/Microsoft) and OAUTHBEARER (RFC 7628).

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

#[cfg(test)]
mod tests {
    use super::*;

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
