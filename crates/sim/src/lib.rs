//! `drover sim`: a simulated downstream Kubernetes cluster that behaves like
//! kube-apiserver wherever Drover relies on it. It stands in for a real
//! cluster in tests, demos and benchmarks, and is a library too, so many
//! simulated clusters can run in one process.
//!
//! # Layout
//! - `kinds`: the built-in kinds (core/v1, apps/v1, batch/v1, rbac/v1,
//!   coordination/v1, discovery.k8s.io/v1, events.k8s.io/v1, networking/v1,
//!   policy/v1, scheduling.k8s.io/v1, storage/v1) over the generic resource
//!   API, with k8s-openapi schemas and kubectl's columns.
//! - [`authz`]: RBAC as kube-apiserver evaluates it (`system:masters`
//!   bypasses it; ClusterRole aggregation).
//! - [`impersonation`]: `Impersonate-*` headers, checked as kube does.
//! - `bootstrap`: default namespaces, bootstrap RBAC, the nodes.
//!
//! # A request
//! ```text
//! HTTPS (own CA) → bearer token (the admin token: group system:masters)
//!   → impersonation (needs the impersonate verb) → ApiServer → store
//! ```
//!
//! - protobuf bodies of the built-in kinds, as kubectl's typed `create`
//!   commands send them, are decoded by `drover_apiserver::typed`.
//! - `defaults`: kube-apiserver's defaulting of the fields users see.
//!
//! - `controllers`: namespace deletion lifecycle, the `default`
//!   ServiceAccount and `kube-root-ca.crt` in every namespace; node Lease
//!   renewals and Ready heartbeats (`--heartbeat-seconds`).
//! - `tokens`: ServiceAccount tokens from TokenRequests
//!   (`kubectl create token`).
//!
//! - `workloads`: Deployments → ReplicaSets → Pods (revisions as kube
//!   numbers them, rollbacks included), the scheduler and kubelets (pods
//!   bound, Running, ended when they run to completion, and restarted as
//!   kubelet does — at once, then after a back-off in `CrashLoopBackOff` —
//!   when a container of a pod that restarts Always reaches `exit`),
//!   garbage
//!   collection by owner; `sets`: StatefulSets (ordered pods, claims) and
//!   DaemonSets (a pod per node); `jobs`: Jobs and CronJobs;
//!   `services`: ClusterIP and NodePort allocation, the `kubernetes`
//!   Service, Endpoints and EndpointSlices.
//! - `disruption`: PodDisruptionBudget status and `pods/eviction` (what
//!   `kubectl drain` uses).
//! - `events`: what the controllers, scheduler and kubelets record, in
//!   `core/v1` and `events.k8s.io/v1`.
//! - [`authz`] also runs ClusterRole aggregation.
//!
//! - `logs`: generated pod logs, with `-f`; a command's output for pods
//!   that run one to its end, and `--previous` after a restart.
//!
//! - `admission`: LimitRange defaults, ResourceQuota (with `status.used`)
//!   and Pod Security admission, whose checks (`pod_security`) follow
//!   k8s.io/pod-security-admission.
//! - `reviews`: SubjectAccessReview and TokenReview.
//!
//! - `audit`: `--audit-log`, kube-apiserver's audit events (level
//!   Metadata) as JSON lines.
//!
//! - `exec`: `pods/exec` over WebSocket (`v5.channel.k8s.io`), running
//!   commands in a simulated container (`container`): a small userland,
//!   kube's exit codes, an interactive shell with a tty.
//!
//! - `portforward`: `pods/portforward` over SPDY, SPDY in a WebSocket and
//!   the WebSocket channel protocol, to a small HTTP responder behind each
//!   declared containerPort.
//!
//! Not yet simulated: CustomResourceDefinitions, kinds in several versions,
//! and traffic to Services (they have addresses, but nothing answers on
//! them).

mod admission;
mod audit;
pub mod authz;
mod bootstrap;
mod container;
mod controllers;
mod defaults;
mod disruption;
mod events;
mod exec;
mod health;
pub mod impersonation;
mod jobs;
mod kinds;
mod logs;
mod pod_security;
mod portforward;
mod reviews;
mod services;
mod sets;
mod tokens;
mod workloads;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use base64::Engine;
use drover_apiserver::{ApiError, ApiServer, Namespaces, Registry};
use drover_net::pki;
use drover_rbac::UserInfo;
use drover_store::{Store, StoreOptions};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use crate::authz::SimAuthorizer;

/// The Kubernetes version simulated by default.
pub const DEFAULT_K8S_VERSION: &str = "v1.31.4";
/// The name of the admin user in the admin kubeconfig.
pub const ADMIN_USER: &str = "kubernetes-admin";

