//! The HTTP edge. Public endpoints: `/ping`, `/healthz`, `/cacerts`,
//! `/metrics`, the agents' `/v1-public/connect` ([`connect`]) and import
//! manifests ([`import`]), logins; the web UI under `/dashboard/` (crate
//! `drover-ui`). Everything else is authenticated ([`authn`]) and audited
//! ([`audit`]): the management API, the proxy to clusters ([`proxy`]),
//! kubeconfig downloads ([`kubeconfig`]) and `/v1-admin/replicas`. Errors
//! answer as kube-apiserver does, with a `metav1.Status`.

pub mod audit;
pub mod authn;
pub(crate) mod certs;
pub mod connect;
pub(crate) mod forwarded;
pub mod import;
pub mod kubeconfig;
pub mod metrics;
pub mod proxy;
pub mod sessions;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use drover_apiserver::ApiError;
use serde_json::json;

use drover_rbac::{Attributes, UserInfo};

use crate::controller::lease::Ownership;
use crate::kinds::registration::ImportSettings;
use crate::link::{Dialer, Links};
use crate::replicas::Registry;

/// What every request handler can reach.
#[derive(Debug)]
pub struct AppState {
    /// The datastore.
    pub store: drover_store::Store,
    /// The management API.
    pub api: Arc<drover_apiserver::ApiServer>,
    /// Logins.
    pub login: drover_auth::login::Login,
    /// The audit log.
    pub audit: audit::Audit,
    /// The server's certificates; its CA is served at `/cacerts` (empty
    /// with a public CA).
    pub tls: Arc<crate::tls::Tls>,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Request metrics.
    pub metrics: metrics::Metrics,
    /// The management API's authorizer (policy snapshots).
    pub authz: Arc<drover_auth::policy::RbacAuthorizer>,
    /// Checks bearer tokens (cached, kept current from the store's watch).
    pub authn: Arc<drover_auth::authn::Authenticator>,
    /// The agent links this replica holds.
    pub links: Arc<Links>,
    /// The way to every cluster, wherever its link is.
    pub dialer: Arc<Dialer>,
    /// The replicas, and this one's membership.
    pub registry: Arc<Registry>,
    /// Which replica runs which controllers.
    pub ownership: Arc<Ownership>,
    /// Long-lived connections, ended when their rights are revoked.
    pub sessions: Arc<sessions::Sessions>,
    /// What import manifests say.
    pub import: ImportSettings,
    /// Keep-alive of agent tunnels.
    pub keepalive: drover_tunnel::Keepalive,
    /// Lifetime of kubeconfig tokens.
    pub kubeconfig_ttl: Duration,
    /// Longest token lifetime (zero: no limit).
    pub token_max_ttl: Duration,
    /// The authentication providers.
    pub providers: Arc<drover_auth::providers::Providers>,
    /// Alerting (the fleet view the metrics read).
    pub alerts: Arc<crate::controller::alerts::Alerts>,
}

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
            post(authn::set_password),
        )
        .route(
            "/apis/management.drover.io/v1/clusters/{name}/kubeconfig",
            post(kubeconfig::kubeconfig),
        )
        .route("/v1-admin/replicas", get(replicas))
        .route("/v1-admin/certificates", get(certs::list))
        .route("/v1-admin/certificates/rotate-ca", post(certs::rotate_ca))
        .route("/v1/principals", get(authn::search_principals))
        .route(
            "/apis/management.drover.io/v1/users/{name}/refreshgroups",
            post(authn::refresh_groups),
        )
        .route("/api", any(api.clone()))
        .route("/api/", any(api.clone()))
        .route("/api/{*rest}", any(api.clone()))
        .route("/apis", any(api.clone()))
        .route("/apis/", any(api.clone()))
        .route("/apis/{*rest}", any(api.clone()))
        .route("/openapi/{*rest}", any(api))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authn::require,
        ));
    let app = Router::new()
        .merge(authenticated)
        .route("/v1-public/login", post(authn::login))
        .route("/v1-public/authproviders", get(authn::providers))
        .route("/v1-public/oidc/start", post(authn::oidc_start))
        .route("/v1-public/import/{file}", get(import::manifest))
        .route(drover_tunnel::CONNECT_PATH, get(connect::connect))
        .route("/k8s/clusters/{*rest}", any(proxy::proxy))
        .route("/ping", get(|| async { "pong" }))
        // As kube-apiserver's, readable by anyone (system:public-info-viewer).
        .route("/version", get(version))
        .route("/version/", get(version))
        .route("/healthz", get(healthz))
        .route("/cacerts", get(cacerts))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state.clone());
    // The web UI calls the API and the proxy above in process; its pages
    // are counted in the metrics under their own routes.
    let ui = drover_ui::router(
        app.clone(),
        state.tls.clone(),
        state.import.server_url.clone(),
    )
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        metrics::track,
    ));
    app.merge(ui).layer(axum::middleware::from_fn_with_state(
        state,
        forwarded::resolve,
    ))
}

