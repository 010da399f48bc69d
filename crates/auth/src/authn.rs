//! Authentication of API requests: a bearer token becomes an [`Identity`].

use drover_core::{api, keys};
use drover_rbac::UserInfo;
use drover_store::Store;
use serde_json::Value;

use crate::token::{self, TokenRecord};
use crate::AuthError;

/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";

/// Who a request comes from, and through which token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user.
    pub user: UserInfo,
    /// The token's name.
    pub token: String,
    /// The only cluster the token may reach, if scoped.
    pub cluster_scope: Option<String>,
    /// The user must change their password first.
    pub must_change_password: bool,
}

/// Why a token was refused (all answer 401; the reason is for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not `token-xxxxx:SECRET`.
    Malformed,
    /// No such token, or a wrong secret.
    Unknown,
    /// Past its expiry.
    Expired,
    /// The user is gone or disabled.
    UserDisabled,
}

/// The store key of a User object.
pub fn user_key(name: &str) -> String {
    keys::object(api::GROUP, "users", None, name)
}

/// Check a bearer token against the store.
pub async fn authenticate(
    store: &Store,
    bearer: &str,
) -> Result<Result<Identity, Refusal>, AuthError> {
    let Some((name, secret)) = token::parse_bearer(bearer) else {
        return Ok(Err(Refusal::Malformed));
    };
    let Some(kv) = store.get(&token::record_key(name)).await? else {
        // Spend the time a hash comparison would take.
        let _ = token::secret_matches(secret, &"0".repeat(64));
        return Ok(Err(Refusal::Unknown));
    };
    let record: TokenRecord = match serde_json::from_slice(&kv.value) {
        Ok(r) => r,
        Err(_) => return Ok(Err(Refusal::Unknown)),
    };
    if !token::secret_matches(secret, &record.hash) {
        return Ok(Err(Refusal::Unknown));
    }
    // Deleting the Token object revokes it at once.
    if store.get(&token::object_key(name)).await?.is_none() {
        return Ok(Err(Refusal::Unknown));
    }
    if token::expired(record.expires_at.as_deref()) {
        return Ok(Err(Refusal::Expired));
    }
    let Some(user_kv) = store.get(&user_key(&record.user_name)).await? else {
        return Ok(Err(Refusal::UserDisabled));
    };
    let user: Value = serde_json::from_slice(&user_kv.value).unwrap_or_default();
    if user.pointer("/spec/enabled") == Some(&Value::Bool(false)) {
        return Ok(Err(Refusal::UserDisabled));
    }
    let uid = user
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok(Ok(Identity {
        user: UserInfo {
            name: record.user_name,
            uid,
            groups: vec![AUTHENTICATED.to_owned()],
            extra: Default::default(),
        },
        token: name.to_owned(),
        cluster_scope: record.cluster_name,
        must_change_password: user.pointer("/spec/mustChangePassword") == Some(&Value::Bool(true)),
    }))
}
