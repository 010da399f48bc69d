//! The serving certificate from an ACME CA (`--acme-domain`), with the
//! HTTP-01 challenge.
//!
//! Everything lives in the datastore, so that every replica serves the same
//! certificate and any replica answers a challenge:
//! - `/drover/acme/account`: the account's credentials (its key);
//! - `/drover/acme/certificate`: the chain and key in use;
//! - `/drover/acme/challenges/{token}`: key authorizations while an order
//!   is pending, answered at `/.well-known/acme-challenge/{token}` on
//!   `--acme-http-listen`;
//! - `/drover/acme/lock`: who is ordering, until when, and how many orders
//!   failed in a row. Only the holder orders; a failed order keeps the lock
//!   for a backoff (30 s doubling to 1 h), so no replica retries sooner.
//!
//! An order is placed when there is no certificate, when its names differ
//! from `--acme-domain`, or when two thirds of its lifetime have passed.
//! The old certificate is served until the new one is stored.

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use drover_net::pki;
use drover_store::{Store, StoreError};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};

use super::{given_ca_status, snapshot_of, Snapshot};
use crate::args::ServerArgs;
use crate::ServerError;

const ACCOUNT: &str = "/drover/acme/account";
const CERTIFICATE: &str = "/drover/acme/certificate";
const CHALLENGES: &str = "/drover/acme/challenges/";
const LOCK: &str = "/drover/acme/lock";
/// How long one order may take before another replica may try.
const ORDER_TIME: Duration = Duration::from_secs(300);
/// Backoff after failed orders: 30 s, doubling, at most an hour.
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The ACME settings, and this replica's name as a lock holder.
#[derive(Debug, Clone)]
pub struct Acme {
    domains: Vec<String>,
    email: String,
    directory: String,
    ca_bundle: Option<PathBuf>,
    holder: String,
}

/// The certificate in use, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcmeCert {
    chain_pem: String,
    key_pem: String,
    names: Vec<String>,
    not_before: i64,
    not_after: i64,
    /// The replica that ordered it.
    ordered_by: String,
}

impl AcmeCert {
    /// The chain served.
    pub(super) fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    pub(super) fn snapshot(&self, given_ca: &str) -> Result<Snapshot, ServerError> {
        snapshot_of(
            "serving",
            &self.chain_pem,
            &self.key_pem,
            given_ca.to_owned(),
            given_ca_status(given_ca),
        )
        .map_err(ServerError::Certificates)
    }

    fn due(&self, domains: &[String], now: i64) -> bool {
        let renew_at = self.not_before + (self.not_after - self.not_before) * 2 / 3;
        now >= renew_at || self.names != domains
    }
}

/// Who is ordering.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lock {
    holder: String,
    /// Unix seconds.
    until: i64,
    failures: u32,
    #[serde(default)]
    last_error: String,
}

/// Why an order failed.
#[derive(Debug, thiserror::Error)]
enum OrderError {
    #[error("ACME: {0}")]
    Acme(#[from] instant_acme::Error),
    #[error("the datastore: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

fn now() -> i64 {
    pki::now().unix_timestamp()
}

impl Acme {
    /// The settings from the flags (checked by `ServerArgs::check`, the
    /// CA bundle by `tls::preflight`).
    pub fn new(args: &ServerArgs) -> Self {
        let mut domains = args.acme_domain.clone();
        domains.sort();
        domains.dedup();
        Self {
            domains,
            email: args.acme_email.clone().unwrap_or_default(),
            directory: args.acme_directory.to_string(),
            ca_bundle: args.acme_ca_bundle.clone(),
            holder: format!("{}-{}", std::process::id(), rand::random::<u32>()),
        }
    }

    /// The stored certificate, if it is for these names and not expired.
    pub async fn stored(&self, store: &Store) -> Result<Option<AcmeCert>, ServerError> {
        let Some(kv) = store.get(CERTIFICATE).await? else {
            return Ok(None);
        };
        let cert: AcmeCert = serde_json::from_slice(&kv.value).map_err(|e| {
            ServerError::Certificates(format!("the stored ACME certificate is unreadable: {e}"))
        })?;
        Ok((cert.names == self.domains && cert.not_after > now()).then_some(cert))
    }

    /// Order a certificate if one is due and no other replica is ordering.
    pub async fn order_if_due(&self, store: &Store) {
        if !self.due(store).await {
            return;
        }
        let Some((lock, revision)) = self.take_lock(store).await else {
            return;
        };
        // Another replica may have stored a certificate between the read
        // above and the lock: look again.
        if !self.due(store).await {
            release(
                store,
                revision,
                Lock {
                    until: now(),
                    ..lock
                },
            )
            .await;
            return;
        }
        tracing::info!(domains = ?self.domains, directory = %self.directory, "ACME: ordering a certificate");
        let result = tokio::time::timeout(ORDER_TIME, self.order(store)).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(OrderError::Other("the order took too long".into())),
        };
        let failures = match &result {
            Ok(cert) => {
                tracing::info!(not_after = cert.not_after, names = ?cert.names, "ACME: certificate obtained");
                0
            }
            Err(e) => {
                tracing::warn!(error = %e, failures = lock.failures + 1, "ACME: the order failed; trying again after a backoff");
                lock.failures + 1
            }
        };
        // Release (on success) or hold for the backoff (on failure).
        let until = if failures == 0 {
            now()
        } else {
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << (failures - 1).min(10))
                .min(MAX_BACKOFF);
            now() + backoff.as_secs() as i64
        };
        let released = Lock {
            holder: self.holder.clone(),
            until,
            failures,
            last_error: result.err().map(|e| e.to_string()).unwrap_or_default(),
        };
        release(store, revision, released).await;
    }

