//! Strategic merge patch, as kube-apiserver applies it to built-in kinds:
//! maps merge as in a JSON merge patch, and lists follow their field's
//! patch strategy — replaced, merged by a key (`containers` by `name`,
//! container `ports` by `containerPort`, `conditions` by `type`…), or merged
//! as a set of primitives (`finalizers`). Directives: `$patch: replace` /
//! `delete` on maps and list items, `$setElementOrder/<list>`,
//! `$deleteFromPrimitiveList/<list>`, `$retainKeys`.
//!
//! A kind tells the strategy of each list by its field path ([`ListStrategy`]);
//! kinds without one (custom resources) get a JSON merge patch, as kube does.

use serde_json::{Map, Value};

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch's list replaces the object's.
    Replace,
    /// Items are matched by this key and merged; others are appended.
    MergeByKey(&'static str),
    /// A set of primitives: the patch's values are added.
    MergePrimitive,
}

/// Tells a list field's strategy from its path of field names (array
/// indices left out), e.g. `["spec", "template", "spec", "containers"]`.
pub type ListStrategies = fn(&[&str]) -> ListStrategy;

/// Apply `patch` to `target`.
pub fn apply(target: &mut Value, patch: &Value, lists: ListStrategies) -> Result<(), String> {
    let Some(p) = patch.as_object() else {
        return Err("a strategic merge patch must be a JSON object".into());
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let mut path = Vec::new();
    merge_map(target.as_object_mut().expect("object"), p, &mut path, lists)
}

fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|i| i.get("$patch").is_none())
                .map(strip)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn merge_map(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
    lists: ListStrategies,
) -> Result<(), String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = strip(&Value::Object(patch.clone()))
                .as_object()
                .cloned()
                .unwrap_or_default();
            return Ok(());
        }
        Some("delete") => {
            target.clear();
            return Ok(());
        }
        Some(other) => return Err(format!("unknown patch directive {other:?}")),
        None => {}
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        path.push(key.clone());
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(pm) => {
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    target.remove(key);
                } else {
                    let entry = target
                        .entry(key.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !entry.is_object() {
                        *entry = Value::Object(Map::new());
                    }
                    merge_map(entry.as_object_mut().expect("object"), pm, path, lists)?;
                }
            }
            Value::Array(items) => {
                let names: Vec<&str> = path.iter().map(String::as_str).collect();
                let strategy = lists(&names);
                let current = target.remove(key).and_then(|v| match v {
                    Value::Array(a) => Some(a),
                    _ => None,
                });
                let merged = merge_list(current.unwrap_or_default(), items, strategy, path, lists)?;
                target.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                target.insert(key.clone(), scalar.clone());
            }
        }
        path.pop();
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = target.get_mut(field) {
                list.retain(|v| !remove.contains(v));
            }
        }
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            let names: Vec<&str> = path.iter().map(String::as_str).chain([field]).collect();
            if let (Some(Value::Array(list)), Some(order)) =
                (target.get_mut(field), value.as_array())
            {
                reorder(list, order, lists(&names));
            }
        }
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        target.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(())
}

fn key_of<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    item.get(key)
}

fn merge_list(
    mut current: Vec<Value>,
    patch: &[Value],
    strategy: ListStrategy,
    path: &mut Vec<String>,
    lists: ListStrategies,
) -> Result<Vec<Value>, String> {
    // Merging scans the list per item: bound the work.
    if patch.len().saturating_mul(current.len().max(1)) > 10_000_000 {
        return Err(format!("the list {} is too long to merge", path.join(".")));
    }
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(strip)
            .collect());
    }
    match strategy {
        ListStrategy::Replace => Ok(patch.iter().map(strip).collect()),
        ListStrategy::MergePrimitive => {
            for v in patch {
                if !current.contains(v) {
                    current.push(v.clone());
                }
            }
            Ok(current)
        }
        ListStrategy::MergeByKey(key) => {
            for item in patch {
                let Some(k) = key_of(item, key).cloned() else {
                    return Err(format!(
                        "an item of {} lacks its merge key {key:?}",
                        path.join(".")
                    ));
                };
                let pos = current.iter().position(|c| key_of(c, key) == Some(&k));
                if item.get("$patch").and_then(Value::as_str) == Some("delete") {
                    if let Some(i) = pos {
                        current.remove(i);
                    }
                    continue;
                }
                match (pos, item.as_object()) {
                    (Some(i), Some(pm)) => {
                        if !current[i].is_object() {
                            current[i] = Value::Object(Map::new());
                        }
                        merge_map(current[i].as_object_mut().expect("object"), pm, path, lists)?;
                    }
                    _ => current.push(strip(item)),
                }
            }
            Ok(current)
        }
    }
}

