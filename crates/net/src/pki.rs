//! Certificates: a CA and serving certificates made with rcgen (ECDSA
//! P-256), PEM parsing, and rustls configurations that use the `ring`
//! provider.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// A certificate and its key, as PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
    /// For a CA: its common name. For a serving certificate: its names.
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_after: i64,
}

/// A rustls server configuration for a chain and key (checks they match).
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = server_builder()?
        .with_no_client_auth()
        // Checks that the key belongs to the first certificate.
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A server configuration builder on the `ring` provider with the safe
/// default protocol versions.
fn server_builder(
) -> Result<rustls::ConfigBuilder<rustls::ServerConfig, rustls::WantsVerifier>, String> {
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
}

/// Certificates in a PEM text.
pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block found".into());
    }
    Ok(certs)
}

/// The private key in a PEM text.
pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block found".to_owned(),
        other => format!("not PEM: {other}"),
    })
}

/// Now, for certificate validity.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// The CA's parameters, rebuilt identically from its common name so that
/// certificates it issues later carry the right issuer.
fn ca_params(common_name: &str, not_after: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "drover");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now() - Duration::hours(1);
    params.not_after = not_after;
    params
}

/// A new CA valid for `days`.
pub fn generate_ca(days: i64) -> Result<CertPair, rcgen::Error> {
    let key = KeyPair::generate()?;
    // The key's digest makes the name unique, even for two CAs made in
    // the same second (a rotation right after the first start).
    let digest = <sha2::Sha256 as sha2::Digest>::digest(key.public_key_raw());
    let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let cn = format!("drover-ca@{}-{tag}", now().unix_timestamp());
    let not_after = now() + Duration::days(days);
    let cert = ca_params(&cn, not_after).self_signed(&key)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        names: vec![cn],
        not_after: not_after.unix_timestamp(),
    })
}

/// A cross-certificate: `new` CA's name and key, signed by the `old` CA,
/// valid until `not_after` (but not beyond either CA). Served after the
/// serving certificate, it lets clients that trust only `old` verify
/// certificates `new` issues.
pub fn cross_sign(
    old: &CertPair,
    new: &CertPair,
    not_after: OffsetDateTime,
) -> Result<String, rcgen::Error> {
    let old_key = KeyPair::from_pem(&old.key_pem)?;
    let old_cn = old.names.first().map(String::as_str).unwrap_or("drover-ca");
    let old_not_after =
        OffsetDateTime::from_unix_timestamp(old.not_after).unwrap_or_else(|_| now());
    let issuer = Issuer::new(ca_params(old_cn, old_not_after), old_key);
    let new_key = KeyPair::from_pem(&new.key_pem)?;
    let new_cn = new.names.first().map(String::as_str).unwrap_or("drover-ca");
    let new_not_after =
        OffsetDateTime::from_unix_timestamp(new.not_after).unwrap_or_else(|_| now());
    let mut params = ca_params(new_cn, not_after.min(old_not_after).min(new_not_after));
    params.use_authority_key_identifier_extension = true;
    Ok(params.signed_by(&new_key, &issuer)?.pem())
}

/// A serving certificate for `names` (DNS names or IPs) signed by `ca`,
/// valid for `days` (but not beyond the CA).
pub fn generate_serving(
    ca: &CertPair,
    names: &[String],
    days: i64,
) -> Result<CertPair, rcgen::Error> {
    generate_serving_for(ca, names, Duration::days(days))
}

/// A serving certificate for `names` signed by `ca`, valid for `lifetime`
/// from now (but not beyond the CA).
pub fn generate_serving_for(
    ca: &CertPair,
    names: &[String],
    lifetime: Duration,
) -> Result<CertPair, rcgen::Error> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let ca_cn = ca.names.first().map(String::as_str).unwrap_or("drover-ca");
    let ca_not_after = OffsetDateTime::from_unix_timestamp(ca.not_after).unwrap_or_else(|_| now());
    let issuer = Issuer::new(ca_params(ca_cn, ca_not_after), ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "drover");
    dn.push(DnType::CommonName, "drover");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now() - Duration::minutes(5);
    let not_after = (now() + lifetime).min(ca_not_after);
    params.not_after = not_after;
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        names: names.to_vec(),
        not_after: not_after.unix_timestamp(),
    })
}

