//! Admission as kube-apiserver runs it for the simulator's kinds:
//!
//! - LimitRanger: containers without requests or limits get the
//!   `defaultRequest` and `default` of the namespace's `Container`
//!   LimitRanges (and a request defaults to its limit).
//! - ResourceQuota: a new object that would take a quota over its `hard`
//!   limits is refused with kube's 403 ("exceeded quota: …, requested: …,
//!   used: …, limited: …"); a quota on compute resources refuses pods that
//!   do not say them ("failed quota: …: must specify …"). Counted: `pods`,
//!   `requests.cpu|memory` (also plain `cpu`/`memory`), `limits.cpu|memory`,
//!   object counts (`configmaps`, `secrets`, `services`, `count/…`).
//! - `status.used` of every quota is recomputed from what exists.
//! - PodSecurity: the namespace's `pod-security.kubernetes.io/*` labels
//!   ([`crate::pod_security`]): a pod that violates the `enforce` level is
//!   refused with kube's 403; a pod or workload whose pod template
//!   violates the `warn` level is admitted with kube's warning; a
//!   namespace label with an unknown level or version is a 422. Not done:
//!   pod updates are not checked again, and tightening a namespace's level
//!   does not warn about the pods already there.

use std::collections::BTreeMap;

use drover_apiserver::ApiError;
use drover_core::keys;
use drover_store::{ListOptions, Store, StoreError};
use serde_json::{json, Value};

