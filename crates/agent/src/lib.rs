//! `drover agent`: keeps the tunnel to the Drover server up and forwards
//! each stream the server opens to the cluster's API server with the agent's
//! own credentials.
//!
//! # Connecting
//! 1. Fetch `{server}/cacerts` and compare the SHA-256 of the PEM with
//!    `--ca-checksum`; refuse to go on if they differ. (With an empty
//!    checksum the server must have a publicly trusted certificate.)
//! 2. Dial `wss://…/v1-public/connect` trusting only that CA, with the
//!    registration token as bearer.
//! 3. Run yamux (as its server side) over the WebSocket; serve HTTP/1.1 on
//!    each inbound stream ([`forward`]).
//!
//! After any failure — server restart, network cut, server replaced — it
//! dials again with jittered exponential backoff from 250 ms, capped at
//! 30 s: behind a load balancer, the next replica is tried at once.
//!
//! - [`downstream`]: the cluster's API server address and credentials.
//! - [`forward`]: one proxied request, upgrades included.

pub mod downstream;
pub mod forward;
pub mod trust;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use drover_tunnel::{mux, Keepalive, Mode, WsIo};

pub use downstream::Downstream;
pub use trust::Trust;

/// `drover agent` flags.
#[derive(Clone, clap::Args)]
pub struct AgentArgs {
    /// The Drover server's URL (https://…).
    #[arg(long, env = "DROVER_SERVER")]
    pub server: url::Url,
    /// The cluster's registration token.
    #[arg(long, env = "DROVER_TOKEN", hide_env_values = true)]
    pub token: String,
    /// SHA-256 (hex) of the server's CA PEM at /cacerts; several,
    /// comma-separated, are all trusted. Empty: the server's certificate
    /// must chain to a publicly trusted CA.
    #[arg(long, env = "DROVER_CA_CHECKSUM", default_value = "")]
    pub ca_checksum: String,
    /// The Secret (`namespace/name`) whose `ca-checksum` the agent rewrites
    /// when the server rotates its CA, so that a restart keeps the trust.
    #[arg(long, env = "DROVER_TRUST_SECRET")]
    pub trust_secret: Option<String>,
    /// Reach the cluster with this kubeconfig instead of the pod's service
    /// account.
    #[arg(long, env = "DROVER_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

impl std::fmt::Debug for AgentArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentArgs")
            .field("server", &self.server.as_str())
            .field("token", &"[REDACTED]")
            .field("ca_checksum", &self.ca_checksum)
            .field("kubeconfig", &self.kubeconfig)
            .field("trust_secret", &self.trust_secret)
            .finish()
    }
}

/// What stops the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Bad flags or credentials.
    #[error("{0}")]
    Config(String),
    /// The server's CA is not the one the checksum names.
    #[error("the server's CA certificate has SHA-256 {actual}, but --ca-checksum is {expected}; refusing to connect (is this the right server, or was its CA rotated while this agent was away? Then apply the cluster's import manifest again, or set DROVER_CA_CHECKSUM to the checksum on the server's settings page)")]
    CaMismatch {
        /// What `--ca-checksum` says.
        expected: String,
        /// What the server served.
        actual: String,
    },
    /// The server could not be reached or refused the agent.
    #[error("{0}")]
    Connect(String),
}

/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Time to open a connection to the server (TCP, then TLS), and for its
/// answer to the upgrade: past it, the next attempt goes (behind a load
/// balancer, maybe to another replica).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The wait before attempt `n` (0-based): exponential from 250 ms, capped,
/// with the upper half jittered so a fleet of agents does not dial in step.
pub fn backoff(n: u32) -> Duration {
    let base = Duration::from_millis(250)
        .saturating_mul(1u32 << n.min(7))
        .min(MAX_BACKOFF);
    let half = base / 2;
    half + half.mul_f64(rand::thread_rng().gen_range(0.0..=1.0))
}

/// Run until `shutdown` resolves. Fails at once on bad configuration or a
/// CA that does not match the checksum on the first contact.
pub async fn run(
    args: AgentArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    if args.server.scheme() != "https" || args.server.host_str().is_none() {
        return Err(AgentError::Config(format!(
            "--server must be an https:// URL with a host, not {:?}",
            args.server.as_str()
        )));
    }
    if args.token.is_empty() {
        return Err(AgentError::Config("--token is empty".into()));
    }
    let trust =
        Trust::new(&args.ca_checksum, args.trust_secret.as_deref()).map_err(AgentError::Config)?;
    let downstream = Downstream::load(args.kubeconfig.as_deref())?;
    tracing::info!(server = %args.server, cluster_api = %downstream.base, "drover agent starting");
    tokio::pin!(shutdown);
    let mut failures = 0u32;
    let mut verified_once = false;
    loop {
        let attempt = session(&args, &trust, &downstream, &mut verified_once);
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            result = attempt => match result {
                Ok(()) => {
                    tracing::warn!("the tunnel closed; reconnecting");
                    failures = 0;
                }
                Err(e @ AgentError::CaMismatch { .. }) if !verified_once => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot connect to the Drover server");
                }
            },
        }
        let wait = backoff(failures);
        failures = failures.saturating_add(1);
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn host_port(url: &url::Url) -> (String, u16) {
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    (host, url.port_or_known_default().unwrap_or(443))
}

