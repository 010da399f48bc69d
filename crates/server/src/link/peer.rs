//! The replica-to-replica connection: a request for a cluster whose agent
//! link another replica holds is carried there, as is, and sent down that
//! link.
//!
//! It is mutual TLS on a listener of its own (`--peer-listen`), with
//! certificates from Drover's peer CA — a CA of its own, made once and kept
//! in the datastore (`/drover/peer-ca`), never the one that signs what
//! clients see. Each replica issues itself a certificate at start for the
//! address it advertises. The listener answers only replicas (a client
//! without such a certificate is refused in the handshake) and serves only
//! one thing: `/v1-peer/clusters/{cluster}/…`, forwarded down the local
//! link as it came (the replica that took the request authenticated and
//! authorized it, and set the impersonation). Nothing else of the replica
//! is reachable through it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use drover_apiserver::ApiError;
use drover_net::pki::{self, CertPair};
use drover_store::{Store, StoreError};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use super::dialer::UpgradeCut;
use super::kube::{self, DownstreamError};
use super::Links;

/// Where the peer CA lives.
const PEER_CA_KEY: &str = "/drover/peer-ca";
/// The peer CA's lifetime, and a replica's certificate's.
const PEER_CA_DAYS: i64 = 3650;
const PEER_CERT_DAYS: i64 = 365;
/// Where forwarded requests arrive.
pub const PATH_PREFIX: &str = "/v1-peer/clusters/";
/// The header a replica answers with when it holds no link for the cluster
/// (the request was not sent).
pub const NO_LINK: &str = "x-drover-no-link";
/// The header a replica answers with when its link closed after the request
/// went down it, before the answer.
pub const LOST: &str = "x-drover-link-lost";
/// Time to open a connection to another replica (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What went wrong setting up the peer connection.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The datastore failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A certificate could not be made or read.
    #[error("peer certificates: {0}")]
    Certificates(String),
}

#[derive(Serialize, Deserialize)]
struct StoredCa {
    cert_pem: String,
    key_pem: String,
    names: Vec<String>,
    not_after: i64,
}

/// The TLS configurations of this replica's peer connection.
#[derive(Debug, Clone)]
pub struct PeerTls {
    /// For the peer listener: this replica's certificate; clients must
    /// present one from the peer CA.
    pub server: Arc<rustls::ServerConfig>,
    /// For calls to other replicas: trusts only the peer CA, presents this
    /// replica's certificate.
    pub client: rustls::ClientConfig,
}

impl PeerTls {
    /// Make (or read) the peer CA and issue this replica (`id`, advertised
    /// at `host`) its certificate.
    pub async fn load(store: &Store, id: &str, host: &str) -> Result<Self, PeerError> {
        let ca = ensure_ca(store).await?;
        let mine = pki::generate_peer(&ca, id, &[host.to_owned()], PEER_CERT_DAYS)
            .map_err(|e| PeerError::Certificates(e.to_string()))?;
        let bad = PeerError::Certificates;
        let chain = || pki::parse_certs(&mine.cert_pem).map_err(bad);
        let key = || pki::parse_key(&mine.key_pem).map_err(bad);
        let server = pki::mutual_server_config(chain()?, key()?, &ca.cert_pem).map_err(bad)?;
        let client = pki::mutual_client_config(&ca.cert_pem, chain()?, key()?).map_err(bad)?;
        Ok(Self { server, client })
    }
}

async fn ensure_ca(store: &Store) -> Result<CertPair, PeerError> {
    loop {
        if let Some(kv) = store.get(PEER_CA_KEY).await? {
            let ca: StoredCa = serde_json::from_slice(&kv.value)
                .map_err(|e| PeerError::Certificates(format!("the stored peer CA: {e}")))?;
            return Ok(CertPair {
                cert_pem: ca.cert_pem,
                key_pem: ca.key_pem,
                names: ca.names,
                not_after: ca.not_after,
            });
        }
        let ca =
            pki::generate_ca(PEER_CA_DAYS).map_err(|e| PeerError::Certificates(e.to_string()))?;
        let stored = StoredCa {
            cert_pem: ca.cert_pem.clone(),
            key_pem: ca.key_pem.clone(),
            names: ca.names.clone(),
            not_after: ca.not_after,
        };
        match store
            .create(
                PEER_CA_KEY,
                serde_json::to_vec(&stored).expect("plain data"),
            )
            .await
        {
            Ok(_) => {
                tracing::info!("generated the peer CA");
                return Ok(ca);
            }
            Err(StoreError::AlreadyExists(_)) => continue, // another replica was first
            Err(e) => return Err(e.into()),
        }
    }
}

