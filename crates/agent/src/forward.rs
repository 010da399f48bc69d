//! One tunnel stream: HTTP/1.1 from the server, forwarded to the cluster's
//! API server with the agent's bearer token — except the agent's own paths
//! (`/drover-agent/…`, see [`crate::trust`]). Bodies stream both ways; an
//! upgrade (exec, attach, port-forward) becomes a byte pipe between the
//! stream and the API server's connection.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::Downstream;

/// Serve the stream until the server closes it.
pub async fn serve_stream(
    stream: drover_tunnel::TunnelStream,
    downstream: Arc<Downstream>,
    trust: crate::Trust,
) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (downstream, trust) = (downstream.clone(), trust.clone());
        async move {
            if req.uri().path() == drover_tunnel::TRUST_PATH {
                return Ok(trust.handle(req.map(Body::new), &downstream).await);
            }
            if req.uri().path().starts_with(drover_tunnel::AGENT_PREFIX) {
                return Ok(status(StatusCode::NOT_FOUND, "no such agent path"));
            }
            forward(req, downstream).await
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "tunnel stream ended");
    }
}

fn status(code: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "ServiceUnavailable", "code": code.as_u16(),
    });
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

async fn forward(
    mut req: Request<Incoming>,
    downstream: Arc<Downstream>,
) -> Result<Response<Body>, Infallible> {
    let upgrade =
        drover_tunnel::upgrade::requested(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri = format!("{}{path}", downstream.base);
    let mut out = Request::builder().method(parts.method).uri(uri);
    let headers = out.headers_mut().expect("a fresh builder");
    for (name, value) in &parts.headers {
        if name == header::HOST || name == header::AUTHORIZATION {
            continue;
        }
        // Hop-by-hop headers belong to this connection, and HTTP/2 has none.
        let hop = [
            header::CONNECTION,
            header::UPGRADE,
            header::TE,
            header::TRANSFER_ENCODING,
        ];
        if upgrade.is_none() && (hop.contains(name) || name.as_str() == "keep-alive") {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {}", downstream.token())) else {
        return Ok(status(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent's token is unusable",
        ));
    };
    headers.insert(header::AUTHORIZATION, bearer);
    let Ok(out) = out.body(Body::new(body)) else {
        return Ok(status(
            StatusCode::BAD_REQUEST,
            "the request could not be forwarded",
        ));
    };
    let client = if upgrade.is_some() {
        &downstream.upgrades
    } else {
        &downstream.client
    };
    let mut resp = match client.request(out).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "the cluster's API server did not answer");
            return Ok(status(
                StatusCode::BAD_GATEWAY,
                &format!("the agent cannot reach the cluster's API server: {e}"),
            ));
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(server_side) = upgrade {
            drover_tunnel::upgrade::splice(
                server_side,
                hyper::upgrade::on(&mut resp),
                std::future::pending(),
            );
        }
    }
    Ok(resp.map(Body::new))
}
