//! The HTTP surface. Public endpoints: `/ping`, `/healthz`, `/cacerts`,
//! `/metrics`; the web UI under `/dashboard/` (crate `drover-ui`). Anything
//! else answers as kube-apiserver does, with a `metav1.Status`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use drover_apiserver::ApiError;
use serde_json::json;

use crate::{metrics, AppState};

/// Largest request body accepted (kube-apiserver's limit is 3 MiB).
pub(crate) const MAX_BODY: usize = 3 * 1024 * 1024;

/// The whole application, without a socket (tests drive it with `oneshot`).
pub fn router(state: Arc<AppState>) -> Router {
    let api = {
        let state = state.clone();
        move |req: axum::extract::Request| {
            let api = state.api.clone();
            async move { api.handle(req).await }
        }
    };
    let authenticated = Router::new()
        .route(
            "/apis/management.drover.io/v1/users/{name}/password",
            post(crate::authn::set_password),
        )
        .route(
            "/apis/management.drover.io/v1/clusters/{name}/kubeconfig",
            post(crate::kubeconfig::kubeconfig),
        )
        .route("/api", any(api.clone()))
        .route("/api/{*rest}", any(api.clone()))
        .route("/apis", any(api.clone()))
        .route("/apis/{*rest}", any(api.clone()))
        .route("/openapi/{*rest}", any(api))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::authn::require,
        ));
    let app = Router::new()
        .merge(authenticated)
        .route("/v1-public/login", post(crate::authn::login))
        .route("/v1-public/import/{file}", get(crate::import::manifest))
        .route(drover_tunnel::CONNECT_PATH, get(crate::tunnels::connect))
        .route("/k8s/clusters/{*rest}", any(crate::proxy::proxy))
        .route("/ping", get(|| async { "pong" }))
        .route("/healthz", get(healthz))
        .route("/cacerts", get(cacerts))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::record,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state.clone());
    // The web UI calls the API and the proxy above in process; its pages
    // are counted in the metrics under their own routes.
    let ui = drover_ui::router(app.clone(), state.import.ca_checksum.clone())
        .layer(axum::middleware::from_fn_with_state(state, metrics::track));
    app.merge(ui)
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let backend = state.store.backend_name();
    let check = tokio::time::timeout(Duration::from_secs(3), state.store.revisions()).await;
    let (code, datastore) = match check {
        Ok(Ok(revs)) => (
            StatusCode::OK,
            json!({"backend": backend, "status": "ok", "revision": revs.current}),
        ),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"backend": backend, "status": "unavailable", "error": e.to_string()}),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"backend": backend, "status": "unavailable", "error": "no answer within 3s"}),
        ),
    };
    let status = if code == StatusCode::OK {
        "ok"
    } else {
        "unavailable"
    };
    let body = json!({"status": status, "version": drover_core::VERSION, "datastore": datastore});
    (code, Json(body)).into_response()
}

async fn cacerts(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state.ca_pem.clone(),
    )
        .into_response()
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> Response {
    ApiError::no_such_path().into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    )
    .into_response()
}
