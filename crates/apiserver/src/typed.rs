//! Protobuf bodies of built-in kinds, as typed client-go (and so kubectl's
//! `create …` commands) sends them, turned into their JSON form.
//!
//! Field numbers come from the generated table in `proto_tables` (see
//! `scripts/gen-proto-tables`); JSON names come from the kind's OpenAPI
//! schema, matched to the protobuf field name without case or underscores
//! (`volume_id` ↔ `volumeID`), so the result is what kube-apiserver would
//! have decoded. Kubernetes' special messages become their JSON forms: Time
//! and MicroTime as RFC 3339 strings, Quantity as a string, IntOrString as a
//! number or string, RawExtension and FieldsV1 as embedded JSON, bytes as
//! base64.

use crate::protobuf::{Field as Wire, Message};
use crate::ApiError;
use base64::Engine;
use serde_json::{Map, Number, Value};

use crate::proto_tables::MESSAGES;

static NULL: Value = Value::Null;

/// One message's fields.
#[derive(Debug)]
pub(crate) struct MessageDesc {
    pub(crate) name: &'static str,
    pub(crate) fields: &'static [Field],
}

/// One field.
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) tag: u32,
    pub(crate) name: &'static str,
    pub(crate) kind: FieldKind,
    pub(crate) repeated: bool,
}

/// What a field holds.
#[derive(Debug)]
pub(crate) enum FieldKind {
    String,
    Int,
    Bool,
    Bytes,
    /// Produced by the generator for `double` fields (none of the current
    /// kinds reach one).
    #[allow(dead_code)]
    Double,
    Message(&'static str),
    /// A map with string keys and values of this kind.
    Map(&'static FieldKind),
}

fn bad(what: String) -> ApiError {
    ApiError::bad_request(format!("the protobuf body could not be decoded: {what}"))
}

fn desc(name: &str) -> Result<&'static MessageDesc, ApiError> {
    MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .map(|i| &MESSAGES[i])
        .map_err(|_| bad(format!("unknown message {name}")))
}

/// Decode `bytes` as message `name` into JSON shaped by `schema`.
pub fn decode(name: &str, bytes: &[u8], schema: &Value) -> Result<Value, ApiError> {
    decode_message(desc(name)?, bytes, schema, 0)
}

fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The JSON name of a protobuf field: the schema's property that matches,
/// or the lowerCamelCase of the name.
fn json_key(field: &str, schema: &Value) -> String {
    let wanted = normalize(field);
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        if let Some(k) = props.keys().find(|k| normalize(k) == wanted) {
            return k.clone();
        }
    }
    let mut out = String::new();
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn rfc3339(seconds: i64, micros: Option<u32>) -> Value {
    let t = drover_core::meta::from_unix(seconds);
    let base = drover_core::meta::rfc3339(t);
    Value::String(match micros {
        Some(m) => format!("{}.{m:06}Z", base.trim_end_matches('Z')),
        None => base,
    })
}

fn decode_message(
    d: &MessageDesc,
    bytes: &[u8],
    schema: &Value,
    depth: usize,
) -> Result<Value, ApiError> {
    if depth > 64 {
        return Err(bad("nesting too deep".into()));
    }
    let wire = Message::parse(bytes)?;
    match d.name {
        "apimachinery.pkg.apis.meta.v1.Time" => {
            return Ok(rfc3339(wire.varint(1).unwrap_or(0) as i64, None))
        }
        "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            let nanos = wire.varint(2).unwrap_or(0) as u32;
            return Ok(rfc3339(
                wire.varint(1).unwrap_or(0) as i64,
                Some(nanos / 1000),
            ));
        }
        "apimachinery.pkg.api.resource.Quantity" => return Ok(Value::String(wire.string(1)?)),
        "apimachinery.pkg.util.intstr.IntOrString" => {
            return Ok(if wire.varint(1).unwrap_or(0) == 0 {
                Value::from(wire.varint(2).unwrap_or(0) as i64)
            } else {
                Value::String(wire.string(3)?)
            })
        }
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            let raw = wire.bytes(1).unwrap_or_default();
            return if raw.is_empty() {
                Ok(Value::Null)
            } else {
                serde_json::from_slice(raw).map_err(|e| bad(format!("embedded JSON: {e}")))
            };
        }
        "apimachinery.pkg.apis.meta.v1.Duration" => {
            let ns = wire.varint(1).unwrap_or(0) as i64;
            return Ok(Value::String(format!("{}s", ns as f64 / 1e9)));
        }
        _ => {}
    }
    let mut out = Map::new();
    for (tag, value) in wire.fields() {
        let Some(field) = d.fields.iter().find(|f| f.tag == tag) else {
            continue;
        };
        let key = json_key(field.name, schema);
        // Schemas are borrowed, never copied: a Pod's is several MiB.
        let child_schema = schema
            .get("properties")
            .and_then(|p| p.get(&key))
            .unwrap_or(&NULL);
        match &field.kind {
            FieldKind::Map(value_kind) => {
                let Wire::Bytes(entry) = value else {
                    return Err(bad(format!("{key}: a map entry must be a message")));
                };
                let entry = Message::parse(entry)?;
                let k = entry.string(1)?;
                let value_schema = child_schema.get("additionalProperties").unwrap_or(&NULL);
                let v = match entry.fields().find(|(t, _)| *t == 2) {
                    Some((_, w)) => scalar(value_kind, w, value_schema, &key, depth)?,
                    None => default_of(value_kind),
                };
                out.entry(key)
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("object")
                    .insert(k, v);
            }
            kind if field.repeated => {
                let items_schema = child_schema.get("items").unwrap_or(&NULL);
                let list = out
                    .entry(key.clone())
                    .or_insert_with(|| Value::Array(Vec::new()))
                    .as_array_mut()
                    .expect("array");
                match (kind, value) {
                    (FieldKind::Int | FieldKind::Bool | FieldKind::Double, Wire::Bytes(packed)) => {
                        list.extend(unpack(kind, packed)?)
                    }
                    _ => list.push(scalar(kind, value, items_schema, &key, depth)?),
                }
            }
            kind => {
                let v = scalar(kind, value, child_schema, &key, depth)?;
                out.insert(key, v);
            }
        }
    }
    Ok(Value::Object(out))
}

