//! The management API (`management.drover.io/v1`) as this server serves it:
//! the identity kinds from `drover-auth`, the cluster kinds below, and the
//! self-reviews kubectl uses (`auth whoami`, `auth can-i`).
//!
//! Namespaces of the management API are not objects of their own: a
//! namespace exists when a Cluster (for its projects, registration tokens
//! and cluster bindings) or a Project (for its project bindings) has that
//! name.

use std::sync::Arc;
use std::time::Duration;

use drover_apiserver::{
    ApiError, ApiServer, Column, Context, FieldError, KindInfo, Namespaces, NewObject, Prepared,
    Registry, Strategy,
};
use drover_auth::policy::RbacAuthorizer;
use drover_core::api::{self, schema_for};
use drover_core::keys;
use drover_store::{KeyValue, ListOptions, Op, Store};
use futures::future::BoxFuture;
use serde_json::{json, Value};

/// The finalizer that holds a Cluster until its downstream cleanup.
pub const CLEANUP_FINALIZER: &str = "drover.io/cluster-cleanup";

pub use drover_core::api::QUOTA_KEYS;

/// Build the management API.
pub fn api_server(
    store: Store,
    authz: Arc<RbacAuthorizer>,
    max_token_ttl: Duration,
    server_url: &str,
    backups: super::backups::Backups,
    notifiers: super::alerts::Notifiers,
) -> Arc<ApiServer> {
    let mut reg = Registry::default();
    drover_auth::kinds::register(&mut reg, authz.clone(), max_token_ttl);
    let base = |kind, plural, singular, namespaced| KindInfo {
        group: api::GROUP,
        version: api::VERSION,
        kind,
        plural,
        singular,
        short_names: &[],
        namespaced,
        status: false,
        list_filtered: true,
        name_prefix: None,
        create_only: false,
        streams: &[],
        scale: false,
        actions: &[],
        categories: &[],
    };
    let mut clusters = base("Cluster", "clusters", "cluster", false);
    clusters.status = true;
    clusters.name_prefix = Some("c-");
    reg.register(
        clusters,
        Clusters {
            authz: authz.clone(),
            server_url: server_url.to_owned(),
        },
    );
    let mut projects = base("Project", "projects", "project", true);
    projects.name_prefix = Some("p-");
    projects.status = true;
    reg.register(
        projects,
        Projects {
            authz: authz.clone(),
        },
    );
    let mut tokens = base(
        "ClusterRegistrationToken",
        "clusterregistrationtokens",
        "clusterregistrationtoken",
        true,
    );
    tokens.status = true;
    reg.register(
        tokens,
        super::registration::RegistrationTokens {
            server_url: server_url.to_owned(),
        },
    );

    let mut backup = base("Backup", "backups", "backup", false);
    backup.status = true;
    reg.register(backup, backups);

    reg.register(
        base("AuthConfig", "authconfigs", "authconfig", false),
        drover_auth::authconfigs::AuthConfigs,
    );

    let mut psa = base(
        "PodSecurityAdmissionConfigurationTemplate",
        super::pod_security::PLURAL,
        "podsecurityadmissionconfigurationtemplate",
        false,
    );
    psa.short_names = &["psact"];
    reg.register(psa, super::pod_security::Templates);

    // Project secrets: core v1 Secrets in a project's namespace.
    let mut secrets = base("Secret", "secrets", "secret", true);
    secrets.group = "";
    secrets.status = true;
    reg.register(secrets, super::project_secrets::ProjectSecrets::default());

    let mut notifier = base("Notifier", "notifiers", "notifier", false);
    notifier.actions = &["test"];
    reg.register(notifier, notifiers);
    let mut rules = base("AlertRule", "alertrules", "alertrule", true);
    rules.status = true;
    reg.register(rules, super::alerts::AlertRules);

    drover_apiserver::reviews::register(&mut reg);
    ApiServer::new(
        store.clone(),
        reg,
        authz,
        Arc::new(ManagementNamespaces { store }),
    )
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

struct ManagementNamespaces {
    store: Store,
}

impl Namespaces for ManagementNamespaces {
    fn check<'a>(&'a self, ns: &'a str) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let unavailable = |_| ApiError::unavailable("the datastore is unavailable");
            if self
                .store
                .get(&keys::object(api::GROUP, "clusters", None, ns))
                .await
                .map_err(unavailable)?
                .is_some()
            {
                return Ok(());
            }
            let projects = self
                .store
                .list(&ListOptions {
                    prefix: drover_core::keys::prefix(api::GROUP, "projects", None),
                    ..Default::default()
                })
                .await
                .map_err(unavailable)?;
            if projects
                .items
                .iter()
                .any(|kv| kv.key.rsplit('/').next() == Some(ns))
            {
                return Ok(());
            }
            Err(ApiError::new(
                404,
                "NotFound",
                format!("namespaces {ns:?} not found"),
            ))
        })
    }
}

