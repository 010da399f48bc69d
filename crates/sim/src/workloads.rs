//! Workloads, level-based, as the control plane and kubelets run them:
//!
//! - Deployment → a ReplicaSet per pod template (named by a hash of the
//!   template, `pod-template-hash` label, `deployment.kubernetes.io/revision`
//!   annotation); the newest gets all replicas, older ones none (a rollout
//!   completes at once); status with observedGeneration, replica counts and
//!   the Available/Progressing conditions `kubectl rollout status` reads.
//! - ReplicaSet → Pods owned by it, created or removed to match replicas.
//! - Scheduler and kubelet: a pod without a node is bound round-robin to a
//!   node and reported Running and Ready with an IP from the node's CIDR.
//! - Garbage collection: objects whose controller owner is gone are deleted.
//!   An owner deleted with `propagationPolicy: Orphan` (the `orphan`
//!   finalizer) first has its dependents' owner references removed; one
//!   deleted with Foreground (`foregroundDeletion`) waits for its dependents
//!   to be deleted, as kube's garbage collector does.
//! - Nothing new is created in a namespace that is missing or Terminating,
//!   as the namespace lifecycle admission plugin refuses it.
//!
//! Every pass reads everything and writes only differences, so it may stop
//! and restart at any point.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

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

/// Run the workload controllers until the task is aborted.
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
            if let Err(e) = reconcile(&store).await {
                if matches!(e, StoreError::Closed) {
                    return;
                }
                tracing::warn!(error = %e, "workload pass failed");
            }
            // Wake on any change to workloads or pods, or resync every 30 s.
            let mut apps = store.watch("/registry/apps/", from);
            let mut pods = store.watch(PODS, from);
            tokio::select! {
                _ = apps.next() => {}
                _ = pods.next() => {}
                () = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

async fn list(store: &Store, prefix: &str) -> Result<Vec<(String, i64, Value)>, StoreError> {
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

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

fn i(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn controller_uid(v: &Value) -> Option<&str> {
    v.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)?
        .get("uid")?
        .as_str()
}

fn owner_ref(kind: &str, api_version: &str, owner: &Value) -> Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": s(owner, "/metadata/name"), "uid": s(owner, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true}])
}

/// Write `new` over `(key, rev, old)` if it differs; a conflict just waits
/// for the next pass.
async fn write_if_changed(
    store: &Store,
    key: &str,
    rev: i64,
    old: &Value,
    new: &Value,
) -> Result<(), StoreError> {
    if old == new {
        return Ok(());
    }
    match store.update(key, new.to_string(), rev).await {
        Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn template_hash(template: &Value) -> String {
    let digest = Sha256::digest(template.to_string().as_bytes());
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    digest
        .iter()
        .take(10)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn new_meta(name: &str, ns: &str, labels: Value, owners: Value) -> Value {
    json!({"name": name, "namespace": ns, "uid": meta::new_uid(), "creationTimestamp": meta::now_rfc3339(), "generation": 1, "labels": labels, "ownerReferences": owners})
}

async fn reconcile(store: &Store) -> Result<(), StoreError> {
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
    schedule_and_run(store).await?;
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
    Ok(())
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
    let max_revision = owned
        .iter()
        .filter_map(|(_, _, rs)| {
            s(
                rs,
                "/metadata/annotations/deployment.kubernetes.io~1revision",
            )
            .parse::<i64>()
            .ok()
        })
        .max()
        .unwrap_or(0);
    let current = owned
        .iter()
        .find(|(_, _, rs)| s(rs, "/metadata/name") == rs_name)
        .map(|(k, r, v)| (k.clone(), *r, v.clone()));
    let revision = match &current {
        Some((_, _, rs)) => s(
            rs,
            "/metadata/annotations/deployment.kubernetes.io~1revision",
        )
        .parse::<i64>()
        .unwrap_or(max_revision),
        None => max_revision + 1,
    };
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
            metadata["annotations"] = json!({"deployment.kubernetes.io/revision": revision.to_string(), "deployment.kubernetes.io/desired-replicas": replicas.to_string()});
            let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": metadata,
                "spec": {"replicas": replicas, "selector": selector, "template": template}, "status": {"replicas": 0}});
            let rs_key = drover_core::keys::object("apps", "replicasets", Some(&ns), &rs_name);
            match store.create(&rs_key, rs.to_string()).await {
                Ok(kv) => replicasets.push((rs_key, kv.mod_revision, rs)),
                Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Some((k, r, rs)) => {
            let mut new = rs.clone();
            new["spec"]["replicas"] = json!(replicas);
            write_if_changed(store, &k, r, &rs, &new).await?;
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
    old.sort_by_key(|(_, _, rs)| {
        s(
            rs,
            "/metadata/annotations/deployment.kubernetes.io~1revision",
        )
        .parse::<i64>()
        .unwrap_or(0)
    });
    let excess = old.len().saturating_sub(limit.max(0) as usize);
    for (n, (k, r, rs)) in old.iter().enumerate() {
        if n < excess {
            let _ = store.delete(k, None).await;
            continue;
        }
        let mut new = rs.clone();
        new["spec"]["replicas"] = json!(0);
        write_if_changed(store, k, *r, rs, &new).await?;
    }
    let mut new_d = d.clone();
    new_d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
        json!(revision.to_string());
    write_if_changed(store, key, rev, d, &new_d).await
}

fn ready(pod: &Value) -> bool {
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
    let ns = s(rs, "/metadata/namespace").to_owned();
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
            let labels = rs
                .pointer("/spec/template/metadata/labels")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let spec = rs
                .pointer("/spec/template/spec")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": new_meta(&pod_name, &ns, labels, owner_ref("ReplicaSet", "apps/v1", rs)), "spec": spec, "status": {"phase": "Pending", "qosClass": "BestEffort"}});
            if let Some(a) = rs.pointer("/spec/template/metadata/annotations") {
                pod["metadata"]["annotations"] = a.clone();
            }
            crate::defaults::apply("Pod", &mut pod);
            // Admission, as for pods created through the API.
            if crate::admission::limit_ranges(store, &ns, &mut pod)
                .await
                .is_err()
            {
                break;
            }
            if let Err(e) = crate::admission::pod_security(store, &ns, "Pod", &pod_name, &pod).await
            {
                tracing::debug!(replicaset = %name, error = %e.message, "pod refused by Pod Security admission");
                break;
            }
            if let Err(e) =
                crate::admission::check_quota(store, &ns, "pods", "", &pod_name, &pod).await
            {
                tracing::debug!(replicaset = %name, error = %e.message, "pod refused by admission");
                break;
            }
            let pod_key = drover_core::keys::object("", "pods", Some(&ns), &pod_name);
            match store.create(&pod_key, pod.to_string()).await {
                Ok(kv) => {
                    owned.push((pod_key.clone(), kv.mod_revision, pod.clone()));
                    pods.push((pod_key, kv.mod_revision, pod));
                }
                Err(StoreError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        // Too many: remove the newest first.
        owned.sort_by(|a, b| {
            s(&b.2, "/metadata/creationTimestamp")
                .cmp(s(&a.2, "/metadata/creationTimestamp"))
                .then(b.0.cmp(&a.0))
        });
        while owned.len() > want {
            let (k, _, _) = owned.remove(0);
            match store.delete(&k, None).await {
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
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

async fn schedule_and_run(store: &Store) -> Result<(), StoreError> {
    let nodes = list(store, NODES).await?;
    if nodes.is_empty() {
        return Ok(());
    }
    let pods = list(store, PODS).await?;
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for (_, _, p) in &pods {
        if let Some(n) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
            *per_node.entry(n.to_owned()).or_default() += 1;
        }
    }
    for (key, rev, pod) in pods {
        if pod.pointer("/metadata/deletionTimestamp").is_some()
            || s(&pod, "/status/phase") == "Running" && pod.pointer("/spec/nodeName").is_some()
        {
            continue;
        }
        // Bind to the least used node (round-robin in effect).
        let (node_index, (_, _, node)) = nodes
            .iter()
            .enumerate()
            .min_by_key(|(n, (_, _, node))| {
                (
                    per_node
                        .get(s(node, "/metadata/name"))
                        .copied()
                        .unwrap_or(0),
                    *n,
                )
            })
            .expect("nodes exist");
        let node_name = s(node, "/metadata/name").to_owned();
        let count = per_node.entry(node_name.clone()).or_default();
        *count += 1;
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
        new["status"] = json!({
            "phase": "Running", "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
            "startTime": now, "qosClass": "BestEffort", "containerStatuses": statuses,
            "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"), condition("Ready"), condition("ContainersReady"), condition("PodScheduled")],
        });
        write_if_changed(store, &key, rev, &pod, &new).await?;
    }
    Ok(())
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

async fn garbage_collect(
    store: &Store,
    deployments: &[(String, i64, Value)],
    replicasets: &[(String, i64, Value)],
) -> Result<(), StoreError> {
    let deployment_uids: Vec<&str> = deployments
        .iter()
        .map(|(_, _, d)| s(d, "/metadata/uid"))
        .collect();
    for (k, _, rs) in replicasets {
        if controller_uid(rs).is_some_and(|u| !deployment_uids.contains(&u)) {
            let _ = store.delete(k, None).await;
        }
    }
    let rs_uids: Vec<String> = list(store, REPLICASETS)
        .await?
        .iter()
        .map(|(_, _, rs)| s(rs, "/metadata/uid").to_owned())
        .collect();
    for (k, _, pod) in list(store, PODS).await? {
        let owned_by_rs = pod
            .pointer("/metadata/ownerReferences/0/kind")
            .and_then(Value::as_str)
            == Some("ReplicaSet");
        if owned_by_rs && controller_uid(&pod).is_some_and(|u| !rs_uids.iter().any(|r| r == u)) {
            let _ = store.delete(&k, None).await;
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
