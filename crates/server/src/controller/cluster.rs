//! Controllers of imported clusters, level-based and idempotent.
//!
//! - Status ([`run_link`], one task per connected agent): on connect, read
//!   `/version` and list the nodes, then watch them, all through the tunnel
//!   as the agent's own identity; write `status.version`, `nodeCount`,
//!   summed `capacity` and `allocatable`, conditions `Connected` and
//!   `Ready`, and `lastHeartbeat` (also every 30 s while nothing changes).
//!   The first status is written after the first projection, so a cluster
//!   is Ready only once its members can use it. When the link ends,
//!   [`mark_disconnected`].
//! - Admin projection (same task): global admins and the cluster's owners
//!   get a ClusterRoleBinding to `cluster-admin` labelled
//!   `drover.io/managed=true`; bindings Drover no longer wants are deleted,
//!   edited ones repaired. Run on connect, when the policy changes and every
//!   10 s against drift. Nothing unlabelled is touched.
//! - Removal ([`spawn_removals`]): a deleting Cluster's registration tokens
//!   are revoked, its agent removes what Drover created downstream, and the
//!   `drover.io/cluster-cleanup` finalizer goes — after [`REMOVAL_TIMEOUT`]
//!   even if no agent is there to clean up. The finalizer is added when an
//!   agent first connects, so a cluster never imported is deleted at once.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use drover_core::{api, keys, meta, quantity};
use drover_store::{ListOptions, Store, StoreError};
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};

use crate::downstream::{self, DownstreamError};
use crate::import::{AGENT_NAME, AGENT_NAMESPACE};
use crate::tunnels::Link;
use crate::AppState;
use crate::{namespaces, projection};

/// The finalizer that holds a Cluster until its downstream cleanup.
pub const CLEANUP_FINALIZER: &str = "drover.io/cluster-cleanup";
/// How long a deleting Cluster waits for its agent to clean up.
pub const REMOVAL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often `lastHeartbeat` is written while nothing else changes.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// How often projected objects are compared in full, besides the watches
/// that repair drift as it happens.
const DRIFT_CHECK: Duration = Duration::from_secs(300);
const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";

fn cluster_key(name: &str) -> String {
    keys::object(api::GROUP, "clusters", None, name)
}

