//! RBAC projection: what Drover wants to exist in a cluster, worked out from
//! its bindings, projects and namespaces ([`plan`]), and how to make the
//! cluster match it ([`reconcile`]).
//!
//! What is projected, every object labelled `drover.io/managed=true`:
//! - global admins and cluster owners: a ClusterRoleBinding to
//!   `cluster-admin` each (`drover-cluster-admin-…`);
//! - each role template in use: one ClusterRole `drover-rt-<template>` with
//!   its rules, inherited templates flattened;
//! - a cluster binding of another template: a ClusterRoleBinding
//!   (`drover-crtb-…`) to that ClusterRole;
//! - a project binding: a RoleBinding (`drover-prtb-…`) to that ClusterRole
//!   in each namespace of the project — one per (subject, template,
//!   namespace) however many bindings ask for it. Project templates grant
//!   `get` on `namespaces`, which, bound inside a namespace, lets members
//!   read their own namespaces;
//! - a project quota: a ResourceQuota `drover-project-quota` (the
//!   namespace's share: its override, else the namespace default) in each
//!   namespace; container defaults: a LimitRange `drover-limit-range`;
//! - a project secret: a copy in each namespace of the project, of the
//!   same name, also labelled `drover.io/project-secret=<project>`; a
//!   Secret of that name already there without the label is the
//!   namespace's own, never overwritten, and reported as a conflict;
//! - with the cluster's `projectNetworkIsolation`: a NetworkPolicy
//!   `drover-project-isolation` in each namespace of every project but the
//!   System project, admitting traffic only from the namespaces of the same
//!   project and of the System project (selected by the
//!   `kubernetes.io/metadata.name` label the API server sets, which no
//!   user can change), unless the namespace is annotated
//!   `drover.io/project-network-isolation: "false"`.
//!
//! Nothing without the label is read for comparison, changed or deleted.
//! Namespaces themselves are not projected objects: the Pod Security
//! labels of the cluster's template are put on them by merge patches that
//! [`pod_security_patches`] works out from what the namespaces carry.
//!
//! What is there is an [`Observed`] cache of Drover's labelled objects,
//! listed once and kept current from watches of them: a reconcile compares
//! it with the plan and writes only the differences (updates and deletes
//! conditioned on the resourceVersion it saw), and its own writes come back
//! into the cache from their answers.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use drover_auth::policy::Subject;
use drover_core::api;
use drover_core::pod_security::Level;
use drover_rbac::PolicyRule;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::kinds::pod_security;
use crate::kinds::project_secrets::COPY_LABEL;
use crate::kinds::registration::MANAGED_LABEL;
use crate::link::kube::{Client, DownstreamError};

const RBAC: &str = "rbac.authorization.k8s.io";

/// The kinds Drover projects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `rbac.authorization.k8s.io/v1` ClusterRole.
    ClusterRole,
    /// `rbac.authorization.k8s.io/v1` ClusterRoleBinding.
    ClusterRoleBinding,
    /// `rbac.authorization.k8s.io/v1` RoleBinding.
    RoleBinding,
    /// `v1` ResourceQuota.
    ResourceQuota,
    /// `v1` LimitRange.
    LimitRange,
    /// `v1` Secret: copies of project secrets.
    Secret,
    /// `networking.k8s.io/v1` NetworkPolicy.
    NetworkPolicy,
}

impl Kind {
    /// Every kind, in the order they are created (roles before bindings).
    pub const ALL: [Kind; 7] = [
        Kind::ClusterRole,
        Kind::ClusterRoleBinding,
        Kind::RoleBinding,
        Kind::ResourceQuota,
        Kind::LimitRange,
        Kind::Secret,
        Kind::NetworkPolicy,
    ];

