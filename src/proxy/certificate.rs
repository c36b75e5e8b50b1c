//! `proxy --make-certificate`: a certificate for the proxy's own TLS that mail programs can
//! trust without warnings, signed by a local CA that can vouch for nothing else.
//!
//! The CA is name-constrained to this machine's names (localhost, 127.0.0.1, ::1), and its key
//! is never written: it signs the proxy's certificate and is gone. So trusting the CA, even
//! system-wide, trusts exactly one certificate, valid only for the loopback names; a stolen
//! proxy key (0600 in the data directory) gives no more than the proxy's own address.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, SanType,
};

/// What was written, for the message that says how to use it.
pub struct Made {
    /// The CA certificate: what a mail program (or the system) is told to trust.
    pub ca: PathBuf,
    /// The proxy's certificate and its key: `tls_certificate` and `tls_key`.
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// The last day the certificate is valid, `YYYY-MM-DD`.
    pub valid_until: String,
}

/// How long the proxy's certificate lives: the most Apple's platforms accept for a TLS
/// server certificate (825 days); `--make-certificate` again makes a new one.
const LIFETIME_DAYS: u64 = 825;

/// The three PEM texts: the CA certificate, the proxy's certificate, the proxy's key; and
/// the certificate's last day. Nothing is written.
pub fn generate(now: u64) -> Result<(String, String, String, String)> {
    let date = |secs: u64| {
        let (y, m, d) = crate::time::utc_date(secs);
        rcgen::date_time_ymd(y as i32, m as u8, d as u8)
    };
    let (y, m, d) = crate::time::utc_date(now + LIFETIME_DAYS * 86_400);
    let valid_until = format!("{y:04}-{m:02}-{d:02}");
    let mut ca = local_ca();
    (ca.not_before, ca.not_after) = (
        date(now.saturating_sub(86_400)),
        date(now + LIFETIME_DAYS * 86_400),
    );
    let ca_key = KeyPair::generate().context("cannot make a key")?;
    let ca_cert = ca
        .self_signed(&ca_key)
        .context("cannot make the CA certificate")?;
    let issuer = Issuer::new(ca.clone(), ca_key);
    let leaf_key = KeyPair::generate().context("cannot make a key")?;
    let leaf_cert = server(&["localhost", "127.0.0.1", "::1"], &ca)?
        .signed_by(&leaf_key, &issuer)
        .context("cannot sign the proxy's certificate")?;
    // `issuer` (the CA's key) is dropped here, never written anywhere.
    Ok((
        ca_cert.pem(),
        leaf_cert.pem(),
        leaf_key.serialize_pem(),
        valid_until,
    ))
}

/// The CA: it may sign server certificates for this machine's names, and no CA below it.
fn local_ca() -> CertificateParams {
    let mut ca = CertificateParams::default();
    ca.distinguished_name = name("mailtoken proxy local CA (can sign only for this machine)");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![
            GeneralSubtree::DnsName("localhost".into()),
            GeneralSubtree::IpAddress(CidrSubnet::V4([127, 0, 0, 1], [255; 4])),
            GeneralSubtree::IpAddress(CidrSubnet::V6(
                std::net::Ipv6Addr::LOCALHOST.octets(),
                [255; 16],
            )),
        ],
        excluded_subtrees: Vec::new(),
    });
    ca
}

/// A server certificate for `names` (host names or IP addresses), valid while `ca` is.
fn server(names: &[&str], ca: &CertificateParams) -> Result<CertificateParams> {
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = name(names[0]);
    for host in names {
        leaf.subject_alt_names
            .push(match host.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*host).try_into().context("a host name")?),
            });
    }
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    (leaf.not_before, leaf.not_after) = (ca.not_before, ca.not_after);
    Ok(leaf)
}

fn name(common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    dn
}

/// Make the CA and the proxy's certificate and key in `dir` (the data directory, 0700): the
/// key 0600, the certificates too (nothing else needs to read them).
pub fn make(dir: &Path, now: u64) -> Result<Made> {
    let (ca, certificate, key, valid_until) = generate(now)?;
    crate::store::Store::new(dir.to_path_buf()).ensure_dir()?;
    let files = crate::store::DataDir::new(dir);
    let made = Made {
        ca: files.proxy_ca(),
        certificate: files.proxy_certificate(),
        key: files.proxy_key(),
        valid_until,
    };
    // The key first: a certificate never stands beside a key it does not go with for long.
    for (path, text) in [
        (&made.key, &key),
        (&made.certificate, &certificate),
        (&made.ca, &ca),
    ] {
        files.replace_small(path, text.as_bytes())?;
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    /// The proxy's certificate verifies against the CA for the loopback names, by rustls's
    /// own verifier (webpki, which enforces name constraints), and for nothing else.
    #[test]
    fn the_certificate_is_trusted_for_this_machine_only() {
        let (ca, cert, key, until) = generate(1_767_225_600).unwrap(); // 2026-01-01
        assert_eq!(until, "2028-04-05");
        let ca = CertificateDer::from_pem_slice(ca.as_bytes()).unwrap();
        let cert = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert!(PrivateKeyDer::from_pem_slice(key.as_bytes()).is_ok());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        let at = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            1_767_225_600,
        ));
        for host in ["localhost", "127.0.0.1", "::1"] {
            let name = ServerName::try_from(host).unwrap();
            assert!(
                verifier
                    .verify_server_cert(&cert, &[], &name, &[], at)
                    .is_ok(),
                "{host}"
            );
        }
        for host in ["example.com", "192.168.1.1"] {
            let name = ServerName::try_from(host).unwrap();
            assert!(
                verifier
                    .verify_server_cert(&cert, &[], &name, &[], at)
                    .is_err(),
                "{host}"
            );
        }
    }

    /// Had the CA's key been kept and stolen, a certificate it signed for another name would
    /// still not be trusted: the CA is constrained to this machine's names.
    #[test]
    fn the_ca_cannot_vouch_for_other_names() {
        let ca = local_ca();
        let ca_key = KeyPair::generate().unwrap();
        let root = CertificateDer::from(ca.self_signed(&ca_key).unwrap().der().to_vec());
        let issuer = Issuer::new(ca.clone(), ca_key);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        let at = rustls::pki_types::UnixTime::now();
        for (host, trusted) in [
            ("localhost", true),
            ("mail.example.com", false),
            ("10.0.0.1", false),
        ] {
            let forged = server(&[host], &ca)
                .unwrap()
                .signed_by(&KeyPair::generate().unwrap(), &issuer)
                .unwrap();
            let forged = CertificateDer::from(forged.der().to_vec());
            let name = ServerName::try_from(host).unwrap();
            let verdict = verifier.verify_server_cert(&forged, &[], &name, &[], at);
            assert_eq!(verdict.is_ok(), trusted, "{host}: {verdict:?}");
        }
    }
}
