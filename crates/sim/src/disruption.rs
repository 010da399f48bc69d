//! PodDisruptionBudgets and evictions, as kube's disruption controller and
//! the `pods/eviction` subresource handle them: a budget's status counts
//! the healthy pods it selects against `minAvailable` or `maxUnavailable`
//! of the replicas their controllers want, and an eviction that would
//! leave fewer healthy pods than a budget wants is refused with 429, which
//! `kubectl drain` retries. An eviction and its budget's record of it
//! (`disruptedPods`) are one transaction.

use std::collections::{BTreeMap, HashMap};

use drover_apiserver::ApiError;
use drover_core::meta;
use drover_store::{Op, Store, StoreError};
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

/// The pods a budget expects: the replicas its pods' controllers want
/// (ReplicaSets, StatefulSets), as kube's disruption controller takes
/// them, or the pods themselves when they have none.
fn expected_of(selected: &[&&Value], controllers: &HashMap<String, i64>) -> i64 {
    let mut seen = std::collections::HashSet::new();
    let mut expected = 0;
    for pod in selected {
        match crate::workloads::controller_uid(pod).and_then(|u| controllers.get(u).map(|r| (u, r)))
        {
            Some((uid, replicas)) => {
                if seen.insert(uid.to_owned()) {
                    expected += replicas;
                }
            }
            None => expected += 1,
        }
    }
    expected
}

/// (expected, healthy, desired healthy, disruptions allowed) of a budget.
fn count(
    budget: &Value,
    pods: &[&Value],
    controllers: &HashMap<String, i64>,
) -> (i64, i64, i64, i64) {
    let ns = s(budget, "/metadata/namespace");
    let disrupted = budget
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object);
    let selected: Vec<&&Value> = pods
        .iter()
        .filter(|p| s(p, "/metadata/namespace") == ns && selects(budget, p))
        .filter(|p| !matches!(s(p, "/status/phase"), "Succeeded" | "Failed"))
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    let expected = expected_of(&selected, controllers);
    // Pods being evicted no longer count as healthy.
    let healthy = selected
        .iter()
        .filter(|p| ready(p))
        .filter(|p| disrupted.is_none_or(|d| !d.contains_key(s(p, "/metadata/name"))))
        .count() as i64;
    let desired = if let Some(min) = budget.pointer("/spec/minAvailable") {
        scaled(min, expected).unwrap_or(0)
    } else if let Some(max) = budget.pointer("/spec/maxUnavailable") {
        (expected - scaled(max, expected).unwrap_or(0)).max(0)
    } else {
        expected
    };
    (expected, healthy, desired, (healthy - desired).max(0))
}

/// The replicas each controller of pods wants, by UID.
async fn controllers(store: &Store) -> Result<HashMap<String, i64>, StoreError> {
    let mut out = HashMap::new();
    for prefix in [
        "/registry/apps/replicasets/",
        "/registry/apps/statefulsets/",
    ] {
        for (_, _, c) in list(store, prefix).await? {
            let replicas = c
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            out.insert(s(&c, "/metadata/uid").to_owned(), replicas);
        }
    }
    Ok(out)
}

/// Evictions kube forgets after this long, if the pod never went.
const DISRUPTED_FOR: std::time::Duration = std::time::Duration::from_secs(120);

/// Keep every budget's status current.
pub(crate) async fn reconcile(store: &Store) -> Result<(), StoreError> {
    let budgets = list(store, BUDGETS).await?;
    if budgets.is_empty() {
        return Ok(());
    }
    let pods = list(store, PODS).await?;
    let owners = controllers(store).await?;
    let pods: Vec<&Value> = pods.iter().map(|(_, _, p)| p).collect();
    for (key, rev, budget) in &budgets {
        // Evictions of pods that went, or long ago, are done with.
        let mut budget_now = budget.clone();
        if let Some(d) = budget_now
            .pointer_mut("/status/disruptedPods")
            .and_then(Value::as_object_mut)
        {
            let now = std::time::SystemTime::now();
            d.retain(|name, at| {
                let live = pods.iter().any(|p| {
                    s(p, "/metadata/name") == name
                        && s(p, "/metadata/namespace") == s(budget, "/metadata/namespace")
                });
                let recent = at
                    .as_str()
                    .and_then(meta::parse_rfc3339)
                    .is_some_and(|t| now.duration_since(t).unwrap_or_default() < DISRUPTED_FOR);
                live && recent
            });
        }
        let (expected, healthy, desired, allowed) = count(&budget_now, &pods, &owners);
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
        if let Some(d) = budget_now
            .pointer("/status/disruptedPods")
            .filter(|d| d.as_object().is_some_and(|m| !m.is_empty()))
        {
            new["status"]["disruptedPods"] = d.clone();
        }
        write_if_changed(store, key, *rev, budget, &new).await?;
    }
    Ok(())
}

