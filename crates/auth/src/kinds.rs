//! The identity kinds of the management API and how they behave: User,
//! Token, GlobalRole, GlobalRoleBinding, RoleTemplate,
//! ClusterRoleTemplateBinding and ProjectRoleTemplateBinding.
//!
//! No write widens anyone's rights beyond its author's, as kube-apiserver's
//! RBAC escalation check has it:
//! - a GlobalRole or RoleTemplate may carry only rules its author holds
//!   (for a template, in every cluster: a global admin), or the author
//!   needs `escalate` on it;
//! - a binding may grant a role only if its author holds all of its rules
//!   in that scope, or `bind` on it; nobody changes their own global roles;
//! - a new user gets each default global role only if its creator could
//!   bind it;
//! - acting on another user's account (update, delete, password) needs
//!   every right they hold, or `impersonate` on them.
//!
//! Every create and delete commits with its side effects in one store
//! transaction, with the conditions it was checked under (an update writes
//! its one object, on condition of its resourceVersion): a binding names the very role and
//! user that were checked; a deleted user or role takes its bindings (and a
//! user, its tokens, password hash and login name) with it, so nothing
//! comes back to life under a name made again; a create that fails changes
//! nothing.

use std::sync::Arc;
use std::time::Duration;

use drover_apiserver::{
    ApiError, Column, Context, FieldError, KindInfo, Prepared, Registry, Strategy,
};
use drover_core::api::{self, schema_for, RoleContext};
use drover_rbac::{Attributes, PolicyRule, UserInfo};
use drover_store::{KeyValue, ListOptions, Op};
use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::login::username_key;
use crate::policy::{RbacAuthorizer, Snapshot};
use crate::token;

