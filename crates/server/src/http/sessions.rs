//! Revocation reaches open connections.
//!
//! A request is authorized when it starts; a watch, `logs -f` or an exec
//! session then lives on. Each such connection is registered here with the
//! identity it was opened with and the bindings that gave it its rights
//! ([`Sessions::open`]); each agent link, with the registration token it
//! connected with ([`crate::link`]). A task ([`Sessions::spawn_revoker`])
//! follows the store and, on every change that may take rights away (see
//! [`revokes`]: a token or user changed or deleted, a provider user's
//! groups or a provider changed, a binding, role,
//! project or cluster deleted — creations grant, and a cluster's status
//! changes nothing), checks them all again; every second it ends those
//! whose token has expired, which needs no store read:
//!
//! - a connection whose token was deleted or expired, or whose user was
//!   disabled, deleted or made again, ends; so does a provider user's
//!   whose provider was disabled, or who lost a group they had when it
//!   opened, or whom their provider no longer knows;
//! - so does one whose user lost a binding it had when it opened (in the
//!   cluster it reaches, for the proxy), or the cluster itself;
//! - an agent link whose registration token was deleted is closed at once
//!   (and every link is checked against its token every 30 s), as is one
//!   whose cluster is gone.
//!
//! A response body ends cleanly (the chunked stream closes, as when
//! kube-apiserver ends a watch), so clients see the end of a stream and
//! reconnect with whatever rights they have now; an upgraded connection is
//! closed on both sides.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use drover_auth::authn::Identity;
use futures::StreamExt;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::AppState;

/// How often connections are checked for their token's expiry.
const SWEEP: Duration = Duration::from_secs(1);
/// How often every agent link is checked against its registration token,
/// besides the deletions seen as they happen.
const LINK_SWEEP: Duration = Duration::from_secs(30);

/// Whether a change may take rights away from open connections.
fn revokes(e: &drover_store::Event) -> bool {
    use drover_store::EventType;
    let key = e.kv.key.as_str();
    if key.starts_with("/drover/tokens/") || key.starts_with(drover_auth::principals::MEMBERSHIPS) {
        return e.kind != EventType::Added;
    }
    let Some(rest) = key.strip_prefix("/registry/management.drover.io/") else {
        return false;
    };
    match rest.split('/').next().unwrap_or_default() {
        // A token's expiry or a user's state can change in place.
        "tokens" | "users" => e.kind != EventType::Added,
        // A provider disabled ends its users' connections.
        "authconfigs" => true,
        // Bindings are immutable; the others' updates (a cluster's status,
        // a project's quota, a role's rules) leave every binding as it was.
        "globalrolebindings"
        | "clusterroletemplatebindings"
        | "projectroletemplatebindings"
        | "globalroles"
        | "roletemplates"
        | "projects"
        | "clusters" => e.kind == EventType::Deleted,
        _ => false,
    }
}

/// One open connection.
#[derive(Debug)]
struct Session {
    identity: Identity,
    /// The cluster a proxied connection reaches.
    cluster: Option<String>,
    /// The bindings that gave it its rights when it opened.
    grants: BTreeSet<String>,
    /// When its token expires.
    expires: Option<std::time::SystemTime>,
    end: CancellationToken,
}

/// The open connections of this replica.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<u64, Session>>,
    next: AtomicU64,
}

