//! HTTP to a downstream cluster through its agent's tunnel: one yamux
//! stream per request, HTTP/1.1 on it, upgrades allowed. Requests sent here
//! without `Impersonate-*` headers act as the agent's own service account
//! (what the cluster controllers use).

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};
use futures::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::tunnels::Link;

/// Largest JSON answer a controller reads (a node list of a big cluster).
const MAX_JSON: usize = 64 * 1024 * 1024;

/// Why a downstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum DownstreamError {
    /// The tunnel is gone.
    #[error("the cluster agent is not connected")]
    NotConnected,
    /// The agent did not answer with HTTP.
    #[error("the cluster agent did not answer: {0}")]
    Http(#[from] hyper::Error),
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
}

/// Send one request down the link.
pub async fn send(link: &Link, req: Request<Body>) -> Result<Response<Incoming>, DownstreamError> {
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
    Ok(sender.send_request(req).await?)
}

fn request(method: Method, path: &str, body: Option<&Value>) -> Request<Body> {
    let mut b = Request::builder()
        .method(method.clone())
        .uri(path)
        .header("host", "kubernetes.default.svc")
        .header("accept", "application/json")
        .header(
            "user-agent",
            concat!("drover-server/", env!("CARGO_PKG_VERSION")),
        );
    if body.is_some() {
        let content_type = if method == Method::PATCH {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        b = b.header("content-type", content_type);
    }
    b.body(body.map_or_else(Body::empty, |v| Body::from(v.to_string())))
        .expect("a static request is valid")
}

async fn read_json(resp: Response<Incoming>) -> Result<(StatusCode, Value), DownstreamError> {
    let status = resp.status();
    let bytes = axum::body::to_bytes(Body::new(resp.into_body()), MAX_JSON)
        .await
        .map_err(|e| DownstreamError::Body(e.to_string()))?;
    let value = serde_json::from_slice(&bytes).map_err(|e| DownstreamError::Body(e.to_string()))?;
    Ok((status, value))
}

/// A JSON request as the agent; a non-2xx answer is an error, except for the
/// statuses in `accept` (e.g. 404 on delete, 409 on create).
pub async fn call(
    link: &Link,
    method: Method,
    path: &str,
    body: Option<&Value>,
    accept: &[StatusCode],
) -> Result<(StatusCode, Value), DownstreamError> {
    let resp = send(link, request(method, path, body)).await?;
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

/// `GET path` as the agent.
pub async fn get(link: &Link, path: &str) -> Result<Value, DownstreamError> {
    Ok(call(link, Method::GET, path, None, &[]).await?.1)
}

/// A watch as the agent: the events, one JSON object each, until the
/// server ends the stream.
pub async fn watch(
    link: &Link,
    path: &str,
) -> Result<impl futures::Stream<Item = Value> + Send + Unpin, DownstreamError> {
    let resp = send(link, request(Method::GET, path, None)).await?;
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
