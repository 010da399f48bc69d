//! HTTP to a downstream cluster: one tunnel stream per request, HTTP/1.1
//! on it, upgrades allowed ([`send_on`]); and [`Client`], the JSON requests
//! and watches the controllers make over the [`Dialer`] (from any replica).
//! Requests without `Impersonate-*` headers act as the agent's own service
//! account.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};
use axum::response::IntoResponse;
use drover_apiserver::ApiError;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::dialer::{CutWhen, UpgradeCut};
use super::{Dialer, Link};

/// Largest JSON answer a controller reads (a node list of a big cluster).
const MAX_JSON: usize = 64 * 1024 * 1024;
/// Time for a cluster to answer a request's head, through its tunnel: past
/// it, the request fails rather than hangs.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a downstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum DownstreamError {
    /// No replica holds a link to the cluster's agent.
    #[error("the cluster agent is not connected")]
    NotConnected,
    /// The agent did not answer with HTTP.
    #[error("the cluster agent did not answer: {0}")]
    Http(#[from] hyper::Error),
    /// The replica holding the link could not be reached (the request was
    /// not sent).
    #[error("the replica holding the cluster's link cannot be reached: {0}")]
    Unreachable(String),
    /// The replica holding the link failed after the request was sent.
    #[error("the replica holding the cluster's link did not answer: {0}")]
    Peer(String),
    /// The link closed after the request was sent, before the answer.
    #[error("the cluster's link closed before the cluster answered")]
    Lost,
    /// The cluster did not answer in time.
    #[error("the cluster did not answer within {0:?}")]
    Timeout(Duration),
    /// The answer was not what was asked for.
    #[error("the cluster answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: StatusCode,
        /// The Status message, or the start of the body.
        message: String,
    },
    /// The answer was not JSON or too large.
    #[error("the cluster's answer could not be read: {0}")]
    Body(String),
    /// A write refused before it was sent: the lease it was to be made
    /// under is no longer this replica's.
    #[error("this replica no longer acts for the cluster")]
    Fenced,
}

impl DownstreamError {
    /// Whether the request certainly did not reach the cluster (so it may
    /// be sent again, whatever it is).
    pub fn not_sent(&self) -> bool {
        matches!(self, Self::NotConnected | Self::Unreachable(_))
    }

    /// Whether the request may have been lost on the way (so an idempotent
    /// one may be sent again).
    pub fn lost_on_the_way(&self) -> bool {
        matches!(self, Self::Lost | Self::Peer(_) | Self::Http(_))
    }

    /// The answer to a client whose request to `cluster` failed so.
    pub fn into_response_for(self, cluster: &str) -> axum::response::Response {
        match self {
            DownstreamError::NotConnected => {
                ApiError::unavailable(format!("the cluster agent of {cluster:?} is not connected"))
                    .into_response()
            }
            DownstreamError::Timeout(_) => {
                ApiError::new(504, "Timeout", self.to_string()).into_response()
            }
            other => ApiError::new(502, "BadGateway", other.to_string()).into_response(),
        }
    }
}

/// Send one request down a link held here; the answer's head must come
/// within [`HEAD_TIMEOUT`].
pub async fn send_on(link: &Link, req: Request<Body>) -> Result<Response<Body>, DownstreamError> {
    let stream = link
        .opener
        .open()
        .await
        .map_err(|_| DownstreamError::NotConnected)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "downstream connection ended");
        }
    });
    let answer = tokio::time::timeout(HEAD_TIMEOUT, sender.send_request(req));
    let resp = tokio::select! {
        answer = answer => answer
            .map_err(|_| DownstreamError::Timeout(HEAD_TIMEOUT))??,
        () = link.opener.closed() => return Err(DownstreamError::Lost),
    };
    // The answer's body (or the pipe of an upgrade) is cut when the link
    // goes, even if the stream itself would not notice.
    let opener = link.opener.clone();
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let mut resp = resp.map(Body::new);
        resp.extensions_mut()
            .insert(UpgradeCut::when(async move { opener.closed().await }));
        return Ok(resp);
    }
    Ok(resp.map(|body| {
        Body::new(CutWhen::new(
            body,
            async move { opener.closed().await },
            "the cluster's link closed",
        ))
    }))
}

/// Whether writes may still be made (the lease they are made under is
/// still held, and this replica may act on it).
pub type Fence = Arc<dyn Fn() -> bool + Send + Sync>;