    fn base(self) -> &'static str {
        match self {
            Kind::ClusterRole | Kind::ClusterRoleBinding | Kind::RoleBinding => {
                "/apis/rbac.authorization.k8s.io/v1"
            }
            Kind::ResourceQuota | Kind::LimitRange | Kind::Secret => "/api/v1",
            Kind::NetworkPolicy => "/apis/networking.k8s.io/v1",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::ClusterRole => "clusterroles",
            Kind::ClusterRoleBinding => "clusterrolebindings",
            Kind::RoleBinding => "rolebindings",
            Kind::ResourceQuota => "resourcequotas",
            Kind::LimitRange => "limitranges",
            Kind::Secret => "secrets",
            Kind::NetworkPolicy => "networkpolicies",
        }
    }

    /// Kinds the agents of clusters imported with an older manifest may
    /// not manage: their absence stops nothing else.
    pub fn optional(self) -> bool {
        matches!(self, Kind::Secret | Kind::NetworkPolicy)
    }

    fn namespaced(self) -> bool {
        !matches!(self, Kind::ClusterRole | Kind::ClusterRoleBinding)
    }

    /// Where objects of this kind are listed (all namespaces) or created.
    fn collection(self, namespace: &str) -> String {
        if self.namespaced() && !namespace.is_empty() {
            format!("{}/namespaces/{namespace}/{}", self.base(), self.plural())
        } else {
            format!("{}/{}", self.base(), self.plural())
        }
    }

    /// A watch of Drover's objects of this kind in every namespace, from
    /// `resource_version`.
    pub fn watch_path(self, resource_version: &str) -> String {
        format!(
            "{}?watch=true&allowWatchBookmarks=true&labelSelector={MANAGED_LABEL}%3Dtrue&resourceVersion={resource_version}",
            self.collection("")
        )
    }

    fn item(self, namespace: &str, name: &str) -> String {
        format!("{}/{name}", self.collection(namespace))
    }

    /// The fields compared between what is wanted and what is there, with
    /// empty values dropped (the API server leaves out what Drover sends
    /// empty, and the other way round): an equal object is never rewritten,
    /// which with the drift watches would loop.
    fn content(self, obj: &Value) -> Value {
        normalize(self.raw_content(obj))
    }

    fn raw_content(self, obj: &Value) -> Value {
        match self {
            Kind::ClusterRole => obj["rules"].clone(),
            Kind::ClusterRoleBinding | Kind::RoleBinding => {
                json!([obj["roleRef"], obj["subjects"]])
            }
            Kind::ResourceQuota => obj["spec"]["hard"].clone(),
            Kind::LimitRange => obj["spec"]["limits"].clone(),
            Kind::Secret => json!([
                obj["type"],
                obj["data"],
                obj["metadata"]["labels"][COPY_LABEL]
            ]),
            Kind::NetworkPolicy => obj["spec"].clone(),
        }
    }
}

/// Drop nulls, empty strings, arrays and maps, recursively.
fn normalize(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, normalize(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        other => other,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// An object's identity: kind, namespace (empty if cluster-scoped), name.
pub type ObjectKey = (Kind, String, String);

/// Everything Drover wants in one cluster.
#[derive(Debug, Default)]
pub struct Desired {
    /// The objects, by identity.
    pub objects: BTreeMap<ObjectKey, Value>,
}

impl Desired {
    /// How many objects of a kind.
    pub fn count(&self, kind: Kind) -> usize {
        of_kind(&self.objects, kind).count()
    }
}

/// The objects of one kind in a map keyed by identity (kinds sort first,
/// so they are one range of it).
pub fn of_kind(
    objects: &BTreeMap<ObjectKey, Value>,
    kind: Kind,
) -> impl Iterator<Item = (&ObjectKey, &Value)> {
    objects
        .range((kind, String::new(), String::new())..)
        .take_while(move |((k, _, _), _)| *k == kind)
}

/// What [`plan`] works from.
pub struct Inputs<'a> {
    /// Who gets `cluster-admin` (global admins, cluster owners).
    pub admins: BTreeSet<Subject>,
    /// Cluster bindings: (subject, template).
    pub cluster_bindings: Vec<(Subject, String)>,
    /// Project bindings: (subject, project, template).
    pub project_bindings: Vec<(Subject, String, String)>,
    /// A template's rules, inherited ones included.
    pub rules: &'a dyn Fn(&str) -> Vec<PolicyRule>,
    /// The cluster's projects.
    pub projects: BTreeMap<String, api::ProjectSpec>,
    /// Namespace → the project it belongs to.
    pub namespaces: BTreeMap<String, String>,
    /// Each project's secrets, as stored on the management API.
    pub secrets: BTreeMap<String, Vec<Value>>,
    /// Project network isolation, when the cluster asks for it.
    pub isolation: Option<Isolation>,
}

/// What project network isolation works from.
#[derive(Debug, Default)]
pub struct Isolation {
    /// The System project, whose namespaces reach every other and get no
    /// policy.
    pub system_project: Option<String>,
    /// Namespaces annotated out of isolation.
    pub opted_out: BTreeSet<String>,
}

/// The annotation that takes a namespace out of project network isolation
/// (`"false"`).
pub const ISOLATION_ANNOTATION: &str = "drover.io/project-network-isolation";

/// The NetworkPolicy of project network isolation.
pub const ISOLATION_POLICY: &str = "drover-project-isolation";

fn subject_ref(subject: &Subject) -> (&'static str, &str, &'static str) {
    match subject {
        Subject::User(u) => ("User", u, "u"),
        Subject::Group(g) => ("Group", g, "g"),
    }
}

fn short_hash(parts: &[&str]) -> String {
    let digest = hex::encode(Sha256::digest(parts.join("\0").as_bytes()));
    digest[..12].to_owned()
}

fn meta(name: &str, namespace: &str, annotations: Value) -> Value {
    let mut m =
        json!({"name": name, "labels": {MANAGED_LABEL: "true"}, "annotations": annotations});
    if !namespace.is_empty() {
        m["namespace"] = json!(namespace);
    }
    m
}

fn binding(
    kind: Kind,
    name: &str,
    namespace: &str,
    subject: &Subject,
    role: &str,
    template: &str,
) -> Value {
    let (skind, sname, _) = subject_ref(subject);
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": if kind == Kind::RoleBinding { "RoleBinding" } else { "ClusterRoleBinding" },
        "metadata": meta(name, namespace, json!({
            "drover.io/subject": format!("{skind}:{sname}"),
            "drover.io/role-template": template,
        })),
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC, "kind": skind, "name": sname}],
    })
}