/// Set a condition, keeping its transition time when the status holds.
fn set_condition(status: &mut Value, type_: &str, state: &str, reason: &str, message: &str) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let conditions = status["conditions"].as_array_mut().expect("just made");
    let now = meta::now_rfc3339();
    match conditions.iter_mut().find(|c| c["type"] == type_) {
        Some(c) => {
            if c["status"] != state {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!(state);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        None => conditions.push(json!({
            "type": type_, "status": state, "reason": reason, "message": message,
            "lastTransitionTime": now,
        })),
    }
}

/// What the nodes add up to.
#[derive(Debug, Default, PartialEq)]
struct NodeSums {
    count: usize,
    capacity: BTreeMap<String, String>,
    allocatable: BTreeMap<String, String>,
}

fn binary_unit(resource: &str) -> bool {
    resource == "memory" || resource.contains("storage") || resource.starts_with("hugepages-")
}

fn sum(nodes: &BTreeMap<String, Value>) -> NodeSums {
    let mut capacity: BTreeMap<String, i128> = BTreeMap::new();
    let mut allocatable: BTreeMap<String, i128> = BTreeMap::new();
    for node in nodes.values() {
        for (field, out) in [
            ("capacity", &mut capacity),
            ("allocatable", &mut allocatable),
        ] {
            if let Some(Value::Object(m)) = node.pointer(&format!("/status/{field}")) {
                for (k, v) in m {
                    if let Some(q) = v.as_str().and_then(quantity::parse) {
                        *out.entry(k.clone()).or_default() += q;
                    }
                }
            }
        }
    }
    let fmt = |m: BTreeMap<String, i128>| {
        m.into_iter()
            .map(|(k, v)| {
                let s = quantity::format(v, binary_unit(&k));
                (k, s)
            })
            .collect()
    };
    NodeSums {
        count: nodes.len(),
        capacity: fmt(capacity),
        allocatable: fmt(allocatable),
    }
}

async fn write_status(store: &Store, cluster: &str, version: &str, sums: &NodeSums) {
    let now = meta::now_rfc3339();
    let result = drover_apiserver::object::update_json(store, &cluster_key(cluster), |obj| {
        if !drover_apiserver::object::is_deleting(obj) {
            // Once an agent connected, removal waits for downstream cleanup.
            // (A cluster never connected has nothing there and goes at once.)
            let meta = obj["metadata"].as_object_mut().expect("a stored object");
            let list = meta.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(list) = list.as_array_mut() {
                if !list.iter().any(|f| f == CLEANUP_FINALIZER) {
                    list.push(json!(CLEANUP_FINALIZER));
                }
            }
        }
        if !obj["status"].is_object() {
            obj["status"] = json!({});
        }
        let status = &mut obj["status"];
        status["version"] = json!(version);
        status["nodeCount"] = json!(sums.count);
        status["capacity"] = json!(sums.capacity);
        status["allocatable"] = json!(sums.allocatable);
        status["lastHeartbeat"] = json!(now);
        set_condition(
            status,
            "Connected",
            "True",
            "AgentConnected",
            "the cluster agent is connected",
        );
        set_condition(
            status,
            "Ready",
            "True",
            "ClusterReady",
            "the cluster's API server answers through the agent",
        );
        true
    })
    .await;
    if let Err(e) = result {
        tracing::warn!(%cluster, error = %e, "cannot write the cluster's status");
    }
}

/// Write how many objects of each kind are projected, when it changed.
async fn report_projected(store: &Store, cluster: &str, desired: &projection::Desired) {
    let counts: serde_json::Map<String, Value> = [
        ("clusterRoles", projection::Kind::ClusterRole),
        ("clusterRoleBindings", projection::Kind::ClusterRoleBinding),
        ("roleBindings", projection::Kind::RoleBinding),
        ("resourceQuotas", projection::Kind::ResourceQuota),
        ("limitRanges", projection::Kind::LimitRange),
    ]
    .into_iter()
    .map(|(k, kind)| (k.to_owned(), json!(desired.count(kind))))
    .collect();
    let counts = Value::Object(counts);
    let result = drover_apiserver::object::update_json(store, &cluster_key(cluster), |obj| {
        if obj.pointer("/status/projected") == Some(&counts) || !obj["status"].is_object() {
            return false;
        }
        obj["status"]["projected"] = counts.clone();
        true
    })
    .await;
    if let Err(e) = result {
        tracing::warn!(%cluster, error = %e, "cannot report the projection");
    }
}

/// Mark a cluster whose agent went away.
pub async fn mark_disconnected(store: &Store, cluster: &str) {
    let result = drover_apiserver::object::update_json(store, &cluster_key(cluster), |obj| {
        if !obj["status"].is_object() {
            obj["status"] = json!({});
        }
        let status = &mut obj["status"];
        set_condition(
            status,
            "Connected",
            "False",
            "AgentDisconnected",
            "the cluster agent is not connected",
        );
        set_condition(
            status,
            "Ready",
            "False",
            "AgentDisconnected",
            "the cluster agent is not connected",
        );
        true
    })
    .await;
    if let Err(e) = result {
        tracing::warn!(%cluster, error = %e, "cannot mark the cluster disconnected");
    }
}

/// The controller of one connected cluster; runs until aborted (when the
/// link ends).
pub(crate) async fn run_link(state: Arc<AppState>, link: Link) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match follow(&state, &link).await {
            Ok(()) => backoff = Duration::from_millis(500),
            Err(e) => {
                tracing::warn!(cluster = %link.cluster, error = %e, "cluster status sync failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
        if link.opener.is_closed() {
            return;
        }
    }
}

/// List and watch the nodes and namespaces, keeping the status and the
/// projection current, until a watch ends.
async fn follow(state: &AppState, link: &Link) -> Result<(), DownstreamError> {
    let version = downstream::get(link, "/version").await?;
    let version = version["gitVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (mut nodes, node_rv) = list_slim(link, "/api/v1/nodes", slim).await?;
    let mut sums = sum(&nodes);
    let (mut namespaces, ns_rv) = list_slim(link, "/api/v1/namespaces", project_id).await?;
    // Drover's records of the namespaces: a namespace made through the
    // proxy is recorded once the cluster made it, maybe after its watch
    // event arrived here.
    let records_from = state
        .store
        .revisions()
        .await
        .map_err(|e| DownstreamError::Body(e.to_string()))?
        .current;
    let mut records = state
        .store
        .watch(&namespaces::record_prefix(&link.cluster), records_from);
    let mut projector = Projector::default();
    projector.run(state, link, &namespaces, true).await;
    // Ready only once Drover's RBAC is in the cluster, so that a cluster
    // shown Active is one its members can use.
    write_status(&state.store, &link.cluster, &version, &sums).await;

    let mut node_events = downstream::watch(
        link,
        &format!("/api/v1/nodes?watch=true&resourceVersion={node_rv}&allowWatchBookmarks=true"),
    )
    .await?;
    let mut ns_events = downstream::watch(
        link,
        &format!("/api/v1/namespaces?watch=true&resourceVersion={ns_rv}&allowWatchBookmarks=true"),
    )
    .await?;
    // Drift: every labelled object Drover projects is watched, so an edit or
    // deletion in the cluster is repaired at once (Drover's own writes echo
    // back once and find nothing to do).
    let paths = projection::Kind::ALL.map(projection::Kind::watch_path);
    let mut managed = futures::stream::select_all(
        futures::future::try_join_all(paths.iter().map(|p| downstream::watch(link, p))).await?,
    );
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    let mut drift = tokio::time::interval(DRIFT_CHECK);
    drift.tick().await;
    let mut policy = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            event = node_events.next() => {
                let Some(event) = event else { return Ok(()) };
                let mut changed = apply(&mut nodes, &event, slim)?;
                // Take whatever else is already here before writing once.
                while let Some(Some(more)) = node_events.next().now_or_never() {
                    changed |= apply(&mut nodes, &more, slim)?;
                }
                if changed {
                    let now = sum(&nodes);
                    if now != sums {
                        sums = now;
                        write_status(&state.store, &link.cluster, &version, &sums).await;
                    }
                }
            }
            event = ns_events.next() => {
                let Some(event) = event else { return Ok(()) };
                let mut changed = apply(&mut namespaces, &event, project_id)?;
                while let Some(Some(more)) = ns_events.next().now_or_never() {
                    changed |= apply(&mut namespaces, &more, project_id)?;
                }
                if changed {
                    projector.run(state, link, &namespaces, false).await;
                }
            }
            event = managed.next() => {
                match event {
                    // A watch ended or failed (e.g. 410): relist everything.
                    None => return Ok(()),
                    Some(e) if e["type"] == "ERROR" => return Ok(()),
                    Some(_) => {}
                }
                while let Some(Some(_)) = managed.next().now_or_never() {}
                projector.run(state, link, &namespaces, true).await;
            }
            event = records.next() => {
                if event.is_none_or(|e| e.is_err()) {
                    return Ok(()); // relist and watch again
                }
                while let Some(Some(_)) = records.next().now_or_never() {}
                projector.records_changed = true;
                projector.run(state, link, &namespaces, false).await;
            }
            _ = heartbeat.tick() => write_status(&state.store, &link.cluster, &version, &sums).await,
            _ = drift.tick() => projector.run(state, link, &namespaces, true).await,
            _ = policy.tick() => projector.run(state, link, &namespaces, false).await,
        }
    }
}

/// List a collection, keeping a slim form of each item by name; returns the
/// items and the list's resourceVersion.
async fn list_slim(
    link: &Link,
    path: &str,
    slim: fn(&Value) -> Value,
) -> Result<(BTreeMap<String, Value>, String), DownstreamError> {
    let list = downstream::get(link, path).await?;
    let mut items = BTreeMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        if let Some(name) = item.pointer("/metadata/name").and_then(Value::as_str) {
            items.insert(name.to_owned(), slim(item));
        }
    }
    let rv = list
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("0")
        .to_owned();
    Ok((items, rv))
}