/// A project's quotas: known keys, valid quantities, both the project limit
/// and the namespace default given, the default within the limit.
fn validate_quota(spec: &api::ProjectSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let keys = QUOTA_KEYS;
    for (field, quota) in [
        ("spec.resourceQuota.limit", &spec.resource_quota),
        (
            "spec.namespaceDefaultResourceQuota.limit",
            &spec.namespace_default_resource_quota,
        ),
    ] {
        for (k, v) in quota.iter().flat_map(|q| q.limit.iter()) {
            if !keys.contains(&k.as_str()) {
                errors.push(FieldError::not_supported(
                    format!("{field}.{k}"),
                    k.as_str(),
                    keys,
                ));
            } else if drover_core::quantity::parse(v).is_none() {
                errors.push(FieldError::invalid(
                    format!("{field}.{k}"),
                    v.clone(),
                    "must be a quantity such as 10, 500m or 2Gi",
                ));
            }
        }
    }
    for (ns, quota) in &spec.namespace_resource_quotas {
        let field = format!("spec.namespaceResourceQuotas.{ns}.limit");
        if !drover_apiserver::object::is_dns_label(ns) {
            errors.push(FieldError::invalid(
                "spec.namespaceResourceQuotas",
                ns.clone(),
                "must be keyed by namespace names",
            ));
        }
        let Some(limit) = &spec.resource_quota else {
            errors.push(FieldError::required(
                "spec.resourceQuota",
                "a namespace's quota needs a project quota",
            ));
            break;
        };
        for (k, v) in &quota.limit {
            let max = limit
                .limit
                .get(k)
                .and_then(|m| drover_core::quantity::parse(m));
            match (drover_core::quantity::parse(v), max) {
                (None, _) => errors.push(FieldError::invalid(
                    format!("{field}.{k}"),
                    v.clone(),
                    "must be a quantity such as 10, 500m or 2Gi",
                )),
                (Some(_), None) => errors.push(FieldError::invalid(
                    format!("{field}.{k}"),
                    v.clone(),
                    "the project's resourceQuota must limit it too",
                )),
                (Some(each), Some(max)) if each > max => errors.push(FieldError::invalid(
                    format!("{field}.{k}"),
                    v.clone(),
                    "must not exceed the project's limit",
                )),
                _ => {}
            }
        }
    }
    match (&spec.resource_quota, &spec.namespace_default_resource_quota) {
        (Some(limit), Some(default)) => {
            for (k, v) in &default.limit {
                let (Some(each), Some(max)) = (
                    drover_core::quantity::parse(v),
                    limit
                        .limit
                        .get(k)
                        .and_then(|m| drover_core::quantity::parse(m)),
                ) else {
                    if !limit.limit.contains_key(k) && keys.contains(&k.as_str()) {
                        errors.push(FieldError::invalid(
                            format!("spec.namespaceDefaultResourceQuota.limit.{k}"),
                            v.clone(),
                            "the project's resourceQuota must limit it too",
                        ));
                    }
                    continue;
                };
                if each > max {
                    errors.push(FieldError::invalid(
                        format!("spec.namespaceDefaultResourceQuota.limit.{k}"),
                        v.clone(),
                        "must not exceed the project's limit",
                    ));
                }
            }
            // A limit no namespace quota carries would be enforced nowhere.
            for k in limit.limit.keys() {
                if !default.limit.contains_key(k) && keys.contains(&k.as_str()) {
                    errors.push(FieldError::required(
                        format!("spec.namespaceDefaultResourceQuota.limit.{k}"),
                        "each resource the project limits needs a namespace default",
                    ));
                }
            }
        }
        (Some(_), None) => errors.push(FieldError::required(
            "spec.namespaceDefaultResourceQuota",
            "a project quota needs a namespace default quota",
        )),
        (None, Some(_)) => errors.push(FieldError::required(
            "spec.resourceQuota",
            "a namespace default quota needs a project quota",
        )),
        (None, None) => {}
    }
    errors
}