/// Keeps a connection registered; dropped with the connection.
#[derive(Debug)]
pub struct Registration {
    sessions: Arc<Sessions>,
    id: u64,
    /// Cancelled when the connection's rights are revoked.
    pub end: CancellationToken,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.id);
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Session>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a connection opened by `identity` (reaching `cluster`
    /// through the proxy, if given) with `grants`, the bindings that
    /// authorized it. A right revoked while the connection was being opened
    /// (the revoker may have looked before it was here) ends it at once.
    pub async fn open(
        self: &Arc<Self>,
        state: &AppState,
        identity: &Identity,
        cluster: Option<&str>,
        grants: BTreeSet<String>,
    ) -> Registration {
        // Unreadable: checked at the next change instead.
        let expires = state.authn.expiry(identity).await.ok().flatten();
        let end = CancellationToken::new();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Session {
                identity: identity.clone(),
                cluster: cluster.map(str::to_owned),
                grants: grants.clone(),
                expires,
                end: end.clone(),
            },
        );
        let registration = Registration {
            sessions: self.clone(),
            id,
            end,
        };
        if let Ok(current) = state.store.revisions().await.map(|r| r.current) {
            state.authz.caught_up(current).await;
            if let Ok(snapshot) = state.authz.snapshot().await {
                let mut tokens = HashMap::new();
                if !holds(state, &snapshot, &mut tokens, identity, cluster, &grants).await {
                    tracing::info!(user = %identity.user.name, "ending a connection: its rights were revoked as it opened");
                    registration.end.cancel();
                }
            }
        }
        registration
    }

    /// How many connections are open (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Check every open connection again, once the policy reflects every
    /// write up to `revision`; end those whose rights are gone.
    async fn check(&self, state: &AppState, revision: drover_store::Revision) {
        let open: Vec<(u64, Identity, Option<String>, BTreeSet<String>)> = self
            .lock()
            .iter()
            .map(|(id, s)| (*id, s.identity.clone(), s.cluster.clone(), s.grants.clone()))
            .collect();
        if open.is_empty() {
            return;
        }
        // The policy mirror follows the store on a watch of its own: the
        // change that woke this check may not have reached it yet.
        state.authz.caught_up(revision).await;
        let Ok(snapshot) = state.authz.snapshot().await else {
            return;
        };
        let mut revoked = Vec::new();
        // Each token is read once, however many connections it opened.
        let mut tokens: HashMap<String, bool> = HashMap::new();
        for (id, identity, cluster, grants) in open {
            let cluster = cluster.as_deref();
            if !holds(state, &snapshot, &mut tokens, &identity, cluster, &grants).await {
                tracing::info!(user = %identity.user.name, cluster = cluster.unwrap_or(""), "ending a connection: its rights were revoked");
                revoked.push(id);
            }
        }
        let open = self.lock();
        for id in revoked {
            if let Some(s) = open.get(&id) {
                s.end.cancel();
            }
        }
    }

    /// End every open connection (a draining replica): its clients
    /// connect again, through the balancer, to another replica.
    pub fn end_all(&self) {
        for s in self.lock().values() {
            s.end.cancel();
        }
    }

    /// End the connections whose token has expired.
    fn expire(&self) {
        let now = std::time::SystemTime::now();
        for s in self.lock().values() {
            if s.expires.is_some_and(|at| at <= now) && !s.end.is_cancelled() {
                tracing::info!(user = %s.identity.user.name, "ending a connection: its token expired");
                s.end.cancel();
            }
        }
    }

    /// Check every connection on each change that may revoke rights (and
    /// whenever the store's watch starts again), end those whose token
    /// expired every [`SWEEP`], and close agent links whose registration
    /// token goes. Runs until the store closes.
    pub fn spawn_revoker(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let sessions = state.sessions.clone();
            let mut links = tokio::time::interval(LINK_SWEEP);
            loop {
                let from = match state.store.revisions().await {
                    Ok(r) => r.current,
                    Err(drover_store::StoreError::Closed) => return,
                    Err(_) => {
                        tokio::time::sleep(SWEEP).await;
                        continue;
                    }
                };
                let mut changes = state.store.watch("", from);
                // Whatever happened while no watch was up.
                sessions.check(&state, from).await;
                let clusters = drover_core::keys::prefix(drover_core::api::GROUP, "clusters", None);
                let mut sweep = tokio::time::interval(SWEEP);
                loop {
                    tokio::select! {
                        event = changes.next() => {
                            // Take whatever else is here, then check once.
                            let mut batch = vec![event];
                            while let Some(Some(more)) = futures::FutureExt::now_or_never(changes.next()) {
                                batch.push(Some(more));
                            }
                            let mut revoking = false;
                                let mut ended = false;
                            let mut last = from;
                            for event in batch {
                                match event {
                                    Some(Ok(e)) => {
                                        last = last.max(e.revision());
                                        let key = e.kv.key.as_str();
                                        let deleted = e.kind == drover_store::EventType::Deleted;
                                        if deleted && key.starts_with(crate::kinds::registration::RECORDS) {
                                            state.links.close_registration(key).await;
                                        }
                                        // A cluster gone: its agent's link too.
                                        if deleted {
                                            if let Some(cluster) = key.strip_prefix(clusters.as_str()) {
                                                state.links.close(cluster);
                                            }
                                        }
                                        revoking |= revokes(&e);
                                    }
                                    Some(Err(drover_store::StoreError::Closed)) => return,
                                    Some(Err(_)) | None => ended = true,
                                }
                            }
                            if revoking {
                                sessions.check(&state, last).await;
                            }
                            if ended {
                                break; // the watch ended: follow again
                            }
                        }
                        _ = sweep.tick() => sessions.expire(),
                        _ = links.tick() => state.links.close_revoked().await,
                    }
                }
            }
        })
    }
}

