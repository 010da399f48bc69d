//! The server's TLS identity.
//!
//! Generated mode (no `--tls-cert`): a CA and a serving certificate are made
//! with rcgen on first start and kept in the datastore (`/drover/tls/…`), so a
//! restart, or a second replica on the same PostgreSQL, serves the same CA.
//! Replicas racing on the first start settle it by create-if-absent: the
//! loser reads the winner's. The serving certificate is re-issued by the same
//! CA when it lacks a needed name (a new `--server-url` host) or nears expiry.
//!
//! Own-files mode: `--tls-cert`/`--tls-key` (and optionally `--tls-ca`, served
//! at `/cacerts`) replace both; nothing is stored.

use std::path::Path;
use std::sync::Arc;

use drover_core::keys;
use drover_store::{Store, StoreError};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::args::ServerArgs;
use crate::ServerError;

/// The CA's lifetime.
const CA_DAYS: i64 = 3650;
/// The serving certificate's lifetime.
const SERVING_DAYS: i64 = 365;
/// Re-issue the serving certificate when it has fewer days left than this.
const RENEW_DAYS: i64 = 30;

/// What the listener needs.
pub(crate) struct TlsMaterial {
    pub(crate) config: Arc<rustls::ServerConfig>,
    /// PEM served at `/cacerts`; empty when the certificate is public.
    pub(crate) ca_pem: String,
}

/// A certificate and key as kept in the datastore.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredCert {
    cert_pem: String,
    key_pem: String,
    /// For the CA: its common name, from which its issuer parameters are
    /// rebuilt. For the serving certificate: its subject alternative names.
    #[serde(default)]
    names: Vec<String>,
    /// Unix seconds.
    not_after: i64,
}

/// Load or create the TLS identity.
pub(crate) async fn load(
    args: &ServerArgs,
    store: &Store,
    server_url: &url::Url,
) -> Result<TlsMaterial, ServerError> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return from_files(cert, key, args.tls_ca.as_deref());
    }
    let ca = ensure_ca(store).await?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Some(host) = server_url.host_str() {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !names.contains(&host) {
            names.push(host);
        }
    }
    let serving = ensure_serving(store, &ca, &names).await?;
    let mut chain = parse_certs(&serving.cert_pem).map_err(ServerError::Certificates)?;
    chain.extend(parse_certs(&ca.cert_pem).map_err(ServerError::Certificates)?);
    let key = parse_key(&serving.key_pem).map_err(ServerError::Certificates)?;
    let config = server_config(chain, key).map_err(ServerError::Certificates)?;
    Ok(TlsMaterial {
        config,
        ca_pem: ca.cert_pem,
    })
}

fn from_files(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<TlsMaterial, ServerError> {
    let read = |flag: &'static str, path: &Path| {
        std::fs::read_to_string(path).map_err(|e| ServerError::TlsFile {
            flag,
            path: path.to_owned(),
            reason: e.to_string(),
        })
    };
    fn bad<'a>(flag: &'static str, path: &'a Path) -> impl FnOnce(String) -> ServerError + 'a {
        move |reason| ServerError::TlsFile {
            flag,
            path: path.to_owned(),
            reason,
        }
    }
    let chain = parse_certs(&read("--tls-cert", cert)?).map_err(bad("--tls-cert", cert))?;
    let key_der = parse_key(&read("--tls-key", key)?).map_err(bad("--tls-key", key))?;
    let ca_pem = match ca {
        Some(path) => {
            let pem = read("--tls-ca", path)?;
            parse_certs(&pem).map_err(bad("--tls-ca", path))?;
            pem
        }
        None => String::new(),
    };
    let config = server_config(chain, key_der).map_err(ServerError::TlsMismatch)?;
    Ok(TlsMaterial { config, ca_pem })
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        // Checks that the key belongs to the first certificate.
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block found".into());
    }
    Ok(certs)
}

fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| format!("not PEM: {e}"))?
        .ok_or_else(|| "no PRIVATE KEY block found".into())
}

