//! The tunnel registry: which cluster's agent is connected to this replica,
//! and `GET /v1-public/connect`, where agents dial in.
//!
//! An agent authenticates with its cluster's registration token
//! (`Authorization: Bearer …`); a wrong one gets 401 and a warning with the
//! source address, and touches no cluster state. A link remembers the token
//! it connected with, and is closed when that token is revoked
//! ([`crate::sessions`]). A second agent for the
//! same cluster replaces the first: the old session is closed. While a
//! link is up, the cluster's controller ([`crate::clusters`]) runs over it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use drover_apiserver::ApiError;
use drover_core::{api, keys};
use drover_tunnel::{mux, Keepalive, Mode, Opener, WsIo};
use hyper_util::rt::TokioIo;

use crate::AppState;

/// One connected agent.
#[derive(Debug, Clone)]
pub struct Link {
    /// The cluster.
    pub cluster: String,
    /// The store key of the registration token the agent connected with:
    /// when it goes, so does the link.
    pub registration: String,
    /// Tells this link from the one that may replace it.
    pub id: u64,
    /// Opens streams to the agent.
    pub opener: Opener,
}

/// The links of this replica, by cluster.
#[derive(Debug, Default)]
pub struct Tunnels {
    links: Mutex<HashMap<String, Link>>,
    next_id: AtomicU64,
    /// Clusters being removed: nothing is projected into them any more.
    removing: Mutex<std::collections::HashSet<String>>,
}

impl Tunnels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Link>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live link of a cluster.
    pub fn get(&self, cluster: &str) -> Option<Link> {
        self.lock()
            .get(cluster)
            .filter(|l| !l.opener.is_closed())
            .cloned()
    }

    /// Mark a cluster as being removed (or no longer).
    pub fn set_removing(&self, cluster: &str, removing: bool) {
        let mut set = self.removing.lock().unwrap_or_else(|e| e.into_inner());
        if removing {
            set.insert(cluster.to_owned());
        } else {
            set.remove(cluster);
        }
    }

    /// Whether a cluster is being removed.
    pub fn is_removing(&self, cluster: &str) -> bool {
        self.removing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(cluster)
    }

    /// Close a cluster's link, if any.
    pub fn close(&self, cluster: &str) {
        if let Some(link) = self.lock().remove(cluster) {
            link.opener.close();
        }
    }

    /// Close the links that connected with the registration token whose
    /// record is `key` (it was deleted). Each link's own task then removes
    /// it and marks its cluster disconnected. A cluster being removed keeps
    /// its link until its agent cleaned up (its removal revokes the tokens
    /// first, then closes the link itself), whichever replica removes it.
    pub async fn close_registration(&self, store: &drover_store::Store, key: &str) {
        let links: Vec<Link> = self
            .lock()
            .values()
            .filter(|l| l.registration == key && !l.opener.is_closed())
            .cloned()
            .collect();
        for link in links {
            if self.is_removing(&link.cluster) {
                continue;
            }
            let cluster_key = keys::object(api::GROUP, "clusters", None, &link.cluster);
            let deleting = match store.get(&cluster_key).await {
                Ok(Some(kv)) => serde_json::from_slice::<serde_json::Value>(&kv.value)
                    .is_ok_and(|v| drover_apiserver::object::is_deleting(&v)),
                Ok(None) => false,
                Err(_) => continue, // checked again by the next sweep
            };
            if deleting {
                continue;
            }
            tracing::info!(cluster = %link.cluster, "closing the agent's link: its registration token was revoked");
            link.opener.close();
        }
    }

    /// Close every link whose registration token is gone from the store.
    pub async fn close_revoked(&self, store: &drover_store::Store) {
        let keys: Vec<String> = self
            .lock()
            .values()
            .map(|l| l.registration.clone())
            .collect();
        for key in keys {
            if let Ok(None) = store.get(&key).await {
                self.close_registration(store, &key).await;
            }
        }
    }

    fn insert(&self, link: Link) -> Option<Link> {
        self.lock().insert(link.cluster.clone(), link)
    }

    /// Remove the link if it is still `id` (not already replaced).
    fn remove_if(&self, cluster: &str, id: u64) -> bool {
        let mut links = self.lock();
        if links.get(cluster).is_some_and(|l| l.id == id) {
            links.remove(cluster);
            true
        } else {
            false
        }
    }
}

fn refused(peer: Option<SocketAddr>, why: &str) -> Response {
    tracing::warn!(
        source = peer.map(|p| p.to_string()).unwrap_or_default(),
        "agent connection refused: {why}"
    );
    ApiError::new(401, "Unauthorized", "invalid registration token").into_response()
}

/// `GET /v1-public/connect`: authenticate the agent and upgrade to the
/// tunnel's WebSocket.
pub(crate) async fn connect(State(state): State<Arc<AppState>>, mut req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let registration = match crate::import::lookup(&state.store, &token).await {
        Ok(Some(r)) => r,
        Ok(None) => return refused(peer, "unknown or revoked registration token"),
        Err(e) => return e.into_response(),
    };
    let cluster = registration.cluster;
    let registration = crate::import::record_key(&token);
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
    let on_upgrade = hyper::upgrade::on(&mut req);
    let keepalive = state.keepalive;
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                serve_link(state, cluster, registration, peer, upgraded, keepalive).await
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

async fn serve_link(
    state: Arc<AppState>,
    cluster: String,
    registration: String,
    peer: Option<SocketAddr>,
    upgraded: hyper::upgrade::Upgraded,
    keepalive: Keepalive,
) {
    let ws = drover_tunnel::ws::server(TokioIo::new(upgraded)).await;
    // The server opens streams; the agent never does (its inbound side is
    // dropped, which refuses any stream it opens).
    let session = mux::start(WsIo::new(ws, keepalive), Mode::Client);
    let link = Link {
        cluster: cluster.clone(),
        registration,
        id: state.tunnels.next_id.fetch_add(1, Ordering::Relaxed),
        opener: session.opener,
    };
    if let Some(old) = state.tunnels.insert(link.clone()) {
        tracing::info!(%cluster, "a new agent connection replaces the previous one");
        old.opener.close();
    }
    // Revoked between the check and now: the revoker may have looked
    // before this link was there.
    if let Ok(None) = state.store.get(&link.registration).await {
        state
            .tunnels
            .close_registration(&state.store, &link.registration)
            .await;
    }
    tracing::info!(%cluster, source = peer.map(|p| p.to_string()).unwrap_or_default(), "agent connected");
    let controller = tokio::spawn(crate::clusters::run_link(state.clone(), link.clone()));
    link.opener.closed().await;
    controller.abort();
    let _ = controller.await;
    if state.tunnels.remove_if(&cluster, link.id) {
        tracing::info!(%cluster, "agent disconnected");
        crate::clusters::mark_disconnected(&state.store, &cluster).await;
    }
    if let Ok(Err(e)) = session.driver.await {
        tracing::debug!(%cluster, error = %e, "tunnel ended");
    }
}
