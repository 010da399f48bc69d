//! One way to send a request to a cluster from any replica: down the
//! cluster's agent link if this replica holds it, else to the replica that
//! does (its record in the store, if that replica is alive), over the peer
//! connection. The proxy, the web UI (through the proxy) and the cluster
//! controllers all use it.
//!
//! When no replica holds a link — an agent reconnecting after its replica
//! went away — a request waits up to [`LINK_WAIT`] for one to appear
//! before the answer is "not connected". A request to a replica that stops
//! answering fails when that replica is declared gone (its record not
//! renewed for the replicas' TTL) or the link moves elsewhere, instead of
//! hanging, and a stream from it is cut then; a request that certainly did
//! not arrive, or an idempotent one that may have been lost, is sent again
//! on the next route (see [`Dialer::send`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, Response};

use super::kube::{self, DownstreamError};
use super::peer::Peers;
use super::{records, Link, Links};
use crate::replicas::Registry;

/// On an upgraded answer (exec, attach, port-forward): cancelled when the
/// link it goes down, or the replica holding it, is gone. The byte pipe
/// ends with it; once every copy is dropped (the pipe ended by itself),
/// nothing waits for that any more.
#[derive(Debug, Clone)]
pub struct UpgradeCut {
    token: tokio_util::sync::CancellationToken,
    _guard: Arc<tokio_util::sync::DropGuard>,
}

impl UpgradeCut {
    /// A token cancelled when `gone` resolves.
    pub(crate) fn when(gone: impl Future<Output = ()> + Send + 'static) -> Self {
        let token = tokio_util::sync::CancellationToken::new();
        let cut = token.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = gone => cut.cancel(),
                () = cut.cancelled() => {}
            }
        });
        Self {
            _guard: Arc::new(token.clone().drop_guard()),
            token,
        }
    }

    /// Resolves when the link goes.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }
}

/// How long a request waits for some replica to hold the cluster's link.
pub const LINK_WAIT: Duration = Duration::from_secs(5);
/// Bodies up to this size are read first, so that a request can be sent
/// again.
const REPLAY_LIMIT: u64 = 1024 * 1024;

/// A request's body: one that can be sent again, or one sent once.
enum Payload {
    Replayable(bytes::Bytes),
    Once(Option<Body>),
}

impl Payload {
    /// The body for the next attempt, if there can be one.
    fn take(&mut self) -> Option<Body> {
        match self {
            Payload::Replayable(b) => Some(Body::from(b.clone())),
            Payload::Once(b) => b.take(),
        }
    }

    /// Whether another attempt can be made.
    fn again(&self) -> bool {
        match self {
            Payload::Replayable(_) => true,
            Payload::Once(b) => b.is_some(),
        }
    }
}

/// Where a cluster's link is.
#[derive(Debug, Clone)]
pub enum Route {
    /// Held here.
    Local(Link),
    /// Held by another live replica.
    Peer {
        /// Its id.
        replica: String,
        /// Its peer URL.
        url: String,
    },
    /// Held by no live replica.
    Nowhere,
}

/// What changes routes, subscribed to ([`Dialer::subscribe`]).
#[derive(Debug)]
pub struct RouteChanges {
    table: tokio::sync::watch::Receiver<drover_store::Revision>,
    members: tokio::sync::watch::Receiver<Arc<crate::replicas::Members>>,
}

impl RouteChanges {
    /// Resolves on the next change since the last, or after `at_most`.
    pub async fn next(&mut self, at_most: Duration) {
        tokio::select! {
            _ = self.table.changed() => {}
            _ = self.members.changed() => {}
            () = tokio::time::sleep(at_most) => {}
        }
    }
}

/// Sends requests to clusters, wherever their links are.
#[derive(Debug)]
pub struct Dialer {
    links: Arc<Links>,
    registry: Arc<Registry>,
    peers: Peers,
}

impl Dialer {
    /// A dialer over this replica's links, the registry of replicas and a
    /// peer client.
    pub fn new(links: Arc<Links>, registry: Arc<Registry>, peers: Peers) -> Arc<Self> {
        Arc::new(Self {
            links,
            registry,
            peers,
        })
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        self.links.replica()
    }

    /// The links this replica holds.
    pub fn links(&self) -> &Arc<Links> {
        &self.links
    }

    /// Where `cluster`'s link is now.
    pub fn route(&self, cluster: &str) -> Route {
        if let Some(link) = self.links.get(cluster) {
            return Route::Local(link);
        }
        let Some((record, _)) = self
            .links
            .table()
            .get(&records::key(cluster))
            .filter(|(r, _)| r.is_held())
        else {
            return Route::Nowhere;
        };
        if record.replica == self.replica() {
            return Route::Nowhere; // a record of a link that ended here
        }
        match self.registry.members().peer_url(&record.replica) {
            Some(url) => Route::Peer {
                replica: record.replica,
                url: url.to_owned(),
            },
            None => Route::Nowhere,
        }
    }

    /// Whether some live replica holds `cluster`'s link.
    pub fn connected(&self, cluster: &str) -> bool {
        !matches!(self.route(cluster), Route::Nowhere)
    }

    /// A subscription to what changes routes: the links' records and who
    /// is alive. Take it before looking at a route, so that no change in
    /// between is missed.
    pub fn subscribe(&self) -> RouteChanges {
        RouteChanges {
            table: self.links.table().changes(),
            members: self.registry.watch(),
        }
    }

