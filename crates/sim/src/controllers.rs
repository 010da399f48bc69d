//! The simulated cluster's controllers, writing to the store as the real
//! control plane and kubelets would:
//!
//! - namespace lifecycle (and quota usage), after each change: a deleted
//!   namespace shows `Terminating` (for at least a second, as a real one
//!   does for a while); its contents are
//!   deleted as through the API (objects with finalizers are marked and hold
//!   the namespace until released); then the namespace goes;
//! - the `default` ServiceAccount and `kube-root-ca.crt` ConfigMap in
//!   every namespace;
//! - node heartbeats: every node renews its Lease in `kube-node-lease` and
//!   the `lastHeartbeatTime` of its conditions, so watchers see them live.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use drover_apiserver::ApiServer;
use drover_core::meta;
use drover_store::{ListOptions, Store, StoreError};
use futures::StreamExt;
use serde_json::{json, Value};

const NAMESPACES: &str = "/registry/core/namespaces/";
/// How long a deleted namespace stays Terminating at least.
const TERMINATING_FOR: Duration = Duration::from_secs(1);

/// How often the namespace lifecycle looks while a namespace terminates.
const TERMINATING_PASS: Duration = Duration::from_millis(500);
/// How often it looks without any change in the store.
const IDLE_PASS: Duration = Duration::from_secs(30);
/// How long after a change it waits for the rest of a burst.
const CHANGE_SETTLE: Duration = Duration::from_millis(100);

/// Run the namespace lifecycle (and quota usage) until the task is aborted:
/// a pass after every burst of changes to core kinds, every 500 ms while a
/// namespace terminates, and every 30 s otherwise, so an idle sim costs
/// nothing.
pub(crate) fn spawn_namespace_lifecycle(
    store: Store,
    api: Arc<ApiServer>,
    ca_pem: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let from = match store.revisions().await {
                Ok(r) => r.current,
                Err(StoreError::Closed) => return,
                Err(_) => {
                    tokio::time::sleep(TERMINATING_PASS).await;
                    continue;
                }
            };
            if let Err(e) = crate::admission::refresh_quotas(&store).await {
                tracing::warn!(error = %e, "quota refresh failed");
            }
            if let Err(e) = namespace_defaults(&store, &ca_pem).await {
                tracing::warn!(error = %e, "namespace defaults failed");
            }
            let wait = match finalize_namespaces(&store, &api).await {
                Ok(true) => TERMINATING_PASS,
                Ok(false) => IDLE_PASS,
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "namespace lifecycle pass failed");
                    TERMINATING_PASS
                }
            };
            // Namespaces, pods and quotas are all core kinds.
            let mut changes = store.watch("/registry/core/", from);
            tokio::select! {
                _ = changes.next() => {
                    // Take a burst of changes (an applied manifest) in one pass.
                    tokio::time::sleep(CHANGE_SETTLE).await;
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    })
}

/// What kube's controllers put in every active namespace: the `default`
/// ServiceAccount and the `kube-root-ca.crt` ConfigMap with the cluster's
/// CA.
async fn namespace_defaults(store: &Store, ca_pem: &str) -> Result<(), StoreError> {
    let page = store
        .list(&ListOptions {
            prefix: NAMESPACES.into(),
            ..Default::default()
        })
        .await?;
    for kv in page.items {
        let Ok(ns) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if !crate::accepts_content(&ns) {
            continue;
        }
        let name = drover_apiserver::object::name(&ns).to_owned();
        let object_meta = |n: &str| json!({"name": n, "namespace": name, "uid": meta::new_uid(), "creationTimestamp": meta::now_rfc3339()});
        let wanted = [
            (
                drover_core::keys::object("", "serviceaccounts", Some(&name), "default"),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": object_meta("default")}),
            ),
            (
                drover_core::keys::object("", "configmaps", Some(&name), "kube-root-ca.crt"),
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                    "name": "kube-root-ca.crt", "namespace": name, "uid": meta::new_uid(), "creationTimestamp": meta::now_rfc3339(),
                    "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                    "data": {"ca.crt": ca_pem}}),
            ),
        ];
        for (key, obj) in wanted {
            if store.get(&key).await?.is_none() {
                crate::workloads::create_if_absent(store, &key, &obj).await?;
            }
        }
    }
    Ok(())
}

