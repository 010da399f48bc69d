//! The identity kinds of the management API and how they behave: User,
//! Token, GlobalRole, GlobalRoleBinding, RoleTemplate,
//! ClusterRoleTemplateBinding and ProjectRoleTemplateBinding.
//!
//! Bindings follow Kubernetes' no-escalation rule: to grant a role in a
//! scope the caller must already hold all of its rules there, or `bind` on
//! it. Nobody can change their own global roles.

use std::sync::Arc;
use std::time::Duration;

use drover_apiserver::{
    ApiError, Column, Context, FieldError, KindInfo, Prepared, Registry, Strategy,
};
use drover_core::api::{self, schema_for, RoleContext};
use drover_rbac::{Attributes, PolicyRule};
use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::login::username_key;
use crate::policy::RbacAuthorizer;
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

/// Remove what names a user besides its object: login-name index, password
/// hash, bindings, tokens. Runs after a delete, and before a create of the
/// same name in case an earlier cleanup was cut short, so a new user never
/// inherits an old one's password or rights. Idempotent.
async fn purge_user(store: &drover_store::Store, name: &str, username: &str) {
    if !username.is_empty() {
        let _ = store.delete(&username_key(username), None).await;
    }
    let _ = store
        .delete(&drover_core::keys::password_hash(name), None)
        .await;
    // Everything that names the user goes too: bindings, tokens.
    for plural in [
        "globalrolebindings",
        "clusterroletemplatebindings",
        "projectroletemplatebindings",
        "tokens",
    ] {
        let prefix = drover_core::keys::prefix(api::GROUP, plural, None);
        let Ok(page) = store
            .list(&drover_store::ListOptions {
                prefix,
                ..Default::default()
            })
            .await
        else {
            continue;
        };
        for kv in page.items {
            let Ok(o) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            if str_at(&o, "/spec/userName") == name {
                let _ = store.delete(&kv.key, None).await;
                if plural == "tokens" {
                    let _ = store
                        .delete(&token::record_key(str_at(&o, "/metadata/name")), None)
                        .await;
                }
            }
        }
    }
}

/// Login names: 1–64 of `a-z 0-9 . _ @ -`.
pub fn valid_username(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 64
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_@".contains(&b))
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

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        let username = str_at(obj, "/spec/username");
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

    fn prepare_create<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            let name = str_at(obj, "/metadata/name").to_owned();
            let username = str_at(obj, "/spec/username").to_owned();
            purge_user(&ctx.store, &name, "").await;
            if obj.pointer("/spec/enabled").is_none() {
                obj["spec"]["enabled"] = json!(true);
            }
            if let Ok(Some(existing)) = ctx.store.get(&username_key(&username)).await {
                let owner = String::from_utf8_lossy(&existing.value).into_owned();
                if ctx
                    .store
                    .get(&crate::authn::user_key(&owner))
                    .await
                    .ok()
                    .flatten()
                    .is_some()
                {
                    return Err(ApiError::new(
                        409,
                        "AlreadyExists",
                        format!("the username {username:?} is taken"),
                    ));
                }
                let _ = ctx.store.delete(&username_key(&username), None).await; // stale
            }
            let snapshot = self.authz.snapshot().await?;
            let extra = snapshot
                .default_global_roles()
                .into_iter()
                .map(|role| drover_apiserver::NewObject {
                    group: api::GROUP,
                    plural: "globalrolebindings",
                    object: json!({
                        "apiVersion": api::API_VERSION, "kind": "GlobalRoleBinding",
                        "metadata": {"name": format!("grb-{name}-{role}")},
                        "spec": {"userName": name, "globalRoleName": role},
                    }),
                })
                .collect();
            Ok(Prepared {
                extra,
                records: vec![(username_key(&username), name.into_bytes())],
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
        Box::pin(async move {
            if new.pointer("/spec/username") != old.pointer("/spec/username") {
                return Err(invalid(
                    "User",
                    new,
                    vec![FieldError::forbidden("spec.username", "field is immutable")],
                ));
            }
            Ok(())
        })
    }

    fn committed(&self) {
        self.authz.invalidate();
    }

    fn after_delete<'a>(&'a self, ctx: &'a Context, obj: &'a Value) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            purge_user(
                &ctx.store,
                str_at(obj, "/metadata/name"),
                str_at(obj, "/spec/username"),
            )
            .await;
            self.authz.invalidate();
        })
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
            if ctx
                .store
                .get(&crate::authn::user_key(&user))
                .await
                .ok()
                .flatten()
                .is_none()
            {
                return Err(invalid(
                    "Token",
                    obj,
                    vec![FieldError::invalid(
                        "spec.userName",
                        user.clone(),
                        "no such user",
                    )],
                ));
            }
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

    fn after_delete<'a>(&'a self, ctx: &'a Context, obj: &'a Value) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = ctx
                .store
                .delete(&token::record_key(str_at(obj, "/metadata/name")), None)
                .await;
        })
    }
}

fn builtin(obj: &Value) -> bool {
    obj.pointer("/spec/builtin") == Some(&Value::Bool(true))
}

