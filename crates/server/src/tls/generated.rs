//! Drover's own CA and serving certificate, kept in the datastore.
//!
//! The CA (`/drover/tls/ca`) is made on first start; replicas racing on it
//! settle by create-if-absent, the loser reading the winner's. The serving
//! certificate (`/drover/tls/serving`) is issued by the CA and issued again
//! — by whichever replica sees it first; the others read it — when it
//! lacks a needed name (a new `--server-url` host), when two thirds of its
//! lifetime have passed, or when the CA that signs serving certificates
//! changed.
//!
//! A CA rotation keeps the new CA beside the old at `/drover/tls/ca-next`
//! and moves through phases:
//! 1. `trust`: `/cacerts` serves both CAs (old first); the serving
//!    certificate is still the old CA's. Agents are told the new checksums.
//! 2. `serve`: the serving certificate is issued again by the new CA.
//!    Clients that trust both, or the new one, go on working.
//!    The old CA signs the new one here: that cross-certificate, served
//!    after the serving certificate until it expires (the life of a
//!    downloaded kubeconfig), lets clients that trust only the old CA —
//!    kubeconfigs from before — reach the server, which refuses their
//!    tokens with a message saying to download them again.
//! 3. retired: the new CA becomes `/drover/tls/ca` and the old one's key is
//!    gone, in one transaction.
//!
//! Each step names the rotation (its new CA's name) it acts on, so a step
//! of a rotation undone meanwhile never acts on another.

use drover_core::keys;
use drover_net::pki::{self, CertPair};
use drover_store::{Op, Store, StoreError};
use serde::{Deserialize, Serialize};

use super::{snapshot_of, status, Snapshot};
use crate::ServerError;

/// The CA's lifetime.
const CA_DAYS: i64 = 3650;

/// Where the next CA is kept during a rotation.
pub const CA_NEXT: &str = "/drover/tls/ca-next";

/// A certificate and key as kept in the datastore.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredCert {
    cert_pem: String,
    key_pem: String,
    #[serde(default)]
    names: Vec<String>,
    not_after: i64,
    /// Unix seconds; older records lack it.
    #[serde(default)]
    not_before: i64,
    /// For a serving certificate: the common name of the CA that signed it.
    #[serde(default)]
    issuer: String,
    /// For a CA that replaced another: itself signed by the one it
    /// replaced (PEM), served after the serving certificate until it
    /// expires, so that kubeconfigs that trust the old CA reach the server
    /// and are told to download again.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    cross_pem: String,
    /// For a CA that replaced another: when (Unix seconds).
    #[serde(default, skip_serializing_if = "is_zero")]
    rotated_at: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl StoredCert {
    fn from_pair(p: CertPair, issuer: String) -> Self {
        Self {
            not_before: pki::now().unix_timestamp(),
            cert_pem: p.cert_pem,
            key_pem: p.key_pem,
            names: p.names,
            not_after: p.not_after,
            issuer,
            cross_pem: String::new(),
            rotated_at: 0,
        }
    }

    fn pair(&self) -> CertPair {
        CertPair {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
            names: self.names.clone(),
            not_after: self.not_after,
        }
    }

    /// A CA's common name.
    fn common_name(&self) -> &str {
        self.names.first().map(String::as_str).unwrap_or_default()
    }
}

/// Where a rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Both CAs are trusted; the old one still signs.
    Trust,
    /// Both CAs are trusted; the new one signs.
    Serve,
}

/// The next CA, during a rotation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NextCa {
    /// The new CA.
    pub ca: StoredCert,
    /// Where the rotation stands.
    pub phase: Phase,
}

/// The stored CA(s) and serving certificate.
#[derive(Debug, Clone)]
pub struct Stored {
    ca: StoredCert,
    next: Option<NextCa>,
    serving: StoredCert,
}

impl Stored {
    /// What `/cacerts` serves: the CA, and the next one during a rotation.
    pub(super) fn ca_bundle(&self) -> String {
        bundle(&self.ca, self.next.as_ref())
    }

    /// The chain served: the serving certificate, and the
    /// cross-certificate while it is valid — not the CA itself: clients
    /// have it already, and OpenSSL, offered both, builds its path through
    /// the self-signed one and fails for a client that trusts only the old
    /// CA.
    pub(super) fn chain_pem(&self) -> String {
        let signer = self.signer();
        let mut chain = self.serving.cert_pem.clone();
        let cross = pki::inspect(&signer.cross_pem).ok();
        if cross.is_some_and(|c| c.not_after > pki::now().unix_timestamp()) {
            chain.push_str(&signer.cross_pem);
        }
        chain
    }

