//! Workloads, level-based, as the control plane and kubelets run them:
//!
//! - Deployment → a ReplicaSet per pod template (named by a hash of the
//!   template, `pod-template-hash` label, `deployment.kubernetes.io/revision`
//!   annotation); the newest gets all replicas, older ones none (a rollout
//!   completes at once); status with observedGeneration, replica counts and
//!   the Available/Progressing conditions `kubectl rollout status` reads.
//! - ReplicaSet → Pods owned by it, created or removed to match replicas.
//! - Scheduler and kubelet: a pod without a node is bound round-robin to a
//!   node and reported Running and Ready with an IP from the node's CIDR;
//!   a pod that runs to completion ends when its command does, and a
//!   crash-looping container (restartPolicy Always, a command that reaches
//!   `exit` or `false`) is restarted as kubelet does: at once the first
//!   time, then after its back-off, its last run in `lastState`.
//! - Garbage collection: objects whose controller owner is gone are deleted.
//!   An owner deleted with `propagationPolicy: Orphan` (the `orphan`
//!   finalizer) first has its dependents' owner references removed; one
//!   deleted with Foreground (`foregroundDeletion`) waits for its dependents
//!   to be deleted, as kube's garbage collector does.
//! - Nothing new is created in a namespace that is missing or Terminating,
//!   as the namespace lifecycle admission plugin refuses it.
//!
//! Every pass reads everything and writes only differences (and the events
//! of what it did), so it may stop and restart at any point.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drover_core::meta;
use drover_store::{ListOptions, Store, StoreError};
use futures::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const DEPLOYMENTS: &str = "/registry/apps/deployments/";
const REPLICASETS: &str = "/registry/apps/replicasets/";
const PODS: &str = "/registry/core/pods/";
const NODES: &str = "/registry/core/nodes/";
const NAMESPACES: &str = "/registry/core/namespaces/";

/// What wakes the workload controllers: their kinds and what they read.
const WATCHED: &[&str] = &[
    "/registry/apps/",
    "/registry/batch/",
    PODS,
    "/registry/core/services/",
    "/registry/core/persistentvolumeclaims/",
    "/registry/policy/",
];
/// A pass at least this often without changes.
const RESYNC: Duration = Duration::from_secs(30);

/// Run the workload controllers until the task is aborted: a pass after
/// every burst of changes to what they watch, when a pod, Job or CronJob
/// is due, and every 30 s.
pub(crate) fn spawn(store: Store) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let from = match store.revisions().await {
                Ok(r) => r.current,
                Err(StoreError::Closed) => return,
                Err(_) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let wait = match reconcile(&store).await {
                Ok(next) => next
                    .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default())
                    .map_or(RESYNC, |d| d.min(RESYNC)),
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "workload pass failed");
                    Duration::from_secs(1)
                }
            };
            let mut changes =
                futures::stream::select_all(WATCHED.iter().map(|prefix| store.watch(prefix, from)));
            tokio::select! {
                _ = changes.next() => {}
                () = tokio::time::sleep(wait) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

pub(crate) async fn list(
    store: &Store,
    prefix: &str,
) -> Result<Vec<(String, i64, Value)>, StoreError> {
    let page = store
        .list(&ListOptions {
            prefix: prefix.into(),
            ..Default::default()
        })
        .await?;
    Ok(page
        .items
        .into_iter()
        .filter_map(|kv| {
            Some((
                kv.key,
                kv.mod_revision,
                serde_json::from_slice(&kv.value).ok()?,
            ))
        })
        .collect())
}

pub(crate) fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

pub(crate) fn i(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

pub(crate) fn controller_uid(v: &Value) -> Option<&str> {
    v.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)?
        .get("uid")?
        .as_str()
}

pub(crate) fn owner_ref(kind: &str, api_version: &str, owner: &Value) -> Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": s(owner, "/metadata/name"), "uid": s(owner, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true}])
}

/// Write `new` over `(key, rev, old)` if it differs; a conflict just waits
/// for the next pass.
pub(crate) async fn write_if_changed(
    store: &Store,
    key: &str,
    rev: i64,
    old: &Value,
    new: &Value,
) -> Result<(), StoreError> {
    if old != new {
        write_changed(store, key, rev, new).await?;
    }
    Ok(())
}

