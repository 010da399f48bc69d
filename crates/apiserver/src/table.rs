//! `meta.k8s.io/v1` Table output, which `kubectl get` asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`. Columns are NAME,
//! the kind's own, then AGE (or only the kind's own, when it says so);
//! `date` cells are sent as ages (`5m`), as kube-apiserver formats them.

use serde_json::{json, Value};

use crate::kind::{Column, Resource};

/// Whether the Accept header asks for a Table.
pub fn wanted(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        params.contains(&"as=Table")
            && params.contains(&"g=meta.k8s.io")
            && (params.contains(&"v=v1") || params.contains(&"v=v1beta1"))
    })
}

/// How much of each object a row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// Nothing.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl Include {
    /// From the `includeObject` query parameter.
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

/// The column headers of a kind with `columns`.
fn column_definitions(columns: &[Column], framed: bool) -> Vec<Value> {
    let mut cols = Vec::new();
    if framed {
        cols.push(json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}));
    }
    for c in columns {
        cols.push(json!({"name": c.name, "type": c.ty, "format": "", "description": c.description, "priority": c.priority}));
    }
    if framed && !own_age(columns) {
        cols.push(json!({"name": "Age", "type": "date", "format": "", "description": "Time since the object was created.", "priority": 0}));
    }
    cols
}

/// Whether the kind places its own Age column (built-in kinds put it before
/// their `-o wide` columns; custom ones get it last).
fn own_age(columns: &[Column]) -> bool {
    columns.iter().any(|c| c.name == "Age")
}

/// One row.
fn row(r: &Resource, columns: &[Column], obj: &Value, include: Include) -> Value {
    let framed = r.strategy.name_column();
    let mut cells = Vec::new();
    if framed {
        cells.push(
            obj.pointer("/metadata/name")
                .cloned()
                .unwrap_or(Value::Null),
        );
    }
    for c in columns {
        let v = r.strategy.cell(c, obj);
        cells.push(match (c.ty, &v) {
            ("date", Value::String(t)) => Value::String(drover_core::meta::age(t)),
            _ => v,
        });
    }
    if framed && !own_age(columns) {
        cells.push(Value::String(drover_core::meta::age(
            obj.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        )));
    }
    let mut row = json!({"cells": cells});
    match include {
        Include::None => {}
        Include::Object => row["object"] = obj.clone(),
        Include::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
            })
        }
    }
    row
}

/// A Table of objects.
pub fn table(r: &Resource, objects: &[Value], list_meta: Value, include: Include) -> Value {
    let columns = r.strategy.columns();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": column_definitions(&columns, r.strategy.name_column()),
        "rows": objects.iter().map(|o| row(r, &columns, o, include)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_headers() {
        assert!(super::wanted("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"));
        assert!(!super::wanted("application/json"));
        assert!(!super::wanted(
            "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"
        ));
    }
}