fn info(
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
) -> KindInfo {
    KindInfo {
        group: api::GROUP,
        version: api::VERSION,
        kind,
        plural,
        singular,
        short_names: &[],
        namespaced,
        status: false,
        list_filtered: false,
        name_prefix: None,
        create_only: false,
        streams: &[],
        scale: false,
        actions: &[],
        categories: &[],
    }
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn invalid(kind: &str, obj: &Value, errors: Vec<FieldError>) -> ApiError {
    ApiError::invalid(kind, api::GROUP, str_at(obj, "/metadata/name"), &errors)
}

fn spec_immutable(kind: &'static str, new: &Value, old: &Value) -> Result<(), ApiError> {
    if new.get("spec") != old.get("spec") {
        return Err(invalid(
            kind,
            new,
            vec![FieldError::forbidden("spec", "field is immutable")],
        ));
    }
    Ok(())
}

fn forbidden_escalation(caller: &str, what: &str, missing: &[PolicyRule]) -> ApiError {
    let list: Vec<String> = missing
        .iter()
        .take(5)
        .map(|r| serde_json::to_string(r).unwrap_or_default())
        .collect();
    ApiError::forbidden_because(format!(
        "user {caller:?} cannot grant {what}: it does not hold these permissions itself: {}{}",
        list.join(", "),
        if missing.len() > 5 { " …" } else { "" }
    ))
}

/// Register the identity kinds.
pub fn register(reg: &mut Registry, authz: Arc<RbacAuthorizer>, max_token_ttl: Duration) {
    let mut users = info("User", "users", "user", false);
    users.name_prefix = Some("u-");
    reg.register(
        users,
        Users {
            authz: authz.clone(),
        },
    );

    let mut tokens = info("Token", "tokens", "token", false);
    tokens.name_prefix = Some(token::PREFIX);
    tokens.list_filtered = true;
    tokens.status = true;
    reg.register(
        tokens,
        Tokens {
            max_ttl: max_token_ttl,
        },
    );

    reg.register(
        info("GlobalRole", "globalroles", "globalrole", false),
        GlobalRoles {
            authz: authz.clone(),
        },
    );
    let mut grbs = info(
        "GlobalRoleBinding",
        "globalrolebindings",
        "globalrolebinding",
        false,
    );
    grbs.name_prefix = Some("grb-");
    reg.register(
        grbs,
        GlobalRoleBindings {
            authz: authz.clone(),
        },
    );
    reg.register(
        info("RoleTemplate", "roletemplates", "roletemplate", false),
        RoleTemplates {
            authz: authz.clone(),
        },
    );
    let mut crtbs = info(
        "ClusterRoleTemplateBinding",
        "clusterroletemplatebindings",
        "clusterroletemplatebinding",
        true,
    );
    crtbs.name_prefix = Some("crtb-");
    crtbs.list_filtered = true;
    reg.register(
        crtbs,
        Crtbs {
            authz: authz.clone(),
        },
    );
    let mut prtbs = info(
        "ProjectRoleTemplateBinding",
        "projectroletemplatebindings",
        "projectroletemplatebinding",
        true,
    );
    prtbs.name_prefix = Some("prtb-");
    prtbs.list_filtered = true;
    reg.register(prtbs, Prtbs { authz });
}

/// The store key of a kind's object.
fn key(plural: &str, namespace: Option<&str>, name: &str) -> String {
    drover_core::keys::object(api::GROUP, plural, namespace, name)
}

fn unavailable(_: drover_store::StoreError) -> ApiError {
    ApiError::unavailable("the datastore is unavailable")
}

/// An object read from the store, with what a transaction needs of it.
async fn read(ctx: &Context, key: &str) -> Result<Option<(Value, KeyValue)>, ApiError> {
    let Some(kv) = ctx.store.get(key).await.map_err(unavailable)? else {
        return Ok(None);
    };
    let obj = serde_json::from_slice(&kv.value)
        .map_err(|_| ApiError::internal("an object in the datastore is unreadable"))?;
    Ok(Some((obj, kv)))
}

/// The objects of some kinds whose `spec.{field}` is `value`, read at one
/// revision: a delete for each, and the conditions that nothing was added
/// meanwhile. What lives and dies with a user or a role goes this way, in
/// the same transaction as it.
async fn dependents(
    store: &drover_store::Store,
    plurals: &[&str],
    field: &str,
    value: &str,
) -> Result<Vec<Op>, ApiError> {
    let at = store.revisions().await.map_err(unavailable)?.current;
    let mut ops = Vec::new();
    for plural in plurals {
        let prefix = drover_core::keys::prefix(api::GROUP, plural, None);
        let page = store
            .list(&ListOptions {
                prefix: prefix.clone(),
                revision: Some(at),
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        for kv in page.items {
            let Ok(o) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            if o.pointer(&format!("/spec/{field}")).and_then(Value::as_str) != Some(value) {
                continue;
            }
            ops.push(Op::delete(kv.key.clone(), kv.mod_revision));
            if *plural == "tokens" {
                if let Some(record) = store
                    .get(&token::record_key(str_at(&o, "/metadata/name")))
                    .await
                    .map_err(unavailable)?
                {
                    ops.push(Op::delete(record.key, record.mod_revision));
                }
            }
        }
        ops.push(Op::Unchanged { prefix, since: at });
    }
    Ok(ops)
}

/// Deletes of a key, if it exists (as read now).
async fn delete_if_present(store: &drover_store::Store, key: &str) -> Result<Option<Op>, ApiError> {
    Ok(store
        .get(key)
        .await
        .map_err(unavailable)?
        .map(|kv| Op::delete(kv.key, kv.mod_revision)))
}

/// What names a user besides its object: bindings, tokens (with their
/// records), password hash and login-name index entry.
const USER_DEPENDENTS: &[&str] = &[
    "globalrolebindings",
    "clusterroletemplatebindings",
    "projectroletemplatebindings",
    "tokens",
];

/// Login names: 1–64 of `a-z 0-9 . _ @ -`.
pub fn valid_username(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 64
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_@".contains(&b))
}

/// Acting on another user's account (their password, their User object)
/// is acting as them: it needs every right they hold, or `impersonate` on
/// them.
pub(crate) async fn may_act_as(
    authz: &RbacAuthorizer,
    caller: &UserInfo,
    target: &str,
    what: &str,
) -> Result<(), ApiError> {
    if target == caller.name {
        return Ok(());
    }
    let snapshot = authz.snapshot().await?;
    let target_info = UserInfo {
        name: target.to_owned(),
        groups: vec![crate::authn::AUTHENTICATED.to_owned()],
        ..Default::default()
    };
    let missing = snapshot.rights_missing(caller, &target_info);
    if missing.is_empty() {
        return Ok(());
    }
    let impersonate = Attributes::resource("impersonate", api::GROUP, "users", "", target);
    if drover_apiserver::Authorizer::authorize(authz, caller, &impersonate).await? {
        return Ok(());
    }
    Err(forbidden_escalation(
        &caller.name,
        &format!("{what} of user {target:?}, who holds more rights"),
        &missing,
    ))
}

/// The rules of a global role as stored, with the record that keeps a
/// binding made from them to exactly that role.
async fn global_role_rules(
    ctx: &Context,
    role: &str,
) -> Result<Option<(Vec<PolicyRule>, Op)>, ApiError> {
    let Some((obj, kv)) = read(ctx, &key("globalroles", None, role)).await? else {
        return Ok(None);
    };
    let rules: Vec<PolicyRule> =
        serde_json::from_value(obj.pointer("/spec/rules").cloned().unwrap_or(json!([])))
            .unwrap_or_default();
    Ok(Some((rules, Op::check(kv.key, Some(kv.mod_revision)))))
}

/// Whether the caller may grant a global role with these rules: they hold
/// them all, or `bind` on it. `Err` carries what they lack.
async fn may_grant_global(
    ctx: &Context,
    snapshot: &Snapshot,
    role: &str,
    rules: &[PolicyRule],
) -> Result<Result<(), Vec<PolicyRule>>, ApiError> {
    let missing = snapshot.rules(&ctx.user).covers(None, rules);
    if missing.is_empty() || may(ctx, "bind", "globalroles", role).await? {
        Ok(Ok(()))
    } else {
        Ok(Err(missing))
    }
}

struct Users {
    authz: Arc<RbacAuthorizer>,
}

impl Strategy for Users {
    fn schema(&self) -> Value {
        schema_for::<api::User>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::new("Username", "string", "Login name", "/spec/username"),
            Column::new(
                "Display Name",
                "string",
                "Name people see",
                "/spec/displayName",
            ),
            Column::new(
                "Enabled",
                "boolean",
                "Whether the user may log in",
                "/spec/enabled",
            ),
        ]
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let username = str_at(obj, "/spec/username");
        let principals = obj
            .pointer("/spec/principalIds")
            .filter(|p| p.as_array().is_some_and(|a| !a.is_empty()));
        // A provider's user is linked by the server only; the directory's
        // login names follow its rules, not Drover's.
        if principals
            != old
                .and_then(|o| o.pointer("/spec/principalIds"))
                .filter(|p| p.as_array().is_some_and(|a| !a.is_empty()))
        {
            return vec![FieldError::forbidden(
                "spec.principalIds",
                "set by the server when a provider's user logs in",
            )];
        }
        if principals.is_some() {
            return if username.is_empty() || username.len() > 256 {
                vec![FieldError::invalid(
                    "spec.username",
                    username,
                    "1 to 256 characters",
                )]
            } else {
                Vec::new()
            };
        }
        if username.is_empty() {
            vec![FieldError::required("spec.username", "")]
        } else if !valid_username(username) {
            vec![FieldError::invalid(
                "spec.username",
                username,
                "must be 1 to 64 of lower-case letters, digits, '.', '_', '@' or '-'",
            )]
        } else {
            Vec::new()
        }
    }

    /// Everything here commits with the User or not at all: a create of a
    /// name that exists fails on the User's own key and touches nothing.
    fn prepare_create<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            let name = str_at(obj, "/metadata/name").to_owned();
            let username = str_at(obj, "/spec/username").to_owned();
            if obj.pointer("/spec/enabled").is_none() {
                obj["spec"]["enabled"] = json!(true);
            }
            let mut ops = Vec::new();
            // The login name: taken by a live user, refused; an entry left
            // by a user that is gone is taken over.
            match ctx
                .store
                .get(&username_key(&username))
                .await
                .map_err(unavailable)?
            {
                Some(index) => {
                    let owner = String::from_utf8_lossy(&index.value).into_owned();
                    let owner_user = read(ctx, &crate::authn::user_key(&owner)).await?;
                    if owner_user
                        .is_some_and(|(o, _)| o.pointer("/spec/username") == Some(&json!(username)))
                    {
                        return Err(ApiError::new(
                            409,
                            "AlreadyExists",
                            format!("the username {username:?} is taken"),
                        ));
                    }
                    ops.push(Op::update(index.key, name.clone(), index.mod_revision));
                }
                None => ops.push(Op::create(username_key(&username), name.clone())),
            }
            // A password hash or bindings left by an earlier user of this
            // name (deletes were not always one transaction) go with the
            // create, so a new user never inherits them.
            if let Some(op) =
                delete_if_present(&ctx.store, &drover_core::keys::password_hash(&name)).await?
            {
                ops.push(op);
            }
            ops.extend(
                dependents(&ctx.store, USER_DEPENDENTS, "userName", &name)
                    .await?
                    .into_iter()
                    .filter(Op::writes),
            );
            // The default global roles, each only if the creator could
            // bind it themselves.
            let snapshot = self.authz.snapshot().await?;
            let mut extra = Vec::new();
            let mut warnings = Vec::new();
            for role in snapshot.default_global_roles() {
                let Some((rules, unchanged)) = global_role_rules(ctx, &role).await? else {
                    continue;
                };
                match may_grant_global(ctx, &snapshot, &role, &rules).await? {
                    Ok(()) => {
                        ops.push(unchanged);
                        extra.push(drover_apiserver::NewObject {
                            group: api::GROUP,
                            plural: "globalrolebindings",
                            object: json!({
                                "apiVersion": api::API_VERSION, "kind": "GlobalRoleBinding",
                                "metadata": {"generateName": "grb-"},
                                "spec": {"userName": name, "globalRoleName": role},
                            }),
                        });
                    }
                    Err(_) => warnings.push(format!(
                        "the default global role {role:?} was not bound: user {:?} does not hold its rights",
                        ctx.user.name
                    )),
                }
            }
            Ok(Prepared {
                extra,
                ops,
                warnings,
                ..Default::default()
            })
        })
    }

    fn prepare_update<'a>(
        &'a self,
        ctx: &'a Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if new.pointer("/spec/username") != old.pointer("/spec/username") {
                return Err(invalid(
                    "User",
                    new,
                    vec![FieldError::forbidden("spec.username", "field is immutable")],
                ));
            }
            may_act_as(
                &self.authz,
                &ctx.user,
                str_at(old, "/metadata/name"),
                "changes",
            )
            .await
        })
    }

    fn prepare_delete<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let name = str_at(obj, "/metadata/name");
            if name == ctx.user.name {
                return Err(ApiError::forbidden_because(
                    "nobody can delete their own user",
                ));
            }
            may_act_as(&self.authz, &ctx.user, name, "deletion").await
        })
    }

    fn delete_ops<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Op>, ApiError>> {
        Box::pin(async move {
            let name = str_at(obj, "/metadata/name");
            let mut ops = dependents(&ctx.store, USER_DEPENDENTS, "userName", name).await?;
            ops.extend(
                delete_if_present(&ctx.store, &drover_core::keys::password_hash(name)).await?,
            );
            // A provider user's records: their groups, their OIDC refresh
            // token, and the links of their principals to them.
            for key in [
                crate::principals::membership_key(name),
                crate::providers::oidc::refresh_key(name),
            ] {
                ops.extend(delete_if_present(&ctx.store, &key).await?);
            }
            for principal in obj
                .pointer("/spec/principalIds")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if let Some(link) = ctx
                    .store
                    .get(&crate::principals::link_key(principal))
                    .await
                    .map_err(unavailable)?
                    .filter(|kv| kv.value == name.as_bytes())
                {
                    ops.push(Op::delete(link.key, link.mod_revision));
                }
            }
            let username = str_at(obj, "/spec/username");
            let from_provider = obj
                .pointer("/spec/principalIds")
                .and_then(Value::as_array)
                .is_some_and(|ids| !ids.is_empty());
            if !username.is_empty() && !from_provider {
                if let Some(index) = ctx
                    .store
                    .get(&username_key(username))
                    .await
                    .map_err(unavailable)?
                    .filter(|kv| kv.value == name.as_bytes())
                {
                    ops.push(Op::delete(index.key, index.mod_revision));
                }
            }
            Ok(ops)
        })
    }

    fn committed(&self) {
        self.authz.invalidate();
    }
}