/// A client of one cluster's API server, as the agent, over the dialer.
/// A client made under a lease names it in its `User-Agent` (as the
/// cluster's audit log then shows) and sends no write once its fence says
/// the lease is gone.
#[derive(Clone)]
pub struct Client {
    dialer: Arc<Dialer>,
    cluster: String,
    user_agent: String,
    fence: Option<Fence>,
    /// How long a request waits for a link to appear.
    link_wait: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("cluster", &self.cluster)
            .field("user_agent", &self.user_agent)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of `cluster`.
    pub fn new(dialer: Arc<Dialer>, cluster: &str) -> Self {
        let user_agent = format!(
            "drover-server/{} (replica {})",
            env!("CARGO_PKG_VERSION"),
            dialer.replica()
        );
        Self {
            dialer,
            cluster: cluster.to_owned(),
            user_agent,
            fence: None,
            link_wait: super::dialer::LINK_WAIT,
        }
    }

    /// The same client, failing at once when no replica holds the link
    /// (a controller that handles a missing link itself).
    pub fn without_waiting(mut self) -> Self {
        self.link_wait = Duration::ZERO;
        self
    }

    /// The same client, writing under the lease of `generation`, while
    /// `fence` allows.
    pub fn under_lease(mut self, generation: u64, fence: Fence) -> Self {
        self.user_agent = format!(
            "drover-server/{} (replica {}; lease {generation})",
            env!("CARGO_PKG_VERSION"),
            self.dialer.replica()
        );
        self.fence = Some(fence);
        self
    }

    /// The cluster.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Whether some replica holds the cluster's link.
    pub fn connected(&self) -> bool {
        self.dialer.connected(&self.cluster)
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Request<Body>, DownstreamError> {
        let mut b = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", "kubernetes.default.svc")
            .header("accept", "application/json")
            .header("user-agent", &self.user_agent);
        if body.is_some() {
            let content_type = if method == Method::PATCH {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            b = b.header("content-type", content_type);
        }
        b.body(body.map_or_else(Body::empty, |v| Body::from(v.to_string())))
            .map_err(|e| DownstreamError::Body(format!("cannot make a request for {path:?}: {e}")))
    }

    /// A JSON request; a non-2xx answer is an error, except for the
    /// statuses in `accept` (e.g. 404 on delete, 409 on create).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        accept: &[StatusCode],
    ) -> Result<(StatusCode, Value), DownstreamError> {
        let write = !matches!(method, Method::GET | Method::HEAD);
        if write && self.fence.as_ref().is_some_and(|allowed| !allowed()) {
            return Err(DownstreamError::Fenced);
        }
        let req = self.request(method, path, body)?;
        let resp = self
            .dialer
            .send_within(&self.cluster, req, self.link_wait)
            .await?;
        let (status, value) = read_json(resp).await?;
        if status.is_success() || accept.contains(&status) {
            return Ok((status, value));
        }
        Err(DownstreamError::Status {
            status,
            message: value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect(),
        })
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value, DownstreamError> {
        Ok(self.call(Method::GET, path, None, &[]).await?.1)
    }

    /// How many objects a collection holds, read as a Table without the
    /// objects (so no Secret's data crosses).
    pub async fn count(&self, path: &str) -> Result<usize, DownstreamError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut req = self.request(Method::GET, &format!("{path}{sep}includeObject=None"), None)?;
        req.headers_mut().insert(
            "accept",
            axum::http::HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io"),
        );
        let resp = self
            .dialer
            .send_within(&self.cluster, req, self.link_wait)
            .await?;
        let (status, table) = read_json(resp).await?;
        if !status.is_success() || table["kind"] != "Table" {
            return Err(DownstreamError::Status {
                status,
                message: format!("no Table of {path}"),
            });
        }
        Ok(table["rows"].as_array().map_or(0, Vec::len))
    }

    /// A watch: the events, one JSON object each, until the stream ends.
    pub async fn watch(
        &self,
        path: &str,
    ) -> Result<impl futures::Stream<Item = Value> + Send + Unpin, DownstreamError> {
        let req = self.request(Method::GET, path, None)?;
        let resp = self
            .dialer
            .send_within(&self.cluster, req, self.link_wait)
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let (_, v) = read_json(resp).await.unwrap_or((status, Value::Null));
            return Err(DownstreamError::Status {
                status,
                message: v["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        let data = Body::new(resp.into_body()).into_data_stream();
        Ok(drover_core::jsonl::values(data, MAX_JSON).boxed())
    }
}

async fn read_json<B>(resp: Response<B>) -> Result<(StatusCode, Value), DownstreamError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let status = resp.status();
    let bytes = axum::body::to_bytes(Body::new(resp.into_body()), MAX_JSON)
        .await
        .map_err(|e| DownstreamError::Body(e.to_string()))?;
    let value = serde_json::from_slice(&bytes).map_err(|e| DownstreamError::Body(e.to_string()))?;
    Ok((status, value))
}