/// Only what the status needs of a node.
fn slim(node: &Value) -> Value {
    json!({"status": {
        "capacity": node.pointer("/status/capacity").cloned().unwrap_or(Value::Null),
        "allocatable": node.pointer("/status/allocatable").cloned().unwrap_or(Value::Null),
    }})
}

/// Only a namespace's project annotation (null when unset) and its UID.
fn project_id(ns: &Value) -> Value {
    json!({
        "project": ns.pointer("/metadata/annotations/drover.io~1project-id").cloned().unwrap_or(Value::Null),
        "uid": ns.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
    })
}

/// Apply a watch event; `Ok(true)` if the items changed. An `ERROR` event
/// (e.g. 410 Gone) ends the watch so it relists.
fn apply(
    items: &mut BTreeMap<String, Value>,
    event: &Value,
    slim: fn(&Value) -> Value,
) -> Result<bool, DownstreamError> {
    let obj = &event["object"];
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match event["type"].as_str() {
        Some("ADDED" | "MODIFIED") => {
            let slim = slim(obj);
            Ok(items.insert(name, slim.clone()).as_ref() != Some(&slim))
        }
        Some("DELETED") => Ok(items.remove(&name).is_some()),
        Some("ERROR") => Err(DownstreamError::Status {
            status: StatusCode::GONE,
            message: obj["message"].as_str().unwrap_or("watch error").to_owned(),
        }),
        _ => Ok(false),
    }
}