pub(crate) fn template_hash(template: &Value) -> String {
    let digest = Sha256::digest(template.to_string().as_bytes());
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    digest
        .iter()
        .take(10)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

pub(crate) fn new_meta(name: &str, ns: &str, labels: Value, owners: Value) -> Value {
    json!({"name": name, "namespace": ns, "uid": meta::new_uid(), "creationTimestamp": meta::now_rfc3339(), "generation": 1, "labels": labels, "ownerReferences": owners})
}

/// One pass of every workload controller; returns when something is next
/// due (a pod's end, a schedule).
async fn reconcile(store: &Store) -> Result<Option<SystemTime>, StoreError> {
    let open = open_namespaces(store).await?;
    let deployments = list(store, DEPLOYMENTS).await?;
    let mut replicasets = list(store, REPLICASETS).await?;
    for (key, rev, d) in &deployments {
        if d.pointer("/metadata/deletionTimestamp").is_some()
            || !open.contains(s(d, "/metadata/namespace"))
        {
            continue;
        }
        reconcile_deployment(store, key, *rev, d, &mut replicasets).await?;
    }
    let replicasets = list(store, REPLICASETS).await?;
    let mut pods = list(store, PODS).await?;
    for (key, rev, rs) in &replicasets {
        let accepts = open.contains(s(rs, "/metadata/namespace"));
        reconcile_replicaset(store, key, *rev, rs, accepts, &mut pods).await?;
    }
    crate::sets::reconcile(store, &open).await?;
    crate::sets::bind_claims(store).await?;
    let jobs_due = crate::jobs::reconcile(store, &open).await?;
    let pods_due = schedule_and_run(store).await?;
    crate::services::reconcile_endpoints(store).await?;
    crate::disruption::reconcile(store).await?;
    // Owners being deleted with Orphan or Foreground, Deployments first;
    // what they change is seen by the next pass.
    let deployments = list(store, DEPLOYMENTS).await?;
    let replicasets = list(store, REPLICASETS).await?;
    let deleting = |items: &[(String, i64, Value)]| {
        items
            .iter()
            .any(|(_, _, o)| drover_apiserver::object::is_deleting(o))
    };
    if deleting(&deployments) {
        for (key, rev, d) in &deployments {
            finalize_owner(store, key, *rev, d, &replicasets).await?;
        }
    }
    if deleting(&replicasets) {
        let pods = list(store, PODS).await?;
        for (key, rev, rs) in &replicasets {
            finalize_owner(store, key, *rev, rs, &pods).await?;
        }
    }
    garbage_collect(store, &deployments, &replicasets).await?;
    // Deployment status follows its ReplicaSets' status.
    let replicasets = list(store, REPLICASETS).await?;
    for (key, rev, d) in list(store, DEPLOYMENTS).await? {
        deployment_status(store, &key, rev, &d, &replicasets).await?;
    }
    Ok([jobs_due, pods_due].into_iter().flatten().min())
}

/// Names of the namespaces that take new content: present and not Terminating.
async fn open_namespaces(store: &Store) -> Result<HashSet<String>, StoreError> {
    Ok(list(store, NAMESPACES)
        .await?
        .into_iter()
        .filter(|(_, _, ns)| crate::accepts_content(ns))
        .map(|(_, _, ns)| s(&ns, "/metadata/name").to_owned())
        .collect())
}

async fn reconcile_deployment(
    store: &Store,
    key: &str,
    rev: i64,
    d: &Value,
    replicasets: &mut Vec<(String, i64, Value)>,
) -> Result<(), StoreError> {
    let ns = s(d, "/metadata/namespace").to_owned();
    let name = s(d, "/metadata/name").to_owned();
    let uid = s(d, "/metadata/uid").to_owned();
    let mut template = d
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let hash = template_hash(&template);
    template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    let replicas = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let rs_name = format!("{name}-{hash}");
    let owned: Vec<&(String, i64, Value)> = replicasets
        .iter()
        .filter(|(_, _, rs)| controller_uid(rs) == Some(uid.as_str()))
        .collect();
    // As kube's deployment controller: the ReplicaSet of the current
    // template has the highest revision; one brought back (a rollback)
    // gets a new one, and its old number goes to `revision-history`.
    let max_other = owned
        .iter()
        .filter(|(_, _, rs)| s(rs, "/metadata/name") != rs_name)
        .map(|(_, _, rs)| revision_of(rs))
        .max()
        .unwrap_or(0);
    let current = owned
        .iter()
        .find(|(_, _, rs)| s(rs, "/metadata/name") == rs_name)
        .map(|(k, r, v)| (k.clone(), *r, v.clone()));
    let revision = match &current {
        Some((_, _, rs)) if revision_of(rs) > max_other => revision_of(rs),
        _ => max_other + 1,
    };
    // The Deployment's own annotations (a change-cause) go onto the
    // ReplicaSet of its current template.
    let copied: serde_json::Map<String, Value> = d
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "kubectl.kubernetes.io/last-applied-configuration"
                    | "deployment.kubernetes.io/revision"
                    | "deployment.kubernetes.io/revision-history"
                    | "deployment.kubernetes.io/desired-replicas"
                    | "deployment.kubernetes.io/max-replicas"
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match current {
        None => {
            let mut selector = d
                .pointer("/spec/selector")
                .cloned()
                .unwrap_or_else(|| json!({}));
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let labels = template
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let mut metadata =
                new_meta(&rs_name, &ns, labels, owner_ref("Deployment", "apps/v1", d));
            let mut annotations = copied.clone();
            annotations.insert(
                "deployment.kubernetes.io/revision".into(),
                json!(revision.to_string()),
            );
            annotations.insert(
                "deployment.kubernetes.io/desired-replicas".into(),
                json!(replicas.to_string()),
            );
            metadata["annotations"] = Value::Object(annotations);
            let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": metadata,
                "spec": {"replicas": replicas, "selector": selector, "template": template}, "status": {"replicas": 0}});
            let rs_key = drover_core::keys::object("apps", "replicasets", Some(&ns), &rs_name);
            match store.create(&rs_key, rs.to_string()).await {
                Ok(kv) => {
                    scaled(store, d, &rs, 0, replicas).await;
                    replicasets.push((rs_key, kv.mod_revision, rs));
                }
                Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Some((k, r, rs)) => {
            let mut new = rs.clone();
            new["spec"]["replicas"] = json!(replicas);
            let before = revision_of(&rs);
            if before != revision {
                let mut history: Vec<String> = s(
                    &rs,
                    "/metadata/annotations/deployment.kubernetes.io~1revision-history",
                )
                .split(',')
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect();
                history.push(before.to_string());
                new["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] =
                    json!(history.join(","));
            }
            new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                json!(revision.to_string());
            new["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] =
                json!(replicas.to_string());
            for (k, v) in &copied {
                new["metadata"]["annotations"][k] = v.clone();
            }
            if new != rs && write_changed(store, &k, r, &new).await? {
                let from = i(&rs, "/spec/replicas");
                scaled(store, d, &new, from, replicas).await;
            }
        }
    }
    // Older ReplicaSets scale to zero; beyond revisionHistoryLimit they go.
    let limit = d
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_i64)
        .unwrap_or(10);
    let mut old: Vec<(String, i64, Value)> = replicasets
        .iter()
        .filter(|(_, _, rs)| {
            controller_uid(rs) == Some(uid.as_str()) && s(rs, "/metadata/name") != rs_name
        })
        .cloned()
        .collect();
    old.sort_by_key(|(_, _, rs)| revision_of(rs));
    let excess = old.len().saturating_sub(limit.max(0) as usize);
    for (n, (k, r, rs)) in old.iter().enumerate() {
        if n < excess {
            let _ = store.delete(k, None).await;
            continue;
        }
        let mut new = rs.clone();
        new["spec"]["replicas"] = json!(0);
        if new != *rs && write_changed(store, k, *r, &new).await? {
            scaled(store, d, &new, i(rs, "/spec/replicas"), 0).await;
        }
    }
    let mut new_d = d.clone();
    new_d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
        json!(revision.to_string());
    write_if_changed(store, key, rev, d, &new_d).await
}

/// A ReplicaSet's `deployment.kubernetes.io/revision`.
fn revision_of(rs: &Value) -> i64 {
    s(
        rs,
        "/metadata/annotations/deployment.kubernetes.io~1revision",
    )
    .parse()
    .unwrap_or(0)
}

/// The deployment controller's ScalingReplicaSet event.
async fn scaled(store: &Store, d: &Value, rs: &Value, from: i64, to: i64) {
    if from == to {
        return;
    }
    let way = if to > from { "up" } else { "down" };
    crate::events::record(
        store,
        d,
        crate::events::Event {
            source: crate::events::Source::Controller("deployment-controller"),
            warning: false,
            reason: "ScalingReplicaSet",
            action: "",
            message: format!(
                "Scaled {way} replica set {} from {from} to {to}",
                s(rs, "/metadata/name")
            ),
            field_path: None,
        },
    )
    .await;
}

/// Create `key` unless something is there already (another pass, or a
/// racing writer, made it).
pub(crate) async fn create_if_absent(
    store: &Store,
    key: &str,
    obj: &Value,
) -> Result<(), StoreError> {
    match store.create(key, obj.to_string()).await {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Delete `key` if it is still there.
pub(crate) async fn delete_if_present(store: &Store, key: &str) -> Result<(), StoreError> {
    match store.delete(key, None).await {
        Ok(_) | Err(StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Write `new` over `key` read at `rev`; whether it was written (a
/// conflict or a vanished object waits for the next pass).
pub(crate) async fn write_changed(
    store: &Store,
    key: &str,
    rev: i64,
    new: &Value,
) -> Result<bool, StoreError> {
    match store.update(key, new.to_string(), rev).await {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A new pod of `owner` (of kind `kind`) from its pod template, defaulted.
pub(crate) fn pod_from_template(owner: &Value, kind: &str, pod_name: &str) -> Value {
    let ns = s(owner, "/metadata/namespace");
    let labels = owner
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let spec = owner
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let api_version = owner["apiVersion"].as_str().unwrap_or("apps/v1");
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": new_meta(pod_name, ns, labels, owner_ref(kind, api_version, owner)),
        "spec": spec, "status": {"phase": "Pending", "qosClass": "BestEffort"}});
    if let Some(a) = owner.pointer("/spec/template/metadata/annotations") {
        pod["metadata"]["annotations"] = a.clone();
    }
    crate::defaults::apply("Pod", &mut pod);
    pod
}

/// What [`create_pod`] did.
pub(crate) enum Created {
    /// Created, as (key, revision, pod).
    Yes((String, i64, Value)),
    /// The name is taken.
    Taken,
    /// Admission refused it (limits, Pod Security, quota).
    Refused,
}

/// Create a controller's pod through admission, as the API would, and
/// record the controller's SuccessfulCreate event (or FailedCreate).
/// `message` overrides kube's usual "Created pod: NAME".
pub(crate) async fn create_pod(
    store: &Store,
    owner: &Value,
    mut pod: Value,
    controller: &str,
    message: Option<String>,
) -> Result<Created, StoreError> {
    use crate::events::{record, Event, Source};
    let ns = s(owner, "/metadata/namespace").to_owned();
    let pod_name = s(&pod, "/metadata/name").to_owned();
    let failed = |why: String| Event {
        source: Source::Controller(controller),
        warning: true,
        reason: "FailedCreate",
        action: "",
        message: format!("Error creating: {why}"),
        field_path: None,
    };
    if let Err(e) = crate::admission::limit_ranges(store, &ns, &mut pod).await {
        record(store, owner, failed(e.message)).await;
        return Ok(Created::Refused);
    }
    if let Err(e) = crate::admission::pod_security(store, &ns, "Pod", &pod_name, &pod).await {
        tracing::debug!(owner = %s(owner, "/metadata/name"), error = %e.message, "pod refused by Pod Security admission");
        record(store, owner, failed(e.message)).await;
        return Ok(Created::Refused);
    }
    if let Err(e) = crate::admission::check_quota(store, &ns, "pods", "", &pod_name, &pod).await {
        tracing::debug!(owner = %s(owner, "/metadata/name"), error = %e.message, "pod refused by admission");
        record(store, owner, failed(e.message)).await;
        return Ok(Created::Refused);
    }
    let pod_key = drover_core::keys::object("", "pods", Some(&ns), &pod_name);
    match store.create(&pod_key, pod.to_string()).await {
        Ok(kv) => {
            record(
                store,
                owner,
                Event {
                    source: Source::Controller(controller),
                    warning: false,
                    reason: "SuccessfulCreate",
                    action: "",
                    message: message.unwrap_or_else(|| format!("Created pod: {pod_name}")),
                    field_path: None,
                },
            )
            .await;
            Ok(Created::Yes((pod_key, kv.mod_revision, pod)))
        }
        Err(StoreError::AlreadyExists(_)) => Ok(Created::Taken),
        Err(e) => Err(e),
    }
}

/// Delete a controller's pod, recording its SuccessfulDelete event and the
/// kubelet's Killing events.
pub(crate) async fn delete_pod(
    store: &Store,
    owner: &Value,
    key: &str,
    pod: &Value,
    controller: &str,
) -> Result<(), StoreError> {
    match store.delete(key, None).await {
        Ok(_) => {
            crate::events::record(
                store,
                owner,
                crate::events::Event {
                    source: crate::events::Source::Controller(controller),
                    warning: false,
                    reason: "SuccessfulDelete",
                    action: "",
                    message: format!("Deleted pod: {}", s(pod, "/metadata/name")),
                    field_path: None,
                },
            )
            .await;
            killed(store, pod).await;
            Ok(())
        }
        Err(StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The kubelet's Killing event for each running container of a pod that
/// was deleted.
pub(crate) async fn killed(store: &Store, pod: &Value) {
    let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str) else {
        return;
    };
    if s(pod, "/status/phase") != "Running" {
        return;
    }
    for c in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = c["name"].as_str().unwrap_or_default();
        crate::events::record(
            store,
            pod,
            crate::events::Event {
                source: crate::events::Source::Kubelet(node),
                warning: false,
                reason: "Killing",
                action: "",
                message: format!("Stopping container {name}"),
                field_path: Some(format!("spec.containers{{{name}}}")),
            },
        )
        .await;
    }
}

pub(crate) fn ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

async fn reconcile_replicaset(
    store: &Store,
    key: &str,
    rev: i64,
    rs: &Value,
    namespace_open: bool,
    pods: &mut Vec<(String, i64, Value)>,
) -> Result<(), StoreError> {
    let name = s(rs, "/metadata/name").to_owned();
    let uid = s(rs, "/metadata/uid").to_owned();
    let want = rs
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0) as usize;
    let mut owned: Vec<(String, i64, Value)> = pods
        .iter()
        .filter(|(_, _, p)| {
            controller_uid(p) == Some(uid.as_str())
                && p.pointer("/metadata/deletionTimestamp").is_none()
        })
        .cloned()
        .collect();
    if rs.pointer("/metadata/deletionTimestamp").is_none() {
        while namespace_open && owned.len() < want {
            let pod_name = format!("{name}-{}", drover_core::names::random_suffix(5));
            let pod = pod_from_template(rs, "ReplicaSet", &pod_name);
            match create_pod(store, rs, pod, "replicaset-controller", None).await? {
                Created::Yes(entry) => {
                    owned.push(entry.clone());
                    pods.push(entry);
                }
                Created::Taken => continue,
                Created::Refused => break,
            }
        }
        // Too many: remove the newest first.
        owned.sort_by(|a, b| {
            s(&b.2, "/metadata/creationTimestamp")
                .cmp(s(&a.2, "/metadata/creationTimestamp"))
                .then(b.0.cmp(&a.0))
        });
        while owned.len() > want {
            let (k, _, pod) = owned.remove(0);
            delete_pod(store, rs, &k, &pod, "replicaset-controller").await?;
        }
    }
    let ready_count = owned.iter().filter(|(_, _, p)| ready(p)).count();
    let mut new = rs.clone();
    new["status"] = json!({
        "replicas": owned.len(), "fullyLabeledReplicas": owned.len(), "readyReplicas": ready_count,
        "availableReplicas": ready_count, "observedGeneration": i(rs, "/metadata/generation"),
    });
    write_if_changed(store, key, rev, rs, &new).await
}

/// The node a pod must run on: its `spec.nodeName`, or the one its
/// required node affinity names by `metadata.name` (DaemonSet pods).
fn required_node(pod: &Value) -> Option<String> {
    if let Some(n) = pod.pointer("/spec/nodeName").and_then(Value::as_str) {
        return Some(n.to_owned());
    }
    pod.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")?
        .as_array()?
        .iter()
        .flat_map(|t| t["matchFields"].as_array().cloned().unwrap_or_default())
        .find(|f| f["key"] == "metadata.name" && f["operator"] == "In")?
        .pointer("/values/0")?
        .as_str()
        .map(str::to_owned)
}

/// How long a pod that runs to completion runs, and its exit code: pods
/// of Jobs, and other pods with `restartPolicy` Never or OnFailure that
/// name a command. `sleep N` in the command runs N seconds (else one);
/// `exit N` or `false` fails.
pub(crate) fn completion(pod: &Value) -> Option<(Duration, i64)> {
    if s(pod, "/spec/restartPolicy") == "Always" {
        return None;
    }
    let owned_by_job = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|o| o.iter().any(|r| r["kind"] == "Job"));
    let words = command_words(pod);
    if words.is_empty() && !owned_by_job {
        return None;
    }
    Some(run_of(&words))
}

/// Whether some container of a pod that restarts Always crash-loops
/// ([`crash_loop_of`]).
pub(crate) fn crash_loop(pod: &Value) -> bool {
    s(pod, "/spec/restartPolicy") == "Always"
        && pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| crash_loop_of(c).is_some()))
}

/// How long a container's command runs before it ends, and its exit code,
/// when it ends on its own: a statement reached unconditionally (between
/// `;` or lines, without `&&` or `||`) that is `exit [N]` or `false`, and
/// no `sleep` without a finite time (`sleep infinity`). Any other command
/// runs until the pod is deleted.
pub(crate) fn crash_loop_of(container: &Value) -> Option<(Duration, i64)> {
    let parts: Vec<String> = ["command", "args"]
        .iter()
        .flat_map(|f| container[*f].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    // A shell's script is what follows `-c`; a program is known by its
    // base name (`/bin/false`).
    let text = match parts.iter().position(|p| p == "-c") {
        Some(i) => parts[i + 1..].join(" "),
        None => parts.join(" "),
    };
    let ends = text.split([';', '\n']).any(|statement| {
        let first = statement.split_whitespace().next().unwrap_or_default();
        let first = first.rsplit('/').next().unwrap_or(first);
        !statement.contains("&&")
            && !statement.contains("||")
            && (first == "exit" || first == "false")
    });
    let words = split_words(&parts);
    let endless_sleep = words
        .iter()
        .position(|w| w == "sleep")
        .and_then(|i| words.get(i + 1))
        .is_some_and(|n| !n.parse::<f64>().is_ok_and(f64::is_finite));
    (ends && !endless_sleep).then(|| run_of(&words))
}

/// The words of a pod's commands and arguments, split at blanks and shell
/// separators.
fn command_words(pod: &Value) -> Vec<String> {
    let parts: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| {
            ["command", "args"].into_iter().flat_map(move |f| {
                c[f].as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
            })
        })
        .collect();
    split_words(&parts)
}

/// Words split at blanks and shell separators.
fn split_words(parts: &[String]) -> Vec<String> {
    parts
        .iter()
        .flat_map(|w| {
            w.split(|c: char| c.is_whitespace() || c == ';' || c == '&' || c == '|')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// How long a command of these words runs (`sleep N`, else a second) and
/// its exit code (`exit N`, 1 for `false`, else 0).
fn run_of(words: &[String]) -> (Duration, i64) {
    let after = |word: &str| {
        words
            .iter()
            .position(|w| w == word)
            .and_then(|i| words.get(i + 1))
            .and_then(|n| n.parse::<f64>().ok())
            .filter(|n| n.is_finite())
    };
    let seconds = after("sleep").unwrap_or(1.0).clamp(0.0, 3600.0);
    // The program, or a shell script's first word (after `-c`).
    let start = words.iter().position(|w| w == "-c").map_or(0, |i| i + 1);
    let first = words.get(start).map(|w| w.rsplit('/').next().unwrap_or(w));
    let code = if first == Some("false") {
        1
    } else {
        after("exit").map_or(0, |c| (c as i64).clamp(0, 255))
    };
    (Duration::from_secs_f64(seconds), code)
}

/// kubelet's back-off after the `n`th restart (1, 2…) of a container:
/// 10 s, doubled each time, at most five minutes. (The first exit is
/// restarted at once.)
fn back_off(n: i64) -> Duration {
    let doublings = n.saturating_sub(1).clamp(0, 5) as u32;
    Duration::from_secs((10u64 << doublings).min(300))
}

/// A duration as Go prints it (`10s`, `1m20s`, `5m0s`).
fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

/// The kubelet's restarts of crash-looping containers ([`crash_loop_of`]),
/// as kubelet runs them: a container whose command has ended goes into
/// `lastState` (Terminated, its exit code); the first time it runs again at
/// once, later ones wait in `CrashLoopBackOff` ([`back_off`], a `BackOff`
/// warning recorded, the pod not Ready) and then run again; `restartCount`
/// counts the runs started again. Returns when the pod next needs this.
async fn restart_if_due(
    store: &Store,
    key: &str,
    rev: i64,
    pod: &Value,
) -> Result<Option<SystemTime>, StoreError> {
    if !crash_loop(pod) {
        return Ok(None);
    }
    let now = SystemTime::now();
    let now_text = meta::rfc3339(now);
    let mut new = pod.clone();
    let mut due: Option<SystemTime> = None;
    let mut soon = |at: SystemTime| due = Some(due.map_or(at, |d: SystemTime| d.min(at)));
    let mut backing_off = Vec::new();
    let mut restarted = Vec::new();
    let (name, ns, uid) = (
        s(pod, "/metadata/name"),
        s(pod, "/metadata/namespace"),
        s(pod, "/metadata/uid"),
    );
    let specs: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let statuses = new
        .pointer_mut("/status/containerStatuses")
        .and_then(Value::as_array_mut);
    for c in statuses.into_iter().flatten() {
        let container = c["name"].as_str().unwrap_or_default().to_owned();
        let Some((runs, code)) = specs
            .iter()
            .find(|sc| sc["name"] == container.as_str())
            .and_then(crash_loop_of)
        else {
            continue;
        };
        let restarts = c["restartCount"].as_i64().unwrap_or(0).max(0);
        let run_again = |c: &mut Value| {
            c["state"] = json!({"running": {"startedAt": now_text}});
            c["containerID"] = json!(format!("containerd://{}", meta::new_uid().replace('-', "")));
            c["ready"] = json!(true);
            c["started"] = json!(true);
            c["restartCount"] = json!(restarts.saturating_add(1));
        };
        if let Some(started) = c
            .pointer("/state/running/startedAt")
            .and_then(Value::as_str)
            .and_then(meta::parse_rfc3339)
        {
            let end = started.checked_add(runs).unwrap_or(started);
            if now < end {
                soon(end);
                continue;
            }
            c["lastState"] = json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": meta::rfc3339(started), "finishedAt": now_text, "containerID": c["containerID"]}});
            if restarts == 0 {
                run_again(c);
                restarted.push(container);
                soon(now.checked_add(runs).unwrap_or(now));
            } else {
                let wait = back_off(restarts);
                c["ready"] = json!(false);
                c["started"] = json!(false);
                c["state"] = json!({"waiting": {"reason": "CrashLoopBackOff",
                    "message": format!("back-off {} restarting failed container={container} pod={name}_{ns}({uid})", go_duration(wait))}});
                backing_off.push(container);
                soon(now.checked_add(wait).unwrap_or(now));
            }
        } else if c.pointer("/state/waiting/reason").and_then(Value::as_str)
            == Some("CrashLoopBackOff")
        {
            let finished = c
                .pointer("/lastState/terminated/finishedAt")
                .and_then(Value::as_str)
                .and_then(meta::parse_rfc3339)
                .unwrap_or(now);
            let again = finished.checked_add(back_off(restarts)).unwrap_or(finished);
            if now < again {
                soon(again);
                continue;
            }
            run_again(c);
            restarted.push(container);
            soon(now.checked_add(runs).unwrap_or(now));
        }
    }
    if backing_off.is_empty() && restarted.is_empty() {
        return Ok(due);
    }
    let waiting: Vec<String> = new
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c["ready"] != json!(true))
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    for c in new
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if matches!(c["type"].as_str(), Some("Ready" | "ContainersReady")) {
            let status = if waiting.is_empty() { "True" } else { "False" };
            if c["status"] != status {
                c["status"] = json!(status);
                c["lastTransitionTime"] = json!(now_text);
            }
            if let Some(m) = c.as_object_mut() {
                if waiting.is_empty() {
                    m.remove("reason");
                    m.remove("message");
                } else {
                    m.insert("reason".into(), json!("ContainersNotReady"));
                    m.insert(
                        "message".into(),
                        json!(format!(
                            "containers with unready status: [{}]",
                            waiting.join(" ")
                        )),
                    );
                }
            }
        }
    }
    if !write_changed(store, key, rev, &new).await? {
        return Ok(due);
    }
    let node = s(&new, "/spec/nodeName").to_owned();
    for container in backing_off {
        crate::events::record(
            store,
            &new,
            crate::events::Event {
                source: crate::events::Source::Kubelet(&node),
                warning: true,
                reason: "BackOff",
                action: "",
                message: format!(
                    "Back-off restarting failed container {container} in pod {name}_{ns}({uid})"
                ),
                field_path: Some(format!("spec.containers{{{container}}}")),
            },
        )
        .await;
    }
    if !restarted.is_empty() {
        started(store, &new, &node, false, Some(&restarted)).await;
    }
    Ok(due)
}

/// The scheduler and the kubelets: bind each new pod to a node (the least
/// used, or the one it must run on), start it (Running and Ready, with the
/// events kube records), end pods that run to completion and restart
/// crash-looping containers. Returns when the next pod is due to change.
async fn schedule_and_run(store: &Store) -> Result<Option<SystemTime>, StoreError> {
    let nodes = list(store, NODES).await?;
    if nodes.is_empty() {
        return Ok(None);
    }
    let pods = list(store, PODS).await?;
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for (_, _, p) in &pods {
        if let Some(n) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
            *per_node.entry(n.to_owned()).or_default() += 1;
        }
    }
    let mut next_end: Option<SystemTime> = None;
    for (key, rev, pod) in pods {
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        match s(&pod, "/status/phase") {
            "Succeeded" | "Failed" => continue,
            "Running" if pod.pointer("/spec/nodeName").is_some() => {
                let due = match finish_if_due(store, &key, rev, &pod).await? {
                    Some(end) => Some(end),
                    None => restart_if_due(store, &key, rev, &pod).await?,
                };
                if let Some(end) = due {
                    next_end = Some(next_end.map_or(end, |n: SystemTime| n.min(end)));
                }
                continue;
            }
            _ => {}
        }
        let wanted = required_node(&pod);
        // Cordoned and NotReady nodes take no new pods (their taints), but
        // for those pinned to them (DaemonSet pods tolerate both).
        let schedulable = |node: &Value| {
            node.pointer("/spec/unschedulable") != Some(&json!(true))
                && node
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
        };
        let chosen = match &wanted {
            Some(n) => nodes
                .iter()
                .enumerate()
                .find(|(_, (_, _, node))| s(node, "/metadata/name") == n),
            None => nodes
                .iter()
                .enumerate()
                .filter(|(_, (_, _, node))| schedulable(node))
                .min_by_key(|(n, (_, _, node))| {
                    (
                        per_node
                            .get(s(node, "/metadata/name"))
                            .copied()
                            .unwrap_or(0),
                        *n,
                    )
                }),
        };
        // A pod bound to a node that does not exist stays Pending.
        let Some((node_index, (_, _, node))) = chosen else {
            continue;
        };
        let node_name = s(node, "/metadata/name").to_owned();
        let already_bound = pod.pointer("/spec/nodeName").is_some();
        let count = per_node.entry(node_name.clone()).or_default();
        if !already_bound {
            *count += 1;
        }
        let host_ip = node
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
            .and_then(|x| x["address"].as_str())
            .unwrap_or("10.0.0.2")
            .to_owned();
        let pod_ip = format!("10.244.{node_index}.{}", (*count % 250) + 2);
        let now = meta::now_rfc3339();
        let mut new = pod.clone();
        new["spec"]["nodeName"] = json!(node_name);
        let containers = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let statuses: Vec<Value> = containers
            .iter()
            .map(|c| {
                json!({"name": c["name"], "image": c["image"], "imageID": format!("docker.io/library/{}", c["image"].as_str().unwrap_or_default()),
                    "containerID": format!("containerd://{}", meta::new_uid().replace('-', "")), "ready": true, "started": true, "restartCount": 0,
                    "state": {"running": {"startedAt": now}}})
            })
            .collect();
        let condition = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
        let qos = s(&pod, "/status/qosClass").to_owned();
        new["status"] = json!({
            "phase": "Running", "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
            "startTime": now, "qosClass": if qos.is_empty() { "BestEffort".to_owned() } else { qos }, "containerStatuses": statuses,
            "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"), condition("Ready"), condition("ContainersReady"), condition("PodScheduled")],
        });
        if !write_changed(store, &key, rev, &new).await? {
            continue;
        }
        started(store, &new, &node_name, !already_bound, None).await;
        let crash_runs = new
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|_| crash_loop(&new))
            .filter_map(crash_loop_of)
            .map(|(runs, _)| runs)
            .min();
        if let Some(runs) = completion(&new).map(|(runs, _)| runs).or(crash_runs) {
            let end = SystemTime::now()
                .checked_add(runs)
                .unwrap_or_else(SystemTime::now);
            next_end = Some(next_end.map_or(end, |n: SystemTime| n.min(end)));
        }
    }
    Ok(next_end)
}

/// The scheduler's and kubelet's events for a pod that just started (or
/// only for the containers `only` names, started again).
async fn started(store: &Store, pod: &Value, node: &str, scheduled: bool, only: Option<&[String]>) {
    use crate::events::{record, Event, Source};
    if scheduled {
        record(
            store,
            pod,
            Event {
                source: Source::Controller("default-scheduler"),
                warning: false,
                reason: "Scheduled",
                action: "Binding",
                message: format!(
                    "Successfully assigned {}/{} to {node}",
                    s(pod, "/metadata/namespace"),
                    s(pod, "/metadata/name")
                ),
                field_path: None,
            },
        )
        .await;
    }
    for c in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = c["name"].as_str().unwrap_or_default();
        if only.is_some_and(|names| !names.iter().any(|n| n == name)) {
            continue;
        }
        let image = c["image"].as_str().unwrap_or_default();
        let path = format!("spec.containers{{{name}}}");
        for (reason, message) in [
            (
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            ),
            ("Created", format!("Created container {name}")),
            ("Started", format!("Started container {name}")),
        ] {
            record(
                store,
                pod,
                Event {
                    source: Source::Kubelet(node),
                    warning: false,
                    reason,
                    action: "",
                    message,
                    field_path: Some(path.clone()),
                },
            )
            .await;
        }
    }
}

/// End a pod that runs to completion once its time is up; otherwise
/// return when it will be.
async fn finish_if_due(
    store: &Store,
    key: &str,
    rev: i64,
    pod: &Value,
) -> Result<Option<SystemTime>, StoreError> {
    let Some((runs, code)) = completion(pod) else {
        return Ok(None);
    };
    let started = meta::parse_rfc3339(s(pod, "/status/startTime")).unwrap_or(UNIX_EPOCH);
    let end = started.checked_add(runs).unwrap_or(started);
    if SystemTime::now() < end {
        return Ok(Some(end));
    }
    let now = meta::now_rfc3339();
    let mut new = pod.clone();
    let failed = code != 0;
    new["status"]["phase"] = json!(if failed { "Failed" } else { "Succeeded" });
    if let Some(statuses) = new
        .pointer_mut("/status/containerStatuses")
        .and_then(Value::as_array_mut)
    {
        for c in statuses {
            let started_at = c
                .pointer("/state/running/startedAt")
                .cloned()
                .unwrap_or_else(|| json!(now));
            c["ready"] = json!(false);
            c["started"] = json!(false);
            c["state"] = json!({"terminated": {"exitCode": code, "reason": if failed { "Error" } else { "Completed" },
                "startedAt": started_at, "finishedAt": now, "containerID": c["containerID"]}});
        }
    }
    let reason = if failed { "PodFailed" } else { "PodCompleted" };
    if let Some(conditions) = new
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        for c in conditions {
            if matches!(
                c["type"].as_str(),
                Some("Ready" | "ContainersReady" | "PodReadyToStartContainers")
            ) {
                c["status"] = json!("False");
                c["lastTransitionTime"] = json!(now);
                if c["type"] != "PodReadyToStartContainers" {
                    c["reason"] = json!(reason);
                }
            }
        }
    }
    write_changed(store, key, rev, &new).await?;
    Ok(None)
}

