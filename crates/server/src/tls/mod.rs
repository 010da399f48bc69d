//! The server's TLS identity, kept current while the server runs.
//!
//! Where the serving certificate comes from (`--tls-mode`, `--tls-cert`,
//! `--acme-domain`):
//! - **generated** (the default): a CA and a serving certificate Drover
//!   makes and keeps in the datastore ([`generated`]), renewed when two
//!   thirds of its lifetime have passed, with the CA rotated on request;
//! - **files**: the operator's `--tls-cert`/`--tls-key`, as given;
//! - **ACME**: ordered from an ACME CA ([`acme`]) and kept in the datastore;
//!   the generated one is served until the first arrives;
//! - **external**: none at all — a balancer in front terminates TLS.
//!
//! Every replica reads the stored certificates every few seconds and swaps
//! what it serves when they change: the listener asks [`Tls`] (a rustls
//! certificate resolver) at every handshake, so a renewed certificate — by
//! this replica or another — is served with no restart, and connections
//! already open keep theirs. `/cacerts`, the agents' checksum and the
//! certificates' expiry (`drover_certificate_expiry_seconds`, the settings
//! page) come from the same snapshot.

pub mod acme;
pub mod generated;

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use drover_net::pki;
use drover_store::Store;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::args::{ServerArgs, TlsMode};
use crate::ServerError;

/// How often each replica reads the stored certificates again.
pub const REFRESH: Duration = Duration::from_secs(3);

/// A certificate as shown on the settings page and in `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateStatus {
    /// `serving`, `ca`, or `ca-next` (during a rotation).
    pub name: &'static str,
    /// Subject common name.
    pub subject: String,
    /// Issuer common name.
    pub issuer: String,
    /// DNS names and addresses it serves.
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_after: i64,
}

/// What is served now.
#[derive(Debug, Clone)]
struct Snapshot {
    /// The serving chain and key; `None` with `--tls-mode external`.
    key: Option<Arc<CertifiedKey>>,
    /// The serving chain's PEM, to tell when it changed.
    chain_pem: String,
    /// Served at `/cacerts`; empty when the certificate is public.
    ca_pem: String,
    certificates: Vec<CertificateStatus>,
    /// When Drover's own CA was last rotated.
    rotated_at: Option<i64>,
    /// During a rotation: the checksums `/cacerts` has, has now, and will
    /// have once done (current CA, both, next CA).
    rotation_checksums: Option<Vec<String>>,
}

/// Where the certificate comes from.
#[derive(Debug)]
enum Source {
    Generated,
    Files,
    Acme(acme::Acme),
    External,
}

/// The server's TLS identity (see the module documentation).
#[derive(Debug)]
pub struct Tls {
    source: Source,
    store: Store,
    /// Names a generated serving certificate must carry.
    names: Vec<String>,
    /// Lifetime of a generated serving certificate.
    validity: Duration,
    /// `--tls-ca`, read at start.
    given_ca: String,
    current: RwLock<Arc<Snapshot>>,
}

/// The TLS files the flags name, read and checked.
pub struct Files {
    /// `--tls-ca` (empty when not given).
    given_ca: String,
    /// `--tls-cert` with `--tls-key`, ready to serve.
    own: Option<Snapshot>,
}

/// Read and check every TLS file the flags name (`--tls-cert` with
/// `--tls-key`, `--tls-ca`, `--acme-ca-bundle`), so that a wrong one stops
/// the start with one line before anything is written.
pub fn preflight(args: &ServerArgs) -> Result<Files, ServerError> {
    let given_ca = match &args.tls_ca {
        Some(path) => {
            let pem = read_file("--tls-ca", path)?;
            pki::parse_certs(&pem).map_err(bad_file("--tls-ca", path))?;
            pem
        }
        None => String::new(),
    };
    let own = match (args.tls_mode, &args.tls_cert, &args.tls_key) {
        (TlsMode::Drover, Some(cert), Some(key)) => Some(from_files(cert, key, &given_ca)?),
        _ => None,
    };
    if let Some(path) = &args.acme_ca_bundle {
        let pem = read_file("--acme-ca-bundle", path)?;
        pki::parse_certs(&pem).map_err(bad_file("--acme-ca-bundle", path))?;
    }
    Ok(Files { given_ca, own })
}

