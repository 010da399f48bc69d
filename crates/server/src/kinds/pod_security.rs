//! PodSecurityAdmissionConfigurationTemplate: Pod Security Admission
//! levels a Cluster names in
//! `spec.podSecurityAdmissionConfigurationTemplateName`. The cluster's
//! controller puts the levels on its namespaces as the
//! `pod-security.kubernetes.io/{enforce,audit,warn}[-version]` labels the
//! cluster's own admission reads (`controller::projection`), and the proxy
//! refuses a write that would lower them ([`lowered`]).
//!
//! Two templates ship with Drover, read-only: `drover-privileged` (no
//! restriction) and `drover-restricted` (`restricted` everywhere but the
//! system namespaces).

use drover_apiserver::{ApiError, Column, Context, FieldError, Strategy};
use drover_core::api::{self, schema_for};
use drover_core::keys;
use drover_core::pod_security::{valid_version, Level};
use drover_store::{Store, StoreError};
use futures::future::BoxFuture;
use serde_json::{json, Value};

/// The plural of the kind.
pub const PLURAL: &str = "podsecurityadmissionconfigurationtemplates";

/// The annotation Drover leaves on a namespace it labelled, naming the
/// template.
pub const TEMPLATE_ANNOTATION: &str = "drover.io/pod-security-template";

/// The Pod Security modes, in label order.
pub const MODES: [&str; 3] = ["enforce", "audit", "warn"];

/// The label of a mode (`pod-security.kubernetes.io/enforce`).
pub fn mode_label(mode: &str) -> String {
    format!("pod-security.kubernetes.io/{mode}")
}

/// The system namespaces `drover-restricted` leaves alone: Kubernetes'
/// own, Drover's agent, and those of the common networking, ingress,
/// certificate, storage and mesh add-ons whose pods need privileges (the
/// non-Rancher part of Rancher's `rancher-restricted` list).
pub const SYSTEM_EXEMPT: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    crate::kinds::registration::AGENT_NAMESPACE,
    "calico-apiserver",
    "calico-system",
    "tigera-operator",
    "kube-flannel",
    "cilium",
    "ingress-nginx",
    "cert-manager",
    "longhorn-system",
    "istio-system",
    "metallb-system",
];

/// The built-in templates: (name, spec).
pub fn builtins() -> Vec<(&'static str, Value)> {
    vec![
        (
            "drover-privileged",
            json!({
                "description": "No restriction: any pod is admitted.",
                "defaults": {"enforce": "privileged", "enforceVersion": "latest",
                             "audit": "privileged", "auditVersion": "latest",
                             "warn": "privileged", "warnVersion": "latest"},
                "exemptions": {},
                "builtin": true,
            }),
        ),
        (
            "drover-restricted",
            json!({
                "description": "The restricted Pod Security Standard everywhere but the system namespaces.",
                "defaults": {"enforce": "restricted", "enforceVersion": "latest",
                             "audit": "restricted", "auditVersion": "latest",
                             "warn": "restricted", "warnVersion": "latest"},
                "exemptions": {"namespaces": SYSTEM_EXEMPT},
                "builtin": true,
            }),
        ),
    ]
}

/// Create the built-in templates, or bring them up to this version's
/// definition.
pub async fn ensure_builtins(store: &Store) -> Result<(), StoreError> {
    for (name, spec) in builtins() {
        let key = keys::object(api::GROUP, PLURAL, None, name);
        let obj =
            drover_auth::bootstrap::object("PodSecurityAdmissionConfigurationTemplate", name, spec);
        drover_auth::bootstrap::ensure_builtin(store, &key, &obj).await?;
    }
    Ok(())
}

/// Read a template.
pub async fn get(
    store: &Store,
    name: &str,
) -> Result<Option<api::PodSecurityAdmissionConfigurationTemplateSpec>, StoreError> {
    let Some(kv) = store
        .get(&keys::object(api::GROUP, PLURAL, None, name))
        .await?
    else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<Value>(&kv.value)
        .ok()
        .and_then(|v| serde_json::from_value(v["spec"].clone()).ok()))
}

