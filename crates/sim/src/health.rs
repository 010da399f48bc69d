//! What kube-apiserver serves about itself: `/healthz`, `/livez` and
//! `/readyz` (with `?verbose`, a `[+]` line per check, and each check at
//! its own path, e.g. `/readyz/etcd`), and `/metrics` in Prometheus text
//! for callers allowed `get` on it (`apiserver_request_total`,
//! `apiserver_storage_objects`, and the process's own).

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use drover_apiserver::request::{self, Target};
use drover_apiserver::ApiError;
use drover_rbac::{Attributes, UserInfo};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::SimState;

/// The labels of `apiserver_request_total`, kube's.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: String,
    component: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: String,
}

/// The sim's metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    objects: Family<ResourceLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.",
            requests.clone(),
        );
        let objects = Family::<ResourceLabel, Gauge>::default();
        registry.register(
            "apiserver_storage_objects",
            "Number of stored objects at the time of last check split by kind.",
            objects.clone(),
        );
        Self {
            registry,
            requests,
            objects,
        }
    }
}

/// The checks `/livez` and `/readyz` run, in kube's order.
const LIVE_CHECKS: &[&str] = &[
    "ping",
    "log",
    "etcd",
    "poststarthook/start-apiserver-admission-initializer",
    "poststarthook/generic-apiserver-start-informers",
    "poststarthook/rbac/bootstrap-roles",
];
const READY_CHECKS: &[&str] = &[
    "ping",
    "log",
    "etcd",
    "etcd-readiness",
    "informer-sync",
    "poststarthook/start-apiserver-admission-initializer",
    "poststarthook/generic-apiserver-start-informers",
    "poststarthook/rbac/bootstrap-roles",
    "shutdown",
];

async fn check(state: &SimState, name: &str) -> Result<(), &'static str> {
    match name {
        "etcd" | "etcd-readiness" => state
            .store
            .revisions()
            .await
            .map(drop)
            .map_err(|_| "the datastore is unreachable"),
        "shutdown" if *state.stopping.0.borrow() => Err("process is shutting down"),
        _ => Ok(()),
    }
}

async fn report(
    state: &SimState,
    endpoint: &str,
    checks: &[&str],
    verbose: bool,
    exclude: &[String],
) -> Response {
    let mut lines = Vec::new();
    let mut failed = false;
    for name in checks {
        if exclude.iter().any(|e| e == name) {
            lines.push(format!("[+]{name} excluded: ok"));
            continue;
        }
        match check(state, name).await {
            Ok(()) => lines.push(format!("[+]{name} ok")),
            Err(_) => {
                failed = true;
                // kube withholds the reason from the report.
                lines.push(format!("[-]{name} failed: reason withheld"));
            }
        }
    }
    let (code, verdict) = if failed {
        (StatusCode::INTERNAL_SERVER_ERROR, "failed")
    } else {
        (StatusCode::OK, "passed")
    };
    let body = if verbose || failed {
        format!("{}\n{endpoint} check {verdict}\n", lines.join("\n"))
    } else {
        "ok".to_owned()
    };
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn flags(query: &[(String, String)]) -> (bool, Vec<String>) {
    let verbose = query.iter().any(|(k, _)| k == "verbose");
    let exclude = query
        .iter()
        .filter(|(k, _)| k == "exclude")
        .map(|(_, v)| v.clone())
        .collect();
    (verbose, exclude)
}

/// `/livez`, `/readyz`, `/healthz`.
pub(crate) async fn endpoint(
    State(state): State<Arc<SimState>>,
    Query(query): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let endpoint = req.uri().path().trim_start_matches('/').to_owned();
    let (verbose, exclude) = flags(&query);
    let checks = if endpoint == "readyz" {
        READY_CHECKS
    } else {
        LIVE_CHECKS
    };
    report(&state, &endpoint, checks, verbose, &exclude).await
}

/// One check: `/readyz/etcd`, `/livez/ping`, …
pub(crate) async fn single(
    State(state): State<Arc<SimState>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let endpoint = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    let checks = if endpoint == "readyz" {
        READY_CHECKS
    } else {
        LIVE_CHECKS
    };
    if !checks.contains(&name.as_str()) {
        return ApiError::no_such_path().into_response();
    }
    match check(&state, &name).await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal server error: {name} check failed"),
        )
            .into_response(),
    }
}

