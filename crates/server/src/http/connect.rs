//! `GET /v1-public/connect`, where agents dial in.
//!
//! An agent authenticates with its cluster's registration token
//! (`Authorization: Bearer …`); a wrong one gets 401 and a warning with the
//! source address, and touches no cluster state. The upgraded connection
//! becomes the cluster's link on this replica ([`crate::link::Links::serve`]).
//! A draining replica takes no new agents: they retry, and the balancer
//! sends them to another replica.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use drover_apiserver::ApiError;
use drover_core::{api, keys};

use super::AppState;
use crate::kinds::registration;

fn refused(peer: Option<SocketAddr>, why: &str) -> Response {
    tracing::warn!(
        source = peer.map(|p| p.to_string()).unwrap_or_default(),
        "agent connection refused: {why}"
    );
    ApiError::new(401, "Unauthorized", "invalid registration token").into_response()
}

/// Authenticate the agent and upgrade to the tunnel's WebSocket.
pub(crate) async fn connect(State(state): State<Arc<AppState>>, mut req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if state.registry.draining() {
        return ApiError::unavailable("this replica is shutting down").into_response();
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let found = match registration::lookup(&state.store, &token).await {
        Ok(Some(r)) => r,
        Ok(None) => return refused(peer, "unknown or revoked registration token"),
        Err(e) => return e.into_response(),
    };
    let cluster = found.cluster;
    let registration = registration::record_key(&token);
    match state
        .store
        .get(&keys::object(api::GROUP, "clusters", None, &cluster))
        .await
    {
        Ok(Some(kv)) => {
            let deleting = serde_json::from_slice::<serde_json::Value>(&kv.value)
                .map(|v| drover_apiserver::object::is_deleting(&v))
                .unwrap_or(true);
            if deleting {
                return refused(peer, "the cluster is being removed");
            }
        }
        Ok(None) => return refused(peer, "the token's cluster is gone"),
        Err(_) => return ApiError::unavailable("the datastore is unavailable").into_response(),
    }
    let is_websocket = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return ApiError::bad_request("expected a WebSocket upgrade").into_response();
    };
    if !is_websocket {
        return ApiError::bad_request("expected a WebSocket upgrade").into_response();
    }
    // The link's claim is refused if the cluster's record was written
    // after this point: read it before answering, so that a replica paused
    // between its answer and its claim cannot take the record from the
    // agent's newer connection elsewhere.
    let accepted = match state.store.revisions().await {
        Ok(at) => at.current,
        Err(_) => return ApiError::unavailable("the datastore is unavailable").into_response(),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let keepalive = state.keepalive;
    let links = state.links.clone();
    let source = peer.map(|p| p.to_string()).unwrap_or_default();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                links
                    .serve(cluster, registration, source, upgraded, keepalive, accepted)
                    .await
            }
            Err(e) => tracing::warn!(%cluster, error = %e, "agent upgrade failed"),
        }
    });
    let accept = drover_tunnel::ws::accept_key(key.as_bytes());
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}
