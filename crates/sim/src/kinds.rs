//! The built-in kinds the simulator serves, with schemas derived from
//! k8s-openapi's types (so wrong shapes are refused as kube-apiserver
//! refuses them) and the columns `kubectl get` shows for them.

use std::sync::Arc;

use drover_apiserver::{Column, KindInfo, Registry, Strategy};
use drover_core::api::schema_for;
use k8s_openapi::api::{
    apps::v1 as apps, coordination::v1 as coordination, core::v1 as core,
    networking::v1 as networking, rbac::v1 as rbac,
};
use serde_json::Value;

use crate::authz::SimAuthorizer;

/// Schemas of the built-in kinds, made once per process and shared by every
/// simulated cluster in it (a Pod's inlined schema is several MiB in memory).
/// `key` names the message, e.g. `Pod` or `events.k8s.io/Event`.
pub(crate) fn shared(key: &str, make: fn() -> Value) -> Arc<Value> {
    static CACHE: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, Arc<Value>>>,
    > = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(key.to_owned())
        .or_insert_with(|| Arc::new(make()))
        .clone()
}

/// A kind: its schema, columns, and whether writes change RBAC.
pub(crate) struct Builtin {
    schema: Arc<Value>,
    columns: Vec<Column>,
    cell: fn(&Column, &Value) -> Value,
    rbac: Option<Arc<SimAuthorizer>>,
    /// ServiceAccounts' token signer.
    signer: Option<Arc<crate::tokens::Signer>>,
    /// The protobuf message of the kind, e.g. `api.core.v1.Namespace`.
    proto: String,
    kind: &'static str,
    plural: &'static str,
    group: &'static str,
}

impl Builtin {
    /// kube-apiserver's rule for aggregated ClusterRoles: their rules come
    /// from other roles, so only who may escalate may set an
    /// `aggregationRule`.
    async fn may_aggregate(
        &self,
        ctx: &drover_apiserver::Context,
        obj: &Value,
    ) -> Result<(), drover_apiserver::ApiError> {
        if ctx.user.groups.iter().any(|g| g == crate::authz::MASTERS) {
            return Ok(());
        }
        let name = drover_apiserver::object::name(obj);
        let attrs = drover_rbac::Attributes::resource(
            "escalate",
            "rbac.authorization.k8s.io",
            "clusterroles",
            "",
            name,
        );
        if ctx.authorizer.authorize(&ctx.user, &attrs).await? {
            return Ok(());
        }
        Err(drover_apiserver::ApiError::forbidden_because(format!(
            "clusterroles.rbac.authorization.k8s.io {name:?} is forbidden: must have cluster-admin privileges to use the aggregationRule"
        )))
    }

    /// kube-apiserver's RBAC escalation check: a role may only state rules
    /// its author holds (or `escalate`), a binding may only grant a role
    /// whose rules its author holds in that scope (or `bind`).
    async fn no_escalation(
        &self,
        ctx: &drover_apiserver::Context,
        obj: &Value,
    ) -> Result<(), drover_apiserver::ApiError> {
        let Some(authz) = &self.rbac else {
            return Ok(());
        };
        let ns = drover_apiserver::object::meta_str(obj, "namespace").to_owned();
        let name = drover_apiserver::object::name(obj).to_owned();
        let (wanted, verb, resource, role_name) = match self.kind {
            "Role" | "ClusterRole" => (
                crate::authz::stated_rules(obj),
                "escalate",
                self.plural,
                name.clone(),
            ),
            "RoleBinding" | "ClusterRoleBinding" => {
                let role_ref = obj.get("roleRef").cloned().unwrap_or_default();
                let plural = if role_ref["kind"] == "Role" {
                    "roles"
                } else {
                    "clusterroles"
                };
                (
                    authz.referenced_rules(&role_ref, &ns).await?,
                    "bind",
                    plural,
                    role_ref["name"].as_str().unwrap_or_default().to_owned(),
                )
            }
            _ => return Ok(()),
        };
        let held = ctx.authorizer.rules(&ctx.user).await?;
        let missing = held.covers((!ns.is_empty()).then_some(ns.as_str()), &wanted);
        if missing.is_empty() {
            return Ok(());
        }
        let attrs = drover_rbac::Attributes::resource(
            verb,
            "rbac.authorization.k8s.io",
            resource,
            &ns,
            &role_name,
        );
        if ctx.authorizer.authorize(&ctx.user, &attrs).await? {
            return Ok(());
        }
        let list: Vec<String> = missing
            .iter()
            .take(10)
            .map(|r| {
                format!(
                    "{{APIGroups:{:?}, Resources:{:?}, Verbs:{:?}}}",
                    r.api_groups, r.resources, r.verbs
                )
            })
            .collect();
        Err(drover_apiserver::ApiError::forbidden_because(format!(
            "{}.rbac.authorization.k8s.io {name:?} is forbidden: user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{}",
            self.plural,
            ctx.user.name,
            ctx.user.groups,
            list.join("\n")
        )))
    }
}

impl Strategy for Builtin {
    fn schema(&self) -> Value {
        (*self.schema).clone()
    }

