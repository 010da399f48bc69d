//! What a new simulated cluster holds, as kube-apiserver creates it: the
//! four default namespaces, the bootstrap RBAC kubectl users meet
//! (`cluster-admin`, `admin`/`edit`/`view` with their aggregation labels,
//! `system:basic-user`, `system:discovery`, `system:public-info-viewer`), and
//! the simulated nodes.

use drover_core::meta;
use drover_store::{Store, StoreError};
use serde_json::{json, Value};

fn key(group: &str, plural: &str, ns: Option<&str>, name: &str) -> String {
    drover_core::keys::object(group, plural, ns, name)
}

fn meta(name: &str, labels: Value) -> Value {
    json!({"name": name, "uid": meta::new_uid(), "creationTimestamp": meta::now_rfc3339(), "generation": 1, "labels": labels})
}

async fn ensure(store: &Store, key: String, obj: Value) -> Result<(), StoreError> {
    crate::workloads::create_if_absent(store, &key, &obj).await
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

/// Create what a new cluster has (idempotent).
pub(crate) async fn ensure_cluster(
    store: &Store,
    name: &str,
    nodes: usize,
    version: &str,
) -> Result<(), StoreError> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta(ns, json!({"kubernetes.io/metadata.name": ns})),
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        ensure(store, key("", "namespaces", None, ns), obj).await?;
    }
    let rbac = "rbac.authorization.k8s.io";
    let read = &["get", "list", "watch"];
    let write = &["create", "delete", "deletecollection", "patch", "update"];
    let core_view = &[
        "configmaps",
        "endpoints",
        "persistentvolumeclaims",
        "pods",
        "pods/log",
        "pods/status",
        "replicationcontrollers",
        "services",
        "events",
        "limitranges",
        "resourcequotas",
        "resourcequotas/status",
        "serviceaccounts",
        "namespaces",
        "namespaces/status",
        "bindings",
    ];
    let apps = &[
        "deployments",
        "deployments/scale",
        "deployments/status",
        "replicasets",
        "replicasets/scale",
        "replicasets/status",
        "statefulsets",
        "statefulsets/scale",
        "statefulsets/status",
        "daemonsets",
        "daemonsets/status",
    ];
    let agg = |labels: &[&str]| -> Value {
        let mut m = serde_json::Map::new();
        for l in labels {
            m.insert(
                format!("rbac.authorization.k8s.io/aggregate-to-{l}"),
                json!("true"),
            );
        }
        Value::Object(m)
    };
    let mut roles: Vec<(&str, Value, Value)> = vec![
        (
            "cluster-admin",
            json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
            json!({"rules": [rule(&["*"], &["*"], &["*"]), {"verbs": ["*"], "nonResourceURLs": ["*"]}]}),
        ),
        (
            "system:aggregate-to-view",
            agg(&["admin", "edit", "view"]),
            json!({"rules": [rule(read, &[""], core_view), rule(read, &["apps"], apps), rule(read, &["batch"], &["jobs", "cronjobs"]), rule(read, &["coordination.k8s.io"], &["leases"])]}),
        ),
        (
            "system:aggregate-to-edit",
            agg(&["admin", "edit"]),
            json!({"rules": [
                rule(write, &[""], &["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "configmaps", "endpoints", "persistentvolumeclaims", "replicationcontrollers", "services", "secrets", "serviceaccounts"]),
                rule(read, &[""], &["secrets", "pods/attach", "pods/exec", "pods/portforward"]),
                rule(&["impersonate"], &[""], &["serviceaccounts"]),
                rule(write, &["apps"], apps),
                rule(write, &["batch"], &["jobs", "cronjobs"]),
            ]}),
        ),
        (
            "system:aggregate-to-admin",
            agg(&["admin"]),
            json!({"rules": [rule(&["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"], &[rbac], &["roles", "rolebindings"]), rule(&["create"], &["authorization.k8s.io"], &["localsubjectaccessreviews"])]}),
        ),
        (
            "system:basic-user",
            json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
            json!({"rules": [rule(&["create"], &["authorization.k8s.io"], &["selfsubjectaccessreviews", "selfsubjectrulesreviews"]), rule(&["create"], &["authentication.k8s.io"], &["selfsubjectreviews"])]}),
        ),
        (
            "system:discovery",
            json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
            json!({"rules": [{"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"]}]}),
        ),
        (
            "system:public-info-viewer",
            json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
            json!({"rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"]}]}),
        ),
    ];
    for (name, level) in [("admin", "admin"), ("edit", "edit"), ("view", "view")] {
        let selector = json!({"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{level}"): "true"}});
        roles.push((
            name,
            json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
            json!({"rules": [], "aggregationRule": {"clusterRoleSelectors": [selector]}}),
        ));
    }
    for (name, labels, body) in roles {
        let mut obj = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(name, labels)});
        for (k, v) in body.as_object().expect("object") {
            obj[k] = v.clone();
        }
        ensure(store, key(rbac, "clusterroles", None, name), obj).await?;
    }
    let bindings = [
        ("cluster-admin", "cluster-admin", vec!["system:masters"]),
        (
            "system:basic-user",
            "system:basic-user",
            vec!["system:authenticated"],
        ),
        (
            "system:discovery",
            "system:discovery",
            vec!["system:authenticated"],
        ),
        (
            "system:public-info-viewer",
            "system:public-info-viewer",
            vec!["system:authenticated", "system:unauthenticated"],
        ),
    ];
    for (name, role, groups) in bindings {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"kind": "Group", "apiGroup": rbac, "name": g}))
            .collect();
        let obj = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": meta(name, json!({"kubernetes.io/bootstrapping": "rbac-defaults"})),
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": role}, "subjects": subjects});
        ensure(store, key(rbac, "clusterrolebindings", None, name), obj).await?;
    }
    for i in 0..nodes {
        let node = format!("{name}-node-{i}");
        ensure(
            store,
            key("", "nodes", None, &node),
            node_object(&node, i, version),
        )
        .await?;
    }
    Ok(())
}