struct Tokens {
    max_ttl: Duration,
}

impl Strategy for Tokens {
    fn schema(&self) -> Value {
        schema_for::<api::Token>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::new(
                "User",
                "string",
                "The user the token acts as",
                "/spec/userName",
            ),
            Column::new(
                "Description",
                "string",
                "What the token is for",
                "/spec/description",
            ),
            Column::new(
                "Cluster",
                "string",
                "The only cluster it works for",
                "/spec/clusterName",
            ),
            Column::new(
                "Expires",
                "string",
                "When it stops working",
                "/status/expiresAt",
            ),
        ]
    }

    fn prepare_create<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            let caller = ctx.user.name.clone();
            let user = match str_at(obj, "/spec/userName") {
                "" => caller.clone(),
                u => u.to_owned(),
            };
            if user != caller {
                let may = ctx
                    .authorizer
                    .authorize(
                        &ctx.user,
                        &Attributes::resource("impersonate", api::GROUP, "users", "", &user),
                    )
                    .await?;
                if !may {
                    return Err(ApiError::forbidden_because(format!(
                        "user {caller:?} cannot create tokens for user {user:?}"
                    )));
                }
            }
            let Some((_, user_kv)) = read(ctx, &crate::authn::user_key(&user)).await? else {
                return Err(invalid(
                    "Token",
                    obj,
                    vec![FieldError::invalid(
                        "spec.userName",
                        user.clone(),
                        "no such user",
                    )],
                ));
            };
            let cluster = obj
                .pointer("/spec/clusterName")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_owned);
            let ttl = obj
                .pointer("/spec/ttlSeconds")
                .and_then(Value::as_u64)
                .map(Duration::from_secs);
            let description = obj
                .pointer("/spec/description")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let name = str_at(obj, "/metadata/name").to_owned();
            let minted = token::mint_named(
                &name,
                &user,
                description.as_deref(),
                cluster.as_deref(),
                ttl,
                self.max_ttl,
            );
            obj["spec"] = minted.object["spec"].clone();
            obj["status"] = minted.object["status"].clone();
            obj["metadata"]["labels"]["drover.io/user"] = json!(user);
            Ok(Prepared {
                records: vec![(token::record_key(&name), minted.record_bytes())],
                response_overlay: Some(json!({"status": {"token": minted.bearer}})),
                // Not for a user deleted meanwhile (or made again).
                ops: vec![Op::live(&user_kv)],
                ..Default::default()
            })
        })
    }

    fn prepare_update<'a>(
        &'a self,
        _ctx: &'a Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move { spec_immutable("Token", new, old) })
    }

    fn delete_ops<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Op>, ApiError>> {
        Box::pin(async move {
            let record = token::record_key(str_at(obj, "/metadata/name"));
            Ok(delete_if_present(&ctx.store, &record)
                .await?
                .into_iter()
                .collect())
        })
    }
}

