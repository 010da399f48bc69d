//! Reading and checking the `metadata` of objects held as JSON.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::FieldError;

/// The object's `metadata` map, if it has one.
pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.as_object()
}

/// The object's `metadata` map, created if missing (`obj` must be an object).
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let root = obj.as_object_mut().expect("objects are JSON objects");
    let m = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut().expect("just made an object")
}

/// A string field of `metadata`, or `""`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `metadata.name`.
pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

/// `metadata.labels`.
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    string_map(obj, "labels")
}

/// `metadata.annotations`.
pub fn annotations(obj: &Value) -> BTreeMap<String, String> {
    string_map(obj, "annotations")
}

fn string_map(obj: &Value, field: &str) -> BTreeMap<String, String> {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.finalizers`.
pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn is_deleting(obj: &Value) -> bool {
    meta(obj)
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|v| !v.is_null())
}

/// The message Kubernetes gives for a bad subdomain name.
pub const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// The annotation `kubectl apply` keeps the applied object in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Take write-only string fields (`(parent pointer, field)`) out of an
/// object and out of the object `kubectl apply` keeps in its annotation
/// (emptied if it is not JSON); each field's value, if given and not
/// empty, in the order asked.
pub fn take_write_only(obj: &mut Value, fields: &[(&str, &str)]) -> Vec<Option<String>> {
    let take = |v: &mut Value| -> Vec<Option<String>> {
        fields
            .iter()
            .map(|(parent, field)| {
                v.pointer_mut(parent)
                    .and_then(Value::as_object_mut)
                    .and_then(|m| m.remove(*field))
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .filter(|s| !s.is_empty())
            })
            .collect()
    };
    let taken = take(obj);
    if let Some(applied) = obj
        .pointer_mut("/metadata/annotations")
        .and_then(|a| a.get_mut(LAST_APPLIED))
    {
        match applied
            .as_str()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
        {
            Some(mut doc) => {
                take(&mut doc);
                *applied = Value::String(doc.to_string());
            }
            // What cannot be read cannot be cleaned: it goes.
            None => *applied = Value::String(String::new()),
        }
    }
    taken
}

/// Merge a Secret's write-only `stringData` into `data` (base64), as
/// kube-apiserver does on every write: it wins over a `data` key of the
/// same name, and is never stored itself.
pub fn merge_secret_string_data(obj: &mut Value) {
    use base64::Engine as _;
    let Some(Value::Object(plain)) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    if !obj["data"].is_object() {
        obj["data"] = Value::Object(Map::new());
    }
    for (k, v) in plain {
        let text = v.as_str().unwrap_or_default();
        obj["data"][k] = Value::String(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// Whether `name` is an RFC 1123 subdomain (the rule for most object names).
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether `name` is an RFC 1123 label (the rule for namespaces).
pub fn is_dns_label(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && is_dns_subdomain(name)
}

/// Check `metadata` as kube-apiserver's `ValidateObjectMeta` does (names,
/// label keys and values, annotation size, finalizer names).
pub fn validate_meta(obj: &Value) -> Vec<FieldError> {
    // The name's rule depends on the kind: Strategy::invalid_name.
    let mut errors = Vec::new();
    for (k, v) in labels(obj) {
        if crate::selector::LabelSelector::parse(&format!("{k}={v}")).is_err() || v.contains(',') {
            errors.push(FieldError::invalid(format!("metadata.labels.{k}"), v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (max 63 characters), with an optional DNS subdomain prefix"));
        }
    }
    let annotation_bytes: usize = annotations(obj)
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if annotation_bytes > 256 * 1024 {
        errors.push(FieldError::too_long("metadata.annotations", 256 * 1024));
    }
    for (i, f) in finalizers(obj).iter().enumerate() {
        let (prefix, rest) = match f.split_once('/') {
            Some((p, r)) => (Some(p), r),
            None => (None, f.as_str()),
        };
        let name_ok = !rest.is_empty()
            && rest.len() <= 63
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && rest
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && rest
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        let ok = name_ok && prefix.is_none_or(is_dns_subdomain);
        if !ok {
            errors.push(FieldError::invalid(
                format!("metadata.finalizers[{i}]"),
                f.clone(),
                "name must be a qualified name like example.com/cleanup",
            ));
        }
    }
    errors
}

/// Update the object at `key` with `change` applied, retrying on write
/// conflicts; `change` returns false to leave it as it is. A missing key,
/// or a value that is not JSON, is left alone.
pub async fn update_json(
    store: &drover_store::Store,
    key: &str,
    mut change: impl FnMut(&mut Value) -> bool,
) -> Result<(), drover_store::StoreError> {
    use drover_store::StoreError;
    for _ in 0..10 {
        let Some(kv) = store.get(key).await? else {
            return Ok(());
        };
        let Ok(mut v) = serde_json::from_slice::<Value>(&kv.value) else {
            return Ok(());
        };
        if !change(&mut v) {
            return Ok(());
        }
        match store.update(key, v.to_string(), kv.mod_revision).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_data_goes_into_data() {
        let mut s =
            serde_json::json!({"data": {"a": "b2xk"}, "stringData": {"a": "new", "b": "x"}});
        merge_secret_string_data(&mut s);
        assert_eq!(s, serde_json::json!({"data": {"a": "bmV3", "b": "eA=="}}));
    }

    #[test]
    fn names() {
        for ok in ["c-abcde", "a", "a.b-c", "x9"] {
            assert!(is_dns_subdomain(ok), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a..b", "a_b", "é", &"a".repeat(254)] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
        assert!(!is_dns_label("a.b"));
    }

    #[test]
    fn meta_checks() {
        let obj = serde_json::json!({"metadata": {"name": "Bad_Name", "labels": {"ok": "yes", "bad key": "v"}, "finalizers": ["drover.io/cleanup", "//"]}});
        let errs: Vec<_> = validate_meta(&obj).into_iter().map(|e| e.field).collect();
        assert_eq!(errs, ["metadata.labels.bad key", "metadata.finalizers[1]"]);
    }
}