async fn list(store: &Store, prefix: String) -> Result<Vec<Value>, StoreError> {
    let page = store
        .list(&ListOptions {
            prefix,
            ..Default::default()
        })
        .await?;
    Ok(page
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

fn unavailable(_: StoreError) -> ApiError {
    ApiError::unavailable("the datastore is unavailable")
}

/// Pod Security admission of a new object of `kind` in namespace `ns`: a
/// pod violating the namespace's `enforce` level is refused; the warnings
/// to return otherwise.
pub(crate) async fn pod_security(
    store: &Store,
    ns: &str,
    kind: &str,
    name: &str,
    obj: &Value,
) -> Result<Vec<String>, ApiError> {
    use crate::pod_security::{check, describe, pod_template, warning, Level, Policy};
    // Workloads are never refused, only warned.
    let Some(pod) = pod_template(kind, obj) else {
        return Ok(Vec::new());
    };
    let namespace = store
        .get(&keys::object("", "namespaces", None, ns))
        .await
        .map_err(unavailable)?
        .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .unwrap_or_default();
    let policy = Policy::from_labels(namespace["metadata"]["labels"].as_object());
    if kind == "Pod" && policy.enforce != Level::Privileged {
        let violations = check(policy.enforce, &pod);
        if !violations.is_empty() {
            return Err(ApiError::forbidden_because(format!(
                "pods {name:?} is forbidden: {}",
                describe(policy.enforce, &policy.enforce_version, &violations)
            )));
        }
    }
    // Pods and workloads alike are warned at the warn level only.
    if policy.warn == Level::Privileged {
        return Ok(Vec::new());
    }
    let violations = check(policy.warn, &pod);
    if violations.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![warning(
        policy.warn,
        &policy.warn_version,
        &violations,
    )])
}

/// kube-apiserver's check of a namespace's Pod Security labels: a level
/// that is not privileged, baseline or restricted, or a version that is
/// not `latest` or `v1.N`, is a 422.
pub(crate) fn pod_security_labels(ns: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let labels = ns["metadata"]["labels"].as_object();
    let before = old.and_then(|o| o["metadata"]["labels"].as_object());
    let mut errors = Vec::new();
    for (k, v) in labels.into_iter().flatten() {
        let Some(rest) = k.strip_prefix("pod-security.kubernetes.io/") else {
            continue;
        };
        if before.and_then(|b| b.get(k)) == Some(v) {
            continue; // unchanged: not checked again
        }
        let value = v.as_str().unwrap_or_default();
        let (valid, wanted) = if rest.ends_with("-version") {
            (
                drover_core::pod_security::valid_version(value),
                "must be \"latest\" or \"v1.x\"",
            )
        } else if matches!(rest, "enforce" | "audit" | "warn") {
            (
                crate::pod_security::Level::parse(value).is_some(),
                "must be one of privileged, baseline, restricted",
            )
        } else {
            continue;
        };
        if !valid {
            errors.push(drover_apiserver::FieldError::invalid(
                format!("metadata.labels[{k}]"),
                value.to_owned(),
                wanted,
            ));
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        "Namespace",
        "",
        ns["metadata"]["name"].as_str().unwrap_or_default(),
        &errors,
    ))
}

/// Apply the namespace's LimitRange defaults to a pod's containers.
pub(crate) async fn limit_ranges(store: &Store, ns: &str, pod: &mut Value) -> Result<(), ApiError> {
    let ranges = list(store, keys::prefix("", "limitranges", Some(ns)))
        .await
        .map_err(unavailable)?;
    for range in ranges {
        for limit in range
            .pointer("/spec/limits")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            if limit["type"] != "Container" {
                continue;
            }
            let Some(Value::Array(containers)) = pod.pointer_mut("/spec/containers") else {
                continue;
            };
            for c in containers.iter_mut() {
                if !c["resources"].is_object() {
                    c["resources"] = json!({});
                }
                for (field, source) in [("limits", "default"), ("requests", "defaultRequest")] {
                    if let Some(defaults) = limit[source].as_object() {
                        if !c["resources"][field].is_object() {
                            c["resources"][field] = json!({});
                        }
                        for (k, v) in defaults {
                            if c["resources"][field].get(k).is_none() {
                                c["resources"][field][k] = v.clone();
                            }
                        }
                    }
                }
                // A request defaults to its limit.
                if let Some(limits) = c["resources"]["limits"].as_object().cloned() {
                    if !c["resources"]["requests"].is_object() {
                        c["resources"]["requests"] = json!({});
                    }
                    for (k, v) in limits {
                        if c["resources"]["requests"].get(&k).is_none() {
                            c["resources"]["requests"][&k] = v;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn is_memory(resource: &str) -> bool {
    resource.ends_with("memory")
}

async fn live_usage(
    store: &Store,
    ns: &str,
    quota: &Value,
) -> Result<BTreeMap<String, i128>, StoreError> {
    let hard: Vec<String> = quota
        .pointer("/spec/hard")
        .and_then(Value::as_object)
        .map(|h| h.keys().cloned().collect())
        .unwrap_or_default();
    let mut total: BTreeMap<String, i128> = hard.iter().map(|k| (k.clone(), 0)).collect();
    let mut kinds: Vec<(String, String)> = vec![("core".into(), "pods".into())];
    for k in &hard {
        let plain = [
            "services",
            "configmaps",
            "secrets",
            "persistentvolumeclaims",
            "replicationcontrollers",
            "resourcequotas",
        ];
        if plain.contains(&k.as_str()) {
            kinds.push(("core".into(), k.clone()));
        } else if let Some(r) = k.strip_prefix("count/") {
            let (plural, group) = r
                .split_once('.')
                .map(|(p, g)| (p.to_owned(), g.to_owned()))
                .unwrap_or((r.to_owned(), "core".into()));
            kinds.push((group, plural));
        }
    }
    kinds.sort();
    kinds.dedup();
    for (group, plural) in kinds {
        let g = if group == "core" { "" } else { group.as_str() };
        for obj in list(store, keys::prefix(g, &plural, Some(ns))).await? {
            if plural == "pods" && drover_core::quota::is_terminal(&obj) {
                continue;
            }
            for (k, v) in drover_core::quota::object_usage(&plural, g, &obj) {
                if let Some(t) = total.get_mut(&k) {
                    *t = t.saturating_add(v);
                }
            }
        }
    }
    Ok(total)
}

/// Refuse a new object that would go over a quota of its namespace.
pub(crate) async fn check_quota(
    store: &Store,
    ns: &str,
    plural: &str,
    group: &str,
    name: &str,
    obj: &Value,
) -> Result<(), ApiError> {
    let quotas = list(store, keys::prefix("", "resourcequotas", Some(ns)))
        .await
        .map_err(unavailable)?;
    let wanted = drover_core::quota::object_usage(plural, group, obj);
    let resource = if group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    };
    for quota in quotas {
        let qname = quota
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let hard: BTreeMap<String, i128> = quota
            .pointer("/spec/hard")
            .and_then(Value::as_object)
            .map(|h| {
                h.iter()
                    .filter_map(|(k, v)| {
                        Some((k.clone(), drover_core::quantity::parse(v.as_str()?)?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if plural == "pods" && group.is_empty() {
            let missing: Vec<&str> = [
                "requests.cpu",
                "requests.memory",
                "limits.cpu",
                "limits.memory",
                "cpu",
                "memory",
            ]
            .into_iter()
            .filter(|r| hard.contains_key(*r) && !wanted.contains_key(*r))
            .collect();
            if !missing.is_empty() {
                return Err(ApiError::forbidden_because(format!(
                    "{resource} {name:?} is forbidden: failed quota: {qname}: must specify {}",
                    missing.join(",")
                )));
            }
        }
        let used = live_usage(store, ns, &quota).await.map_err(unavailable)?;
        let over: Vec<&String> = hard
            .keys()
            .filter(|k| {
                wanted.get(*k).is_some_and(|w| {
                    used.get(*k).copied().unwrap_or(0).saturating_add(*w) > hard[*k]
                })
            })
            .collect();
        if !over.is_empty() {
            let show = |m: &BTreeMap<String, i128>| {
                over.iter()
                    .map(|k| {
                        format!(
                            "{k}={}",
                            drover_core::quantity::format(
                                m.get(*k).copied().unwrap_or(0),
                                is_memory(k)
                            )
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            return Err(ApiError::forbidden_because(format!(
                "{resource} {name:?} is forbidden: exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
                show(&wanted),
                show(&used),
                show(&hard)
            )));
        }
    }
    Ok(())
}

/// Recompute `status.hard` and `status.used` of every quota.
pub(crate) async fn refresh_quotas(store: &Store) -> Result<(), StoreError> {
    let page = store
        .list(&ListOptions {
            prefix: "/registry/core/resourcequotas/".into(),
            ..Default::default()
        })
        .await?;
    for kv in page.items {
        let Ok(quota) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        let ns = quota
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let used = live_usage(store, &ns, &quota).await?;
        let mut new = quota.clone();
        new["status"] = json!({
            "hard": quota.pointer("/spec/hard").cloned().unwrap_or_else(|| json!({})),
            "used": used.iter().map(|(k, v)| (k.clone(), Value::String(drover_core::quantity::format(*v, is_memory(k))))).collect::<serde_json::Map<_, _>>(),
        });
        if new != quota {
            match store
                .update(&kv.key, new.to_string(), kv.mod_revision)
                .await
            {
                Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