/// Where a namespace name (a cluster's or a project's) is reserved: both
/// kinds name the namespaces of the management API, so the names must be
/// unique across them, or one user's project could share another's
/// project bindings.
fn namespace_key(name: &str) -> String {
    format!("{NAMESPACE_RESERVATIONS}{name}")
}

/// Where namespace names are reserved ([`namespace_key`]).
pub const NAMESPACE_RESERVATIONS: &str = "/drover/namespaces/";

/// Check a namespace name is free and give the record that reserves it in
/// the create's transaction (a racing create fails on that record).
/// `plural` and `namespace` name the object being created: when one of its
/// own kind holds the name, the answer is kube-apiserver's.
async fn reserve_namespace(
    store: &Store,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<(String, Vec<u8>), ApiError> {
    let taken = store.get(&namespace_key(name)).await.map_err(unavailable)?;
    if taken.is_some() {
        let own = store
            .get(&drover_core::keys::object(
                api::GROUP,
                plural,
                namespace,
                name,
            ))
            .await
            .map_err(unavailable)?;
        let why = if own.is_some() {
            String::new()
        } else {
            ": clusters and projects share names, and one of them has it".to_owned()
        };
        return Err(ApiError::new(
            409,
            "AlreadyExists",
            format!("{plural}.{} {name:?} already exists{why}", api::GROUP),
        )
        .with_details(json!({"name": name, "group": api::GROUP, "kind": plural})));
    }
    Ok((namespace_key(name), name.as_bytes().to_vec()))
}

fn unavailable(_: drover_store::StoreError) -> ApiError {
    ApiError::unavailable("the datastore is unavailable")
}

/// The deletes of every key under `prefix` as of revision `at`, and the
/// condition that none was added or changed since.
async fn delete_all_under(
    store: &Store,
    prefix: String,
    at: drover_store::Revision,
) -> Result<(Vec<KeyValue>, Vec<Op>), ApiError> {
    let page = store
        .list(&ListOptions {
            prefix: prefix.clone(),
            revision: Some(at),
            ..Default::default()
        })
        .await
        .map_err(unavailable)?;
    let mut ops: Vec<Op> = page
        .items
        .iter()
        .map(|kv| Op::delete(kv.key.clone(), kv.mod_revision))
        .collect();
    ops.push(Op::Unchanged { prefix, since: at });
    Ok((page.items, ops))
}

/// Everything that lives in a cluster's namespace and goes with it, as one
/// transaction's steps: its name's reservation, its projects (and theirs,
/// and their bindings), its bindings, its registration tokens and their
/// records, Drover's records of its namespaces, its alert rules.
pub(crate) async fn cluster_dependents(store: &Store, cluster: &str) -> Result<Vec<Op>, ApiError> {
    let at = store.revisions().await.map_err(unavailable)?.current;
    let mut ops = Vec::new();
    if let Some(kv) = store
        .get(&namespace_key(cluster))
        .await
        .map_err(unavailable)?
    {
        ops.push(Op::delete(kv.key, kv.mod_revision));
    }
    let (projects, project_ops) = delete_all_under(
        store,
        keys::prefix(api::GROUP, "projects", Some(cluster)),
        at,
    )
    .await?;
    ops.extend(project_ops);
    for kv in &projects {
        let project = kv.key.rsplit('/').next().unwrap_or_default();
        ops.extend(project_dependents(store, project, at).await?);
    }
    let crtbs = keys::prefix(api::GROUP, "clusterroletemplatebindings", Some(cluster));
    ops.extend(delete_all_under(store, crtbs, at).await?.1);
    let tokens = keys::prefix(api::GROUP, "clusterregistrationtokens", Some(cluster));
    let (tokens, token_ops) = delete_all_under(store, tokens, at).await?;
    ops.extend(token_ops);
    for kv in &tokens {
        let obj: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        ops.extend(super::registration::revoke_op(store, &obj).await?);
    }
    let adopted = super::namespaces::record_prefix(cluster);
    ops.extend(delete_all_under(store, adopted, at).await?.1);
    let rules = keys::prefix(api::GROUP, "alertrules", Some(cluster));
    ops.extend(delete_all_under(store, rules, at).await?.1);
    Ok(ops)
}

/// What goes with a project: its name's reservation, its bindings, its
/// secrets and its alert rules.
async fn project_dependents(
    store: &Store,
    project: &str,
    at: drover_store::Revision,
) -> Result<Vec<Op>, ApiError> {
    let mut ops = Vec::new();
    if let Some(kv) = store
        .get(&namespace_key(project))
        .await
        .map_err(unavailable)?
    {
        ops.push(Op::delete(kv.key, kv.mod_revision));
    }
    let prtbs = keys::prefix(api::GROUP, "projectroletemplatebindings", Some(project));
    ops.extend(delete_all_under(store, prtbs, at).await?.1);
    // Its secrets and alert rules go with it: a project made later under
    // the same name must not find them.
    let secrets = super::project_secrets::prefix(project);
    ops.extend(delete_all_under(store, secrets, at).await?.1);
    let rules = keys::prefix(api::GROUP, "alertrules", Some(project));
    ops.extend(delete_all_under(store, rules, at).await?.1);
    Ok(ops)
}

struct Clusters {
    authz: Arc<RbacAuthorizer>,
    server_url: String,
}

impl Strategy for Clusters {
    fn schema(&self) -> Value {
        schema_for::<api::Cluster>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::new(
                "Display Name",
                "string",
                "Name people see",
                "/spec/displayName",
            ),
            Column::new(
                "State",
                "string",
                "Active, Unavailable or Pending",
                "/status/conditions",
            ),
            Column::new("Version", "string", "Kubernetes version", "/status/version"),
            Column::new("Nodes", "integer", "Number of nodes", "/status/nodeCount"),
        ]
    }

    fn cell(&self, column: &Column, obj: &Value) -> Value {
        if column.name != "State" {
            return obj.pointer(column.pointer).cloned().unwrap_or(Value::Null);
        }
        Value::String(api::cluster_state(obj).to_owned())
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        let display = str_at(obj, "/spec/displayName");
        if display.chars().count() > 256 {
            return vec![FieldError::too_long("spec.displayName", 256)];
        }
        Vec::new()
    }

    fn prepare_create<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            let name = str_at(obj, "/metadata/name").to_owned();
            if str_at(obj, "/spec/displayName").is_empty() {
                obj["spec"]["displayName"] = json!(name);
            }
            let template = template_exists(&ctx.store, obj).await?;
            // The creator owns the cluster.
            let owner = NewObject {
                group: api::GROUP,
                plural: "clusterroletemplatebindings",
                object: json!({
                    "apiVersion": api::API_VERSION, "kind": "ClusterRoleTemplateBinding",
                    "metadata": {"namespace": name, "name": format!("owner-{}", ctx.user.name)},
                    "spec": {"userName": ctx.user.name, "roleTemplateName": "cluster-owner", "clusterName": name},
                }),
            };
            let (token, token_record) = super::registration::default_token(&name, &self.server_url);
            let mut extra = vec![owner, token];
            let mut records = vec![
                reserve_namespace(&ctx.store, "clusters", None, &name).await?,
                token_record,
            ];
            // Every cluster has a Default project (namespace `default`) and a
            // System project (kube-*, drover-system).
            for (which, display) in [("default", "Default"), ("system", "System")] {
                // Generated names can collide (five characters); try others.
                let mut attempt = 0;
                let (project, record) = loop {
                    let project = drover_core::names::generate("p-");
                    match reserve_namespace(&ctx.store, "projects", Some(&name), &project).await {
                        Ok(record) => break (project, record),
                        Err(e) if e.code == 409 && attempt < 5 => attempt += 1,
                        Err(e) => return Err(e),
                    }
                };
                records.push(record);
                extra.push(NewObject {
                    group: api::GROUP,
                    plural: "projects",
                    object: json!({
                        "apiVersion": api::API_VERSION, "kind": "Project",
                        "metadata": {"namespace": name, "name": project,
                                     "labels": {"drover.io/system-project": which}},
                        "spec": {"displayName": display, "clusterName": name},
                    }),
                });
            }
            Ok(Prepared {
                extra,
                records,
                ops: template.into_iter().collect(),
                ..Default::default()
            })
        })
    }

    fn update_ops<'a>(
        &'a self,
        ctx: &'a Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Op>, ApiError>> {
        Box::pin(async move {
            let pointer = "/spec/podSecurityAdmissionConfigurationTemplateName";
            if new.pointer(pointer) == old.pointer(pointer) {
                return Ok(Vec::new());
            }
            Ok(template_exists(&ctx.store, new)
                .await?
                .into_iter()
                .collect())
        })
    }

    fn committed(&self) {
        self.authz.invalidate();
    }

    fn delete_ops<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Op>, ApiError>> {
        Box::pin(async move { cluster_dependents(&ctx.store, str_at(obj, "/metadata/name")).await })
    }
}