/// Serve the `orphan` and `foregroundDeletion` finalizers of an owner that
/// is being deleted: orphan its dependents or delete them (Foreground, so a
/// ReplicaSet waits for its pods in turn), then release the owner, deleting
/// it when no finalizer is left.
async fn finalize_owner(
    store: &Store,
    key: &str,
    rev: i64,
    owner: &Value,
    dependents: &[(String, i64, Value)],
) -> Result<(), StoreError> {
    use drover_apiserver::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};
    if owner.pointer("/metadata/deletionTimestamp").is_none() {
        return Ok(());
    }
    let finalizers = drover_apiserver::object::finalizers(owner);
    let orphan = finalizers.iter().any(|f| f == ORPHAN_FINALIZER);
    let foreground = finalizers.iter().any(|f| f == FOREGROUND_FINALIZER);
    if !orphan && !foreground {
        return Ok(());
    }
    let uid = s(owner, "/metadata/uid");
    let owned = |v: &Value| {
        v.pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
    };
    let mut waiting = false;
    for (k, r, dep) in dependents.iter().filter(|(_, _, d)| owned(d)) {
        if orphan {
            let mut new = dep.clone();
            if let Some(refs) = new
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r["uid"] != uid);
            }
            write_if_changed(store, k, *r, dep, &new).await?;
        } else {
            waiting = true;
            if dep.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            if dep["kind"] == "ReplicaSet" {
                let mut new = dep.clone();
                new["metadata"]["deletionTimestamp"] = json!(meta::now_rfc3339());
                let mut finalizers = drover_apiserver::object::finalizers(dep);
                finalizers.push(FOREGROUND_FINALIZER.to_owned());
                new["metadata"]["finalizers"] = json!(finalizers);
                write_if_changed(store, k, *r, dep, &new).await?;
            } else {
                match store.delete(k, Some(*r)).await {
                    Ok(_) | Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    if waiting {
        return Ok(());
    }
    let mut released = owner.clone();
    if let Some(list) = released
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    {
        list.retain(|f| f != ORPHAN_FINALIZER && f != FOREGROUND_FINALIZER);
    }
    let empty = released
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    let done = if empty {
        store.delete(key, Some(rev)).await.map(drop)
    } else {
        write_if_changed(store, key, rev, owner, &released).await
    };
    match done {
        Ok(()) | Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Delete what a controller made once its controller is gone: ReplicaSets
/// of Deployments, pods of ReplicaSets, StatefulSets, DaemonSets and Jobs,
/// Jobs of CronJobs.
async fn garbage_collect(
    store: &Store,
    deployments: &[(String, i64, Value)],
    replicasets: &[(String, i64, Value)],
) -> Result<(), StoreError> {
    let uids = |items: &[(String, i64, Value)]| -> HashSet<String> {
        items
            .iter()
            .map(|(_, _, o)| s(o, "/metadata/uid").to_owned())
            .collect()
    };
    let orphaned = |o: &Value, owners: &HashSet<String>, kinds: &[&str]| {
        let owner = o
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| refs.iter().find(|r| r["controller"] == true));
        owner.is_some_and(|r| {
            kinds.contains(&r["kind"].as_str().unwrap_or_default())
                && !owners.contains(r["uid"].as_str().unwrap_or_default())
        })
    };
    let deployment_uids = uids(deployments);
    for (k, _, rs) in replicasets {
        if orphaned(rs, &deployment_uids, &["Deployment"]) {
            let _ = store.delete(k, None).await;
        }
    }
    let cronjob_uids = uids(&list(store, "/registry/batch/cronjobs/").await?);
    let jobs = list(store, "/registry/batch/jobs/").await?;
    for (k, _, job) in &jobs {
        if orphaned(job, &cronjob_uids, &["CronJob"]) {
            let _ = store.delete(k, None).await;
        }
    }
    let mut pod_owners = uids(&list(store, REPLICASETS).await?);
    pod_owners.extend(uids(&list(store, "/registry/apps/statefulsets/").await?));
    pod_owners.extend(uids(&list(store, "/registry/apps/daemonsets/").await?));
    pod_owners.extend(uids(&list(store, "/registry/batch/jobs/").await?));
    for (k, _, pod) in list(store, PODS).await? {
        let kinds = ["ReplicaSet", "StatefulSet", "DaemonSet", "Job"];
        if orphaned(&pod, &pod_owners, &kinds) && store.delete(&k, None).await.is_ok() {
            killed(store, &pod).await;
        }
    }
    Ok(())
}

async fn deployment_status(
    store: &Store,
    key: &str,
    rev: i64,
    d: &Value,
    replicasets: &[(String, i64, Value)],
) -> Result<(), StoreError> {
    let uid = s(d, "/metadata/uid");
    let hash = template_hash(d.pointer("/spec/template").unwrap_or(&Value::Null));
    let want = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let mut totals: BTreeMap<&str, i64> = BTreeMap::new();
    let mut updated = 0;
    for (_, _, rs) in replicasets
        .iter()
        .filter(|(_, _, rs)| controller_uid(rs) == Some(uid))
    {
        for f in ["replicas", "readyReplicas", "availableReplicas"] {
            *totals.entry(f).or_default() += i(rs, &format!("/status/{f}"));
        }
        if s(rs, "/metadata/labels/pod-template-hash") == hash {
            updated = i(rs, "/status/replicas");
        }
    }
    let available = totals.get("availableReplicas").copied().unwrap_or(0);
    let now = meta::now_rfc3339();
    let old_conditions = d
        .pointer("/status/conditions")
        .cloned()
        .unwrap_or_else(|| json!([]));
    let condition = |t: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" };
        // Keep transition times when nothing changed.
        let prior = old_conditions.as_array().and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == t && c["status"] == status && c["reason"] == reason)
                .cloned()
        });
        prior.unwrap_or_else(|| json!({"type": t, "status": status, "reason": reason, "message": message, "lastUpdateTime": now, "lastTransitionTime": now}))
    };
    let done = updated == want && available >= want;
    let mut status = json!({
        "observedGeneration": i(d, "/metadata/generation"),
        "replicas": totals.get("replicas").copied().unwrap_or(0),
        "updatedReplicas": updated,
        "readyReplicas": totals.get("readyReplicas").copied().unwrap_or(0),
        "availableReplicas": available,
        "conditions": [
            condition("Available", available >= want, if available >= want { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }, "Deployment has minimum availability.".into()),
            condition("Progressing", true, if done { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" }, format!("ReplicaSet \"{}-{hash}\" is progressing.", s(d, "/metadata/name"))),
        ],
    });
    if want > available {
        status["unavailableReplicas"] = json!(want - available);
    }
    let mut new = d.clone();
    new["status"] = status;
    write_if_changed(store, key, rev, d, &new).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn put(store: &Store, group: &str, resource: &str, ns: Option<&str>, obj: Value) {
        let name = s(&obj, "/metadata/name").to_owned();
        store
            .create(
                &drover_core::keys::object(group, resource, ns, &name),
                obj.to_string(),
            )
            .await
            .unwrap();
    }

    fn replicaset(ns: &str, name: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": ns, "uid": meta::new_uid()},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    }

    #[tokio::test]
    async fn no_pods_are_created_in_a_terminating_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &format!("sqlite://{}/s.db", dir.path().display()),
            Default::default(),
        )
        .await
        .unwrap();
        put(
            &store,
            "",
            "namespaces",
            None,
            json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "live"}, "status": {"phase": "Active"}}),
        )
        .await;
        put(&store, "", "namespaces", None, json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "going", "deletionTimestamp": meta::now_rfc3339()}, "status": {"phase": "Terminating"}})).await;
        put(
            &store,
            "apps",
            "replicasets",
            Some("live"),
            replicaset("live", "web"),
        )
        .await;
        put(
            &store,
            "apps",
            "replicasets",
            Some("going"),
            replicaset("going", "web"),
        )
        .await;
        put(
            &store,
            "apps",
            "replicasets",
            Some("gone"),
            replicaset("gone", "web"),
        )
        .await;

        reconcile(&store).await.unwrap();

        let pods = list(&store, PODS).await.unwrap();
        let in_ns = |ns: &str| {
            pods.iter()
                .filter(|(_, _, p)| s(p, "/metadata/namespace") == ns)
                .count()
        };
        assert_eq!(in_ns("live"), 2, "the active namespace gets its pods");
        assert_eq!(
            in_ns("going"),
            0,
            "a terminating namespace takes no new pods"
        );
        assert_eq!(in_ns("gone"), 0, "a missing namespace takes no new pods");
    }
}