    /// Whether a certificate must be ordered: none stored, another names
    /// list, or two thirds of its lifetime gone. Not when the datastore
    /// cannot say.
    async fn due(&self, store: &Store) -> bool {
        match store.get(CERTIFICATE).await {
            Ok(Some(kv)) => serde_json::from_slice::<AcmeCert>(&kv.value)
                .map_or(true, |c| c.due(&self.domains, now())),
            Ok(None) => true,
            Err(e) => {
                tracing::debug!(error = %e, "ACME: cannot read the certificate");
                false
            }
        }
    }

    /// Take the ordering lock unless another replica holds it, or a
    /// failure's backoff is not over.
    async fn take_lock(&self, store: &Store) -> Option<(Lock, i64)> {
        let current = store.get(LOCK).await.ok()?;
        let previous = current
            .as_ref()
            .and_then(|kv| serde_json::from_slice::<Lock>(&kv.value).ok());
        if previous.as_ref().is_some_and(|l| l.until > now()) {
            return None;
        }
        let lock = Lock {
            holder: self.holder.clone(),
            until: now() + ORDER_TIME.as_secs() as i64 + 30,
            failures: previous.map_or(0, |l| l.failures),
            last_error: String::new(),
        };
        let value = serde_json::to_vec(&lock).expect("serialises");
        let written = match &current {
            Some(kv) => store.update(LOCK, value, kv.mod_revision).await,
            None => store.create(LOCK, value).await,
        };
        written.ok().map(|kv| (lock, kv.mod_revision))
    }

    async fn account(&self, store: &Store) -> Result<Account, OrderError> {
        let builder = || match &self.ca_bundle {
            Some(path) => Account::builder_with_root(path),
            None => Account::builder(),
        };
        if let Some(kv) = store.get(ACCOUNT).await? {
            if let Ok(credentials) = serde_json::from_slice::<AccountCredentials>(&kv.value) {
                return Ok(builder()?.from_credentials(credentials).await?);
            }
        }
        let contact = format!("mailto:{}", self.email);
        let (account, credentials) = builder()?
            .create(
                &NewAccount {
                    contact: &[&contact],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.directory.clone(),
                None,
            )
            .await?;
        let value = serde_json::to_vec(&credentials)
            .map_err(|e| OrderError::Other(format!("account credentials: {e}")))?;
        match store.get(ACCOUNT).await? {
            Some(kv) => store.update(ACCOUNT, value, kv.mod_revision).await?,
            None => store.create(ACCOUNT, value).await?,
        };
        tracing::info!(id = %account.id(), "ACME: account created");
        Ok(account)
    }

    async fn order(&self, store: &Store) -> Result<AcmeCert, OrderError> {
        let account = self.account(store).await?;
        let identifiers: Vec<Identifier> = self
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let mut tokens = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(OrderError::Other(format!("an authorization is {other:?}"))),
            }
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| OrderError::Other("the CA offers no HTTP-01 challenge".into()))?;
            let key = format!("{CHALLENGES}{}", challenge.token);
            let answer = challenge.key_authorization().as_str().to_owned();
            match store.create(&key, answer).await {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
            tokens.push(key);
            challenge.set_ready().await?;
        }
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(Duration::from_secs(90));
        let status = order.poll_ready(&retry).await;
        for key in &tokens {
            let _ = store.delete(key, None).await;
        }
        let status = status?;
        if status != OrderStatus::Ready {
            return Err(OrderError::Other(format!(
                "the order is {status:?}, not ready: the CA could not validate the challenge"
            )));
        }
        let key = rcgen::KeyPair::generate().map_err(|e| OrderError::Other(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(self.domains.clone())
            .map_err(|e| OrderError::Other(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| OrderError::Other(e.to_string()))?;
        order.finalize_csr(csr.der()).await?;
        let chain_pem = order.poll_certificate(&retry).await?;
        let info = pki::inspect(&chain_pem).map_err(OrderError::Other)?;
        let cert = AcmeCert {
            key_pem: key.serialize_pem(),
            names: self.domains.clone(),
            not_before: info.not_before,
            not_after: info.not_after,
            ordered_by: self.holder.clone(),
            chain_pem,
        };
        pki::certified_key(&cert.chain_pem, &cert.key_pem).map_err(OrderError::Other)?;
        let value = serde_json::to_vec(&cert).expect("serialises");
        match store.get(CERTIFICATE).await? {
            Some(kv) => store.update(CERTIFICATE, value, kv.mod_revision).await?,
            None => store.create(CERTIFICATE, value).await?,
        };
        Ok(cert)
    }
}

/// Write the lock back as `lock` if it is still the one taken at
/// `revision` (it is not, if the order outlived the lock and another
/// replica took it).
async fn release(store: &Store, revision: i64, lock: Lock) {
    let value = serde_json::to_vec(&lock).expect("serialises");
    if let Err(e) = store.update(LOCK, value, revision).await {
        tracing::debug!(error = %e, "ACME: the ordering lock changed hands meanwhile");
    }
}

/// The HTTP-01 responder: `/.well-known/acme-challenge/{token}` from the
/// datastore, so that whichever replica the CA reaches answers.
pub fn challenge_router(store: Store) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(answer))
        .with_state(store)
}

async fn answer(State(store): State<Store>, Path(token): Path<String>) -> Response {
    let valid = !token.is_empty()
        && token.len() <= 128
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return StatusCode::NOT_FOUND.into_response();
    }
    match store.get(&format!("{CHALLENGES}{token}")).await {
        Ok(Some(kv)) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            kv.value.to_vec(),
        )
            .into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
