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
pub(crate) fn shared(kind: &'static str, make: fn() -> Value) -> Arc<Value> {
    static CACHE: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<&'static str, Arc<Value>>>,
    > = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(kind).or_insert_with(|| Arc::new(make())).clone()
}

/// A kind: its schema, columns, and whether writes change RBAC.
pub(crate) struct Builtin {
    schema: Arc<Value>,
    columns: Vec<Column>,
    cell: fn(&Column, &Value) -> Value,
    rbac: Option<Arc<SimAuthorizer>>,
    /// The protobuf message of the kind, e.g. `api.core.v1.Namespace`.
    proto: String,
    kind: &'static str,
    plural: &'static str,
    group: &'static str,
}

impl Builtin {
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
            if self.kind == "Namespace" {
                crate::admission::pod_security_labels(obj, None)?;
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
                    ..Default::default()
                });
            }
            Ok(drover_apiserver::Prepared::default())
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
                    crate::tokens::request(&ctx.store, namespace, name, body).await
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
                _ => Err(drover_apiserver::ApiError::method_not_allowed(subresource)),
            }
        })
    }

    fn decode_subresource_protobuf(
        &self,
        kind: &str,
        raw: &[u8],
    ) -> Option<Result<Value, drover_apiserver::ApiError>> {
        (kind == "TokenRequest").then(|| {
            let schema = shared(
                "TokenRequest",
                schema_for::<k8s_openapi::api::authentication::v1::TokenRequest>,
            );
            drover_apiserver::typed::decode("api.authentication.v1.TokenRequest", raw, &schema)
        })
    }

    fn committed(&self) {
        if let Some(a) = &self.rbac {
            a.invalidate();
        }
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
        "#restarts" => Value::from(
            obj.pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| c["restartCount"].as_i64())
                        .sum::<i64>()
                })
                .unwrap_or(0),
        ),
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
                            format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP"))
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
pub(crate) fn register(reg: &mut Registry, authz: &Arc<SimAuthorizer>) {
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
        let proto = format!("api.{package}.v1.{kind}");
        reg.register(
            KindInfo {
                group,
                version: "v1",
                kind,
                plural,
                singular,
                short_names: short,
                namespaced,
                status,
                list_filtered: false,
                name_prefix: None,
                create_only: false,
                streams: if kind == "Pod" { &["log", "exec"] } else { &[] },
                scale: matches!(kind, "Deployment" | "ReplicaSet" | "StatefulSet"),
                actions: if kind == "ServiceAccount" {
                    &["token"]
                } else {
                    &[]
                },
                categories: &[],
            },
            Builtin {
                schema: shared(kind, schema),
                columns,
                cell,
                rbac,
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
            col("Status", "string", "/status/phase", 0),
            col("Restarts", "integer", "#restarts", 0),
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
        vec![],
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
            col("Type", "string", "/type", 0),
            col("Reason", "string", "/reason", 0),
            col("Message", "string", "/message", 0),
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