/// The ClusterRole a template becomes.
pub fn template_role_name(template: &str) -> String {
    format!("drover-rt-{template}")
}

/// Work out what one cluster should hold.
pub fn plan(inputs: &Inputs<'_>) -> Desired {
    let mut d = Desired::default();
    let mut templates_used = BTreeSet::new();
    for subject in &inputs.admins {
        let (_, name, tag) = subject_ref(subject);
        let digest = hex::encode(Sha256::digest(format!("{tag}:{name}").as_bytes()));
        let bname = format!("drover-cluster-admin-{tag}-{}", &digest[..12]);
        d.objects.insert(
            (Kind::ClusterRoleBinding, String::new(), bname.clone()),
            binding(
                Kind::ClusterRoleBinding,
                &bname,
                "",
                subject,
                "cluster-admin",
                "cluster-owner",
            ),
        );
    }
    for (subject, template) in &inputs.cluster_bindings {
        if template == "cluster-owner" {
            continue; // cluster-admin, above
        }
        let (_, name, tag) = subject_ref(subject);
        let bname = format!("drover-crtb-{tag}-{}", short_hash(&[name, template]));
        templates_used.insert(template.clone());
        d.objects.insert(
            (Kind::ClusterRoleBinding, String::new(), bname.clone()),
            binding(
                Kind::ClusterRoleBinding,
                &bname,
                "",
                subject,
                &template_role_name(template),
                template,
            ),
        );
    }
    let mut by_project: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (ns, project) in &inputs.namespaces {
        by_project
            .entry(project.as_str())
            .or_default()
            .push(ns.as_str());
    }
    for (subject, project, template) in &inputs.project_bindings {
        let Some(namespaces) = by_project.get(project.as_str()) else {
            continue;
        };
        let (_, name, tag) = subject_ref(subject);
        let bname = format!("drover-prtb-{tag}-{}", short_hash(&[name, template]));
        templates_used.insert(template.clone());
        for ns in namespaces {
            d.objects.insert(
                (Kind::RoleBinding, (*ns).to_owned(), bname.clone()),
                binding(
                    Kind::RoleBinding,
                    &bname,
                    ns,
                    subject,
                    &template_role_name(template),
                    template,
                ),
            );
        }
    }
    for template in templates_used {
        let name = template_role_name(&template);
        d.objects.insert(
            (Kind::ClusterRole, String::new(), name.clone()),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": meta(&name, "", json!({"drover.io/role-template": template})),
                "rules": (inputs.rules)(&template),
            }),
        );
    }
    for (project, spec) in &inputs.projects {
        let Some(namespaces) = by_project.get(project.as_str()) else {
            continue;
        };
        let has_quota = spec.resource_quota.is_some();
        let limits = spec.container_default_resource_limit.as_ref().map(|l| {
            let mut default = serde_json::Map::new();
            let mut request = serde_json::Map::new();
            if let Some(v) = &l.limits_cpu {
                default.insert("cpu".into(), json!(v));
            }
            if let Some(v) = &l.limits_memory {
                default.insert("memory".into(), json!(v));
            }
            if let Some(v) = &l.requests_cpu {
                request.insert("cpu".into(), json!(v));
            }
            if let Some(v) = &l.requests_memory {
                request.insert("memory".into(), json!(v));
            }
            let mut limit = json!({"type": "Container"});
            if !default.is_empty() {
                limit["default"] = Value::Object(default);
            }
            if !request.is_empty() {
                limit["defaultRequest"] = Value::Object(request);
            }
            limit
        });
        for ns in namespaces {
            let annotations = json!({"drover.io/project-id": project});
            let quota =
                crate::kinds::namespaces::share(spec, ns).filter(|q| has_quota && !q.is_empty());
            if let Some(q) = quota {
                d.objects.insert(
                    (
                        Kind::ResourceQuota,
                        (*ns).to_owned(),
                        "drover-project-quota".into(),
                    ),
                    json!({"apiVersion": "v1", "kind": "ResourceQuota",
                        "metadata": meta("drover-project-quota", ns, annotations.clone()),
                        "spec": {"hard": q}}),
                );
            }
            if let Some(l) = &limits {
                if l.get("default").is_some() || l.get("defaultRequest").is_some() {
                    d.objects.insert(
                        (
                            Kind::LimitRange,
                            (*ns).to_owned(),
                            "drover-limit-range".into(),
                        ),
                        json!({"apiVersion": "v1", "kind": "LimitRange",
                            "metadata": meta("drover-limit-range", ns, annotations.clone()),
                            "spec": {"limits": [l]}}),
                    );
                }
            }
        }
    }
    for (project, secrets) in &inputs.secrets {
        let Some(namespaces) = by_project.get(project.as_str()) else {
            continue;
        };
        for secret in secrets {
            let Some(name) = secret["metadata"]["name"].as_str() else {
                continue;
            };
            for ns in namespaces {
                let mut m = meta(name, ns, json!({"drover.io/project-id": project}));
                m["labels"][COPY_LABEL] = json!(project);
                d.objects.insert(
                    (Kind::Secret, (*ns).to_owned(), name.to_owned()),
                    json!({"apiVersion": "v1", "kind": "Secret", "metadata": m,
                        "type": secret["type"], "data": secret["data"]}),
                );
            }
        }
    }
    if let Some(isolation) = &inputs.isolation {
        let system: Vec<&str> = isolation
            .system_project
            .as_deref()
            .and_then(|p| by_project.get(p))
            .cloned()
            .unwrap_or_default();
        for (project, namespaces) in &by_project {
            if Some(*project) == isolation.system_project.as_deref() {
                continue;
            }
            let mut peers: Vec<&str> = namespaces.iter().chain(system.iter()).copied().collect();
            peers.sort_unstable();
            peers.dedup();
            for ns in namespaces {
                if isolation.opted_out.contains(*ns) {
                    continue;
                }
                d.objects.insert(
                    (Kind::NetworkPolicy, (*ns).to_owned(), ISOLATION_POLICY.into()),
                    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                        "metadata": meta(ISOLATION_POLICY, ns, json!({"drover.io/project-id": project})),
                        "spec": {
                            "podSelector": {},
                            "policyTypes": ["Ingress"],
                            "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": peers}
                            ]}}]}],
                        }}),
                );
            }
        }
    }
    d
}