#[cfg(test)]
mod crash_tests {
    use super::*;

    fn container(command: &[&str]) -> Value {
        json!({"name": "c", "command": command})
    }

    #[test]
    fn only_commands_that_end_on_their_own_crash_loop() {
        let ends = container(&["sh", "-c", "echo up; sleep 5; exit 3"]);
        assert_eq!(crash_loop_of(&ends), Some((Duration::from_secs(5), 3)));
        assert_eq!(
            crash_loop_of(&container(&["sh", "-c", "exit 1"])),
            Some((Duration::from_secs(1), 1))
        );
        assert_eq!(
            crash_loop_of(&container(&["/bin/false"])),
            Some((Duration::from_secs(1), 1))
        );
        assert_eq!(
            crash_loop_of(&container(&["false"])),
            Some((Duration::from_secs(1), 1))
        );
        for runs_on in [
            &["serve", "--leader-elect", "false"][..],
            &["sh", "-c", "serve || exit 1"],
            &["sh", "-c", "sleep infinity; exit 1"],
            &["nginx", "-g", "daemon off;"],
            &[],
        ] {
            assert_eq!(crash_loop_of(&container(runs_on)), None, "{runs_on:?}");
        }
    }

    #[test]
    fn back_off_doubles_to_five_minutes_as_go_prints_it() {
        let waits: Vec<String> = (1..=7).map(|n| go_duration(back_off(n))).collect();
        assert_eq!(
            waits,
            ["10s", "20s", "40s", "1m20s", "2m40s", "5m0s", "5m0s"]
        );
        assert_eq!(back_off(i64::MAX), Duration::from_secs(300));
    }
}