fn default_of(kind: &FieldKind) -> Value {
    match kind {
        FieldKind::String | FieldKind::Bytes => Value::String(String::new()),
        FieldKind::Int => Value::from(0),
        FieldKind::Double => Value::from(0.0),
        FieldKind::Bool => Value::Bool(false),
        FieldKind::Message(_) | FieldKind::Map(_) => Value::Object(Map::new()),
    }
}

fn scalar(
    kind: &FieldKind,
    value: Wire<'_>,
    schema: &Value,
    key: &str,
    depth: usize,
) -> Result<Value, ApiError> {
    let mismatch = || bad(format!("field {key:?} has the wrong wire type"));
    Ok(match (kind, value) {
        (FieldKind::String, Wire::Bytes(b)) => Value::String(
            String::from_utf8(b.to_vec())
                .map_err(|_| bad(format!("field {key:?} is not UTF-8")))?,
        ),
        (FieldKind::Bytes, Wire::Bytes(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (FieldKind::Int, Wire::Varint(v)) => Value::from(v as i64),
        (FieldKind::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        (FieldKind::Double, Wire::Fixed(v)) => Number::from_f64(f64::from_bits(v))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        (FieldKind::Message(name), Wire::Bytes(b)) => {
            decode_message(desc(name)?, b, schema, depth + 1)?
        }
        _ => return Err(mismatch()),
    })
}

fn unpack(kind: &FieldKind, packed: &[u8]) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < packed.len() {
        match kind {
            FieldKind::Double => {
                let chunk = packed
                    .get(pos..pos + 8)
                    .ok_or_else(|| bad("truncated packed double".into()))?;
                out.push(
                    Number::from_f64(f64::from_le_bytes(chunk.try_into().expect("8 bytes")))
                        .map(Value::Number)
                        .unwrap_or(Value::Null),
                );
                pos += 8;
            }
            _ => {
                let mut v = 0u64;
                let mut shift = 0;
                loop {
                    let b = *packed
                        .get(pos)
                        .ok_or_else(|| bad("truncated packed varint".into()))?;
                    pos += 1;
                    v |= u64::from(b & 0x7f) << shift;
                    if b & 0x80 == 0 {
                        break;
                    }
                    shift += 7;
                    if shift > 63 {
                        return Err(bad("varint too long".into()));
                    }
                }
                out.push(if matches!(kind, FieldKind::Bool) {
                    Value::Bool(v != 0)
                } else {
                    Value::from(v as i64)
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(n: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8];
        let mut len = bytes.len();
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.extend_from_slice(bytes);
        out
    }

    fn varint(n: u32, v: u64) -> Vec<u8> {
        vec![(n << 3) as u8, v as u8]
    }

    #[test]
    fn the_table_is_sorted() {
        assert!(MESSAGES.windows(2).all(|w| w[0].name < w[1].name));
        assert!(desc("api.core.v1.Pod").is_ok());
    }

    #[test]
    fn a_secret_with_labels_data_and_a_time() {
        let schema = drover_core::api::schema_for::<k8s_openapi::api::core::v1::Secret>();
        let labels = [field(1, b"app"), field(2, b"web")].concat();
        let time = [varint(1, 120)].concat();
        let meta = [
            field(1, b"token"),
            field(3, b"ns1"),
            field(11, &labels),
            field(8, &time),
        ]
        .concat();
        let data = [field(1, b"pw"), field(2, b"s3cret")].concat();
        let body = [field(1, &meta), field(2, &data), field(3, b"Opaque")].concat();
        let v = decode("api.core.v1.Secret", &body, &schema).unwrap();
        assert_eq!(
            v,
            json!({
                "metadata": {"name": "token", "namespace": "ns1", "labels": {"app": "web"}, "creationTimestamp": "1970-01-01T00:02:00Z"},
                "data": {"pw": "czNjcmV0"},
                "type": "Opaque",
            })
        );
    }

    #[test]
    fn names_follow_the_schema() {
        let schema = drover_core::api::schema_for::<k8s_openapi::api::rbac::v1::PolicyRule>();
        // PolicyRule: verbs=1, apiGroups=2, resources=3, resourceNames=4, nonResourceURLs=5
        let body = [field(1, b"get"), field(5, b"/healthz")].concat();
        let v = decode("api.rbac.v1.PolicyRule", &body, &schema).unwrap();
        assert_eq!(
            v,
            json!({"verbs": ["get"], "nonResourceURLs": ["/healthz"]})
        );
    }

    /// A protobuf message on the wire, generated: fields with any tag
    /// (mostly the low ones real messages use) and any wire type, nested.
    fn wire() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let leaf = proptest::collection::vec(any::<u8>(), 0..24);
        leaf.prop_recursive(5, 256, 6, |inner| {
            proptest::collection::vec((1u32..20, 0u8..6, inner, any::<u64>()), 0..6).prop_map(
                |fields| {
                    let mut out = Vec::new();
                    for (tag, wire_type, payload, n) in fields {
                        match wire_type {
                            0 => out.extend(varint(tag, n)),
                            2 => out.extend(field(tag, &payload)),
                            w => {
                                out.push(((tag << 3) | u32::from(w)) as u8);
                                out.extend(payload.iter().take(8));
                            }
                        }
                    }
                    out
                },
            )
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            failure_persistence: None,
            ..Default::default()
        })]

        /// Any bytes, as any built-in kind: decoded or refused, never a
        /// panic.
        #[test]
        fn any_body_decodes_or_is_refused(body in wire(), raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), which in 0usize..6) {
            static KINDS: std::sync::OnceLock<Vec<(&'static str, Value)>> = std::sync::OnceLock::new();
            let kinds = KINDS.get_or_init(|| vec![
                ("api.core.v1.Pod", drover_core::api::schema_for::<k8s_openapi::api::core::v1::Pod>()),
                ("api.core.v1.Secret", drover_core::api::schema_for::<k8s_openapi::api::core::v1::Secret>()),
                ("api.core.v1.Namespace", drover_core::api::schema_for::<k8s_openapi::api::core::v1::Namespace>()),
                ("api.apps.v1.Deployment", drover_core::api::schema_for::<k8s_openapi::api::apps::v1::Deployment>()),
                ("api.rbac.v1.ClusterRole", drover_core::api::schema_for::<k8s_openapi::api::rbac::v1::ClusterRole>()),
                ("api.core.v1.ConfigMap", drover_core::api::schema_for::<k8s_openapi::api::core::v1::ConfigMap>()),
            ]);
            let (name, schema) = &kinds[which];
            let _ = decode(name, &body, schema);
            let _ = decode(name, &raw, schema);
        }
    }
}
