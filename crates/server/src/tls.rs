//! The server's TLS identity.
//!
//! Generated mode (no `--tls-cert`): a CA and a serving certificate are made
//! on first start and kept in the datastore (`/drover/tls/…`), so a restart,
//! or a second replica on the same PostgreSQL, serves the same CA. Replicas
//! racing on the first start settle it by create-if-absent: the loser reads
//! the winner's. The serving certificate is re-issued by the same CA when it
//! lacks a needed name (a new `--server-url` host) or nears expiry.
//!
//! Own-files mode: `--tls-cert`/`--tls-key` (and optionally `--tls-ca`, served
//! at `/cacerts`) replace both; nothing is stored.

use std::path::Path;
use std::sync::Arc;

use drover_core::keys;
use drover_net::pki::{self, CertPair};
use drover_store::{Store, StoreError};
use serde::{Deserialize, Serialize};

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
    #[serde(default)]
    names: Vec<String>,
    not_after: i64,
}

impl From<CertPair> for StoredCert {
    fn from(p: CertPair) -> Self {
        Self {
            cert_pem: p.cert_pem,
            key_pem: p.key_pem,
            names: p.names,
            not_after: p.not_after,
        }
    }
}

impl From<StoredCert> for CertPair {
    fn from(s: StoredCert) -> Self {
        Self {
            cert_pem: s.cert_pem,
            key_pem: s.key_pem,
            names: s.names,
            not_after: s.not_after,
        }
    }
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
    let ca: CertPair = ensure_ca(store).await?.into();
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
    let mut chain = pki::parse_certs(&serving.cert_pem).map_err(ServerError::Certificates)?;
    chain.extend(pki::parse_certs(&ca.cert_pem).map_err(ServerError::Certificates)?);
    let key = pki::parse_key(&serving.key_pem).map_err(ServerError::Certificates)?;
    let config = pki::server_config(chain, key).map_err(ServerError::Certificates)?;
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
    let chain = pki::parse_certs(&read("--tls-cert", cert)?).map_err(bad("--tls-cert", cert))?;
    let key_der = pki::parse_key(&read("--tls-key", key)?).map_err(bad("--tls-key", key))?;
    let ca_pem = match ca {
        Some(path) => {
            let pem = read("--tls-ca", path)?;
            pki::parse_certs(&pem).map_err(bad("--tls-ca", path))?;
            pem
        }
        None => String::new(),
    };
    let config = pki::server_config(chain, key_der).map_err(ServerError::TlsMismatch)?;
    Ok(TlsMaterial { config, ca_pem })
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
        let ca: StoredCert = pki::generate_ca(CA_DAYS).map_err(cert_error)?.into();
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
    ca: &CertPair,
    names: &[String],
) -> Result<StoredCert, ServerError> {
    loop {
        let current = store.get(keys::SERVER_SERVING_CERT).await?;
        let mut wanted = names.to_vec();
        if let Some(kv) = &current {
            let have = decode(&kv.value)?;
            let fresh = have.not_after - pki::now().unix_timestamp() > RENEW_DAYS * 86_400;
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
        let serving: StoredCert = pki::generate_serving(ca, &wanted, SERVING_DAYS)
            .map_err(cert_error)?
            .into();
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
