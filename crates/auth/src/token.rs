//! API tokens: `token-xxxxx:SECRET`. The secret is 54 characters from
//! Kubernetes' name alphabet (over 256 bits), shown once; only its SHA-256
//! is stored, under `/drover/tokens/{name}` beside the user, expiry and
//! cluster scope. The Token object (the API's view) never holds the hash.

use std::time::{Duration, SystemTime};

use drover_core::{api, keys, meta};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Token names start with this.
pub const PREFIX: &str = "token-";
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const SECRET_LEN: usize = 54;

/// What is stored for a token, apart from the API object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// Hex SHA-256 of the secret.
    pub hash: String,
    /// The user the token acts as.
    pub user_name: String,
    /// RFC 3339; absent means no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The only cluster the token works for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
}

/// How the description of a token made for a downloaded kubeconfig starts
/// (`kubeconfig for cluster NAME`).
pub const KUBECONFIG_DESCRIPTION: &str = "kubeconfig for cluster ";

/// The store key of a token's record.
pub fn record_key(name: &str) -> String {
    format!("/drover/tokens/{name}")
}

/// The store key of a Token object.
pub fn object_key(name: &str) -> String {
    keys::object(api::GROUP, "tokens", None, name)
}

/// Hex SHA-256 of a secret. Secrets carry 256 bits of randomness, so a fast
/// hash is enough; a slow one would only slow every request.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` matches `hash`, in constant time.
pub fn secret_matches(secret: &str, hash: &str) -> bool {
    hash_secret(secret).as_bytes().ct_eq(hash.as_bytes()).into()
}

/// Split `token-xxxxx:SECRET`; `None` if it is not of that shape.
pub fn parse_bearer(bearer: &str) -> Option<(&str, &str)> {
    let (name, secret) = bearer.split_once(':')?;
    let valid_name = name.starts_with(PREFIX)
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (valid_name && !secret.is_empty() && secret.len() <= 128).then_some((name, secret))
}

/// A freshly made token: its object, its record and the bearer string.
pub struct Minted {
    /// `token-xxxxx`.
    pub name: String,
    /// `token-xxxxx:SECRET`, to show once.
    pub bearer: String,
    /// The Token object to store.
    pub object: Value,
    /// The record to store under [`record_key`].
    pub record: TokenRecord,
}

impl Minted {
    /// The record, as stored under [`record_key`].
    pub fn record_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.record).expect("a token record is plain JSON")
    }

    /// The Token object and its record under their keys, to be written in
    /// one transaction.
    pub fn store_items(&self) -> [(String, Vec<u8>); 2] {
        [
            (object_key(&self.name), self.object.to_string().into_bytes()),
            (record_key(&self.name), self.record_bytes()),
        ]
    }

    /// [`Self::store_items`] as the creates of a transaction.
    pub fn store_ops(&self) -> Vec<drover_store::Op> {
        self.store_items()
            .into_iter()
            .map(|(k, v)| drover_store::Op::create(k, v))
            .collect()
    }
}