async fn tls_connect(
    url: &url::Url,
    config: rustls::ClientConfig,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, AgentError> {
    let (host, port) = host_port(url);
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| AgentError::Connect(format!("{url}: connection timed out")))?
        .map_err(|e| AgentError::Connect(format!("{url}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| AgentError::Config(format!("{host:?} is not a valid server name")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| AgentError::Connect(format!("{url}: TLS handshake timed out")))?
        .map_err(|e| AgentError::Connect(format!("{url}: TLS: {e}")))
}

fn tls_config(ca_pem: Option<&str>, insecure: bool) -> Result<rustls::ClientConfig, AgentError> {
    drover_net::client::client_config(ca_pem, insecure).map_err(AgentError::Config)
}

/// Fetch `/cacerts` without trusting the server yet.
async fn fetch_ca(server: &url::Url) -> Result<String, AgentError> {
    let io = tls_connect(server, tls_config(None, true)?).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| AgentError::Connect(format!("{server}: {e}")))?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/cacerts")
        .header("host", server.host_str().unwrap_or_default())
        .body(axum::body::Body::empty())
        .expect("a static request");
    let resp = tokio::time::timeout(CONNECT_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| AgentError::Connect(format!("{server}cacerts: no answer")))?
        .map_err(|e| AgentError::Connect(format!("{server}cacerts: {e}")))?;
    if !resp.status().is_success() {
        return Err(AgentError::Connect(format!(
            "{server}cacerts answered {}",
            resp.status()
        )));
    }
    let body = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 1024 * 1024)
        .await
        .map_err(|e| AgentError::Connect(format!("{server}cacerts: {e}")))?;
    String::from_utf8(body.to_vec())
        .map_err(|_| AgentError::Connect(format!("{server}cacerts is not PEM")))
}

/// One connection: verify the CA, dial, serve until the tunnel ends.
async fn session(
    args: &AgentArgs,
    trust: &Trust,
    downstream: &Arc<Downstream>,
    verified_once: &mut bool,
) -> Result<(), AgentError> {
    let config = if !trust.pinned() {
        tls_config(None, false)?
    } else {
        let pem = fetch_ca(&args.server).await?;
        let actual = hex::encode(Sha256::digest(pem.as_bytes()));
        if !trust.accepts(&actual) {
            let expected = trust.list().join(",");
            return Err(AgentError::CaMismatch { expected, actual });
        }
        *verified_once = true;
        tls_config(Some(&pem), false)?
    };
    let io = tls_connect(&args.server, config).await?;
    let mut url = args.server.clone();
    url.set_scheme("wss").expect("https → wss");
    url.set_path(drover_tunnel::CONNECT_PATH);
    url.set_query(None);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| AgentError::Config(format!("{url}: {e}")))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", args.token))
        .map_err(|_| AgentError::Config("the token has characters a header cannot carry".into()))?;
    request.headers_mut().insert("authorization", bearer);
    request.headers_mut().insert(
        "user-agent",
        HeaderValue::from_static(concat!("drover-agent/", env!("CARGO_PKG_VERSION"))),
    );
    let upgrade =
        tokio_tungstenite::client_async_with_config(request, io, Some(drover_tunnel::ws::config()));
    let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, upgrade)
        .await
        .map_err(|_| AgentError::Connect(format!("{url}: no answer to the upgrade")))?
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) if resp.status() == 401 => {
                AgentError::Connect("the server refused the registration token (401)".into())
            }
            other => AgentError::Connect(format!("{url}: {other}")),
        })?;
    tracing::info!(server = %args.server, "connected to the Drover server");
    let mut session = mux::start(WsIo::new(ws, Keepalive::default()), Mode::Server);
    while let Some(stream) = session.inbound.next().await {
        let downstream = downstream.clone();
        tokio::spawn(forward::serve_stream(stream, downstream, trust.clone()));
    }
    if let Ok(Err(e)) = session.driver.await {
        tracing::debug!(error = %e, "tunnel ended");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_jittered_and_capped() {
        for n in 0..10 {
            let b = backoff(n);
            let base = Duration::from_millis(250 << n.min(7)).min(MAX_BACKOFF);
            assert!(b >= base / 2 && b <= base, "attempt {n}: {b:?}");
        }
        assert!(backoff(40) <= MAX_BACKOFF);
    }
}