fn reorder(list: &mut [Value], order: &[Value], strategy: ListStrategy) {
    let rank = |item: &Value| -> usize {
        let probe = match strategy {
            ListStrategy::MergeByKey(key) => item.get(key),
            _ => Some(item),
        };
        order
            .iter()
            .position(|o| match strategy {
                ListStrategy::MergeByKey(key) => o.get(key) == probe,
                _ => Some(o) == probe,
            })
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(|i| rank(i));
}

/// The list strategies of Kubernetes' built-in kinds (their
/// `patchMergeKey`/`patchStrategy` tags).
pub fn kubernetes_lists(path: &[&str]) -> ListStrategy {
    let n = path.len();
    let field = path.last().copied().unwrap_or_default();
    let parent = if n >= 2 { path[n - 2] } else { "" };
    let in_container = matches!(
        parent,
        "containers" | "initContainers" | "ephemeralContainers"
    );
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => ListStrategy::MergeByKey("name"),
        "env" if in_container => ListStrategy::MergeByKey("name"),
        "volumeMounts" if in_container => ListStrategy::MergeByKey("mountPath"),
        "volumeDevices" if in_container => ListStrategy::MergeByKey("devicePath"),
        "ports" if in_container => ListStrategy::MergeByKey("containerPort"),
        "ports" if path == ["spec", "ports"] => ListStrategy::MergeByKey("port"),
        "conditions" => ListStrategy::MergeByKey("type"),
        "addresses" if parent == "status" => ListStrategy::MergeByKey("type"),
        "hostAliases" => ListStrategy::MergeByKey("ip"),
        "topologySpreadConstraints" => ListStrategy::MergeByKey("topologyKey"),
        "ownerReferences" => ListStrategy::MergeByKey("uid"),
        "finalizers" if parent == "metadata" => ListStrategy::MergePrimitive,
        _ => ListStrategy::Replace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"metadata": {"name": "web", "finalizers": ["a"]}, "spec": {"replicas": 2, "template": {"spec": {"containers": [
            {"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80, "protocol": "TCP"}], "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "sidecar", "image": "busybox"},
        ]}}}})
    }

    #[test]
    fn containers_merge_by_name_as_kubectl_apply_expects() {
        let mut d = deployment();
        // What kubectl apply sends when only the image changed.
        let patch = json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "nginx"}, {"name": "sidecar"}], "containers": [{"image": "nginx:1.28", "name": "nginx"}]}}}});
        apply(&mut d, &patch, kubernetes_lists).unwrap();
        let cs = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 2);
        assert_eq!(cs[0]["image"], "nginx:1.28");
        assert_eq!(
            cs[0]["ports"][0]["containerPort"], 80,
            "other fields of the container stay"
        );
        assert_eq!(cs[1]["name"], "sidecar");
    }

    #[test]
    fn directives() {
        let mut d = deployment();
        let patch = json!({
            "metadata": {"finalizers": ["b"]},
            "spec": {"template": {"spec": {"containers": [
                {"name": "sidecar", "$patch": "delete"},
                {"name": "nginx", "env": [{"name": "C", "value": "3"}, {"name": "A", "$patch": "delete"}], "$deleteFromPrimitiveList/args": []},
            ]}}},
        });
        apply(&mut d, &patch, kubernetes_lists).unwrap();
        assert_eq!(
            d["metadata"]["finalizers"],
            json!(["a", "b"]),
            "primitive lists merge as sets"
        );
        let cs = d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(cs.len(), 1);
        let env: Vec<&str> = cs[0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(env, ["B", "C"]);
        let mut d = deployment();
        apply(&mut d, &json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}}}), kubernetes_lists).unwrap();
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "x"}])
        );
        assert!(apply(
            &mut deployment(),
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "no-name"}]}}}}),
            kubernetes_lists
        )
        .is_err());
    }
}