/// The level and version a template sets for each mode: (mode, level,
/// version).
pub fn levels(
    spec: &api::PodSecurityAdmissionConfigurationTemplateSpec,
) -> [(&'static str, String, String); 3] {
    let d = &spec.defaults;
    let pick = |level: &str, version: &Option<String>| {
        (
            if level.is_empty() {
                "privileged"
            } else {
                level
            }
            .to_owned(),
            version.clone().unwrap_or_else(|| "latest".into()),
        )
    };
    let (e, ev) = pick(&d.enforce, &d.enforce_version);
    let (a, av) = pick(&d.audit, &d.audit_version);
    let (w, wv) = pick(&d.warn, &d.warn_version);
    [("enforce", e, ev), ("audit", a, av), ("warn", w, wv)]
}

/// Whether the template applies to a namespace.
pub fn applies_to(spec: &api::PodSecurityAdmissionConfigurationTemplateSpec, ns: &str) -> bool {
    !spec.exemptions.namespaces.iter().any(|e| e == ns)
}

/// Which modes a namespace's new labels would put below the template's
/// level: (mode, the new value or `None` when removed, the template's
/// level). `labels` maps a label to its new value (`None`: removed); labels
/// not named are left as they are.
pub fn lowered(
    spec: &api::PodSecurityAdmissionConfigurationTemplateSpec,
    labels: &[(String, Option<String>)],
) -> Vec<(String, Option<String>, String)> {
    let mut out = Vec::new();
    for (mode, level, version) in levels(spec) {
        let wanted = Level::parse(&level).unwrap_or(Level::Privileged);
        if wanted == Level::Privileged {
            continue; // nothing below it
        }
        let label = mode_label(mode);
        let version_label = format!("{label}-version");
        for (k, v) in labels.iter() {
            let below = if *k == label {
                // An unknown level is refused by the cluster's admission
                // (or, where it is not, enforced as restricted).
                match v.as_deref() {
                    None => true,
                    Some(v) => Level::parse(v).is_some_and(|r| r < wanted),
                }
            } else if *k == version_label {
                // An older version checks less: only `latest` or the
                // template's own.
                v.as_deref().is_none_or(|v| v != "latest" && v != version)
            } else {
                false
            };
            if below {
                let what = if *k == label {
                    level.clone()
                } else {
                    format!("{level} at {version}")
                };
                out.push((k.clone(), v.clone(), what));
            }
        }
    }
    out
}

/// Labels a write sets (`Some`) or removes (`None`).
pub type LabelChanges = Vec<(String, Option<String>)>;

/// The Pod Security labels a namespace write through the proxy sets or
/// removes: (namespace, [(label, new value or `None` when removed)]). A
/// create or `PUT` states every label (a mode label left out is removed);
/// a merge or strategic merge patch names what it changes; a JSON patch
/// is read op by op.
pub fn label_writes(
    method: &axum::http::Method,
    path: &str,
    body: &[u8],
) -> Option<(String, LabelChanges)> {
    let path = path.split('?').next().unwrap_or_default();
    let rest = path.strip_prefix("/api/v1/namespaces")?;
    let v: Value = serde_json::from_slice(body).ok()?;
    let mode_labels: Vec<String> = MODES
        .iter()
        .flat_map(|m| [mode_label(m), format!("{}-version", mode_label(m))])
        .collect();
    let stated = |labels: &Value| -> LabelChanges {
        mode_labels
            .iter()
            .map(|l| (l.clone(), labels[l].as_str().map(str::to_owned)))
            .collect()
    };
    let named = |labels: &Value| -> LabelChanges {
        match labels {
            Value::Null => mode_labels.iter().map(|l| (l.clone(), None)).collect(),
            // Strategic merge patch directives: the map is replaced by
            // what follows, or deleted.
            Value::Object(m) if m.get("$patch") == Some(&json!("replace")) => stated(labels),
            Value::Object(m) if m.contains_key("$patch") => {
                mode_labels.iter().map(|l| (l.clone(), None)).collect()
            }
            Value::Object(m) => m
                .iter()
                .filter(|(k, _)| mode_labels.contains(k))
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned)))
                .collect(),
            _ => Vec::new(),
        }
    };
    if rest.is_empty() {
        if method != axum::http::Method::POST {
            return None;
        }
        let ns = v.pointer("/metadata/name")?.as_str()?.to_owned();
        // A create that states no level leaves the namespace to Drover.
        let set: Vec<_> = stated(&v["metadata"]["labels"])
            .into_iter()
            .filter(|(_, v)| v.is_some())
            .collect();
        return Some((ns, set));
    }
    let (ns, sub) = match rest.strip_prefix('/')?.split_once('/') {
        Some((ns, sub)) => (ns, Some(sub)),
        None => (rest.strip_prefix('/')?, None),
    };
    // The namespace itself, or its status and finalize subresources,
    // which take the whole object too.
    if ns.is_empty() || sub.is_some_and(|s| !matches!(s, "status" | "finalize")) {
        return None;
    }
    let changes = match (method.as_str(), &v) {
        ("PUT", v) => stated(&v["metadata"]["labels"]),
        ("PATCH", Value::Array(ops)) => ops
            .iter()
            .flat_map(|op| {
                let p = op["path"].as_str().unwrap_or_default();
                let label_at = |path: &str| {
                    path.strip_prefix("/metadata/labels/")
                        .map(|l| l.replace("~1", "/").replace("~0", "~"))
                        .filter(|l| mode_labels.contains(l))
                };
                // A move or copy's value is not in the patch: to or from a
                // mode label, it counts as a removal (refused whenever a
                // template sets a level).
                if matches!(op["op"].as_str(), Some("move" | "copy")) {
                    let from = op["from"].as_str().unwrap_or_default();
                    return [label_at(p), label_at(from)]
                        .into_iter()
                        .flatten()
                        .map(|l| (l, None))
                        .collect::<Vec<_>>();
                }
                let remove = op["op"] == "remove";
                let value = |x: &Value| (!remove).then(|| x.as_str().map(str::to_owned)).flatten();
                match p {
                    "/metadata" if remove => named(&Value::Null),
                    "/metadata" => stated(&op["value"]["labels"]),
                    "/metadata/labels" if remove => named(&Value::Null),
                    "/metadata/labels" => stated(&op["value"]),
                    _ => label_at(p)
                        .map(|l| vec![(l, value(&op["value"]))])
                        .unwrap_or_default(),
                }
            })
            .collect(),
        ("PATCH", v) => match v.pointer("/metadata") {
            Some(Value::Null) => named(&Value::Null),
            Some(m) if m.get("$patch") == Some(&json!("replace")) => stated(&m["labels"]),
            Some(m) if m.get("$patch").is_some() => named(&Value::Null),
            Some(m) => m.get("labels").map(named).unwrap_or_default(),
            None if v.get("$patch").is_some() => named(&Value::Null),
            None => Vec::new(),
        },
        _ => return None,
    };
    Some((ns.to_owned(), changes))
}

