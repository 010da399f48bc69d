//! The accept loop: TLS handshakes with a deadline (or plain HTTP behind a
//! balancer that terminates TLS), HTTP/1.1 and HTTP/2 with
//! upgrades, a cap on open connections, and graceful shutdown — stop
//! accepting, let in-flight requests finish within the grace period, then
//! drop whatever is left.
//!
//! A request whose body the handler dropped before its end (a 413 for a
//! body over the limit, a 401 or 503 before the body mattered) has the
//! rest of its body read and dropped before the answer goes out, up to a
//! bound — unless the client waits for `100 Continue` before sending it
//! and the handler never asked for it: no body is invited only to be
//! thrown away. Dropped unread, an HTTP/2 stream is reset (CANCEL), and clients
//! such as curl then report a framing error instead of the answer; an
//! HTTP/1.1 connection is closed under a client still writing, which many
//! clients report as a broken pipe, and loses its keep-alive.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Most connections open at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 16_384;
/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a request's headers to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of an unread request body is read past what the handler took,
/// and for how long, so that its answer reaches the client; past either,
/// the stream is reset (HTTP/2) or the connection closed (HTTP/1.1).
const DRAIN_MAX_BYTES: usize = 8 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve `app` over TLS on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) {
    serve_with(listener, Some(TlsAcceptor::from(tls)), app, shutdown, grace).await
}

/// Serve `app` over plain HTTP on `listener` until `shutdown` resolves:
/// for a load balancer that terminates TLS in front.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) {
    serve_with(listener, None, app, shutdown, grace).await
}

async fn serve_with(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(1024 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(1024 * 1024);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually out of file descriptors: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // API answers and tunnel frames are small: send each at once rather
        // than holding it for the last segment's acknowledgement.
        let _ = tcp.set_nodelay(true);
        while connections.try_join_next().is_some() {} // reap finished ones
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many open connections; closing a new one");
            continue;
        };
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let app = app.clone();
        let service = hyper::service::service_fn(move |req| answer(app.clone(), peer, req));
        connections.spawn(async move {
            let _slot = slot;
            let Some(acceptor) = acceptor else {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            };
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "stopped accepting; draining in-flight requests"
    );
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => {
            tracing::warn!("grace period over; dropping the remaining connections");
            // Long streams (watches, logs -f, exec) end here, with their tasks.
            connections.abort_all();
        }
    }
}

/// Answer one request with `app`, reading what the handler left of the
/// request body before the answer goes out.
async fn answer(
    app: Router,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> Result<axum::response::Response, std::convert::Infallible> {
    let (left, mut unread) = tokio::sync::oneshot::channel();
    let waits_to_send = req
        .headers()
        .get(hyper::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut req = req.map(|body| {
        axum::body::Body::new(Unread {
            body: Some(body),
            left: Some(left),
            polled: false,
            waits_to_send,
        })
    });
    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
    let response = app.oneshot(req).await;
    // Only a body the handler dropped comes back; one it still reads (a
    // proxied stream, say) goes on beside the answer.
    if let Ok(rest) = unread.try_recv() {
        drain(rest).await;
    }
    response
}

/// Read and drop the rest of a request body, within the drain bounds.
async fn drain(mut body: Incoming) {
    use http_body_util::BodyExt;
    let mut read = 0;
    let reading = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return };
            read += frame.data_ref().map_or(0, |d| d.len());
            if read > DRAIN_MAX_BYTES {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, reading).await;
}

/// A request body that, dropped before its end, hands what is left back to
/// [`answer`].
struct Unread {
    body: Option<Incoming>,
    left: Option<tokio::sync::oneshot::Sender<Incoming>>,
    /// Whether the handler read from it (which sends `100 Continue`).
    polled: bool,
    /// The client sends the body only after `100 Continue`.
    waits_to_send: bool,
}

impl http_body::Body for Unread {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        this.polled = true;
        match this.body.as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        if self.waits_to_send && !self.polled {
            return; // never invited: nothing to read
        }
        if let (Some(body), Some(left)) = (self.body.take(), self.left.take()) {
            if !http_body::Body::is_end_stream(&body) {
                let _ = left.send(body);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn shutdown_lets_in_flight_requests_finish_and_stops_accepting() {
        let ca = pki::generate_ca(1).unwrap();
        let serving = pki::generate_serving(&ca, &["localhost".into()], 1).unwrap();
        let server_config = pki::server_config(
            pki::parse_certs(&serving.cert_pem).unwrap(),
            pki::parse_key(&serving.key_pem).unwrap(),
        )
        .unwrap();
        let client_config = pki::client_config(&ca.cert_pem).unwrap();
        let app = Router::new().route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                "done"
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            server_config,
            app,
            async move {
                let _ = stop_rx.await;
            },
            Duration::from_secs(5),
        ));

        let connector = tokio_rustls::TlsConnector::from(client_config);
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop_tx.send(()).unwrap();

        let mut response = Vec::new();
        tls.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.ends_with("done"), "{response}");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "still accepting after shutdown"
        );
    }
}
