//! ServiceAccount tokens as kube-apiserver issues them: `POST
//! …/serviceaccounts/{name}/token` (a TokenRequest; what `kubectl create
//! token` sends) answers a JWT signed with the cluster's ES256 key. It
//! authenticates as `system:serviceaccount:NS:NAME` (groups
//! `system:serviceaccounts`, `system:serviceaccounts:NS`,
//! `system:authenticated`) until it expires, or its ServiceAccount (or the
//! pod it is bound to) is deleted or re-created.
//!
//! The key is kept in the store, so a restarted sim honours its tokens.
//! Its public half is served as kube serves it
//! (`/.well-known/openid-configuration`, `/openid/v1/jwks`), so a token can
//! be verified offline; `TokenReview` verifies one online.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use drover_apiserver::{ApiError, FieldError};
use drover_core::{keys, meta};
use drover_rbac::UserInfo;
use drover_store::{Store, StoreError};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The issuer (and default audience) of every token, kubeadm's.
pub(crate) const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Default and shortest token lifetimes, as kube-apiserver has them.
const DEFAULT_SECONDS: u64 = 3600;
const MIN_SECONDS: u64 = 600;
/// Where the signing key (PKCS#8, base64) is kept.
const KEY_RECORD: &str = "/sim/serviceaccount-signing-key";
/// The DER prefix of a P-256 SubjectPublicKeyInfo, before the point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The cluster's ServiceAccount token signer.
pub(crate) struct Signer {
    key: EcdsaKeyPair,
    kid: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

/// Why the signer could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored key is unreadable.
    #[error("the ServiceAccount signing key is unusable: {0}")]
    Key(String),
}

impl Signer {
    /// The cluster's key from the store, made on first start.
    pub(crate) async fn load_or_create(store: &Store) -> Result<Signer, SignerError> {
        let rng = SystemRandom::new();
        let pkcs8 = match store.get(KEY_RECORD).await? {
            Some(kv) => STANDARD
                .decode(&kv.value)
                .map_err(|e| SignerError::Key(e.to_string()))?,
            None => {
                let doc =
                    EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                        .map_err(|e| SignerError::Key(e.to_string()))?;
                let encoded = STANDARD.encode(doc.as_ref());
                match store.create(KEY_RECORD, encoded).await {
                    Ok(_) => doc.as_ref().to_vec(),
                    // Another start made one first: use that.
                    Err(StoreError::AlreadyExists(_)) => {
                        let kv = store
                            .get(KEY_RECORD)
                            .await?
                            .ok_or_else(|| SignerError::Key("vanished".into()))?;
                        STANDARD
                            .decode(&kv.value)
                            .map_err(|e| SignerError::Key(e.to_string()))?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let key =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
                .map_err(|e| SignerError::Key(e.to_string()))?;
        // kube's key ID: the SHA-256 of the public key's DER, base64url.
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(&spki));
        Ok(Signer { key, kid })
    }

    fn sign(&self, claims: &Value) -> Result<String, ApiError> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| ApiError::internal("failed to sign the token"))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }

    /// The claims of a token this signer made, if its signature holds.
    fn verify(&self, token: &str) -> Option<Value> {
        let (input, sig) = token.rsplit_once('.')?;
        let (header, claims) = input.split_once('.')?;
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header["alg"] != "ES256" {
            return None;
        }
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        )
        .verify(input.as_bytes(), &sig)
        .ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
    }