/// The `kubernetes` Service (its Endpoints naming the API server on
/// `port`), the default StorageClass and the system PriorityClasses.
pub(crate) async fn ensure_services(store: &Store, port: u16) -> Result<(), StoreError> {
    for (key, obj) in crate::services::kubernetes_service(port) {
        // The API server's address changes with each start.
        if key.contains("/endpoints") {
            if let Some(kv) = store.get(&key).await? {
                store.update(&key, obj.to_string(), kv.mod_revision).await?;
                continue;
            }
        }
        ensure(store, key, obj).await?;
    }
    let (record, owner) = crate::services::kubernetes_record();
    match store.create(&record, owner).await {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => return Err(e),
    }
    let class = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "standard", "uid": meta::new_uid(), "creationTimestamp": meta::now_rfc3339(),
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "sim.drover.io/local", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate", "allowVolumeExpansion": true});
    ensure(
        store,
        key("storage.k8s.io", "storageclasses", None, "standard"),
        class,
    )
    .await?;
    for (name, value, description) in [
        ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
        ("system-node-critical", 2_000_001_000, "Used for system critical pods that must not be moved from their current node."),
    ] {
        let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name, "uid": meta::new_uid(), "creationTimestamp": meta::now_rfc3339()},
            "value": value, "globalDefault": false, "description": description, "preemptionPolicy": "PreemptLowerPriority"});
        ensure(store, key("scheduling.k8s.io", "priorityclasses", None, name), class).await?;
    }
    Ok(())
}

/// A Ready node with the simulated version, capacity and conditions.
pub(crate) fn node_object(name: &str, index: usize, version: &str) -> Value {
    let now = meta::now_rfc3339();
    let mut labels = json!({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"});
    if index == 0 {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
    }
    let condition = |t: &str, status: &str, reason: &str, message: &str| json!({"type": t, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": now, "lastTransitionTime": now});
    let resources =
        json!({"cpu": "4", "memory": "16384Mi", "pods": "110", "ephemeral-storage": "100Gi"});
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": meta(name, labels),
        "spec": {"podCIDR": format!("10.244.{index}.0/24"), "podCIDRs": [format!("10.244.{index}.0/24")]},
        "status": {
            "capacity": resources, "allocatable": {"cpu": "3800m", "memory": "15872Mi", "pods": "110", "ephemeral-storage": "95Gi"},
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": format!("10.0.{}.{}", index / 250, index % 250 + 2)}, {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "kubeletVersion": version, "kubeProxyVersion": version, "osImage": "Drover Simulated Linux",
                "kernelVersion": "6.1.0-drover-sim", "operatingSystem": "linux", "architecture": "amd64",
                "containerRuntimeVersion": "containerd://1.7.22-sim", "machineID": meta::new_uid().replace('-', ""),
                "systemUUID": meta::new_uid(), "bootID": meta::new_uid(),
            },
        },
    })
}