    fn shared_schema(&self) -> Arc<Value> {
        self.schema.clone()
    }

    fn columns(&self) -> Vec<Column> {
        self.columns.clone()
    }

    fn cell(&self, column: &Column, obj: &Value) -> Value {
        (self.cell)(column, obj)
    }

    fn kind_from_url(&self) -> bool {
        true
    }

    fn action_kind(&self, action: &str) -> Option<(&'static str, &'static str, &'static str)> {
        match (self.kind, action) {
            ("Pod", "eviction") => Some(("policy", "v1", "Eviction")),
            ("ServiceAccount", "token") => Some(("authentication.k8s.io", "v1", "TokenRequest")),
            _ => None,
        }
    }

    fn name_column(&self) -> bool {
        self.kind != "Event"
    }

    fn selectable_fields(&self) -> &'static [&'static str] {
        selectable_fields(self.group, self.kind)
    }

    fn field_value(&self, obj: &Value, field: &str) -> String {
        use drover_apiserver::selector::field_text;
        // Where kube's field names or unset values differ from the object's.
        let (field, unset) = match (self.kind, field) {
            ("Pod", "spec.hostNetwork") | ("Node", "spec.unschedulable") => (field, "false"),
            ("Job", "status.successful") => ("status.succeeded", "0"),
            ("Event", "source") => ("source.component", ""),
            _ => (field, ""),
        };
        let text = field_text(obj, field);
        if text.is_empty() {
            unset.to_owned()
        } else {
            text
        }
    }

    fn decode_protobuf(&self, raw: &[u8]) -> Option<Result<Value, drover_apiserver::ApiError>> {
        Some(drover_apiserver::typed::decode(
            &self.proto,
            raw,
            &self.schema,
        ))
    }

    fn prepare_create<'a>(
        &'a self,
        ctx: &'a drover_apiserver::Context,
        obj: &'a mut Value,
    ) -> futures::future::BoxFuture<
        'a,
        Result<drover_apiserver::Prepared, drover_apiserver::ApiError>,
    > {
        Box::pin(async move {
            crate::defaults::apply(self.kind, obj);
            let mut ops = Vec::new();
            match self.kind {
                "Namespace" => crate::admission::pod_security_labels(obj, None)?,
                // Workloads answer and read back with the status kube
                // serializes before their controller fills it (its fields
                // without `omitempty`).
                "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "CronJob" | "Job" => {
                    if self.kind == "Job" {
                        crate::jobs::prepare_job(obj)?;
                    }
                    obj["status"] = match self.kind {
                        "ReplicaSet" => serde_json::json!({"replicas": 0}),
                        "StatefulSet" => serde_json::json!({"replicas": 0, "availableReplicas": 0}),
                        "DaemonSet" => {
                            serde_json::json!({"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0})
                        }
                        _ => serde_json::json!({}),
                    };
                }
                "Service" => ops = crate::services::allocate(&ctx.store, obj, None).await?,
                _ => {}
            }
            if self.kind == "CronJob" {
                crate::jobs::validate_cronjob(obj)?;
            }
            if self.kind == "ClusterRole" && obj.get("aggregationRule").is_some() {
                self.may_aggregate(ctx, obj).await?;
            }
            self.no_escalation(ctx, obj).await?;
            let ns = drover_apiserver::object::meta_str(obj, "namespace").to_owned();
            if !ns.is_empty() {
                if self.kind == "Pod" {
                    crate::admission::limit_ranges(&ctx.store, &ns, obj).await?;
                }
                let name = drover_apiserver::object::name(obj).to_owned();
                let warnings =
                    crate::admission::pod_security(&ctx.store, &ns, self.kind, &name, obj).await?;
                crate::admission::check_quota(&ctx.store, &ns, self.plural, self.group, &name, obj)
                    .await?;
                return Ok(drover_apiserver::Prepared {
                    warnings,
                    ops,
                    ..Default::default()
                });
            }
            Ok(drover_apiserver::Prepared {
                ops,
                ..Default::default()
            })
        })
    }

    fn update_ops<'a>(
        &'a self,
        ctx: &'a drover_apiserver::Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> futures::future::BoxFuture<'a, Result<Vec<drover_store::Op>, drover_apiserver::ApiError>>
    {
        Box::pin(async move {
            match self.kind {
                "Service" => crate::services::allocate(&ctx.store, new, Some(old)).await,
                "CronJob" => crate::jobs::validate_cronjob(new).map(|()| Vec::new()),
                _ => Ok(Vec::new()),
            }
        })
    }

    fn delete_ops<'a>(
        &'a self,
        ctx: &'a drover_apiserver::Context,
        obj: &'a Value,
    ) -> futures::future::BoxFuture<'a, Result<Vec<drover_store::Op>, drover_apiserver::ApiError>>
    {
        Box::pin(async move {
            match self.kind {
                "Service" => crate::services::release(&ctx.store, obj).await,
                _ => Ok(Vec::new()),
            }
        })
    }

    fn after_delete<'a>(
        &'a self,
        ctx: &'a drover_apiserver::Context,
        obj: &'a Value,
    ) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            if self.kind == "Pod" {
                crate::workloads::killed(&ctx.store, obj).await;
            }
        })
    }

    fn prepare_update<'a>(
        &'a self,
        ctx: &'a drover_apiserver::Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> futures::future::BoxFuture<'a, Result<(), drover_apiserver::ApiError>> {
        Box::pin(async move {
            crate::defaults::apply(self.kind, new);
            if self.kind == "Namespace" {
                crate::admission::pod_security_labels(new, Some(old))?;
            }
            if matches!(self.kind, "RoleBinding" | "ClusterRoleBinding")
                && new.get("roleRef") != old.get("roleRef")
            {
                return Err(drover_apiserver::ApiError::invalid(
                    self.kind,
                    self.group,
                    drover_apiserver::object::name(new),
                    &[drover_apiserver::FieldError::invalid(
                        "roleRef",
                        new.get("roleRef").cloned().unwrap_or_default(),
                        "cannot change roleRef",
                    )],
                ));
            }
            if self.kind == "ClusterRole"
                && new.get("aggregationRule") != old.get("aggregationRule")
            {
                self.may_aggregate(ctx, new).await?;
            }
            if new.get("rules") != old.get("rules") || new.get("roleRef") != old.get("roleRef") {
                self.no_escalation(ctx, new).await?;
            }
            Ok(())
        })
    }

    fn invalid_name(&self, name: &str) -> Option<String> {
        match self.group {
            // RBAC names are path segments (system:basic-user).
            "rbac.authorization.k8s.io" => (name == "." || name == ".." || name.contains('/') || name.contains('%'))
                .then(|| "may not be '.' or '..' and may not contain '/' or '%'".to_owned()),
            _ if self.kind == "Namespace" => (!drover_apiserver::object::is_dns_label(name)).then(|| {
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character".to_owned()
            }),
            _ => (!drover_apiserver::object::is_dns_subdomain(name)).then(|| drover_apiserver::object::DNS1123_SUBDOMAIN.to_owned()),
        }
    }

    fn list_strategies(&self) -> Option<drover_apiserver::strategic::ListStrategies> {
        Some(drover_apiserver::strategic::kubernetes_lists)
    }

    fn holds_deletion(&self, obj: &Value) -> bool {
        let spec_finalizers = self.kind == "Namespace"
            && obj
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
        spec_finalizers || !drover_apiserver::object::finalizers(obj).is_empty()
    }

    fn mark_deleting(&self, obj: &mut Value) {
        if self.kind == "Namespace" {
            obj["status"]["phase"] = Value::String("Terminating".into());
        }
    }

    fn create_subresource<'a>(
        &'a self,
        ctx: &'a drover_apiserver::Context,
        namespace: &'a str,
        name: &'a str,
        subresource: &'a str,
        body: Value,
    ) -> futures::future::BoxFuture<'a, Result<Value, drover_apiserver::ApiError>> {
        Box::pin(async move {
            match (self.kind, subresource) {
                ("ServiceAccount", "token") => {
                    let signer = self
                        .signer
                        .as_ref()
                        .ok_or_else(|| drover_apiserver::ApiError::internal("no token signer"))?;
                    crate::tokens::request(&ctx.store, signer, namespace, name, body).await
                }
                ("Pod", "eviction") => {
                    crate::disruption::evict(&ctx.store, namespace, name, &body).await
                }
                _ => Err(drover_apiserver::ApiError::method_not_allowed(subresource)),
            }
        })
    }

    fn stream<'a>(
        &'a self,
        _ctx: &'a drover_apiserver::Context,
        obj: Value,
        subresource: &'a str,
        req: axum::extract::Request,
    ) -> futures::future::BoxFuture<'a, Result<axum::response::Response, drover_apiserver::ApiError>>
    {
        Box::pin(async move {
            match (self.kind, subresource) {
                ("Pod", "log") => crate::logs::stream(obj, req.uri().query().unwrap_or_default()),
                ("Pod", "exec") => crate::exec::exec(obj, req).await,
                ("Pod", "attach") => crate::exec::attach(obj, req).await,
                ("Pod", "portforward") => crate::portforward::portforward(obj, req).await,
                _ => Err(drover_apiserver::ApiError::method_not_allowed(subresource)),
            }
        })
    }

    fn decode_subresource_protobuf(
        &self,
        kind: &str,
        raw: &[u8],
    ) -> Option<Result<Value, drover_apiserver::ApiError>> {
        match kind {
            "TokenRequest" => {
                let schema = shared(
                    "TokenRequest",
                    schema_for::<k8s_openapi::api::authentication::v1::TokenRequest>,
                );
                Some(drover_apiserver::typed::decode(
                    "api.authentication.v1.TokenRequest",
                    raw,
                    &schema,
                ))
            }
            "Eviction" => {
                let schema = shared(
                    "Eviction",
                    schema_for::<k8s_openapi::api::policy::v1::Eviction>,
                );
                Some(drover_apiserver::typed::decode(
                    "api.policy.v1.Eviction",
                    raw,
                    &schema,
                ))
            }
            _ => None,
        }
    }

    fn committed(&self) {
        if let Some(a) = &self.rbac {
            a.invalidate();
        }
    }
}

