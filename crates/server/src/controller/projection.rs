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
//! - a project quota: a ResourceQuota `drover-project-quota` (the namespace
//!   default) in each namespace; container defaults: a LimitRange
//!   `drover-limit-range`.
//!
//! Nothing without the label is read for comparison, changed or deleted.
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
use drover_rbac::PolicyRule;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

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
}

impl Kind {
    /// Every kind, in the order they are created (roles before bindings).
    pub const ALL: [Kind; 5] = [
        Kind::ClusterRole,
        Kind::ClusterRoleBinding,
        Kind::RoleBinding,
        Kind::ResourceQuota,
        Kind::LimitRange,
    ];

    fn base(self) -> &'static str {
        match self {
            Kind::ClusterRole | Kind::ClusterRoleBinding | Kind::RoleBinding => {
                "/apis/rbac.authorization.k8s.io/v1"
            }
            Kind::ResourceQuota | Kind::LimitRange => "/api/v1",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::ClusterRole => "clusterroles",
            Kind::ClusterRoleBinding => "clusterrolebindings",
            Kind::RoleBinding => "rolebindings",
            Kind::ResourceQuota => "resourcequotas",
            Kind::LimitRange => "limitranges",
        }
    }

    fn namespaced(self) -> bool {
        matches!(
            self,
            Kind::RoleBinding | Kind::ResourceQuota | Kind::LimitRange
        )
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
        self.objects.keys().filter(|(k, _, _)| *k == kind).count()
    }
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
}

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
        let quota = spec
            .resource_quota
            .as_ref()
            .and(spec.namespace_default_resource_quota.as_ref())
            .filter(|q| !q.limit.is_empty());
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
            if let Some(q) = quota {
                d.objects.insert(
                    (
                        Kind::ResourceQuota,
                        (*ns).to_owned(),
                        "drover-project-quota".into(),
                    ),
                    json!({"apiVersion": "v1", "kind": "ResourceQuota",
                        "metadata": meta("drover-project-quota", ns, annotations.clone()),
                        "spec": {"hard": q.limit}}),
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
    d
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
}

/// Drover's labelled objects in one cluster, as its watches report them.
#[derive(Debug, Default)]
pub struct Observed {
    /// The objects, by identity.
    pub objects: BTreeMap<ObjectKey, Value>,
    /// The resourceVersion of each kind's list, to watch from.
    pub listed_at: BTreeMap<Kind, String>,
}

fn identity(kind: Kind, obj: &Value) -> Option<ObjectKey> {
    let name = obj["metadata"]["name"].as_str()?;
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    // Only Drover's own objects (named drover-…), even among labelled ones;
    // and only names a path can carry, whatever the cluster sends.
    let valid = name.starts_with("drover-")
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
            let list = client
                .get(&format!("{}?{selector}", kind.collection("")))
                .await?;
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
                    return Ok(false);
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
        for ((k, ns, name), want) in desired.objects.iter().filter(|((k, _, _), _)| *k == kind) {
            let id = (*k, ns.clone(), name.clone());
            match observed.objects.get(&id).cloned() {
                None => {
                    if let Some(made) = create(client, *k, ns, want).await? {
                        observed.objects.insert(id, made);
                    }
                    changes.created += 1;
                }
                Some(existing) if k.content(&existing) == k.content(want) => {}
                Some(existing) => {
                    let immutable_ref = matches!(k, Kind::ClusterRoleBinding | Kind::RoleBinding)
                        && existing["roleRef"] != want["roleRef"];
                    if immutable_ref {
                        delete_seen(client, *k, &existing).await?;
                        // What was seen is gone either way.
                        match create(client, *k, ns, want).await? {
                            Some(made) => observed.objects.insert(id, made),
                            None => observed.objects.remove(&id),
                        };
                    } else {
                        let mut update = want.clone();
                        update["metadata"]["resourceVersion"] =
                            existing["metadata"]["resourceVersion"].clone();
                        let (_, made) = client
                            .call(Method::PUT, &k.item(ns, name), Some(&update), &[])
                            .await?;
                        observed.objects.insert(id, made);
                    }
                    changes.updated += 1;
                }
            }
        }
        let extra: Vec<(ObjectKey, Value)> = observed
            .objects
            .iter()
            .filter(|(id, _)| id.0 == kind && !desired.objects.contains_key(*id))
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
