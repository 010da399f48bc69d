//! The cluster explorer: a cluster's workloads, pods, services,
//! configuration and events, read and changed through Drover's proxy as
//! the signed-in user, so the cluster's own RBAC decides what each person
//! sees and may do.
//!
//! - [`list`]: a kind's objects in a namespace or a project's namespaces,
//!   paged by the cluster and (one namespace, or all) kept live by a watch.
//! - [`object`]: one object's page (a workload's pods, events, conditions
//!   and revisions; a pod's containers, logs and shell) and its actions:
//!   scale, restart, roll back after a diff, image and environment, delete.
//! - [`yaml`]: any object as YAML, edited with a server-side dry run first,
//!   and "Import YAML".
//! - [`stream`]: a pod's log tail (server-sent events) and its shell (the
//!   browser's WebSocket handed to the proxy's exec).

pub(crate) mod list;
pub(crate) mod object;
pub(crate) mod stream;
pub(crate) mod yaml;

use maud::{html, Markup};
use serde_json::Value;

use crate::api::{seg, MGMT};
use crate::error::UiError;
use crate::view::s;
use crate::Ui;

/// A kind the explorer shows.
#[derive(Debug)]
pub(crate) struct Kind {
    /// The API's plural, also the URL's segment.
    pub resource: &'static str,
    /// API group ("" for the core group).
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Heading and navigation label.
    pub label: &'static str,
}

/// What the explorer shows, in its navigation's order.
pub(crate) const KINDS: &[Kind] = &[
    kind("deployments", "apps", "v1", "Deployment", "Deployments"),
    kind("statefulsets", "apps", "v1", "StatefulSet", "StatefulSets"),
    kind("daemonsets", "apps", "v1", "DaemonSet", "DaemonSets"),
    kind("jobs", "batch", "v1", "Job", "Jobs"),
    kind("cronjobs", "batch", "v1", "CronJob", "CronJobs"),
    kind("pods", "", "v1", "Pod", "Pods"),
    kind("services", "", "v1", "Service", "Services"),
    kind(
        "ingresses",
        "networking.k8s.io",
        "v1",
        "Ingress",
        "Ingresses",
    ),
    kind("configmaps", "", "v1", "ConfigMap", "ConfigMaps"),
    kind("secrets", "", "v1", "Secret", "Secrets"),
    kind(
        "persistentvolumeclaims",
        "",
        "v1",
        "PersistentVolumeClaim",
        "Volume claims",
    ),
    kind("events", "", "v1", "Event", "Events"),
];

const fn kind(
    resource: &'static str,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    label: &'static str,
) -> Kind {
    Kind {
        resource,
        group,
        version,
        kind,
        label,
    }
}

/// The kind shown at `resource`.
pub(crate) fn find(resource: &str) -> Result<&'static Kind, UiError> {
    KINDS
        .iter()
        .find(|k| k.resource == resource)
        .ok_or_else(|| UiError::NotFound(format!("the explorer does not show {resource:?}")))
}

impl Kind {
    /// The API path of the kind in `cluster`: in `namespace`, or in all.
    pub(crate) fn collection(&self, cluster: &str, namespace: &str) -> String {
        let base = match self.group {
            "" => format!("/k8s/clusters/{}/api/{}", seg(cluster), self.version),
            g => format!("/k8s/clusters/{}/apis/{g}/{}", seg(cluster), self.version),
        };
        if namespace.is_empty() {
            format!("{base}/{}", self.resource)
        } else {
            format!("{base}/namespaces/{}/{}", seg(namespace), self.resource)
        }
    }

    /// The API path of one object.
    pub(crate) fn item(&self, cluster: &str, namespace: &str, name: &str) -> String {
        format!("{}/{}", self.collection(cluster, namespace), seg(name))
    }

    /// Whether it runs pods of its own (and has a workload's page).
    pub(crate) fn is_workload(&self) -> bool {
        matches!(
            self.resource,
            "deployments" | "statefulsets" | "daemonsets" | "jobs" | "cronjobs"
        )
    }

    /// The singular, in lower case, for sentences.
    pub(crate) fn noun(&self) -> String {
        match self.resource {
            "persistentvolumeclaims" => "volume claim".into(),
            _ => self.kind.to_lowercase(),
        }
    }
}

/// The dashboard's URL of the explorer in `cluster`.
pub(crate) fn base(cluster: &str) -> String {
    format!("/dashboard/clusters/{}/explore", seg(cluster))
}

/// The dashboard's URL of an object's page.
pub(crate) fn object_url(cluster: &str, resource: &str, namespace: &str, name: &str) -> String {
    format!(
        "{}/{resource}/{}/{}",
        base(cluster),
        seg(namespace),
        seg(name)
    )
}

/// A cluster's name as people know it, for headings and breadcrumbs (its
/// id when the cluster cannot be read).
pub(crate) async fn cluster_name(ui: &Ui, token: &str, cluster: &str) -> String {
    match ui
        .api
        .get(&format!("{MGMT}/clusters/{}", seg(cluster)), token)
        .await
    {
        Ok(c) => match s(&c, "/spec/displayName") {
            "" => cluster.to_owned(),
            d => d.to_owned(),
        },
        Err(_) => cluster.to_owned(),
    }
}

/// Breadcrumbs: Clusters › cluster › … (the last one is the page).
pub(crate) fn crumbs(
    cluster: &str,
    cluster_name: &str,
    trail: &[(String, Option<String>)],
) -> Markup {
    html! {
        nav.crumbs aria-label="Breadcrumbs" { ol {
            li { a href="/dashboard/clusters" { "Clusters" } }
            li { a href={ "/dashboard/clusters/" (seg(cluster)) } { (cluster_name) } }
            @for (label, href) in trail {
                li { @match href {
                    Some(h) => a href=(h) { (label) },
                    None => span aria-current="page" { (label) },
                } }
            }
        } }
    }
}

/// Breadcrumbs of an object's page: Clusters › cluster › kind (its list in
/// the object's namespace) › object, then `page` (`YAML`, `Delete`…) when
/// it is a page of the object's own.
pub(crate) fn object_crumbs(
    cluster: &str,
    cluster_name: &str,
    kind: &Kind,
    namespace: &str,
    name: &str,
    page: Option<&str>,
) -> Markup {
    let list = format!("{}/{}?ns={}", base(cluster), kind.resource, seg(namespace));
    let url = object_url(cluster, kind.resource, namespace, name);
    let mut trail = vec![(kind.label.to_owned(), Some(list))];
    match page {
        Some(p) => trail.extend([(name.to_owned(), Some(url)), (p.to_owned(), None)]),
        None => trail.push((name.to_owned(), None)),
    }
    crumbs(cluster, cluster_name, &trail)
}

/// The kinds as a navigation bar, `current` marked.
pub(crate) fn kinds_nav(cluster: &str, current: &str, namespace: &str) -> Markup {
    let query = if namespace.is_empty() {
        String::new()
    } else {
        format!("?ns={}", seg(namespace))
    };
    html! {
        nav.kinds aria-label="Kinds" { ul {
            @for k in KINDS {
                li { a href={ (base(cluster)) "/" (k.resource) (query) }
                    aria-current=[(k.resource == current).then_some("page")] { (k.label) } }
            }
        } }
    }
}

/// A number at `pointer`, or 0.
pub(crate) fn num(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// A label selector for `?labelSelector=` from a `matchLabels` map.
pub(crate) fn selector(match_labels: &Value) -> String {
    match_labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}
