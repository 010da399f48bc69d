//! The audit log: one JSON line per request to `--audit-log`, by level as in
//! Rancher — 0 off; 1 metadata (time, user, groups, verb, path, status,
//! latency, source address, request id); 2 adds the request body; 3 adds the
//! response body. Values under keys containing a secret-sounding word
//! (passwords, tokens, secrets, keys, credentials, PKCE verifiers), an OIDC
//! login's code and state, and the `data` of Secrets are redacted at every
//! level; of the headers only `User-Agent` is logged (never
//! `Authorization`).
//! Streams (watches, logs) are logged without their bodies. The file is
//! rotated by size, keeping a few old files.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use drover_apiserver::object::LAST_APPLIED;
use drover_rbac::UserInfo;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::AppState;

/// Bodies larger than this are not copied into the log.
const MAX_LOGGED_BODY: usize = 3 * 1024 * 1024;
/// A key containing any of these (case-insensitive) has its value redacted:
/// passwords, tokens (also inside registration commands and URLs), secrets,
/// private keys, kubeconfig credentials.
const SECRET_KEYS: &[&str] = &[
    "password",
    "token",
    "secret",
    "bearer",
    "privatekey",
    "keypem",
    "key-data",
    "routingkey",
    "manifesturl",
    "command",
    "credential",
    "verifier",
];

/// Fields of a login body that are one-use credentials of an OIDC sign-in,
/// redacted besides [`SECRET_KEYS`].
const LOGIN_SECRETS: &[&str] = &["code", "state"];

/// The request URI as logged: the registration token in an import manifest
/// URL is a secret.
fn redact_uri(uri: String) -> String {
    match uri.strip_prefix("/v1-public/import/") {
        Some(_) => "/v1-public/import/[REDACTED]".to_owned(),
        None => uri,
    }
}

/// The slot the authentication middleware fills with the caller, so the
/// audit layer (outside it) can record who asked.
#[derive(Debug, Clone, Default)]
pub(crate) struct Caller(pub(crate) Arc<Mutex<Option<UserInfo>>>);

impl Caller {
    pub(crate) fn set(&self, user: &UserInfo) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(user.clone());
    }
}

/// The audit sink.
#[derive(Debug)]
pub struct Audit {
    level: u8,
    lines: Option<mpsc::Sender<String>>,
}

impl Audit {
    /// Open the log (level 0: nothing is opened).
    pub fn open(level: u8, path: PathBuf, max_bytes: u64, backups: u32) -> std::io::Result<Self> {
        if level == 0 {
            return Ok(Self { level, lines: None });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let (tx, rx) = mpsc::channel(4096);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_lines(rx, file, path, max_bytes, backups))?;
        Ok(Self {
            level,
            lines: Some(tx),
        })
    }

    fn send(&self, line: String) {
        if let Some(tx) = &self.lines {
            if tx.try_send(line).is_err() {
                tracing::warn!("audit log is falling behind; an entry was dropped");
            }
        }
    }
}

fn write_lines(
    mut rx: mpsc::Receiver<String>,
    mut file: std::fs::File,
    path: PathBuf,
    max_bytes: u64,
    backups: u32,
) {
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    while let Some(line) = rx.blocking_recv() {
        if size > 0 && size + line.len() as u64 + 1 > max_bytes {
            for i in (1..backups).rev() {
                let _ = std::fs::rename(
                    format!("{}.{i}", path.display()),
                    format!("{}.{}", path.display(), i + 1),
                );
            }
            let _ = std::fs::rename(&path, format!("{}.1", path.display()));
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                Ok(f) => {
                    file = f;
                    size = 0;
                }
                Err(e) => tracing::error!(error = %e, "cannot reopen the audit log"),
            }
        }
        if writeln!(file, "{line}").is_ok() {
            size += line.len() as u64 + 1;
        }
    }
}