/// The Pod Security template a cluster names, as a namespace write
/// through the proxy is checked against it (read once per such write).
pub struct ClusterTemplate {
    cluster: String,
    name: String,
    /// `None`: the cluster names a template that does not exist.
    spec: Option<api::PodSecurityAdmissionConfigurationTemplateSpec>,
}

/// The template `cluster` names, if it names one.
pub async fn cluster_template(
    store: &Store,
    cluster: &str,
) -> Result<Option<ClusterTemplate>, ApiError> {
    let unavailable = |_| ApiError::unavailable("the datastore is unavailable");
    let Some(kv) = store
        .get(&keys::object(api::GROUP, "clusters", None, cluster))
        .await
        .map_err(unavailable)?
    else {
        return Ok(None);
    };
    let obj: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
    let Some(name) = obj["spec"]["podSecurityAdmissionConfigurationTemplateName"].as_str() else {
        return Ok(None);
    };
    let spec = get(store, name).await.map_err(unavailable)?;
    Ok(Some(ClusterTemplate {
        cluster: cluster.to_owned(),
        name: name.to_owned(),
        spec,
    }))
}

/// The namespace a write to the namespace object itself (or its status or
/// finalize subresource) names, whatever its body.
pub fn namespace_object(method: &axum::http::Method, path: &str, body: &[u8]) -> Option<String> {
    if !matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
        return None;
    }
    let path = path.split('?').next().unwrap_or_default();
    let rest = path.strip_prefix("/api/v1/namespaces")?;
    if rest.is_empty() {
        // A create: the name is in the body, if it can be read at all.
        return Some(
            serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.pointer("/metadata/name")?.as_str().map(str::to_owned))
                .unwrap_or_default(),
        );
    }
    let rest = rest.strip_prefix('/')?;
    let (ns, sub) = rest.split_once('/').unwrap_or((rest, ""));
    (!ns.is_empty() && matches!(sub, "" | "status" | "finalize")).then(|| ns.to_owned())
}

