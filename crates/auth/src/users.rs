//! Setting a password: `POST …/users/{name}/password` with
//! `{"newPassword", "currentPassword"?}`. Changing your own password needs
//! the current one; changing someone else's needs `update` on
//! `users/password` for them (admins), and every right they hold (or
//! `impersonate` on them): whoever sets a password can act as its user.

use drover_apiserver::{ApiError, Authorizer};

use crate::policy::RbacAuthorizer;
use drover_core::{api, keys};
use drover_rbac::{Attributes, UserInfo};
use drover_store::{Op, Store};
use serde::Deserialize;
use serde_json::Value;

use crate::authn::user_key;
use crate::password;

/// The request body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordChange {
    /// The new password.
    pub new_password: String,
    /// The current one (required when changing your own).
    #[serde(default)]
    pub current_password: Option<String>,
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordChange { [REDACTED] }")
    }
}

/// Set `target`'s password on behalf of `caller`.
pub async fn set_password(
    store: &Store,
    authz: &RbacAuthorizer,
    caller: &UserInfo,
    target: &str,
    change: &PasswordChange,
) -> Result<(), ApiError> {
    let subject = drover_apiserver::error::Subject {
        group: api::GROUP,
        resource: "users",
        name: target,
    };
    let own = caller.name == target;
    if !own {
        let attrs = Attributes::resource("update", api::GROUP, "users", "", target)
            .on_subresource("password");
        if !authz.authorize(caller, &attrs).await? {
            return Err(ApiError::forbidden(
                &caller.name,
                "update",
                subject,
                "",
                "password",
            ));
        }
        crate::kinds::may_act_as(authz, caller, target, "the password").await?;
    }
    let kv = store
        .get(&user_key(target))
        .await
        .map_err(|e| ApiError::from_store(e, subject))?
        .ok_or_else(|| ApiError::not_found(subject))?;
    let mut user: Value =
        serde_json::from_slice(&kv.value).map_err(|_| ApiError::internal("unreadable user"))?;
    let username = user
        .pointer("/spec/username")
        .and_then(Value::as_str)
        .unwrap_or(target)
        .to_owned();
    let hash_key = keys::password_hash(target);
    let current_hash = store
        .get(&hash_key)
        .await
        .map_err(|e| ApiError::from_store(e, subject))?;
    if own {
        let given = change.current_password.as_deref().unwrap_or_default();
        let ok = match &current_hash {
            Some(h) => {
                password::verify_async(
                    given.to_owned(),
                    String::from_utf8_lossy(&h.value).into_owned(),
                )
                .await
            }
            None => false,
        };
        if !ok {
            return Err(ApiError::forbidden_because(
                "the current password is wrong or missing (currentPassword)",
            ));
        }
    }
    password::check_rules(&username, &change.new_password).map_err(|e| {
        ApiError::invalid(
            "User",
            api::GROUP,
            target,
            &[drover_apiserver::FieldError::invalid(
                "newPassword",
                "[redacted]",
                e.to_string(),
            )],
        )
    })?;
    let hash = password::hash_async(change.new_password.clone())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    // The hash, and the end of a forced change, in one transaction; it
    // fails if the user was replaced or the hash changed meanwhile.
    let mut ops = vec![match current_hash {
        Some(h) => Op::update(hash_key, hash.into_bytes(), h.mod_revision),
        None => Op::create(hash_key, hash.into_bytes()),
    }];
    if own && user.pointer("/spec/mustChangePassword") == Some(&Value::Bool(true)) {
        user["spec"]["mustChangePassword"] = Value::Bool(false);
        ops.push(Op::update(
            user_key(target),
            serde_json::to_vec(&user).expect("JSON"),
            kv.mod_revision,
        ));
    } else {
        ops.push(Op::live(&kv));
    }
    store.txn(&ops).await.map_err(|e| match e {
        drover_store::StoreError::Conflict { .. }
        | drover_store::StoreError::NotFound(_)
        | drover_store::StoreError::AlreadyExists(_) => {
            ApiError::conflict_because(subject, "the user changed meanwhile; try again")
        }
        other => ApiError::from_store(other, subject),
    })?;
    tracing::info!(user = %target, by = %caller.name, "password changed");
    Ok(())
}