/// Replace secret values in a JSON document, in place: values under
/// secret-sounding keys, and the `data` and `stringData` of Secrets —
/// objects of kind Secret, the items of a SecretList (which carry no kind
/// of their own), and, with `secrets` set, the whole document (a request
/// to the `secrets` resource: its patches and lists say no kind at all),
/// where the value of every JSON patch operation goes too.
/// An object kept in a `last-applied-configuration` annotation is redacted
/// by the same rules.
pub fn redact(v: &mut Value, secrets: bool) {
    match v {
        Value::Object(map) => {
            // An operation of a JSON patch to a Secret: its value may be
            // anything of it, data or the last-applied annotation.
            // So is one whose path names a secret-sounding field
            // (`/spec/ldap/serviceAccountPassword`) of any object.
            let secret_path = map.get("path").and_then(Value::as_str).is_some_and(|p| {
                let lower = p.to_ascii_lowercase();
                SECRET_KEYS.iter().any(|k| lower.contains(k))
            });
            if (secrets || secret_path) && map.contains_key("op") && map.contains_key("value") {
                map.insert("value".into(), Value::String("[REDACTED]".into()));
            }
            // One that sets kubectl's last-applied annotation: the object
            // in it is redacted as the annotation itself would be.
            let applied_path = map
                .get("path")
                .and_then(Value::as_str)
                .is_some_and(|p| p.ends_with("kubectl.kubernetes.io~1last-applied-configuration"));
            if applied_path && map.contains_key("op") {
                if let Some(value) = map.get_mut("value") {
                    let mut annotations = json!({ LAST_APPLIED: value.take() });
                    redact_annotations(&mut annotations, secrets);
                    *value = annotations[LAST_APPLIED].take();
                }
            }
            let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
            let is_secret = secrets || kind == "Secret";
            let items_are_secrets = secrets || kind == "SecretList";
            for (k, child) in map.iter_mut() {
                let lower = k.to_ascii_lowercase();
                if SECRET_KEYS.iter().any(|k| lower.contains(k))
                    || (is_secret && (k == "data" || k == "stringData"))
                {
                    *child = Value::String("[REDACTED]".into());
                } else if k == "items" {
                    redact(child, items_are_secrets);
                } else if k == "annotations" {
                    redact_annotations(child, is_secret);
                } else {
                    redact(child, secrets);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| redact(i, secrets)),
        _ => {}
    }
}

/// Annotations: the applied object in `last-applied-configuration` is
/// redacted like any body (or dropped if it is not JSON).
fn redact_annotations(v: &mut Value, secrets: bool) {
    let Value::Object(map) = v else {
        return redact(v, secrets);
    };
    for (k, child) in map.iter_mut() {
        if k == LAST_APPLIED {
            let applied = child
                .as_str()
                .and_then(|t| serde_json::from_str::<Value>(t).ok());
            *child = match applied {
                Some(mut obj) => {
                    redact(&mut obj, secrets);
                    Value::String(obj.to_string())
                }
                None => Value::String("[REDACTED]".into()),
            };
        } else {
            let lower = k.to_ascii_lowercase();
            if SECRET_KEYS.iter().any(|s| lower.contains(s)) {
                *child = Value::String("[REDACTED]".into());
            }
        }
    }
}

fn body_for_log(bytes: &[u8], secrets: bool) -> Value {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(mut v) => {
            redact(&mut v, secrets);
            v
        }
        Err(_) if bytes.is_empty() => Value::Null,
        Err(_) => Value::String(format!("[{} bytes, not JSON, omitted]", bytes.len())),
    }
}

/// The Kubernetes resource a request is about (for a proxied one, the
/// resource downstream), if its path names one.
fn resource_of(req: &Request) -> Option<drover_apiserver::request::RequestInfo> {
    let mut path = req.uri().path();
    if let Some(after) = path.strip_prefix(super::proxy::PREFIX) {
        path = after.find('/').map_or("/", |i| &after[i..]);
    }
    if !path.starts_with("/api") {
        return None;
    }
    let watch = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=1" || p == "watch=true"));
    match drover_apiserver::request::parse(req.method(), path, watch) {
        Some(drover_apiserver::request::Target::Resource(info)) => Some(info),
        _ => None,
    }
}

/// The verb kube-apiserver would log for this request (for a proxied one,
/// the verb the downstream API server sees).
fn verb(req: &Request) -> String {
    match resource_of(req) {
        Some(info) => info.verb,
        None => req.method().as_str().to_ascii_lowercase(),
    }
}

/// Middleware: log each request at the configured level.
pub(crate) async fn record(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let audit = &state.audit;
    if audit.level == 0 {
        return next.run(req).await;
    }
    let start = Instant::now();
    let received = drover_core::meta::now_rfc3339();
    let id = drover_core::meta::new_uid();
    let caller = Caller::default();
    req.extensions_mut().insert(caller.clone());
    let verb = verb(&req);
    let secrets = resource_of(&req).is_some_and(|info| info.resource == "secrets");
    let cluster = super::proxy::split(req.uri()).map(|(c, _)| c.to_owned());
    let uri = redact_uri(
        req.uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| req.uri().path().to_owned()),
    );
    let source = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();

    let mut request_body = None;
    if audit.level >= 2 {
        let (parts, body) = req.into_parts();
        // A body too large (or unreadable) is refused here rather than
        // passed on empty.
        let bytes = match axum::body::to_bytes(body, MAX_LOGGED_BODY).await {
            Ok(b) => b,
            Err(_) => {
                return drover_apiserver::ApiError::too_large(MAX_LOGGED_BODY).into_response()
            }
        };
        let mut body = body_for_log(&bytes, secrets);
        if uri == "/v1-public/login" {
            if let Some(m) = body.as_object_mut() {
                for k in LOGIN_SECRETS {
                    if m.contains_key(*k) {
                        m.insert((*k).to_owned(), Value::String("[REDACTED]".into()));
                    }
                }
            }
        }
        request_body = Some(body);
        req = Request::from_parts(parts, Body::from(bytes));
    }
    let mut response = next.run(req).await;
    let code = response.status().as_u16();
    let mut response_body = None;
    if audit.level >= 3 {
        let exact = http_body::Body::size_hint(response.body()).exact();
        if exact.is_some_and(|n| n as usize <= MAX_LOGGED_BODY) {
            let (parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, MAX_LOGGED_BODY)
                .await
                .unwrap_or_default();
            response_body = Some(body_for_log(&bytes, secrets));
            response = Response::from_parts(parts, Body::from(bytes));
        }
    }
    let user = caller.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (username, groups, extra) = match user {
        Some(u) => (u.name, u.groups, u.extra),
        None => (
            "system:anonymous".to_owned(),
            vec!["system:unauthenticated".to_owned()],
            Default::default(),
        ),
    };
    let level = ["None", "Metadata", "Request", "RequestResponse"][audit.level.min(3) as usize];
    let mut entry = json!({
        "auditID": id,
        "level": level,
        "stage": "ResponseComplete",
        "requestReceivedTimestamp": received,
        "stageTimestamp": drover_core::meta::now_rfc3339(),
        "verb": verb,
        "requestURI": uri,
        "user": {"username": username, "groups": groups},
        "sourceIPs": source.into_iter().collect::<Vec<_>>(),
        "userAgent": agent,
        "responseStatus": {"code": code},
        "latencyMs": (start.elapsed().as_secs_f64() * 1e3 * 1000.0).round() / 1000.0,
    });
    if !extra.is_empty() {
        entry["user"]["extra"] = json!(extra);
    }
    if let Some(c) = cluster {
        entry["cluster"] = json!(c);
    }
    if let Some(b) = request_body.filter(|b| !b.is_null()) {
        entry["requestObject"] = b;
    }
    if let Some(b) = response_body.filter(|b| !b.is_null()) {
        entry["responseObject"] = b;
    }
    audit.send(entry.to_string());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::open(1, path.clone(), 1000, 2).unwrap();
        for i in 0..60 {
            audit.send(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(40)));
        }
        drop(audit);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let sizes: Vec<u64> = ["audit.log", "audit.log.1", "audit.log.2"]
            .iter()
            .map(|f| {
                std::fs::metadata(dir.path().join(f))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .collect();
        assert!(sizes.iter().all(|s| *s > 0 && *s <= 1000), "{sizes:?}");
        assert!(
            !dir.path().join("audit.log.3").exists(),
            "only two backups are kept"
        );
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(
            last.contains("\"n\":59"),
            "the newest entry is in the current file"
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let mut v = json!({
            "username": "alice", "password": "hunter2", "newPassword": "x", "currentPassword": "y",
            "token": "token-abc:SECRET", "status": {"token": "token-abc:SECRET", "expiresAt": "t"},
            "items": [{"kind": "Secret", "data": {"k": "c2VjcmV0"}, "metadata": {"name": "s"}}],
        });
        redact(&mut v, false);
        let text = v.to_string();
        for secret in ["hunter2", "SECRET", "c2VjcmV0"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(v["username"], "alice");
        assert_eq!(v["status"]["expiresAt"], "t");
        assert_eq!(v["items"][0]["metadata"]["name"], "s");

        // A JSON patch setting a provider's secret, of any kind of object.
        let mut patch = json!([{"op": "replace", "path": "/spec/ldap/serviceAccountPassword", "value": "hunter2"},
                               {"op": "replace", "path": "/spec/ldap/servers/0", "value": "ldap.example.com"}]);
        redact(&mut patch, false);
        assert!(!patch.to_string().contains("hunter2"), "{patch}");
        assert_eq!(patch[1]["value"], "ldap.example.com");
        let applied =
            json!({"spec": {"ldap": {"serviceAccountPassword": "hunter2", "servers": ["x"]}}})
                .to_string();
        let mut patch = json!([{"op": "replace",
            "path": "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration", "value": applied}]);
        redact(&mut patch, false);
        assert!(!patch.to_string().contains("hunter2"), "{patch}");
        assert!(patch.to_string().contains("servers"), "{patch}");
    }

    #[test]
    fn secret_data_is_redacted_wherever_it_appears() {
        let applied = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                             "data": {"k": "c2VjcmV0"}, "stringData": {"p": "plaintext"}})
        .to_string();
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "data": {"k": "c2VjcmV0"},
            "metadata": {"name": "s", "annotations": {LAST_APPLIED: applied, "note": "kept"}}});
        // A list whose items carry no kind, a watch event, a patch body
        // (no kind at all: known from the path), a Table row.
        let list = json!({"kind": "SecretList", "items": [{"data": {"k": "c2VjcmV0"},
            "metadata": {"annotations": {LAST_APPLIED: applied}}}]});
        let event = json!({"type": "ADDED", "object": secret});
        let patch = json!({"data": {"k": "c2VjcmV0"}, "metadata": {"annotations": {LAST_APPLIED: applied}}});
        let table = json!({"kind": "Table", "rows": [{"cells": ["s"], "object": secret}]});
        let json_patch = json!([{"op": "replace", "path": "/data/k", "value": "c2VjcmV0"},
                                {"op": "add", "path": "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration", "value": applied}]);
        for (mut v, by_path) in [
            (secret.clone(), false),
            (list, false),
            (event, false),
            (patch.clone(), true),
            (json_patch, true),
            (table, false),
        ] {
            redact(&mut v, by_path);
            let text = v.to_string();
            assert!(
                !text.contains("c2VjcmV0") && !text.contains("plaintext"),
                "leaked: {text}"
            );
        }
        let mut v = secret;
        redact(&mut v, false);
        assert_eq!(v["metadata"]["annotations"]["note"], "kept");
        let kept: Value =
            serde_json::from_str(v["metadata"]["annotations"][LAST_APPLIED].as_str().unwrap())
                .unwrap();
        assert_eq!(
            kept["metadata"]["name"], "s",
            "the rest of the annotation stays"
        );
        // A ConfigMap's data is not a secret.
        let mut cm = json!({"kind": "ConfigMap", "data": {"k": "visible"}});
        redact(&mut cm, false);
        assert_eq!(cm["data"]["k"], "visible");
        let mut unparsable = json!({"metadata": {"annotations": {LAST_APPLIED: "{not json"}}});
        redact(&mut unparsable, true);
        assert_eq!(
            unparsable["metadata"]["annotations"][LAST_APPLIED],
            "[REDACTED]"
        );
    }
}
