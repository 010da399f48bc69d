//! The Drover management server (`drover server`).
//!
//! # Layout
//! ```text
//!   http/        the edge: routes, authentication, audit, metrics, the proxy,
//!                agents' connections, kubeconfigs, open sessions (revocation)
//!   kinds/       Drover's kinds in the management API: strategies, import,
//!                namespace records
//!   link/        how to reach a cluster: this replica's agent links, their
//!                records in the store, the peer connection, the Dialer
//!   controller/  the runtime (reconcile → action, backoff), ownership leases,
//!                the cluster and leader controllers
//!   replicas     who is there: each replica's record, renewed
//! ```
//! Dependencies point down: `http` → `controller` → `link` → `replicas`;
//! `kinds` is used by all and uses none of them.
//!
//! - [`args`]: the flags of `drover server`, each also read from `DROVER_*`.
//! - [`tls`]: the server's TLS identity — a generated CA and serving
//!   certificate kept in the datastore (renewed, rotated), the operator's
//!   files, an ACME CA's certificate, or none behind a TLS-terminating
//!   balancer — swapped while serving when it changes.
//!
//! # Start-up and shutdown
//! ```text
//! run(args, shutdown)
//!   ├─ bind listeners (API, peer)      fails fast: address in use, nothing written
//!   ├─ Store::open(datastore)          fails fast: scheme, connection, data dir
//!   ├─ Tls::load(...)                  CA + serving cert (store, files, ACME)
//!   ├─ auth::bootstrap::ensure_admin   first start only
//!   ├─ Registry::join                  this replica's record, renewed
//!   ├─ peer listener, Links, Dialer    reach any cluster from here
//!   ├─ Ownership                       leases: cluster controllers, leader
//!   └─ serve until shutdown, then drain:
//!        /healthz 503, leases handed over, wait --drain-delay-seconds,
//!        agents told to reconnect elsewhere, streams ended,
//!        in-flight requests finished (bounded), record removed, store closed
//! ```

pub mod args;
pub mod controller;
mod error;
pub mod http;
pub mod kinds;
pub mod link;
pub mod notify;
pub mod replicas;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use drover_auth::bootstrap::{self, Bootstrap};
use drover_store::{Store, StoreOptions};
use tokio_util::sync::CancellationToken;

pub use args::ServerArgs;
pub use error::ServerError;
pub use http::AppState;