impl Tls {
    /// Serve what the flags say, with the files [`preflight`] read,
    /// creating the generated CA and serving certificate on first start.
    pub async fn load(
        files: Files,
        args: &ServerArgs,
        store: &Store,
        server_url: &url::Url,
    ) -> Result<Arc<Self>, ServerError> {
        let Files { given_ca, own } = files;
        let mut names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        if let Some(host) = server_url.host_str() {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if !names.iter().any(|n| n == host) {
                names.push(host.to_owned());
            }
        }
        let validity = Duration::from_secs(args.tls_validity_seconds);
        let (source, first) = match (args.tls_mode, own) {
            (TlsMode::External, _) => (
                Source::External,
                Snapshot {
                    key: None,
                    chain_pem: String::new(),
                    ca_pem: given_ca.clone(),
                    certificates: given_ca_status(&given_ca),
                    rotated_at: None,
                    rotation_checksums: None,
                },
            ),
            (TlsMode::Drover, Some(own)) => (Source::Files, own),
            (TlsMode::Drover, None) => {
                let stored = generated::refresh(store, &names, validity).await?;
                let mut snapshot = stored.snapshot()?;
                let source = if args.acme_domain.is_empty() {
                    Source::Generated
                } else {
                    let acme = acme::Acme::new(args);
                    snapshot = match acme.stored(store).await? {
                        Some(cert) => cert.snapshot(&given_ca)?,
                        None => acme_fallback(snapshot, &given_ca),
                    };
                    Source::Acme(acme)
                };
                (source, snapshot)
            }
        };
        Ok(Arc::new(Self {
            source,
            store: store.clone(),
            names,
            validity,
            given_ca,
            current: RwLock::new(Arc::new(first)),
        }))
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The rustls configuration for the listener, or `None` when a
    /// balancer terminates TLS.
    pub fn server_config(
        self: &Arc<Self>,
    ) -> Result<Option<Arc<rustls::ServerConfig>>, ServerError> {
        if matches!(self.source, Source::External) {
            return Ok(None);
        }
        let alpn: &[&[u8]] = &[b"h2", b"http/1.1"];
        pki::resolving_server_config(self.clone(), alpn)
            .map(Some)
            .map_err(ServerError::Certificates)
    }

    /// The PEM served at `/cacerts` (empty when the certificate clients
    /// see chains to a public CA).
    pub fn ca_pem(&self) -> String {
        self.snapshot().ca_pem.clone()
    }

    /// SHA-256 (hex) of [`Tls::ca_pem`], as agents verify it; empty with a
    /// public CA.
    pub fn ca_checksum(&self) -> String {
        crate::kinds::registration::ca_checksum(&self.ca_pem())
    }

    /// What the import manifest gives agents to trust (`--ca-checksum`):
    /// the checksum of `/cacerts`; during a CA rotation, every checksum
    /// `/cacerts` may have whether it completes or is undone.
    pub fn agent_checksums(&self) -> String {
        let snapshot = self.snapshot();
        match &snapshot.rotation_checksums {
            Some(all) => all.join(","),
            None => crate::kinds::registration::ca_checksum(&snapshot.ca_pem),
        }
    }

    /// The certificates in use, with their expiry.
    pub fn certificates(&self) -> Vec<CertificateStatus> {
        self.snapshot().certificates.clone()
    }

    /// When Drover's own CA was last rotated: a kubeconfig token made
    /// before (counting the first refresh round of the rotation, when a
    /// replica may still have handed out the old CA alone) trusts the old
    /// one.
    pub fn rotated_at(&self) -> Option<std::time::SystemTime> {
        self.snapshot().rotated_at.map(drover_core::meta::from_unix)
    }

    /// Whether the CA is Drover's own (so that it can be rotated).
    pub fn is_generated(&self) -> bool {
        matches!(self.source, Source::Generated)
    }

    /// Read the stored certificates again (renewing a generated one that
    /// is due) and serve what they say.
    pub async fn refresh(&self) -> Result<(), ServerError> {
        // What is stored; turned into a snapshot (keys parsed, certificates
        // read) only when the served chain or `/cacerts` changes.
        enum Read {
            Generated(generated::Stored),
            Acme(acme::AcmeCert),
            Fallback(generated::Stored),
        }
        let read = match &self.source {
            Source::Files | Source::External => return Ok(()),
            Source::Generated => {
                Read::Generated(generated::refresh(&self.store, &self.names, self.validity).await?)
            }
            Source::Acme(acme) => match acme.stored(&self.store).await? {
                Some(cert) => Read::Acme(cert),
                None => Read::Fallback(
                    generated::refresh(&self.store, &self.names, self.validity).await?,
                ),
            },
        };
        let (chain, ca) = match &read {
            Read::Generated(s) => (s.chain_pem(), s.ca_bundle()),
            Read::Acme(c) => (c.chain_pem().to_owned(), self.given_ca.clone()),
            Read::Fallback(s) => (s.chain_pem(), self.given_ca.clone()),
        };
        {
            let current = self.snapshot();
            if current.chain_pem == chain && current.ca_pem == ca {
                return Ok(());
            }
        }
        let next = match read {
            Read::Generated(s) => s.snapshot()?,
            Read::Acme(c) => c.snapshot(&self.given_ca)?,
            Read::Fallback(s) => acme_fallback(s.snapshot()?, &self.given_ca),
        };
        let serving = next.certificates.first();
        tracing::info!(
            not_after = serving.map(|c| c.not_after),
            issuer = serving.map(|c| c.issuer.as_str()),
            "serving a new certificate"
        );
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(())
    }

    /// Keep the certificates current until `stop`: read them every
    /// [`REFRESH`], and (with ACME) order one when due.
    pub fn spawn(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut ordering: Option<tokio::task::JoinHandle<()>> = None;
            loop {
                if let Err(e) = tls.refresh().await {
                    tracing::warn!(error = %e, "cannot read the stored certificates; serving the ones I have");
                }
                if let Source::Acme(acme) = &tls.source {
                    if ordering.as_ref().is_none_or(|t| t.is_finished()) {
                        let (acme, store) = (acme.clone(), tls.store.clone());
                        ordering =
                            Some(tokio::spawn(async move { acme.order_if_due(&store).await }));
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(REFRESH) => {}
                }
            }
            if let Some(t) = ordering {
                t.abort();
            }
        })
    }
}