/// What of the policy bears on one cluster's projection.
#[derive(Debug, PartialEq)]
struct ClusterPolicy {
    admins: std::collections::BTreeSet<drover_auth::policy::Subject>,
    cluster_bindings: Vec<(drover_auth::policy::Subject, String)>,
    project_bindings: Vec<(drover_auth::policy::Subject, String, String)>,
    projects: BTreeMap<String, drover_core::api::ProjectSpec>,
    /// The rules of the templates bound in the cluster.
    rules: BTreeMap<String, Vec<drover_rbac::PolicyRule>>,
}

impl ClusterPolicy {
    fn of(snapshot: &drover_auth::policy::Snapshot, cluster: &str) -> Self {
        let cluster_bindings = snapshot.cluster_bindings(cluster);
        let project_bindings = snapshot.project_bindings(cluster);
        let rules = cluster_bindings
            .iter()
            .map(|(_, t)| t)
            .chain(project_bindings.iter().map(|(_, _, t)| t))
            .map(|t| (t.clone(), snapshot.template_rules(t)))
            .collect();
        Self {
            admins: snapshot.cluster_admins(cluster),
            cluster_bindings,
            project_bindings,
            projects: snapshot.projects_of(cluster),
            rules,
        }
    }
}

/// The namespaces the System project holds from the start.
const SYSTEM_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    AGENT_NAMESPACE,
];

