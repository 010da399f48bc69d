//! Structural validation of an object against its OpenAPI v3 schema, as
//! kube-apiserver validates custom resources: wrong types are errors naming
//! the field path (422), unknown fields are reported and pruned (the caller
//! decides, by `fieldValidation`, whether that is an error, a warning or
//! silent), and `null` in a field that is not nullable is dropped.

use serde_json::Value;

use crate::FieldError;

/// What validation found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Type and value errors.
    pub errors: Vec<FieldError>,
    /// Paths of unknown fields (already removed from the object).
    pub unknown: Vec<String>,
    /// Why a `format: byte` field is not base64 (the byte where decoding
    /// failed): such a body cannot be decoded at all, as kube-apiserver
    /// answers, and the value is never repeated back.
    pub undecodable: Option<String>,
}

/// Validate `value` against `schema`, pruning unknown fields from it.
pub fn validate(value: &mut Value, schema: &Value) -> Outcome {
    let mut out = Outcome::default();
    walk(value, schema, "", &mut out);
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_error(path: &str, v: &Value, want: &str, out: &mut Outcome) {
    let got = type_name(v);
    let shown = if path.is_empty() {
        "body".to_owned()
    } else {
        path.to_owned()
    };
    out.errors.push(FieldError::invalid(
        shown.clone(),
        got,
        format!("{shown} in body must be of type {want}: {got:?}"),
    ));
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn walk(v: &mut Value, s: &Value, path: &str, out: &mut Outcome) {
    if v.is_null() && flag(s, "nullable") {
        return;
    }
    if flag(s, "x-kubernetes-int-or-string") {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            type_error(path, v, "integer or string", out);
        }
        return;
    }
    // Composition: valid if every allOf holds and some anyOf/oneOf holds.
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for sub in all {
            walk(v, sub, path, out);
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = s.get(key).and_then(Value::as_array) {
            let mut best: Option<(Value, Outcome)> = None;
            for option in options {
                let mut trial = v.clone();
                let mut o = Outcome::default();
                walk(&mut trial, option, path, &mut o);
                let better = best
                    .as_ref()
                    .is_none_or(|(_, b)| o.errors.len() < b.errors.len());
                if better {
                    best = Some((trial, o));
                }
            }
            if let Some((trial, o)) = best {
                *v = trial;
                out.errors.extend(o.errors);
                out.unknown.extend(o.unknown);
                if out.undecodable.is_none() {
                    out.undecodable = o.undecodable;
                }
            }
        }
    }
    let Some(ty) = s.get("type").and_then(Value::as_str) else {
        // No type: anything goes, but known properties are still checked.
        if let (Some(obj), Some(props)) = (
            v.as_object_mut(),
            s.get("properties").and_then(Value::as_object),
        ) {
            for (k, child) in obj.iter_mut() {
                if let Some(cs) = props.get(k) {
                    walk(child, cs, &join(path, k), out);
                }
            }
        }
        return;
    };
    match ty {
        "object" => walk_object(v, s, path, out),
        "array" => match v.as_array_mut() {
            Some(items) => {
                if let Some(item_schema) = s.get("items") {
                    for (i, item) in items.iter_mut().enumerate() {
                        walk(item, item_schema, &format!("{path}[{i}]"), out);
                    }
                }
            }
            None => type_error(path, v, "array", out),
        },
        "string" => match v.as_str() {
            Some(text) => {
                if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
                    if !allowed.iter().any(|a| a.as_str() == Some(text)) {
                        let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
                        out.errors
                            .push(FieldError::not_supported(path, text, &names));
                    }
                }
                if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
                    if text.chars().count() as u64 > max {
                        out.errors.push(FieldError::too_long(path, max as usize));
                    }
                }
                if s.get("format").and_then(Value::as_str) == Some("byte") {
                    use base64::Engine;
                    if base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .is_err()
                    {
                        // Where decoding stops, as Go's decoder says it.
                        let at = text
                            .bytes()
                            .position(|b| !(b.is_ascii_alphanumeric() || b"+/=".contains(&b)))
                            .unwrap_or(text.len());
                        out.undecodable
                            .get_or_insert(format!("illegal base64 data at input byte {at}"));
                    }
                }
            }
            None => type_error(path, v, "string", out),
        },
        "integer" => {
            if !(v.is_i64() || v.is_u64()) {
                type_error(path, v, "integer", out);
            } else {
                check_range(v, s, path, out);
            }
        }
        "number" => {
            if !v.is_number() {
                type_error(path, v, "number", out);
            } else {
                check_range(v, s, path, out);
            }
        }
        "boolean" if !v.is_boolean() => type_error(path, v, "boolean", out),
        _ => {}
    }
}

