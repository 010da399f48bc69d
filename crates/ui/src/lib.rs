//! Drover's web UI, under `/dashboard/`.
//!
//! Pages are rendered on the server (maud) and read and write through the
//! management API and the cluster proxy in process, as the signed-in user
//! ([`api`]); a little plain JavaScript (`assets/app.js`) copies commands,
//! applies live updates (server-sent events), sends forms in the
//! background so a refusal shows beside its form, and drives the pod log
//! tail and the terminal (xterm.js, vendored in `assets/vendor/xterm`).
//! There is no front-end build step.
//!
//! # Layout
//! - [`api`]: the in-process API client.
//! - [`session`]: the session cookie, CSRF tokens, security headers.
//! - [`view`]: the page frame and shared pieces.
//! - [`access`]: what the user may do (rules reviews), to hide the rest.
//! - `explorer`: a cluster's workloads, pods, logs, shell and YAML.
//! - `pages`: clusters (with the alerts firing), projects, members, users,
//!   API keys, settings (with backups and "Back up now" for those who may
//!   make them, notifiers and "Send test" for those who may see them),
//!   sign-in, and search.

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;

pub(crate) mod access;
pub(crate) mod api;
pub(crate) mod error;
mod explorer;
mod pages;
pub(crate) mod session;
pub(crate) mod view;

use explorer::{list, object, stream, yaml};
use pages::{admin, auth, clusters, members, projects, providers};