/// A certificate for one replica of the server, signed by `ca`: it serves
/// under `names` (DNS names or IPs) and identifies the replica as `id`
/// when it calls another (client authentication), valid for `days`.
pub fn generate_peer(
    ca: &CertPair,
    id: &str,
    names: &[String],
    days: i64,
) -> Result<CertPair, rcgen::Error> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let ca_cn = ca.names.first().map(String::as_str).unwrap_or("drover-ca");
    let ca_not_after = OffsetDateTime::from_unix_timestamp(ca.not_after).unwrap_or_else(|_| now());
    let issuer = Issuer::new(ca_params(ca_cn, ca_not_after), ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "drover");
    dn.push(DnType::CommonName, id);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = now() - Duration::hours(1);
    let not_after = (now() + Duration::days(days)).min(ca_not_after);
    params.not_after = not_after;
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        names: names.to_vec(),
        not_after: not_after.unix_timestamp(),
    })
}

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Its subject's common name, or the whole subject.
    pub subject: String,
    /// Its issuer's common name, or the whole issuer.
    pub issuer: String,
    /// Its DNS names and IP addresses.
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Serial number, hex.
    pub serial: String,
}

/// Read the first certificate of a PEM text.
pub fn inspect(pem: &str) -> Result<CertInfo, String> {
    let der = parse_certs(pem)?.remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let cn = |name: &x509_parser::x509::X509Name<'_>| {
        name.iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| name.to_string())
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                    4 => names.push(
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).expect("4 bytes"))
                            .to_string(),
                    ),
                    16 => names.push(
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).expect("16 bytes"))
                            .to_string(),
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        subject: cn(cert.subject()),
        issuer: cn(cert.issuer()),
        names,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string().replace(':', ""),
    })
}

/// A certificate chain and key ready for rustls' certificate resolver
/// (checks that the key belongs to the first certificate).
pub fn certified_key(
    chain_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let chain = parse_certs(chain_pem)?;
    let key = parse_key(key_pem)?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| format!("the key does not fit the certificate: {e}"))?;
    Ok(Arc::new(certified))
}

/// A rustls server configuration that asks `resolver` for the certificate
/// at every handshake, so that a renewed one is served at once.
pub fn resolving_server_config(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = server_builder()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn roots(ca_pem: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in parse_certs(ca_pem)? {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    Ok(roots)
}

/// A rustls server configuration that serves `chain` and accepts only
/// clients presenting a certificate issued by `client_ca_pem` (mutual
/// TLS). HTTP/1.1 only, so that upgrades pass.
pub fn mutual_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(client_ca_pem)?),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A rustls client configuration that trusts only `ca_pem` and presents
/// `chain` (mutual TLS). Without ALPN: the HTTP client sets it (HTTP/1.1
/// only for the peer connection, so that upgrades pass).
pub fn mutual_client_config(
    ca_pem: &str,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ClientConfig, String> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())
}

/// A rustls client configuration that trusts only `ca_pem`.
pub fn client_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = roots(ca_pem)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn serving_cert_chains_to_the_ca() {
        let ca = generate_ca(10).unwrap();
        let serving = generate_serving(&ca, &["localhost".into(), "10.1.2.3".into()], 1).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(parse_certs(&ca.cert_pem).unwrap().remove(0))
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let leaf = parse_certs(&serving.cert_pem).unwrap().remove(0);
        for name in ["localhost", "10.1.2.3"] {
            let server_name = rustls::pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(
                    &leaf,
                    &[],
                    &server_name,
                    &[],
                    rustls::pki_types::UnixTime::now(),
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = rustls::pki_types::ServerName::try_from("example.com").unwrap();
        assert!(verifier
            .verify_server_cert(&leaf, &[], &other, &[], rustls::pki_types::UnixTime::now())
            .is_err());
    }
}
