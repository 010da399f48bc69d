//! Project secrets: core `v1` Secrets in a project's namespace of the
//! management API (`/api/v1/namespaces/p-xxxxx/secrets`), which the
//! cluster's controller copies into every namespace of the project
//! (`controller::projection`).
//!
//! They are ordinary Secrets to a client — kubectl's typed `create secret`
//! sends them as protobuf, decoded by `drover_apiserver::typed` — with
//! kube-apiserver's rules for their types (`Opaque`, `kubernetes.io/tls`,
//! `kubernetes.io/dockerconfigjson`, `kubernetes.io/dockercfg`,
//! `kubernetes.io/basic-auth`, `kubernetes.io/ssh-auth`), and only in a
//! project's namespace. `status` (Drover's own field, written by the
//! controller) says where the copies are and which namespace holds a
//! Secret of its own under that name, which is never overwritten.

use base64::Engine;
use drover_apiserver::{ApiError, Column, Context, FieldError, Prepared, Strategy};
use drover_core::api::{self, schema_for};
use drover_core::keys;
use futures::future::BoxFuture;
use serde_json::{json, Value};

/// The most data a Secret may hold, as kube-apiserver allows (1 MiB).
const MAX_DATA: usize = 1024 * 1024;

/// The label on a downstream copy that names its project.
pub const COPY_LABEL: &str = "drover.io/project-secret";

/// The types a project secret may have, with the keys each requires.
const TYPES: &[(&str, &[&str])] = &[
    ("Opaque", &[]),
    ("kubernetes.io/tls", &["tls.crt", "tls.key"]),
    ("kubernetes.io/dockerconfigjson", &[".dockerconfigjson"]),
    ("kubernetes.io/dockercfg", &[".dockercfg"]),
    ("kubernetes.io/basic-auth", &[]),
    ("kubernetes.io/ssh-auth", &["ssh-privatekey"]),
];

/// The Secret kind of the management API.
pub struct ProjectSecrets {
    schema: std::sync::Arc<Value>,
}

impl Default for ProjectSecrets {
    fn default() -> Self {
        Self {
            schema: std::sync::Arc::new(schema_for::<k8s_openapi::api::core::v1::Secret>()),
        }
    }
}

fn decoded(obj: &Value, key: &str) -> Option<Vec<u8>> {
    let text = obj["data"][key].as_str()?;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// A Secret's type; none (or empty, as protobuf sends it) is `Opaque`.
fn type_of(obj: &Value) -> &str {
    obj["type"]
        .as_str()
        .filter(|t| !t.is_empty())
        .unwrap_or("Opaque")
}

/// kube-apiserver's checks of a Secret's type and keys.
fn check_type(obj: &Value) -> Vec<FieldError> {
    let ty = type_of(obj);
    let Some((_, required)) = TYPES.iter().find(|(t, _)| *t == ty) else {
        let allowed: Vec<&str> = TYPES.iter().map(|(t, _)| *t).collect();
        return vec![FieldError::not_supported("type", ty, &allowed)];
    };
    let mut errors = Vec::new();
    for key in *required {
        if obj["data"].get(*key).is_none() {
            errors.push(FieldError::required(format!("data[{key}]"), ""));
        }
    }
    let data = obj["data"].as_object().cloned().unwrap_or_default();
    for key in data.keys() {
        let valid = !key.is_empty()
            && key.len() <= 253
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            errors.push(FieldError::invalid(
                format!("data[{key}]"),
                key.clone(),
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            ));
        }
    }
    if ty == "kubernetes.io/dockerconfigjson" {
        let parsed = decoded(obj, ".dockerconfigjson")
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        if obj["data"].get(".dockerconfigjson").is_some() && parsed.is_none() {
            errors.push(FieldError::invalid(
                "data[.dockerconfigjson]",
                "<secret contents redacted>",
                "invalid character in the JSON document",
            ));
        }
    }
    if ty == "kubernetes.io/basic-auth"
        && obj["data"].get("username").is_none()
        && obj["data"].get("password").is_none()
    {
        errors.push(FieldError::required(
            "data[username]",
            "either username or password is required",
        ));
    }
    errors
}

impl Strategy for ProjectSecrets {
    fn schema(&self) -> Value {
        (*self.schema).clone()
    }