    /// What the listener serves.
    pub(super) fn snapshot(&self) -> Result<Snapshot, ServerError> {
        let ca_bundle = self.ca_bundle();
        let mut more: Vec<_> = status("ca", &self.ca.cert_pem).into_iter().collect();
        if let Some(next) = &self.next {
            more.extend(status("ca-next", &next.ca.cert_pem));
        }
        let rotation_checksums = self.next.as_ref().map(|n| {
            vec![
                checksum(&self.ca.cert_pem),
                checksum(&ca_bundle),
                checksum(&n.ca.cert_pem),
            ]
        });
        let mut snapshot = snapshot_of(
            "serving",
            &self.chain_pem(),
            &self.serving.key_pem,
            ca_bundle,
            more,
        )
        .map_err(ServerError::Certificates)?;
        snapshot.rotated_at = (self.ca.rotated_at > 0).then_some(self.ca.rotated_at);
        snapshot.rotation_checksums = rotation_checksums;
        Ok(snapshot)
    }

    fn signer(&self) -> &StoredCert {
        signer(&self.ca, self.next.as_ref())
    }
}

fn bundle(ca: &StoredCert, next: Option<&NextCa>) -> String {
    match next {
        Some(next) => format!("{}{}", ca.cert_pem, next.ca.cert_pem),
        None => ca.cert_pem.clone(),
    }
}

fn signer<'a>(current: &'a StoredCert, next: Option<&'a NextCa>) -> &'a StoredCert {
    match next {
        Some(NextCa {
            ca: next_ca,
            phase: Phase::Serve,
        }) => next_ca,
        _ => current,
    }
}

fn decode<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<T, ServerError> {
    serde_json::from_slice(value)
        .map_err(|e| ServerError::Certificates(format!("stored certificate is unreadable: {e}")))
}

fn encode<T: Serialize>(cert: &T) -> Vec<u8> {
    serde_json::to_vec(cert).expect("certificates serialise")
}

fn cert_error(e: rcgen::Error) -> ServerError {
    ServerError::Certificates(e.to_string())
}

fn new_ca() -> Result<StoredCert, ServerError> {
    let pair = pki::generate_ca(CA_DAYS).map_err(cert_error)?;
    Ok(StoredCert::from_pair(pair, String::new()))
}

