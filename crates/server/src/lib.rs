//! The Drover management server (`drover server`).
//!
//! # Layout
//! - [`args`]: the flags of `drover server`, each also read from `DROVER_*`.
//! - `tls`: the server's CA and serving certificate — generated once and kept
//!   in the datastore, so restarts and replicas serve the same CA — or the
//!   operator's own files.
//! - `routes`: the HTTP surface (`/ping`, `/healthz`, `/cacerts`, `/metrics`).
//! - `metrics`: Prometheus counters and latency histograms per route.
//! - The TLS accept loop and certificate generation live in `drover-net`.
//!
//! # Start-up
//! ```text
//! run(args, shutdown)
//!   ├─ bind listener                   fails fast: address in use, nothing written
//!   ├─ Store::open(datastore)          fails fast: scheme, connection, data dir
//!   ├─ tls::load(...)                  CA + serving cert (store or files)
//!   ├─ auth::bootstrap::ensure_admin   first start only
//!   └─ serve until shutdown, drain in-flight requests (bounded), close store
//! ```

pub mod args;
pub mod audit;
mod authn;
mod clusters;
mod controllers;
pub mod downstream;
mod error;
pub mod import;
pub mod kubeconfig;
mod management;
mod metrics;
pub mod namespaces;
pub mod projection;
pub mod proxy;
mod routes;
pub mod sessions;
mod tls;
pub mod tunnels;

use std::future::Future;
use std::sync::Arc;

use drover_auth::bootstrap::{self, Bootstrap};
use drover_store::{Store, StoreOptions};

pub use args::ServerArgs;
pub use error::ServerError;

/// What every request handler can reach.
#[derive(Debug)]
pub struct AppState {
    /// The datastore.
    pub store: Store,
    /// The management API.
    pub api: Arc<drover_apiserver::ApiServer>,
    /// Logins.
    pub login: drover_auth::login::Login,
    /// The audit log.
    pub audit: audit::Audit,
    /// The CA certificate served at `/cacerts` (empty with a public CA).
    pub ca_pem: String,
    /// Request metrics.
    pub metrics: metrics::Metrics,
    /// The management API's authorizer (policy snapshots).
    pub authz: Arc<drover_auth::policy::RbacAuthorizer>,
    /// Checks bearer tokens (cached, kept current from the store's watch).
    pub authn: Arc<drover_auth::authn::Authenticator>,
    /// Connected agents.
    pub tunnels: tunnels::Tunnels,
    /// Long-lived connections, ended when their rights are revoked.
    pub sessions: Arc<sessions::Sessions>,
    /// What import manifests say.
    pub import: import::ImportSettings,
    /// Keep-alive of agent tunnels.
    pub keepalive: drover_tunnel::Keepalive,
    /// Lifetime of kubeconfig tokens.
    pub kubeconfig_ttl: std::time::Duration,
    /// Longest token lifetime (zero: no limit).
    pub token_max_ttl: std::time::Duration,
}

/// Run the server until `shutdown` resolves, then drain and close.
pub async fn run(
    mut args: ServerArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    // Bind first: a taken port fails before anything is written.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: args.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: args.listen,
        source,
    })?;

    if args.listen.port() == 0 {
        // An ephemeral port: URLs given to agents and kubeconfigs name it.
        args.listen.set_port(local.port());
    }

    let datastore = args.datastore_url();
    tracing::info!(datastore = %args::redact_url(&datastore), "opening datastore");
    let store = Store::open(&datastore, StoreOptions::default()).await?;

    let server_url = args.server_url();
    let tls = tls::load(&args, &store, &server_url).await?;

    drover_auth::bootstrap::ensure_builtin_roles(&store).await?;
    let given = std::env::var("DROVER_BOOTSTRAP_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    match bootstrap::ensure_admin(&store, given.as_deref()).await? {
        Bootstrap::Existing => {}
        Bootstrap::CreatedWithGivenPassword => {
            tracing::info!("created user admin with the password from DROVER_BOOTSTRAP_PASSWORD");
        }
        Bootstrap::CreatedWithGeneratedPassword(password) => {
            // Straight to stderr, never through the log pipeline.
            eprintln!(
                "\nDrover created the user \"admin\". Its password, shown only this once:\n\n    {password}\n"
            );
        }
    }

    tracing::info!(%local, url = %server_url, backend = store.backend_name(), "drover server listening");

    let authz = drover_auth::policy::RbacAuthorizer::new(store.clone());
    let _follow = authz.follow();
    let authn = drover_auth::authn::Authenticator::new(store.clone());
    let _authn_follow = authn.follow();
    let _token_expiry = controllers::spawn_token_expiry(store.clone());
    // Watchers further behind than this get 410 and relist, as with etcd.
    let _compaction = store.spawn_compaction(std::time::Duration::from_secs(300), 10_000);
    let url_text = server_url.as_str().trim_end_matches('/').to_owned();
    let api = management::api_server(
        store.clone(),
        authz.clone(),
        args.token_max_ttl(),
        &url_text,
    );
    let login =
        drover_auth::login::Login::new(store.clone(), args.login_ttl(), args.token_max_ttl());
    let audit_path = args
        .audit_log
        .clone()
        .unwrap_or_else(|| args.data_dir.join("audit.log"));
    let audit = audit::Audit::open(
        args.audit_level,
        audit_path.clone(),
        args.audit_log_max_size_mb * 1024 * 1024,
        args.audit_log_max_backups,
    )
    .map_err(|e| ServerError::Audit {
        path: audit_path,
        reason: e.to_string(),
    })?;
    let state = Arc::new(AppState {
        store: store.clone(),
        api,
        login,
        audit,
        import: import::ImportSettings {
            server_url: url_text,
            agent_image: args.agent_image.clone(),
            ca_checksum: import::ca_checksum(&tls.ca_pem),
        },
        ca_pem: tls.ca_pem,
        metrics: metrics::Metrics::new(),
        authz,
        authn,
        tunnels: tunnels::Tunnels::default(),
        sessions: Arc::default(),
        keepalive: drover_tunnel::Keepalive::default(),
        kubeconfig_ttl: std::time::Duration::from_secs(args.kubeconfig_ttl_seconds),
        token_max_ttl: args.token_max_ttl(),
    });
    let _removals = clusters::spawn_removals(state.clone());
    let _revoker = sessions::Sessions::spawn_revoker(state.clone());
    let app = routes::router(state);
    drover_net::serve::serve(listener, tls.config, app, shutdown, args.shutdown_grace()).await;
    store.close().await;
    tracing::info!("drover server stopped");
    Ok(())
}