/// Delete the namespaces marked for deletion whose contents are gone;
/// true while some namespace is still terminating.
async fn finalize_namespaces(store: &Store, api: &ApiServer) -> Result<bool, StoreError> {
    let mut terminating = false;
    let page = store
        .list(&ListOptions {
            prefix: NAMESPACES.into(),
            ..Default::default()
        })
        .await?;
    for kv in page.items {
        let Ok(ns) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        let Some(since) = ns
            .pointer("/metadata/deletionTimestamp")
            .and_then(Value::as_str)
            .and_then(meta::parse_rfc3339)
        else {
            continue;
        };
        terminating = true;
        if SystemTime::now().duration_since(since).unwrap_or_default() < TERMINATING_FOR {
            continue;
        }
        let name = drover_apiserver::object::name(&ns).to_owned();
        // Delete the contents as a deletion through the API would: objects
        // with finalizers only get a deletionTimestamp and hold the
        // namespace until they are released.
        let mut remaining = 0;
        for r in api.registry().all().iter().filter(|r| r.info.namespaced) {
            let prefix = drover_core::keys::prefix(r.info.group, r.info.plural, Some(&name));
            for item in store
                .list(&ListOptions {
                    prefix,
                    ..Default::default()
                })
                .await?
                .items
            {
                let Ok(mut obj) = serde_json::from_slice::<Value>(&item.value) else {
                    continue;
                };
                if drover_apiserver::object::finalizers(&obj).is_empty() {
                    // A Service's address and ports are freed with it, in
                    // the same transaction.
                    let mut ops = vec![drover_store::Op::delete(
                        item.key.clone(),
                        item.mod_revision,
                    )];
                    if r.info.plural == "services" && r.info.group.is_empty() {
                        match crate::services::release(store, &obj).await {
                            Ok(more) => ops.extend(more),
                            // The next pass tries again.
                            Err(_) => {
                                remaining += 1;
                                continue;
                            }
                        }
                    }
                    match store.txn(&ops).await {
                        Ok(_) => {}
                        Err(StoreError::NotFound(k)) if k == item.key => {}
                        // Changed meanwhile: the next pass tries again.
                        Err(
                            StoreError::NotFound(_)
                            | StoreError::Conflict { .. }
                            | StoreError::AlreadyExists(_),
                        ) => remaining += 1,
                        Err(e) => return Err(e),
                    }
                    continue;
                }
                remaining += 1;
                if !drover_apiserver::object::is_deleting(&obj) {
                    obj["metadata"]["deletionTimestamp"] = json!(meta::now_rfc3339());
                    obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                    match store
                        .update(&item.key, obj.to_string(), item.mod_revision)
                        .await
                    {
                        Ok(_) | Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        if remaining > 0 {
            continue;
        }
        match store.delete(&kv.key, Some(kv.mod_revision)).await {
            Ok(_) => tracing::info!(namespace = %name, "namespace deleted"),
            Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(terminating)
}

fn lease_key(node: &str) -> String {
    drover_core::keys::object(
        "coordination.k8s.io",
        "leases",
        Some("kube-node-lease"),
        node,
    )
}

/// A node's Lease as the kubelet keeps it.
pub(crate) fn lease_object(node: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node, "namespace": "kube-node-lease", "uid": meta::new_uid(), "creationTimestamp": meta::now_rfc3339(), "generation": 1,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": ""}]},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": micro_now()},
    })
}

fn micro_now() -> String {
    let now = SystemTime::now();
    let micros = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_micros())
        .unwrap_or(0);
    format!("{}.{micros:06}Z", meta::rfc3339(now).trim_end_matches('Z'))
}

/// Renew every node's Lease and heartbeat every `every`, until aborted;
/// with `flap`, one node in turn flips between Ready and NotReady each time.
pub(crate) fn spawn_heartbeats(
    store: Store,
    every: Duration,
    flap: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let mut turn = 0usize;
        loop {
            tick.tick().await;
            if flap {
                if let Err(e) = flap_one(&store, turn).await {
                    tracing::warn!(error = %e, "node flap failed");
                }
                turn += 1;
            }
            if let Err(e) = heartbeat(&store).await {
                if matches!(e, StoreError::Closed) {
                    return;
                }
                tracing::warn!(error = %e, "node heartbeat failed");
            }
        }
    })
}

/// Update `key` with `change` applied, retrying on conflicts.
async fn modify(store: &Store, key: &str, change: impl Fn(&mut Value)) -> Result<(), StoreError> {
    drover_apiserver::object::update_json(store, key, |v| {
        change(v);
        true
    })
    .await
}

async fn heartbeat(store: &Store) -> Result<(), StoreError> {
    let nodes = store
        .list(&ListOptions {
            prefix: "/registry/core/nodes/".into(),
            ..Default::default()
        })
        .await?;
    let now = meta::now_rfc3339();
    for kv in nodes.items {
        let name = kv.key.rsplit('/').next().unwrap_or_default().to_owned();
        modify(store, &kv.key, |node| {
            if let Some(Value::Array(conditions)) = node.pointer_mut("/status/conditions") {
                for c in conditions {
                    c["lastHeartbeatTime"] = json!(now);
                }
            }
        })
        .await?;
        if store.get(&lease_key(&name)).await?.is_none() {
            match store
                .create(&lease_key(&name), lease_object(&name).to_string())
                .await
            {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        } else {
            let renew = micro_now();
            modify(store, &lease_key(&name), |lease| {
                lease["spec"]["renewTime"] = json!(renew)
            })
            .await?;
        }
    }
    Ok(())
}

/// Flip the Ready condition of node number `turn` (modulo the node count).
async fn flap_one(store: &Store, turn: usize) -> Result<(), StoreError> {
    let nodes = store
        .list(&ListOptions {
            prefix: "/registry/core/nodes/".into(),
            ..Default::default()
        })
        .await?;
    if nodes.items.is_empty() {
        return Ok(());
    }
    let key = nodes.items[turn % nodes.items.len()].key.clone();
    let now = meta::now_rfc3339();
    modify(store, &key, |node| {
        if let Some(Value::Array(conditions)) = node.pointer_mut("/status/conditions") {
            for c in conditions.iter_mut().filter(|c| c["type"] == "Ready") {
                let ready = c["status"] == "True";
                c["status"] = json!(if ready { "False" } else { "True" });
                c["reason"] = json!(if ready {
                    "KubeletNotReady"
                } else {
                    "KubeletReady"
                });
                c["message"] = json!(if ready {
                    "container runtime status check may not have completed yet"
                } else {
                    "kubelet is posting ready status"
                });
                c["lastTransitionTime"] = json!(now);
            }
        }
    })
    .await
}

/// Create the Leases of the nodes (at start).
pub(crate) async fn ensure_leases(store: &Store, nodes: &[String]) -> Result<(), StoreError> {
    for node in nodes {
        match store
            .create(&lease_key(node), lease_object(node).to_string())
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
