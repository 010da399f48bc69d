//! Legacy discovery documents: `/api` (APIVersions), `/apis`
//! (APIGroupList), `/apis/{group}` (APIGroup), `/api/v1` and
//! `/apis/{group}/{version}` (APIResourceList). kubectl falls back to these
//! when the answer is not aggregated discovery.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::kind::Registry;
use crate::ApiError;

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `/api`; 404 on a server without core kinds (kubectl accepts that; an
/// empty core group it would not).
pub fn core_versions(reg: &Registry) -> Result<Value, ApiError> {
    if !reg.all().iter().any(|r| r.info.group.is_empty()) {
        return Err(ApiError::no_such_path());
    }
    Ok(
        json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
    )
}

fn group_versions(reg: &Registry) -> BTreeMap<&'static str, Vec<&'static str>> {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in reg.all().iter().filter(|r| !r.info.group.is_empty()) {
        let versions = groups.entry(r.info.group).or_default();
        if !versions.contains(&r.info.version) {
            versions.push(r.info.version);
        }
    }
    groups
}

fn group_doc(group: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": vs, "preferredVersion": vs[0]})
}

/// `/apis`.
pub fn groups(reg: &Registry) -> Value {
    let groups: Vec<Value> = group_versions(reg)
        .iter()
        .map(|(g, vs)| {
            let mut d = group_doc(g, vs);
            d.as_object_mut().expect("object").remove("kind");
            d.as_object_mut().expect("object").remove("apiVersion");
            d
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`.
pub fn group(reg: &Registry, group: &str) -> Result<Value, ApiError> {
    group_versions(reg)
        .get(group)
        .map(|vs| group_doc(group, vs))
        .ok_or_else(ApiError::no_such_path)
}

/// `/api/v1` or `/apis/{group}/{version}`.
pub fn resources(reg: &Registry, group: &str, version: &str) -> Result<Value, ApiError> {
    let mut list = Vec::new();
    for r in reg
        .all()
        .iter()
        .filter(|r| r.info.group == group && r.info.version == version)
    {
        let i = &r.info;
        let verbs: &[&str] = if i.create_only {
            &["create"]
        } else {
            ALL_VERBS
        };
        let mut entry = json!({
            "name": i.plural, "singularName": i.singular, "namespaced": i.namespaced,
            "kind": i.kind, "verbs": verbs,
        });
        if !i.short_names.is_empty() {
            entry["shortNames"] = json!(i.short_names);
        }
        if !i.categories.is_empty() {
            entry["categories"] = json!(i.categories);
        }
        list.push(entry);
        for s in i.streams {
            list.push(json!({"name": format!("{}/{s}", i.plural), "singularName": "", "namespaced": i.namespaced, "kind": i.kind, "verbs": ["get"]}));
        }
        if i.scale {
            list.push(json!({"name": format!("{}/scale", i.plural), "singularName": "", "namespaced": i.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
        for action in i.actions {
            let mut entry = json!({"name": format!("{}/{action}", i.plural), "singularName": "", "namespaced": i.namespaced, "kind": i.kind, "verbs": ["create"]});
            // Subresources whose bodies are another kind say which, as
            // kube's discovery does (kubectl drain looks for Eviction).
            if let Some((group, version, kind)) = r.strategy.action_kind(action) {
                entry["group"] = json!(group);
                entry["version"] = json!(version);
                entry["kind"] = json!(kind);
            }
            list.push(entry);
        }
        if i.status {
            list.push(json!({"name": format!("{}/status", i.plural), "singularName": "", "namespaced": i.namespaced, "kind": i.kind, "verbs": ["get", "patch", "update"]}));
        }
    }
    if list.is_empty() {
        return Err(ApiError::no_such_path());
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Ok(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}
