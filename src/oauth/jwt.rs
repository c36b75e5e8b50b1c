//! JWTs: client assertions (RFC 7523) signed with the app's certificate key, which Microsoft
//! Entra accepts in place of a client secret; Google service accounts' grant assertions; and
//! the claims of tokens we are given, read (never trusted: not verified) to tell whose they are.

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
    signed(key_pair, &header, &claims)
}

/// `header.claims.signature`, RS256.
fn signed(key_pair: &RsaKeyPair, header: &Value, claims: &Value) -> Result<String> {
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

/// The largest service account key file read: Google's are about 2.3 KB.
const MAX_KEY_FILE: u64 = 64 * 1024;
/// Google takes a grant assertion that lives one hour at most.
const GRANT_LIFETIME: u64 = 3600;

/// A Google service account's JSON key (the file the Cloud console gives): what the grant
/// assertion is made from. The private key never leaves this struct but as a signature.
#[derive(serde::Deserialize)]
pub struct ServiceAccountKey {
    #[serde(rename = "type")]
    kind: String,
    pub client_email: String,
    #[serde(default)]
    pub client_id: Option<String>,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
}

impl ServiceAccountKey {
    /// The key file at `path`: small, JSON, a service account's.
    pub fn read(path: &Path) -> Result<ServiceAccountKey> {
        use std::io::Read;
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot read the service account key {}", path.display()))?;
        let mut bytes = Vec::new();
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read the service account key {}", path.display()))?;
        if bytes.len() as u64 > MAX_KEY_FILE {
            bail!(
                "{} is over {MAX_KEY_FILE} bytes: not a service account key",
                path.display()
            );
        }
        let key: ServiceAccountKey = serde_json::from_slice(&bytes).map_err(|_| {
            anyhow::anyhow!(
                "{} is not a service account key (JSON with client_email and private_key): \
                 download one in the Google Cloud console, IAM, Service accounts, Keys",
                path.display()
            )
        })?;
        if key.kind != "service_account" {
            bail!(
                "{} is a key of type `{}`, not `service_account`",
                path.display(),
                crate::log::printable(&key.kind)
            );
        }
        Ok(key)
    }
}

/// The JWT-bearer grant's assertion (RFC 7523 section 2.1, as Google documents it for
/// domain-wide delegation): the service account as issuer, the mailbox it acts for as subject,
/// the scope, the token endpoint as audience, for one hour.
pub fn service_account_assertion(
    key: &ServiceAccountKey,
    mailbox: &str,
    scope: &str,
    audience: &str,
    now: u64,
) -> Result<String> {
    let der = PrivateKeyDer::from_pem_slice(key.private_key.as_bytes())
        .map_err(|_| anyhow::anyhow!("the service account key's private_key is not a PEM key"))?;
    let key_pair = match &der {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => bail!("the service account key's private_key is not an RSA key"),
    }
    .map_err(|e| anyhow::anyhow!("the service account key's private_key is not usable: {e}"))?;
    let mut header = serde_json::json!({ "alg": "RS256", "typ": "JWT" });
    if let Some(kid) = &key.private_key_id {
        header["kid"] = Value::String(kid.clone());
    }
    let claims = serde_json::json!({
        "iss": key.client_email,
        "sub": mailbox,
        "scope": scope,
        "aud": audience,
        "iat": now,
        "exp": now + GRANT_LIFETIME,
    });
    signed(&key_pair, &header, &claims)
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
    fn a_service_account_assertion_names_the_mailbox_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.json");
        let pem = std::fs::read_to_string(fixture("app-key.pem")).unwrap();
        std::fs::write(
            &path,
            serde_json::json!({
                "type": "service_account",
                "client_email": "relay@proj.iam.gserviceaccount.com",
                "client_id": "1234",
                "private_key": pem,
                "private_key_id": "kid-1",
            })
            .to_string(),
        )
        .unwrap();
        let key = ServiceAccountKey::read(&path).unwrap();
        let jwt = service_account_assertion(
            &key,
            "scanner@example.com",
            "https://mail.google.com/",
            "https://oauth2.googleapis.com/token",
            1_000,
        )
        .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(decode_json(parts[0])["kid"], "kid-1");
        let claims = decode_json(parts[1]);
        assert_eq!(claims["iss"], "relay@proj.iam.gserviceaccount.com");
        assert_eq!(claims["sub"], "scanner@example.com");
        assert_eq!(claims["scope"], "https://mail.google.com/");
        assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
        assert_eq!(claims["exp"], 4_600);
        let public = std::fs::read(fixture("app-pub.der")).unwrap();
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            &public,
        )
        .verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
        )
        .expect("signature verifies");
        // Not a service account's key: said, with the file's name and no key material.
        std::fs::write(
            &path,
            r#"{"type":"authorized_user","client_email":"x","private_key":"k"}"#,
        )
        .unwrap();
        let err = ServiceAccountKey::read(&path).err().unwrap().to_string();
        assert!(err.contains("not `service_account`"), "{err}");
        std::fs::write(&path, "not json").unwrap();
        let err = ServiceAccountKey::read(&path).err().unwrap().to_string();
        assert!(
            err.contains("key.json is not a service account key"),
            "{err}"
        );
    }

    #[test]
    fn missing_or_wrong_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let err = client_assertion(&cert, &cert, "id", "aud", 0).unwrap_err();
        assert!(err.to_string().contains("cert.pem"), "{err}");
    }
}