/// `drover sim` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to serve HTTPS on (port 0: any free port).
    #[arg(long, env = "DROVER_SIM_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The cluster's name (also the prefix of its node names).
    #[arg(long, env = "DROVER_SIM_NAME", default_value = "sim")]
    pub name: String,
    /// How many Ready nodes to simulate.
    #[arg(long, env = "DROVER_SIM_NODES", default_value_t = 3)]
    pub nodes: usize,
    /// The Kubernetes version to report.
    #[arg(long, env = "DROVER_SIM_K8S_VERSION", default_value = DEFAULT_K8S_VERSION)]
    pub k8s_version: String,
    /// Write an admin kubeconfig for the simulated cluster here.
    #[arg(long, env = "DROVER_SIM_KUBECONFIG_OUT")]
    pub kubeconfig_out: Option<PathBuf>,
    /// Keep the cluster's state here (default: a temp dir, removed on exit).
    #[arg(long, env = "DROVER_SIM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seconds between node heartbeats (Lease renewals and Ready
    /// heartbeats), as a kubelet's 10 s.
    #[arg(long, env = "DROVER_SIM_HEARTBEAT", default_value_t = 10)]
    pub heartbeat_seconds: u64,
    /// Make nodes go NotReady and back, one per heartbeat in turn (for
    /// status and alerting tests).
    #[arg(long, env = "DROVER_SIM_NODE_FLAP")]
    pub node_flap: bool,
    /// Write an audit event (`audit.k8s.io/v1`, level Metadata) for every
    /// API request to this file, as kube-apiserver's `--audit-log-path`.
    #[arg(long, env = "DROVER_SIM_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
}