fn check_range(v: &Value, s: &Value, path: &str, out: &mut Outcome) {
    let n = v.as_f64().unwrap_or_default();
    if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
        if n < min {
            out.errors.push(FieldError::invalid(
                path,
                v.clone(),
                format!("{path} in body should be greater than or equal to {min}"),
            ));
        }
    }
    if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
        if n > max {
            out.errors.push(FieldError::invalid(
                path,
                v.clone(),
                format!("{path} in body should be less than or equal to {max}"),
            ));
        }
    }
}

fn walk_object(v: &mut Value, s: &Value, path: &str, out: &mut Outcome) {
    let Some(obj) = v.as_object_mut() else {
        return type_error(path, v, "object", out);
    };
    let props = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties");
    let preserve =
        flag(s, "x-kubernetes-preserve-unknown-fields") || additional == Some(&Value::Bool(true));
    let mut drop = Vec::new();
    for (k, child) in obj.iter_mut() {
        let child_path = join(path, k);
        let child_schema = props
            .and_then(|p| p.get(k))
            .or(additional.filter(|a| a.is_object()));
        match child_schema {
            Some(cs) => {
                if child.is_null() && !flag(cs, "nullable") {
                    drop.push(k.clone()); // null in a non-nullable field: pruned
                } else {
                    walk(child, cs, &child_path, out);
                }
            }
            None if preserve => {}
            None => {
                out.unknown.push(child_path);
                drop.push(k.clone());
            }
        }
    }
    for k in drop {
        obj.remove(&k);
    }
    if let Some(required) = s.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if !obj.contains_key(r) {
                out.errors.push(FieldError::required(join(path, r), ""));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"},
                "count": {"type": "integer", "minimum": 0},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "note": {"type": "string", "nullable": true},
                "port": {"x-kubernetes-int-or-string": true},
            }},
        }})
    }

    #[test]
    fn wrong_types_name_the_path() {
        let mut v =
            json!({"spec": {"name": 5, "count": "x", "tags": ["a", 1], "labels": {"k": true}}});
        let out = validate(&mut v, &schema());
        let fields: Vec<_> = out.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.count", "spec.labels.k", "spec.name", "spec.tags[1]"]
        );
        assert_eq!(
            out.errors[2].to_string(),
            r#"spec.name: Invalid value: "integer": spec.name in body must be of type string: "integer""#
        );
    }

    #[test]
    fn unknown_fields_are_reported_and_pruned() {
        let mut v = json!({"spec": {"name": "x", "extra": 1}, "other": {}});
        let out = validate(&mut v, &schema());
        assert!(out.errors.is_empty());
        assert_eq!(out.unknown, ["other", "spec.extra"]);
        assert_eq!(v, json!({"spec": {"name": "x"}}));
    }

    #[test]
    fn values() {
        let mut v = json!({"spec": {"count": -1, "mode": "c", "note": null, "port": "http"}});
        let out = validate(&mut v, &schema());
        let msgs: Vec<_> = out.errors.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs
            .iter()
            .any(|m| m.starts_with("spec.mode: Unsupported value: \"c\"")));
        assert!(msgs.iter().any(|m| m == "spec.name: Required value"));
        let mut v = json!({"spec": {"name": "x", "port": 8080, "count": null}});
        assert!(validate(&mut v, &schema()).errors.is_empty());
        assert_eq!(
            v,
            json!({"spec": {"name": "x", "port": 8080}}),
            "null in a non-nullable field is pruned"
        );
    }

    #[test]
    fn bytes_must_be_base64_and_are_not_repeated() {
        let s = json!({"type": "object", "properties": {
            "data": {"type": "object", "additionalProperties": {"type": "string", "format": "byte"}}}});
        let mut ok = json!({"data": {"k": "c2VjcmV0"}});
        assert!(validate(&mut ok, &s).undecodable.is_none());
        let mut bad = json!({"data": {"k": "secret value!"}});
        let why = validate(&mut bad, &s).undecodable.unwrap();
        assert_eq!(why, "illegal base64 data at input byte 6");
        assert!(!why.contains("secret"));
    }
}