fn builtin(obj: &Value) -> bool {
    obj.pointer("/spec/builtin") == Some(&Value::Bool(true))
}

/// Only Drover ships built-ins (`spec.builtin`), and they keep their spec:
/// a create or update may not make a role or template one (`old` is the
/// stored object, on updates), nor change one.
fn refuse_builtin(
    kind: &str,
    what: &str,
    new: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if let Some(old) = old {
        if builtin(old) && new.get("spec") != old.get("spec") {
            return Err(ApiError::forbidden_because(format!(
                "built-in {what} cannot be changed"
            )));
        }
    }
    if builtin(new) && !old.is_some_and(builtin) {
        return Err(invalid(
            kind,
            new,
            vec![FieldError::forbidden(
                "spec.builtin",
                format!("only Drover ships built-in {what}"),
            )],
        ));
    }
    Ok(())
}

/// Built-in roles cannot be deleted.
fn refuse_builtin_delete(what: &str, obj: &Value) -> Result<(), ApiError> {
    if builtin(obj) {
        return Err(ApiError::forbidden_because(format!(
            "built-in {what} cannot be deleted"
        )));
    }
    Ok(())
}

struct GlobalRoles {
    authz: Arc<RbacAuthorizer>,
}

/// The rules of a GlobalRole object.
fn role_rules(obj: &Value) -> Result<Vec<PolicyRule>, ApiError> {
    serde_json::from_value(obj.pointer("/spec/rules").cloned().unwrap_or(json!([])))
        .map_err(|e| ApiError::bad_request(format!("spec.rules: {e}")))
}

