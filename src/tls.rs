//! The one TLS client setup, for the token endpoints and the mail servers alike: ring, and the
//! platform's trust store (plus an account's `tls_ca_file`), read when the first certificate is
//! checked and not before, so a refresh from an http:// (loopback) endpoint never reads the
//! system's certificates.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Result;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_platform_verifier::Verifier;

/// The client settings with the platform's trust store alone, made once per process.
pub fn client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| build(Vec::new())).clone()
}

/// The client settings for an account: the platform's trust store, and the CA certificates
/// of its `tls_ca_file` (a private CA's) when it has one. Made once per file and process.
pub fn client_config_for(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>> {
    let Some(path) = ca_file else {
        return Ok(client_config());
    };
    static BY_FILE: OnceLock<Mutex<HashMap<PathBuf, Arc<ClientConfig>>>> = OnceLock::new();
    let mut made = BY_FILE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(config) = made.get(path) {
        return Ok(config.clone());
    }
    let config = build(ca_certificates(path)?);
    made.insert(path.to_path_buf(), config.clone());
    Ok(config)
}

/// The certificates of a PEM file, or the error that says what to give instead.
pub fn ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| {
            crate::error::usage(format!(
                "tls_ca_file {}: {e}: give the CA's certificate as a PEM file",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(crate::error::usage(format!(
            "tls_ca_file {} holds no certificate (-----BEGIN CERTIFICATE-----): give the CA's \
             certificate as a PEM file",
            path.display()
        )));
    }
    Ok(certs)
}

fn build(extra_roots: Vec<CertificateDer<'static>>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PlatformRoots {
        provider: Arc::clone(&provider),
        extra_roots,
        verifier: OnceLock::new(),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Arc::new(config)
}

/// The platform verifier, made (and the trust store read) at the first certificate to check.
/// The handshake signatures are checked with the provider's algorithms, as the platform
/// verifier does, so they need no trust store.
struct PlatformRoots {
    provider: Arc<CryptoProvider>,
    /// Trusted besides the platform's roots (`tls_ca_file`).
    extra_roots: Vec<CertificateDer<'static>>,
    verifier: OnceLock<Result<Verifier, rustls::Error>>,
}

impl std::fmt::Debug for PlatformRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlatformRoots")
    }
}

impl PlatformRoots {
    fn verifier(&self) -> Result<&Verifier, rustls::Error> {
        self.verifier
            .get_or_init(|| {
                Verifier::new_with_extra_roots(
                    self.extra_roots.iter().cloned(),
                    Arc::clone(&self.provider),
                )
                .map_err(|e| {
                    rustls::Error::General(format!(
                        "cannot load the system's trusted certificates: {e}"
                    ))
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl ServerCertVerifier for PlatformRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trust_store_is_not_read_until_a_certificate_is_checked() {
        let config = client_config();
        let verifier = PlatformRoots {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            extra_roots: Vec::new(),
            verifier: OnceLock::new(),
        };
        assert!(!verifier.supported_verify_schemes().is_empty());
        assert!(verifier.verifier.get().is_none());
        // One config per process.
        assert!(Arc::ptr_eq(&config, &client_config()));
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = client_config_for(Some(&empty)).unwrap_err().to_string();
        assert!(err.contains("holds no certificate"), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = client_config_for(Some(&missing)).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2, "{err:#}");
        assert!(Arc::ptr_eq(
            &client_config_for(None).unwrap(),
            &client_config()
        ));
    }
}
