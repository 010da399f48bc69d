//! The first start: the built-in roles, and user `admin` with a password.
//!
//! The admin's User object, password hash, login-name index entry and
//! `admin` global role binding are created in one store transaction, so a
//! crash leaves all or none; a restart, or a second replica starting at the
//! same time, finds them and changes nothing.

use drover_core::{api, keys, meta};
use drover_store::{Store, StoreError};
use serde_json::{json, Value};

use crate::login::username_key;
use crate::policy::{builtin_global_roles, builtin_role_templates};
use crate::{password, AuthError};

/// The bootstrap user's name.
pub const ADMIN: &str = "admin";

/// What [`ensure_admin`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// The admin existed already; nothing changed.
    Existing,
    /// Created with the given password.
    CreatedWithGivenPassword,
    /// Created with this generated password, to be shown once.
    CreatedWithGeneratedPassword(String),
}

/// A new management object of `kind` named `name` with `spec`, as the
/// built-ins are stored.
pub fn object(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": api::API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "uid": meta::new_uid(), "creationTimestamp": meta::now_rfc3339(), "generation": 1},
        "spec": spec,
    })
}

/// Create or refresh the built-in global roles and role templates, so an
/// upgrade's definitions take effect. Custom roles are not touched.
pub async fn ensure_builtin_roles(store: &Store) -> Result<(), AuthError> {
    let mut wanted = Vec::new();
    for (name, display, rules, new_user_default) in builtin_global_roles() {
        let spec = json!({"displayName": display, "rules": rules, "newUserDefault": new_user_default, "builtin": true});
        wanted.push((
            keys::object(api::GROUP, "globalroles", None, name),
            object("GlobalRole", name, spec),
        ));
    }
    for (name, context, display, rules) in builtin_role_templates() {
        let spec = json!({"displayName": display, "context": context, "rules": rules, "roleTemplateNames": [], "builtin": true});
        wanted.push((
            keys::object(api::GROUP, "roletemplates", None, name),
            object("RoleTemplate", name, spec),
        ));
    }
    for (key, obj) in wanted {
        ensure_builtin(store, &key, &obj).await?;
    }
    Ok(())
}

/// Create a built-in object at `key`, or bring its spec up to this
/// version's definition (the rest of it, and objects that are not built
/// in, are left alone).
pub async fn ensure_builtin(store: &Store, key: &str, obj: &Value) -> Result<(), StoreError> {
    loop {
        match store.get(key).await? {
            None => match store.create(key, obj.to_string()).await {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => return Ok(()),
                Err(e) => return Err(e),
            },
            Some(kv) => {
                let mut current: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
                if current.get("spec") == obj.get("spec") {
                    return Ok(());
                }
                current["spec"] = obj["spec"].clone();
                match store
                    .update(key, current.to_string(), kv.mod_revision)
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Create the `admin` user unless it exists. `given` is the operator's
/// `DROVER_BOOTSTRAP_PASSWORD`; without it a random password is generated.
pub async fn ensure_admin(store: &Store, given: Option<&str>) -> Result<Bootstrap, AuthError> {
    let user_key = keys::object(api::GROUP, "users", None, ADMIN);
    if store.get(&user_key).await?.is_some() {
        return Ok(Bootstrap::Existing);
    }
    let (password, generated) = match given {
        Some(p) => {
            password::check_rules(ADMIN, p)?;
            (p.to_owned(), false)
        }
        None => (password::generate(), true),
    };
    let hash = password::hash(&password)?;
    let mut user = object(
        "User",
        ADMIN,
        json!({"username": ADMIN, "displayName": "Default Admin", "enabled": true, "mustChangePassword": false}),
    );
    user["metadata"]["annotations"] = json!({"drover.io/bootstrap": "true"});
    let binding = object(
        "GlobalRoleBinding",
        "grb-admin-admin",
        json!({"userName": ADMIN, "globalRoleName": "admin"}),
    );
    let records = [
        (keys::password_hash(ADMIN), hash.into_bytes()),
        (username_key(ADMIN), ADMIN.as_bytes().to_vec()),
        (
            keys::object(api::GROUP, "globalrolebindings", None, "grb-admin-admin"),
            binding.to_string().into_bytes(),
        ),
        (user_key, user.to_string().into_bytes()),
    ];
    match store.create_all(&records).await {
        Ok(_) if generated => Ok(Bootstrap::CreatedWithGeneratedPassword(password)),
        Ok(_) => Ok(Bootstrap::CreatedWithGivenPassword),
        Err(StoreError::AlreadyExists(_)) => Ok(Bootstrap::Existing),
        Err(e) => Err(e.into()),
    }
}
