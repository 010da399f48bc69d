//! Users from providers: stable principal ids, the Drover User each is
//! linked to, and the groups each was last found in.
//!
//! - A principal id names a provider's user or group for good:
//!   `ldap_user://<dn>`, `activedirectory_group://<dn>`, `oidc_user://<sub>`,
//!   `oidc_group://<name>`. The provider name is part of it, so two
//!   providers' users of the same login name never share an account.
//! - `/drover/principals/{sha256 of the id}` holds the Drover User's name.
//!   A principal's first login creates that User (`u-xxxxx`, with
//!   `spec.principalIds`) and the default global roles' bindings, in one
//!   transaction with the link.
//! - `/drover/usergroups/{user}` ([`Membership`]) holds the provider, the
//!   principal and its group principal ids as last read from the provider
//!   (at login, and on the refresh schedule). Token checks read it: the
//!   groups become the request's groups, and a membership marked
//!   `disabled`, or a provider disabled, refuses the token.

use drover_core::{api, keys, meta};
use drover_store::{KeyValue, ListOptions, Op, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::authn::user_key;
use crate::AuthError;

/// The prefix of principal → user links.
pub const LINKS: &str = "/drover/principals/";
/// The prefix of users' provider memberships.
pub const MEMBERSHIPS: &str = "/drover/usergroups/";

/// The providers Drover knows, by AuthConfig name.
pub const PROVIDERS: [&str; 3] = ["ldap", "activedirectory", "oidc"];

/// A user principal id of `provider`.
pub fn user_id(provider: &str, id: &str) -> String {
    format!("{provider}_user://{id}")
}

/// A group principal id of `provider`.
pub fn group_id(provider: &str, id: &str) -> String {
    format!("{provider}_group://{id}")
}

/// `(provider, "user" | "group", id)` of a principal id.
pub fn parse(principal: &str) -> Option<(&str, &str, &str)> {
    let (head, id) = principal.split_once("://")?;
    let (provider, kind) = head.rsplit_once('_')?;
    (PROVIDERS.contains(&provider) && matches!(kind, "user" | "group") && !id.is_empty())
        .then_some((provider, kind, id))
}

/// The store key linking a principal to its Drover User.
pub fn link_key(principal: &str) -> String {
    format!(
        "{LINKS}{}",
        hex::encode(Sha256::digest(principal.as_bytes()))
    )
}

/// The store key of a user's provider membership.
pub fn membership_key(user: &str) -> String {
    format!("{MEMBERSHIPS}{user}")
}

/// A name from a provider as Drover keeps and shows it: control
/// characters (terminal escapes included) dropped, at most 256 characters.
pub fn printable(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(256).collect()
}

/// Who someone is at a provider, as a login or a refresh found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The AuthConfig's name.
    pub provider: String,
    /// The user principal id.
    pub id: String,
    /// The login name (shown as the User's username).
    pub login: String,
    /// The name people see.
    pub display_name: Option<String>,
    /// Group principal ids, sorted.
    pub groups: Vec<String>,
    /// The OIDC issuer that vouched for the user (OIDC subjects are unique
    /// per issuer only).
    pub issuer: Option<String>,
}

/// What is kept of a provider user's standing, under [`membership_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    /// The AuthConfig's name.
    pub provider: String,
    /// The user principal id.
    pub principal: String,
    /// Group principal ids, sorted.
    pub groups: Vec<String>,
    /// When this record was last written: a login, or a refresh that found
    /// a change (RFC 3339).
    pub refreshed_at: String,
    /// The provider no longer knows the user, or says they are disabled.
    #[serde(default)]
    pub disabled: bool,
    /// The OIDC issuer that vouched for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

impl Membership {
    /// Whether `next` says something new (the write time aside).
    pub fn differs(&self, next: &Membership) -> bool {
        self.groups != next.groups || self.disabled != next.disabled || self.issuer != next.issuer
    }
}

/// Read a user's membership (`None` for local users).
pub async fn membership(
    store: &Store,
    user: &str,
) -> Result<Option<(Membership, KeyValue)>, AuthError> {
    let Some(kv) = store.get(&membership_key(user)).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&kv.value).ok().map(|m| (m, kv)))
}

/// The write that records `membership` for `user` over what is there.
pub fn write_membership(user: &str, membership: &Membership, current: Option<&KeyValue>) -> Op {
    let value = serde_json::to_vec(membership).expect("JSON");
    match current {
        Some(kv) => Op::update(membership_key(user), value, kv.mod_revision),
        None => Op::create(membership_key(user), value),
    }
}

/// The Drover User a principal is linked to, with its stored form.
pub async fn linked_user(store: &Store, principal: &str) -> Result<Option<KeyValue>, AuthError> {
    let Some(link) = store.get(&link_key(principal)).await? else {
        return Ok(None);
    };
    let user = String::from_utf8_lossy(&link.value).into_owned();
    let Some(kv) = store.get(&user_key(&user)).await? else {
        return Ok(None);
    };
    let obj: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
    let linked = obj
        .pointer("/spec/principalIds")
        .and_then(Value::as_array)
        .is_some_and(|ids| ids.iter().any(|i| i == principal));
    Ok(linked.then_some(kv))
}