impl ClusterTemplate {
    /// Refuse a write to a namespace object whose labels cannot be read
    /// from its body (protobuf, a YAML apply patch), for anyone but the
    /// cluster's owners: it might lower the levels.
    pub fn check_opaque_write(&self, namespace: &str, owner: bool) -> Result<(), ApiError> {
        let exempt = self
            .spec
            .as_ref()
            .is_some_and(|s| !namespace.is_empty() && !applies_to(s, namespace));
        if owner || exempt {
            return Ok(());
        }
        Err(ApiError::forbidden_because(format!(
            "namespace {namespace:?}: cluster {}'s Pod Security template {} sets its levels, and this write's labels cannot be read to check them; send it as JSON",
            self.cluster, self.name
        )))
    }

    /// Add the levels the template sets to a namespace create that states
    /// none, so that the namespace is never without them; whether it added
    /// any.
    pub fn add_levels(&self, namespace: &mut Value) -> bool {
        let Some(spec) = &self.spec else {
            return false;
        };
        let ns = namespace["metadata"]["name"].as_str().unwrap_or_default();
        if !applies_to(spec, ns) {
            return false;
        }
        if !namespace["metadata"]["labels"].is_object() {
            namespace["metadata"]["labels"] = json!({});
        }
        let mut added = false;
        for (mode, level, version) in levels(spec) {
            let label = mode_label(mode);
            if namespace["metadata"]["labels"].get(&label).is_none() {
                namespace["metadata"]["labels"][&label] = json!(level);
                namespace["metadata"]["labels"][format!("{label}-version")] = json!(version);
                added = true;
            }
        }
        if added {
            if !namespace["metadata"]["annotations"].is_object() {
                namespace["metadata"]["annotations"] = json!({});
            }
            namespace["metadata"]["annotations"][TEMPLATE_ANNOTATION] = json!(self.name);
        }
        added
    }

    /// Refuse a namespace write that would put a Pod Security level below
    /// what the template sets there.
    pub fn check_write(&self, namespace: &str, labels: &LabelChanges) -> Result<(), ApiError> {
        if labels.is_empty() {
            return Ok(());
        }
        let (cluster, name) = (&self.cluster, &self.name);
        let Some(spec) = &self.spec else {
            return Err(ApiError::forbidden_because(format!(
                "namespace {namespace:?}: cluster {cluster} names Pod Security template {name}, which does not exist; its levels cannot change until it does"
            )));
        };
        if !applies_to(spec, namespace) {
            return Ok(());
        }
        let below = lowered(spec, labels);
        let Some((label, value, level)) = below.first() else {
            return Ok(());
        };
        let what = match value {
            Some(v) => format!("{label}={v}"),
            None => format!("removing {label}"),
        };
        Err(ApiError::forbidden_because(format!(
            "namespace {namespace:?}: {what} would lower it below {level}, which cluster {cluster}'s Pod Security template {name} sets; a cluster owner can change the template"
        )))
    }
}

/// The kind's strategy.
pub struct Templates;

impl Strategy for Templates {
    fn schema(&self) -> Value {
        schema_for::<api::PodSecurityAdmissionConfigurationTemplate>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::new(
                "Enforce",
                "string",
                "Enforced level",
                "/spec/defaults/enforce",
            ),
            Column::new("Warn", "string", "Warned level", "/spec/defaults/warn"),
            Column::new("Builtin", "boolean", "Shipped with Drover", "/spec/builtin"),
        ]
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let d = &obj["spec"]["defaults"];
        for mode in MODES {
            let level = d[mode].as_str().unwrap_or_default();
            if !level.is_empty() && Level::parse(level).is_none() {
                errors.push(FieldError::not_supported(
                    format!("spec.defaults.{mode}"),
                    level,
                    &["privileged", "baseline", "restricted"],
                ));
            }
            let vkey = format!("{mode}Version");
            if let Some(v) = d[&vkey].as_str() {
                if !valid_version(v) {
                    errors.push(FieldError::invalid(
                        format!("spec.defaults.{vkey}"),
                        v.to_owned(),
                        "must be latest or v1.N",
                    ));
                }
            }
        }
        for (i, ns) in obj["spec"]["exemptions"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if !ns
                .as_str()
                .is_some_and(drover_apiserver::object::is_dns_label)
            {
                errors.push(FieldError::invalid(
                    format!("spec.exemptions.namespaces[{i}]"),
                    ns.to_string(),
                    "must be a namespace name",
                ));
            }
        }
        errors
    }

    fn prepare_create<'a>(
        &'a self,
        _ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<drover_apiserver::Prepared, ApiError>> {
        Box::pin(async move {
            if obj["spec"]["builtin"] == json!(true) {
                return Err(ApiError::forbidden_because(
                    "spec.builtin is Drover's: only the templates it ships are built in",
                ));
            }
            Ok(drover_apiserver::Prepared::default())
        })
    }

    fn prepare_update<'a>(
        &'a self,
        _ctx: &'a Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if old["spec"]["builtin"] == json!(true) && new["spec"] != old["spec"] {
                return Err(read_only(old));
            }
            if new["spec"]["builtin"] == json!(true) && old["spec"]["builtin"] != json!(true) {
                return Err(ApiError::forbidden_because(
                    "spec.builtin is Drover's: only the templates it ships are built in",
                ));
            }
            Ok(())
        })
    }

    fn prepare_delete<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if obj["spec"]["builtin"] == json!(true) {
                return Err(read_only(obj));
            }
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            let clusters = ctx
                .store
                .list(&drover_store::ListOptions {
                    prefix: keys::prefix(api::GROUP, "clusters", None),
                    ..Default::default()
                })
                .await
                .map_err(|_| ApiError::unavailable("the datastore is unavailable"))?;
            let users: Vec<String> = clusters
                .items
                .iter()
                .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
                .filter(|c| c["spec"]["podSecurityAdmissionConfigurationTemplateName"] == name)
                .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_owned))
                .collect();
            if users.is_empty() {
                return Ok(());
            }
            Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "template {name} is used by cluster(s) {}: give them another first",
                    users.join(", ")
                ),
            ))
        })
    }
}