    fn shared_schema(&self) -> std::sync::Arc<Value> {
        self.schema.clone()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::new("Type", "string", "The secret's type", "/type"),
            Column::new("Data", "integer", "How many keys", "/data"),
            Column::new(
                "Copies",
                "integer",
                "Namespaces holding a copy",
                "/status/copies",
            ),
        ]
    }

    fn cell(&self, column: &Column, obj: &Value) -> Value {
        match column.name {
            "Data" => Value::from(obj["data"].as_object().map_or(0, |m| m.len())),
            "Copies" => Value::from(obj["status"]["copies"].as_array().map_or(0, Vec::len)),
            _ => obj.pointer(column.pointer).cloned().unwrap_or(Value::Null),
        }
    }

    fn decode_protobuf(&self, raw: &[u8]) -> Option<Result<Value, ApiError>> {
        Some(drover_apiserver::typed::decode(
            "api.core.v1.Secret",
            raw,
            &self.schema,
        ))
    }

    /// Checked as stored: with `stringData` merged into `data`.
    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut merged = obj.clone();
        drover_apiserver::object::merge_secret_string_data(&mut merged);
        let obj = &merged;
        let mut errors = check_type(obj);
        let size: usize = obj["data"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, |b| b.len() / 4 * 3))
            .sum();
        if size > MAX_DATA {
            errors.push(FieldError::too_long("data", MAX_DATA));
        }
        if let Some(old) = old {
            if old["immutable"] == json!(true) && obj["immutable"] != json!(true) {
                errors.push(FieldError::forbidden(
                    "immutable",
                    "field is immutable when `immutable` is set",
                ));
            }
            let ty = |v: &Value| type_of(v).to_owned();
            if ty(obj) != ty(old) {
                errors.push(FieldError::invalid("type", ty(obj), "field is immutable"));
            }
            if old["immutable"] == json!(true) && (obj["data"] != old["data"]) {
                errors.push(FieldError::forbidden(
                    "data",
                    "field is immutable when `immutable` is set",
                ));
            }
        }
        errors
    }

    fn prepare_create<'a>(
        &'a self,
        ctx: &'a Context,
        obj: &'a mut Value,
    ) -> BoxFuture<'a, Result<Prepared, ApiError>> {
        Box::pin(async move {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let project = project_of(ctx, &ns).await?;
            drover_apiserver::object::merge_secret_string_data(obj);
            obj["type"] = json!(type_of(obj).to_owned());
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
            let errors = check_type(obj);
            if !errors.is_empty() {
                return Err(ApiError::invalid(
                    "Secret",
                    "",
                    obj["metadata"]["name"].as_str().unwrap_or_default(),
                    &errors,
                ));
            }
            // Not into a project removed meanwhile.
            Ok(Prepared {
                ops: vec![drover_store::Op::live(&project)],
                ..Default::default()
            })
        })
    }

    fn prepare_update<'a>(
        &'a self,
        _ctx: &'a Context,
        new: &'a mut Value,
        old: &'a Value,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            drover_apiserver::object::merge_secret_string_data(new);
            if new["type"].as_str().is_none_or(str::is_empty) {
                new["type"] = old["type"].clone();
            }
            Ok(())
        })
    }
}

/// The stored Project whose namespace `ns` is; a Secret anywhere else (a
/// cluster's namespace) is refused.
async fn project_of(ctx: &Context, ns: &str) -> Result<drover_store::KeyValue, ApiError> {
    let unavailable = |_| ApiError::unavailable("the datastore is unavailable");
    // A project's name is reserved under /drover/namespaces/ with its
    // cluster or project name; the Project itself lives in its cluster's
    // namespace.
    let reserved = ctx
        .store
        .get(&format!(
            "{}{ns}",
            super::management::NAMESPACE_RESERVATIONS
        ))
        .await
        .map_err(unavailable)?;
    if reserved.is_some() {
        let projects = ctx
            .store
            .list(&drover_store::ListOptions {
                prefix: keys::prefix(api::GROUP, "projects", None),
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        if let Some(kv) = projects
            .items
            .into_iter()
            .find(|kv| kv.key.rsplit('/').next() == Some(ns))
        {
            return Ok(kv);
        }
    }
    Err(ApiError::forbidden_because(format!(
        "secrets may only be created in a project's namespace, and {ns:?} is not one"
    )))
}

/// Where a project's secrets live in the store.
pub fn prefix(project: &str) -> String {
    keys::prefix("", "secrets", Some(project))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_need_their_keys() {
        let tls = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}});
        let errors = check_type(&tls);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let bad = json!({"type": "kubernetes.io/service-account-token", "data": {}});
        assert_eq!(check_type(&bad).len(), 1);
        let docker = json!({"type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode("{\"auths\":{}}")}});
        assert!(check_type(&docker).is_empty());
        let broken = json!({"type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode("{nope")}});
        assert_eq!(check_type(&broken).len(), 1);
        assert!(check_type(&json!({"data": {"a.b_c-d": "eA=="}})).is_empty());
        assert_eq!(check_type(&json!({"data": {"a/b": "eA=="}})).len(), 1);
    }
}