impl GlobalRoles {
    /// A global role grants its rules to whoever it is bound to (and with
    /// `newUserDefault`, to every new user): its author must hold them all,
    /// as kube's RBAC asks of a Role's author, or have `escalate` on it.
    async fn check_grant(&self, ctx: &Context, obj: &Value) -> Result<(), ApiError> {
        let name = str_at(obj, "/metadata/name");
        let rules = role_rules(obj)?;
        let snapshot = self.authz.snapshot().await?;
        let missing = snapshot.rules(&ctx.user).covers(None, &rules);
        if missing.is_empty() || may(ctx, "escalate", "globalroles", name).await? {
            return Ok(());
        }
        Err(forbidden_escalation(
            &ctx.user.name,
            &format!("global role {name:?} these rules"),
            &missing,
        ))
    }
}

impl Strategy for GlobalRoles {
    fn schema(&self) -> Value {
        schema_for::<api::GlobalRole>()
    }

    fn prepare_create<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            refuse_builtin("GlobalRole", "global roles", obj, None)?;
            self.check_grant(ctx, obj).await?;
            Ok(Prepared::default())
        })
    }

    fn prepare_update<'a>(
        &'a self,
        ctx: &'a Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            refuse_builtin("GlobalRole", "global roles", new, Some(old))?;
            if new.get("spec") != old.get("spec") {
                self.check_grant(ctx, new).await?;
            }
            Ok(())
        })
    }

    fn prepare_delete<'a>(
        &'a self,
        _ctx: &'a Context,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move { refuse_builtin_delete("global roles", obj) })
    }

    /// Its bindings go with it: a role made again under the same name
    /// grants nothing to those the old one was bound to.
    fn delete_ops<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Op>, ApiError>> {
        Box::pin(async move {
            dependents(
                &ctx.store,
                &["globalrolebindings"],
                "globalRoleName",
                str_at(obj, "/metadata/name"),
            )
            .await
        })
    }

    fn committed(&self) {
        self.authz.invalidate();
    }
}

fn one_subject(obj: &Value, role_field: &str) -> Vec<FieldError> {
    let user = str_at(obj, "/spec/userName");
    let group = str_at(obj, "/spec/groupName");
    let mut errors = Vec::new();
    match (user.is_empty(), group.is_empty()) {
        (true, true) => errors.push(FieldError::required(
            "spec.userName",
            "userName or groupName is required",
        )),
        (false, false) => errors.push(FieldError::forbidden(
            "spec.groupName",
            "set userName or groupName, not both",
        )),
        _ => {}
    }
    if str_at(obj, &format!("/spec/{role_field}")).is_empty() {
        errors.push(FieldError::required(format!("spec.{role_field}"), ""));
    }
    errors
}

