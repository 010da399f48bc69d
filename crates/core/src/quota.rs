//! What an object takes of a namespace's ResourceQuota, as Kubernetes'
//! quota evaluators count it, in thousandths ([`crate::quantity`]): what the
//! simulated cluster's quota admission enforces, and what Drover counts
//! before a namespace moves into a project with a quota.

use std::collections::BTreeMap;

use serde_json::Value;

/// The core resources counted by their plain name (`pods`, `secrets`…) as
/// well as `count/…`.
const PLAIN_COUNTS: &[&str] = &[
    "pods",
    "services",
    "configmaps",
    "secrets",
    "persistentvolumeclaims",
    "replicationcontrollers",
    "resourcequotas",
];

/// Whether a pod has finished (Succeeded or Failed): it no longer counts.
pub fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// A pod's request or limit of `resource` (`cpu`, `memory`): the larger of
/// its containers' sum and its largest init container, as kube's
/// `PodRequests` computes it.
fn pod_resource(pod: &Value, field: &str, resource: &str) -> Option<i128> {
    let of = |c: &Value| {
        c.pointer(&format!("/resources/{field}/{resource}"))
            .and_then(Value::as_str)
            .and_then(crate::quantity::parse)
    };
    let list = |key: &str| {
        pod.pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(of)
            .collect::<Vec<i128>>()
    };
    let containers = list("containers");
    let init = list("initContainers");
    if containers.is_empty() && init.is_empty() {
        return None;
    }
    let sum = containers
        .iter()
        .fold(0i128, |total, q| total.saturating_add(*q));
    Some(sum.max(init.into_iter().max().unwrap_or(0)))
}

/// What one object of `plural` in `group` (`""` for core) takes of a
/// quota's resources, by resource name: `count/{plural}[.{group}]`, the
/// plain count of core kinds, and for pods their CPU and memory requests
/// (also as plain `cpu`/`memory`) and limits.
pub fn object_usage(plural: &str, group: &str, obj: &Value) -> BTreeMap<String, i128> {
    let one = 1000;
    let mut u = BTreeMap::new();
    let count_name = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    u.insert(count_name, one);
    if group.is_empty() && PLAIN_COUNTS.contains(&plural) {
        u.insert(plural.to_owned(), one);
    }
    if plural == "pods" && group.is_empty() {
        for resource in ["cpu", "memory"] {
            if let Some(q) = pod_resource(obj, "requests", resource) {
                u.insert(format!("requests.{resource}"), q);
                u.insert(resource.to_owned(), q);
            }
            if let Some(q) = pod_resource(obj, "limits", resource) {
                u.insert(format!("limits.{resource}"), q);
            }
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_count_containers_or_their_largest_init_container() {
        let pod = json!({"spec": {
        "initContainers": [{"resources": {"requests": {"cpu": "900m"}}}],
        "containers": [
            {"resources": {"requests": {"cpu": "200m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
            {"resources": {"requests": {"cpu": "300m"}}},
        ]}});
        let u = object_usage("pods", "", &pod);
        assert_eq!(u["requests.cpu"], 900, "the init container's is larger");
        assert_eq!(u["cpu"], 900);
        assert_eq!(u["requests.memory"], 64 * 1024 * 1024 * 1000);
        assert_eq!(u["limits.cpu"], 1000);
        assert_eq!((u["pods"], u["count/pods"]), (1000, 1000));
        assert!(!u.contains_key("limits.memory"));
        let d = object_usage("deployments", "apps", &json!({}));
        assert_eq!(d.keys().collect::<Vec<_>>(), ["count/deployments.apps"]);
        assert!(is_terminal(&json!({"status": {"phase": "Failed"}})));
    }
}
