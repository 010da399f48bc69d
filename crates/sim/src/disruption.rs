//! PodDisruptionBudgets and evictions, as kube's disruption controller and
//! the `pods/eviction` subresource handle them: a budget's status counts
//! the healthy pods it selects against `minAvailable` or `maxUnavailable`,
//! and an eviction that would leave fewer healthy pods than a budget wants
//! is refused with 429, which `kubectl drain` retries.

use std::collections::BTreeMap;

use drover_apiserver::ApiError;
use drover_core::meta;
use drover_store::{Store, StoreError};
use serde_json::{json, Value};

use crate::workloads::{i, list, ready, s, write_if_changed};

const BUDGETS: &str = "/registry/policy/poddisruptionbudgets/";
const PODS: &str = "/registry/core/pods/";

fn selects(budget: &Value, pod: &Value) -> bool {
    let Some(selector) = budget.pointer("/spec/selector") else {
        return false;
    };
    let labels: BTreeMap<String, String> = drover_apiserver::object::labels(pod);
    crate::authz::selector_matches(selector, &labels)
}

/// An int-or-percent of `total`, rounded up as kube rounds budgets.
fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(p) => {
            let pct: i64 = p.strip_suffix('%')?.parse().ok()?;
            Some((pct * total + 99) / 100)
        }
        _ => None,
    }
}

/// (expected, healthy, desired healthy, disruptions allowed) of a budget.
fn count(budget: &Value, pods: &[&Value]) -> (i64, i64, i64, i64) {
    let ns = s(budget, "/metadata/namespace");
    let selected: Vec<&&Value> = pods
        .iter()
        .filter(|p| s(p, "/metadata/namespace") == ns && selects(budget, p))
        .filter(|p| !matches!(s(p, "/status/phase"), "Succeeded" | "Failed"))
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    let expected = selected.len() as i64;
    let healthy = selected.iter().filter(|p| ready(p)).count() as i64;
    let desired = if let Some(min) = budget.pointer("/spec/minAvailable") {
        scaled(min, expected).unwrap_or(0)
    } else if let Some(max) = budget.pointer("/spec/maxUnavailable") {
        (expected - scaled(max, expected).unwrap_or(0)).max(0)
    } else {
        expected
    };
    (expected, healthy, desired, (healthy - desired).max(0))
}

/// Keep every budget's status current.
pub(crate) async fn reconcile(store: &Store) -> Result<(), StoreError> {
    let budgets = list(store, BUDGETS).await?;
    if budgets.is_empty() {
        return Ok(());
    }
    let pods = list(store, PODS).await?;
    let pods: Vec<&Value> = pods.iter().map(|(_, _, p)| p).collect();
    for (key, rev, budget) in &budgets {
        let (expected, healthy, desired, allowed) = count(budget, &pods);
        let old = budget.pointer("/status/conditions/0").cloned();
        let (status, reason) = if allowed > 0 {
            ("True", "SufficientPods")
        } else {
            ("False", "InsufficientPods")
        };
        let condition = match old {
            Some(c) if c["status"] == status => c,
            _ => {
                json!({"type": "DisruptionAllowed", "status": status, "reason": reason, "message": "",
                "observedGeneration": i(budget, "/metadata/generation"), "lastTransitionTime": meta::now_rfc3339()})
            }
        };
        let mut new = budget.clone();
        new["status"] = json!({
            "observedGeneration": i(budget, "/metadata/generation"), "expectedPods": expected,
            "currentHealthy": healthy, "desiredHealthy": desired, "disruptionsAllowed": allowed,
            "conditions": [condition],
        });
        write_if_changed(store, key, *rev, budget, &new).await?;
    }
    Ok(())
}

/// `POST …/pods/{name}/eviction`: delete the pod unless a budget forbids.
pub(crate) async fn evict(store: &Store, ns: &str, name: &str) -> Result<Value, ApiError> {
    let unavailable = |_: StoreError| ApiError::unavailable("the datastore is unavailable");
    let key = drover_core::keys::object("", "pods", Some(ns), name);
    let subject = drover_apiserver::error::Subject {
        group: "",
        resource: "pods",
        name,
    };
    let kv = store
        .get(&key)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found(subject))?;
    let pod: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
    // A pod that is not running disrupts nothing.
    let running = !matches!(s(&pod, "/status/phase"), "Succeeded" | "Failed" | "Pending");
    if running {
        let budgets = list(store, BUDGETS).await.map_err(unavailable)?;
        let pods = list(store, PODS).await.map_err(unavailable)?;
        let pods: Vec<&Value> = pods.iter().map(|(_, _, p)| p).collect();
        for (_, _, budget) in budgets
            .iter()
            .filter(|(_, _, b)| s(b, "/metadata/namespace") == ns && selects(b, &pod))
        {
            let (_, healthy, desired, allowed) = count(budget, &pods);
            if allowed < 1 && ready(&pod) {
                return Err(ApiError::too_many_requests(
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    10,
                )
                .with_details(json!({"causes": [{"reason": "DisruptionBudget",
                    "message": format!("The disruption budget {} needs {desired} healthy pods and has {healthy} currently", s(budget, "/metadata/name"))}]})));
            }
        }
    }
    match store.delete(&key, Some(kv.mod_revision)).await {
        Ok(_) => {}
        Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(subject)),
        Err(StoreError::Conflict { .. }) => return Err(ApiError::conflict(subject)),
        Err(e) => return Err(unavailable(e)),
    }
    crate::workloads::killed(store, &pod).await;
    Ok(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_count_healthy_pods_against_their_floor() {
        let pod = |ready: bool| {
            json!({"metadata": {"namespace": "a", "labels": {"app": "web"}}, "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
        };
        let pods = [pod(true), pod(true), pod(false)];
        let refs: Vec<&Value> = pods.iter().collect();
        let min = json!({"metadata": {"namespace": "a"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}});
        assert_eq!(count(&min, &refs), (3, 2, 2, 0));
        let max = json!({"metadata": {"namespace": "a"}, "spec": {"maxUnavailable": "50%", "selector": {"matchLabels": {"app": "web"}}}});
        assert_eq!(count(&max, &refs), (3, 2, 1, 1));
    }
}