/// The steps that delete every token of `user`, objects and records.
pub async fn revoke_all_ops(
    store: &drover_store::Store,
    user: &str,
) -> Result<Vec<drover_store::Op>, drover_store::StoreError> {
    let list = store
        .list(&drover_store::ListOptions {
            prefix: keys::prefix(api::GROUP, "tokens", None),
            ..Default::default()
        })
        .await?;
    let mut ops = Vec::new();
    for kv in list.items {
        let obj: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        if obj.pointer("/spec/userName").and_then(Value::as_str) != Some(user) {
            continue;
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        if let Some(record) = store.get(&record_key(name)).await? {
            ops.push(drover_store::Op::delete(record.key, record.mod_revision));
        }
        ops.push(drover_store::Op::delete(kv.key, kv.mod_revision));
    }
    Ok(ops)
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("name", &self.name)
            .field("bearer", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// Make a token for `user`. `ttl` of `None` or zero means `max_ttl`; a larger
/// one is cut to `max_ttl` (zero `max_ttl`: no limit).
pub fn mint(
    user: &str,
    description: Option<&str>,
    cluster: Option<&str>,
    ttl: Option<Duration>,
    max_ttl: Duration,
) -> Minted {
    let name = format!("{PREFIX}{}", drover_core::names::random_suffix(5));
    mint_named(&name, user, description, cluster, ttl, max_ttl)
}

/// [`mint`] with a given token name.
pub fn mint_named(
    name: &str,
    user: &str,
    description: Option<&str>,
    cluster: Option<&str>,
    ttl: Option<Duration>,
    max_ttl: Duration,
) -> Minted {
    let name = name.to_owned();
    let mut rng = rand::rngs::OsRng;
    let secret: String = (0..SECRET_LEN)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    let ttl = match ttl.filter(|t| !t.is_zero()) {
        Some(t) if max_ttl.is_zero() => Some(t),
        Some(t) => Some(t.min(max_ttl)),
        None => (!max_ttl.is_zero()).then_some(max_ttl),
    };
    // Lifetimes are capped at 100 years, so no addition can overflow.
    let ttl = ttl.map(|t| t.min(Duration::from_secs(100 * 365 * 86_400)));
    let expires_at = ttl.map(|t| meta::rfc3339(SystemTime::now() + t));
    let mut spec = json!({"userName": user});
    if let Some(d) = description {
        spec["description"] = json!(d);
    }
    if let Some(c) = cluster {
        spec["clusterName"] = json!(c);
    }
    if let Some(t) = ttl {
        spec["ttlSeconds"] = json!(t.as_secs());
    }
    let mut status = json!({});
    if let Some(e) = &expires_at {
        status["expiresAt"] = json!(e);
    }
    let object = json!({
        "apiVersion": api::API_VERSION,
        "kind": "Token",
        "metadata": {
            "name": name,
            "uid": meta::new_uid(),
            "creationTimestamp": meta::now_rfc3339(),
            "generation": 1,
            "labels": {"drover.io/user": user},
        },
        "spec": spec,
        "status": status,
    });
    let record = TokenRecord {
        hash: hash_secret(&secret),
        user_name: user.to_owned(),
        expires_at,
        cluster_name: cluster.map(str::to_owned),
    };
    Minted {
        bearer: format!("{name}:{secret}"),
        name,
        object,
        record,
    }
}

/// Whether an RFC 3339 expiry has passed.
pub fn expired(expires_at: Option<&str>) -> bool {
    match expires_at {
        None => false,
        Some(t) => meta::parse_rfc3339(t).is_none_or(|at| at <= SystemTime::now()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens() {
        let m = mint(
            "u-abcde",
            Some("ci"),
            None,
            Some(Duration::from_secs(60)),
            Duration::from_secs(3600),
        );
        let (name, secret) = parse_bearer(&m.bearer).unwrap();
        assert_eq!(name, m.name);
        assert_eq!(secret.len(), SECRET_LEN);
        assert!((SECRET_LEN as f64) * (ALPHABET.len() as f64).log2() >= 256.0);
        assert!(secret_matches(secret, &m.record.hash));
        assert!(!secret_matches("x", &m.record.hash));
        assert!(
            !m.object.to_string().contains(secret),
            "the secret is not in the object"
        );
        assert!(
            !m.object.to_string().contains(&m.record.hash),
            "nor its hash"
        );
        assert_eq!(m.object["spec"]["ttlSeconds"], 60);
        let capped = mint(
            "u",
            None,
            None,
            Some(Duration::from_secs(99_999)),
            Duration::from_secs(3600),
        );
        assert_eq!(capped.object["spec"]["ttlSeconds"], 3600);
        assert!(!expired(capped.record.expires_at.as_deref()));
        assert!(expired(Some("2000-01-01T00:00:00Z")));
        for bad in ["", "nocolon", "user-x:secret", "token-x:", "token-X:s"] {
            assert!(parse_bearer(bad).is_none(), "{bad}");
        }
    }
}
