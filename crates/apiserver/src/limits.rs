//! Bounds on what a request can make the server do, as kube-apiserver keeps
//! them: a JSON patch has at most 10,000 operations and may copy at most
//! twice the body limit, no object is deeper than 100 levels or larger than
//! the body limit when stored. Checked without recursion, so a hostile
//! document cannot exhaust the stack.

use serde_json::Value;

use crate::MAX_BODY;

/// Most operations in one JSON patch.
pub const MAX_PATCH_OPS: usize = 10_000;
/// Most bytes a JSON patch may copy (kube's AccumulatedCopySizeLimit).
pub const MAX_COPIED: usize = 2 * MAX_BODY;
/// Deepest object accepted.
pub const MAX_DEPTH: usize = 100;
/// Largest object stored (serialised).
pub const MAX_OBJECT: usize = MAX_BODY;

/// Depth and approximate serialised size of a value, iteratively.
pub fn measure(v: &Value) -> (usize, usize) {
    let mut stack = vec![(v, 1usize)];
    let (mut depth, mut size) = (0, 0);
    while let Some((v, d)) = stack.pop() {
        depth = depth.max(d);
        match v {
            Value::Object(m) => {
                size += 2;
                for (k, c) in m {
                    size += k.len() + 4;
                    stack.push((c, d + 1));
                }
            }
            Value::Array(a) => {
                size += 2;
                for c in a {
                    size += 1;
                    stack.push((c, d + 1));
                }
            }
            Value::String(s) => size += s.len() + 2,
            other => size += other.to_string().len(),
        }
    }
    (depth, size)
}

fn pointer_depth(p: &str) -> usize {
    p.matches('/').count()
}

/// Apply a JSON patch op by op within the bounds above.
pub fn apply_json_patch(doc: &mut Value, patch: &json_patch::Patch) -> Result<(), String> {
    use json_patch::PatchOperation as Op;
    if patch.0.len() > MAX_PATCH_OPS {
        return Err(format!(
            "the patch has {} operations; at most {MAX_PATCH_OPS} are allowed",
            patch.0.len()
        ));
    }
    let mut copied = 0usize;
    for op in &patch.0 {
        let (path, added_depth) = match op {
            Op::Add(o) => (o.path.as_str(), measure(&o.value).0),
            Op::Replace(o) => (o.path.as_str(), measure(&o.value).0),
            Op::Test(o) => (o.path.as_str(), 0),
            Op::Remove(o) => (o.path.as_str(), 0),
            Op::Copy(o) => {
                let (d, s) = doc.pointer(o.from.as_str()).map(measure).unwrap_or((0, 0));
                copied += s;
                if copied > MAX_COPIED {
                    return Err(format!("the patch copies more than {MAX_COPIED} bytes"));
                }
                (o.path.as_str(), d)
            }
            Op::Move(o) => (
                o.path.as_str(),
                doc.pointer(o.from.as_str())
                    .map(|v| measure(v).0)
                    .unwrap_or(0),
            ),
        };
        if pointer_depth(path) + added_depth > MAX_DEPTH {
            return Err(format!(
                "the patch would make the object deeper than {MAX_DEPTH} levels"
            ));
        }
        json_patch::patch(doc, std::slice::from_ref(op)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Refuse an object that is too deep or too large to store.
pub fn check_object(v: &Value) -> Result<(), String> {
    let (depth, size) = measure(v);
    if depth > MAX_DEPTH {
        return Err(format!("the object is deeper than {MAX_DEPTH} levels"));
    }
    if size > MAX_OBJECT {
        return Err(format!("the object is larger than {MAX_OBJECT} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn copy_amplification_is_refused() {
        let mut doc = json!({"metadata": {"name": "x", "labels": {"a": "b".repeat(1000)}}});
        let ops: Vec<Value> = (0..40)
            .map(|i| json!({"op": "copy", "from": "/metadata", "path": format!("/metadata/k{i}")}))
            .collect();
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
        let err = apply_json_patch(&mut doc, &patch).unwrap_err();
        assert!(err.contains("copies more than"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut doc = json!({"a": {}});
        let mut ops = Vec::new();
        let mut path = String::from("/a");
        for _ in 0..150 {
            path.push_str("/b");
            ops.push(json!({"op": "add", "path": path.clone(), "value": {}}));
        }
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
        assert!(apply_json_patch(&mut doc, &patch)
            .unwrap_err()
            .contains("deeper"));
        let too_many: json_patch::Patch = serde_json::from_value(Value::Array(vec![
            json!({"op": "test", "path": "/a", "value": {}});
            MAX_PATCH_OPS
                + 1
        ]))
        .unwrap();
        assert!(apply_json_patch(&mut json!({"a": {}}), &too_many).is_err());
    }
}