/// The CA, made on first start, with its record's revision.
async fn ensure_ca(store: &Store) -> Result<(StoredCert, i64), ServerError> {
    loop {
        if let Some(kv) = store.get(keys::SERVER_CA).await? {
            return Ok((decode(&kv.value)?, kv.mod_revision));
        }
        let ca = new_ca()?;
        match store.create(keys::SERVER_CA, encode(&ca)).await {
            Ok(kv) => {
                tracing::info!("generated the server CA");
                return Ok((ca, kv.mod_revision));
            }
            Err(StoreError::AlreadyExists(_)) => continue, // another replica was first
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether `serving` must be issued again: a name missing, two thirds of
/// its lifetime gone, or signed by another CA than `signer`.
fn due(serving: &StoredCert, signer: &StoredCert, names: &[String], now: i64) -> bool {
    let issued = if serving.not_before > 0 {
        serving.not_before
    } else {
        serving.not_after - 365 * 86_400
    };
    let renew_at = issued + (serving.not_after - issued) * 2 / 3;
    let issuer = if serving.issuer.is_empty() {
        // Records from before issuers were kept: read the certificate.
        pki::inspect(&serving.cert_pem)
            .map(|i| i.issuer)
            .unwrap_or_default()
    } else {
        serving.issuer.clone()
    };
    now >= renew_at
        || issuer != signer.common_name()
        || !names.iter().all(|n| serving.names.contains(n))
}

/// Read the stored certificates, making the CA on first start and issuing
/// the serving certificate when it is due.
pub async fn refresh(
    store: &Store,
    names: &[String],
    validity: std::time::Duration,
) -> Result<Stored, ServerError> {
    loop {
        let (ca, ca_revision) = ensure_ca(store).await?;
        let next_kv = store.get(CA_NEXT).await?;
        let next: Option<NextCa> = next_kv.as_ref().map(|kv| decode(&kv.value)).transpose()?;
        let signer = signer(&ca, next.as_ref()).clone();
        let current = store.get(keys::SERVER_SERVING_CERT).await?;
        let mut wanted = names.to_vec();
        if let Some(kv) = &current {
            let have: StoredCert = decode(&kv.value)?;
            if !due(&have, &signer, names, pki::now().unix_timestamp()) {
                return Ok(Stored {
                    ca,
                    next,
                    serving: have,
                });
            }
            // Keep names other replicas asked for.
            for n in have.names {
                if !wanted.contains(&n) {
                    wanted.push(n);
                }
            }
        }
        let lifetime = time::Duration::seconds(validity.as_secs().min(i64::MAX as u64) as i64);
        let pair =
            pki::generate_serving_for(&signer.pair(), &wanted, lifetime).map_err(cert_error)?;
        let serving = StoredCert::from_pair(pair, signer.common_name().to_owned());
        // Written only if neither the certificate nor the CAs changed since
        // they were read: a rotation step in between is not undone.
        let ops = [
            match &current {
                Some(kv) => {
                    Op::update(keys::SERVER_SERVING_CERT, encode(&serving), kv.mod_revision)
                }
                None => Op::create(keys::SERVER_SERVING_CERT, encode(&serving)),
            },
            Op::check(keys::SERVER_CA, Some(ca_revision)),
            Op::check(CA_NEXT, next_kv.as_ref().map(|kv| kv.mod_revision)),
        ];
        match store.txn(&ops).await {
            Ok(_) => {
                tracing::info!(names = ?serving.names, issuer = %serving.issuer, not_after = serving.not_after, "issued the serving certificate");
                return Ok(Stored { ca, next, serving });
            }
            Err(
                StoreError::AlreadyExists(_)
                | StoreError::Conflict { .. }
                | StoreError::NotFound(_),
            ) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Why a rotation step could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// Another rotation is under way.
    #[error("a CA rotation is already under way (started {0}); wait for it to finish")]
    InProgress(String),
    /// No rotation is under way.
    #[error("no CA rotation is under way")]
    NotRotating,
    /// The datastore failed.
    #[error("the datastore is unavailable: {0}")]
    Store(#[from] StoreError),
    /// Making the CA failed.
    #[error("{0}")]
    Certificates(String),
}

impl From<ServerError> for RotationError {
    fn from(e: ServerError) -> Self {
        match e {
            ServerError::Store(e) => Self::Store(e),
            other => Self::Certificates(other.to_string()),
        }
    }
}

/// The checksums a client may see at `/cacerts` during and after a
/// rotation: of both CAs together, and of the new one alone.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The new CA's common name: names this rotation in its later steps.
    pub id: String,
    /// `/cacerts` before the rotation.
    pub old_checksum: String,
    /// `/cacerts` while both CAs are trusted.
    pub transition_checksum: String,
    /// `/cacerts` after.
    pub new_checksum: String,
}

fn checksum(pem: &str) -> String {
    crate::kinds::registration::ca_checksum(pem)
}

/// Step 1: make the next CA and trust it beside the current one.
pub async fn begin_rotation(store: &Store) -> Result<Rotation, RotationError> {
    let (ca, ca_revision) = ensure_ca(store).await?;
    if let Some(kv) = store.get(CA_NEXT).await? {
        let next: NextCa = decode(&kv.value)?;
        return Err(RotationError::InProgress(drover_core::meta::rfc3339(
            drover_core::meta::from_unix(next.ca.not_before),
        )));
    }
    let next = NextCa {
        ca: new_ca()?,
        phase: Phase::Trust,
    };
    let ops = [
        Op::check(keys::SERVER_CA, Some(ca_revision)),
        Op::create(CA_NEXT, encode(&next)),
    ];
    match store.txn(&ops).await {
        Ok(_) => {}
        Err(StoreError::AlreadyExists(_) | StoreError::Conflict { .. }) => {
            return Err(RotationError::InProgress("just now".into()))
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(new_ca = %next.ca.common_name(), "CA rotation: trusting a new CA beside the current one");
    Ok(Rotation {
        id: next.ca.common_name().to_owned(),
        old_checksum: checksum(&ca.cert_pem),
        transition_checksum: checksum(&bundle(&ca, Some(&next))),
        new_checksum: checksum(&next.ca.cert_pem),
    })
}

/// The next CA of the rotation `id` (its common name), with its revision;
/// another rotation's, or none, is refused.
async fn this_rotation(store: &Store, id: &str) -> Result<(NextCa, i64), RotationError> {
    let kv = store
        .get(CA_NEXT)
        .await?
        .ok_or(RotationError::NotRotating)?;
    let next: NextCa = decode(&kv.value)?;
    if next.ca.common_name() != id {
        return Err(RotationError::NotRotating);
    }
    Ok((next, kv.mod_revision))
}

/// Step 2: the new CA signs the serving certificate from now on (each
/// replica issues or reads it at its next refresh). The old CA signs the
/// new one now (a cross-certificate valid for `cross_for`, the life of a
/// downloaded kubeconfig: a day at least, never beyond either CA), served
/// after the serving certificate, so that clients that trust only the old
/// CA — kubeconfigs from before — still reach the server, to be told to
/// download again.
pub async fn serve_with_next(
    store: &Store,
    id: &str,
    cross_for: std::time::Duration,
) -> Result<(), RotationError> {
    let (mut next, revision) = this_rotation(store, id).await?;
    if next.phase == Phase::Serve {
        return Ok(());
    }
    let old: StoredCert = match store.get(keys::SERVER_CA).await? {
        Some(kv) => decode(&kv.value)?,
        None => return Err(RotationError::NotRotating),
    };
    // A kubeconfig TTL of 0 means no limit: the CAs' lives bound it.
    let secs = match cross_for.as_secs() {
        0 => CA_DAYS as u64 * 86_400,
        n => n.clamp(86_400, CA_DAYS as u64 * 86_400),
    };
    let until = pki::now() + time::Duration::seconds(secs as i64);
    next.ca.cross_pem = pki::cross_sign(&old.pair(), &next.ca.pair(), until)
        .map_err(|e| RotationError::Certificates(e.to_string()))?;
    next.phase = Phase::Serve;
    store.update(CA_NEXT, encode(&next), revision).await?;
    tracing::info!("CA rotation: the new CA signs the serving certificate");
    Ok(())
}

/// Step 3: the new CA of rotation `id`, already signing, replaces the old
/// one, whose key is forgotten (the cross-certificate stays with the new
/// CA until it expires).
pub async fn retire_old(store: &Store, id: &str) -> Result<(), RotationError> {
    let (mut next, revision) = this_rotation(store, id).await?;
    if next.phase != Phase::Serve {
        return Err(RotationError::NotRotating);
    }
    let ca_kv = store
        .get(keys::SERVER_CA)
        .await?
        .ok_or(RotationError::NotRotating)?;
    // Kubeconfigs downloaded once every replica serves both CAs (a refresh
    // after the rotation began) trust the new one; tokens carry whole
    // seconds, so one more for the second the rotation began in.
    next.ca.rotated_at = next.ca.not_before + super::REFRESH.as_secs() as i64 + 1;
    let ops = [
        Op::update(keys::SERVER_CA, encode(&next.ca), ca_kv.mod_revision),
        Op::delete(CA_NEXT, revision),
    ];
    store.txn(&ops).await?;
    tracing::info!(ca = %next.ca.common_name(), "CA rotation: the old CA is retired");
    Ok(())
}

/// Undo a rotation not yet retired — rotation `id`, or whichever is under
/// way with `None`: the next CA is dropped, and the serving certificate
/// (if the new CA signed it) is issued again by the current one at the
/// next refresh. Whether there was one to undo.
pub async fn abort_rotation(store: &Store, id: Option<&str>) -> Result<bool, RotationError> {
    let Some(kv) = store.get(CA_NEXT).await? else {
        return Ok(false);
    };
    if let Some(id) = id {
        let next: NextCa = decode(&kv.value)?;
        if next.ca.common_name() != id {
            return Ok(false);
        }
    }
    store.delete(CA_NEXT, Some(kv.mod_revision)).await?;
    tracing::info!("CA rotation undone: the current CA stays");
    Ok(true)
}

/// The current CA: its common name and the checksum of its PEM.
pub async fn current_ca(store: &Store) -> Result<(String, String), RotationError> {
    let (ca, _) = ensure_ca(store).await?;
    Ok((ca.common_name().to_owned(), checksum(&ca.cert_pem)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving(not_before: i64, not_after: i64, issuer: &str) -> StoredCert {
        StoredCert {
            cert_pem: String::new(),
            key_pem: String::new(),
            names: vec!["localhost".into()],
            not_after,
            not_before,
            issuer: issuer.into(),
            cross_pem: String::new(),
            rotated_at: 0,
        }
    }

    #[test]
    fn renewal_is_due_at_two_thirds_or_on_a_new_signer_or_name() {
        let ca = StoredCert {
            names: vec!["drover-ca@1".into()],
            ..serving(0, 0, "")
        };
        let names = vec!["localhost".to_owned()];
        let s = serving(1000, 1300, "drover-ca@1");
        assert!(!due(&s, &ca, &names, 1199));
        assert!(due(&s, &ca, &names, 1200));
        let other = StoredCert {
            names: vec!["drover-ca@2".into()],
            ..ca.clone()
        };
        assert!(due(&s, &other, &names, 1100));
        assert!(due(&s, &ca, &["other.example".to_owned()], 1100));
    }
}