/// The steps that create a User for `principal`, its link, and the default
/// global roles' bindings (returns the new user's name and the ops). The
/// link's create fails the transaction if another login linked it first.
pub async fn new_user_ops(
    store: &Store,
    principal: &Principal,
) -> Result<(String, Vec<Op>), AuthError> {
    let name = drover_core::names::generate("u-");
    let mut spec = json!({
        "username": principal.login,
        "enabled": true,
        "mustChangePassword": false,
        "principalIds": [principal.id],
    });
    if let Some(d) = &principal.display_name {
        spec["displayName"] = json!(d);
    }
    let user = crate::bootstrap::object("User", &name, spec);
    let mut ops = vec![
        Op::create(user_key(&name), user.to_string()),
        // A link left by a user that is gone is replaced.
        match store.get(&link_key(&principal.id)).await? {
            Some(old) => Op::update(link_key(&principal.id), name.clone(), old.mod_revision),
            None => Op::create(link_key(&principal.id), name.clone()),
        },
    ];
    let roles = store
        .list(&ListOptions {
            prefix: keys::prefix(api::GROUP, "globalroles", None),
            ..Default::default()
        })
        .await?;
    for role in roles.items {
        let obj: Value = serde_json::from_slice(&role.value).unwrap_or_default();
        if obj.pointer("/spec/newUserDefault") != Some(&Value::Bool(true)) {
            continue;
        }
        let role_name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let grb = drover_core::names::generate("grb-");
        let binding = crate::bootstrap::object(
            "GlobalRoleBinding",
            &grb,
            json!({"userName": name, "globalRoleName": role_name}),
        );
        ops.push(Op::live(&role));
        ops.push(Op::create(
            keys::object(api::GROUP, "globalrolebindings", None, &grb),
            binding.to_string(),
        ));
    }
    Ok((name, ops))
}

/// The User for a principal that just logged in: the linked one (its
/// display name kept current), or a new one. Returns the user's name and
/// the steps to commit with the login's token (which hold only while the
/// User is as read); `None` when an admin disabled the linked User.
pub async fn user_for_login(
    store: &Store,
    principal: &Principal,
) -> Result<Option<(String, Vec<Op>)>, AuthError> {
    let Some(kv) = linked_user(store, &principal.id).await? else {
        return new_user_ops(store, principal).await.map(Some);
    };
    let mut obj: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
    if obj.pointer("/spec/enabled") == Some(&Value::Bool(false)) {
        return Ok(None);
    }
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The login and display names as the provider has them now (a User
    // made by a binding before the first login has a guessed login name).
    let before = obj.clone();
    obj["spec"]["username"] = json!(principal.login);
    if let Some(d) = &principal.display_name {
        obj["spec"]["displayName"] = json!(d);
    }
    if obj != before {
        return Ok(Some((
            name,
            vec![Op::update(kv.key.clone(), obj.to_string(), kv.mod_revision)],
        )));
    }
    Ok(Some((name, vec![Op::live(&kv)])))
}

/// A fresh membership for a principal found just now.
pub fn found(principal: &Principal) -> Membership {
    Membership {
        provider: principal.provider.clone(),
        principal: principal.id.clone(),
        groups: principal.groups.clone(),
        refreshed_at: meta::now_rfc3339(),
        disabled: false,
        issuer: principal.issuer.clone(),
    }
}

/// Every provider user's membership, with the user's name.
pub async fn all_memberships(store: &Store) -> Result<Vec<(String, Membership)>, AuthError> {
    let list = store
        .list(&ListOptions {
            prefix: MEMBERSHIPS.to_owned(),
            ..Default::default()
        })
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|kv| {
            let user = kv.key.strip_prefix(MEMBERSHIPS)?.to_owned();
            let m: Membership = serde_json::from_slice(&kv.value).ok()?;
            Some((user, m))
        })
        .collect())
}

/// Whether an error is a lost race with another writer (try again).
pub fn raced(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Conflict { .. } | StoreError::AlreadyExists(_) | StoreError::NotFound(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_ids_parse() {
        assert_eq!(
            parse("ldap_user://uid=a,dc=x"),
            Some(("ldap", "user", "uid=a,dc=x"))
        );
        assert_eq!(
            parse("activedirectory_group://cn=g"),
            Some(("activedirectory", "group", "cn=g"))
        );
        assert_eq!(parse("oidc_user://123"), Some(("oidc", "user", "123")));
        assert_eq!(parse("local_user://x"), None);
        assert_eq!(parse("ldap_user://"), None);
        assert_eq!(parse("system:authenticated"), None);
        assert_ne!(link_key("ldap_user://a"), link_key("oidc_user://a"));
    }
}
