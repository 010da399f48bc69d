//! OpenAPI v3 for kubectl: `/openapi/v3` (an index of group-versions) and
//! `/openapi/v3/apis/{group}/{version}` (paths and schemas). `kubectl apply`
//! refuses to run without it; it decides that the server validates fields
//! itself when each kind's PATCH operation carries the kind's GVK and a
//! `fieldValidation` query parameter. Patch content types exclude
//! strategic merge for these kinds, so kubectl sends JSON merge patches.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::kind::{Registry, Resource};

/// The index and one document per group-version, built once.
#[derive(Debug, Default)]
pub struct OpenApi {
    index: Value,
    docs: BTreeMap<String, Value>,
}

impl OpenApi {
    /// Build from the registry.
    pub fn build(reg: &Registry) -> Self {
        let mut by_gv: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
        for r in reg.all() {
            by_gv
                .entry(gv_path(r.info.group, r.info.version))
                .or_default()
                .push(r);
        }
        let mut paths = Map::new();
        let mut docs = BTreeMap::new();
        for (gv, resources) in by_gv {
            let doc = document(&resources);
            let hash = hex::encode_upper(Sha256::digest(doc.to_string().as_bytes()));
            paths.insert(
                gv.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}")}),
            );
            docs.insert(gv, doc);
        }
        Self {
            index: json!({"paths": paths}),
            docs,
        }
    }

    /// `/openapi/v3`.
    pub fn index(&self) -> &Value {
        &self.index
    }

    /// `/openapi/v3/{gv}` for `gv` like `apis/management.drover.io/v1`.
    pub fn document(&self, gv: &str) -> Option<&Value> {
        self.docs.get(gv)
    }
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `management.drover.io` + `v1` + `Cluster` → `io.drover.management.v1.Cluster`.
fn schema_name(r: &Resource, kind: &str) -> String {
    let group = if r.info.group.is_empty() {
        "io.k8s.api.core".to_owned()
    } else {
        r.info.group.split('.').rev().collect::<Vec<_>>().join(".")
    };
    format!("{group}.{}.{kind}", r.info.version)
}

fn document(resources: &[&Resource]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for r in resources {
        let i = &r.info;
        let gvk = json!({"group": i.group, "version": i.version, "kind": i.kind});
        let name = schema_name(r, i.kind);
        let list_name = schema_name(r, &format!("{}List", i.kind));
        let mut schema = (*r.schema).clone();
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        schemas.insert(name.clone(), schema);
        schemas.insert(list_name.clone(), json!({
            "type": "object",
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}, "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}}},
            "x-kubernetes-group-version-kind": [{"group": i.group, "version": i.version, "kind": format!("{}List", i.kind)}],
        }));
        let object_ref = json!({"$ref": format!("#/components/schemas/{name}")});
        let ok = |schema: &Value| json!({"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}});
        let write_params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}, "uniqueItems": true},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}, "uniqueItems": true},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}, "uniqueItems": true},
        ]);
        let op = |action: &str, extra: Value| {
            let mut o = json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk.clone(), "responses": ok(&object_ref)});
            if let Value::Object(m) = extra {
                for (k, v) in m {
                    o[k] = v;
                }
            }
            o
        };
        let base = if i.group.is_empty() {
            format!("/api/{}", i.version)
        } else {
            format!("/apis/{}/{}", i.group, i.version)
        };
        let scoped = if i.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", i.plural)
        } else {
            format!("{base}/{}", i.plural)
        };
        let body = json!({"content": {"application/json": {"schema": object_ref.clone()}}});
        if i.create_only {
            paths.insert(scoped, json!({"post": op("post", json!({"parameters": write_params, "requestBody": body}))}));
            continue;
        }
        let patch_body = json!({"content": {
            "application/merge-patch+json": {"schema": {"type": "object"}},
            "application/json-patch+json": {"schema": {"type": "object"}},
            "application/apply-patch+yaml": {"schema": {"type": "object"}},
        }});
        paths.insert(scoped.clone(), json!({
            "get": op("list", json!({"responses": ok(&json!({"$ref": format!("#/components/schemas/{list_name}")}))})),
            "post": op("post", json!({"parameters": write_params.clone(), "requestBody": body.clone()})),
            "delete": op("deletecollection", json!({})),
        }));
        let item_ops = json!({
            "get": op("get", json!({})),
            "put": op("put", json!({"parameters": write_params.clone(), "requestBody": body.clone()})),
            "patch": op("patch", json!({"parameters": write_params.clone(), "requestBody": patch_body.clone()})),
            "delete": op("delete", json!({})),
        });
        paths.insert(format!("{scoped}/{{name}}"), item_ops);
        if i.status {
            paths.insert(format!("{scoped}/{{name}}/status"), json!({
                "get": op("get", json!({})),
                "put": op("put", json!({"parameters": write_params.clone(), "requestBody": body})),
                "patch": op("patch", json!({"parameters": write_params, "requestBody": patch_body})),
            }));
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Drover", "version": drover_core::VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}