    /// `/openid/v1/jwks`.
    pub(crate) fn jwks(&self) -> Value {
        let point = self.key.public_key().as_ref();
        json!({"keys": [{
            "use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]})
    }

    /// `/.well-known/openid-configuration`, for a server at `url`.
    pub(crate) fn discovery(url: &str) -> Value {
        json!({
            "issuer": ISSUER, "jwks_uri": format!("{url}/openid/v1/jwks"),
            "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn invalid(name: &str, field: &str, value: Value, why: &str) -> ApiError {
    ApiError::invalid(
        "TokenRequest",
        "authentication.k8s.io",
        name,
        &[FieldError::invalid(field, value, why)],
    )
}

/// Answer a TokenRequest for ServiceAccount `ns/name`.
pub(crate) async fn request(
    store: &Store,
    signer: &Signer,
    ns: &str,
    name: &str,
    body: Value,
) -> Result<Value, ApiError> {
    let subject = drover_apiserver::error::Subject {
        group: "",
        resource: "serviceaccounts",
        name,
    };
    let sa = store
        .get(&keys::object("", "serviceaccounts", Some(ns), name))
        .await
        .map_err(|e| ApiError::from_store(e, subject))?
        .ok_or_else(|| ApiError::not_found(subject))?;
    let sa: Value = serde_json::from_slice(&sa.value).unwrap_or_default();
    let seconds = match body.pointer("/spec/expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_SECONDS,
        Some(v) => v.as_u64().ok_or_else(|| {
            invalid(
                name,
                "spec.expirationSeconds",
                v.clone(),
                "must be a positive number of seconds",
            )
        })?,
    };
    if seconds > (1 << 32) {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            json!(seconds),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    if seconds < MIN_SECONDS {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            json!(seconds),
            "may not specify a duration less than 10 minutes",
        ));
    }
    let audiences: Vec<String> = body
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![ISSUER.to_owned()]);
    let now = SystemTime::now();
    let expires = now + Duration::from_secs(seconds);
    let uid = sa
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut private = json!({"namespace": ns, "serviceaccount": {"name": name, "uid": uid}});
    // A token bound to a pod (or secret) lasts only as long as it does.
    if let Some(bound) = body
        .pointer("/spec/boundObjectRef")
        .filter(|b| !b.is_null())
    {
        let kind = bound["kind"].as_str().unwrap_or_default();
        let plural = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            _ => {
                return Err(invalid(
                    name,
                    "spec.boundObjectRef.kind",
                    json!(kind),
                    "supported values: \"Pod\", \"Secret\"",
                ))
            }
        };
        let bound_name = bound["name"].as_str().unwrap_or_default();
        let object = store
            .get(&keys::object("", plural, Some(ns), bound_name))
            .await
            .map_err(|e| ApiError::from_store(e, subject))?
            .ok_or_else(|| {
                ApiError::not_found(drover_apiserver::error::Subject {
                    group: "",
                    resource: plural,
                    name: bound_name,
                })
            })?;
        let object: Value = serde_json::from_slice(&object.value).unwrap_or_default();
        let object_uid = object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(want) = bound["uid"].as_str().filter(|u| !u.is_empty()) {
            if want != object_uid {
                return Err(ApiError::conflict_because(
                    drover_apiserver::error::Subject {
                        group: "",
                        resource: plural,
                        name: bound_name,
                    },
                    &format!("the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"),
                ));
            }
        }
        private[kind.to_lowercase()] = json!({"name": bound_name, "uid": object_uid});
    }
    let claims = json!({
        "aud": audiences, "exp": unix(expires), "iat": unix(now), "nbf": unix(now),
        "iss": ISSUER, "jti": meta::new_uid(), "sub": format!("system:serviceaccount:{ns}:{name}"),
        "kubernetes.io": private,
    });
    let token = signer.sign(&claims)?;
    let mut spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    spec["expirationSeconds"] = json!(seconds);
    spec["audiences"] = json!(audiences);
    Ok(json!({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": meta::rfc3339(expires)},
    }))
}

/// Who a token authenticates, for `audiences` (`None`: the API server's
/// own, the issuer), and which of them it is for. `None` if it is not one
/// of this cluster's valid tokens.
pub(crate) async fn authenticate(
    store: &Store,
    signer: &Signer,
    token: &str,
    audiences: Option<&[String]>,
) -> Option<(UserInfo, Vec<String>)> {
    if token.len() > 8192 || token.matches('.').count() != 2 {
        return None;
    }
    let claims = signer.verify(token)?;
    if claims["iss"] != ISSUER {
        return None;
    }
    let now = unix(SystemTime::now());
    let exp = claims["exp"].as_u64()?;
    let nbf = claims["nbf"].as_u64().unwrap_or(0);
    if now >= exp || now + 60 < nbf {
        return None;
    }
    let token_audiences: Vec<String> = match &claims["aud"] {
        Value::String(a) => vec![a.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => return None,
    };
    let default = [ISSUER.to_owned()];
    let wanted = audiences.unwrap_or(&default);
    let matched: Vec<String> = wanted
        .iter()
        .filter(|a| token_audiences.contains(a))
        .cloned()
        .collect();
    if matched.is_empty() {
        return None;
    }
    let private = &claims["kubernetes.io"];
    let ns = private["namespace"].as_str()?;
    let name = private.pointer("/serviceaccount/name")?.as_str()?;
    let uid = private.pointer("/serviceaccount/uid")?.as_str()?;
    // The ServiceAccount (and any object the token is bound to) must be
    // the one it was issued for.
    let live_uid = |plural: &'static str, object: &str| {
        let key = keys::object("", plural, Some(ns), object);
        async move {
            let kv = store.get(&key).await.ok()??;
            let v: Value = serde_json::from_slice(&kv.value).ok()?;
            v.pointer("/metadata/uid")
                .and_then(Value::as_str)
                .map(str::to_owned)
        }
    };
    if live_uid("serviceaccounts", name).await.as_deref() != Some(uid) {
        return None;
    }
    let mut extra = std::collections::BTreeMap::new();
    if let Some(jti) = claims["jti"].as_str() {
        extra.insert(
            "authentication.kubernetes.io/credential-id".to_owned(),
            vec![format!("JTI={jti}")],
        );
    }
    for (kind, plural) in [("pod", "pods"), ("secret", "secrets")] {
        if let Some(bound) = private.get(kind) {
            let (bound_name, bound_uid) = (bound["name"].as_str()?, bound["uid"].as_str()?);
            if live_uid(plural, bound_name).await.as_deref() != Some(bound_uid) {
                return None;
            }
            extra.insert(
                format!("authentication.kubernetes.io/{kind}-name"),
                vec![bound_name.to_owned()],
            );
            extra.insert(
                format!("authentication.kubernetes.io/{kind}-uid"),
                vec![bound_uid.to_owned()],
            );
        }
    }
    Some((
        UserInfo {
            name: format!("system:serviceaccount:{ns}:{name}"),
            uid: uid.to_owned(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
            extra,
        },
        matched,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &format!("sqlite://{}/s.db", dir.path().display()),
            Default::default(),
        )
        .await
        .unwrap();
        (dir, store)
    }

    async fn put_sa(store: &Store, uid: &str) {
        let key = keys::object("", "serviceaccounts", Some("default"), "robot");
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "robot", "namespace": "default", "uid": uid}});
        if let Some(kv) = store.get(&key).await.unwrap() {
            store.delete(&key, Some(kv.mod_revision)).await.unwrap();
        }
        store.create(&key, sa.to_string()).await.unwrap();
    }

    #[tokio::test]
    async fn a_token_holds_while_its_account_does_and_only_for_its_audiences() {
        let (_dir, store) = store().await;
        let signer = Signer::load_or_create(&store).await.unwrap();
        put_sa(&store, "u-1").await;
        let issued = request(&store, &signer, "default", "robot", json!({"spec": {}}))
            .await
            .unwrap();
        let token = issued["status"]["token"].as_str().unwrap().to_owned();
        let (user, aud) = authenticate(&store, &signer, &token, None).await.unwrap();
        assert_eq!(user.name, "system:serviceaccount:default:robot");
        assert_eq!(aud, vec![ISSUER.to_owned()]);
        assert!(
            authenticate(&store, &signer, &token, Some(&["vault".to_owned()]))
                .await
                .is_none(),
            "a token is good only for its audiences"
        );

        // The same key after a restart; a tampered token is refused.
        let again = Signer::load_or_create(&store).await.unwrap();
        assert!(authenticate(&store, &again, &token, None).await.is_some());
        let mut forged = token.clone();
        forged.insert(token.find('.').unwrap() + 3, 'x');
        assert!(authenticate(&store, &again, &forged, None).await.is_none());

        // A re-created account does not honour the old one's tokens.
        put_sa(&store, "u-2").await;
        assert!(authenticate(&store, &signer, &token, None).await.is_none());
        let jwks = signer.jwks();
        assert_eq!(jwks["keys"][0]["alg"], "ES256");
    }
}