/// The fields kube-apiserver lets field selectors use, per kind (besides
/// `metadata.name` and `metadata.namespace`).
fn selectable_fields(group: &str, kind: &str) -> &'static [&'static str] {
    match (group, kind) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "Event") => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        ("", "Namespace") => &["status.phase"],
        ("", "Secret") => &["type"],
        ("", "Node") => &["spec.unschedulable"],
        ("", "Service") => &["spec.clusterIP", "spec.type"],
        ("apps", "ReplicaSet") => &["status.replicas"],
        ("batch", "Job") => &["status.successful"],
        _ => &[],
    }
}

/// Discovery categories: `all` holds what `kubectl get all` lists.
fn categories(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" | "Service" | "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job"
        | "CronJob" => &["all"],
        _ => &[],
    }
}

fn pointer(column: &Column, obj: &Value) -> Value {
    obj.pointer(column.pointer).cloned().unwrap_or(Value::Null)
}

/// Cells kubectl computes on the server side for core kinds.
fn derived(column: &Column, obj: &Value) -> Value {
    let arr_len = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_array)
            .map(Vec::len)
            .unwrap_or(0)
    };
    let map_len = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_object)
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match column.pointer {
        "#data" => Value::from(map_len("/data") + map_len("/binaryData") + map_len("/stringData")),
        // kubectl's podSelector column: the labels as a selector, or
        // <none> for all pods.
        "#pod-selector" => {
            let mut labels: Vec<String> = obj
                .pointer("/spec/podSelector/matchLabels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            for e in obj
                .pointer("/spec/podSelector/matchExpressions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key = e["key"].as_str().unwrap_or_default();
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                labels.push(match e["operator"].as_str().unwrap_or_default() {
                    "In" => format!("{key} in ({})", values.join(",")),
                    "NotIn" => format!("{key} notin ({})", values.join(",")),
                    "Exists" => key.to_owned(),
                    _ => format!("!{key}"),
                });
            }
            Value::from(if labels.is_empty() {
                "<none>".to_owned()
            } else {
                labels.join(",")
            })
        }
        "#node-status" => {
            let ready = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .map(|c| c["status"] == "True");
            Value::from(match ready {
                Some(true) => "Ready",
                Some(false) => "NotReady",
                None => "Unknown",
            })
        }
        "#roles" => {
            let roles: Vec<String> = obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| {
                    l.keys()
                        .filter_map(|k| {
                            k.strip_prefix("node-role.kubernetes.io/")
                                .map(str::to_owned)
                        })
                        .collect()
                })
                .unwrap_or_default();
            Value::from(if roles.is_empty() {
                "<none>".to_owned()
            } else {
                roles.join(",")
            })
        }
        "#pod-ready" => {
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            Value::from(format!("{ready}/{}", arr_len("/spec/containers")))
        }
        // kubectl's: the restarts, and how long ago the last one was.
        "#restarts" => {
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let restarts: i64 = statuses
                .iter()
                .filter_map(|c| c["restartCount"].as_i64())
                .sum();
            let last = statuses
                .iter()
                .filter_map(|c| c.pointer("/lastState/terminated/finishedAt")?.as_str())
                .max();
            Value::from(match last {
                Some(at) if restarts > 0 => {
                    format!("{restarts} ({} ago)", drover_core::meta::age(at))
                }
                _ => restarts.to_string(),
            })
        }
        // kubectl's: the first container's waiting or terminated reason
        // over the phase, Terminating while deleted.
        "#pod-status" => {
            let mut reason = match s("/status/reason") {
                r if r.is_empty() => s("/status/phase"),
                r => r,
            };
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for c in statuses.iter().rev() {
                let waiting = c.pointer("/state/waiting/reason").and_then(Value::as_str);
                let terminated = c
                    .pointer("/state/terminated/reason")
                    .and_then(Value::as_str);
                if let Some(r) = waiting.or(terminated).filter(|r| !r.is_empty()) {
                    reason = r.to_owned();
                }
            }
            if obj.pointer("/metadata/deletionTimestamp").is_some() {
                reason = "Terminating".to_owned();
            }
            Value::from(reason)
        }
        "#ready-replicas" => Value::from(format!(
            "{}/{}",
            obj.pointer("/status/readyReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            obj.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        )),
        "#ports" => {
            let ports: Vec<String> = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let proto = p["protocol"].as_str().unwrap_or("TCP");
                            match p["nodePort"].as_i64() {
                                Some(node) => format!("{}:{node}/{proto}", p["port"]),
                                None => format!("{}/{proto}", p["port"]),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            Value::from(if ports.is_empty() {
                "<none>".to_owned()
            } else {
                ports.join(",")
            })
        }
        "#internal-ip" | "#external-ip" => {
            let wanted = if column.pointer == "#internal-ip" {
                "InternalIP"
            } else {
                "ExternalIP"
            };
            let found = obj
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|x| x["type"] == wanted))
                .and_then(|x| x["address"].as_str())
                .map(str::to_owned);
            Value::from(found.unwrap_or_else(|| "<none>".to_owned()))
        }
        "#pod-ip" | "#node-name" | "#nominated-node" => {
            let pointer = match column.pointer {
                "#pod-ip" => "/status/podIP",
                "#node-name" => "/spec/nodeName",
                _ => "/status/nominatedNodeName",
            };
            Value::from(
                Some(s(pointer))
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| "<none>".into()),
            )
        }
        "#readiness-gates" => Value::from("<none>"),
        "#min-available" | "#max-unavailable" => {
            let field = if column.pointer == "#min-available" {
                "/spec/minAvailable"
            } else {
                "/spec/maxUnavailable"
            };
            Value::from(match obj.pointer(field) {
                Some(Value::String(v)) => v.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => "N/A".to_owned(),
            })
        }
        "#controller" => Value::from(
            obj.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|refs| refs.iter().find(|r| r["controller"] == true))
                .map(|r| {
                    let group = r["apiVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .split_once('/')
                        .map(|(g, _)| format!(".{g}"))
                        .unwrap_or_default();
                    format!(
                        "{}{group}/{}",
                        r["kind"].as_str().unwrap_or_default().to_lowercase(),
                        r["name"].as_str().unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| "<none>".to_owned()),
        ),
        "#last-seen" | "#first-seen" => {
            let fields: &[&str] = if column.pointer == "#last-seen" {
                &[
                    "/lastTimestamp",
                    "/eventTime",
                    "/deprecatedLastTimestamp",
                    "/metadata/creationTimestamp",
                ]
            } else {
                &[
                    "/firstTimestamp",
                    "/eventTime",
                    "/deprecatedFirstTimestamp",
                    "/metadata/creationTimestamp",
                ]
            };
            let at = fields
                .iter()
                .map(|p| s(p))
                .find(|t| !t.is_empty())
                .unwrap_or_default();
            Value::from(drover_core::meta::age(&at))
        }
        "#involved" => {
            let (kind, name) = if obj.get("regarding").is_some() {
                (s("/regarding/kind"), s("/regarding/name"))
            } else {
                (s("/involvedObject/kind"), s("/involvedObject/name"))
            };
            Value::from(format!("{}/{name}", kind.to_lowercase()))
        }
        "#source" => {
            let host = s("/source/host");
            Value::from(if host.is_empty() {
                s("/source/component")
            } else {
                format!("{}, {host}", s("/source/component"))
            })
        }
        "#job-status" => {
            let has = |t: &str| {
                obj.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == t && c["status"] == "True"))
            };
            Value::from(if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if has("Suspended") {
                "Suspended"
            } else {
                "Running"
            })
        }
        "#completions" => {
            let done = obj
                .pointer("/status/succeeded")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            Value::from(
                match obj.pointer("/spec/completions").and_then(Value::as_i64) {
                    Some(c) => format!("{done}/{c}"),
                    None => format!(
                        "{done}/1 of {}",
                        obj.pointer("/spec/parallelism")
                            .and_then(Value::as_i64)
                            .unwrap_or(1)
                    ),
                },
            )
        }
        "#duration" => {
            let start = drover_core::meta::parse_rfc3339(&s("/status/startTime"));
            let end = drover_core::meta::parse_rfc3339(&s("/status/completionTime"))
                .unwrap_or_else(std::time::SystemTime::now);
            Value::from(match start {
                Some(start) => {
                    drover_core::meta::human_duration(end.duration_since(start).unwrap_or_default())
                }
                None => String::new(),
            })
        }
        "#cron-active" => Value::from(arr_len("/status/active")),
        "#timezone" => Value::from(
            Some(s("/spec/timeZone"))
                .filter(|z| !z.is_empty())
                .unwrap_or_else(|| "<none>".into()),
        ),
        "#last-schedule" => Value::from(
            match drover_core::meta::parse_rfc3339(&s("/status/lastScheduleTime")) {
                Some(t) => drover_core::meta::human_duration(
                    std::time::SystemTime::now()
                        .duration_since(t)
                        .unwrap_or_default(),
                ),
                None => "<none>".to_owned(),
            },
        ),
        "#access-modes" => {
            let short: Vec<&str> = obj
                .pointer("/status/accessModes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|m| match m {
                    "ReadWriteOnce" => "RWO",
                    "ReadOnlyMany" => "ROX",
                    "ReadWriteMany" => "RWX",
                    "ReadWriteOncePod" => "RWOP",
                    other => other,
                })
                .collect();
            Value::from(short.join(","))
        }
        "#slice-ports" => {
            let ports: Vec<String> = obj
                .pointer("/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_i64().map(|n| n.to_string()))
                .collect();
            Value::from(if ports.is_empty() {
                "<unset>".to_owned()
            } else {
                ports.join(",")
            })
        }
        "#slice-endpoints" => {
            let ips: Vec<String> = obj
                .pointer("/endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    e.pointer("/addresses/0")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect();
            Value::from(if ips.is_empty() {
                "<unset>".to_owned()
            } else {
                ips.join(",")
            })
        }
        "#ingress-hosts" => {
            let hosts: Vec<String> = obj
                .pointer("/spec/rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|r| r["host"].as_str().unwrap_or("*").to_owned())
                .collect();
            Value::from(if hosts.is_empty() {
                "*".to_owned()
            } else {
                hosts.join(",")
            })
        }
        "#ingress-ports" => Value::from(
            if obj
                .pointer("/spec/tls")
                .and_then(Value::as_array)
                .is_some_and(|t| !t.is_empty())
            {
                "80, 443"
            } else {
                "80"
            },
        ),
        "#ingress-class" => Value::from(
            Some(s("/spec/ingressClassName"))
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "<none>".into()),
        ),
        "#endpoints" => {
            let mut addrs: Vec<String> = Vec::new();
            for subset in obj
                .pointer("/subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for a in subset["addresses"].as_array().into_iter().flatten() {
                    for p in subset["ports"].as_array().into_iter().flatten() {
                        addrs.push(format!(
                            "{}:{}",
                            a["ip"].as_str().unwrap_or_default(),
                            p["port"]
                        ));
                    }
                }
            }
            Value::from(if addrs.is_empty() {
                "<none>".to_owned()
            } else {
                addrs.join(",")
            })
        }
        "#phase" => Value::from(match s("/status/phase").as_str() {
            "" => "Active".to_owned(),
            p => p.to_owned(),
        }),
        _ => pointer(column, obj),
    }
}