/// A binding may name a provider's user by principal id
/// (`ldap_user://<dn>`): the name becomes that of the Drover User linked to
/// it, made now (in the binding's transaction: the returned steps) if the
/// principal has not logged in yet, as Rancher does.
async fn resolve_principal(ctx: &Context, obj: &mut Value) -> Result<Vec<Op>, ApiError> {
    let named = str_at(obj, "/spec/userName").to_owned();
    let Some((provider, "user", id)) = crate::principals::parse(&named) else {
        return Ok(Vec::new());
    };
    if !crate::providers::enabled(&ctx.store, provider)
        .await
        .map_err(unavailable)?
    {
        let kind = str_at(obj, "/kind").to_owned();
        return Err(invalid(
            &kind,
            obj,
            vec![FieldError::invalid(
                "spec.userName",
                named.clone(),
                format!("the {provider} provider is not enabled"),
            )],
        ));
    }
    if let Some(kv) = crate::principals::linked_user(&ctx.store, &named)
        .await
        .map_err(|_| ApiError::unavailable("the datastore is unavailable"))?
    {
        let user: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        obj["spec"]["userName"] = user["metadata"]["name"].clone();
        return Ok(Vec::new());
    }
    // A DN's first value (`uid=alice,…` → alice) or an OIDC subject.
    let login = id
        .split(',')
        .next()
        .and_then(|rdn| rdn.split_once('='))
        .map_or(id, |(_, v)| v)
        .to_owned();
    let principal = crate::principals::Principal {
        provider: provider.to_owned(),
        id: named.clone(),
        login,
        display_name: None,
        groups: Vec::new(),
        issuer: None,
    };
    let (name, ops) = crate::principals::new_user_ops(&ctx.store, &principal)
        .await
        .map_err(|_| ApiError::unavailable("the datastore is unavailable"))?;
    obj["spec"]["userName"] = json!(name);
    Ok(ops)
}

/// The binding's user exists; the condition that it still is the same one
/// when the binding commits (none for a group, or for a user made in the
/// same transaction: `created`).
async fn subject_user(
    ctx: &Context,
    kind: &str,
    obj: &Value,
    created: bool,
) -> Result<Option<Op>, ApiError> {
    let user = str_at(obj, "/spec/userName");
    if user.is_empty() || created {
        return Ok(None);
    }
    match read(ctx, &crate::authn::user_key(user)).await? {
        Some((_, kv)) => Ok(Some(Op::live(&kv))),
        None => Err(invalid(
            kind,
            obj,
            vec![FieldError::invalid("spec.userName", user, "no such user")],
        )),
    }
}

/// Whether the caller holds `verb` (`bind`, `escalate`) on one role or
/// template: kube's way to trust someone with a grant beyond their rights.
async fn may(ctx: &Context, verb: &str, resource: &str, name: &str) -> Result<bool, ApiError> {
    ctx.authorizer
        .authorize(
            &ctx.user,
            &Attributes::resource(verb, api::GROUP, resource, "", name),
        )
        .await
}

struct GlobalRoleBindings {
    authz: Arc<RbacAuthorizer>,
}

impl Strategy for GlobalRoleBindings {
    fn schema(&self) -> Value {
        schema_for::<api::GlobalRoleBinding>()
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        one_subject(obj, "globalRoleName")
    }

    fn prepare_create<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            let created = resolve_principal(ctx, obj).await?;
            if str_at(obj, "/spec/userName") == ctx.user.name {
                return Err(ApiError::forbidden_because(
                    "nobody can change their own global roles",
                ));
            }
            let mut ops: Vec<Op> = subject_user(ctx, "GlobalRoleBinding", obj, !created.is_empty())
                .await?
                .into_iter()
                .collect();
            ops.extend(created);
            let role = str_at(obj, "/spec/globalRoleName").to_owned();
            let Some((rules, unchanged)) = global_role_rules(ctx, &role).await? else {
                return Err(invalid(
                    "GlobalRoleBinding",
                    obj,
                    vec![FieldError::invalid(
                        "spec.globalRoleName",
                        role,
                        "no such global role",
                    )],
                ));
            };
            // The role checked is the role bound: not one changed or
            // deleted (and made again) meanwhile.
            ops.push(unchanged);
            let snapshot = self.authz.snapshot().await?;
            if let Err(missing) = may_grant_global(ctx, &snapshot, &role, &rules).await? {
                return Err(forbidden_escalation(
                    &ctx.user.name,
                    &format!("global role {role:?}"),
                    &missing,
                ));
            }
            // Whoever may bind a role without holding it (`bind`) may not
            // bind it to a group they are in: that would be theirs.
            let group = str_at(obj, "/spec/groupName");
            if !group.is_empty()
                && ctx.user.groups.iter().any(|g| g == group)
                && !snapshot.rules(&ctx.user).covers(None, &rules).is_empty()
            {
                return Err(ApiError::forbidden_because(format!(
                    "nobody can change their own global roles: user {:?} is in group {group:?} and does not hold the rules of {role:?}",
                    ctx.user.name
                )));
            }
            Ok(Prepared {
                ops,
                ..Default::default()
            })
        })
    }

    fn prepare_update<'a>(
        &'a self,
        _ctx: &'a Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move { spec_immutable("GlobalRoleBinding", new, old) })
    }

    fn prepare_delete<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if str_at(obj, "/spec/userName") == ctx.user.name {
                return Err(ApiError::forbidden_because(
                    "nobody can change their own global roles",
                ));
            }
            Ok(())
        })
    }

    fn committed(&self) {
        self.authz.invalidate();
    }
}

struct RoleTemplates {
    authz: Arc<RbacAuthorizer>,
}