/// `POST …/pods/{name}/eviction`: delete the pod as its DeleteOptions say
/// (dry run, preconditions), unless its budget forbids it. The pod's
/// deletion and its budget's record of it are one transaction, guarded by
/// the budget's revision, so concurrent evictions cannot both take the
/// last allowed disruption.
pub(crate) async fn evict(
    store: &Store,
    ns: &str,
    name: &str,
    body: &Value,
) -> Result<Value, ApiError> {
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
    let options = body.get("deleteOptions").cloned().unwrap_or(Value::Null);
    let dry_run = options
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|d| d.iter().any(|v| v == "All"));
    for (field, have) in [
        ("uid", s(&pod, "/metadata/uid").to_owned()),
        ("resourceVersion", kv.mod_revision.to_string()),
    ] {
        if let Some(want) = options
            .pointer(&format!("/preconditions/{field}"))
            .and_then(Value::as_str)
        {
            if want != have {
                return Err(ApiError::conflict_because(
                    subject,
                    &format!("Precondition failed: {field} in precondition: {want}, {field} in object meta: {have}"),
                ));
            }
        }
    }
    let mut ops = Vec::new();
    // Pods already going, or not running, disrupt nothing.
    let guarded = pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(s(&pod, "/status/phase"), "Succeeded" | "Failed" | "Pending");
    if guarded {
        let budgets: Vec<(String, i64, Value)> = list(store, BUDGETS)
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|(_, _, b)| s(b, "/metadata/namespace") == ns && selects(b, &pod))
            .collect();
        if budgets.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        if let Some((bkey, brev, budget)) = budgets.into_iter().next() {
            let pods = list(store, PODS).await.map_err(unavailable)?;
            let pods: Vec<&Value> = pods.iter().map(|(_, _, p)| p).collect();
            let owners = controllers(store).await.map_err(unavailable)?;
            let (_, healthy, desired, allowed) = count(&budget, &pods, &owners);
            let refuse = || {
                ApiError::too_many_requests(
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    10,
                )
                .with_details(json!({"causes": [{"reason": "DisruptionBudget",
                    "message": format!("The disruption budget {} needs {desired} healthy pods and has {healthy} currently", s(&budget, "/metadata/name"))}]}))
            };
            if ready(&pod) {
                if allowed < 1 {
                    return Err(refuse());
                }
                // The budget records the eviction in the same transaction.
                let mut new = budget.clone();
                new["status"]["disruptionsAllowed"] = json!(allowed - 1);
                new["status"]["disruptedPods"][name] = json!(meta::now_rfc3339());
                ops.push(Op::update(bkey, new.to_string(), brev));
            } else {
                // A pod that is not healthy: kube's IfHealthyBudget lets it go
                // only while the budget is met (AlwaysAllow: always).
                let always = s(&budget, "/spec/unhealthyPodEvictionPolicy") == "AlwaysAllow";
                let budget_met = healthy >= desired && desired > 0;
                if !(always || budget_met) {
                    return Err(refuse());
                }
                ops.push(Op::check(bkey, Some(brev)));
            }
        }
    }
    if dry_run {
        return Ok(success());
    }
    // A pod with finalizers is only marked, as the API's delete does.
    if !drover_apiserver::object::finalizers(&pod).is_empty() {
        let mut marked = pod.clone();
        marked["metadata"]["deletionTimestamp"] = json!(meta::now_rfc3339());
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        ops.insert(
            0,
            Op::update(key.clone(), marked.to_string(), kv.mod_revision),
        );
    } else {
        ops.insert(0, Op::delete(key.clone(), kv.mod_revision));
    }
    match store.txn(&ops).await {
        Ok(_) => {}
        Err(StoreError::NotFound(k)) if k == key => return Err(ApiError::not_found(subject)),
        // The pod or its budget changed meanwhile: the client tries again.
        Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {
            return Err(ApiError::too_many_requests(
                "the pod or its disruption budget changed meanwhile; try again",
                1,
            ))
        }
        Err(e) => return Err(unavailable(e)),
    }
    crate::workloads::killed(store, &pod).await;
    Ok(success())
}

fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
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
        let none = HashMap::new();
        assert_eq!(count(&min, &refs, &none), (3, 2, 2, 0));
        let max = json!({"metadata": {"namespace": "a"}, "spec": {"maxUnavailable": "50%", "selector": {"matchLabels": {"app": "web"}}}});
        assert_eq!(count(&max, &refs, &none), (3, 2, 1, 1));
    }
}