    /// Wait up to `at_most` for some replica to hold `cluster`'s link;
    /// whether one does.
    pub async fn wait_connected(&self, cluster: &str, at_most: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + at_most;
        let mut changes = self.subscribe();
        loop {
            if self.connected(cluster) {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            changes.next(deadline - now).await;
        }
    }

    /// Send `req` to `cluster`'s API server (path and query as for it).
    ///
    /// With no link anywhere, it waits up to [`LINK_WAIT`] for one. A
    /// request that did not reach the cluster (no link, the holder not
    /// reachable) is sent again on the next route within that time, as is
    /// a GET, HEAD or OPTIONS lost on the way (the link or its replica
    /// went away before the answer). A small body is read first, so that it
    /// can be sent again; a large one is sent once.
    pub async fn send(
        &self,
        cluster: &str,
        req: Request<Body>,
    ) -> Result<Response<Body>, DownstreamError> {
        self.send_within(cluster, req, LINK_WAIT).await
    }

    /// [`Dialer::send`], waiting at most `wait` for a link (zero: only
    /// the route there is now, once).
    pub async fn send_within(
        &self,
        cluster: &str,
        req: Request<Body>,
        wait: Duration,
    ) -> Result<Response<Body>, DownstreamError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.subscribe();
        let (parts, body) = req.into_parts();
        let idempotent = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        let mut body = match http_body::Body::size_hint(&body).exact() {
            Some(n) if n <= REPLAY_LIMIT => Payload::Replayable(
                axum::body::to_bytes(body, REPLAY_LIMIT as usize)
                    .await
                    .map_err(|e| DownstreamError::Body(format!("reading the request: {e}")))?,
            ),
            _ => Payload::Once(Some(body)),
        };
        let rebuild = |body: Body| {
            let mut r = Request::new(body);
            *r.method_mut() = parts.method.clone();
            *r.uri_mut() = parts.uri.clone();
            *r.version_mut() = parts.version;
            *r.headers_mut() = parts.headers.clone();
            r
        };
        loop {
            let failed = match self.route(cluster) {
                Route::Local(link) => match body.take() {
                    Some(b) => match kube::send_on(&link, rebuild(b)).await {
                        Ok(resp) => return Ok(resp),
                        Err(e) => e,
                    },
                    None => DownstreamError::Lost,
                },
                Route::Peer { replica, url } => match body.take() {
                    Some(b) => match self.forward(&replica, &url, cluster, rebuild(b)).await {
                        Ok(resp) => return Ok(resp),
                        Err(e) => e,
                    },
                    None => DownstreamError::Lost,
                },
                Route::Nowhere => DownstreamError::NotConnected,
            };
            let again =
                body.again() && (failed.not_sent() || (idempotent && failed.lost_on_the_way()));
            let now = tokio::time::Instant::now();
            if !again || now >= deadline {
                return Err(failed);
            }
            if !matches!(failed, DownstreamError::NotConnected) {
                tracing::debug!(%cluster, error = %failed, "sending the request again");
            }
            changes
                .next((deadline - now).min(Duration::from_millis(250)))
                .await;
        }
    }

    /// Forward to another replica; fail, or cut the answer's stream, when
    /// that replica is declared gone or the link moves away from it.
    async fn forward(
        &self,
        replica: &str,
        url: &str,
        cluster: &str,
        req: Request<Body>,
    ) -> Result<Response<Body>, DownstreamError> {
        let gone = self.gone(cluster, replica);
        tokio::pin!(gone);
        let resp = tokio::select! {
            r = self.peers.forward(url, cluster, req) => r?,
            () = &mut gone => {
                return Err(DownstreamError::Peer(format!("replica {replica} no longer holds the link")));
            }
        };
        let cut = self.gone(cluster, replica);
        if resp.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS {
            let mut resp = resp.map(Body::new);
            resp.extensions_mut().insert(UpgradeCut::when(cut));
            return Ok(resp);
        }
        Ok(resp.map(|body| {
            Body::new(CutWhen::new(
                body,
                cut,
                "the replica holding the link is gone",
            ))
        }))
    }

    /// Resolves once `replica` is no longer alive, or no longer holds
    /// `cluster`'s link.
    fn gone(&self, cluster: &str, replica: &str) -> impl Future<Output = ()> + Send + 'static {
        let mut members = self.registry.watch();
        let table = self.links.table().clone();
        let mut records = table.changes();
        let key = records::key(cluster);
        let replica = replica.to_owned();
        async move {
            loop {
                let live = members.borrow_and_update().is_live(&replica);
                records.borrow_and_update();
                let holds = table.get(&key).is_some_and(|(r, _)| r.replica == replica);
                if !live || !holds {
                    return;
                }
                tokio::select! {
                    changed = members.changed() => if changed.is_err() {
                        return std::future::pending().await;
                    },
                    changed = records.changed() => if changed.is_err() {
                        return std::future::pending().await;
                    },
                }
            }
        }
    }
}

/// A body cut off, with an error, when `cut` resolves: the link or the
/// replica it came through is gone. (The proxy ends a cut stream cleanly
/// for its client; anything else sees the error.)
pub(crate) struct CutWhen<B> {
    body: B,
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
    why: &'static str,
    /// Cut already: nothing more comes.
    done: bool,
}

impl<B> CutWhen<B> {
    /// `body`, cut with the error `why` when `cut` resolves.
    pub(crate) fn new(
        body: B,
        cut: impl Future<Output = ()> + Send + 'static,
        why: &'static str,
    ) -> Self {
        Self {
            body,
            cut: Box::pin(cut),
            why,
            done: false,
        }
    }
}

impl<B> http_body::Body for CutWhen<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        // What has arrived is passed on first.
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.cut.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(Some(Err(this.why.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
