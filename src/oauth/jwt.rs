//! JWTs: client assertions (RFC 7523) signed with the app's certificate key, which Microsoft
//! Entra accepts in place of a client secret; and the claims of tokens we are given, read
//! (never trusted: not verified) to tell whose they are.

use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Map, Value};

/// The claims (and Graph profile fields) that name a mailbox's user.
pub const IDENTITY_FIELDS: &[&str] = &[
    "upn",
    "unique_name",
    "preferred_username",
    "email",
    "mail",
    "userPrincipalName",
];

/// The claims of a signed JWT (three base64url parts), read without checking its signature.
/// Encrypted or opaque tokens (Google's, Microsoft's personal-account tokens) give `None`.
pub fn claims(token: &str) -> Option<Map<String, Value>> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The user names a token's claims give.
pub fn identities(claims: &Map<String, Value>) -> Vec<String> {
    IDENTITY_FIELDS
        .iter()
        .filter_map(|k| claims.get(*k)?.as_str().map(str::to_string))
        .collect()
}

/// A note when the token is someone else's than `user`: XOAUTH2 would then be refused.
pub fn user_mismatch(user: Option<&str>, names: &[String]) -> Option<String> {
    let user = user?;
    if names.is_empty() || names.iter().any(|n| n.eq_ignore_ascii_case(user)) {
        return None;
    }
    Some(format!(
        "the token belongs to {}, but the account's `user` is {user}: mail servers will refuse \
         the login. Fix `user`, or log in again as {user}.",
        crate::log::printable(&names[0])
    ))
}

/// How long an assertion is valid: it is used once, right away.
const LIFETIME: u64 = 600;

/// A signed assertion for `audience` (the token endpoint), from PEM files.
pub fn client_assertion(
    cert: &Path,
    key: &Path,
    client_id: &str,
    audience: &str,
    now: u64,
) -> Result<String> {
    let cert_der = CertificateDer::from_pem_file(cert).map_err(|e| {
        anyhow::anyhow!("cannot read a PEM certificate from {}: {e}", cert.display())
    })?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        anyhow::anyhow!("cannot read a PEM private key from {}: {e}", key.display())
    })?;
    let key_pair = match &key_der {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => bail!(
            "{} is not an RSA key: Entra certificate credentials need RSA",
            key.display()
        ),
    }
    .map_err(|e| anyhow::anyhow!("{} is not a usable RSA key: {e}", key.display()))?;
    let id = super::random()?;
    sign(&key_pair, &cert_der, client_id, audience, now, &uuid(id))
        .with_context(|| format!("signing with {}", key.display()))
}

/// The JWT itself: header with the certificate thumbprints, claims naming the app and audience.
pub fn sign(
    key_pair: &RsaKeyPair,
    cert_der: &[u8],
    client_id: &str,
    audience: &str,
    now: u64,
    jti: &str,
) -> Result<String> {
    let sha256 = ring::digest::digest(&ring::digest::SHA256, cert_der);
    // x5t (SHA-1) is what older Entra endpoints read; x5t#S256 is the current one.
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der);
    let header = serde_json::json!({
        "alg": "RS256",
        "typ": "JWT",
        "x5t": URL_SAFE_NO_PAD.encode(sha1),
        "x5t#S256": URL_SAFE_NO_PAD.encode(sha256),
    });
    let claims = serde_json::json!({
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "jti": jti,
        "iat": now,
        "nbf": now,
        "exp": now + LIFETIME,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; key_pair.public().modulus_len()];
    key_pair
        .sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            signing_input.as_bytes(),
            &mut signature,
        )
        .map_err(|_| anyhow::anyhow!("RSA signing failed"))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// Random bytes shaped as a version 4 UUID, the `jti` form Entra documents.
fn uuid(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_has_version_and_variant_bits() {
        let u = uuid([0xff; 16]);
        assert_eq!(u, "ffffffff-ffff-4fff-bfff-ffffffffffff");
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn decode_json(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn assertion_verifies_with_the_public_key_and_names_the_certificate() {
        for key in ["app-key.pem", "app-key-pkcs1.pem"] {
            let jwt = client_assertion(
                &fixture("app-cert.pem"),
                &fixture(key),
                "client-1",
                "https://login.example/token",
                1_000,
            )
            .unwrap();
            let parts: Vec<&str> = jwt.split('.').collect();
            assert_eq!(parts.len(), 3);
            let header = decode_json(parts[0]);
            assert_eq!(header["alg"], "RS256");
            // From `openssl x509 -outform DER | openssl dgst -sha256 -binary | base64url`.
            assert_eq!(
                header["x5t#S256"],
                "Bh4ZvERIgQ0xMsYnpV2OBN8wRbLvTS9kUloexAPEVAQ"
            );
            let claims = decode_json(parts[1]);
            assert_eq!(claims["aud"], "https://login.example/token");
            assert_eq!(claims["iss"], "client-1");
            assert_eq!(claims["sub"], "client-1");
            assert_eq!(claims["exp"], 1_600);
            let public = std::fs::read(fixture("app-pub.der")).unwrap();
            let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
            let signed = format!("{}.{}", parts[0], parts[1]);
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                &public,
            )
            .verify(signed.as_bytes(), &signature)
            .expect("signature verifies");
            let mut tampered = signed.into_bytes();
            tampered[5] ^= 1;
            assert!(
                ring::signature::UnparsedPublicKey::new(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    &public
                )
                .verify(&tampered, &signature)
                .is_err()
            );
        }
    }

    #[test]
    fn missing_or_wrong_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let err = client_assertion(&cert, &cert, "id", "aud", 0).unwrap_err();
        assert!(err.to_string().contains("cert.pem"), "{err}");
    }
}