/// A Cluster may only name a Pod Security template that exists: the step
/// that keeps it existing until the write commits.
async fn template_exists(store: &Store, cluster: &Value) -> Result<Option<Op>, ApiError> {
    let name = str_at(
        cluster,
        "/spec/podSecurityAdmissionConfigurationTemplateName",
    );
    if name.is_empty() {
        return Ok(None);
    }
    let key = keys::object(api::GROUP, super::pod_security::PLURAL, None, name);
    if let Some(kv) = store.get(&key).await.map_err(unavailable)? {
        return Ok(Some(Op::live(&kv)));
    }
    Err(ApiError::invalid(
        "Cluster",
        api::GROUP,
        str_at(cluster, "/metadata/name"),
        &[FieldError::invalid(
            "spec.podSecurityAdmissionConfigurationTemplateName",
            name.to_owned(),
            "no PodSecurityAdmissionConfigurationTemplate has this name",
        )],
    ))
}

/// Drop the cleanup finalizer of a deleting Cluster; with no finalizer
/// left, delete it and what lives in its namespace in one transaction, as
/// the API does when the last finalizer goes; with `fence`, only while the
/// lease it is done under is held.
pub(crate) async fn finish_cluster_removal(
    store: &Store,
    authz: &RbacAuthorizer,
    cluster: &str,
    fence: Option<Op>,
) {
    let key = keys::object(api::GROUP, "clusters", None, cluster);
    for _ in 0..10 {
        let Ok(Some(kv)) = store.get(&key).await else {
            return;
        };
        let Ok(mut obj) = serde_json::from_slice::<Value>(&kv.value) else {
            return;
        };
        let rest: Vec<Value> = drover_apiserver::object::finalizers(&obj)
            .into_iter()
            .filter(|f| f != CLEANUP_FINALIZER)
            .map(Value::from)
            .collect();
        let ops = if rest.is_empty() {
            let Ok(mut ops) = cluster_dependents(store, cluster).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            ops.insert(0, Op::delete(key.clone(), kv.mod_revision));
            ops
        } else {
            obj["metadata"]["finalizers"] = Value::Array(rest.clone());
            vec![Op::update(key.clone(), obj.to_string(), kv.mod_revision)]
        };
        let ops: Vec<Op> = fence.clone().into_iter().chain(ops).collect();
        match store.txn(&ops).await {
            Ok(_) => {
                authz.invalidate();
                return;
            }
            Err(
                drover_store::StoreError::Conflict { .. }
                | drover_store::StoreError::NotFound(_)
                | drover_store::StoreError::PrefixChanged { .. },
            ) => continue,
            Err(e) => {
                tracing::warn!(%cluster, error = %e, "cannot finish removing the cluster");
                return;
            }
        }
    }
}