/// A certificate the server uses, as the settings page lists it.
#[derive(Debug, Clone)]
pub struct CertificateView {
    /// What it is: `serving`, `ca`, `ca-next`.
    pub name: String,
    /// Subject common name.
    pub subject: String,
    /// Issuer common name.
    pub issuer: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// What the server tells the pages about its TLS identity, read at each
/// request (certificates are renewed and the CA rotated while it runs).
pub trait ServerTls: Send + Sync {
    /// SHA-256 (hex) of the CA at `/cacerts`; empty with a public CA.
    fn ca_checksum(&self) -> String;
    /// The certificates in use.
    fn certificates(&self) -> Vec<CertificateView>;
}

/// What the pages share.
pub(crate) struct Ui {
    api: api::Api,
    /// The server's certificates.
    tls: Arc<dyn ServerTls>,
    /// The server's URL (`--server-url`), for the redirect URI providers
    /// must know.
    server_url: String,
}

/// The UI's routes. `api` is the server's own router (management API and
/// cluster proxy), which the pages call in process; `tls` tells the
/// checksum of the server's CA that agents verify and the certificates'
/// expiry, shown on the settings page with `server_url`.
pub fn router(api: Router, tls: Arc<dyn ServerTls>, server_url: String) -> Router {
    let ui = Arc::new(Ui {
        api: api::Api::new(api),
        tls,
        server_url,
    });
    let home = || async { Redirect::to("/dashboard/clusters") };
    Router::new()
        .route("/", get(home))
        .route("/dashboard", get(home))
        .route("/dashboard/", get(home))
        .route("/dashboard/static/app.css", get(css))
        .route("/dashboard/static/app.js", get(js))
        .route("/dashboard/static/icon.svg", get(icon))
        .route("/dashboard/login", get(auth::login_page).post(auth::login))
        .route("/dashboard/login/oidc", get(auth::oidc_start))
        .route("/dashboard/login/oidc/callback", get(auth::oidc_callback))
        .route("/dashboard/logout", post(auth::logout))
        .route(
            "/dashboard/password",
            get(auth::password_page).post(auth::change_password),
        )
        .route(
            "/dashboard/clusters",
            get(clusters::list).post(clusters::create),
        )
        .route("/dashboard/clusters/events", get(clusters::events))
        .route("/dashboard/clusters/new", get(clusters::new_page))
        .route("/dashboard/clusters/{id}", get(clusters::detail))
        .route(
            "/dashboard/clusters/{id}/import",
            get(clusters::import_page),
        )
        .route(
            "/dashboard/clusters/{id}/kubeconfig",
            post(clusters::kubeconfig),
        )
        .route(
            "/dashboard/clusters/{id}/delete",
            get(clusters::delete_page).post(clusters::delete),
        )
        .route(
            "/dashboard/clusters/{id}/projects",
            post(clusters::create_project),
        )
        .route(
            "/dashboard/clusters/{id}/members",
            post(members::add_to_cluster),
        )
        .route(
            "/dashboard/clusters/{id}/members/{binding}/delete",
            post(members::remove_from_cluster),
        )
        .route(
            "/dashboard/clusters/{id}/projects/{pid}",
            get(projects::detail),
        )
        .route(
            "/dashboard/clusters/{id}/projects/{pid}/namespaces",
            post(projects::create_namespace),
        )
        .route(
            "/dashboard/clusters/{id}/projects/{pid}/quota",
            post(projects::set_quota),
        )
        .route(
            "/dashboard/clusters/{id}/projects/{pid}/namespaces/{ns}/move",
            post(projects::move_namespace),
        )
        .route(
            "/dashboard/clusters/{id}/projects/{pid}/members",
            post(members::add_to_project),
        )
        .route(
            "/dashboard/clusters/{id}/projects/{pid}/members/{binding}/delete",
            post(members::remove_from_project),
        )
        .route(
            "/dashboard/users",
            get(admin::users).post(admin::create_user),
        )
        .route("/dashboard/users/{name}/enabled", post(admin::set_enabled))
        .route("/dashboard/users/{name}/admin", post(admin::set_admin_flag))
        .route(
            "/dashboard/tokens",
            get(admin::tokens).post(admin::create_token),
        )
        .route(
            "/dashboard/tokens/{name}/delete",
            get(admin::delete_token_page).post(admin::delete_token),
        )
        .route("/dashboard/settings", get(admin::settings))
        .route("/dashboard/settings/backups", post(admin::backup_now))
        .route(
            "/dashboard/settings/notifiers/{name}/test",
            post(admin::test_notifier),
        )
        .route(
            "/dashboard/settings/providers/directory",
            post(providers::save_directory),
        )
        .route(
            "/dashboard/settings/providers/oidc",
            post(providers::save_oidc),
        )
        .route(
            "/dashboard/settings/providers/{name}/enabled",
            post(providers::set_enabled),
        )
        .route("/dashboard/principals", get(providers::search))
        .route("/dashboard/search", get(pages::search::search))
        .route("/dashboard/clusters/{id}/explore", get(list::home))
        .route(
            "/dashboard/clusters/{id}/explore/import",
            get(yaml::import_page).post(yaml::import),
        )
        .route(
            "/dashboard/clusters/{id}/explore/{resource}",
            get(list::list),
        )
        .route(
            "/dashboard/clusters/{id}/explore/{resource}/watch",
            get(list::watch),
        )
        .route(
            "/dashboard/clusters/{id}/explore/pods/{ns}/{name}/log",
            get(stream::tail),
        )
        .route(
            "/dashboard/clusters/{id}/explore/pods/{ns}/{name}/log/download",
            get(stream::download),
        )
        .route(
            "/dashboard/clusters/{id}/explore/pods/{ns}/{name}/shell",
            get(stream::shell),
        )
        .route(
            "/dashboard/clusters/{id}/explore/{resource}/{ns}/{name}",
            get(object::page),
        )
        .route(
            "/dashboard/clusters/{id}/explore/{resource}/{ns}/{name}/yaml",
            get(yaml::edit_page).post(yaml::save),
        )
        .route(
            "/dashboard/clusters/{id}/explore/{resource}/{ns}/{name}/scale",
            post(object::scale),
        )
        .route(
            "/dashboard/clusters/{id}/explore/{resource}/{ns}/{name}/restart",
            post(object::restart),
        )
        .route(
            "/dashboard/clusters/{id}/explore/{resource}/{ns}/{name}/image",
            post(object::image),
        )
        .route(
            "/dashboard/clusters/{id}/explore/{resource}/{ns}/{name}/env",
            post(object::env),
        )
        .route(
            "/dashboard/clusters/{id}/explore/{resource}/{ns}/{name}/rollback",
            get(object::rollback_page).post(object::rollback),
        )
        .route(
            "/dashboard/clusters/{id}/explore/{resource}/{ns}/{name}/delete",
            get(object::delete_page).post(object::delete),
        )
        .route("/dashboard/static/xterm.js", get(xterm_js))
        .route("/dashboard/static/xterm.css", get(xterm_css))
        .layer(axum::middleware::from_fn(session::check_csrf))
        .layer(axum::middleware::from_fn(session::security_headers))
        .with_state(ui)
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../assets/app.css"),
    )
}

async fn icon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        include_str!("../assets/icon.svg"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../assets/app.js"),
    )
}

/// The terminal of a pod's shell: xterm.js, vendored (see
/// `assets/vendor/xterm/README.md`).
async fn xterm_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        include_str!("../assets/vendor/xterm/xterm.js"),
    )
}

async fn xterm_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        include_str!("../assets/vendor/xterm/xterm.css"),
    )
}