fn now() -> OffsetDateTime {
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

fn generate_ca() -> Result<StoredCert, rcgen::Error> {
    let key = KeyPair::generate()?;
    let cn = format!("drover-ca@{}", now().unix_timestamp());
    let not_after = now() + Duration::days(CA_DAYS);
    let cert = ca_params(&cn, not_after).self_signed(&key)?;
    Ok(StoredCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        names: vec![cn],
        not_after: not_after.unix_timestamp(),
    })
}

fn generate_serving(ca: &StoredCert, names: &[String]) -> Result<StoredCert, rcgen::Error> {
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
    params.not_before = now() - Duration::hours(1);
    let not_after = (now() + Duration::days(SERVING_DAYS)).min(ca_not_after);
    params.not_after = not_after;
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(StoredCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        names: names.to_vec(),
        not_after: not_after.unix_timestamp(),
    })
}

fn decode(value: &[u8]) -> Result<StoredCert, ServerError> {
    serde_json::from_slice(value)
        .map_err(|e| ServerError::Certificates(format!("stored certificate is unreadable: {e}")))
}

fn encode(cert: &StoredCert) -> Vec<u8> {
    serde_json::to_vec(cert).expect("certificates serialise")
}

fn cert_error(e: rcgen::Error) -> ServerError {
    ServerError::Certificates(e.to_string())
}

async fn ensure_ca(store: &Store) -> Result<StoredCert, ServerError> {
    loop {
        if let Some(kv) = store.get(keys::SERVER_CA).await? {
            return decode(&kv.value);
        }
        let ca = generate_ca().map_err(cert_error)?;
        match store.create(keys::SERVER_CA, encode(&ca)).await {
            Ok(_) => {
                tracing::info!("generated the server CA");
                return Ok(ca);
            }
            Err(StoreError::AlreadyExists(_)) => continue, // another replica was first
            Err(e) => return Err(e.into()),
        }
    }
}

async fn ensure_serving(
    store: &Store,
    ca: &StoredCert,
    names: &[String],
) -> Result<StoredCert, ServerError> {
    loop {
        let current = store.get(keys::SERVER_SERVING_CERT).await?;
        let mut wanted = names.to_vec();
        if let Some(kv) = &current {
            let have = decode(&kv.value)?;
            let fresh = have.not_after - now().unix_timestamp() > RENEW_DAYS * 86_400;
            if fresh && names.iter().all(|n| have.names.contains(n)) {
                return Ok(have);
            }
            // Keep names other replicas asked for.
            for n in have.names {
                if !wanted.contains(&n) {
                    wanted.push(n);
                }
            }
        }
        let serving = generate_serving(ca, &wanted).map_err(cert_error)?;
        let written = match &current {
            Some(kv) => {
                store
                    .update(keys::SERVER_SERVING_CERT, encode(&serving), kv.mod_revision)
                    .await
            }
            None => {
                store
                    .create(keys::SERVER_SERVING_CERT, encode(&serving))
                    .await
            }
        };
        match written {
            Ok(_) => {
                tracing::info!(names = ?serving.names, "issued the serving certificate");
                return Ok(serving);
            }
            Err(StoreError::AlreadyExists(_) | StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A generated CA and serving certificate for `localhost`, as a server
/// config and a client config that trusts it (for tests).
#[cfg(test)]
pub(crate) fn test_identity() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let ca = generate_ca().unwrap();
    let serving = generate_serving(&ca, &["localhost".into()]).unwrap();
    let server = server_config(
        parse_certs(&serving.cert_pem).unwrap(),
        parse_key(&serving.key_pem).unwrap(),
    )
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(parse_certs(&ca.cert_pem).unwrap().remove(0))
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (server, Arc::new(client))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn serving_cert_chains_to_the_ca() {
        let ca = generate_ca().unwrap();
        let serving = generate_serving(&ca, &["localhost".into(), "10.1.2.3".into()]).unwrap();
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
