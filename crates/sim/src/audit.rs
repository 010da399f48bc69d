//! `--audit-log PATH`: one `audit.k8s.io/v1` Event per API request, as JSON
//! lines, at level `Metadata` — what kube-apiserver's log backend writes
//! under a policy of `level: Metadata` for everything. An event is written
//! when the answer starts (`ResponseComplete` for ordinary requests,
//! `ResponseStarted` for watches and other streams), in that order, so the
//! file shows which client wrote what, as whom and when.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use drover_apiserver::request::{self, Target};
use drover_core::meta;
use drover_rbac::UserInfo;
use serde_json::{json, Value};

/// The identity a request authenticated as, before impersonation.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated(pub UserInfo);

/// The open audit log.
#[derive(Debug)]
pub(crate) struct AuditLog {
    file: Mutex<std::fs::File>,
}

impl AuditLog {
    /// Append to `path`, made if missing (only its owner may read it).
    pub(crate) fn open(path: &std::path::Path) -> std::io::Result<Arc<Self>> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(Arc::new(Self {
            file: Mutex::new(file),
        }))
    }

    fn write(&self, event: &Value) {
        let mut line = event.to_string();
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }
}

fn user(u: &UserInfo) -> Value {
    json!({"username": u.name, "uid": u.uid, "groups": u.groups})
}

/// Record the request once the handler answered.
pub(crate) async fn record(State(log): State<Arc<AuditLog>>, req: Request, next: Next) -> Response {
    let received = SystemTime::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let watch_param = uri.query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
    });
    let info = match request::parse(&method, uri.path(), watch_param) {
        Some(Target::Resource(info)) => Some(info),
        _ => None,
    };
    let authenticated = req.extensions().get::<Authenticated>().map(|a| a.0.clone());
    let effective = req.extensions().get::<UserInfo>().cloned();
    let user_agent = req
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let source = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let resp = next.run(req).await;
    let verb = match &info {
        Some(i) => i.verb.clone(),
        None => method.as_str().to_ascii_lowercase(),
    };
    let streaming = verb == "watch"
        || info
            .as_ref()
            .is_some_and(|i| !i.subresource.is_empty() && resp.status().as_u16() == 101);
    let mut event = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": meta::new_uid(),
        "stage": if streaming { "ResponseStarted" } else { "ResponseComplete" },
        "requestURI": uri.to_string(),
        "verb": verb,
        "userAgent": user_agent,
        "responseStatus": {"metadata": {}, "code": resp.status().as_u16()},
        "requestReceivedTimestamp": meta::rfc3339_micro(received),
        "stageTimestamp": meta::rfc3339_micro(SystemTime::now()),
    });
    if let Some(ip) = source {
        event["sourceIPs"] = json!([ip]);
    }
    match (&authenticated, &effective) {
        (Some(a), Some(e)) if a.name != e.name || a.groups != e.groups => {
            event["user"] = user(a);
            event["impersonatedUser"] = user(e);
        }
        (Some(a), _) => event["user"] = user(a),
        (None, Some(e)) => event["user"] = user(e),
        (None, None) => {}
    }
    if let Some(i) = &info {
        let mut object = json!({"resource": i.resource, "apiVersion": i.version});
        if !i.group.is_empty() {
            object["apiGroup"] = json!(i.group);
        }
        if !i.namespace.is_empty() {
            object["namespace"] = json!(i.namespace);
        }
        if !i.name.is_empty() {
            object["name"] = json!(i.name);
        }
        if !i.subresource.is_empty() {
            object["subresource"] = json!(i.subresource);
        }
        event["objectRef"] = object;
    }
    log.write(&event);
    resp
}
