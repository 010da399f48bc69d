//! ServiceAccount tokens: `POST …/serviceaccounts/{name}/token` (a
//! TokenRequest; what `kubectl create token` sends) issues a bearer token
//! that authenticates as `system:serviceaccount:NS:NAME` with the groups
//! `system:serviceaccounts`, `system:serviceaccounts:NS` and
//! `system:authenticated`, until it expires or the ServiceAccount is
//! deleted. Only a SHA-256 of each token is stored.

use std::time::{Duration, SystemTime};

use drover_apiserver::{ApiError, FieldError};
use drover_core::{keys, meta};
use drover_rbac::UserInfo;
use drover_store::Store;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Default and shortest token lifetimes, as kube-apiserver has them.
const DEFAULT_SECONDS: u64 = 3600;
const MIN_SECONDS: u64 = 600;

fn record_key(token: &str) -> String {
    format!(
        "/sim/serviceaccount-tokens/{}",
        hex::encode(Sha256::digest(token.as_bytes()))
    )
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

/// The ServiceAccount a token stands for, if it is valid.
pub(crate) async fn authenticate(store: &Store, token: &str) -> Option<UserInfo> {
    if token.is_empty() || token.len() > 256 {
        return None;
    }
    let kv = store.get(&record_key(token)).await.ok()??;
    let record: Value = serde_json::from_slice(&kv.value).ok()?;
    let expires = record["expires"].as_str().and_then(meta::parse_rfc3339)?;
    if expires <= SystemTime::now() {
        return None;
    }
    let (ns, name) = (record["namespace"].as_str()?, record["name"].as_str()?);
    // A deleted (or re-created) ServiceAccount ends its tokens.
    let sa = store
        .get(&keys::object("", "serviceaccounts", Some(ns), name))
        .await
        .ok()??;
    let sa: Value = serde_json::from_slice(&sa.value).ok()?;
    if sa.pointer("/metadata/uid").and_then(Value::as_str) != record["uid"].as_str() {
        return None;
    }
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