/// Keeps one cluster's projection current: works out what is wanted and
/// reconciles when it changed, or on a drift check.
#[derive(Default)]
struct Projector {
    snapshot: std::sync::Weak<drover_auth::policy::Snapshot>,
    /// The policy as it concerns this cluster, when last projected: a new
    /// snapshot that leaves it alone costs no store read.
    inputs: Option<ClusterPolicy>,
    namespaces: Option<BTreeMap<String, Value>>,
    last: Option<BTreeMap<projection::ObjectKey, Value>>,
    /// Drover's records of the cluster's namespaces changed since the last
    /// run.
    records_changed: bool,
    /// (namespace, annotation) pairs already reported as not adopted.
    refused: HashSet<(String, String)>,
    /// Namespaces this task has seen exist: a record is dropped only when
    /// its namespace was seen and is gone (a namespace just made through
    /// the proxy may be recorded before its watch event arrives here).
    seen: HashSet<String>,
}

impl Projector {
    async fn run(
        &mut self,
        state: &AppState,
        link: &Link,
        namespaces: &BTreeMap<String, Value>,
        force: bool,
    ) {
        if state.tunnels.is_removing(&link.cluster) {
            return; // its cleanup must not be undone as drift
        }
        let Ok(snapshot) = state.authz.snapshot().await else {
            return;
        };
        let same_policy = std::sync::Weak::ptr_eq(&self.snapshot, &Arc::downgrade(&snapshot));
        let same_inputs = !force && !self.records_changed;
        if same_inputs && same_policy && self.namespaces.as_ref() == Some(namespaces) {
            return;
        }
        let inputs = ClusterPolicy::of(&snapshot, &link.cluster);
        if same_inputs
            && self.namespaces.as_ref() == Some(namespaces)
            && self.inputs.as_ref() == Some(&inputs)
        {
            self.snapshot = Arc::downgrade(&snapshot);
            return;
        }
        let members = match self.membership(state, link, namespaces).await {
            Ok(m) => {
                self.records_changed = false;
                m
            }
            Err(e) => {
                tracing::warn!(cluster = %link.cluster, error = %e, "cannot work out project membership");
                return;
            }
        };
        let rules = |t: &str| snapshot.template_rules(t);
        let desired = projection::plan(&projection::Inputs {
            admins: inputs.admins.clone(),
            cluster_bindings: inputs.cluster_bindings.clone(),
            project_bindings: inputs.project_bindings.clone(),
            rules: &rules,
            projects: inputs.projects.clone(),
            namespaces: members,
        });
        if !force && self.last.as_ref() == Some(&desired.objects) {
            self.snapshot = Arc::downgrade(&snapshot);
            self.namespaces = Some(namespaces.clone());
            return;
        }
        match projection::reconcile(link, &desired).await {
            Ok(changes) => {
                if changes != projection::Changes::default() {
                    tracing::info!(cluster = %link.cluster, created = changes.created, updated = changes.updated, deleted = changes.deleted, "projected RBAC and quotas");
                }
                self.snapshot = Arc::downgrade(&snapshot);
                self.namespaces = Some(namespaces.clone());
                report_projected(&state.store, &link.cluster, &desired).await;
                self.last = Some(desired.objects);
                self.inputs = Some(inputs);
            }
            Err(e) => {
                tracing::warn!(cluster = %link.cluster, error = %e, "cannot project RBAC and quotas")
            }
        }
    }