/// Whether a connection still holds what opened it: its token (read once
/// per check, in `tokens`), its cluster, and every binding it had. A token
/// that cannot be read now counts as held: it is checked again later.
async fn holds(
    state: &AppState,
    snapshot: &drover_auth::policy::Snapshot,
    tokens: &mut HashMap<String, bool>,
    identity: &Identity,
    cluster: Option<&str>,
    grants: &BTreeSet<String>,
) -> bool {
    let valid = match tokens.get(&identity.token) {
        Some(v) => *v,
        None => match state.authn.still_valid(identity).await {
            Ok(v) => {
                tokens.insert(identity.token.clone(), v);
                v
            }
            Err(_) => true,
        },
    };
    let reaches = cluster.is_none_or(|c| snapshot.reaches_cluster(&identity.user, c));
    valid && reaches && grants.is_subset(&snapshot.grants_of(&identity.user, cluster))
}

/// Whether a response streams on (a watch, logs that follow, a proxied
/// stream): its length is not known ahead. Such answers end when their
/// rights are revoked.
pub fn streams(body: &Body) -> bool {
    http_body::Body::size_hint(body).exact().is_none()
}

/// Whether a request asks for a watch, in either form kube serves
/// (`?watch=…` with any value but `0` or `false`, or `/watch/` in the
/// path).
pub fn watch_requested(method: &axum::http::Method, uri: &axum::http::Uri) -> bool {
    matches!(
        resource(method, uri),
        Some(info) if info.verb == "watch"
    )
}

/// Whether a request to a cluster asks for an answer that streams on: a
/// watch, logs that follow, or a proxy subresource (a pod's, a service's,
/// a node's). A list answered in chunks is not one: it ends by itself.
pub fn streaming_request(method: &axum::http::Method, uri: &axum::http::Uri) -> bool {
    let follow = query_flag(uri, "follow");
    match resource(method, uri) {
        Some(info) => {
            info.verb == "watch"
                || info.subresource == "proxy"
                || (info.subresource == "log" && follow)
        }
        None => false,
    }
}

fn query_flag(uri: &axum::http::Uri, name: &str) -> bool {
    uri.query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .any(|(k, v)| k == name && !matches!(v.to_ascii_lowercase().as_str(), "0" | "false"))
    })
}

fn resource(
    method: &axum::http::Method,
    uri: &axum::http::Uri,
) -> Option<drover_apiserver::request::RequestInfo> {
    match drover_apiserver::request::parse(method, uri.path(), query_flag(uri, "watch")) {
        Some(drover_apiserver::request::Target::Resource(info)) => Some(info),
        _ => None,
    }
}

/// A response body that ends (cleanly, as a finished stream) when its
/// connection's rights are revoked.
pub struct Revocable {
    body: Body,
    ended: Pin<Box<WaitForCancellationFutureOwned>>,
    _registration: Registration,
}

impl Revocable {
    /// Wrap `body`, registered as `registration`.
    pub fn wrap(body: Body, registration: Registration) -> Body {
        let ended = Box::pin(registration.end.clone().cancelled_owned());
        Body::new(Self {
            body,
            ended,
            _registration: registration,
        })
    }
}

impl http_body::Body for Revocable {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.ended.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