/// The merge patches that put a Pod Security template's levels on a
/// cluster's namespaces (`namespaces`: name → the namespace's Pod Security
/// labels, and the template Drover labelled it for, from its
/// `drover.io/pod-security-template` annotation), or take Drover's labels
/// off when the cluster names no template (or the namespace is exempt).
///
/// A namespace Drover labelled for this template keeps a level above the
/// template's (someone raised it); a level below it, or none, is set to
/// the template's. A namespace Drover labelled for another template gets
/// exactly this one's levels, lower ones included. Drover's annotation is
/// written only with labels Drover wrote.
pub fn pod_security_patches(
    template: Option<(&str, &api::PodSecurityAdmissionConfigurationTemplateSpec)>,
    namespaces: &BTreeMap<String, (BTreeMap<String, String>, Option<String>)>,
) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (ns, (labels, labelled_by)) in namespaces {
        let mut set = serde_json::Map::new();
        let patch = match template.filter(|(_, spec)| pod_security::applies_to(spec, ns)) {
            Some((name, spec)) => {
                let replaced = labelled_by.as_deref().is_some_and(|by| by != name);
                for (mode, level, version) in pod_security::levels(spec) {
                    let label = pod_security::mode_label(mode);
                    let version_label = format!("{label}-version");
                    let current = labels.get(&label).map(String::as_str);
                    let wanted = Level::parse(&level).unwrap_or(Level::Privileged);
                    let keep = match current.and_then(Level::parse) {
                        _ if replaced => current == Some(level.as_str()),
                        Some(r) => r >= wanted,
                        // An unknown level: the cluster refused it, or
                        // enforces it as restricted.
                        None => current.is_some(),
                    };
                    if !keep {
                        set.insert(label, json!(level));
                        set.insert(version_label, json!(version));
                    } else if current == Some(level.as_str())
                        && labels.get(&version_label) != Some(&version)
                    {
                        set.insert(version_label, json!(version));
                    }
                }
                if set.is_empty() && !replaced {
                    continue;
                }
                json!({"metadata": {"labels": set,
                    "annotations": {pod_security::TEMPLATE_ANNOTATION: name}}})
            }
            None if labelled_by.is_some() => {
                for mode in pod_security::MODES {
                    let label = pod_security::mode_label(mode);
                    set.insert(format!("{label}-version"), Value::Null);
                    set.insert(label, Value::Null);
                }
                json!({"metadata": {"labels": set,
                    "annotations": {pod_security::TEMPLATE_ANNOTATION: null}}})
            }
            None => continue,
        };
        out.insert(ns.clone(), patch);
    }
    out
}