    /// Namespace → project, from the annotations and Drover's records;
    /// adopts the Default and System namespaces, fixes annotations Drover
    /// changed (a project deleted with its namespaces moved to Default),
    /// drops records of namespaces that are gone or were made again (their
    /// UID differs), and stamps records kept from before UIDs with theirs.
    async fn membership(
        &mut self,
        state: &AppState,
        link: &Link,
        namespaces: &BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, String>, DownstreamError> {
        let cluster = &link.cluster;
        let store = &state.store;
        let failed = |e: drover_apiserver::ApiError| DownstreamError::Body(e.to_string());
        let mut records = namespaces::records(store, cluster).await.map_err(failed)?;
        let projects = namespaces::project_objects(store, cluster).await;
        let exists = |p: &str| projects.iter().any(|(n, _)| n == p);
        let (default_project, system_project) = namespaces::system_projects(&projects);
        let uid_of = |ns: &str| {
            namespaces
                .get(ns)
                .and_then(|v| v["uid"].as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let stale: Vec<String> = records
            .iter()
            .filter(|(ns, (record, _))| match namespaces.get(*ns) {
                None => self.seen.contains(*ns),
                Some(_) => !record.is_for(&uid_of(ns)),
            })
            .map(|(ns, _)| ns.clone())
            .collect();
        for ns in stale {
            let (_, kv) = records.remove(&ns).expect("listed");
            namespaces::set_record(store, cluster, &ns, Some(&kv), None)
                .await
                .map_err(failed)?;
            self.seen.remove(&ns);
        }
        self.seen.extend(namespaces.keys().cloned());
        let mut members = BTreeMap::new();
        for (ns, seen) in namespaces {
            let annotation = seen["project"].as_str();
            let uid = uid_of(ns);
            let project = match (records.get(ns), annotation) {
                (None, None) => {
                    let home = if ns == "default" {
                        default_project.clone()
                    } else if SYSTEM_NAMESPACES.contains(&ns.as_str()) {
                        system_project.clone()
                    } else {
                        None
                    };
                    let Some(home) = home else { continue };
                    let record = namespaces::Record {
                        project: home.clone(),
                        uid: Some(uid.clone()),
                    };
                    namespaces::set_record(store, cluster, ns, None, Some(&record))
                        .await
                        .map_err(failed)?;
                    Some(home)
                }
                (Some((record, kv)), _) if record.uid.is_none() && !uid.is_empty() => {
                    let stamped = namespaces::Record {
                        project: record.project.clone(),
                        uid: Some(uid.clone()),
                    };
                    namespaces::set_record(store, cluster, ns, Some(kv), Some(&stamped))
                        .await
                        .map_err(failed)?;
                    Some(record.project.clone())
                }
                (r, _) => r.map(|(record, _)| record.project.clone()),
            };
            let Some(project) = project else {
                if let Some(a) = annotation {
                    if self.refused.insert((ns.clone(), a.to_owned())) {
                        tracing::warn!(%cluster, namespace = %ns, annotation = a, "namespace not adopted: its project annotation was not set through Drover by someone allowed to use the project");
                    }
                }
                continue;
            };
            let wanted = format!("{cluster}:{project}");
            match annotation {
                Some(a) if a == wanted => {}
                Some(a)
                    if a.split_once(':')
                        .is_some_and(|(c, p)| c == cluster && exists(p)) =>
                {
                    if self.refused.insert((ns.clone(), a.to_owned())) {
                        tracing::warn!(%cluster, namespace = %ns, annotation = a, "namespace not adopted by the project its annotation names: the change did not go through Drover");
                    }
                    continue;
                }
                _ => {
                    // Drover's record stands: set the annotation to match.
                    let patch = json!({"metadata": {"annotations": {namespaces::PROJECT_ANNOTATION: wanted}}});
                    downstream::call(
                        link,
                        Method::PATCH,
                        &format!("/api/v1/namespaces/{ns}"),
                        Some(&patch),
                        &[StatusCode::NOT_FOUND],
                    )
                    .await?;
                }
            }
            if exists(&project) {
                members.insert(ns.clone(), project);
            }
        }
        Ok(members)
    }
}

/// Remove what Drover created in the cluster: every object it projects
/// (labelled `drover.io/managed=true`), then `drover-system` (the agent's
/// namespace), then the agent's ClusterRole. The agent's
/// ClusterRoleBinding stays: once its role is gone it grants nothing, and
/// nobody is left with the right to delete it.
async fn clean_downstream(link: &Link) -> Result<(), DownstreamError> {
    projection::reconcile(link, &projection::Desired::default()).await?;
    projection::delete(link, &format!("/api/v1/namespaces/{AGENT_NAMESPACE}")).await?;
    projection::delete(link, &format!("{RBAC}/clusterroles/{AGENT_NAME}")).await?;
    Ok(())
}

/// Watch for deleting Clusters and finish their removal. Runs until the
/// task is dropped.
pub(crate) fn spawn_removals(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
        let prefix = keys::prefix(api::GROUP, "clusters", None);
        loop {
            let Ok(page) = state
                .store
                .list(&ListOptions {
                    prefix: prefix.clone(),
                    ..Default::default()
                })
                .await
            else {
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            };
            let seen = |value: &[u8]| {
                let Ok(obj) = serde_json::from_slice::<Value>(value) else {
                    return;
                };
                if !drover_apiserver::object::is_deleting(&obj)
                    || !drover_apiserver::object::finalizers(&obj)
                        .iter()
                        .any(|f| f == CLEANUP_FINALIZER)
                {
                    return;
                }
                let name = drover_apiserver::object::name(&obj).to_owned();
                if !busy
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.clone())
                {
                    return;
                }
                let (state, busy) = (state.clone(), busy.clone());
                tokio::spawn(async move {
                    remove(&state, &name).await;
                    busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
                });
            };
            for kv in &page.items {
                seen(&kv.value);
            }
            let mut events = state.store.watch(&prefix, page.revision);
            while let Some(Ok(event)) = events.next().await {
                seen(&event.kv.value);
            }
            if matches!(state.store.revisions().await, Err(StoreError::Closed)) {
                return;
            }
        }
    })
}