impl RoleTemplates {
    /// A template grants its rules, and those of the templates it names,
    /// in every cluster or project it is bound in, now or later: its author
    /// must hold them everywhere (a global admin), or have `escalate` on it.
    /// Returns the conditions that the named templates are still the ones
    /// checked when the write commits.
    async fn check_grant(&self, ctx: &Context, obj: &Value) -> Result<Vec<Op>, ApiError> {
        let name = str_at(obj, "/metadata/name");
        let snapshot = self.authz.snapshot().await?;
        let names: Vec<String> = obj
            .pointer("/spec/roleTemplateNames")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let mut rules = role_rules(obj)?;
        let mut ops = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let found = if n == name {
                None
            } else {
                read(ctx, &key("roletemplates", None, n)).await?
            };
            let Some((_, kv)) = found else {
                return Err(invalid(
                    "RoleTemplate",
                    obj,
                    vec![FieldError::invalid(
                        format!("spec.roleTemplateNames[{i}]"),
                        n.clone(),
                        "no such role template",
                    )],
                ));
            };
            ops.push(Op::check(kv.key.clone(), Some(kv.mod_revision)));
            rules.extend(snapshot.template_rules(n));
        }
        let missing = drover_rbac::covers(&snapshot.downstream_everywhere(&ctx.user), &rules);
        if missing.is_empty() || may(ctx, "escalate", "roletemplates", name).await? {
            return Ok(ops);
        }
        Err(forbidden_escalation(
            &ctx.user.name,
            &format!("role template {name:?} these rules"),
            &missing,
        ))
    }
}

impl Strategy for RoleTemplates {
    fn schema(&self) -> Value {
        schema_for::<api::RoleTemplate>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::new("Context", "string", "cluster or project", "/spec/context"),
            Column::new(
                "Display Name",
                "string",
                "Name people see",
                "/spec/displayName",
            ),
        ]
    }

    fn prepare_create<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            refuse_builtin("RoleTemplate", "role templates", obj, None)?;
            let ops = self.check_grant(ctx, obj).await?;
            Ok(Prepared {
                ops,
                ..Default::default()
            })
        })
    }

    fn prepare_update<'a>(
        &'a self,
        ctx: &'a Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            refuse_builtin("RoleTemplate", "role templates", new, Some(old))?;
            if new.get("spec") != old.get("spec") {
                self.check_grant(ctx, new).await?;
            }
            Ok(())
        })
    }

    fn prepare_delete<'a>(
        &'a self,
        _ctx: &'a Context,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            refuse_builtin_delete("role templates", obj)?;
            let name = str_at(obj, "/metadata/name");
            let inheritors = self.authz.snapshot().await?.inheritors(name);
            if !inheritors.is_empty() {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "role template {name:?} is inherited by {}: remove it from their roleTemplateNames first",
                        inheritors.join(", ")
                    ),
                ));
            }
            Ok(())
        })
    }

    /// Its bindings go with it, so a template made again under the same
    /// name grants nothing to those the old one was bound to; no template
    /// may have started inheriting it meanwhile.
    fn delete_ops<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Op>, ApiError>> {
        Box::pin(async move {
            let name = str_at(obj, "/metadata/name");
            let at = ctx.store.revisions().await.map_err(unavailable)?.current;
            if !self.authz.snapshot().await?.inheritors(name).is_empty() {
                return Err(ApiError::conflict_because(
                    drover_apiserver::error::Subject {
                        group: api::GROUP,
                        resource: "roletemplates",
                        name,
                    },
                    "another template started inheriting it",
                ));
            }
            let mut ops = dependents(
                &ctx.store,
                &["clusterroletemplatebindings", "projectroletemplatebindings"],
                "roleTemplateName",
                name,
            )
            .await?;
            ops.push(Op::Unchanged {
                prefix: drover_core::keys::prefix(api::GROUP, "roletemplates", None),
                since: at,
            });
            Ok(ops)
        })
    }

    fn committed(&self) {
        self.authz.invalidate();
    }
}

/// Check a role-template binding: template of the right context, and no
/// escalation in its scope. Returns the conditions that the template and
/// the subject are still the ones checked when the binding commits.
async fn check_template_binding(
    authz: &RbacAuthorizer,
    ctx: &Context,
    kind: &str,
    obj: &Value,
    context: RoleContext,
    cluster: &str,
    project: Option<&str>,
) -> Result<Vec<Op>, ApiError> {
    let mut ops = Vec::new();
    let template = str_at(obj, "/spec/roleTemplateName").to_owned();
    let stored = read(ctx, &key("roletemplates", None, &template)).await?;
    let snapshot = authz.snapshot().await?;
    match (&stored, snapshot.template_context(&template)) {
        (None, _) | (_, None) => {
            return Err(invalid(
                kind,
                obj,
                vec![FieldError::invalid(
                    "spec.roleTemplateName",
                    template,
                    "no such role template",
                )],
            ))
        }
        (_, Some(c)) if c != context => {
            let want = if context == RoleContext::Cluster {
                "cluster"
            } else {
                "project"
            };
            return Err(invalid(
                kind,
                obj,
                vec![FieldError::invalid(
                    "spec.roleTemplateName",
                    template,
                    format!("not a {want}-context role template"),
                )],
            ));
        }
        (Some((_, kv)), Some(_)) => ops.push(Op::check(kv.key.clone(), Some(kv.mod_revision))),
    }
    let held = snapshot.downstream_rules(&ctx.user, cluster, project);
    let missing = drover_rbac::covers(&held, &snapshot.template_rules(&template));
    if !missing.is_empty() && !may(ctx, "bind", "roletemplates", &template).await? {
        return Err(forbidden_escalation(
            &ctx.user.name,
            &format!("role template {template:?}"),
            &missing,
        ));
    }
    Ok(ops)
}