/// Built-in roles (`spec.builtin`) keep their spec.
fn refuse_builtin_change(what: &str, new: &Value, old: &Value) -> Result<(), ApiError> {
    if builtin(old) && new.get("spec") != old.get("spec") {
        return Err(ApiError::forbidden_because(format!(
            "built-in {what} cannot be changed"
        )));
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

impl Strategy for GlobalRoles {
    fn schema(&self) -> Value {
        schema_for::<api::GlobalRole>()
    }

    fn prepare_create<'a>(
        &'a self,
        _ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            if builtin(obj) {
                return Err(invalid(
                    "GlobalRole",
                    obj,
                    vec![FieldError::forbidden(
                        "spec.builtin",
                        "only Drover ships built-in roles",
                    )],
                ));
            }
            Ok(Prepared::default())
        })
    }

    fn prepare_update<'a>(
        &'a self,
        _ctx: &'a Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move { refuse_builtin_change("global roles", new, old) })
    }

    fn prepare_delete<'a>(
        &'a self,
        _ctx: &'a Context,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move { refuse_builtin_delete("global roles", obj) })
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

async fn subject_user_exists(ctx: &Context, kind: &str, obj: &Value) -> Result<(), ApiError> {
    let user = str_at(obj, "/spec/userName");
    if !user.is_empty()
        && ctx
            .store
            .get(&crate::authn::user_key(user))
            .await
            .ok()
            .flatten()
            .is_none()
    {
        return Err(invalid(
            kind,
            obj,
            vec![FieldError::invalid("spec.userName", user, "no such user")],
        ));
    }
    Ok(())
}

async fn may_bind(ctx: &Context, template_or_role: &str, resource: &str) -> Result<bool, ApiError> {
    ctx.authorizer
        .authorize(
            &ctx.user,
            &Attributes::resource("bind", api::GROUP, resource, "", template_or_role),
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
            if str_at(obj, "/spec/userName") == ctx.user.name {
                return Err(ApiError::forbidden_because(
                    "nobody can change their own global roles",
                ));
            }
            subject_user_exists(ctx, "GlobalRoleBinding", obj).await?;
            let role = str_at(obj, "/spec/globalRoleName").to_owned();
            let snapshot = self.authz.snapshot().await?;
            let Some(rules) = snapshot.global_role(&role) else {
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
            let missing = snapshot.rules(&ctx.user).covers(None, rules);
            if !missing.is_empty() && !may_bind(ctx, &role, "globalroles").await? {
                return Err(forbidden_escalation(
                    &ctx.user.name,
                    &format!("global role {role:?}"),
                    &missing,
                ));
            }
            Ok(Prepared::default())
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
        _ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            if builtin(obj) {
                return Err(invalid(
                    "RoleTemplate",
                    obj,
                    vec![FieldError::forbidden(
                        "spec.builtin",
                        "only Drover ships built-in templates",
                    )],
                ));
            }
            let snapshot = self.authz.snapshot().await?;
            let names: Vec<String> = obj
                .pointer("/spec/roleTemplateNames")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            for (i, n) in names.iter().enumerate() {
                if snapshot.template_context(n).is_none() {
                    return Err(invalid(
                        "RoleTemplate",
                        obj,
                        vec![FieldError::invalid(
                            format!("spec.roleTemplateNames[{i}]"),
                            n.clone(),
                            "no such role template",
                        )],
                    ));
                }
            }
            Ok(Prepared::default())
        })
    }

    fn prepare_update<'a>(
        &'a self,
        _ctx: &'a Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move { refuse_builtin_change("role templates", new, old) })
    }

    fn prepare_delete<'a>(
        &'a self,
        _ctx: &'a Context,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move { refuse_builtin_delete("role templates", obj) })
    }

    fn committed(&self) {
        self.authz.invalidate();
    }
}

/// Check a role-template binding: template of the right context, and no
/// escalation in its scope.
async fn check_template_binding(
    authz: &RbacAuthorizer,
    ctx: &Context,
    kind: &str,
    obj: &Value,
    context: RoleContext,
    cluster: &str,
    project: Option<&str>,
) -> Result<(), ApiError> {
    subject_user_exists(ctx, kind, obj).await?;
    let template = str_at(obj, "/spec/roleTemplateName").to_owned();
    let snapshot = authz.snapshot().await?;
    match snapshot.template_context(&template) {
        None => {
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
        Some(c) if c != context => {
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
        Some(_) => {}
    }
    let held = snapshot.downstream_rules(&ctx.user, cluster, project);
    let missing = drover_rbac::covers(&held, &snapshot.template_rules(&template));
    if !missing.is_empty() && !may_bind(ctx, &template, "roletemplates").await? {
        return Err(forbidden_escalation(
            &ctx.user.name,
            &format!("role template {template:?}"),
            &missing,
        ));
    }
    Ok(())
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
            check_template_binding(
                &self.authz,
                ctx,
                "ClusterRoleTemplateBinding",
                obj,
                RoleContext::Cluster,
                &cluster,
                None,
            )
            .await?;
            Ok(Prepared::default())
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
            let key = drover_core::keys::object(api::GROUP, "projects", Some(&cluster), &project);
            if ctx.store.get(&key).await.ok().flatten().is_none() {
                return Err(invalid(
                    "ProjectRoleTemplateBinding",
                    obj,
                    vec![FieldError::invalid(
                        "spec.projectName",
                        format!("{cluster}:{project}"),
                        "no such project",
                    )],
                ));
            }
            check_template_binding(
                &self.authz,
                ctx,
                "ProjectRoleTemplateBinding",
                obj,
                RoleContext::Project,
                &cluster,
                Some(&project),
            )
            .await?;
            Ok(Prepared::default())
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