/// Finish removing one Cluster.
async fn remove(state: &AppState, cluster: &str) {
    // Revoke the registration tokens first: no agent may connect again
    // (the one connected stays, to clean up).
    state.tunnels.set_removing(cluster, true);
    if let Err(e) = crate::import::revoke_all(&state.store, cluster).await {
        // Its removal deletes them in any case.
        tracing::warn!(%cluster, error = %e, "cannot revoke the cluster's registration tokens yet");
    }
    let deadline = tokio::time::Instant::now() + REMOVAL_TIMEOUT;
    loop {
        if let Some(link) = state.tunnels.get(cluster) {
            match clean_downstream(&link).await {
                Ok(()) => {
                    tracing::info!(%cluster, "removed Drover's objects from the cluster");
                    state.tunnels.close(cluster);
                    break;
                }
                Err(e) => {
                    tracing::warn!(%cluster, error = %e, "downstream cleanup failed; retrying")
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(%cluster, "no agent cleaned up the cluster in time; removing it from Drover anyway");
            state.tunnels.close(cluster);
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    crate::management::finish_cluster_removal(&state.store, &state.authz, cluster).await;
    state.tunnels.set_removing(cluster, false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_node_resources() {
        let mut nodes = BTreeMap::new();
        for i in 0..3 {
            nodes.insert(
                format!("n{i}"),
                json!({"status": {"capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                                  "allocatable": {"cpu": "3800m", "memory": "15Gi", "pods": "110"}}}),
            );
        }
        let s = sum(&nodes);
        assert_eq!(s.count, 3);
        assert_eq!(s.capacity["cpu"], "12");
        assert_eq!(s.capacity["memory"], "48Gi");
        assert_eq!(s.capacity["pods"], "330");
        assert_eq!(s.allocatable["cpu"], "11400m");
    }

    #[test]
    fn conditions_keep_their_transition_time() {
        let mut status = json!({});
        set_condition(&mut status, "Ready", "True", "R", "m");
        let first = status["conditions"][0]["lastTransitionTime"].clone();
        set_condition(&mut status, "Ready", "True", "R", "m");
        assert_eq!(status["conditions"][0]["lastTransitionTime"], first);
        assert_eq!(status["conditions"].as_array().unwrap().len(), 1);
    }
}
