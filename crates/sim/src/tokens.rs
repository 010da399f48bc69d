//! ServiceAccount tokens: `POST …/serviceaccounts/{name}/token` (a
//! TokenRequest; what `kubectl create token` sends) issues a bearer token
//! that authenticates as `system:serviceaccount:NS:NAME` with the groups
//! `system:serviceaccounts`, `system:serviceaccounts:NS` and
//! `system:authenticated`, until it expires or the ServiceAccount is
//! deleted. Only a SHA-256 of each token is stored; a sweep removes the
//! records of expired tokens and of deleted ServiceAccounts.

use std::time::{Duration, SystemTime};

use drover_apiserver::{ApiError, FieldError};
use drover_core::{keys, meta};
use drover_rbac::UserInfo;
use drover_store::{ListOptions, Store, StoreError};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Default and shortest token lifetimes, as kube-apiserver has them.
const DEFAULT_SECONDS: u64 = 3600;
const MIN_SECONDS: u64 = 600;

const RECORDS: &str = "/sim/serviceaccount-tokens/";
/// How often expired token records are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

fn record_key(token: &str) -> String {
    format!("{RECORDS}{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// Answer a TokenRequest for ServiceAccount `ns/name`.
pub(crate) async fn request(
    store: &Store,
    ns: &str,
    name: &str,
    body: Value,
) -> Result<Value, ApiError> {
    let sa_key = keys::object("", "serviceaccounts", Some(ns), name);
    let subject = drover_apiserver::error::Subject {
        group: "",
        resource: "serviceaccounts",
        name,
    };
    let sa = store
        .get(&sa_key)
        .await
        .map_err(|e| ApiError::from_store(e, subject))?
        .ok_or_else(|| ApiError::not_found(subject))?;
    let sa: Value = serde_json::from_slice(&sa.value).unwrap_or_default();
    let seconds = body
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_SECONDS);
    if seconds > (1 << 32) {
        return Err(ApiError::invalid(
            "TokenRequest",
            "authentication.k8s.io",
            name,
            &[FieldError::invalid(
                "spec.expirationSeconds",
                seconds,
                "may not specify a duration larger than 2^32 seconds",
            )],
        ));
    }
    if seconds < MIN_SECONDS {
        return Err(ApiError::invalid(
            "TokenRequest",
            "authentication.k8s.io",
            name,
            &[FieldError::invalid(
                "spec.expirationSeconds",
                seconds,
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    let token = drover_core::names::random_suffix(64);
    let expires = meta::rfc3339(SystemTime::now() + Duration::from_secs(seconds));
    let uid = sa
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let record = json!({"namespace": ns, "name": name, "uid": uid, "expires": expires});
    store
        .create(&record_key(&token), record.to_string())
        .await
        .map_err(|e| ApiError::from_store(e, subject))?;
    let mut spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    spec["expirationSeconds"] = json!(seconds);
    if spec.get("audiences").is_none() {
        spec["audiences"] = json!(["https://kubernetes.default.svc.cluster.local"]);
    }
    Ok(json!({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": expires},
    }))
}

/// Sweep token records that can no longer authenticate until aborted.
pub(crate) fn spawn_sweep(store: Store) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            match sweep(&store).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(removed = n, "swept ServiceAccount token records"),
                Err(StoreError::Closed) => return,
                Err(e) => tracing::warn!(error = %e, "token sweep failed"),
            }
        }
    })
}

/// Delete the records of expired tokens and of tokens whose ServiceAccount
/// is gone or re-created; returns how many went.
pub(crate) async fn sweep(store: &Store) -> Result<usize, StoreError> {
    let page = store
        .list(&ListOptions {
            prefix: RECORDS.into(),
            ..Default::default()
        })
        .await?;
    let mut removed = 0;
    for kv in page.items {
        let record: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        if !record_valid(store, &record).await? {
            match store.delete(&kv.key, Some(kv.mod_revision)).await {
                Ok(_) => removed += 1,
                Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Whether a token record still authenticates: not expired, and its
/// ServiceAccount neither deleted nor re-created.
async fn record_valid(store: &Store, record: &Value) -> Result<bool, StoreError> {
    let expires = record["expires"].as_str().and_then(meta::parse_rfc3339);
    if expires.is_none_or(|t| t <= SystemTime::now()) {
        return Ok(false);
    }
    let (Some(ns), Some(name)) = (record["namespace"].as_str(), record["name"].as_str()) else {
        return Ok(false);
    };
    let Some(sa) = store
        .get(&keys::object("", "serviceaccounts", Some(ns), name))
        .await?
    else {
        return Ok(false);
    };
    let sa: Value = serde_json::from_slice(&sa.value).unwrap_or_default();
    Ok(sa.pointer("/metadata/uid").and_then(Value::as_str) == record["uid"].as_str())
}

/// The ServiceAccount a token stands for, if it is valid.
pub(crate) async fn authenticate(store: &Store, token: &str) -> Option<UserInfo> {
    if token.is_empty() || token.len() > 256 {
        return None;
    }
    let kv = store.get(&record_key(token)).await.ok()??;
    let record: Value = serde_json::from_slice(&kv.value).ok()?;
    if !record_valid(store, &record).await.ok()? {
        return None;
    }
    let (ns, name) = (record["namespace"].as_str()?, record["name"].as_str()?);
    Some(UserInfo {
        name: format!("system:serviceaccount:{ns}:{name}"),
        uid: record["uid"].as_str().unwrap_or_default().to_owned(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
        extra: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sweep_removes_only_records_that_cannot_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &format!("sqlite://{}/s.db", dir.path().display()),
            Default::default(),
        )
        .await
        .unwrap();
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "robot", "namespace": "default", "uid": "u-1"}});
        store
            .create(
                &keys::object("", "serviceaccounts", Some("default"), "robot"),
                sa.to_string(),
            )
            .await
            .unwrap();
        let issued = request(&store, "default", "robot", json!({"spec": {}}))
            .await
            .unwrap();
        let live = issued["status"]["token"].as_str().unwrap().to_owned();
        let past = meta::rfc3339(SystemTime::now() - Duration::from_secs(1));
        let future = meta::rfc3339(SystemTime::now() + Duration::from_secs(600));
        for (token, record) in [
            (
                "expired",
                json!({"namespace": "default", "name": "robot", "uid": "u-1", "expires": past}),
            ),
            (
                "orphaned",
                json!({"namespace": "default", "name": "gone", "uid": "u-2", "expires": future}),
            ),
            (
                "recreated",
                json!({"namespace": "default", "name": "robot", "uid": "u-0", "expires": future}),
            ),
        ] {
            store
                .create(&record_key(token), record.to_string())
                .await
                .unwrap();
        }

        assert_eq!(sweep(&store).await.unwrap(), 3);
        let left = store
            .list(&ListOptions {
                prefix: RECORDS.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(left.items.len(), 1);
        assert_eq!(left.items[0].key, record_key(&live));
        assert!(authenticate(&store, &live).await.is_some());
        assert_eq!(sweep(&store).await.unwrap(), 0);
    }
}