struct Projects {
    authz: Arc<RbacAuthorizer>,
}

impl Strategy for Projects {
    fn schema(&self) -> Value {
        schema_for::<api::Project>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::new(
                "Display Name",
                "string",
                "Name people see",
                "/spec/displayName",
            ),
            Column::new("Cluster", "string", "The cluster", "/spec/clusterName"),
        ]
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let Ok(spec) = serde_json::from_value::<api::ProjectSpec>(obj["spec"].clone()) else {
            return Vec::new(); // the schema check reports it
        };
        // Quotas stored before a rule was added do not lock the project:
        // they are checked when they change.
        let quota_fields = [
            "/spec/resourceQuota",
            "/spec/namespaceDefaultResourceQuota",
            "/spec/namespaceResourceQuotas",
        ];
        let changed = old.is_none_or(|old| {
            quota_fields
                .iter()
                .any(|p| obj.pointer(p) != old.pointer(p))
        });
        if !changed {
            return Vec::new();
        }
        validate_quota(&spec)
    }

    fn prepare_delete<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let project = str_at(obj, "/metadata/name");
            let cluster = str_at(obj, "/metadata/namespace");
            let held = super::namespaces::of_project(&ctx.store, cluster, project).await?;
            if held.is_empty() {
                return Ok(());
            }
            let system = obj
                .pointer("/metadata/labels/drover.io~1system-project")
                .is_some();
            let asked = str_at(obj, "/metadata/annotations/drover.io~1namespaces-on-delete")
                == "move-to-default";
            if asked && !system {
                return Ok(());
            }
            Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "project {project} holds namespaces {}: move them to another project first{}",
                    held.join(", "),
                    if system {
                        ""
                    } else {
                        ", or annotate the project drover.io/namespaces-on-delete=move-to-default"
                    }
                ),
            ))
        })
    }

    fn prepare_create<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            let name = str_at(obj, "/metadata/name").to_owned();
            let cluster = str_at(obj, "/metadata/namespace").to_owned();
            match str_at(obj, "/spec/clusterName") {
                "" => obj["spec"]["clusterName"] = json!(cluster),
                c if c != cluster => {
                    return Err(ApiError::invalid(
                        "Project",
                        api::GROUP,
                        &name,
                        &[FieldError::invalid(
                            "spec.clusterName",
                            c.to_owned(),
                            "must be the project's namespace",
                        )],
                    ))
                }
                _ => {}
            }
            if str_at(obj, "/spec/displayName").is_empty() {
                obj["spec"]["displayName"] = json!(name);
            }
            let owner = NewObject {
                group: api::GROUP,
                plural: "projectroletemplatebindings",
                object: json!({
                    "apiVersion": api::API_VERSION, "kind": "ProjectRoleTemplateBinding",
                    "metadata": {"namespace": name, "name": format!("owner-{}", ctx.user.name)},
                    "spec": {"userName": ctx.user.name, "roleTemplateName": "project-owner", "projectName": format!("{cluster}:{name}")},
                }),
            };
            Ok(Prepared {
                extra: vec![owner],
                records: vec![
                    reserve_namespace(&ctx.store, "projects", Some(&cluster), &name).await?,
                ],
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
            let project = str_at(new, "/metadata/name").to_owned();
            let cluster = str_at(new, "/metadata/namespace").to_owned();
            // The project's own limits are the cluster owners' to give; its
            // owners share them out among its namespaces.
            let limits_changed = ["/spec/resourceQuota", "/spec/namespaceDefaultResourceQuota"]
                .iter()
                .any(|p| new.pointer(p) != old.pointer(p));
            if limits_changed {
                let snapshot = self.authz.snapshot().await?;
                if !snapshot.owns_cluster(&ctx.user, &cluster) {
                    return Err(ApiError::forbidden_because(format!(
                        "user {:?} may not change project {project}'s quota: only the owners of cluster {cluster} may",
                        ctx.user.name
                    )));
                }
            }
            let shares_changed = limits_changed
                || new.pointer("/spec/namespaceResourceQuotas")
                    != old.pointer("/spec/namespaceResourceQuotas");
            if shares_changed {
                if let Ok(spec) = serde_json::from_value::<api::ProjectSpec>(new["spec"].clone()) {
                    let held =
                        super::namespaces::of_project(&ctx.store, &cluster, &project).await?;
                    let held: Vec<&str> = held.iter().map(String::as_str).collect();
                    super::namespaces::check_quota(&project, &spec, &held)?;
                }
            }
            if new.pointer("/spec/clusterName") != old.pointer("/spec/clusterName") {
                return Err(ApiError::invalid(
                    "Project",
                    api::GROUP,
                    str_at(new, "/metadata/name"),
                    &[FieldError::forbidden(
                        "spec.clusterName",
                        "field is immutable",
                    )],
                ));
            }
            Ok(())
        })
    }

    fn committed(&self) {
        self.authz.invalidate();
    }

    /// Its reservation and bindings go with it; its namespaces (when the
    /// deletion asked for it) move to the Default project, whose records
    /// change in the same transaction; the cluster's controller then sets
    /// their annotation.
    fn delete_ops<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<Op>, ApiError>> {
        Box::pin(async move {
            let project = str_at(obj, "/metadata/name");
            let cluster = str_at(obj, "/metadata/namespace");
            let at = ctx.store.revisions().await.map_err(unavailable)?.current;
            let mut ops = project_dependents(&ctx.store, project, at).await?;
            let projects = super::namespaces::project_objects(&ctx.store, cluster).await;
            let (default, _) = super::namespaces::system_projects(&projects);
            for (ns, (record, kv)) in super::namespaces::records(&ctx.store, cluster).await? {
                if record.project != project {
                    continue;
                }
                let moved = default.as_ref().map(|d| super::namespaces::Record {
                    project: d.clone(),
                    uid: record.uid.clone(),
                });
                ops.extend(super::namespaces::record_op(
                    cluster,
                    &ns,
                    Some(&kv),
                    moved.as_ref(),
                ));
            }
            Ok(ops)
        })
    }
}