/// Each project's quota use: the sum over its namespaces of what their
/// `drover-project-quota` reports used, against the project's limit, and
/// each namespace's share and use.
pub fn quota_usage(
    observed: &Observed,
    members: &BTreeMap<String, String>,
    projects: &BTreeMap<String, api::ProjectSpec>,
) -> BTreeMap<String, api::ProjectStatus> {
    let mut out: BTreeMap<String, api::ProjectStatus> = BTreeMap::new();
    for (project, spec) in projects {
        let Some(limit) = &spec.resource_quota else {
            continue;
        };
        let mut status = api::ProjectStatus {
            resource_quota: Some(api::QuotaUsage {
                limit: limit.limit.clone(),
                used: BTreeMap::new(),
            }),
            namespaces: BTreeMap::new(),
        };
        let mut sums: BTreeMap<String, i128> = limit.limit.keys().map(|k| (k.clone(), 0)).collect();
        for (ns, p) in members {
            if p != project {
                continue;
            }
            let quota = observed.objects.get(&(
                Kind::ResourceQuota,
                ns.clone(),
                "drover-project-quota".into(),
            ));
            let used: api::ResourceList = quota
                .and_then(|q| serde_json::from_value(q["status"]["used"].clone()).ok())
                .unwrap_or_default();
            for (k, v) in &used {
                if let (Some(sum), Some(q)) = (sums.get_mut(k), drover_core::quantity::parse(v)) {
                    *sum += q;
                }
            }
            status.namespaces.insert(
                ns.clone(),
                api::QuotaUsage {
                    limit: crate::kinds::namespaces::share(spec, ns).unwrap_or_default(),
                    used,
                },
            );
        }
        if let Some(q) = status.resource_quota.as_mut() {
            q.used = sums
                .into_iter()
                .map(|(k, v)| {
                    let memory = k.contains("memory");
                    (k, drover_core::quantity::format(v, memory))
                })
                .collect();
        }
        out.insert(project.clone(), status);
    }
    out
}

/// What a reconcile changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Objects created.
    pub created: usize,
    /// Objects updated (or replaced).
    pub updated: usize,
    /// Objects deleted.
    pub deleted: usize,
    /// Project secret copies and isolation policies the cluster would not
    /// take (a namespace's own Secret of that name, a quota, a namespace
    /// being deleted), with why; the rest of the plan goes on.
    pub refused: Vec<(ObjectKey, String)>,
}

/// Drover's labelled objects in one cluster, as its watches report them.
#[derive(Debug, Default)]
pub struct Observed {
    /// The objects, by identity.
    pub objects: BTreeMap<ObjectKey, Value>,
    /// The resourceVersion of each kind's list, to watch from.
    pub listed_at: BTreeMap<Kind, String>,
    /// Kinds the agent may not list (imported before Drover projected
    /// them, with an older manifest): left out until it is re-applied.
    pub forbidden: BTreeSet<Kind>,
}

fn identity(kind: Kind, obj: &Value) -> Option<ObjectKey> {
    let name = obj["metadata"]["name"].as_str()?;
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    // Only Drover's own objects (named drover-…, or a project secret's
    // copy), even among labelled ones; and only names a path can carry,
    // whatever the cluster sends.
    let ours = match kind {
        Kind::Secret => obj["metadata"]["labels"][COPY_LABEL].is_string(),
        _ => name.starts_with("drover-"),
    };
    let valid = ours
        && drover_apiserver::object::is_dns_subdomain(name)
        && (ns.is_empty() || drover_apiserver::object::is_dns_label(ns));
    valid.then(|| (kind, ns.to_owned(), name.to_owned()))
}