/// Run the server until `shutdown` resolves, then drain and close.
pub async fn run(
    mut args: ServerArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    args.check().map_err(ServerError::Flags)?;
    // Bind first: a taken port fails before anything is written.
    let bind = |addr: std::net::SocketAddr| async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok::<_, ServerError>((listener, local))
    };
    let (listener, local) = bind(args.listen).await?;
    let (peer_listener, peer_local) = bind(args.peer_listen()).await?;
    let acme_listener = if args.acme_domain.is_empty() {
        None
    } else {
        Some(bind(args.acme_http_listen).await?.0)
    };
    if args.listen.port() == 0 {
        // An ephemeral port: URLs given to agents and kubeconfigs name it.
        args.listen.set_port(local.port());
    }

    // Every TLS file read and checked before the datastore is touched.
    let tls_files = tls::preflight(&args)?;
    let datastore = args.datastore_url();
    tracing::info!(datastore = %args::redact_url(&datastore), "opening datastore");
    let store = Store::open(&datastore, StoreOptions::default()).await?;

    let server_url = args.server_url();
    let tls = tls::Tls::load(tls_files, &args, &store, &server_url).await?;
    let server_tls = tls.server_config()?;

    drover_auth::bootstrap::ensure_builtin_roles(&store).await?;
    kinds::pod_security::ensure_builtins(&store).await?;
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

    // This replica among the others, and the way to every cluster.
    let stop = CancellationToken::new();
    let replica = replicas::new_id();
    let advertise = args.advertise_host(peer_local);
    let peer_url = format!("https://{advertise}:{}", peer_local.port());
    let loopback = advertise
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    if loopback && store.backend_name() == "postgres" {
        tracing::warn!(%peer_url, "other replicas can reach this one only from this host; set --advertise-address");
    }
    let peer_tls = link::peer::PeerTls::load(
        &store,
        &replica,
        advertise.trim_start_matches('[').trim_end_matches(']'),
    )
    .await?;
    let registry = replicas::Registry::join(&store, replica.clone(), peer_url.clone()).await?;
    let _renewal = registry.spawn(stop.clone());
    let _certificates = tls.spawn(stop.clone());
    let acme_server = acme_listener.map(|listener| {
        tokio::spawn(drover_net::serve::serve_plain(
            listener,
            tls::acme::challenge_router(store.clone()),
            stop.clone().cancelled_owned(),
            std::time::Duration::from_secs(1),
        ))
    });
    let links = link::Links::new(&store, replica.clone());
    let _record_sweep = links.spawn_record_sweep(stop.clone());
    let peer_server = tokio::spawn(drover_net::serve::serve(
        peer_listener,
        peer_tls.server.clone(),
        link::peer::router(links.clone()),
        stop.clone().cancelled_owned(),
        std::time::Duration::from_secs(1),
    ));
    let dialer = link::Dialer::new(
        links.clone(),
        registry.clone(),
        link::peer::Peers::new(peer_tls.client),
    );

    tracing::info!(%local, url = %server_url, %replica, peer = %peer_url, backend = store.backend_name(), "drover server listening");

    let authz = drover_auth::policy::RbacAuthorizer::new(store.clone());
    let _follow = authz.follow();
    let authn = drover_auth::authn::Authenticator::new(store.clone());
    let _authn_follow = authn.follow();
    let backups = Arc::new(backup_config(&args)?);
    let providers =
        drover_auth::providers::Providers::new(store.clone(), args.allow_private_outbound);
    let notify_counters = notify::Counters::default();
    let sender = Arc::new(notify::Sender::new(
        args.allow_private_outbound,
        notify_counters.clone(),
    ));
    let url_text = server_url.as_str().trim_end_matches('/').to_owned();
    let alerts = Arc::new(controller::alerts::Alerts::new(
        controller::alerts::view::Fleet::spawn(&store),
        sender.clone(),
        {
            let tls = tls.clone();
            Arc::new(move || {
                tls.certificates()
                    .into_iter()
                    .map(|c| (c.name.to_owned(), c.not_after))
                    .collect()
            })
        },
        format!("{url_text}/dashboard"),
    ));
    let ownership = controller::lease::Ownership::new(
        controller::Ctx {
            store: store.clone(),
            authz: authz.clone(),
            dialer: dialer.clone(),
            registry: registry.clone(),
            backups: backups.clone(),
            providers: providers.clone(),
            group_refresh: std::time::Duration::from_secs(args.group_refresh_seconds),
            project_inputs: controller::projects::InputChanges::start(store.clone(), stop.clone()),
            alerts: alerts.clone(),
        },
        controller::cluster_controllers(),
        Arc::new(controller::leader::start),
    );
    let ownership_task = ownership.spawn(stop.clone());
    let api = kinds::api_server(
        store.clone(),
        authz.clone(),
        args.token_max_ttl(),
        &url_text,
        kinds::backups::Backups {
            default_location: default_backup_location(&args.data_dir),
            has_key: backups.key.is_some(),
        },
        kinds::alerts::Notifiers {
            sender,
            allow_private: args.allow_private_outbound,
        },
    );
    let login = drover_auth::login::Login::new(
        store.clone(),
        providers.clone(),
        args.login_ttl(),
        args.token_max_ttl(),
    );
    let audit_path = args
        .audit_log
        .clone()
        .unwrap_or_else(|| args.data_dir.join("audit.log"));
    let audit = http::audit::Audit::open(
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
        import: kinds::registration::ImportSettings {
            server_url: url_text,
            agent_image: args.agent_image.clone(),
        },
        tls: tls.clone(),
        trusted_proxies: args.trusted_proxies.clone(),
        metrics: http::metrics::Metrics::new(&notify_counters),
        alerts,
        authz,
        authn,
        links: links.clone(),
        dialer,
        registry: registry.clone(),
        ownership: ownership.clone(),
        sessions: Arc::default(),
        keepalive: drover_tunnel::Keepalive::default(),
        kubeconfig_ttl: std::time::Duration::from_secs(args.kubeconfig_ttl_seconds),
        token_max_ttl: args.token_max_ttl(),
        providers,
    });
    let _revoker = http::sessions::Sessions::spawn_revoker(state.clone());
    let app = http::router(state.clone());

    // Drain on shutdown: stop taking new work while still answering, so
    // that the balancer and the agents move elsewhere without a failure.
    let (serving_ends, stop_serving) = tokio::sync::oneshot::channel::<()>();
    let drain = {
        let state = state.clone();
        let drain_delay = args.drain_delay();
        async move {
            shutdown.await;
            tracing::info!("draining: /healthz answers 503 from now on");
            // Bounded: a datastore that does not answer must not hold up
            // the shutdown (the leases then lapse with this replica).
            let bound = std::time::Duration::from_secs(5);
            let _ = tokio::time::timeout(bound, state.registry.drain()).await;
            let _ = tokio::time::timeout(2 * bound, state.ownership.release_all()).await;
            // Only when other replicas can take the traffic is there a
            // balancer worth waiting for.
            let me = state.registry.id();
            if state.registry.members().serving.iter().any(|r| *r != me) {
                tokio::time::sleep(drain_delay).await;
            }
            // Agents reconnect, through the balancer, to another replica;
            // streams end cleanly and their clients reconnect there too.
            state.links.close_all();
            state.sessions.end_all();
            let _ = serving_ends.send(());
        }
    };
    tokio::spawn(drain);
    let serving_stops = async move {
        let _ = stop_serving.await;
    };
    match server_tls {
        Some(config) => {
            drover_net::serve::serve(listener, config, app, serving_stops, args.shutdown_grace())
                .await
        }
        None => {
            drover_net::serve::serve_plain(listener, app, serving_stops, args.shutdown_grace())
                .await
        }
    }
    // Every controller is told to stop, and the assignment loop waited for
    // (bounded), before this replica's record goes (the others take its
    // leases at once then).
    ownership.cancel_all();
    stop.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), ownership_task).await;
    let _ = peer_server.await;
    if let Some(task) = acme_server {
        let _ = task.await;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), registry.leave()).await;
    store.close().await;
    tracing::info!("drover server stopped");
    Ok(())
}

/// Where a Backup without a location writes: `file://DATA_DIR/backups`.
fn default_backup_location(data_dir: &std::path::Path) -> String {
    let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    format!("file://{}", dir.join("backups").display())
}

/// The backup settings: the key read now (a bad key file stops the start),
/// the log archive checked, files staged in `DATA_DIR/backup-staging`.
fn backup_config(args: &ServerArgs) -> Result<controller::backups::BackupConfig, ServerError> {
    let key = args
        .backup_encryption_key_file
        .as_deref()
        .map(drover_backup::Key::from_file)
        .transpose()?;
    if let Some(url) = &args.backup_log_archive {
        drover_backup::Location::open(url)?;
    }
    Ok(controller::backups::BackupConfig {
        key,
        log_archive: args.backup_log_archive.clone(),
        log_retention: std::time::Duration::from_secs(args.backup_log_retention_days * 86_400),
        scratch: args.data_dir.join("backup-staging"),
    })
}