struct Crtbs {
    authz: Arc<RbacAuthorizer>,
}

impl Strategy for Crtbs {
    fn schema(&self) -> Value {
        schema_for::<api::ClusterRoleTemplateBinding>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::new("User", "string", "Bound user", "/spec/userName"),
            Column::new("Group", "string", "Bound group", "/spec/groupName"),
            Column::new("Role", "string", "Role template", "/spec/roleTemplateName"),
        ]
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        one_subject(obj, "roleTemplateName")
    }

    fn prepare_create<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            let cluster = str_at(obj, "/metadata/namespace").to_owned();
            match str_at(obj, "/spec/clusterName") {
                "" => obj["spec"]["clusterName"] = json!(cluster),
                c if c != cluster => {
                    return Err(invalid(
                        "ClusterRoleTemplateBinding",
                        obj,
                        vec![FieldError::invalid(
                            "spec.clusterName",
                            c.to_owned(),
                            "must be the binding's namespace",
                        )],
                    ))
                }
                _ => {}
            }
            let created = resolve_principal(ctx, obj).await?;
            let mut ops = check_template_binding(
                &self.authz,
                ctx,
                "ClusterRoleTemplateBinding",
                obj,
                RoleContext::Cluster,
                &cluster,
                None,
            )
            .await?;
            ops.extend(
                subject_user(ctx, "ClusterRoleTemplateBinding", obj, !created.is_empty()).await?,
            );
            ops.extend(created);
            // Not into a cluster removed meanwhile.
            if let Some((_, kv)) = read(ctx, &key("clusters", None, &cluster)).await? {
                ops.push(Op::live(&kv));
            }
            Ok(Prepared {
                ops,
                ..Default::default()
            })
        })
    }

    fn prepare_update<'a>(
        &'a self,
        _ctx: &'a Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move { spec_immutable("ClusterRoleTemplateBinding", new, old) })
    }

    fn committed(&self) {
        self.authz.invalidate();
    }
}

struct Prtbs {
    authz: Arc<RbacAuthorizer>,
}

impl Strategy for Prtbs {
    fn schema(&self) -> Value {
        schema_for::<api::ProjectRoleTemplateBinding>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::new("User", "string", "Bound user", "/spec/userName"),
            Column::new("Group", "string", "Bound group", "/spec/groupName"),
            Column::new("Role", "string", "Role template", "/spec/roleTemplateName"),
            Column::new("Project", "string", "cluster:project", "/spec/projectName"),
        ]
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        let mut errors = one_subject(obj, "roleTemplateName");
        let project_name = str_at(obj, "/spec/projectName");
        let ns = str_at(obj, "/metadata/namespace");
        match project_name.split_once(':') {
            Some((c, p)) if !c.is_empty() && p == ns => {}
            _ => errors.push(FieldError::invalid(
                "spec.projectName",
                project_name,
                format!("must be CLUSTER:{ns} (the binding's namespace is the project)"),
            )),
        }
        errors
    }

    fn prepare_create<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            let (cluster, project) = str_at(obj, "/spec/projectName")
                .split_once(':')
                .map(|(c, p)| (c.to_owned(), p.to_owned()))
                .unwrap_or_default();
            let Some((_, project_kv)) =
                read(ctx, &key("projects", Some(&cluster), &project)).await?
            else {
                return Err(invalid(
                    "ProjectRoleTemplateBinding",
                    obj,
                    vec![FieldError::invalid(
                        "spec.projectName",
                        format!("{cluster}:{project}"),
                        "no such project",
                    )],
                ));
            };
            let created = resolve_principal(ctx, obj).await?;
            let mut ops = check_template_binding(
                &self.authz,
                ctx,
                "ProjectRoleTemplateBinding",
                obj,
                RoleContext::Project,
                &cluster,
                Some(&project),
            )
            .await?;
            ops.extend(
                subject_user(ctx, "ProjectRoleTemplateBinding", obj, !created.is_empty()).await?,
            );
            ops.extend(created);
            // Not into a project removed meanwhile.
            ops.push(Op::live(&project_kv));
            Ok(Prepared {
                ops,
                ..Default::default()
            })
        })
    }

    fn prepare_update<'a>(
        &'a self,
        _ctx: &'a Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move { spec_immutable("ProjectRoleTemplateBinding", new, old) })
    }

    fn committed(&self) {
        self.authz.invalidate();
    }
}