impl drover_ui::ServerTls for Tls {
    fn ca_checksum(&self) -> String {
        Tls::ca_checksum(self)
    }

    fn certificates(&self) -> Vec<drover_ui::CertificateView> {
        Tls::certificates(self)
            .into_iter()
            .map(|c| drover_ui::CertificateView {
                name: c.name.to_owned(),
                subject: c.subject,
                issuer: c.issuer,
                not_after: c.not_after,
            })
            .collect()
    }
}

impl ResolvesServerCert for Tls {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .key
            .clone()
    }
}

fn read_file(flag: &'static str, path: &Path) -> Result<String, ServerError> {
    std::fs::read_to_string(path).map_err(|e| ServerError::TlsFile {
        flag,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn bad_file<'a>(flag: &'static str, path: &'a Path) -> impl FnOnce(String) -> ServerError + 'a {
    move |reason| ServerError::TlsFile {
        flag,
        path: path.to_owned(),
        reason,
    }
}

/// Until the first ACME certificate arrives, the generated one is served,
/// but `/cacerts` already says what clients will need (`--tls-ca`, or
/// nothing for a public CA): agents and kubeconfigs made meanwhile keep
/// working once it arrives.
fn acme_fallback(mut generated: Snapshot, given_ca: &str) -> Snapshot {
    generated.ca_pem = given_ca.to_owned();
    generated.rotation_checksums = None;
    generated.certificates.retain(|c| c.name == "serving");
    generated.certificates.extend(given_ca_status(given_ca));
    generated
}

/// The status of a certificate PEM, or nothing if it cannot be read.
fn status(name: &'static str, pem: &str) -> Option<CertificateStatus> {
    let info = pki::inspect(pem).ok()?;
    Some(CertificateStatus {
        name,
        subject: info.subject,
        issuer: info.issuer,
        names: info.names,
        not_after: info.not_after,
    })
}

fn given_ca_status(given_ca: &str) -> Vec<CertificateStatus> {
    status("ca", given_ca).into_iter().collect()
}

/// A snapshot of a chain and key (checked to match), with `ca_pem` served.
fn snapshot_of(
    name: &'static str,
    chain_pem: &str,
    key_pem: &str,
    ca_pem: String,
    mut more: Vec<CertificateStatus>,
) -> Result<Snapshot, String> {
    let key = pki::certified_key(chain_pem, key_pem)?;
    let mut certificates: Vec<CertificateStatus> = status(name, chain_pem).into_iter().collect();
    certificates.append(&mut more);
    Ok(Snapshot {
        key: Some(key),
        chain_pem: chain_pem.to_owned(),
        ca_pem,
        certificates,
        rotated_at: None,
        rotation_checksums: None,
    })
}

fn from_files(cert: &Path, key: &Path, given_ca: &str) -> Result<Snapshot, ServerError> {
    let chain = read_file("--tls-cert", cert)?;
    pki::parse_certs(&chain).map_err(bad_file("--tls-cert", cert))?;
    let key_pem = read_file("--tls-key", key)?;
    pki::parse_key(&key_pem).map_err(bad_file("--tls-key", key))?;
    snapshot_of(
        "serving",
        &chain,
        &key_pem,
        given_ca.to_owned(),
        given_ca_status(given_ca),
    )
    .map_err(ServerError::TlsMismatch)
}