impl Observed {
    /// List Drover's labelled objects of every kind.
    pub async fn list(client: &Client) -> Result<Self, DownstreamError> {
        let mut observed = Self::default();
        let selector = format!("labelSelector={MANAGED_LABEL}%3Dtrue");
        for kind in Kind::ALL {
            let list = match client
                .get(&format!("{}?{selector}", kind.collection("")))
                .await
            {
                Ok(list) => list,
                Err(DownstreamError::Status { status, .. })
                    if status == StatusCode::FORBIDDEN && kind.optional() =>
                {
                    tracing::warn!(
                        cluster = client.cluster(),
                        kind = kind.plural(),
                        "the cluster's agent may not manage {}: re-apply the cluster's import manifest",
                        kind.plural()
                    );
                    observed.forbidden.insert(kind);
                    continue;
                }
                Err(e) => return Err(e),
            };
            for item in list["items"].as_array().into_iter().flatten() {
                if let Some(id) = identity(kind, item) {
                    observed.objects.insert(id, item.clone());
                }
            }
            let rv = list["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("0")
                .to_owned();
            observed.listed_at.insert(kind, rv);
        }
        Ok(observed)
    }

    /// Apply a watch event of `kind`; whether it changed what is there. An
    /// `ERROR` event (e.g. 410 Gone) is an error: list again.
    pub fn apply(&mut self, kind: Kind, event: &Value) -> Result<bool, DownstreamError> {
        let obj = &event["object"];
        match event["type"].as_str() {
            Some("ADDED" | "MODIFIED") => {
                let Some(id) = identity(kind, obj) else {
                    // No longer Drover's (its labels were taken off): it
                    // leaves the cache, and is made again, or reported.
                    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
                    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
                    let id = (kind, ns.to_owned(), name.to_owned());
                    return Ok(self.objects.remove(&id).is_some());
                };
                let before = self.objects.insert(id, obj.clone());
                Ok(before.is_none_or(|b| kind.content(&b) != kind.content(obj)))
            }
            Some("DELETED") => {
                Ok(identity(kind, obj).is_some_and(|id| self.objects.remove(&id).is_some()))
            }
            Some("ERROR") => Err(DownstreamError::Status {
                status: StatusCode::GONE,
                message: obj["message"].as_str().unwrap_or("watch error").to_owned(),
            }),
            _ => Ok(false),
        }
    }
}

/// Make what is there match what is wanted: create what is missing, update
/// (or replace, for a changed roleRef) what differs, delete what is not
/// wanted — each on condition of the resourceVersion it was seen at, and
/// only while the client's fence allows.
pub async fn reconcile(
    client: &Client,
    desired: &Desired,
    observed: &mut Observed,
) -> Result<Changes, DownstreamError> {
    let mut changes = Changes::default();
    for kind in Kind::ALL {
        if observed.forbidden.contains(&kind) {
            continue;
        }
        for ((k, ns, name), want) in of_kind(&desired.objects, kind) {
            let id = (*k, ns.clone(), name.clone());
            match observed.objects.get(&id).cloned() {
                None => match create(client, *k, ns, want).await {
                    Ok(Some(made)) => {
                        observed.objects.insert(id, made);
                        changes.created += 1;
                    }
                    Ok(None) if *k == Kind::Secret => {
                        let why = format!(
                            "namespace {ns} holds a Secret of its own named {name}; it is left alone"
                        );
                        changes.refused.push((id, why));
                    }
                    Ok(None) => {}
                    Err(DownstreamError::Status { status, message })
                        if k.optional()
                            && matches!(
                                status,
                                StatusCode::FORBIDDEN
                                    | StatusCode::NOT_FOUND
                                    | StatusCode::UNPROCESSABLE_ENTITY
                            ) =>
                    {
                        changes.refused.push((id, message));
                    }
                    Err(e) => return Err(e),
                },
                Some(existing) if k.content(&existing) == k.content(want) => {}
                Some(existing) => {
                    // What the API server will not change in place: a
                    // binding's roleRef, a Secret's type, an immutable
                    // Secret (someone may have marked a copy so).
                    let replace = match k {
                        Kind::ClusterRoleBinding | Kind::RoleBinding => {
                            existing["roleRef"] != want["roleRef"]
                        }
                        Kind::Secret => {
                            existing["type"] != want["type"] || existing["immutable"] == json!(true)
                        }
                        _ => false,
                    };
                    let done = if replace {
                        delete_seen(client, *k, &existing).await?;
                        // What was seen is gone either way.
                        observed.objects.remove(&id);
                        create(client, *k, ns, want).await.map(|made| {
                            if let Some(made) = made {
                                observed.objects.insert(id.clone(), made);
                            }
                        })
                    } else {
                        let mut update = want.clone();
                        update["metadata"]["resourceVersion"] =
                            existing["metadata"]["resourceVersion"].clone();
                        client
                            .call(Method::PUT, &k.item(ns, name), Some(&update), &[])
                            .await
                            .map(|(_, made)| {
                                observed.objects.insert(id.clone(), made);
                            })
                    };
                    match done {
                        Ok(()) => changes.updated += 1,
                        Err(DownstreamError::Status { status, message })
                            if k.optional()
                                && status.is_client_error()
                                && status != StatusCode::CONFLICT =>
                        {
                            changes.refused.push((id, message));
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        let extra: Vec<(ObjectKey, Value)> = of_kind(&observed.objects, kind)
            .filter(|(id, _)| !desired.objects.contains_key(*id))
            .map(|(id, v)| (id.clone(), v.clone()))
            .collect();
        for (id, existing) in extra {
            delete_seen(client, kind, &existing).await?;
            observed.objects.remove(&id);
            changes.deleted += 1;
        }
    }
    Ok(changes)
}

/// Create `want`; the object made, or `None` when one of its name was
/// made meanwhile (409: the next pass sees it).
async fn create(
    client: &Client,
    kind: Kind,
    ns: &str,
    want: &Value,
) -> Result<Option<Value>, DownstreamError> {
    let (status, made) = client
        .call(
            Method::POST,
            &kind.collection(ns),
            Some(want),
            &[StatusCode::CONFLICT],
        )
        .await?;
    Ok(status.is_success().then_some(made))
}

/// Delete an object as it was seen (a precondition on its
/// resourceVersion); already gone is fine.
async fn delete_seen(client: &Client, kind: Kind, seen: &Value) -> Result<(), DownstreamError> {
    let ns = seen["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = seen["metadata"]["name"].as_str().unwrap_or_default();
    let options = json!({"kind": "DeleteOptions", "apiVersion": "v1",
        "preconditions": {"resourceVersion": seen["metadata"]["resourceVersion"]}});
    client
        .call(
            Method::DELETE,
            &kind.item(ns, name),
            Some(&options),
            &[StatusCode::NOT_FOUND, StatusCode::CONFLICT],
        )
        .await
        .map(drop)
}

/// Delete at `path`; already gone is fine.
pub async fn delete(client: &Client, path: &str) -> Result<(), DownstreamError> {
    client
        .call(Method::DELETE, path, None, &[StatusCode::NOT_FOUND])
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(t: &str) -> Vec<PolicyRule> {
        vec![PolicyRule::resource(&["get"], &[""], &[t])]
    }

    #[test]
    fn secrets_policies_and_quota_shares() {
        let spec: api::ProjectSpec = serde_json::from_value(json!({
            "resourceQuota": {"limit": {"pods": "10"}},
            "namespaceDefaultResourceQuota": {"limit": {"pods": "2"}},
            "namespaceResourceQuotas": {"b": {"limit": {"pods": "5"}}},
        }))
        .unwrap();
        let secret = json!({"metadata": {"name": "reg", "namespace": "p1"},
            "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "e30="}});
        let d = plan(&Inputs {
            admins: BTreeSet::new(),
            cluster_bindings: vec![],
            project_bindings: vec![],
            rules: &rules,
            projects: [("p1".to_owned(), spec)].into(),
            namespaces: [
                ("a".into(), "p1".into()),
                ("b".into(), "p1".into()),
                ("c".into(), "p2".into()),
                ("kube-system".into(), "sys".into()),
            ]
            .into(),
            secrets: [("p1".to_owned(), vec![secret])].into(),
            isolation: Some(Isolation {
                system_project: Some("sys".into()),
                opted_out: ["c".to_owned()].into(),
            }),
        });
        let quota = |ns: &str| {
            d.objects[&(
                Kind::ResourceQuota,
                ns.into(),
                "drover-project-quota".into(),
            )]["spec"]["hard"]["pods"]
                .clone()
        };
        assert_eq!((quota("a"), quota("b")), (json!("2"), json!("5")));
        let copy = &d.objects[&(Kind::Secret, "b".into(), "reg".into())];
        assert_eq!(copy["metadata"]["labels"][COPY_LABEL], "p1");
        assert_eq!(copy["type"], "kubernetes.io/dockerconfigjson");
        assert_eq!(d.count(Kind::Secret), 2);
        // a and b are isolated together with the System project's
        // namespaces; c opted out; the System project gets none.
        assert_eq!(d.count(Kind::NetworkPolicy), 2);
        let policy = &d.objects[&(Kind::NetworkPolicy, "a".into(), ISOLATION_POLICY.into())];
        assert_eq!(
            policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]
                ["values"],
            json!(["a", "b", "kube-system"])
        );
    }

    #[test]
    fn pod_security_labels_follow_the_template() {
        let (name, spec) = pod_security::builtins().remove(1);
        let spec: api::PodSecurityAdmissionConfigurationTemplateSpec =
            serde_json::from_value(spec).unwrap();
        let enforce = "pod-security.kubernetes.io/enforce";
        let ns = |labels: &[(&str, &str)], by: Option<&str>| {
            (
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
                by.map(str::to_owned),
            )
        };
        let namespaces = [
            ("plain".to_owned(), ns(&[], None)),
            (
                "lowered".to_owned(),
                ns(&[(enforce, "privileged")], Some(name)),
            ),
            ("kube-system".to_owned(), ns(&[], None)),
        ]
        .into();
        let patches = pod_security_patches(Some((name, &spec)), &namespaces);
        assert_eq!(patches.len(), 2, "{patches:?}");
        assert_eq!(
            patches["plain"]["metadata"]["labels"][enforce],
            "restricted"
        );
        assert_eq!(
            patches["plain"]["metadata"]["annotations"][pod_security::TEMPLATE_ANNOTATION],
            name
        );
        assert_eq!(
            patches["lowered"]["metadata"]["labels"][enforce],
            "restricted"
        );
        // A level already at the template's is left alone, unannotated.
        let mut at_level = BTreeMap::new();
        at_level.insert(
            "own".to_owned(),
            ns(
                &[
                    (enforce, "restricted"),
                    ("pod-security.kubernetes.io/enforce-version", "latest"),
                    ("pod-security.kubernetes.io/audit", "restricted"),
                    ("pod-security.kubernetes.io/audit-version", "latest"),
                    ("pod-security.kubernetes.io/warn", "restricted"),
                    ("pod-security.kubernetes.io/warn-version", "latest"),
                ],
                None,
            ),
        );
        assert!(pod_security_patches(Some((name, &spec)), &at_level).is_empty());
        // Another template's labels are replaced, lower levels included.
        let (base_name, _) = pod_security::builtins().remove(0);
        let privileged: api::PodSecurityAdmissionConfigurationTemplateSpec =
            serde_json::from_value(pod_security::builtins().remove(0).1).unwrap();
        let mut by_restricted = BTreeMap::new();
        by_restricted.insert("ns".to_owned(), ns(&[(enforce, "restricted")], Some(name)));
        let switched = pod_security_patches(Some((base_name, &privileged)), &by_restricted);
        assert_eq!(switched["ns"]["metadata"]["labels"][enforce], "privileged");
        // Once labelled, nothing more to do.
        let mut done = BTreeMap::new();
        let mut labels = BTreeMap::new();
        for (mode, level, version) in pod_security::levels(&spec) {
            labels.insert(pod_security::mode_label(mode), level);
            labels.insert(
                format!("{}-version", pod_security::mode_label(mode)),
                version,
            );
        }
        done.insert("ns".to_owned(), (labels, Some(name.to_owned())));
        assert!(pod_security_patches(Some((name, &spec)), &done).is_empty());
        // No template: Drover's labels come off.
        let off = pod_security_patches(None, &done);
        assert_eq!(off["ns"]["metadata"]["labels"][enforce], Value::Null);
        assert!(off["ns"]["metadata"]["labels"]
            .as_object()
            .unwrap()
            .contains_key(enforce));
    }

    #[test]
    fn one_binding_per_subject_template_and_namespace() {
        let bob = Subject::User("bob".into());
        let inputs = Inputs {
            admins: [Subject::User("admin".into())].into(),
            cluster_bindings: vec![(bob.clone(), "cluster-member".into())],
            project_bindings: vec![
                (bob.clone(), "p1".into(), "project-member".into()),
                (bob.clone(), "p1".into(), "project-member".into()),
                (bob.clone(), "p2".into(), "read-only".into()),
            ],
            rules: &rules,
            projects: BTreeMap::new(),
            namespaces: [
                ("a".into(), "p1".into()),
                ("b".into(), "p1".into()),
                ("c".into(), "p2".into()),
            ]
            .into(),
            secrets: BTreeMap::new(),
            isolation: None,
        };
        let d = plan(&inputs);
        assert_eq!(d.count(Kind::ClusterRole), 3, "one per template in use");
        assert_eq!(
            d.count(Kind::ClusterRoleBinding),
            2,
            "admin + bob's cluster-member"
        );
        assert_eq!(d.count(Kind::RoleBinding), 3, "a, b for p1; c for p2");
    }

    /// The sample fleet of docs/rbac.md: 10 clusters × 20 projects × 50
    /// users. Prints what Drover projects and Rancher's estimate.
    #[test]
    fn projected_counts_for_a_sample_fleet() {
        let (clusters, projects, users, ns_per_project) = (10usize, 20usize, 50usize, 3usize);
        let (admins, members_per_cluster, projects_per_user) = (2usize, 5usize, 3usize);
        let mut totals = [0usize; 3];
        let mut prtbs = 0;
        for c in 0..clusters {
            let mut namespaces = BTreeMap::new();
            for p in 0..projects {
                for n in 0..ns_per_project {
                    namespaces.insert(format!("c{c}-p{p}-ns{n}"), format!("p{p}"));
                }
            }
            let mut admin_set: BTreeSet<Subject> = (0..admins)
                .map(|a| Subject::User(format!("admin{a}")))
                .collect();
            admin_set.insert(Subject::User(format!("owner{c}")));
            let cluster_bindings = (0..members_per_cluster)
                .map(|u| (Subject::User(format!("u{u}")), "cluster-member".to_owned()))
                .collect();
            let mut project_bindings = Vec::new();
            for u in 0..users {
                for k in 0..projects_per_user {
                    let template = if k == 2 {
                        "read-only"
                    } else {
                        "project-member"
                    };
                    project_bindings.push((
                        Subject::User(format!("u{u}")),
                        format!("p{}", (u + k) % projects),
                        template.to_owned(),
                    ));
                }
            }
            prtbs += project_bindings.len();
            let d = plan(&Inputs {
                admins: admin_set,
                cluster_bindings,
                project_bindings,
                rules: &rules,
                projects: BTreeMap::new(),
                namespaces,
                secrets: BTreeMap::new(),
                isolation: None,
            });
            totals[0] += d.count(Kind::ClusterRole);
            totals[1] += d.count(Kind::ClusterRoleBinding);
            totals[2] += d.count(Kind::RoleBinding);
        }
        // One RoleBinding per (user, template, namespace): nothing less
        // grants the access, nothing more is made.
        assert_eq!(
            totals[2],
            clusters * users * projects_per_user * ns_per_project
        );
        assert_eq!(
            totals[0],
            clusters * 3,
            "one ClusterRole per template in use"
        );
        assert_eq!(totals[1], clusters * (admins + 1 + members_per_cluster));
        // Rancher's documented estimate of RoleBindings: 32·C + U + 2·Ua·C
        // + 8·P + 5·Pa, with Ua the users bound at cluster level in each
        // cluster and Pa the project role bindings.
        let ua = 1 + members_per_cluster;
        let rancher =
            32 * clusters + users + 2 * ua * clusters + 8 * clusters * projects + 5 * prtbs;
        println!("sample: {clusters} clusters × {projects} projects ({ns_per_project} namespaces each) × {users} users; {prtbs} project bindings");
        println!("drover: {} ClusterRoles, {} ClusterRoleBindings, {} RoleBindings (all downstream; none upstream)", totals[0], totals[1], totals[2]);
        println!("rancher estimate: {rancher} RoleBindings upstream, before the downstream ones");
        assert!(totals[2] < rancher);
    }
}