fn read_only(obj: &Value) -> ApiError {
    ApiError::forbidden_because(format!(
        "template {} is built in and read-only: copy it under another name to change it",
        obj["metadata"]["name"].as_str().unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restricted() -> api::PodSecurityAdmissionConfigurationTemplateSpec {
        serde_json::from_value(builtins()[1].1.clone()).expect("builtin parses")
    }

    #[test]
    fn lowering_is_found_raising_is_not() {
        let spec = restricted();
        let set = |k: &str, v: Option<&str>| vec![(k.to_owned(), v.map(str::to_owned))];
        let enforce = "pod-security.kubernetes.io/enforce";
        assert_eq!(lowered(&spec, &set(enforce, Some("privileged"))).len(), 1);
        assert_eq!(lowered(&spec, &set(enforce, None)).len(), 1);
        assert!(lowered(&spec, &set(enforce, Some("restricted"))).is_empty());
        assert!(lowered(&spec, &set("team", Some("x"))).is_empty());
        let privileged: api::PodSecurityAdmissionConfigurationTemplateSpec =
            serde_json::from_value(builtins()[0].1.clone()).expect("builtin parses");
        assert!(lowered(&privileged, &set(enforce, None)).is_empty());
        assert!(!applies_to(&spec, "kube-system"));
        assert!(applies_to(&spec, "team-a"));
    }

    #[test]
    fn finds_label_writes() {
        use axum::http::Method;
        let enforce = "pod-security.kubernetes.io/enforce".to_owned();
        let (ns, l) = label_writes(
            &Method::PATCH,
            "/api/v1/namespaces/a",
            br#"{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":"privileged","x":"y"}}}"#,
        )
        .unwrap();
        assert_eq!(
            (ns.as_str(), l),
            ("a", vec![(enforce.clone(), Some("privileged".into()))])
        );
        let (_, l) = label_writes(
            &Method::PATCH,
            "/api/v1/namespaces/a",
            br#"[{"op":"remove","path":"/metadata/labels/pod-security.kubernetes.io~1enforce"}]"#,
        )
        .unwrap();
        assert_eq!(l, vec![(enforce.clone(), None)]);
        let (_, l) = label_writes(
            &Method::PUT,
            "/api/v1/namespaces/a",
            br#"{"metadata":{"name":"a","labels":{}}}"#,
        )
        .unwrap();
        assert_eq!(l.len(), 6, "the three levels and their versions");
        assert!(label_writes(&Method::PATCH, "/api/v1/namespaces/a/pods", b"{}").is_none());
        let (_, l) = label_writes(
            &Method::PATCH,
            "/api/v1/namespaces/a",
            br#"[{"op":"move","from":"/metadata/labels/pod-security.kubernetes.io~1enforce","path":"/metadata/labels/x"}]"#,
        )
        .unwrap();
        assert_eq!(l, vec![(enforce.clone(), None)]);
        let (_, l) = label_writes(
            &Method::POST,
            "/api/v1/namespaces",
            br#"{"metadata":{"name":"b"}}"#,
        )
        .unwrap();
        assert!(l.is_empty());
    }
}