fn col(name: &'static str, ty: &'static str, pointer: &'static str, priority: u8) -> Column {
    let c = Column::new(name, ty, name, pointer);
    if priority > 0 {
        c.wide()
    } else {
        c
    }
}

/// Register every built-in kind.
pub(crate) fn register(
    reg: &mut Registry,
    authz: &Arc<SimAuthorizer>,
    signer: &Arc<crate::tokens::Signer>,
) {
    let mut add = |group: &'static str,
                   kind: &'static str,
                   plural: &'static str,
                   singular: &'static str,
                   short: &'static [&'static str],
                   namespaced: bool,
                   status: bool,
                   schema: fn() -> Value,
                   columns: Vec<Column>| {
        let rbac = (group == "rbac.authorization.k8s.io").then(|| authz.clone());
        let cell = if columns.iter().any(|c| c.pointer.starts_with('#')) {
            derived
        } else {
            pointer
        };
        let package = match group {
            "" => "core",
            "rbac.authorization.k8s.io" => "rbac",
            g => g.split('.').next().unwrap_or(g),
        };
        let version = "v1";
        let proto = format!("api.{package}.{version}.{kind}");
        reg.register(
            KindInfo {
                group,
                version,
                kind,
                plural,
                singular,
                short_names: short,
                namespaced,
                status,
                list_filtered: false,
                name_prefix: None,
                create_only: false,
                streams: if kind == "Pod" {
                    &["log", "exec", "attach", "portforward"]
                } else {
                    &[]
                },
                scale: matches!(kind, "Deployment" | "ReplicaSet" | "StatefulSet"),
                actions: match kind {
                    "ServiceAccount" => &["token"],
                    "Pod" => &["eviction"],
                    _ => &[],
                },
                categories: categories(kind),
            },
            Builtin {
                schema: if group.is_empty() || group == "apps" {
                    shared(kind, schema)
                } else {
                    shared(&format!("{group}/{kind}"), schema)
                },
                columns,
                cell,
                rbac,
                signer: (kind == "ServiceAccount").then(|| signer.clone()),
                proto,
                kind,
                plural,
                group,
            },
        );
    };
    add(
        "",
        "Namespace",
        "namespaces",
        "namespace",
        &["ns"],
        false,
        true,
        schema_for::<core::Namespace>,
        vec![col("Status", "string", "#phase", 0)],
    );
    add(
        "",
        "Node",
        "nodes",
        "node",
        &["no"],
        false,
        true,
        schema_for::<core::Node>,
        vec![
            col("Status", "string", "#node-status", 0),
            col("Roles", "string", "#roles", 0),
            col("Age", "date", "/metadata/creationTimestamp", 0),
            col("Version", "string", "/status/nodeInfo/kubeletVersion", 0),
            col("Internal-IP", "string", "#internal-ip", 1),
            col("External-IP", "string", "#external-ip", 1),
            col("OS-Image", "string", "/status/nodeInfo/osImage", 1),
            col(
                "Kernel-Version",
                "string",
                "/status/nodeInfo/kernelVersion",
                1,
            ),
            col(
                "Container-Runtime",
                "string",
                "/status/nodeInfo/containerRuntimeVersion",
                1,
            ),
        ],
    );
    add(
        "",
        "Pod",
        "pods",
        "pod",
        &["po"],
        true,
        true,
        schema_for::<core::Pod>,
        vec![
            col("Ready", "string", "#pod-ready", 0),
            col("Status", "string", "#pod-status", 0),
            col("Restarts", "string", "#restarts", 0),
            col("Age", "date", "/metadata/creationTimestamp", 0),
            col("IP", "string", "#pod-ip", 1),
            col("Node", "string", "#node-name", 1),
            col("Nominated Node", "string", "#nominated-node", 1),
            col("Readiness Gates", "string", "#readiness-gates", 1),
        ],
    );
    add(
        "",
        "Service",
        "services",
        "service",
        &["svc"],
        true,
        true,
        schema_for::<core::Service>,
        vec![
            col("Type", "string", "/spec/type", 0),
            col("Cluster-IP", "string", "/spec/clusterIP", 0),
            col("Port(s)", "string", "#ports", 0),
        ],
    );
    add(
        "",
        "Endpoints",
        "endpoints",
        "endpoints",
        &["ep"],
        true,
        false,
        schema_for::<core::Endpoints>,
        vec![col("Endpoints", "string", "#endpoints", 0)],
    );
    add(
        "",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        &["pvc"],
        true,
        true,
        schema_for::<core::PersistentVolumeClaim>,
        vec![
            col("Status", "string", "/status/phase", 0),
            col("Volume", "string", "/spec/volumeName", 0),
            col("Capacity", "string", "/status/capacity/storage", 0),
            col("Access Modes", "string", "#access-modes", 0),
            col("StorageClass", "string", "/spec/storageClassName", 0),
            col(
                "VolumeAttributesClass",
                "string",
                "/spec/volumeAttributesClassName",
                0,
            ),
            col("VolumeMode", "string", "/spec/volumeMode", 1),
        ],
    );
    add(
        "discovery.k8s.io",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        &[],
        true,
        false,
        schema_for::<k8s_openapi::api::discovery::v1::EndpointSlice>,
        vec![
            col("AddressType", "string", "/addressType", 0),
            col("Ports", "string", "#slice-ports", 0),
            col("Endpoints", "string", "#slice-endpoints", 0),
        ],
    );
    add(
        "events.k8s.io",
        "Event",
        "events",
        "event",
        &["ev"],
        true,
        false,
        schema_for::<k8s_openapi::api::events::v1::Event>,
        vec![
            col("Last Seen", "string", "#last-seen", 0),
            col("Type", "string", "/type", 0),
            col("Reason", "string", "/reason", 0),
            col("Object", "string", "#involved", 0),
            col("Message", "string", "/note", 0),
        ],
    );
    add(
        "batch",
        "Job",
        "jobs",
        "job",
        &[],
        true,
        true,
        schema_for::<k8s_openapi::api::batch::v1::Job>,
        vec![
            col("Status", "string", "#job-status", 0),
            col("Completions", "string", "#completions", 0),
            col("Duration", "string", "#duration", 0),
        ],
    );
    add(
        "batch",
        "CronJob",
        "cronjobs",
        "cronjob",
        &["cj"],
        true,
        true,
        schema_for::<k8s_openapi::api::batch::v1::CronJob>,
        vec![
            col("Schedule", "string", "/spec/schedule", 0),
            col("Timezone", "string", "#timezone", 0),
            col("Suspend", "boolean", "/spec/suspend", 0),
            col("Active", "integer", "#cron-active", 0),
            col("Last Schedule", "string", "#last-schedule", 0),
        ],
    );
    add(
        "networking.k8s.io",
        "Ingress",
        "ingresses",
        "ingress",
        &["ing"],
        true,
        true,
        schema_for::<networking::Ingress>,
        vec![
            col("Class", "string", "#ingress-class", 0),
            col("Hosts", "string", "#ingress-hosts", 0),
            col("Address", "string", "/status/loadBalancer/ingress/0/ip", 0),
            col("Ports", "string", "#ingress-ports", 0),
        ],
    );
    add(
        "networking.k8s.io",
        "IngressClass",
        "ingressclasses",
        "ingressclass",
        &[],
        false,
        false,
        schema_for::<networking::IngressClass>,
        vec![col("Controller", "string", "/spec/controller", 0)],
    );
    add(
        "storage.k8s.io",
        "StorageClass",
        "storageclasses",
        "storageclass",
        &["sc"],
        false,
        false,
        schema_for::<k8s_openapi::api::storage::v1::StorageClass>,
        vec![
            col("Provisioner", "string", "/provisioner", 0),
            col("ReclaimPolicy", "string", "/reclaimPolicy", 0),
            col("VolumeBindingMode", "string", "/volumeBindingMode", 0),
            col(
                "AllowVolumeExpansion",
                "boolean",
                "/allowVolumeExpansion",
                0,
            ),
        ],
    );
    add(
        "",
        "ConfigMap",
        "configmaps",
        "configmap",
        &["cm"],
        true,
        false,
        schema_for::<core::ConfigMap>,
        vec![col("Data", "integer", "#data", 0)],
    );
    add(
        "",
        "Secret",
        "secrets",
        "secret",
        &[],
        true,
        false,
        schema_for::<core::Secret>,
        vec![
            col("Type", "string", "/type", 0),
            col("Data", "integer", "#data", 0),
        ],
    );
    add(
        "",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        &["sa"],
        true,
        false,
        schema_for::<core::ServiceAccount>,
        vec![],
    );
    add(
        "",
        "ResourceQuota",
        "resourcequotas",
        "resourcequota",
        &["quota"],
        true,
        true,
        schema_for::<core::ResourceQuota>,
        vec![],
    );
    add(
        "",
        "LimitRange",
        "limitranges",
        "limitrange",
        &["limits"],
        true,
        false,
        schema_for::<core::LimitRange>,
        vec![],
    );
    add(
        "",
        "Event",
        "events",
        "event",
        &["ev"],
        true,
        false,
        schema_for::<core::Event>,
        vec![
            col("Last Seen", "string", "#last-seen", 0),
            col("Type", "string", "/type", 0),
            col("Reason", "string", "/reason", 0),
            col("Object", "string", "#involved", 0),
            col("Subobject", "string", "/involvedObject/fieldPath", 1),
            col("Source", "string", "#source", 1),
            col("Message", "string", "/message", 0),
            col("First Seen", "string", "#first-seen", 1),
            col("Count", "integer", "/count", 1),
            col("Name", "string", "/metadata/name", 1),
        ],
    );
    let replicas = || {
        vec![
            col("Ready", "string", "#ready-replicas", 0),
            col("Up-to-date", "integer", "/status/updatedReplicas", 0),
            col("Available", "integer", "/status/availableReplicas", 0),
        ]
    };
    add(
        "apps",
        "Deployment",
        "deployments",
        "deployment",
        &["deploy"],
        true,
        true,
        schema_for::<apps::Deployment>,
        replicas(),
    );
    add(
        "apps",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        &["rs"],
        true,
        true,
        schema_for::<apps::ReplicaSet>,
        vec![
            col("Desired", "integer", "/spec/replicas", 0),
            col("Current", "integer", "/status/replicas", 0),
            col("Ready", "integer", "/status/readyReplicas", 0),
        ],
    );
    add(
        "apps",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        &["sts"],
        true,
        true,
        schema_for::<apps::StatefulSet>,
        vec![col("Ready", "string", "#ready-replicas", 0)],
    );
    add(
        "apps",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        &["ds"],
        true,
        true,
        schema_for::<apps::DaemonSet>,
        vec![
            col("Desired", "integer", "/status/desiredNumberScheduled", 0),
            col("Current", "integer", "/status/currentNumberScheduled", 0),
            col("Ready", "integer", "/status/numberReady", 0),
        ],
    );
    add(
        "apps",
        "ControllerRevision",
        "controllerrevisions",
        "controllerrevision",
        &[],
        true,
        false,
        schema_for::<apps::ControllerRevision>,
        vec![
            col("Controller", "string", "#controller", 0),
            col("Revision", "integer", "/revision", 0),
        ],
    );
    add(
        "policy",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        &["pdb"],
        true,
        true,
        schema_for::<k8s_openapi::api::policy::v1::PodDisruptionBudget>,
        vec![
            col("Min Available", "string", "#min-available", 0),
            col("Max Unavailable", "string", "#max-unavailable", 0),
            col(
                "Allowed Disruptions",
                "integer",
                "/status/disruptionsAllowed",
                0,
            ),
        ],
    );
    add(
        "scheduling.k8s.io",
        "PriorityClass",
        "priorityclasses",
        "priorityclass",
        &["pc"],
        false,
        false,
        schema_for::<k8s_openapi::api::scheduling::v1::PriorityClass>,
        vec![
            col("Value", "integer", "/value", 0),
            col("Global-Default", "boolean", "/globalDefault", 0),
            col("PreemptionPolicy", "string", "/preemptionPolicy", 0),
        ],
    );
    add(
        "networking.k8s.io",
        "NetworkPolicy",
        "networkpolicies",
        "networkpolicy",
        &["netpol"],
        true,
        false,
        schema_for::<networking::NetworkPolicy>,
        vec![col("Pod-Selector", "string", "#pod-selector", 0)],
    );
    let rbac_group = "rbac.authorization.k8s.io";
    add(
        rbac_group,
        "Role",
        "roles",
        "role",
        &[],
        true,
        false,
        schema_for::<rbac::Role>,
        vec![],
    );
    add(
        rbac_group,
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        &[],
        true,
        false,
        schema_for::<rbac::RoleBinding>,
        vec![col("Role", "string", "/roleRef/name", 0)],
    );
    add(
        rbac_group,
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        &[],
        false,
        false,
        schema_for::<rbac::ClusterRole>,
        vec![],
    );
    add(
        rbac_group,
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        &[],
        false,
        false,
        schema_for::<rbac::ClusterRoleBinding>,
        vec![col("Role", "string", "/roleRef/name", 0)],
    );
    add(
        "coordination.k8s.io",
        "Lease",
        "leases",
        "lease",
        &[],
        true,
        false,
        schema_for::<coordination::Lease>,
        vec![col("Holder", "string", "/spec/holderIdentity", 0)],
    );
}
