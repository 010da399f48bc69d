//! The first start: create user `admin` with a password, once.
//!
//! The password hash and the User object are created together in one store
//! transaction, so a crash leaves either both or neither; a restart, or a
//! second replica starting at the same time, finds them and changes nothing.

use drover_core::{keys, meta};
use drover_store::{Store, StoreError};

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

/// Create the `admin` user unless it exists. `given` is the operator's
/// `DROVER_BOOTSTRAP_PASSWORD`; without it a random password is generated.
pub async fn ensure_admin(store: &Store, given: Option<&str>) -> Result<Bootstrap, AuthError> {
    let user_key = keys::object("management.drover.io", "users", None, ADMIN);
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
    let user = serde_json::json!({
        "apiVersion": "management.drover.io/v1",
        "kind": "User",
        "metadata": {
            "name": ADMIN,
            "uid": meta::new_uid(),
            "creationTimestamp": meta::now_rfc3339(),
            "annotations": {"drover.io/bootstrap": "true"},
        },
        "spec": {
            "username": ADMIN,
            "displayName": "Default Admin",
            "enabled": true,
            "mustChangePassword": false,
        },
    });
    let records = [
        (keys::password_hash(ADMIN), hash.into_bytes()),
        (user_key, user.to_string().into_bytes()),
    ];
    match store.create_all(&records).await {
        Ok(_) if generated => Ok(Bootstrap::CreatedWithGeneratedPassword(password)),
        Ok(_) => Ok(Bootstrap::CreatedWithGivenPassword),
        Err(StoreError::AlreadyExists(_)) => Ok(Bootstrap::Existing),
        Err(e) => Err(e.into()),
    }
}