/// Why a simulated cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] drover_store::StoreError),
    /// The temp dir could not be made.
    #[error("cannot create a data directory: {0}")]
    DataDir(#[source] std::io::Error),
    /// The address is taken.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Certificates could not be made.
    #[error("cannot make the simulated cluster's certificates: {0}")]
    Certificates(String),
    /// The ServiceAccount signing key could not be loaded or made.
    #[error("cannot set up the ServiceAccount token signer: {0}")]
    Signer(String),
    /// The audit log could not be opened.
    #[error("cannot open the audit log {path}: {source}")]
    AuditLog {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig could not be written.
    #[error("cannot write the kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A running simulated cluster. Dropping it stops it.
#[derive(Debug)]
pub struct Sim {
    /// Its name.
    pub name: String,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The address it serves on.
    pub addr: SocketAddr,
    /// Its CA (PEM).
    pub ca_pem: String,
    /// A bearer token in group `system:masters`.
    pub admin_token: String,
    /// Its store.
    pub store: Store,
    stop: Option<oneshot::Sender<()>>,
    /// Ends upgraded (exec) sessions, which the HTTP shutdown does not reach.
    stopping: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    controllers: Vec<tokio::task::JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

pub(crate) struct SimState {
    api: Arc<ApiServer>,
    store: Store,
    signer: Arc<tokens::Signer>,
    url: String,
    metrics: health::Metrics,
    admin_token: String,
    version: Value,
    stopping: exec::Stopping,
}

impl Sim {
    /// Start a simulated cluster.
    pub async fn start(args: &SimArgs) -> Result<Sim, SimError> {
        let (dir, tmp) = match &args.data_dir {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("drover-sim-")
                    .tempdir()
                    .map_err(SimError::DataDir)?;
                (t.path().to_owned(), Some(t))
            }
        };
        let store = Store::open(
            &format!("sqlite://{}/state.db", dir.display()),
            StoreOptions {
                // A sim is small, and a benchmark runs a thousand of them
                // on a machine they keep busy: wait for a connection
                // rather than fail.
                max_connections: 2,
                connect_timeout: std::time::Duration::from_secs(60),
                // The sim is its store's only writer, and its own writes
                // wake its watches at once.
                poll_interval: Some(std::time::Duration::from_secs(30)),
            },
        )
        .await?;
        bootstrap::ensure_cluster(&store, &args.name, args.nodes, &args.k8s_version).await?;
        let node_names: Vec<String> = (0..args.nodes)
            .map(|i| format!("{}-node-{i}", args.name))
            .collect();
        controllers::ensure_leases(&store, &node_names).await?;
        authz::aggregate_now(&store).await?;

        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: args.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: args.listen,
            source,
        })?;
        let ca = pki::generate_ca(3650).map_err(|e| SimError::Certificates(e.to_string()))?;
        bootstrap::ensure_services(&store, addr.port()).await?;
        let names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
            addr.ip().to_string(),
        ];
        let serving = pki::generate_serving(&ca, &names, 3650)
            .map_err(|e| SimError::Certificates(e.to_string()))?;
        let mut chain = pki::parse_certs(&serving.cert_pem).map_err(SimError::Certificates)?;
        chain.extend(pki::parse_certs(&ca.cert_pem).map_err(SimError::Certificates)?);
        let tls = pki::server_config(
            chain,
            pki::parse_key(&serving.key_pem).map_err(SimError::Certificates)?,
        )
        .map_err(SimError::Certificates)?;

        let signer = Arc::new(
            tokens::Signer::load_or_create(&store)
                .await
                .map_err(|e| SimError::Signer(e.to_string()))?,
        );
        let authz = SimAuthorizer::new(store.clone());
        let authz_follow = authz.follow();
        let mut registry = Registry::default();
        kinds::register(&mut registry, &authz, &signer);
        drover_apiserver::reviews::register(&mut registry);
        let state_cell: Arc<std::sync::OnceLock<std::sync::Weak<SimState>>> =
            Arc::new(std::sync::OnceLock::new());
        reviews::register(&mut registry, state_cell.clone());
        let api = ApiServer::with_garbage_collector(
            store.clone(),
            registry,
            authz,
            Arc::new(SimNamespaces {
                store: store.clone(),
            }),
        );
        let admin_token = drover_core::names::random_suffix(48);
        let controllers = vec![
            controllers::spawn_namespace_lifecycle(store.clone(), api.clone(), ca.cert_pem.clone()),
            events::spawn_sweep(store.clone()),
            authz::spawn_aggregation(store.clone()),
            workloads::spawn(store.clone()),
            store.spawn_compaction(std::time::Duration::from_secs(60), 2_000),
            authz_follow,
            controllers::spawn_heartbeats(
                store.clone(),
                std::time::Duration::from_secs(args.heartbeat_seconds.max(1)),
                args.node_flap,
            ),
        ];
        let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
        let url = match addr {
            SocketAddr::V6(a) => format!("https://[{}]:{}", a.ip(), a.port()),
            SocketAddr::V4(a) => format!("https://{a}"),
        };
        let state = Arc::new(SimState {
            api,
            store: store.clone(),
            signer,
            url: url.clone(),
            metrics: health::Metrics::default(),
            admin_token: admin_token.clone(),
            version: version_info(&args.k8s_version),
            stopping: exec::Stopping(stopping_rx),
        });
        let _ = state_cell.set(Arc::downgrade(&state));
        let audit = match &args.audit_log {
            Some(path) => {
                Some(
                    audit::AuditLog::open(path).map_err(|source| SimError::AuditLog {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let app = router(state, audit);
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(drover_net::serve::serve(
            listener,
            tls,
            app,
            shutdown,
            std::time::Duration::from_secs(5),
        ));
        let sim = Sim {
            name: args.name.clone(),
            url,
            addr,
            ca_pem: ca.cert_pem,
            admin_token,
            store,
            stop: Some(stop),
            stopping,
            task: Some(task),
            controllers,
            _tmp: tmp,
        };
        if let Some(path) = &args.kubeconfig_out {
            write_private(path, &sim.kubeconfig()).map_err(|source| SimError::Kubeconfig {
                path: path.clone(),
                source,
            })?;
        }
        Ok(sim)
    }

    /// An admin kubeconfig (CA inline, bearer token).
    pub fn kubeconfig(&self) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {n}\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: {ADMIN_USER}\n  user:\n    token: {t}\ncontexts:\n- name: {n}\n  context:\n    cluster: {n}\n    user: {ADMIN_USER}\ncurrent-context: {n}\n",
            n = self.name,
            url = self.url,
            t = self.admin_token
        )
    }

    /// Abort the controllers, end exec sessions and stop accepting.
    fn signal_stop(&mut self) {
        for c in self.controllers.drain(..) {
            c.abort();
        }
        self.stopping.send_replace(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stop serving and close the store.
    pub async fn stop(mut self) {
        self.signal_stop();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.store.close().await;
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// Write a file only its owner may read.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// `/version` for a version like `v1.31.4`.
fn version_info(version: &str) -> Value {
    let mut parts = version.trim_start_matches('v').split('.');
    let major = parts.next().unwrap_or("1");
    let minor = parts.next().unwrap_or("0");
    json!({
        "major": major, "minor": minor, "gitVersion": version,
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2024-12-10T11:43:21Z", "goVersion": "go1.22.9", "compiler": "gc", "platform": "linux/amd64",
    })
}

fn router(state: Arc<SimState>, audit: Option<Arc<audit::AuditLog>>) -> Router {
    let api = {
        let state = state.clone();
        move |req: Request| {
            let api = state.api.clone();
            async move { api.handle(req).await }
        }
    };
    let authenticated = Router::new()
        .route("/api", any(api.clone()))
        .route("/api/", any(api.clone()))
        .route("/api/{*rest}", any(api.clone()))
        .route("/apis", any(api.clone()))
        .route("/apis/", any(api.clone()))
        .route("/apis/{*rest}", any(api.clone()))
        .route("/openapi/{*rest}", any(api))
        // ServiceAccount issuer discovery, for verifying tokens offline.
        .route(
            "/.well-known/openid-configuration",
            get({
                let url = state.url.clone();
                move || async move { Json(tokens::Signer::discovery(&url)) }
            }),
        )
        .route(
            "/openid/v1/jwks",
            get({
                let state = state.clone();
                move || async move { Json(state.signer.jwks()) }
            }),
        );
    let mut authenticated = authenticated
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            health::count,
        ))
        .route("/metrics", get(health::metrics).with_state(state.clone()));
    if let Some(log) = audit {
        // Inside authentication: the event names who asked.
        authenticated =
            authenticated.route_layer(axum::middleware::from_fn_with_state(log, audit::record));
    }
    let authenticated = authenticated.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        authenticate,
    ));
    let version = state.version.clone();
    Router::new()
        .merge(authenticated)
        .route(
            "/version",
            get({
                let version = version.clone();
                move || async move { Json(version) }
            }),
        )
        .route("/version/", get(move || async move { Json(version) }))
        .route("/healthz", get(health::endpoint).with_state(state.clone()))
        .route("/livez", get(health::endpoint).with_state(state.clone()))
        .route("/readyz", get(health::endpoint).with_state(state.clone()))
        .route(
            "/healthz/{*check}",
            get(health::single).with_state(state.clone()),
        )
        .route(
            "/livez/{*check}",
            get(health::single).with_state(state.clone()),
        )
        .route(
            "/readyz/{*check}",
            get(health::single).with_state(state.clone()),
        )
        .fallback(|| async { ApiError::no_such_path().into_response() })
        .layer(axum::extract::DefaultBodyLimit::max(
            drover_apiserver::MAX_BODY,
        ))
}

/// Who a bearer token stands for: the admin (group `system:masters`) or a
/// ServiceAccount.
pub(crate) async fn identify(state: &SimState, token: &str) -> Option<UserInfo> {
    if is_admin_token(state, token) {
        return Some(UserInfo {
            name: ADMIN_USER.to_owned(),
            uid: String::new(),
            groups: vec![authz::MASTERS.to_owned(), "system:authenticated".to_owned()],
            extra: Default::default(),
        });
    }
    tokens::authenticate(&state.store, &state.signer, token, None)
        .await
        .map(|(user, _)| user)
}

/// Whether `token` is the admin's (compared in constant time).
pub(crate) fn is_admin_token(state: &SimState, token: &str) -> bool {
    token.as_bytes().ct_eq(state.admin_token.as_bytes()).into()
}

/// Bearer authentication, then impersonation.
async fn authenticate(
    State(state): State<Arc<SimState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim();
    let Some(caller) = identify(&state, bearer).await else {
        return ApiError::unauthorized().into_response();
    };
    req.extensions_mut()
        .insert(audit::Authenticated(caller.clone()));
    let user = match impersonation::resolve(state.api.authorizer().as_ref(), caller, req.headers())
        .await
    {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(user);
    req.extensions_mut().insert(state.stopping.clone());
    next.run(req).await
}

/// Whether a namespace takes new content: not being deleted.
pub(crate) fn accepts_content(ns: &Value) -> bool {
    !drover_apiserver::object::is_deleting(ns)
        && ns.pointer("/status/phase").and_then(Value::as_str) != Some("Terminating")
}

/// Namespaces are objects here; a terminating one takes no new content.
struct SimNamespaces {
    store: Store,
}

impl Namespaces for SimNamespaces {
    fn check<'a>(&'a self, ns: &'a str) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let kv = self
                .store
                .get(&drover_core::keys::object("", "namespaces", None, ns))
                .await
                .map_err(|_| ApiError::unavailable("the datastore is unavailable"))?;
            let Some(kv) = kv else {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("namespaces {ns:?} not found"),
                ));
            };
            let obj: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            if !accepts_content(&obj) {
                return Err(ApiError::forbidden_because(format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                )));
            }
            Ok(())
        })
    }
}
