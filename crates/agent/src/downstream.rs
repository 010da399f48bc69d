//! The agent's way into its cluster's API server: the address, the CA and a
//! bearer token, from a kubeconfig (`--kubeconfig`) or from the pod's
//! service account (in-cluster). A projected service-account token rotates,
//! so a token file is re-read every minute.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use base64::Engine as _;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::AgentError;

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const TOKEN_REREAD: Duration = Duration::from_secs(60);

/// Where the bearer token comes from.
#[derive(Debug)]
enum Token {
    Fixed(String),
    File {
        path: PathBuf,
        cached: Mutex<(Instant, String)>,
    },
}

/// The cluster's API server, as the agent reaches it.
pub struct Downstream {
    /// `https://host:port`, no trailing slash.
    pub base: String,
    token: Token,
    /// A pooled client, HTTP/2 when the API server offers it: every
    /// request and watch of the tunnel shares one connection.
    pub client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
    /// An HTTP/1.1 client for upgrades (exec, attach, port-forward), as
    /// client-go keeps one.
    pub upgrades: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
}

impl std::fmt::Debug for Downstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downstream")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, AgentError> {
    std::fs::read_to_string(path)
        .map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))
}

impl Downstream {
    /// From a kubeconfig file, or in-cluster when `None`.
    pub fn load(kubeconfig: Option<&Path>) -> Result<Arc<Self>, AgentError> {
        match kubeconfig {
            Some(path) => Self::from_kubeconfig(path),
            None => Self::in_cluster(),
        }
    }

    fn in_cluster() -> Result<Arc<Self>, AgentError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
            AgentError::Config(
                "not running in a cluster (KUBERNETES_SERVICE_HOST is unset); pass --kubeconfig"
                    .into(),
            )
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let ca = read(&Path::new(SA_DIR).join("ca.crt"))?;
        let token_path = Path::new(SA_DIR).join("token");
        let token = read(&token_path)?.trim().to_owned();
        Self::build(
            format!("https://{host}:{port}"),
            Some(&ca),
            false,
            Token::File {
                path: token_path,
                cached: Mutex::new((Instant::now(), token)),
            },
        )
    }

    fn from_kubeconfig(path: &Path) -> Result<Arc<Self>, AgentError> {
        let bad = |why: &str| AgentError::Config(format!("kubeconfig {}: {why}", path.display()));
        let doc: Value = yaml_serde::from_str(&read(path)?).map_err(|e| bad(&e.to_string()))?;
        let named = |list: &str, name: &str| -> Option<Value> {
            doc[list]
                .as_array()?
                .iter()
                .find(|e| e["name"] == name)
                .cloned()
        };
        let context_name = doc["current-context"].as_str().unwrap_or_default();
        let context = named("contexts", context_name)
            .or_else(|| doc["contexts"].get(0).cloned())
            .ok_or_else(|| bad("no context"))?;
        let cluster = named(
            "clusters",
            context["context"]["cluster"].as_str().unwrap_or_default(),
        )
        .ok_or_else(|| bad("the context's cluster is missing"))?;
        let user = named(
            "users",
            context["context"]["user"].as_str().unwrap_or_default(),
        )
        .ok_or_else(|| bad("the context's user is missing"))?;
        let server = cluster["cluster"]["server"]
            .as_str()
            .ok_or_else(|| bad("the cluster has no server"))?
            .trim_end_matches('/')
            .to_owned();
        if !server.starts_with("https://") {
            return Err(bad("the server must be https://"));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let ca = match (
            cluster["cluster"]["certificate-authority-data"].as_str(),
            cluster["cluster"]["certificate-authority"].as_str(),
        ) {
            (Some(data), _) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| bad("certificate-authority-data is not base64 PEM"))?,
            ),
            (None, Some(file)) => Some(read(&dir.join(file))?),
            (None, None) => None,
        };
        let insecure = cluster["cluster"]["insecure-skip-tls-verify"] == true;
        let token = match (
            user["user"]["token"].as_str(),
            user["user"]["tokenFile"].as_str(),
        ) {
            (Some(t), _) => Token::Fixed(t.to_owned()),
            (None, Some(file)) => {
                let path = dir.join(file);
                let t = read(&path)?.trim().to_owned();
                Token::File {
                    path,
                    cached: Mutex::new((Instant::now(), t)),
                }
            }
            _ => {
                return Err(bad(
                    "the user has no token (the agent authenticates with a bearer token)",
                ))
            }
        };
        Self::build(server, ca.as_deref(), insecure, token)
    }

    fn build(
        base: String,
        ca_pem: Option<&str>,
        insecure: bool,
        token: Token,
    ) -> Result<Arc<Self>, AgentError> {
        let mut config =
            drover_net::client::client_config(ca_pem, insecure).map_err(AgentError::Config)?;
        // hyper-rustls sets ALPN itself, from what is enabled below.
        config.alpn_protocols.clear();
        let h2 = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config.clone())
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp_connector());
        let h1 = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .wrap_connector(tcp_connector());
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(8)
            .build(h2);
        let upgrades = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(h1);
        Ok(Arc::new(Self {
            base,
            token,
            client,
            upgrades,
        }))
    }

    /// The bearer token to send now.
    pub fn token(&self) -> String {
        match &self.token {
            Token::Fixed(t) => t.clone(),
            Token::File { path, cached } => {
                let mut c = cached.lock().unwrap_or_else(|e| e.into_inner());
                if c.0.elapsed() > TOKEN_REREAD {
                    if let Ok(t) = std::fs::read_to_string(path) {
                        c.1 = t.trim().to_owned();
                    }
                    c.0 = Instant::now();
                }
                c.1.clone()
            }
        }
    }
}

/// TCP connections to the API server, without Nagle's algorithm: small
/// requests and frames go out at once instead of waiting up to 40 ms for the
/// previous segment's acknowledgement.
fn tcp_connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http
}