/// `/metrics`, for callers allowed `get` on that path (cluster-admin, or a
/// role with that non-resource URL, as Prometheus is given).
pub(crate) async fn metrics(State(state): State<Arc<SimState>>, req: Request) -> Response {
    let Some(user) = req.extensions().get::<UserInfo>().cloned() else {
        return ApiError::unauthorized().into_response();
    };
    let attrs = Attributes {
        verb: "get".into(),
        path: "/metrics".into(),
        ..Default::default()
    };
    match state.api.authorizer().authorize(&user, &attrs).await {
        Ok(true) => {}
        Ok(false) => {
            return ApiError::forbidden_because(format!(
                "forbidden: User {:?} cannot get path \"/metrics\"",
                user.name
            ))
            .into_response()
        }
        Err(e) => return e.into_response(),
    }
    for r in state
        .api
        .registry()
        .all()
        .iter()
        .filter(|r| !r.info.create_only)
    {
        let prefix = drover_core::keys::prefix(r.info.group, r.info.plural, None);
        if let Ok(n) = state
            .store
            .count(&drover_store::ListOptions {
                prefix,
                ..Default::default()
            })
            .await
        {
            let resource = if r.info.group.is_empty() {
                r.info.plural.to_owned()
            } else {
                format!("{}.{}", r.info.plural, r.info.group)
            };
            state
                .metrics
                .objects
                .get_or_create(&ResourceLabel { resource })
                .set(n);
        }
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &state.metrics.registry).is_err() {
        return ApiError::internal("cannot encode the metrics").into_response();
    }
    // Prometheus text (0.0.4), as kube-apiserver serves it.
    let out = out.trim_end().trim_end_matches("# EOF").to_owned();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// Middleware: count every API request as kube's `apiserver_request_total`.
pub(crate) async fn count(
    State(state): State<Arc<SimState>>,
    req: Request,
    next: Next,
) -> Response {
    let watch = req.uri().query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
    });
    let info = match request::parse(req.method(), req.uri().path(), watch) {
        Some(Target::Resource(info)) => Some(info),
        _ => None,
    };
    // Only the kinds this server has: made-up paths add no series.
    let info = info.and_then(|mut i| {
        let r = state
            .api
            .registry()
            .get(&i.group, &i.version, &i.resource)?;
        let kind = &r.info;
        let served = i.subresource.is_empty()
            || (i.subresource == "status" && kind.status)
            || (i.subresource == "scale" && kind.scale)
            || kind.streams.contains(&i.subresource.as_str())
            || kind.actions.contains(&i.subresource.as_str());
        if !served {
            i.subresource = String::new();
        }
        Some(i)
    });
    let resp = next.run(req).await;
    if let Some(info) = info {
        let scope = if !info.name.is_empty() {
            "resource"
        } else if !info.namespace.is_empty() {
            "namespace"
        } else {
            "cluster"
        };
        let verb = match info.verb.as_str() {
            "create" => "POST",
            "update" => "PUT",
            "patch" => "PATCH",
            "delete" => "DELETE",
            "deletecollection" => "DELETE",
            "watch" => "WATCH",
            "list" => "LIST",
            _ => "GET",
        };
        let labels = RequestLabels {
            verb: verb.to_owned(),
            group: info.group,
            version: info.version,
            resource: info.resource,
            subresource: info.subresource,
            scope: scope.to_owned(),
            component: "apiserver".to_owned(),
            code: resp.status().as_u16().to_string(),
        };
        state.metrics.requests.get_or_create(&labels).inc();
    }
    resp
}