/// The peer listener's routes.
pub fn router(links: Arc<Links>) -> Router {
    Router::new()
        .route("/v1-peer/clusters/{cluster}", any(forwarded))
        .route("/v1-peer/clusters/{cluster}/{*rest}", any(forwarded))
        .fallback(|| async { ApiError::no_such_path().into_response() })
        .with_state(links)
}

/// `/v1-peer/clusters/{cluster}/…`: down the local link, as it came.
async fn forwarded(
    State(links): State<Arc<Links>>,
    Path(params): Path<Vec<(String, String)>>,
    mut req: Request,
) -> Response {
    let cluster = params
        .into_iter()
        .find(|(k, _)| k == "cluster")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let Some(link) = links.get(&cluster) else {
        let mut resp = ApiError::unavailable(format!(
            "this replica holds no link for cluster {cluster:?}"
        ))
        .into_response();
        resp.headers_mut()
            .insert(NO_LINK, HeaderValue::from_static("1"));
        return resp;
    };
    let rest = req
        .uri()
        .path()
        .strip_prefix(PATH_PREFIX)
        .and_then(|r| r.strip_prefix(cluster.as_str()))
        .filter(|r| !r.is_empty())
        .unwrap_or("/");
    let path = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    let upgrade =
        drover_tunnel::upgrade::requested(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut out = axum::http::Request::builder()
        .method(parts.method)
        .uri(path)
        .version(axum::http::Version::HTTP_11);
    let headers = out.headers_mut().expect("a fresh builder");
    for (name, value) in &parts.headers {
        if name == header::HOST {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers.insert(
        header::HOST,
        HeaderValue::from_static("kubernetes.default.svc"),
    );
    let Ok(out) = out.body(body) else {
        return ApiError::bad_request("the forwarded request is malformed").into_response();
    };
    let mut resp = match kube::send_on(&link, out).await {
        Ok(mut r) => {
            // The markers below are this replica's to set; a cluster (or a
            // service behind its proxy) cannot send them.
            strip_markers(r.headers_mut());
            r
        }
        Err(e) => {
            // The calling replica sends again what did not arrive, and
            // an idempotent request that was lost.
            let mark = if e.not_sent() {
                Some(NO_LINK)
            } else if matches!(e, DownstreamError::Lost) {
                Some(LOST)
            } else {
                None
            };
            let mut resp = e.into_response_for(&cluster);
            if let Some(name) = mark {
                resp.headers_mut()
                    .insert(name, HeaderValue::from_static("1"));
            }
            return resp;
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = upgrade else {
            return ApiError::new(502, "BadGateway", "the cluster switched protocols unasked")
                .into_response();
        };
        // The replica that took the request ends its side when its rights
        // go; this side then ends with it, or when the link goes.
        let cut = resp.extensions().get::<UpgradeCut>().cloned();
        let gone = async move {
            match cut {
                Some(cut) => cut.cancelled().await,
                None => std::future::pending().await,
            }
        };
        drover_tunnel::upgrade::splice(client, hyper::upgrade::on(&mut resp), gone);
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, Body::new(body))
}

/// Calls to other replicas' peer listeners, over pooled connections.
#[derive(Clone)]
pub struct Peers {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").finish_non_exhaustive()
    }
}

impl Peers {
    /// A client with this replica's peer TLS.
    pub fn new(tls: rustls::ClientConfig) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Self { client }
    }

    /// Send `req` (path and query as for the cluster) to the replica at
    /// `peer_url`, for `cluster`'s link there.
    pub async fn forward(
        &self,
        peer_url: &str,
        cluster: &str,
        req: axum::http::Request<Body>,
    ) -> Result<hyper::Response<Incoming>, DownstreamError> {
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        let uri: Uri = format!(
            "{}{PATH_PREFIX}{cluster}{path}",
            peer_url.trim_end_matches('/')
        )
        .parse()
        .map_err(|e: axum::http::uri::InvalidUri| DownstreamError::Body(e.to_string()))?;
        parts.uri = uri;
        parts.version = axum::http::Version::HTTP_11;
        parts.headers.remove(header::HOST);
        let req = axum::http::Request::from_parts(parts, body);
        let resp = self.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                DownstreamError::Unreachable(e.to_string())
            } else {
                DownstreamError::Peer(e.to_string())
            }
        })?;
        // Only the holder's own error answers carry a marker (it strips
        // them from the cluster's).
        let own_error = matches!(resp.status().as_u16(), 502 | 503);
        if own_error && resp.headers().contains_key(NO_LINK) {
            return Err(DownstreamError::NotConnected);
        }
        if own_error && resp.headers().contains_key(LOST) {
            return Err(DownstreamError::Lost);
        }
        Ok(resp)
    }
}

/// Remove the peer connection's markers from a cluster's answer.
fn strip_markers(headers: &mut axum::http::HeaderMap) {
    headers.remove(NO_LINK);
    headers.remove(LOST);
}