/// `GET /healthz`: 200 while the datastore answers and this replica is
/// serving; 503 while it drains, so that a balancer sends no new requests.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let replica = state.registry.id();
    if state.registry.draining() {
        let body =
            json!({"status": "draining", "version": drover_core::VERSION, "replica": replica});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
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
    let body = json!({"status": status, "version": drover_core::VERSION, "replica": replica, "datastore": datastore});
    (code, Json(body)).into_response()
}

/// `GET /v1-admin/replicas` (who may `get` `replicas`: admins): every
/// replica with its address and state, which holds each cluster's link, and
/// who holds each lease, with its generation.
async fn replicas(State(state): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    let Some(user) = req.extensions().get::<UserInfo>().cloned() else {
        return ApiError::unauthorized().into_response();
    };
    let attrs = Attributes::resource("get", drover_core::api::GROUP, "replicas", "", "");
    match state.api.authorizer().authorize(&user, &attrs).await {
        Ok(true) => {}
        Ok(false) => {
            return ApiError::forbidden_because(format!(
                "User {:?} cannot get resource \"replicas\"",
                user.name
            ))
            .into_response()
        }
        Err(e) => return e.into_response(),
    }
    let members = state.registry.members();
    let replicas: Vec<_> = members
        .records
        .iter()
        .map(|(id, r)| {
            json!({
                "id": id,
                "peerURL": r.peer_url,
                "live": members.is_live(id),
                "serving": members.serving.contains(id),
                "draining": r.draining,
            })
        })
        .collect();
    let links: serde_json::Map<String, serde_json::Value> = state
        .links
        .table()
        .items()
        .into_iter()
        .map(|(k, r, _)| {
            (
                crate::link::records::cluster_of(&k).to_owned(),
                json!({"replica": r.replica, "generation": r.generation}),
            )
        })
        .collect();
    let leases: serde_json::Map<String, serde_json::Value> = state
        .ownership
        .leases()
        .into_iter()
        .map(|(name, (holder, generation))| {
            (name, json!({"holder": holder, "generation": generation}))
        })
        .collect();
    Json(json!({
        "self": state.registry.id(),
        "replicas": replicas,
        "links": links,
        "leases": leases,
    }))
    .into_response()
}

async fn cacerts(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state.tls.ca_pem(),
    )
        .into_response()
}

/// The Kubernetes API version the management API serves (the kinds and
/// machinery of k8s-openapi's `v1_31`), with Drover's own version as build
/// metadata, as distributions do (`v1.31.0+k3s1`).
async fn version() -> Response {
    axum::Json(serde_json::json!({
        "major": "1",
        "minor": "31",
        "gitVersion": format!("v1.31.0+drover.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        }),
    }))
    .into_response()
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state
            .metrics
            .render(&state.tls.certificates(), &state.alerts.fleet),
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
